//! JetStream KV buckets on the NATS bus: a bucket is created through its backing stream
//! (nats-server 2.9, decision 0003), written with retries while the server does not route
//! its subjects yet, listed against the server's subject snapshot, and watched one filter at
//! a time.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use salesboy_protocol::subjects;
use tracing::{error, warn};

use super::NatsBus;
use crate::backoff::Backoff;
use crate::bus::{Bus, BusError, Kv, KvEntry, KvError, KvEvent, KvOp, KvWatch, validate};

/// A watch gives up after this many errors in a row without an event between them.
const MAX_WATCH_ERRORS: u32 = 16;

/// Opens bucket `bucket` keeping `history` values per key, creating its stream first.
pub(super) async fn open(
    bus: &NatsBus,
    bucket: &str,
    history: u8,
) -> Result<Arc<dyn Kv>, BusError> {
    validate::bucket(bucket, history)?;
    // nats-server 2.9: create the bucket's stream ourselves (decision 0003).
    let config = stream::Config {
        name: subjects::kv_stream(bucket),
        subjects: vec![subjects::kv_stream_subjects(bucket)],
        max_messages_per_subject: i64::from(history),
        max_message_size: -1,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: bus.kv_replicas,
        ..Default::default()
    };
    // Nodes starting together race to create the same stream; nats-server 2.9 may answer
    // the loser "subjects overlap" instead of handing it the stream. Look it up again.
    let jetstream = &bus.jetstream;
    let stream = STREAM_CREATE_BACKOFF
        .retry(
            "kv bucket creation raced",
            move || jetstream.get_or_create_stream(config.clone()),
            |_| true,
        )
        .await
        .map_err(|e| bus.transport(format!("cannot create kv bucket {bucket}: {e}")))?;
    // An existing stream keeps its replicas: never run on fewer (or more) than configured.
    let existing = stream.cached_info().config.num_replicas.max(1);
    if existing != bus.kv_replicas {
        return Err(BusError::ReplicasMismatch {
            stream: subjects::kv_stream(bucket),
            existing,
            configured: bus.kv_replicas,
        });
    }
    let store = bus
        .jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| bus.transport(format!("cannot open kv bucket {bucket}: {e}")))?;
    Ok(Arc::new(NatsKv {
        bucket: bucket.to_owned(),
        store,
        bus: bus.clone(),
    }))
}

/// Retries of a bucket's stream creation that raced another node's.
const STREAM_CREATE_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(25),
    max: Duration::from_millis(400),
    retries: 5,
};

/// Retries of a KV write that found no stream: about 2.6 s in all, as on a NATS cluster a
/// new stream's subjects reach the other servers only once its Raft group has formed (nodes
/// starting together on a loaded three-server cluster saw more than the 0.3 s a single
/// server needs).
const NO_STREAM_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(10),
    max: Duration::from_millis(500),
    retries: 10,
};

/// Runs a KV write again when the server answered that no stream takes its subject.
///
/// Right after nodes starting together created a bucket's stream, nats-server 2.9 may not
/// route the bucket's subjects to it yet (nats-io/nats-server#3677, #4600): the write gets
/// "no responders", which async-nats reports as a publish error of kind `StreamNotFound`
/// (somewhere in the KV error's source chain). Nothing was stored then, so trying again is
/// safe, compare-and-set included.
async fn retry_without_stream<T, E, F, Fut>(write: F) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    NO_STREAM_BACKOFF
        .retry("kv write found no stream", write, |e: &E| {
            found_no_stream(e)
        })
        .await
}

