//! The tenant directory: tenant → {node, epoch, state} in the JetStream KV bucket
//! `sb_directory`, cached on every node by a watch.
//!
//! Activation creates the entry (create fails if it exists); moves and failovers update it
//! with the expected revision (compare-and-set) and `epoch + 1`. The node the directory names
//! at the current epoch is the only one allowed to host the tenant; the same epoch is claimed
//! in SQL, which refuses writes carrying an older one (fencing).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use salesboy_protocol::subjects::DIRECTORY_BUCKET;
use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::background::Background;
use crate::bus::{ALL_KEYS, Bus, BusError, Kv, KvError, KvOp};

/// A tenant's entry in the directory: where it lives, under which epoch, and whether it
/// is moving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The hosting node.
    pub node: NodeId,
    /// The tenant's epoch; bumped by every move and failover.
    pub epoch: u64,
    /// Whether it is moving.
    pub state: EntryState,
}

/// Whether the entry's node hosts the tenant or is handing it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Hosted by `node`.
    Active,
    /// Being handed from `node` to `to`: senders retry shortly.
    Moving {
        /// The node it moves to.
        to: NodeId,
    },
}

/// An entry and the KV revision that wrote it (for compare-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The entry.
    pub entry: DirectoryEntry,
    /// Its revision.
    pub revision: u64,
}

/// Why a directory operation failed. Plain data (serde): migration errors carry it between
/// nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DirectoryError {
    /// Someone else wrote first (create found an entry, or the revision moved on).
    #[error("directory entry changed concurrently")]
    Conflict,
    /// The stored value is not a directory entry.
    #[error("directory entry for {tenant} is corrupt: {reason}")]
    Corrupt {
        /// The tenant.
        tenant: String,
        /// Why.
        reason: String,
    },
    /// The entry could not be encoded (nothing was written).
    #[error("directory entry of {tenant} could not be encoded: {reason}")]
    Unencodable {
        /// The tenant.
        tenant: String,
        /// Why.
        reason: String,
    },
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<KvError> for DirectoryError {
    fn from(error: KvError) -> Self {
        match error {
            KvError::AlreadyExists | KvError::WrongRevision { .. } => Self::Conflict,
            KvError::Bus(e) => Self::Bus(e),
            KvError::InvalidKey(key) => Self::Corrupt {
                tenant: key,
                reason: "invalid key".into(),
            },
        }
    }
}

type Cache = Arc<RwLock<HashMap<TenantId, Versioned>>>;

/// The directory, with a local cache kept by a watch.
pub struct Directory {
    kv: Arc<dyn Kv>,
    cache: Cache,
}

impl Directory {
    /// Opens the bucket and starts the cache's watch on `background` (it stops when that is
    /// cancelled).
    pub async fn open(bus: &Arc<dyn Bus>, background: &Background) -> Result<Self, DirectoryError> {
        let kv = bus.kv(DIRECTORY_BUCKET, 1).await?;
        let cache: Cache = Arc::default();
        background.spawn_until_cancelled(keep_cache(Arc::clone(&kv), Arc::clone(&cache)));
        Ok(Self { kv, cache })
    }

    /// The cached entry (may lag the bucket by a moment).
    pub fn cached(&self, tenant: &TenantId) -> Option<Versioned> {
        read(&self.cache).get(tenant).cloned()
    }

    /// Every cached entry, by tenant (a fixed order keeps runs reproducible).
    pub fn cached_all(&self) -> Vec<(TenantId, Versioned)> {
        self.cached_where(|_| true)
    }

