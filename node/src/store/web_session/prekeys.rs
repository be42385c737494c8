//! The pre-keys of `SignalStore`: one-time pre-keys with their `uploaded` flag, and signed
//! pre-keys, their records sealed under (tenant, id).

use std::collections::HashMap;

use bytes::Bytes;

use super::super::lists;
use super::super::secrets::{PREKEY, SIGNED_PREKEY};
use super::WebSessionStore;
use super::codec::{flag, id_from_sql, id_to_sql, open, seal};
use super::error::Fault;

impl WebSessionStore {
    /// Writes the pre-keys (replacing those with the same id) in one transaction.
    pub(super) async fn store_prekeys(
        &self,
        keys: &[(u32, &[u8])],
        uploaded: bool,
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        for (id, record) in keys {
            let sealed = seal(&self.db, PREKEY, self.tenant_id(), &id.to_string(), record);
            sqlx::query(
                "INSERT INTO web_prekeys (tenant_id, id, record, uploaded) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, id) DO UPDATE \
                 SET record = excluded.record, uploaded = excluded.uploaded",
            )
            .bind(self.tenant_id())
            .bind(id_to_sql(*id))
            .bind(sealed)
            .bind(flag(uploaded))
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    /// The pre-keys of `ids` that exist, in the order asked, opened: one `IN` query per
    /// [`lists::MAX_LIST`] ids.
    pub(super) async fn prekeys(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>, Fault> {
        let ids: Vec<i64> = ids.iter().copied().map(id_to_sql).collect();
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(lists::MAX_LIST) {
            let sql = format!(
                "SELECT id, record FROM web_prekeys WHERE tenant_id = $1 AND id IN ({})",
                lists::placeholders(2, lists::padded_len(chunk.len()))
            );
            let mut query =
                sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql)).bind(self.tenant_id());
            for id in lists::padded(chunk) {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(&self.db.reader).await?);
        }
        let mut records = Vec::with_capacity(found.len());
        for id in ids {
            if let Some(stored) = found.remove(&id) {
                let id = id_from_sql(id, "web_prekeys.id")?;
                let record = open(&self.db, PREKEY, self.tenant_id(), &id.to_string(), stored)?;
                records.push((id, Bytes::from(record)));
            }
        }
        Ok(records)
    }

    /// Marks stored pre-keys uploaded: an `UPDATE`, so a key consumed since the upload
    /// began stays deleted.
    pub(super) async fn mark_uploaded(&self, ids: &[u32]) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        for id in ids {
            sqlx::query("UPDATE web_prekeys SET uploaded = 1 WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant_id())
                .bind(id_to_sql(*id))
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx.commit().await?)
    }

    /// Runs `delete` (`$1` the tenant, `$2` the id) as one fenced write.
    pub(super) async fn delete_prekey(&self, delete: &'static str, id: u32) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        sqlx::query(delete)
            .bind(self.tenant_id())
            .bind(id_to_sql(id))
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }

    /// The highest one-time pre-key id stored, or 0.
    pub(super) async fn max_prekey_id(&self) -> Result<u32, Fault> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM web_prekeys WHERE tenant_id = $1")
                .bind(self.tenant_id())
                .fetch_one(&self.db.reader)
                .await?;
        max.map_or(Ok(0), |max| id_from_sql(max, "web_prekeys.id"))
    }

    pub(super) async fn store_signed(&self, id: u32, record: &[u8]) -> Result<(), Fault> {
        let sealed = seal(
            &self.db,
            SIGNED_PREKEY,
            self.tenant_id(),
            &id.to_string(),
            record,
        );
        let mut tx = self.fenced().await?;
        sqlx::query(
            "INSERT INTO web_signed_prekeys (tenant_id, id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET record = excluded.record",
        )
        .bind(self.tenant_id())
        .bind(id_to_sql(id))
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    pub(super) async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, Fault> {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT record FROM web_signed_prekeys WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant_id())
        .bind(id_to_sql(id))
        .fetch_optional(&self.db.reader)
        .await?;
        stored
            .map(|stored| {
                open(
                    &self.db,
                    SIGNED_PREKEY,
                    self.tenant_id(),
                    &id.to_string(),
                    stored,
                )
            })
            .transpose()
    }

    /// Every signed pre-key, by id.
    pub(super) async fn signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>, Fault> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, record FROM web_signed_prekeys WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(self.tenant_id())
        .fetch_all(&self.db.reader)
        .await?;
        rows.into_iter()
            .map(|(id, stored)| {
                let id = id_from_sql(id, "web_signed_prekeys.id")?;
                let record = open(
                    &self.db,
                    SIGNED_PREKEY,
                    self.tenant_id(),
                    &id.to_string(),
                    stored,
                )?;
                Ok((id, record))
            })
            .collect()
    }
}
