//! The in-process bus: the same semantics as [`super::NatsBus`], inside one process.
//!
//! [`LocalBus`] is a cheap cloneable handle; every clone is the same bus, so the nodes of a
//! simulated cluster each hold one. Messages travel through tokio channels, KV buckets are
//! maps behind a mutex. Every copy of a message passes through one function (`deliver`): the
//! seam where a simulation's seeded scheduler can delay, drop, duplicate or reorder.
//!
//! Differences that do not show through the interface: queue groups take turns (NATS picks
//! a member at random), a bucket keeps only the latest value per key whatever its history
//! setting, and nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use parking_lot::Mutex;
use salesboy_protocol::subjects;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{
    Bus, BusError, Headers, Kv, KvEntry, KvError, KvEvent, KvOp, KvWatch, Message, Subscription,
    validate,
};

/// The message size limit of a new [`LocalBus`]: NATS's default `max_payload` (1 MiB), so
/// what works in-process fits on a default NATS server.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// How many messages a subscription buffers before the bus drops new ones for it (as the
/// NATS client does).
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// The in-process bus. Clones share everything.
#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

struct Inner {
    max_payload: usize,
    /// Subscription ids and request inboxes.
    next_id: AtomicU64,
    routes: Mutex<Routes>,
    buckets: Mutex<HashMap<String, Arc<LocalKv>>>,
}

#[derive(Default)]
struct Routes {
    /// By id, so matching subscriptions are served in the order they subscribed.
    subscriptions: BTreeMap<u64, Route>,
    /// Requests waiting for their reply, by inbox subject.
    requesters: HashMap<String, oneshot::Sender<Message>>,
    /// Each queue group's next turn.
    queue_turns: HashMap<String, usize>,
}

struct Route {
    filter: String,
    queue_group: Option<String>,
    sender: mpsc::Sender<Message>,
}

/// Where one copy of a message goes.
enum Destination {
    Subscription {
        id: u64,
        sender: mpsc::Sender<Message>,
    },
    Requester(oneshot::Sender<Message>),
}

impl LocalBus {
    /// A new, empty bus carrying messages up to [`DEFAULT_MAX_PAYLOAD`].
    pub fn new() -> Self {
        Self::with_max_payload(DEFAULT_MAX_PAYLOAD)
    }

    /// A new, empty bus carrying messages up to `max_payload` bytes (payload and encoded
    /// headers), to mirror a NATS server configured otherwise.
    pub fn with_max_payload(max_payload: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_payload,
                next_id: AtomicU64::new(1),
                routes: Mutex::new(Routes::default()),
                buckets: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.inner.routes.lock();
        f.debug_struct("LocalBus")
            .field("subscriptions", &routes.subscriptions.len())
            .field("waiting_requests", &routes.requesters.len())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Routes a message to everyone it is for; returns how many that was.
    fn route(&self, message: Message) -> usize {
        let destinations = self.routes.lock().destinations(&message.subject);
        let count = destinations.len();
        for destination in destinations {
            self.deliver(destination, message.clone());
        }
        count
    }

    /// Hands one copy of a message to one destination. Every delivery passes here.
    fn deliver(&self, destination: Destination, message: Message) {
        match destination {
            // The requester may have given up meanwhile: the reply is lost, as on NATS.
            Destination::Requester(requester) => drop(requester.send(message)),
            Destination::Subscription { id, sender } => match sender.try_send(message) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(message)) => warn!(
                    subscription = id,
                    subject = %message.subject,
                    "subscriber is too slow, message dropped"
                ),
            },
        }
    }
}

impl Routes {
    /// Who gets a message sent to `subject`: the requester waiting on it if it is an inbox;
    /// otherwise every matching plain subscription and one member of each matching queue
    /// group, taking turns.
    fn destinations(&mut self, subject: &str) -> Vec<Destination> {
        if let Some(requester) = self.requesters.remove(subject) {
            return vec![Destination::Requester(requester)];
        }
        let mut destinations = Vec::new();
        let mut groups: BTreeMap<&str, Vec<(u64, &mpsc::Sender<Message>)>> = BTreeMap::new();
        for (&id, route) in &self.subscriptions {
            if !validate::matches(&route.filter, subject) {
                continue;
            }
            match &route.queue_group {
                None => destinations.push(Destination::Subscription {
                    id,
                    sender: route.sender.clone(),
                }),
                Some(group) => groups.entry(group).or_default().push((id, &route.sender)),
            }
        }
        for (group, members) in groups {
            let turn = self.queue_turns.entry(group.to_owned()).or_insert(0);
            if let Some(&(id, sender)) = members.get(*turn % members.len()) {
                destinations.push(Destination::Subscription {
                    id,
                    sender: sender.clone(),
                });
            }
            *turn = turn.wrapping_add(1);
        }
        destinations
    }
}

/// A subscription's messages; dropping them removes the subscription from the bus at once.
struct LocalMessages {
    receiver: mpsc::Receiver<Message>,
    inner: Arc<Inner>,
    id: u64,
}

impl Stream for LocalMessages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for LocalMessages {
    fn drop(&mut self) {
        self.inner.routes.lock().subscriptions.remove(&self.id);
    }
}

