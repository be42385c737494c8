//! The WhatsApp Web engine as the session actor sees it (docs/engines.md): a [`WebClient`]
//! is one linked device's connection, a [`WebConnector`] opens one per tenant and placement
//! epoch, and the client reports what happens as [`WebEvent`]s. The node implements them with
//! `whatsapp-rust` on the SQL store; tests with a scripted fake. Nothing here knows the
//! library, so its breaking changes stop at the node's adapter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use salesboy_protocol::whatsapp::DeliveryStatus;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::ports::WhatsAppConnection;

/// Opens Web clients (the session actor of a `web` tenant calls it on start, and again after
/// a move is called off).
pub trait WebConnector: Send + Sync + 'static {
    /// A client for `tenant` hosted at `epoch`: its protocol state is read from the store and
    /// written at that epoch only (a client of an older epoch has its writes refused). It
    /// reports to `events` and stays offline until [`WebClient::connect`].
    fn open(&self, tenant: &TenantId, epoch: u64, events: WebEvents) -> Arc<dyn WebClient>;
}

/// One linked device's connection to WhatsApp. Sends and read receipts go through
/// [`WhatsAppConnection`], like the Cloud API's.
#[async_trait]
pub trait WebClient: WhatsAppConnection {
    /// Starts connecting and returns: what follows arrives as events ([`WebEvent::Qr`] for a
    /// device not linked yet, then [`WebEvent::Connected`], or why not).
    async fn connect(&self) -> Result<(), WebError>;

    /// Asks WhatsApp for an 8-character pairing code that links the device to the account
    /// of `phone` (digits, international format, no `+`), the alternative to scanning a QR
    /// code. The owner types it in *Linked devices* on that phone.
    async fn pair_code(&self, phone: &str) -> Result<String, WebError>;

    /// Unlinks the device (the phone's list of linked devices forgets it) and deletes its
    /// keys: pairing again is needed. Never called on a move.
    async fn logout(&self) -> Result<(), WebError>;

    /// Disconnects for good, writing the client's cached state to the store first. Called
    /// before a move hands the tenant on and when the session stops; idempotent.
    async fn shutdown(&self);
}

/// Why a Web client could not do what was asked. Travels node to node in bincode (in a
/// [`TenantError`](crate::error::TenantError)): add variants at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WebError {
    /// The client is not connected to WhatsApp.
    #[error("not connected to WhatsApp")]
    NotConnected,
    /// The device is linked already: there is nothing to pair.
    #[error("the device is linked already")]
    AlreadyPaired,
    /// The phone number cannot be paired with (not digits in international format).
    #[error("invalid phone number: {0}")]
    InvalidPhone(String),
    /// Another node hosts the tenant now: its protocol state is not ours to write.
    #[error("fenced: another node hosts the tenant")]
    Fenced,
    /// The tenant is not hosted on this node, or runs no session (it is not a `web` tenant,
    /// or the session is restarting).
    #[error("the tenant runs no web session here")]
    NoSession,
    /// The node was built without the Web engine (cargo feature `web-engine`).
    #[error("this node was built without the web engine")]
    Unsupported,
    /// Anything else (the connection failed, the store is unreachable…).
    #[error("{0}")]
    Failed(String),
}

/// What a client reports. Delivered in order to the session that opened it.
#[derive(Debug)]
pub enum WebEvent {
    /// The device is not linked: show this QR code (its text) to the owner, who scans it in
    /// *Linked devices*; it is replaced by the next one after `valid_for`.
    Qr {
        /// The text the QR code encodes.
        code: String,
        /// How long it may be scanned.
        valid_for: Duration,
    },
    /// WhatsApp stopped offering QR codes (none was scanned in time): the client is offline
    /// until asked to pair again.
    PairingExpired,
    /// The owner linked the device (QR or pairing code); [`WebEvent::Connected`] follows.
    Paired {
        /// The account's phone number (digits).
        phone: String,
    },
    /// Connected and ready to send and receive.
    Connected {
        /// The account's phone number (digits), when known.
        phone: Option<String>,
    },
    /// The connection dropped for a passing reason (network, server restart): the session
    /// connects again after a backoff.
    Disconnected {
        /// What happened, for logs and the event.
        reason: String,
    },
    /// The device was unlinked (from the phone, or `logout`): its keys are gone, pairing
    /// again is needed. Never reconnected.
    LoggedOut,
    /// WhatsApp banned the number for a while. Never reconnected until it is over.
    TemporarilyBanned {
        /// WhatsApp's reason code.
        code: i32,
        /// When the ban ends (unix ms), if WhatsApp said.
        expires_ms: Option<i64>,
    },
    /// Another connection of this device took over (`StreamReplaced`): another node hosts
    /// the tenant now. Stop; never reconnect.
    Replaced,
    /// WhatsApp refuses this client's version: the node needs an update. Never reconnected.
    Outdated,
    /// A message in a chat, decrypted.
    Message(WebMessage),
    /// The customer's phone reported messages we sent as delivered or read (a receipt):
    /// their status moves forward as with the Cloud API's status webhooks.
    Receipt {
        /// The messages' ids (as recorded when they were sent).
        ids: Vec<Wamid>,
        /// [`DeliveryStatus::Delivered`] or [`DeliveryStatus::Read`].
        status: DeliveryStatus,
        /// When the phone reported it (unix ms).
        at_ms: i64,
    },
    /// A message arrived that could not be decrypted ("waiting for this message"); the
    /// client asked the sender's phone to send it again.
    Undecryptable {
        /// The chat it arrived in.
        chat: ChatId,
        /// Its id.
        id: Wamid,
        /// When it was sent (unix ms).
        sent_ms: i64,
    },
}

/// A decrypted message of a one-to-one chat.
#[derive(Debug)]
pub struct WebMessage {
    /// The customer: the address the message came from (or, for the owner's own messages,
    /// went to).
    pub chat: ChatId,
    /// The message's id: with `chat`, what deduplicates it.
    pub id: Wamid,
    /// Written by the owner on their phone (or another linked device): not a customer's
    /// message, an owner takeover.
    pub from_me: bool,
    /// When it was sent (unix ms).
    pub sent_ms: i64,
    /// The kind of message, named as the Cloud API names them (`text`, `image`, …).
    pub kind: String,
    /// The text, for messages that have one.
    pub body: Option<String>,
    /// Completed once the message is committed to the store: the client acknowledges it to
    /// the server only then, so a crash before the commit has the server deliver it again.
    pub committed: InboundAck,
}

/// The promise to tell a Web client that a message is stored ([`WebMessage::committed`]).
/// Dropped without [`InboundAck::commit`], the client does not acknowledge the message.
#[derive(Debug)]
pub struct InboundAck(Option<oneshot::Sender<()>>);

impl InboundAck {
    /// An acknowledgement and what the client waits on: `Ok` once committed, an error when
    /// the message was not stored.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (sender, receiver) = oneshot::channel();
        (Self(Some(sender)), receiver)
    }

    /// The message is stored (or was already): the client may acknowledge it.
    pub fn commit(mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

/// Where a client delivers its events: to the session that opened it, tagged with the
/// connection they belong to.
#[derive(Clone)]
pub struct WebEvents(Arc<dyn Fn(WebEvent) + Send + Sync>);

impl WebEvents {
    /// Events handed to `deliver`.
    pub fn new(deliver: impl Fn(WebEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(deliver))
    }

    /// Reports an event.
    pub fn emit(&self, event: WebEvent) {
        (self.0)(event);
    }
}

impl fmt::Debug for WebEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebEvents")
    }
}
