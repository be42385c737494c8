//! The simulated network: one in-process [`LocalBus`] for the cluster, and per node
//! incarnation a [`ChaosBus`] in front of it that applies the node's gate (paused, cut off,
//! down) and, while faults are on, the seeded message faults: lost requests and replies,
//! delays (which reorder concurrent requests), duplicated requests.
//!
//! KV (membership, directory, leader lease) is JetStream in production: reliable while
//! connected. Here it gets a small seeded latency and fails while the node is cut off; a
//! watch holds its events while the node is cut off or paused and delivers them after, as
//! JetStream's ordered consumer does on reconnection.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use salesboy_node::bus::{
    Bus, BusError, Headers, Kv, KvEntry, KvError, KvWatch, LocalBus, Message, Subscription,
};

use salesboy_protocol::{Codec, Envelope};

use super::gate::{Gate, Link};
use super::rng::KeyedDraws;

/// How long a KV operation of a cut-off node takes to fail (JetStream's request timeout,
/// scaled down with the simulation's other timings).
const KV_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The message faults in force, in thousandths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageFaults {
    /// A request (or its reply) is lost.
    pub drop_per_mille: u64,
    /// A request is delivered twice.
    pub duplicate_per_mille: u64,
    /// A request or reply is delayed (up to `max_delay_ms`).
    pub delay_per_mille: u64,
    /// The longest delay.
    pub max_delay_ms: u64,
    /// The longest KV latency.
    pub max_kv_latency_ms: u64,
}

/// Counts of the message faults applied, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests and replies lost.
    pub dropped: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// Requests and replies delayed.
    pub delayed: u64,
}

/// The cluster's network: the bus everyone shares, the faults in force, the seeded draws.
pub struct Network {
    bus: Arc<dyn Bus>,
    draws: KeyedDraws,
    faults: Mutex<Option<MessageFaults>>,
    counts: Mutex<FaultCounts>,
}

/// What happens to one message.
enum Fate {
    Deliver { delay: Duration, duplicate: bool },
    Drop,
}

impl Network {
    /// A network drawing its faults from `rng`; faults start off.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            bus: Arc::new(LocalBus::new()),
            draws: KeyedDraws::new(seed),
            faults: Mutex::new(None),
            counts: Mutex::new(FaultCounts::default()),
        })
    }

    /// Turns message faults on (`Some`) or off.
    pub fn set_faults(&self, faults: Option<MessageFaults>) {
        *self.faults.lock() = faults;
    }

    /// The faults applied so far.
    pub fn counts(&self) -> FaultCounts {
        *self.counts.lock()
    }

    /// A handle for one node incarnation behind `gate`.
    pub fn handle(self: &Arc<Self>, gate: Gate) -> Arc<dyn Bus> {
        Arc::new(ChaosBus {
            net: Arc::clone(self),
            gate,
        })
    }

    fn fate(&self, key: &[u8]) -> Fate {
        let Some(faults) = *self.faults.lock() else {
            return Fate::Deliver {
                delay: Duration::ZERO,
                duplicate: false,
            };
        };
        let mut rng = self.draws.rng(key);
        let mut counts = self.counts.lock();
        if rng.chance(faults.drop_per_mille) {
            counts.dropped += 1;
            return Fate::Drop;
        }
        let delay = if rng.chance(faults.delay_per_mille) {
            counts.delayed += 1;
            Duration::from_millis(rng.between(1, faults.max_delay_ms.max(1)))
        } else {
            Duration::ZERO
        };
        let duplicate = rng.chance(faults.duplicate_per_mille);
        if duplicate {
            counts.duplicated += 1;
        }
        Fate::Deliver { delay, duplicate }
    }

    fn kv_latency(&self, key: &[u8]) -> Duration {
        let max = self.faults.lock().map_or(0, |f| f.max_kv_latency_ms);
        Duration::from_millis(self.draws.rng(key).below(max + 1))
    }
}

/// What identifies a message for its fault draw, whatever order messages are sent in: the
/// subject and the content, without an envelope's random message id (a retry is the next
/// draw of the same key) and without the seal's random nonce (the content is opened with
/// the test cluster key first).
fn message_key(subject: &str, payload: &[u8]) -> Vec<u8> {
    static KEY: std::sync::LazyLock<std::sync::Arc<salesboy_node::cluster::ClusterKey>> =
        std::sync::LazyLock::new(salesboy_testkit::sandbox_cluster_key);
    let opened = KEY.open_request(subject, payload).map(|o| o.message);
    let payload = opened.as_deref().unwrap_or(payload);
    let mut key = subject.as_bytes().to_vec();
    match Codec::Bincode.decode::<Envelope>(payload) {
        Ok(envelope) => {
            key.extend_from_slice(format!("{:?}{:?}", envelope.target, envelope.kind).as_bytes());
            key.extend_from_slice(&envelope.payload);
        }
        Err(_) => key.extend_from_slice(payload),
    }
    key
}

/// One node incarnation's bus.
struct ChaosBus {
    net: Arc<Network>,
    gate: Gate,
}

impl ChaosBus {
    /// Whether a fire-and-forget message (a publish, a reply) leaves this node: an error when
    /// the node is down, `false` when it is cut off (the message is lost unseen).
    async fn may_send(&self) -> Result<bool, BusError> {
        match self.gate.pass().await {
            Link::Down => Err(BusError::Disconnected),
            Link::Partitioned => Ok(false),
            Link::Up | Link::Paused => Ok(true),
        }
    }
}

