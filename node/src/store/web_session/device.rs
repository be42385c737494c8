//! `DeviceStore`: the linked device (one per tenant), the library's `Device` as JSON sealed
//! whole (it holds the noise, identity and signed pre-key private keys and the ADV secret),
//! with its registration id and addresses beside it in plain columns for operators; and
//! `MsgSecretStore`: the secrets of our messages, kept for their add-ons.

use std::sync::Arc;

use async_trait::async_trait;
use whatsapp_rust::wacore::client_profile::ClientProfile;
use whatsapp_rust::wacore::stats::StorageResourceReport;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::device::DEVICE_PROPS;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{DeviceStore, MsgSecretEntry, MsgSecretStore};

use super::super::secrets::WEB_DEVICE;
use super::WebSessionStore;
use super::codec::{from_json, open_text, seal_text, to_json};
use super::error::Fault;

/// The id `create` answers: a tenant has one device row.
const DEVICE_ID: i32 = 1;

impl WebSessionStore {
    /// Writes `device`; with `only_if_missing`, leaves an existing row as it is.
    async fn write_device(
        &self,
        device: &Device,
        only_if_missing: bool,
    ) -> std::result::Result<(), Fault> {
        let json = to_json(device, "the device")?;
        let sealed = seal_text(&self.db, WEB_DEVICE, self.tenant_id(), &json);
        let on_conflict = if only_if_missing {
            "DO NOTHING"
        } else {
            "DO UPDATE SET registration_id = excluded.registration_id, pn = excluded.pn, \
             lid = excluded.lid, device = excluded.device, updated_ms = excluded.updated_ms"
        };
        let sql = format!(
            "INSERT INTO web_devices (tenant_id, registration_id, pn, lid, device, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) {on_conflict}"
        );
        let mut tx = self.fenced().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.tenant_id())
            .bind(i64::from(device.registration_id))
            .bind(device.pn.as_ref().map(ToString::to_string))
            .bind(device.lid.as_ref().map(ToString::to_string))
            .bind(sealed)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[async_trait]
impl DeviceStore for WebSessionStore {
    async fn save(&self, device: &Device) -> Result<()> {
        self.run(self.write_device(device, false)).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        self.run(async {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT device FROM web_devices WHERE tenant_id = $1")
                    .bind(self.tenant_id())
                    .fetch_optional(&self.db.reader)
                    .await?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            let json = open_text(&self.db, WEB_DEVICE, self.tenant_id(), stored)?;
            let mut device: Device = from_json(&json, WEB_DEVICE)?;
            // not serialised by the library: what it sets on a device it loads itself
            device.device_props = Arc::new(DEVICE_PROPS.clone());
            device.client_profile = ClientProfile::web();
            Ok(Some(device))
        })
        .await
    }

    async fn exists(&self) -> Result<bool> {
        self.run(async {
            let found: Option<String> =
                sqlx::query_scalar("SELECT tenant_id FROM web_devices WHERE tenant_id = $1")
                    .bind(self.tenant_id())
                    .fetch_optional(&self.db.reader)
                    .await?;
            Ok(found.is_some())
        })
        .await
    }

    async fn resource_report(&self) -> StorageResourceReport {
        // the pools are the store's, shared by every tenant: nothing is held per session
        StorageResourceReport {
            memory_bytes: Some(0),
            ..StorageResourceReport::default()
        }
    }

    async fn create(&self) -> Result<i32> {
        // a new device (new keys) unless the tenant has one: `exists` holds afterwards
        self.run(async {
            self.write_device(&Device::new(), true).await?;
            Ok(DEVICE_ID)
        })
        .await
    }
}

#[async_trait]
impl MsgSecretStore for WebSessionStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        // merged in the statement as the library's `merge_msg_secret_expiry` (0 = never
        // expires wins, else the later deadline) and `merge_msg_secret_message_ts` (the
        // later parent time) do
        self.run(async {
            let mut tx = self.fenced().await?;
            for entry in &entries {
                sqlx::query(
                    "INSERT INTO web_msg_secrets \
                     (tenant_id, chat, sender, msg_id, secret, expires_at, message_ts) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id, chat, sender, msg_id) DO UPDATE \
                     SET secret = excluded.secret, expires_at = CASE \
                     WHEN web_msg_secrets.expires_at = 0 OR excluded.expires_at = 0 THEN 0 \
                     WHEN excluded.expires_at > web_msg_secrets.expires_at \
                     THEN excluded.expires_at ELSE web_msg_secrets.expires_at END, \
                     message_ts = CASE WHEN excluded.message_ts > web_msg_secrets.message_ts \
                     THEN excluded.message_ts ELSE web_msg_secrets.message_ts END",
                )
                .bind(self.tenant_id())
                .bind(&*entry.chat)
                .bind(&*entry.sender)
                .bind(&*entry.msg_id)
                .bind(entry.secret.as_slice())
                .bind(entry.expires_at)
                .bind(entry.message_ts)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(entries.len())
        })
        .await
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        self.run(async {
            Ok(sqlx::query_as(
                "SELECT secret, message_ts FROM web_msg_secrets \
                 WHERE tenant_id = $1 AND chat = $2 AND sender = $3 AND msg_id = $4",
            )
            .bind(self.tenant_id())
            .bind(chat)
            .bind(sender)
            .bind(msg_id)
            .fetch_optional(&self.db.reader)
            .await?)
        })
        .await
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.run(async {
            let mut tx = self.fenced().await?;
            let deleted = sqlx::query(
                "DELETE FROM web_msg_secrets \
                 WHERE tenant_id = $1 AND expires_at <> 0 AND expires_at <= $2",
            )
            .bind(self.tenant_id())
            .bind(cutoff_timestamp)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
        })
        .await
    }
}