/// Whether a KV write failed because no stream took its subject: a publish error of kind
/// `StreamNotFound` anywhere in the source chain (the KV error wraps the publish error).
fn found_no_stream(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<jetstream::context::PublishError>()
            .is_some_and(|e| e.kind() == jetstream::context::PublishErrorKind::StreamNotFound)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A JetStream KV bucket.
struct NatsKv {
    bucket: String,
    store: kv::Store,
    bus: NatsBus,
}

impl NatsKv {
    fn check_write(&self, key: &str, value: &Bytes) -> Result<(), KvError> {
        validate::key(key)?;
        validate::value(value.len(), self.bus.max_payload())
    }

    fn transport(&self, error: impl fmt::Display) -> KvError {
        self.bus.transport(error).into()
    }
}

#[async_trait]
impl Kv for NatsKv {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        validate::key(key)?;
        let entry = self.store.entry(key).await.map_err(|e| self.transport(e))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| KvEntry {
                key: entry.key,
                value: entry.value,
                revision: entry.revision,
            }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.check_write(key, &value)?;
        retry_without_stream(|| self.store.put(key, value.clone()))
            .await
            .map_err(|e| self.transport(e))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.check_write(key, &value)?;
        retry_without_stream(|| self.store.create(key, value.clone()))
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => KvError::AlreadyExists,
                _ => self.transport(e),
            })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: u64,
    ) -> Result<u64, KvError> {
        self.check_write(key, &value)?;
        retry_without_stream(|| self.store.update(key, value.clone(), expected_revision))
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => KvError::WrongRevision {
                    expected: expected_revision,
                },
                kv::UpdateErrorKind::TimedOut => self.bus.timeout().into(),
                _ => self.transport(e),
            })
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        validate::key(key)?;
        self.store.delete(key).await.map_err(|e| self.transport(e))
    }

    /// The client's key listing (a consumer over the last value per key) misses a key that
    /// is rewritten while the listing runs. So the listing is checked against the server's
    /// subject list, one consistent snapshot (per page of 100,000 keys): a key in the
    /// snapshot but not in the listing was rewritten or deleted meanwhile, and is read.
    async fn keys(&self) -> Result<Vec<String>, KvError> {
        let snapshot: Vec<(String, usize)> = self
            .store
            .stream
            .info_with_subjects(subjects::kv_stream_subjects(&self.bucket))
            .await
            .map_err(|e| self.transport(e))?
            .try_collect()
            .await
            .map_err(|e| self.transport(e))?;
        let listed = self.store.keys().await.map_err(|e| self.transport(e))?;
        let mut keys: BTreeSet<String> =
            listed.try_collect().await.map_err(|e| self.transport(e))?;
        for (subject, _) in snapshot {
            let Some(key) = subject.strip_prefix(self.store.prefix.as_str()) else {
                continue;
            };
            if !keys.contains(key) && self.get(key).await?.is_some() {
                keys.insert(key.to_owned());
            }
        }
        Ok(keys.into_iter().collect())
    }

    async fn watch(&self, keys: &str) -> Result<KvWatch, KvError> {
        validate::key_filter(keys)?;
        // Delete markers written up to here are not news to this watch: leave them out.
        let before = self
            .store
            .stream
            .get_info()
            .await
            .map_err(|e| self.transport(e))?
            .state
            .last_sequence;
        let watch = self
            .store
            .watch_with_history(keys)
            .await
            .map_err(|e| self.transport(e))?;
        let bucket = self.bucket.clone();
        let events = futures::stream::unfold(watch, move |mut watch| {
            let bucket = bucket.clone();
            async move {
                let mut errors = 0;
                loop {
                    match watch.next().await? {
                        Ok(entry) => {
                            errors = 0;
                            if let Some(event) = watch_event(entry, before) {
                                return Some((event, watch));
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            if errors >= MAX_WATCH_ERRORS {
                                error!(bucket, error = %e, "kv watch keeps failing, giving up");
                                return None;
                            }
                            warn!(bucket, error = %e, "kv watch error, continuing");
                        }
                    }
                }
            }
        });
        Ok(KvWatch::new(events.boxed()))
    }
}

/// A watched entry as an event; `None` for a delete marker already in place when the watch
/// began (revision up to `before`).
fn watch_event(entry: kv::Entry, before: u64) -> Option<KvEvent> {
    match entry.operation {
        kv::Operation::Put => Some(KvEvent {
            key: entry.key,
            op: KvOp::Put,
            value: entry.value,
            revision: entry.revision,
        }),
        kv::Operation::Delete | kv::Operation::Purge if entry.revision > before => Some(KvEvent {
            key: entry.key,
            op: KvOp::Delete,
            value: Bytes::new(),
            revision: entry.revision,
        }),
        kv::Operation::Delete | kv::Operation::Purge => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_write_that_found_no_stream_is_told_by_its_error_kind() {
        use jetstream::context::{PublishError, PublishErrorKind};
        let no_stream = || PublishError::new(PublishErrorKind::StreamNotFound);
        // update → create, and put → create: how the KV client wraps the publish error.
        let update = kv::UpdateError::from(no_stream());
        assert!(found_no_stream(&update));
        assert!(found_no_stream(&kv::CreateError::from(update)));
        let put = kv::PutError::with_source(kv::PutErrorKind::Ack, no_stream());
        assert!(found_no_stream(&put));
        assert!(found_no_stream(&kv::CreateError::from(put)));
        for other in [PublishErrorKind::TimedOut, PublishErrorKind::Other] {
            let update = kv::UpdateError::from(PublishError::new(other));
            assert!(!found_no_stream(&kv::CreateError::from(update)));
        }
        let revision = kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision);
        assert!(!found_no_stream(&revision));
    }
}
