//! `SignalStore`: contacts' identity keys, Signal sessions and group sender keys (its
//! pre-keys are in `prekeys`; the trait's methods for them call there). Sessions and sender
//! keys are sealed; identity keys are public keys and stored as they are.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::AnyConnection;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::SignalStore;

use super::super::secrets::{SENDER_KEY, SIGNAL_SESSION};
use super::WebSessionStore;
use super::codec::{array32, open, seal};
use super::error::Fault;

impl WebSessionStore {
    async fn upsert_identity(
        &self,
        tx: &mut AnyConnection,
        address: &str,
        key: &[u8; 32],
    ) -> std::result::Result<(), Fault> {
        sqlx::query(
            "INSERT INTO web_identities (tenant_id, address, identity_key) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, address) DO UPDATE SET identity_key = excluded.identity_key",
        )
        .bind(self.tenant_id())
        .bind(address)
        .bind(key.as_slice())
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn upsert_sealed(
        &self,
        tx: &mut AnyConnection,
        table: Sealed,
        row: &str,
        bytes: &[u8],
    ) -> std::result::Result<(), Fault> {
        let sealed = seal(&self.db, table.column, self.tenant_id(), row, bytes);
        sqlx::query(table.upsert)
            .bind(self.tenant_id())
            .bind(row)
            .bind(sealed)
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn get_sealed(
        &self,
        table: Sealed,
        row: &str,
    ) -> std::result::Result<Option<Vec<u8>>, Fault> {
        let stored: Option<String> = sqlx::query_scalar(table.select)
            .bind(self.tenant_id())
            .bind(row)
            .fetch_optional(&self.db.reader)
            .await?;
        stored
            .map(|stored| open(&self.db, table.column, self.tenant_id(), row, stored))
            .transpose()
    }

    async fn delete_row(&self, delete: &'static str, row: &str) -> std::result::Result<(), Fault> {
        let mut tx = self.fenced().await?;
        sqlx::query(delete)
            .bind(self.tenant_id())
            .bind(row)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A table of sealed records keyed by (tenant, text key): `$1` tenant, `$2` key, `$3` value.
#[derive(Clone, Copy)]
struct Sealed {
    column: &'static str,
    upsert: &'static str,
    select: &'static str,
}

const SESSIONS: Sealed = Sealed {
    column: SIGNAL_SESSION,
    upsert: "INSERT INTO web_signal_sessions (tenant_id, address, session) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, address) DO UPDATE SET session = excluded.session",
    select: "SELECT session FROM web_signal_sessions WHERE tenant_id = $1 AND address = $2",
};

const SENDER_KEYS: Sealed = Sealed {
    column: SENDER_KEY,
    upsert: "INSERT INTO web_sender_keys (tenant_id, address, record) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, address) DO UPDATE SET record = excluded.record",
    select: "SELECT record FROM web_sender_keys WHERE tenant_id = $1 AND address = $2",
};

#[async_trait]
impl SignalStore for WebSessionStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            self.upsert_identity(&mut tx, address, &key).await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            for (address, key) in identities {
                self.upsert_identity(&mut tx, address, key).await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        self.run(async {
            let key: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT identity_key FROM web_identities WHERE tenant_id = $1 AND address = $2",
            )
            .bind(self.tenant_id())
            .bind(address)
            .fetch_optional(&self.db.reader)
            .await?;
            key.map(|key| array32(key, "web_identities.identity_key"))
                .transpose()
        })
        .await
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.run(self.delete_row(
            "DELETE FROM web_identities WHERE tenant_id = $1 AND address = $2",
            address,
        ))
        .await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        self.run(async {
            let session = self.get_sealed(SESSIONS, address).await?;
            Ok(session.map(Bytes::from))
        })
        .await
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            self.upsert_sealed(&mut tx, SESSIONS, address, session)
                .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            for (address, session) in sessions {
                self.upsert_sealed(&mut tx, SESSIONS, address, session)
                    .await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.run(self.delete_row(
            "DELETE FROM web_signal_sessions WHERE tenant_id = $1 AND address = $2",
            address,
        ))
        .await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        self.run(async {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT address FROM web_signal_sessions WHERE tenant_id = $1 AND address = $2",
            )
            .bind(self.tenant_id())
            .bind(address)
            .fetch_optional(&self.db.reader)
            .await?;
            Ok(found.is_some())
        })
        .await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        // `user@server` (device 0) or `user:device@server`, compared exactly (no LIKE
        // wildcards to escape)
        self.run(async {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT address FROM web_signal_sessions WHERE tenant_id = $1 \
                 AND (substr(address, 1, length(CAST($2 AS TEXT))) = $2 \
                 OR substr(address, 1, length(CAST($3 AS TEXT))) = $3) \
                 UNION ALL \
                 SELECT address FROM web_identities WHERE tenant_id = $1 \
                 AND (substr(address, 1, length(CAST($2 AS TEXT))) = $2 \
                 OR substr(address, 1, length(CAST($3 AS TEXT))) = $3) \
                 LIMIT 1",
            )
            .bind(self.tenant_id())
            .bind(format!("{user}@"))
            .bind(format!("{user}:"))
            .fetch_optional(&self.db.reader)
            .await?;
            Ok(found.is_some())
        })
        .await
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.run(self.store_prekeys(&[(id, record)], uploaded))
            .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let keys: Vec<(u32, &[u8])> = keys.iter().map(|(id, record)| (*id, &record[..])).collect();
        self.run(self.store_prekeys(&keys, uploaded)).await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        self.run(async {
            let mut found = self.prekeys(&[id]).await?;
            Ok(found.pop().map(|(_, record)| record))
        })
        .await
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        self.run(self.prekeys(ids)).await
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        self.run(self.mark_uploaded(ids)).await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.run(self.delete_prekey(
            "DELETE FROM web_prekeys WHERE tenant_id = $1 AND id = $2",
            id,
        ))
        .await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        self.run(self.max_prekey_id()).await
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.run(self.store_signed(id, record)).await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.run(self.signed_prekey(id)).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.run(self.signed_prekeys()).await
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.run(self.delete_prekey(
            "DELETE FROM web_signed_prekeys WHERE tenant_id = $1 AND id = $2",
            id,
        ))
        .await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            self.upsert_sealed(&mut tx, SENDER_KEYS, address, record)
                .await?;
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.run(async {
            let mut tx = self.fenced().await?;
            for (address, record) in sender_keys {
                self.upsert_sealed(&mut tx, SENDER_KEYS, address, record)
                    .await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.run(self.get_sealed(SENDER_KEYS, address)).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.run(self.delete_row(
            "DELETE FROM web_sender_keys WHERE tenant_id = $1 AND address = $2",
            address,
        ))
        .await
    }
}
