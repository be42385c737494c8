//! What `ProtocolStore` knows of contacts: LID to phone-number mappings (a LID moved to
//! another number no longer answers for the old one) and their device lists (the library's
//! `DeviceListRecord`, JSON).

use sqlx::any::AnyRow;
use whatsapp_rust::wacore::store::traits::{DeviceListRecord, LidPnMappingEntry};

use super::super::decode::get;
use super::WebSessionStore;
use super::codec::{from_json, to_json};
use super::error::Fault;

const LID_COLUMNS: &str = "lid, phone_number, created_at, updated_at, learning_source";

fn lid_mapping(row: &AnyRow) -> Result<LidPnMappingEntry, Fault> {
    Ok(LidPnMappingEntry {
        lid: get(row, "lid")?,
        phone_number: get(row, "phone_number")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        learning_source: get(row, "learning_source")?,
    })
}

impl WebSessionStore {
    /// The mapping matching `condition` (on `$2`, `key`); by phone number, the most recently
    /// updated of its LIDs.
    pub(super) async fn lid_mapping_where(
        &self,
        condition: &'static str,
        key: &str,
    ) -> Result<Option<LidPnMappingEntry>, Fault> {
        let sql = format!(
            "SELECT {LID_COLUMNS} FROM web_lid_mappings WHERE tenant_id = $1 AND {condition} \
             ORDER BY updated_at DESC, created_at DESC, lid DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.tenant_id())
            .bind(key)
            .fetch_optional(&self.db.reader)
            .await?;
        row.as_ref().map(lid_mapping).transpose()
    }

    /// Writes the mappings (by LID, keeping a mapping's first `created_at`) in one
    /// transaction.
    pub(super) async fn put_lid_mappings_in_one(
        &self,
        entries: &[LidPnMappingEntry],
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        for entry in entries {
            sqlx::query(
                "INSERT INTO web_lid_mappings \
                 (tenant_id, lid, phone_number, created_at, updated_at, learning_source) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id, lid) DO UPDATE SET phone_number = excluded.phone_number, \
                 updated_at = excluded.updated_at, learning_source = excluded.learning_source",
            )
            .bind(self.tenant_id())
            .bind(entry.lid.as_str())
            .bind(entry.phone_number.as_str())
            .bind(entry.created_at)
            .bind(entry.updated_at)
            .bind(entry.learning_source.as_str())
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    pub(super) async fn all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>, Fault> {
        let sql =
            format!("SELECT {LID_COLUMNS} FROM web_lid_mappings WHERE tenant_id = $1 ORDER BY lid");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.tenant_id())
            .fetch_all(&self.db.reader)
            .await?;
        rows.iter().map(lid_mapping).collect()
    }

    /// Writes the device lists (by user) in one transaction.
    pub(super) async fn put_device_lists(&self, records: &[DeviceListRecord]) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        for record in records {
            sqlx::query(
                "INSERT INTO web_device_lists (tenant_id, user_id, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET record = excluded.record",
            )
            .bind(self.tenant_id())
            .bind(record.user.as_str())
            .bind(to_json(record, "a device list")?)
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    pub(super) async fn device_list(&self, user: &str) -> Result<Option<DeviceListRecord>, Fault> {
        let record: Option<String> = sqlx::query_scalar(
            "SELECT record FROM web_device_lists WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(self.tenant_id())
        .bind(user)
        .fetch_optional(&self.db.reader)
        .await?;
        record
            .map(|record| from_json(&record, "web_device_lists.record"))
            .transpose()
    }
}
