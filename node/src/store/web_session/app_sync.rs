//! `AppSyncStore`: app-state sync keys (their key data sealed), collection versions (the
//! library's `HashState` as JSON) and mutation MACs.

use std::collections::HashMap;

use async_trait::async_trait;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use super::super::lists;
use super::super::secrets::APP_STATE_KEY;
use super::WebSessionStore;
use super::codec::{from_json, key_bytes, key_text, open, seal, to_json};

#[async_trait]
impl AppSyncStore for WebSessionStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.run(async {
            let row = key_text(key_id);
            let found: Option<(String, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT key_data, fingerprint, key_timestamp FROM web_app_state_keys \
                 WHERE tenant_id = $1 AND key_id = $2",
            )
            .bind(self.tenant_id())
            .bind(row.as_str())
            .fetch_optional(&self.db.reader)
            .await?;
            found
                .map(|(stored, fingerprint, timestamp)| {
                    Ok(AppStateSyncKey {
                        key_data: open(&self.db, APP_STATE_KEY, self.tenant_id(), &row, stored)?,
                        fingerprint,
                        timestamp,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        // seq: the order keys were set in (the latest is asked for)
        self.run(async {
            let row = key_text(key_id);
            let sealed = seal(
                &self.db,
                APP_STATE_KEY,
                self.tenant_id(),
                &row,
                &key.key_data,
            );
            let mut tx = self.fenced().await?;
            sqlx::query(
                "INSERT INTO web_app_state_keys \
                 (tenant_id, key_id, key_data, fingerprint, key_timestamp, seq) \
                 VALUES ($1, $2, $3, $4, $5, \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM web_app_state_keys WHERE tenant_id = $1)) \
                 ON CONFLICT (tenant_id, key_id) DO UPDATE SET key_data = excluded.key_data, \
                 fingerprint = excluded.fingerprint, key_timestamp = excluded.key_timestamp, \
                 seq = excluded.seq",
            )
            .bind(self.tenant_id())
            .bind(row.as_str())
            .bind(sealed)
            .bind(key.fingerprint.as_slice())
            .bind(key.timestamp)
            .execute(&mut *tx)
            .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        self.run(async {
            let state: Option<String> = sqlx::query_scalar(
                "SELECT state FROM web_app_state_versions WHERE tenant_id = $1 AND name = $2",
            )
            .bind(self.tenant_id())
            .bind(name)
            .fetch_optional(&self.db.reader)
            .await?;
            state.map_or_else(
                || Ok(HashState::default()),
                |state| from_json(&state, "web_app_state_versions.state"),
            )
        })
        .await
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.run(async {
            let state = to_json(&state, "an app-state version")?;
            let mut tx = self.fenced().await?;
            sqlx::query(
                "INSERT INTO web_app_state_versions (tenant_id, name, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET state = excluded.state",
            )
            .bind(self.tenant_id())
            .bind(name)
            .bind(state)
            .execute(&mut *tx)
            .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        self.run(async {
            let version = super::super::decode::epoch_to_sql(version)?;
            let mut tx = self.fenced().await?;
            for mutation in mutations {
                sqlx::query(
                    "INSERT INTO web_app_state_macs (tenant_id, name, index_mac, version, value_mac) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, name, index_mac) DO UPDATE \
                     SET version = excluded.version, value_mac = excluded.value_mac",
                )
                .bind(self.tenant_id())
                .bind(name)
                .bind(key_text(&mutation.index_mac))
                .bind(version)
                .bind(mutation.value_mac.as_slice())
                .execute(&mut *tx)
                .await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.run(async {
            Ok(sqlx::query_scalar(
                "SELECT value_mac FROM web_app_state_macs \
                 WHERE tenant_id = $1 AND name = $2 AND index_mac = $3",
            )
            .bind(self.tenant_id())
            .bind(name)
            .bind(key_text(index_mac))
            .fetch_optional(&self.db.reader)
            .await?)
        })
        .await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        self.run(async {
            let keys: Vec<String> = index_macs.iter().map(|mac| key_text(mac)).collect();
            let mut found = HashMap::with_capacity(keys.len());
            for chunk in keys.chunks(lists::MAX_LIST) {
                let sql = format!(
                    "SELECT index_mac, value_mac FROM web_app_state_macs \
                     WHERE tenant_id = $1 AND name = $2 AND index_mac IN ({})",
                    lists::placeholders(3, lists::padded_len(chunk.len()))
                );
                let mut query = sqlx::query_as::<_, (String, Vec<u8>)>(sqlx::AssertSqlSafe(sql))
                    .bind(self.tenant_id())
                    .bind(name);
                for key in lists::padded(chunk) {
                    query = query.bind(key.as_str());
                }
                for (index_mac, value_mac) in query.fetch_all(&self.db.reader).await? {
                    let index_mac = key_bytes(&index_mac, "web_app_state_macs.index_mac")?;
                    if let Ok(index_mac) = <[u8; 32]>::try_from(index_mac) {
                        found.insert(index_mac, value_mac);
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            for index_mac in index_macs {
                sqlx::query(
                    "DELETE FROM web_app_state_macs \
                     WHERE tenant_id = $1 AND name = $2 AND index_mac = $3",
                )
                .bind(self.tenant_id())
                .bind(name)
                .bind(key_text(index_mac))
                .execute(&mut *tx)
                .await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            sqlx::query("DELETE FROM web_app_state_macs WHERE tenant_id = $1 AND name = $2")
                .bind(self.tenant_id())
                .bind(name)
                .execute(&mut *tx)
                .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.run(async {
            let key_id: Option<String> = sqlx::query_scalar(
                "SELECT key_id FROM web_app_state_keys WHERE tenant_id = $1 \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(self.tenant_id())
            .fetch_optional(&self.db.reader)
            .await?;
            key_id
                .map(|key_id| key_bytes(&key_id, "web_app_state_keys.key_id"))
                .transpose()
        })
        .await
    }
}