#[async_trait]
impl Bus for ChaosBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        if !self.may_send().await? {
            return Ok(());
        }
        // Publishes keep their order per publisher (NATS does): only requests are faulted.
        self.net.bus.publish(subject, headers, payload).await
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        match self.gate.pass().await {
            Link::Down => return Err(BusError::Disconnected),
            Link::Partitioned => {
                tokio::time::sleep(timeout).await;
                return Err(BusError::Disconnected);
            }
            Link::Up | Link::Paused => {}
        }
        let (delay, duplicate) = match self.net.fate(&message_key(subject, &payload)) {
            Fate::Drop => {
                tokio::time::sleep(timeout).await;
                return Err(BusError::Timeout);
            }
            Fate::Deliver { delay, duplicate } => (delay, duplicate),
        };
        if duplicate {
            let bus = Arc::clone(&self.net.bus);
            let (subject, headers, payload) =
                (subject.to_owned(), headers.clone(), payload.clone());
            let again = delay + Duration::from_millis(1);
            tokio::spawn(async move {
                tokio::time::sleep(again).await;
                let _ = bus.request(&subject, headers, payload, timeout).await;
            });
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay.min(timeout)).await;
            if delay >= timeout {
                return Err(BusError::Timeout);
            }
        }
        self.net
            .bus
            .request(subject, headers, payload, timeout - delay)
            .await
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        match self.gate.pass().await {
            Link::Down | Link::Partitioned => return Err(BusError::Disconnected),
            Link::Up | Link::Paused => {}
        }
        let inner = self.net.bus.subscribe(subject, queue_group).await?;
        let gate = self.gate.clone();
        // A cut-off node never sees what is sent to it meanwhile; a paused one sees it late.
        let messages = futures::stream::unfold((inner, gate), |(mut inner, gate)| async move {
            loop {
                let message = inner.next().await?;
                match gate.pass().await {
                    Link::Up => return Some((message, (inner, gate))),
                    Link::Partitioned => continue,
                    Link::Down | Link::Paused => return None,
                }
            }
        });
        Ok(Subscription::new(subject, messages.boxed()))
    }

    async fn respond(
        &self,
        request: &Message,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        if !self.may_send().await? {
            return Ok(());
        }
        let mut key = b"reply/".to_vec();
        key.extend_from_slice(&message_key(&request.subject, &request.payload));
        match self.net.fate(&key) {
            Fate::Drop => Ok(()),
            Fate::Deliver { delay, .. } if !delay.is_zero() => {
                let bus = Arc::clone(&self.net.bus);
                let request = request.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = bus.respond(&request, headers, payload).await;
                });
                Ok(())
            }
            Fate::Deliver { .. } => self.net.bus.respond(request, headers, payload).await,
        }
    }

    async fn kv(&self, bucket: &str, history: u8) -> Result<Arc<dyn Kv>, BusError> {
        match self.gate.pass().await {
            Link::Down => return Err(BusError::Disconnected),
            Link::Partitioned => {
                tokio::time::sleep(KV_TIMEOUT).await;
                return Err(BusError::Disconnected);
            }
            Link::Up | Link::Paused => {}
        }
        let inner = self.net.bus.kv(bucket, history).await?;
        Ok(Arc::new(ChaosKv {
            inner,
            net: Arc::clone(&self.net),
            gate: self.gate.clone(),
        }))
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        !matches!(self.gate.link(), Link::Partitioned | Link::Down)
    }

    fn max_payload(&self) -> usize {
        self.net.bus.max_payload()
    }

    fn kind(&self) -> &'static str {
        "simulated"
    }
}

/// A KV bucket as one node incarnation sees it.
struct ChaosKv {
    inner: Arc<dyn Kv>,
    net: Arc<Network>,
    gate: Gate,
}

impl ChaosKv {
    async fn enter(&self, what: &str) -> Result<(), KvError> {
        let latency = self
            .net
            .kv_latency(format!("{}/{what}", self.inner.bucket()).as_bytes());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match self.gate.pass().await {
            Link::Down => Err(KvError::Bus(BusError::Disconnected)),
            Link::Partitioned => {
                tokio::time::sleep(KV_TIMEOUT).await;
                Err(KvError::Bus(BusError::Timeout))
            }
            Link::Up | Link::Paused => Ok(()),
        }
    }
}

#[async_trait]
impl Kv for ChaosKv {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        self.enter(&format!("get/{key}")).await?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.enter(&format!("put/{key}")).await?;
        self.inner.put(key, value).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.enter(&format!("create/{key}")).await?;
        self.inner.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: u64,
    ) -> Result<u64, KvError> {
        self.enter(&format!("update/{key}")).await?;
        self.inner.update(key, value, expected_revision).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.enter(&format!("delete/{key}")).await?;
        self.inner.delete(key).await
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.enter("keys").await?;
        self.inner.keys().await
    }

    async fn watch(&self, keys: &str) -> Result<KvWatch, KvError> {
        self.enter(&format!("watch/{keys}")).await?;
        let inner = self.inner.watch(keys).await?;
        let gate = self.gate.clone();
        let events = futures::stream::unfold((inner, gate), |(mut inner, gate)| async move {
            let event = inner.next().await?;
            // Held while cut off or paused, delivered once back; never after death.
            match gate.settled().await {
                Link::Down => None,
                _ => Some((event, (inner, gate))),
            }
        });
        Ok(KvWatch::new(events.boxed()))
    }
}
