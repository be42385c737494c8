//! Buses for tests that run once on the in-process bus and once on NATS, and a bus whose
//! KV operations can be cut off (failing at once, or hanging) to simulate a partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use crate::NatsServer;
use async_trait::async_trait;
use bytes::Bytes;
use salesboy_node::bus::{
    Bus, BusError, Headers, Kv, KvEntry, KvError, KvWatch, LocalBus, Message, NatsBus,
    NatsBusOptions, Subscription,
};
use tokio::time::timeout;

/// How long connecting to the test server may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The buses.

/// A bus shared by "nodes": each `bus()` is another node's handle on it.
// The futures are awaited where they are made (tests' bodies), never sent to another task.
#[allow(async_fn_in_trait)]
pub trait Cluster: Sized {
    /// Starts the shared bus (and its server, if any).
    async fn start() -> Self;
    /// Another node's handle on the bus.
    async fn bus(&self) -> Arc<dyn Bus>;
}

/// The in-process bus, shared.
pub struct LocalCluster {
    /// The bus every node's handle clones.
    pub bus: LocalBus,
}

impl Cluster for LocalCluster {
    async fn start() -> Self {
        Self {
            bus: LocalBus::new(),
        }
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        Arc::new(self.bus.clone())
    }
}

/// A private nats-server; each node's handle is its own connection.
pub struct NatsCluster {
    /// The server.
    pub server: NatsServer,
    /// Connections made so far (they name the connections).
    pub connections: AtomicUsize,
}

impl Cluster for NatsCluster {
    async fn start() -> Self {
        Self {
            server: NatsServer::start().expect("start nats-server"),
            connections: AtomicUsize::new(0),
        }
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        Arc::new(nats_bus(&self.server, &self.connections).await)
    }
}

/// Runs a suite of bus tests once per bus: each `async fn test(cluster: &impl Cluster)` of
/// the calling module becomes the tests `local::test` (on [`LocalCluster`]) and
/// `nats::test` (on [`NatsCluster`]).
///
/// ```ignore
/// salesboy_testkit::bus_suite!([exactly_one_of_three_leads, invalid_config_is_refused]);
/// ```
#[macro_export]
macro_rules! bus_suite {
    ([$($test:ident),* $(,)?]) => {
        $crate::bus_suite!(@on local, $crate::buses::LocalCluster, [$($test),*]);
        $crate::bus_suite!(@on nats, $crate::buses::NatsCluster, [$($test),*]);
    };
    (@on $module:ident, $cluster:ty, [$($test:ident),*]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    let cluster = <$cluster as $crate::buses::Cluster>::start().await;
                    super::$test(&cluster).await;
                }
            )*
        }
    };
}

/// A new connection to `server`, named after the `connections` counter.
pub async fn nats_bus(server: &NatsServer, connections: &AtomicUsize) -> NatsBus {
    let n = connections.fetch_add(1, Ordering::Relaxed);
    let options = NatsBusOptions {
        name: format!("salesboy-test-{n}"),
        ..Default::default()
    };
    timeout(CONNECT_WAIT, NatsBus::connect(&server.url(), options))
        .await
        .expect("connect timed out")
        .expect("connect to the test server")
}

/// A [`CuttableBus`] mode: KV operations work.
pub const HEALTHY: u8 = 0;
/// A [`CuttableBus`] mode: KV operations fail at once (disconnected).
pub const FAILING: u8 = 1;
/// A [`CuttableBus`] mode: KV operations hang.
pub const HANGING: u8 = 2;

/// A bus whose KV operations can be cut off (failing at once, or hanging) while the rest
/// keeps working: one node losing the cluster while the others carry on. Watches keep
/// delivering, so the cut node still sees the others.
#[derive(Clone)]
pub struct CuttableBus {
    /// The bus it forwards to.
    pub inner: Arc<dyn Bus>,
    /// [`HEALTHY`], [`FAILING`] or [`HANGING`].
    pub mode: Arc<AtomicU8>,
}

impl CuttableBus {
    /// A healthy bus in front of `inner`.
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        Self {
            inner,
            mode: Arc::new(AtomicU8::new(HEALTHY)),
        }
    }

    /// Switches to `mode` ([`HEALTHY`], [`FAILING`] or [`HANGING`]).
    pub fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

#[async_trait]
impl Bus for CuttableBus {
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
        Ok(Arc::new(CuttableKv {
            inner,
            mode: Arc::clone(&self.mode),
        }))
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.flush().await
    }

    fn is_connected(&self) -> bool {
        self.mode.load(Ordering::SeqCst) == HEALTHY && self.inner.is_connected()
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

/// A KV bucket of a [`CuttableBus`]: fails or hangs with its bus's mode.
pub struct CuttableKv {
    /// The bucket it forwards to.
    pub inner: Arc<dyn Kv>,
    /// Its bus's mode.
    pub mode: Arc<AtomicU8>,
}

impl CuttableKv {
    /// Ok when healthy; an error when failing; never returns when hanging.
    pub async fn check(&self) -> Result<(), KvError> {
        match self.mode.load(Ordering::SeqCst) {
            FAILING => Err(KvError::Bus(BusError::Disconnected)),
            HANGING => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Kv for CuttableKv {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        self.check().await?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.check().await?;
        self.inner.put(key, value).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.check().await?;
        self.inner.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: u64,
    ) -> Result<u64, KvError> {
        self.check().await?;
        self.inner.update(key, value, expected_revision).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.check().await?;
        self.inner.delete(key).await
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.check().await?;
        self.inner.keys().await
    }

    async fn watch(&self, keys: &str) -> Result<KvWatch, KvError> {
        self.inner.watch(keys).await
    }
}
