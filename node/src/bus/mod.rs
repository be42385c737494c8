//! The bus: how nodes talk to each other and share cluster state.
//!
//! One small interface, two implementations with the same semantics (see `docs/bus.md`):
//!
//! - [`Bus`]: publish, request/reply, subscribe (NATS subject wildcards, queue groups) and
//!   opening KV buckets;
//! - [`Kv`]: a key-value bucket with revisions: get, put, create, compare-and-set update,
//!   delete, keys, watch;
//! - [`nats`]: [`NatsBus`], over a NATS server (core NATS and JetStream KV), for every
//!   multi-node deployment;
//! - [`local`]: [`LocalBus`], in-process, for the single-node default and the deterministic
//!   simulation.
//!
//! Subjects, queue groups, headers, bucket names and keys are checked the same way by both
//! implementations: a bad one is an error ([`BusError`] or [`KvError`]), never a panic. The
//! subject strings themselves are made in `salesboy_protocol::subjects`.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
/// The payload type of every message and KV value, re-exported for the bus's users.
pub use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use salesboy_protocol::codec::{CODEC_HEADER, Codec, CodecError};

pub mod local;
pub mod nats;
mod validate;

pub use local::LocalBus;
pub use nats::{ConnectionState, NatsBus, NatsBusOptions, NatsCredentials, NatsTls, tenant_users};

/// The key filter that matches every key of a bucket (for [`Kv::watch`]).
pub const ALL_KEYS: &str = ">";

/// The most history a KV bucket may keep per key (JetStream's limit).
pub const MAX_KV_HISTORY: u8 = 64;

/// Room kept for JetStream's own headers on a KV write: a KV value may be at most
/// [`Bus::max_payload`] minus this many bytes.
pub const KV_HEADER_ROOM: usize = 128;

/// The bus: messages between nodes and the cluster's shared key-value state.
///
/// Used as `Arc<dyn Bus>`. Every method checks its input first: an invalid subject, queue
/// group, header, bucket name or an oversized payload is an error, whatever the
/// implementation.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message, fire and forget: it reaches the subscriptions that exist when the
    /// bus routes it, at most once each, and nobody is told if there are none.
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError>;

    /// Sends a request and waits up to `timeout` for the first reply.
    ///
    /// Fails with [`BusError::NoResponders`] at once when nobody subscribes to `subject` (the
    /// cheap "not hosted anywhere" signal) and with [`BusError::Timeout`] when subscribers
    /// exist but none answers in time.
    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError>;

    /// Subscribes to a subject or a wildcard (`*` matches one token, `>` the one or more
    /// tokens that remain). Within a `queue_group`, each message goes to one member only.
    ///
    /// When this returns, the subscription is in place: a message published or a request
    /// sent afterwards, from any handle on the same bus, reaches it.
    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError>;

    /// Answers a request received through a [`Subscription`]. Fails with
    /// [`BusError::NoReplySubject`] if `request` was published, not requested. Like a publish,
    /// the answer is lost if the requester has stopped waiting. Provided: a publish to the
    /// request's reply subject.
    async fn respond(
        &self,
        request: &Message,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let reply = request.reply.as_deref().ok_or(BusError::NoReplySubject)?;
        self.publish(reply, headers, payload).await
    }

    /// Opens KV bucket `bucket`, creating it if it does not exist with `history` values kept
    /// per key (1 to [`MAX_KV_HISTORY`]). An existing bucket keeps its history setting.
    async fn kv(&self, bucket: &str, history: u8) -> Result<Arc<dyn Kv>, BusError>;

    /// Returns once every message published through this handle so far has left the
    /// process (on NATS: written to the server's socket). Call it before dropping the last
    /// handle, at shutdown: dropping a NATS bus discards what it has not written yet.
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the bus can reach the rest of the cluster now. A node that is not connected
    /// cannot renew its membership and must fence itself in time.
    fn is_connected(&self) -> bool;

    /// The largest message (payload plus encoded headers) the bus carries, in bytes.
    fn max_payload(&self) -> usize;

    /// What carries the messages, as `/health` reports it: `nats`, `in-process`, ...
    fn kind(&self) -> &'static str;

    /// The NATS connection under the bus, for what speaks a NATS protocol of its own (the
    /// micro service API, [`crate::api::service`]); `None` when the bus is not NATS.
    fn nats_client(&self) -> Option<async_nats::Client> {
        None
    }
}

