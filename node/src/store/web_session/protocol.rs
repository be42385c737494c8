//! `ProtocolStore`: which devices of a group hold our sender key, base keys for retry
//! collision detection and group metadata. Its LID mappings and device lists are in
//! `contacts`, its trusted-contact tokens, sent messages and pending-inbound buffer in
//! `buffers`; the trait's methods for them call there.

use async_trait::async_trait;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{
    DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore,
    TcTokenEntry,
};

use super::WebSessionStore;
use super::codec::flag;
use super::error::Fault;

impl WebSessionStore {
    /// Runs `sql` with `$1` the tenant and `$2…` `keys` as one fenced write.
    pub(super) async fn write_keyed(
        &self,
        sql: &'static str,
        keys: &[&str],
    ) -> std::result::Result<(), Fault> {
        let mut tx = self.fenced().await?;
        let mut query = sqlx::query(sql).bind(self.tenant_id());
        for key in keys {
            query = query.bind(*key);
        }
        query.execute(&mut *tx).await?;
        Ok(tx.commit().await?)
    }
}

#[async_trait]
impl ProtocolStore for WebSessionStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        self.run(async {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT device_jid, has_key FROM web_sender_key_devices \
                 WHERE tenant_id = $1 AND group_jid = $2 ORDER BY device_jid",
            )
            .bind(self.tenant_id())
            .bind(group_jid)
            .fetch_all(&self.db.reader)
            .await?;
            Ok(rows.into_iter().map(|(jid, has)| (jid, has != 0)).collect())
        })
        .await
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            for (device_jid, has_key) in entries {
                sqlx::query(
                    "INSERT INTO web_sender_key_devices (tenant_id, group_jid, device_jid, has_key) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, group_jid, device_jid) \
                     DO UPDATE SET has_key = excluded.has_key",
                )
                .bind(self.tenant_id())
                .bind(group_jid)
                .bind(*device_jid)
                .bind(flag(*has_key))
                .execute(&mut *tx)
                .await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.run(self.write_keyed(
            "DELETE FROM web_sender_key_devices WHERE tenant_id = $1 AND group_jid = $2",
            &[group_jid],
        ))
        .await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            for device_jid in device_jids {
                sqlx::query(
                    "DELETE FROM web_sender_key_devices WHERE tenant_id = $1 AND device_jid = $2",
                )
                .bind(self.tenant_id())
                .bind(*device_jid)
                .execute(&mut *tx)
                .await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.run(self.write_keyed(
            "DELETE FROM web_sender_key_devices WHERE tenant_id = $1",
            &[],
        ))
        .await
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.run(self.lid_mapping_where("lid = $2", lid)).await
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        self.run(self.lid_mapping_where("phone_number = $2", phone))
            .await
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.run(self.put_lid_mappings_in_one(std::slice::from_ref(entry)))
            .await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        self.run(self.put_lid_mappings_in_one(entries)).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.run(self.all_lid_mappings()).await
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            sqlx::query(
                "INSERT INTO web_base_keys (tenant_id, address, message_id, base_key) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, address, message_id) \
                 DO UPDATE SET base_key = excluded.base_key",
            )
            .bind(self.tenant_id())
            .bind(address)
            .bind(message_id)
            .bind(base_key)
            .execute(&mut *tx)
            .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        self.run(async {
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT base_key FROM web_base_keys \
                 WHERE tenant_id = $1 AND address = $2 AND message_id = $3",
            )
            .bind(self.tenant_id())
            .bind(address)
            .bind(message_id)
            .fetch_optional(&self.db.reader)
            .await?;
            Ok(stored.is_some_and(|stored| stored == current_base_key))
        })
        .await
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.run(self.write_keyed(
            "DELETE FROM web_base_keys WHERE tenant_id = $1 AND address = $2 AND message_id = $3",
            &[address, message_id],
        ))
        .await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.run(self.put_device_lists(std::slice::from_ref(&record)))
            .await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        self.run(self.put_device_lists(&records)).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.run(self.device_list(user)).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.run(self.write_keyed(
            "DELETE FROM web_device_lists WHERE tenant_id = $1 AND user_id = $2",
            &[user],
        ))
        .await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.run(async {
            Ok(sqlx::query_scalar(
                "SELECT metadata FROM web_group_metadata WHERE tenant_id = $1 AND group_jid = $2",
            )
            .bind(self.tenant_id())
            .bind(group_jid)
            .fetch_optional(&self.db.reader)
            .await?)
        })
        .await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            sqlx::query(
                "INSERT INTO web_group_metadata (tenant_id, group_jid, metadata) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, group_jid) DO UPDATE SET metadata = excluded.metadata",
            )
            .bind(self.tenant_id())
            .bind(group_jid)
            .bind(blob)
            .execute(&mut *tx)
            .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.run(self.write_keyed(
            "DELETE FROM web_group_metadata WHERE tenant_id = $1 AND group_jid = $2",
            &[group_jid],
        ))
        .await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.run(self.tc_token(jid)).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.run(self.write_tc_token(jid, entry)).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.run(self.write_keyed(
            "DELETE FROM web_tc_tokens WHERE tenant_id = $1 AND jid = $2",
            &[jid],
        ))
        .await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.run(self.tc_token_jids()).await
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        self.run(self.expire_tc_tokens(token_cutoff, sender_cutoff))
            .await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        self.run(self.touch_tc_token(jid, sender_timestamp)).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        self.run(self.receive_tc_token(jid, token, token_timestamp))
            .await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.run(self.keep_sent_message(chat_jid, message_id, payload))
            .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        self.run(self.take_sent(chat_jid, message_id)).await
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.run(self.expire_sent_messages(cutoff_timestamp)).await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let row = PendingInboundRow {
            chat,
            sender,
            id,
            message,
        };
        self.run(self.buffer_inbound(&[row])).await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.run(self.pending_inbound(chat, sender, id)).await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        let key = PendingInboundKey { chat, sender, id };
        self.run(self.unbuffer_inbound(&[key])).await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.run(self.expire_pending_inbound(cutoff_timestamp))
            .await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        self.run(self.buffer_inbound(rows)).await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        self.run(self.unbuffer_inbound(keys)).await
    }
}