/// A request waiting for its reply; forgets the inbox when the request ends either way.
struct Waiting {
    inner: Arc<Inner>,
    inbox: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.inner.routes.lock().requesters.remove(&self.inbox);
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        validate::outgoing(subject, &headers, payload.len(), self.inner.max_payload)?;
        self.inner.route(Message {
            subject: subject.to_owned(),
            headers,
            payload,
            reply: None,
        });
        Ok(())
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        validate::outgoing(subject, &headers, payload.len(), self.inner.max_payload)?;
        let inbox = subjects::local_inbox(self.inner.next_id());
        let (requester, reply) = oneshot::channel();
        self.inner
            .routes
            .lock()
            .requesters
            .insert(inbox.clone(), requester);
        let _waiting = Waiting {
            inner: Arc::clone(&self.inner),
            inbox: inbox.clone(),
        };
        let delivered = self.inner.route(Message {
            subject: subject.to_owned(),
            headers,
            payload,
            reply: Some(inbox),
        });
        if delivered == 0 {
            return Err(BusError::NoResponders);
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(message)) => Ok(message),
            // The requester's entry lives until `_waiting` drops: nobody else closes it.
            Ok(Err(_)) => Err(BusError::Other("reply channel closed".into())),
            Err(_) => Err(BusError::Timeout),
        }
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        validate::filter(subject)?;
        if let Some(group) = queue_group {
            validate::queue_group(group)?;
        }
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        let id = self.inner.next_id();
        self.inner.routes.lock().subscriptions.insert(
            id,
            Route {
                filter: subject.to_owned(),
                queue_group: queue_group.map(str::to_owned),
                sender,
            },
        );
        let messages = LocalMessages {
            receiver,
            inner: Arc::clone(&self.inner),
            id,
        };
        Ok(Subscription::new(subject, messages.boxed()))
    }

    async fn kv(&self, bucket: &str, history: u8) -> Result<Arc<dyn Kv>, BusError> {
        validate::bucket(bucket, history)?;
        let kv = self
            .inner
            .buckets
            .lock()
            .entry(bucket.to_owned())
            .or_insert_with(|| {
                Arc::new(LocalKv {
                    bucket: bucket.to_owned(),
                    max_payload: self.inner.max_payload,
                    state: Mutex::new(KvState::default()),
                })
            })
            .clone();
        Ok(kv)
    }

    async fn flush(&self) -> Result<(), BusError> {
        // Delivery is synchronous: a published message is in its subscribers' queues.
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

/// An in-process KV bucket.
struct LocalKv {
    bucket: String,
    max_payload: usize,
    state: Mutex<KvState>,
}

#[derive(Default)]
struct KvState {
    /// The last revision written; the next write takes the one after.
    revision: u64,
    /// The latest write of every key ever written, deletions included.
    slots: BTreeMap<String, Slot>,
    watchers: Vec<Watcher>,
}

struct Slot {
    /// `None`: a delete marker.
    value: Option<Bytes>,
    revision: u64,
}

struct Watcher {
    filter: String,
    sender: mpsc::UnboundedSender<KvEvent>,
}

impl LocalKv {
    /// Writes `value` (`None` deletes) to `key` if `allowed` accepts the key's latest write;
    /// returns the new revision and tells the watchers.
    fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        allowed: impl FnOnce(Option<&Slot>) -> Result<(), KvError>,
    ) -> Result<u64, KvError> {
        validate::key(key)?;
        if let Some(value) = &value {
            validate::value(value.len(), self.max_payload)?;
        }
        let mut state = self.state.lock();
        allowed(state.slots.get(key))?;
        state.revision += 1;
        let revision = state.revision;
        let event = KvEvent {
            key: key.to_owned(),
            op: if value.is_some() {
                KvOp::Put
            } else {
                KvOp::Delete
            },
            value: value.clone().unwrap_or_default(),
            revision,
        };
        state.slots.insert(key.to_owned(), Slot { value, revision });
        state.watchers.retain(|watcher| {
            !watcher.sender.is_closed()
                && (!validate::matches(&watcher.filter, key)
                    || watcher.sender.send(event.clone()).is_ok())
        });
        Ok(revision)
    }
}

#[async_trait]
impl Kv for LocalKv {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        validate::key(key)?;
        let state = self.state.lock();
        Ok(state.slots.get(key).and_then(|slot| {
            slot.value.as_ref().map(|value| KvEntry {
                key: key.to_owned(),
                value: value.clone(),
                revision: slot.revision,
            })
        }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.write(key, Some(value), |_| Ok(()))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.write(key, Some(value), |slot| match slot {
            Some(Slot { value: Some(_), .. }) => Err(KvError::AlreadyExists),
            _ => Ok(()),
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: u64,
    ) -> Result<u64, KvError> {
        self.write(key, Some(value), |slot| {
            if slot.map_or(0, |slot| slot.revision) == expected_revision {
                Ok(())
            } else {
                Err(KvError::WrongRevision {
                    expected: expected_revision,
                })
            }
        })
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.write(key, None, |_| Ok(())).map(drop)
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        let state = self.state.lock();
        Ok(state
            .slots
            .iter()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(key, _)| key.clone())
            .collect())
    }

    async fn watch(&self, keys: &str) -> Result<KvWatch, KvError> {
        validate::key_filter(keys)?;
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut current: Vec<KvEvent> = {
            let mut state = self.state.lock();
            state.watchers.push(Watcher {
                filter: keys.to_owned(),
                sender,
            });
            state
                .slots
                .iter()
                .filter(|(key, _)| validate::matches(keys, key))
                .filter_map(|(key, slot)| {
                    slot.value.as_ref().map(|value| KvEvent {
                        key: key.clone(),
                        op: KvOp::Put,
                        value: value.clone(),
                        revision: slot.revision,
                    })
                })
                .collect()
        };
        current.sort_by_key(|event| event.revision);
        let changes = stream::poll_fn(move |cx| receiver.poll_recv(cx));
        Ok(KvWatch::new(stream::iter(current).chain(changes).boxed()))
    }
}