/// A key-value bucket. Every write gets a revision; revisions strictly increase across the
/// whole bucket (on NATS, the backing stream's sequence).
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// The bucket's name.
    fn bucket(&self) -> &str;

    /// The key's current value, `None` if it never existed or was deleted.
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError>;

    /// Writes the value whatever the key holds; returns the new revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError>;

    /// Writes the value only if the key has none (never written, or deleted); returns the new
    /// revision, or [`KvError::AlreadyExists`].
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError>;

    /// Writes the value only if the key's latest revision is `expected_revision`
    /// (compare-and-set); returns the new revision, or [`KvError::WrongRevision`].
    async fn update(&self, key: &str, value: Bytes, expected_revision: u64)
    -> Result<u64, KvError>;

    /// Deletes the key. The deletion is a write of its own (a delete marker): it takes a
    /// revision and watchers see it. Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), KvError>;

    /// The keys that hold a value, sorted. Not a snapshot, but a key that holds a value
    /// throughout the call is listed however busy the bucket is meanwhile.
    async fn keys(&self) -> Result<Vec<String>, KvError>;

    /// Watches the keys matching `keys` (a key, or a pattern with `*` for one token and `>`
    /// for the rest: `"node.>"`; [`ALL_KEYS`] for every key).
    ///
    /// The watch first yields the current value of every matching key (deleted keys are left
    /// out), in revision order, then every later change (puts and deletes) as it happens, in
    /// revision order. A delete may name a key the watch never showed (it was written and
    /// deleted while the watch started); treat it as a no-op.
    async fn watch(&self, keys: &str) -> Result<KvWatch, KvError>;

    /// Every key that holds a value with its entry, sorted by key. Not a snapshot: a key
    /// written meanwhile may show its older or newer value.
    async fn entries(&self) -> Result<Vec<KvEntry>, KvError> {
        let mut entries = Vec::new();
        for key in self.keys().await? {
            if let Some(entry) = self.get(&key).await? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}

/// A message received from the bus (a publish, a request, or a reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was sent to.
    pub subject: String,
    /// Its headers.
    pub headers: Headers,
    /// Its payload.
    pub payload: Bytes,
    /// Where the answer goes, if it is a request (see [`Bus::respond`]).
    pub reply: Option<String>,
}

/// Message headers: names to values, one value per name, kept sorted by name so both
/// implementations show them in the same order.
///
/// A name must be printable ASCII without `:` or spaces, a value must not contain a line
/// break; the bus refuses a message that breaks these rules ([`BusError::InvalidHeader`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers {
    entries: BTreeMap<String, String>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Headers naming the payload's codec ([`CODEC_HEADER`]).
    pub fn with_codec(codec: Codec) -> Self {
        Self::new().with(CODEC_HEADER, codec.header_value())
    }

    /// These headers and one more (replacing a value of the same name).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets a header; returns the value it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.entries.insert(name.into(), value.into())
    }

    /// A header's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    /// Removes a header; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.entries.remove(name)
    }

    /// The codec named by [`CODEC_HEADER`], `None` if the header is absent.
    pub fn codec(&self) -> Result<Option<Codec>, CodecError> {
        self.get(CODEC_HEADER)
            .map(Codec::from_header_value)
            .transpose()
    }

    /// The headers, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The size of the headers as NATS encodes them (`NATS/1.0\r\n`, one `name: value\r\n`
    /// each, `\r\n`); no headers take no room.
    pub(crate) fn wire_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        self.entries
            .iter()
            .fold("NATS/1.0\r\n\r\n".len(), |len, (k, v)| {
                len + k.len() + ": ".len() + v.len() + "\r\n".len()
            })
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// The messages of one subscription, in the order the bus delivered them.
///
/// Read it with [`Subscription::next`] or as a [`Stream`]. Dropping it unsubscribes;
/// [`Subscription::unsubscribe`] does too and returns once the bus has forgotten it.
pub struct Subscription {
    subject: String,
    messages: BoxStream<'static, Message>,
    confirm_unsubscribe: Option<BoxFuture<'static, Result<(), BusError>>>,
}

impl Subscription {
    /// A subscription to `subject` reading `messages`; dropping `messages` must end the
    /// subscription. For implementations of [`Bus`].
    pub fn new(subject: impl Into<String>, messages: BoxStream<'static, Message>) -> Self {
        Self {
            subject: subject.into(),
            messages,
            confirm_unsubscribe: None,
        }
    }

    /// Sets what [`Subscription::unsubscribe`] awaits after dropping the messages: until the
    /// bus no longer routes to this subscription. For implementations of [`Bus`].
    pub fn with_confirm_unsubscribe(
        mut self,
        confirm: BoxFuture<'static, Result<(), BusError>>,
    ) -> Self {
        self.confirm_unsubscribe = Some(confirm);
        self
    }