    /// The cached entries that `keep` accepts, by tenant; only those are copied and
    /// sorted (the periodic duties look for a few among many).
    pub fn cached_where(&self, keep: impl Fn(&Versioned) -> bool) -> Vec<(TenantId, Versioned)> {
        let mut found: Vec<(TenantId, Versioned)> = read(&self.cache)
            .iter()
            .filter(|(_, v)| keep(v))
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The entry as the bucket has it now.
    pub async fn fetch(&self, tenant: &TenantId) -> Result<Option<Versioned>, DirectoryError> {
        let Some(stored) = self.kv.get(tenant.as_str()).await? else {
            return Ok(None);
        };
        let versioned = Versioned {
            entry: decode(tenant.as_str(), &stored.value)?,
            revision: stored.revision,
        };
        remember(&self.cache, tenant.clone(), versioned.clone());
        Ok(Some(versioned))
    }

    /// Creates the tenant's first entry; [`DirectoryError::Conflict`] if it has one.
    pub async fn create(
        &self,
        tenant: &TenantId,
        entry: DirectoryEntry,
    ) -> Result<Versioned, DirectoryError> {
        let value = encode(tenant, &entry)?;
        let revision = self.kv.create(tenant.as_str(), value).await?;
        let versioned = Versioned { entry, revision };
        remember(&self.cache, tenant.clone(), versioned.clone());
        Ok(versioned)
    }

    /// Replaces the entry written at `expected_revision`; [`DirectoryError::Conflict`]
    /// if it changed since.
    pub async fn update(
        &self,
        tenant: &TenantId,
        entry: DirectoryEntry,
        expected_revision: u64,
    ) -> Result<Versioned, DirectoryError> {
        let revision = self
            .kv
            .update(tenant.as_str(), encode(tenant, &entry)?, expected_revision)
            .await?;
        let versioned = Versioned { entry, revision };
        remember(&self.cache, tenant.clone(), versioned.clone());
        Ok(versioned)
    }
}

impl Directory {
    /// Removes the tenant's entry (a deleted tenant is placed nowhere); the cache forgets it
    /// at once, the other nodes' caches by their watch.
    pub async fn remove(&self, tenant: &TenantId) -> Result<(), DirectoryError> {
        self.kv.delete(tenant.as_str()).await?;
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(tenant);
        Ok(())
    }
}

fn read(cache: &Cache) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, Versioned>> {
    cache
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remember(cache: &Cache, tenant: TenantId, versioned: Versioned) {
    let mut cache = cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Never replace a newer revision with an older one (the watch may lag a direct write).
    if cache
        .get(&tenant)
        .is_none_or(|known| known.revision < versioned.revision)
    {
        cache.insert(tenant, versioned);
    }
}

/// The entry as stored; an error rather than an empty value (which would read back as
/// a corrupt entry).
fn encode(tenant: &TenantId, entry: &DirectoryEntry) -> Result<Bytes, DirectoryError> {
    serde_json::to_vec(entry)
        .map(Bytes::from)
        .map_err(|e| DirectoryError::Unencodable {
            tenant: tenant.to_string(),
            reason: e.to_string(),
        })
}

fn decode(tenant: &str, value: &[u8]) -> Result<DirectoryEntry, DirectoryError> {
    serde_json::from_slice(value).map_err(|e| DirectoryError::Corrupt {
        tenant: tenant.to_owned(),
        reason: e.to_string(),
    })
}

/// Follows the bucket; re-watches with backoff if the watch ends.
async fn keep_cache(kv: Arc<dyn Kv>, cache: Cache) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match kv.watch(ALL_KEYS).await {
            Ok(mut watch) => {
                backoff = Duration::from_millis(100);
                while let Some(event) = watch.next().await {
                    let Ok(tenant) = TenantId::new(event.key.as_str()) else {
                        continue;
                    };
                    match event.op {
                        KvOp::Put => match decode(&event.key, &event.value) {
                            Ok(entry) => remember(
                                &cache,
                                tenant,
                                Versioned {
                                    entry,
                                    revision: event.revision,
                                },
                            ),
                            Err(e) => warn!(error = %e, "directory entry ignored"),
                        },
                        KvOp::Delete => {
                            cache
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .remove(&tenant);
                        }
                    }
                }
                debug!("directory watch ended, watching again");
            }
            Err(e) => warn!(error = %e, "directory watch failed, retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
