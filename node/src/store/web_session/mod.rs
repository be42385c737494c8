//! The WhatsApp Web engine's protocol state in our SQL (issue 12, docs/engines.md
//! "Storage"): [`WebSessionStore`] implements the five storage traits of `whatsapp-rust`
//! (`wacore::store::traits`: `SignalStore`, `AppSyncStore`, `ProtocolStore`, `DeviceStore`,
//! `MsgSecretStore`) on the store's pools, for Postgres and SQLite alike.
//!
//! A backend belongs to one tenant at one epoch ([`SqlStore::web_session_store`]): the node
//! hosting the tenant's session makes one after claiming the epoch. Every write runs in a
//! transaction that first passes the tenant's fence (`fencing::locked_epoch`, the lock and
//! read every fenced write of the store takes) and is refused, with nothing written, unless
//! the tenant's current epoch is exactly the backend's: a newer one gives
//! [`StoreError::StaleEpoch`](salesboy_actors::store::StoreError::StaleEpoch) (another node
//! owns the tenant now), an older or missing one [`WebSessionError::EpochNotClaimed`]. Reads
//! are not fenced. Batch methods write in one transaction.
//!
//! Secret key material (the device's keys, Signal sessions, pre-keys, signed pre-keys,
//! sender keys, app-state sync keys) is sealed under the node's secrets key
//! ([`crate::secrets`]) in the column's place (table, column, tenant, row key), as the
//! store's other secret columns are; the rest is stored as it comes (see docs/engines.md).
//!
//! Modules, one per concern:
//! - `error`: [`WebSessionError`] and how it reaches the library (`wacore` `StoreError`);
//! - `codec`: bytes, ids and JSON to and from columns, sealed or not;
//! - `signal`: identities, sessions, sender keys;
//! - `prekeys`: one-time and signed pre-keys;
//! - `app_sync`: app-state sync keys, collection versions and mutation MACs;
//! - `protocol`: sender-key tracking, base keys, group metadata;
//! - `contacts`: LID mappings and contacts' device lists;
//! - `buffers`: trusted-contact tokens, sent messages kept for retries, the pending-inbound
//!   buffer of the durability hook;
//! - `device`: the linked device itself, and message secrets.

mod app_sync;
mod buffers;
mod codec;
mod contacts;
mod device;
mod error;
mod prekeys;
mod protocol;
mod signal;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use sqlx::{Any, Transaction};
use whatsapp_rust::wacore::store::error::Result as LibraryResult;

use super::error::map_sqlx_error;
use super::{Db, SqlStore, fencing};
use error::Fault;
pub use error::WebSessionError;

/// Every table of a tenant's WhatsApp Web session (migration 0010): deleted with the
/// tenant, whether its data is kept or not (the session is a credential), and on logout
/// ([`WebSessionStore::forget`]).
pub(crate) const WEB_SESSION_TABLES: [&str; 18] = [
    "web_devices",
    "web_identities",
    "web_signal_sessions",
    "web_prekeys",
    "web_signed_prekeys",
    "web_sender_keys",
    "web_app_state_keys",
    "web_app_state_versions",
    "web_app_state_macs",
    "web_sender_key_devices",
    "web_lid_mappings",
    "web_base_keys",
    "web_device_lists",
    "web_group_metadata",
    "web_tc_tokens",
    "web_sent_messages",
    "web_pending_inbound",
    "web_msg_secrets",
];

/// Deletes every row of `tenant`'s Web session, in `tx`.
pub(crate) async fn delete_session(
    tx: &mut Transaction<'static, Any>,
    tenant: &TenantId,
) -> Result<(), sqlx::Error> {
    for table in WEB_SESSION_TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1"
        )))
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The WhatsApp Web client's storage backend for one tenant at one epoch: implements
/// `wacore::store::traits::Backend` (through its five traits). Cheap to clone; clones share
/// the store's pools.
#[derive(Clone)]
pub struct WebSessionStore {
    db: Db,
    tenant: TenantId,
    epoch: u64,
    /// The database's redacted URL, for errors.
    url: Arc<str>,
}

impl fmt::Debug for WebSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSessionStore")
            .field("tenant", &self.tenant)
            .field("epoch", &self.epoch)
            .field("url", &self.url)
            .finish()
    }
}

impl SqlStore {
    /// The Web engine's storage backend for `tenant`, writing at `epoch`: claim the epoch
    /// first ([`FencingStore::claim_epoch`](salesboy_actors::store::FencingStore::claim_epoch));
    /// once another node claims a newer one, every write of this backend is refused. Reads
    /// always work, so a new host loads what the old one flushed.
    pub fn web_session_store(&self, tenant: TenantId, epoch: u64) -> WebSessionStore {
        WebSessionStore {
            db: self.db.clone(),
            tenant,
            epoch,
            url: Arc::clone(&self.url),
        }
    }
}

impl WebSessionStore {
    /// The tenant whose session this is.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The epoch this backend writes at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Forgets the session, as after a logout: deletes every row of the tenant's Web
    /// session (its device, keys, Signal sessions, app state and buffers) in one fenced
    /// transaction. Pairing again starts from new keys.
    pub async fn forget(&self) -> Result<(), WebSessionError> {
        let work = async {
            let mut tx = self.fenced().await?;
            delete_session(&mut tx, &self.tenant).await?;
            tx.commit().await?;
            Ok::<(), Fault>(())
        };
        work.await.map_err(|fault| match fault {
            Fault::Sql(error) => WebSessionError::Store(map_sqlx_error(error, &self.url)),
            Fault::Web(error) => error,
        })
    }

    /// The tenant id as bound to queries.
    fn tenant_id(&self) -> &str {
        self.tenant.as_str()
    }

    /// Starts a write: a transaction (on SQLite holding the write lock) that has passed the
    /// tenant's fence at exactly this backend's epoch. A newer claim waits for it to end.
    async fn fenced(&self) -> Result<Transaction<'static, Any>, Fault> {
        let mut tx = self.db.begin().await?;
        let current = fencing::locked_epoch(&self.db, &mut tx, &self.tenant).await?;
        match current {
            Some(current) if current == self.epoch => Ok(tx),
            Some(current) if current > self.epoch => Err(StoreError::StaleEpoch {
                tenant: self.tenant.clone(),
                given: self.epoch,
                current,
            }
            .into()),
            current => Err(WebSessionError::EpochNotClaimed {
                tenant: self.tenant.clone(),
                epoch: self.epoch,
                current,
            }
            .into()),
        }
    }

    /// Awaits a query function and maps its failure to the library's error, keeping ours as
    /// its source ([`WebSessionError::find`]).
    async fn run<T>(&self, work: impl Future<Output = Result<T, Fault>>) -> LibraryResult<T> {
        work.await
            .map_err(|fault| fault.into_library_error(&self.url))
    }
}
