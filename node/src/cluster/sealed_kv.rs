//! The cluster's KV buckets sealed: a bus whose buckets seal every value they write with the
//! cluster key and open every value they read ([`ClusterKey::seal_record`]), so a client
//! that can reach NATS but has no key can neither read the membership, directory and leader
//! records nor write one a node would believe.
//!
//! A value that does not open (written without the key, forged, or left by a version that
//! did not seal) counts as no value at all: [`Kv::get`] answers `None`, a watch shows a
//! delete, [`Kv::create`] replaces it (by compare-and-set over its revision), and each is
//! counted in `salesboy_bus_rejected_total{reason}` and logged. So the cluster heals by
//! itself: a placement that does not open is placed again, at an epoch after the one in
//! SQL, exactly as after a deleted key. What sealing cannot stop is a client with write
//! permission deleting keys or putting back an old sealed value of the same key; NATS
//! permissions keep such clients out (docs/security.md).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tracing::warn;

use super::seal::{ClusterKey, SealError};
use crate::bus::{
    Bus, BusError, Headers, Kv, KvEntry, KvError, KvOp, KvWatch, Message, Subscription,
};

/// A bus whose KV buckets are sealed under the cluster key; messages pass through as they
/// are (the cluster seals those itself).
pub struct SealedKvBus {
    inner: Arc<dyn Bus>,
    key: Arc<ClusterKey>,
}

impl SealedKvBus {
    /// `inner` with its buckets sealed under `key`.
    pub fn new(inner: Arc<dyn Bus>, key: Arc<ClusterKey>) -> Self {
        Self { inner, key }
    }
}

#[async_trait]
impl Bus for SealedKvBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.inner.publish(subject, headers, payload).await
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        self.inner.request(subject, headers, payload, timeout).await
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        self.inner.subscribe(subject, queue_group).await
    }

    async fn respond(
        &self,
        request: &Message,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.inner.respond(request, headers, payload).await
    }

    async fn kv(&self, bucket: &str, history: u8) -> Result<Arc<dyn Kv>, BusError> {
        let inner = self.inner.kv(bucket, history).await?;
        Ok(Arc::new(SealedKv {
            inner,
            key: Arc::clone(&self.key),
        }))
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.flush().await
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn nats_client(&self) -> Option<async_nats::Client> {
        self.inner.nats_client()
    }
}

/// A bucket whose values are sealed under the cluster key.
struct SealedKv {
    inner: Arc<dyn Kv>,
    key: Arc<ClusterKey>,
}

impl SealedKv {
    fn seal(&self, key: &str, value: &[u8]) -> Bytes {
        self.key.seal_record(self.inner.bucket(), key, value)
    }
}

/// Opens the value of `key` in `bucket`; a refusal is counted and logged.
fn open(
    cluster_key: &ClusterKey,
    bucket: &str,
    key: &str,
    value: &[u8],
) -> Result<Bytes, SealError> {
    cluster_key
        .open_record(bucket, key, value)
        .map(Bytes::from)
        .inspect_err(|refusal| refusal.record(&format!("kv {bucket}/{key}")))
}

#[async_trait]
impl Kv for SealedKv {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        let Some(entry) = self.inner.get(key).await? else {
            return Ok(None);
        };
        Ok(open(&self.key, self.bucket(), key, &entry.value)
            .ok()
            .map(|value| KvEntry { value, ..entry }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.inner.put(key, self.seal(key, &value)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        let sealed = self.seal(key, &value);
        match self.inner.create(key, sealed.clone()).await {
            Err(KvError::AlreadyExists) => {}
            other => return other,
        }
        // A value that does not open counts as none: replace it, unless it changed meanwhile.
        let Some(found) = self.inner.get(key).await? else {
            return Err(KvError::AlreadyExists);
        };
        if self
            .key
            .open_record(self.bucket(), key, &found.value)
            .is_ok()
        {
            return Err(KvError::AlreadyExists);
        }
        match self.inner.update(key, sealed, found.revision).await {
            Err(KvError::WrongRevision { .. }) => Err(KvError::AlreadyExists),
            written => {
                if written.is_ok() {
                    warn!(
                        bucket = self.bucket(),
                        key, "a value that did not open was replaced"
                    );
                }
                written
            }
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: u64,
    ) -> Result<u64, KvError> {
        self.inner
            .update(key, self.seal(key, &value), expected_revision)
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key).await
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.inner.keys().await
    }

    async fn watch(&self, keys: &str) -> Result<KvWatch, KvError> {
        let watch = self.inner.watch(keys).await?;
        let key = Arc::clone(&self.key);
        let bucket = self.bucket().to_owned();
        let opened = watch.filter_map(move |mut event| {
            let kept = match event.op {
                KvOp::Delete => Some(event),
                KvOp::Put => {
                    match open(&key, &bucket, &event.key, &event.value) {
                        Ok(value) => event.value = value,
                        // No trustworthy value: as if the key were deleted.
                        Err(_) => {
                            event.op = KvOp::Delete;
                            event.value = Bytes::new();
                        }
                    }
                    Some(event)
                }
            };
            std::future::ready(kept)
        });
        Ok(KvWatch::new(opened.boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{ALL_KEYS, LocalBus};

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[tokio::test]
    async fn values_are_sealed_at_rest_and_one_that_does_not_open_counts_as_none() {
        let plain: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let key = Arc::new(ClusterKey::parse(KEY, None).unwrap());
        let sealed = SealedKvBus::new(Arc::clone(&plain), key);
        let kv = sealed.kv("sb_directory", 1).await.unwrap();
        let raw = plain.kv("sb_directory", 1).await.unwrap();
        let mut watch = kv.watch(ALL_KEYS).await.unwrap();
        let value = |text: &'static str| Bytes::from_static(text.as_bytes());

        let revision = kv.create("acme", value("{\"node\":\"n1\"}")).await.unwrap();
        let stored = raw.get("acme").await.unwrap().unwrap();
        assert!(
            !stored.value.windows(4).any(|w| w == b"node"),
            "sealed at rest"
        );
        assert_eq!(
            kv.get("acme").await.unwrap().unwrap().value,
            value("{\"node\":\"n1\"}")
        );
        assert_eq!(
            watch.next().await.unwrap().value,
            value("{\"node\":\"n1\"}")
        );
        assert!(matches!(
            kv.create("acme", value("{}")).await,
            Err(KvError::AlreadyExists)
        ));

        // Someone without the key writes: a node sees no value (the watch a delete)...
        raw.update("acme", value("{\"node\":\"evil\"}"), revision)
            .await
            .unwrap();
        assert!(kv.get("acme").await.unwrap().is_none());
        let next = watch.next().await.unwrap();
        assert_eq!((next.op, next.value.len()), (KvOp::Delete, 0));
        // ...and places the key again over it.
        kv.create("acme", value("{\"node\":\"n2\"}")).await.unwrap();
        assert_eq!(
            watch.next().await.unwrap().value,
            value("{\"node\":\"n2\"}")
        );
        assert_eq!(
            kv.get("acme").await.unwrap().unwrap().value,
            value("{\"node\":\"n2\"}")
        );

        // A value sealed for another key does not open at this one.
        let moved = raw.get("acme").await.unwrap().unwrap();
        raw.put("globex", moved.value).await.unwrap();
        assert!(kv.get("globex").await.unwrap().is_none());
        assert_eq!(watch.next().await.unwrap().op, KvOp::Delete);
        assert_eq!(kv.keys().await.unwrap(), ["acme", "globex"]);
        assert_eq!(kv.entries().await.unwrap().len(), 1, "only acme opens");
    }
}