    /// The subject or wildcard subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The next message; `None` once the bus has closed the subscription.
    pub async fn next(&mut self) -> Option<Message> {
        self.messages.next().await
    }

    /// Unsubscribes and returns once the bus routes nothing more here: a request sent
    /// afterwards from any handle gets [`BusError::NoResponders`] if this was its only
    /// subscriber.
    pub async fn unsubscribe(self) -> Result<(), BusError> {
        let Self {
            messages,
            confirm_unsubscribe,
            ..
        } = self;
        drop(messages);
        match confirm_unsubscribe {
            Some(confirm) => confirm.await,
            None => Ok(()),
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Bytes,
    /// The revision that wrote it.
    pub revision: u64,
}

/// What a KV write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// The key got a value.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a [`KvWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEvent {
    /// The key written.
    pub key: String,
    /// Put or delete.
    pub op: KvOp,
    /// The value put; empty for a delete.
    pub value: Bytes,
    /// The write's revision.
    pub revision: u64,
}

/// The events of a [`Kv::watch`]: current values first, then changes, in revision order.
///
/// Read it with [`KvWatch::next`] or as a [`Stream`]; drop it to stop watching. It ends
/// (`None`) only if the bus gives up on it for good; watch again then.
pub struct KvWatch {
    events: BoxStream<'static, KvEvent>,
}

impl KvWatch {
    /// A watch reading `events`. For implementations of [`Kv`].
    pub fn new(events: BoxStream<'static, KvEvent>) -> Self {
        Self { events }
    }

    /// The next event.
    pub async fn next(&mut self) -> Option<KvEvent> {
        self.events.next().await
    }
}

impl Stream for KvWatch {
    type Item = KvEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<KvEvent>> {
        self.events.poll_next_unpin(cx)
    }
}

impl fmt::Debug for KvWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvWatch").finish_non_exhaustive()
    }
}

/// Why a bus operation failed. Plain data (serde): a node may tell another (a migration's
/// error says why the adopter did not answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum BusError {
    /// The subject (or wildcard) is not a valid NATS subject for this use.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// The queue group name is empty or contains white space.
    #[error("invalid queue group {0:?}")]
    InvalidQueueGroup(String),
    /// A header name or value breaks the rules of [`Headers`].
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// The bucket name is not made of letters, digits, `_` and `-`.
    #[error("invalid bucket name {0:?}")]
    InvalidBucket(String),
    /// A bucket's history must be 1 to [`MAX_KV_HISTORY`].
    #[error("kv history must be between 1 and {MAX_KV_HISTORY}, got {0}")]
    InvalidHistory(u8),
    /// The message is larger than the bus carries.
    #[error("message of {size} bytes exceeds the bus's limit of {max} bytes")]
    PayloadTooLarge {
        /// Its size (payload and encoded headers).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// [`Bus::respond`] was given a message that is not a request.
    #[error("message has no reply subject")]
    NoReplySubject,
    /// Nobody subscribes to the request's subject.
    #[error("no responders")]
    NoResponders,
    /// Nobody answered in time.
    #[error("timed out")]
    Timeout,
    /// The bus is not connected to its server.
    #[error("bus is disconnected")]
    Disconnected,
    /// A stream (a KV bucket's or the events stream) exists with another replica count than
    /// this node is configured for: the node refuses to use it rather than run with fewer
    /// copies than asked (or more servers than exist).
    #[error(
        "the NATS stream {stream} has {existing} replica(s) but this node is configured for \
         {configured} (SALESBOY_NATS_REPLICAS; unset, it is 3 when SALESBOY_NATS_URL lists \
         three or more servers, else 1): set SALESBOY_NATS_REPLICAS={existing}, or change the \
         stream's replicas to {configured} (`nats stream edit {stream} --replicas {configured}`)"
    )]
    ReplicasMismatch {
        /// The stream (`KV_<bucket>` for a bucket).
        stream: String,
        /// Its replicas on the server.
        existing: usize,
        /// This node's.
        configured: usize,
    },
    /// Anything else the server or client reported.
    #[error("bus error: {0}")]
    Other(String),
}

/// Why a KV operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key (or watch pattern) is not a valid KV key: letters, digits and `-/_=.`,
    /// dot-separated non-empty tokens.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// [`Kv::create`] found a value.
    #[error("key already exists")]
    AlreadyExists,
    /// [`Kv::update`] found another revision than the one expected.
    #[error("key is no longer at revision {expected}")]
    WrongRevision {
        /// The revision the caller expected.
        expected: u64,
    },
    /// The bus failed (disconnected, timed out, value too large, …).
    #[error(transparent)]
    Bus(#[from] BusError),
}
