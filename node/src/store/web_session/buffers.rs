//! The short-lived parts of `ProtocolStore`: trusted-contact tokens (newer wins, each
//! writer owning its field, both in one statement), sent messages kept for retry receipts
//! (taken once, atomically) and the pending-inbound buffer of the durability hook. Times are
//! the library's unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

use whatsapp_rust::wacore::store::traits::{PendingInboundKey, PendingInboundRow, TcTokenEntry};

use super::WebSessionStore;
use super::error::Fault;

/// Now, in unix seconds (the library's clock for these rows).
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A count of deleted rows as the library takes it.
fn count(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}

impl WebSessionStore {
    pub(super) async fn tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>, Fault> {
        let row: Option<(Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT token, token_timestamp, sender_timestamp FROM web_tc_tokens \
             WHERE tenant_id = $1 AND jid = $2",
        )
        .bind(self.tenant_id())
        .bind(jid)
        .fetch_optional(&self.db.reader)
        .await?;
        Ok(
            row.map(|(token, token_timestamp, sender_timestamp)| TcTokenEntry {
                token,
                token_timestamp,
                sender_timestamp,
            }),
        )
    }

    pub(super) async fn write_tc_token(
        &self,
        jid: &str,
        entry: &TcTokenEntry,
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        sqlx::query(
            "INSERT INTO web_tc_tokens (tenant_id, jid, token, token_timestamp, sender_timestamp) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, jid) DO UPDATE \
             SET token = excluded.token, token_timestamp = excluded.token_timestamp, \
             sender_timestamp = excluded.sender_timestamp",
        )
        .bind(self.tenant_id())
        .bind(jid)
        .bind(entry.token.as_slice())
        .bind(entry.token_timestamp)
        .bind(entry.sender_timestamp)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    pub(super) async fn tc_token_jids(&self) -> Result<Vec<String>, Fault> {
        Ok(
            sqlx::query_scalar("SELECT jid FROM web_tc_tokens WHERE tenant_id = $1 ORDER BY jid")
                .bind(self.tenant_id())
                .fetch_all(&self.db.reader)
                .await?,
        )
    }

    /// Deletes the rows whose received token and sender bucket are both expired or absent.
    pub(super) async fn expire_tc_tokens(
        &self,
        token_cutoff: i64,
        sender_cutoff: i64,
    ) -> Result<u32, Fault> {
        let mut tx = self.fenced().await?;
        let deleted = sqlx::query(
            "DELETE FROM web_tc_tokens WHERE tenant_id = $1 \
             AND (length(token) = 0 OR token_timestamp < $2) \
             AND (sender_timestamp IS NULL OR sender_timestamp < $3)",
        )
        .bind(self.tenant_id())
        .bind(token_cutoff)
        .bind(sender_cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(count(deleted))
    }

    /// Moves the sender bucket forward only; a missing row becomes a placeholder (no token).
    pub(super) async fn touch_tc_token(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        sqlx::query(
            "INSERT INTO web_tc_tokens (tenant_id, jid, token, token_timestamp, sender_timestamp) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant_id, jid) DO UPDATE \
             SET sender_timestamp = CASE \
             WHEN web_tc_tokens.sender_timestamp IS NULL \
             OR web_tc_tokens.sender_timestamp < excluded.sender_timestamp \
             THEN excluded.sender_timestamp ELSE web_tc_tokens.sender_timestamp END",
        )
        .bind(self.tenant_id())
        .bind(jid)
        .bind(Vec::<u8>::new())
        .bind(sender_timestamp)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    /// Newer wins: the token is replaced only when the stored one is a placeholder or not
    /// newer; the sender bucket is kept.
    pub(super) async fn receive_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        sqlx::query(
            "INSERT INTO web_tc_tokens (tenant_id, jid, token, token_timestamp, sender_timestamp) \
             VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (tenant_id, jid) DO UPDATE \
             SET token = excluded.token, token_timestamp = excluded.token_timestamp \
             WHERE length(web_tc_tokens.token) = 0 \
             OR excluded.token_timestamp >= web_tc_tokens.token_timestamp",
        )
        .bind(self.tenant_id())
        .bind(jid)
        .bind(token)
        .bind(token_timestamp)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    pub(super) async fn keep_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        sqlx::query(
            "INSERT INTO web_sent_messages (tenant_id, chat_jid, message_id, payload, sent_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, chat_jid, message_id) \
             DO UPDATE SET payload = excluded.payload, sent_at = excluded.sent_at",
        )
        .bind(self.tenant_id())
        .bind(chat_jid)
        .bind(message_id)
        .bind(payload)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    /// Deletes the sent message and answers it, in one statement: two takers never both
    /// get it.
    pub(super) async fn take_sent(
        &self,
        chat_jid: &str,
        message_id: &str,
    ) -> Result<Option<Vec<u8>>, Fault> {
        let mut tx = self.fenced().await?;
        let payload: Option<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM web_sent_messages \
             WHERE tenant_id = $1 AND chat_jid = $2 AND message_id = $3 RETURNING payload",
        )
        .bind(self.tenant_id())
        .bind(chat_jid)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(payload)
    }

    pub(super) async fn expire_sent_messages(&self, cutoff: i64) -> Result<u32, Fault> {
        let mut tx = self.fenced().await?;
        let deleted =
            sqlx::query("DELETE FROM web_sent_messages WHERE tenant_id = $1 AND sent_at < $2")
                .bind(self.tenant_id())
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(count(deleted))
    }

    pub(super) async fn buffer_inbound(&self, rows: &[PendingInboundRow<'_>]) -> Result<(), Fault> {
        let now = now_secs();
        let mut tx = self.fenced().await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO web_pending_inbound \
                 (tenant_id, chat, sender, message_id, message, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id, chat, sender, message_id) \
                 DO UPDATE SET message = excluded.message, received_at = excluded.received_at",
            )
            .bind(self.tenant_id())
            .bind(row.chat)
            .bind(row.sender)
            .bind(row.id)
            .bind(row.message)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    pub(super) async fn pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, Fault> {
        Ok(sqlx::query_scalar(
            "SELECT message FROM web_pending_inbound \
             WHERE tenant_id = $1 AND chat = $2 AND sender = $3 AND message_id = $4",
        )
        .bind(self.tenant_id())
        .bind(chat)
        .bind(sender)
        .bind(id)
        .fetch_optional(&self.db.reader)
        .await?)
    }

    pub(super) async fn unbuffer_inbound(
        &self,
        keys: &[PendingInboundKey<'_>],
    ) -> Result<(), Fault> {
        let mut tx = self.fenced().await?;
        for key in keys {
            sqlx::query(
                "DELETE FROM web_pending_inbound \
                 WHERE tenant_id = $1 AND chat = $2 AND sender = $3 AND message_id = $4",
            )
            .bind(self.tenant_id())
            .bind(key.chat)
            .bind(key.sender)
            .bind(key.id)
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    pub(super) async fn expire_pending_inbound(&self, cutoff: i64) -> Result<u32, Fault> {
        let mut tx = self.fenced().await?;
        let deleted = sqlx::query(
            "DELETE FROM web_pending_inbound WHERE tenant_id = $1 AND received_at < $2",
        )
        .bind(self.tenant_id())
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(count(deleted))
    }
}
