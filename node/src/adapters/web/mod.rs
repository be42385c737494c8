//! The WhatsApp Web engine's adapter (issue 12, docs/engines.md "The adapter"):
//! [`WhatsAppWebConnector`] puts `whatsapp-rust` behind the session actor's
//! [`WebConnector`] / [`WebClient`] traits, on our SQL storage backend
//! ([`SqlStore::web_session_store`]).
//!
//! - A client is built on the tenant's backend at the session's epoch, with a pinned
//!   WhatsApp Web version ([`WEB_VERSION`]: no version fetch), history sync skipped, events
//!   delivered in order, and an inbound durability hook: each message of a one-to-one chat
//!   is handed to the session with an [`InboundAck`], and the server's ack waits for its
//!   commit (a dropped ack fails the hook: the server delivers the message again).
//! - Groups, status broadcasts, newsletters and broadcast lists are acknowledged and never
//!   emitted; the owner's own messages (the phone, another linked device) are emitted with
//!   `from_me`, echoes of this client's sends are not.
//! - The library reconnects on its own (Fibonacci backoff from 1 s): `connect` starts its
//!   run loop when none runs, and is a no-op while one does.
//! - Fencing: every connection attempt first reads the tenant's current epoch; once another
//!   node claimed a newer one, the client stops for good (no reconnection) and reports
//!   [`WebEvent::Replaced`]. Its writes are refused by the store anyway
//!   ([`WebSessionError::is_fenced`]); `shutdown` logs a refused flush.
//!
//! Modules: `jid` (addresses ↔ chat ids), `events` (the library's events and messages as
//! the session sees them), `transport` (the fenced transport and the shared HTTP client).

mod events;
mod jid;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use salesboy_actors::ports::{SendError, WhatsAppConnection};
use salesboy_actors::store::{FencingStore, StoreError};
use salesboy_actors::web::{
    InboundAck, WebClient, WebConnector, WebError, WebEvent, WebEvents, WebMessage,
};
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use whatsapp_rust::bot::{Bot, BotBuilderError, EventDelivery};
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::store::traits::DeviceStore;
use whatsapp_rust::transport::{Transport, TransportFactory};
use whatsapp_rust::types::events::{Event, InboundMessage};
use whatsapp_rust::types::message::MessageInfo;
use whatsapp_rust::wacore::proto_helpers::{MessageBuilderExt, build_quote_context_with_info};
use whatsapp_rust::wacore::store::error::StoreError as LibraryError;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, InboundDurabilityHook, Jid, TokioRuntime};

pub use jid::{Addresses, Customer, LID_PREFIX, chat_id, customer, default_jid};

use crate::store::{SqlStore, WebSessionError};
use transport::FencedTransport;

/// The WhatsApp Web version the client presents, pinned (the one `whatsapp-rust` 0.7.0
/// ships with): no request to WhatsApp for the latest. Raise it with the crate.
pub const WEB_VERSION: (u32, u32, u32) = (2, 3000, 1_042_742_319);

/// Events buffered for the session before the library drops some (ordered delivery).
const EVENT_MAILBOX: usize = 1024;

/// How long the server's ack of a message waits for the session's commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `shutdown` waits for the library to disconnect (it bounds its own flushes) and
/// for its run loop to end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `pair_code` waits for the connection to WhatsApp to open.
const PAIR_SOCKET_WAIT: Duration = Duration::from_secs(10);

/// Recent inbound messages kept for read receipts and quoted replies.
const RECENT_MESSAGES: u64 = 2_000;

/// How long a recent inbound message is kept.
const RECENT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Ids of our own recent sends, to tell their echoes from the owner's messages.
const SENT_IDS: u64 = 2_000;

/// Opens `whatsapp-rust` clients on the node's SQL store: the node's [`WebConnector`].
#[derive(Clone)]
pub struct WhatsAppWebConnector {
    store: SqlStore,
    transport: Arc<dyn TransportFactory>,
    http: UreqHttpClient,
}

impl WhatsAppWebConnector {
    /// Clients on `store` that connect to WhatsApp's servers at `url` (the setting
    /// `whatsapp_web_url`: WhatsApp Web's websocket, over rustls; `ureq` for media).
    pub fn new(store: SqlStore, url: &str) -> Self {
        crate::run::install_crypto_provider();
        Self::with_transport(
            store,
            Arc::new(whatsapp_rust::transport::TokioWebSocketTransportFactory::new().with_url(url)),
        )
    }

    /// Clients on `store` that connect through `transport`. For tests (a fake transport: no
    /// network); the node uses [`WhatsAppWebConnector::new`].
    pub fn with_transport(store: SqlStore, transport: Arc<dyn TransportFactory>) -> Self {
        Self {
            store,
            transport,
            http: UreqHttpClient::new(),
        }
    }
}

impl std::fmt::Debug for WhatsAppWebConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppWebConnector")
            .finish_non_exhaustive()
    }
}

impl WebConnector for WhatsAppWebConnector {
    fn open(&self, tenant: &TenantId, epoch: u64, events: WebEvents) -> Arc<dyn WebClient> {
        Arc::new(WhatsAppWebClient {
            shared: Arc::new(Shared {
                tenant: tenant.clone(),
                epoch,
                events,
                store: self.store.clone(),
                addresses: Addresses::new(),
                recent: moka::sync::Cache::builder()
                    .max_capacity(RECENT_MESSAGES)
                    .time_to_live(RECENT_TTL)
                    .build(),
                sent: moka::sync::Cache::builder()
                    .max_capacity(SENT_IDS)
                    .time_to_live(RECENT_TTL)
                    .build(),
                fenced: AtomicBool::new(false),
                auto_reconnect: Mutex::new(None),
                connection: Mutex::new(None),
                stopped: AtomicBool::new(false),
            }),
            transport: Arc::clone(&self.transport),
            http: self.http.clone(),
            run: tokio::sync::Mutex::new(None),
        })
    }
}

/// What the client shares with the library's callbacks (event handler, durability hook,
/// transport).
pub(crate) struct Shared {
    tenant: TenantId,
    epoch: u64,
    events: WebEvents,
    store: SqlStore,
    addresses: Addresses,
    /// Recent inbound messages by id: where they came from, for read receipts and quotes.
    recent: moka::sync::Cache<String, Arc<Recent>>,
    /// Ids of this client's recent sends.
    sent: moka::sync::Cache<String, ()>,
    /// Another node hosts the tenant now: never connect again.
    fenced: AtomicBool,
    /// The running library client's auto-reconnect switch (its public flag).
    auto_reconnect: Mutex<Option<Arc<AtomicBool>>>,
    /// The connection opened last (not kept alive by this): `shutdown` hangs it up, so a
    /// client still waiting for WhatsApp's handshake answer stops at once, not after the
    /// library's handshake timeout (20 s).
    connection: Mutex<Option<std::sync::Weak<dyn Transport>>>,
    /// Shut down (or logged out): never connects again, and a connection opened from now
    /// on is hung up at once ([`FencedTransport`]).
    stopped: AtomicBool,
}

/// A recent inbound message.
struct Recent {
    chat: Jid,
    sender: Jid,
    message: Arc<wa::Message>,
}

impl Shared {
    /// Another node claimed a newer epoch: stop reconnecting, and tell the session once.
    pub(crate) fn fence(&self, current: Option<u64>) {
        if let Some(switch) = self.auto_reconnect.lock().as_ref() {
            switch.store(false, Ordering::Relaxed);
        }
        if !self.fenced.swap(true, Ordering::SeqCst) {
            warn!(tenant = %self.tenant, epoch = self.epoch, ?current, "web client fenced: another node hosts the tenant; stopping it");
            self.events.emit(WebEvent::Replaced);
        }
    }

    /// Whether this client's epoch is still the tenant's current one; fences it when not
    /// (another node claimed a newer one, or its epoch was never claimed).
    pub(crate) async fn check_fence(&self) -> Result<bool, StoreError> {
        match self.store.current_epoch(&self.tenant).await? {
            Some(current) if current == self.epoch => Ok(true),
            current => {
                self.fence(current);
                Ok(false)
            }
        }
    }

    /// Whether the client was fenced.
    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// The chat of a message's customer, or `None` for a message of no one-to-one chat
    /// with a customer. Learns the address the customer wrote from.
    async fn chat_of(&self, client: &Client, info: &MessageInfo) -> Option<(ChatId, Jid)> {
        let source = &info.source;
        if source.is_group {
            return None;
        }
        let chat = source.chat.to_non_ad();
        let who = customer(&chat)?;
        let alternate = if source.is_from_me {
            source.recipient_alt.as_ref()
        } else {
            source.sender_alt.as_ref()
        };
        let phone = match &who {
            Customer::Phone(_) => None,
            Customer::Lid(_) => match alternate.map(customer) {
                Some(Some(Customer::Phone(phone))) => Some(phone),
                _ => client
                    .get_lid_pn_entry(&chat)
                    .await
                    .ok()
                    .flatten()
                    .map(|entry| entry.phone_number.to_string()),
            },
        };
        let id = chat_id(&who, phone.as_deref())?;
        if !source.is_from_me {
            self.addresses.remember(&id, &chat);
        }
        Some((id, chat))
    }

    /// The session's message for a decrypted one, if it is a customer's (or the owner's) in
    /// a one-to-one chat, and not an echo of our own send.
    async fn message(
        &self,
        client: &Client,
        inbound: &InboundMessage,
    ) -> Option<(WebMessage, tokio::sync::oneshot::Receiver<()>)> {
        let info = &inbound.info;
        if info.source.is_from_me && self.sent.contains_key(&info.id) {
            return None;
        }
        let (kind, body) = events::content(&inbound.message)?;
        let (chat, jid) = self.chat_of(client, info).await?;
        let id = Wamid::new(info.id.clone()).ok()?;
        if !info.source.is_from_me {
            self.recent.insert(
                info.id.clone(),
                Arc::new(Recent {
                    chat: jid,
                    sender: info.source.sender.clone(),
                    message: Arc::clone(&inbound.message),
                }),
            );
        }
        let (committed, receiver) = InboundAck::new();
        Some((
            WebMessage {
                chat,
                id,
                from_me: info.source.is_from_me,
                sent_ms: info.timestamp.timestamp_millis(),
                kind: kind.to_owned(),
                body,
                committed,
            },
            receiver,
        ))
    }

    /// What the library's event means to the session.
    async fn on_event(&self, event: &Event, client: &Client) {
        match event {
            Event::UndecryptableMessage(undecryptable) => {
                let info = &undecryptable.info;
                let Some((chat, _)) = self.chat_of(client, info).await else {
                    return;
                };
                let Ok(id) = Wamid::new(info.id.clone()) else {
                    return;
                };
                self.events.emit(WebEvent::Undecryptable {
                    chat,
                    id,
                    sent_ms: info.timestamp.timestamp_millis(),
                });
            }
            // Messages the durability hook did not see (recovered from the phone):
            // delivered once, nothing to wait for.
            Event::Messages(batch) if !batch.hook_committed => {
                for inbound in batch.iter() {
                    if let Some((message, _)) = self.message(client, inbound).await {
                        self.events.emit(WebEvent::Message(message));
                    }
                }
            }
            Event::PairError(error) => {
                warn!(tenant = %self.tenant, error = %error.error, "web pairing failed");
            }
            Event::Receipt(_) => {
                if let Some(receipt) = events::receipt_event(event) {
                    self.events.emit(receipt);
                }
            }
            other => {
                let account = client.pn().map(|pn| pn.user.to_string());
                if let Some(mapped) = events::lifecycle_event(other, now_ms(), account) {
                    debug!(tenant = %self.tenant, event = ?std::mem::discriminant(other), "web client event");
                    self.events.emit(mapped);
                }
            }
        }
    }
}

/// The durability hook: hands each message to the session and lets the server's ack wait
/// for every commit.
struct CommitHook(Arc<Shared>);

#[async_trait]
impl InboundDurabilityHook for CommitHook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let mut waiting = Vec::new();
        for inbound in batch {
            if let Some((message, committed)) = self.0.message(&client, inbound).await {
                self.0.events.emit(WebEvent::Message(message));
                waiting.push(committed);
            }
        }
        for committed in waiting {
            match tokio::time::timeout(COMMIT_TIMEOUT, committed).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => anyhow::bail!("a message was not stored: not acknowledged"),
                Err(_) => anyhow::bail!("a message was not stored in time: not acknowledged"),
            }
        }
        Ok(())
    }
}

/// A running library client and the task of its run loop.
struct Running {
    client: Arc<Client>,
    task: JoinHandle<()>,
}

/// One tenant's `whatsapp-rust` client at one epoch: the node's [`WebClient`].
pub struct WhatsAppWebClient {
    shared: Arc<Shared>,
    transport: Arc<dyn TransportFactory>,
    http: UreqHttpClient,
    run: tokio::sync::Mutex<Option<Running>>,
}

impl WhatsAppWebClient {
    /// Builds a library client on the tenant's backend at this client's epoch.
    async fn build(&self) -> Result<Bot, BotBuilderError> {
        let shared = Arc::clone(&self.shared);
        let backend = shared
            .store
            .web_session_store(shared.tenant.clone(), shared.epoch);
        Bot::builder()
            .with_backend(backend)
            .with_transport_factory(FencedTransport::new(
                Arc::clone(&self.shared),
                Arc::clone(&self.transport),
            ))
            .with_http_client(self.http.clone())
            .with_runtime(TokioRuntime)
            .with_version(WEB_VERSION)
            .skip_history_sync()
            .with_event_delivery(EventDelivery::Ordered {
                capacity: EVENT_MAILBOX,
            })
            .with_inbound_durability_hook(CommitHook(Arc::clone(&self.shared)))
            .on_event(move |event, client| {
                let shared = Arc::clone(&shared);
                async move { shared.on_event(&event, &client).await }
            })
            .build()
            .await
    }

    /// The running library client, if connected.
    async fn client(&self) -> Option<Arc<Client>> {
        self.run
            .lock()
            .await
            .as_ref()
            .map(|running| Arc::clone(&running.client))
    }

    /// The running library client, connected and logged in, for a send.
    async fn online(&self) -> Result<Arc<Client>, SendError> {
        match self.client().await {
            Some(client) if client.is_connected() && client.is_logged_in() => Ok(client),
            _ => Err(SendError::Transient(WebError::NotConnected.to_string())),
        }
    }

    /// Sends `message` to `to`; records its id so its echo is not taken for the owner's.
    async fn send(&self, to: &ChatId, message: wa::Message) -> Result<Wamid, SendError> {
        let jid = self
            .shared
            .addresses
            .resolve(to)
            .ok_or_else(|| SendError::Rejected {
                code: 400,
                reason: format!("chat {to} is no WhatsApp address"),
            })?;
        let client = self.online().await?;
        let sent = client
            .send_message(jid, message)
            .await
            .map_err(|error| send_error(&error))?;
        self.shared.sent.insert(sent.message_id.clone(), ());
        Wamid::new(sent.message_id).map_err(|error| SendError::Rejected {
            code: 0,
            reason: format!("the library's message id is not a wamid: {error}"),
        })
    }
}

impl std::fmt::Debug for WhatsAppWebClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppWebClient")
            .field("tenant", &self.shared.tenant)
            .field("epoch", &self.shared.epoch)
            .finish_non_exhaustive()
    }
}

/// A send's failure, classified: not connected, not logged in, timeouts, the socket and
/// the connection's state are passing; the server's refusal, an invalid request and the
/// rest are not retried.
fn send_error(error: &whatsapp_rust::SendError) -> SendError {
    use whatsapp_rust::{IqError, SendError as Library};
    match error {
        Library::Client(_) | Library::NotLoggedIn => SendError::Transient(error.to_string()),
        Library::Iq(IqError::ServerError { code, text, .. }) => SendError::Rejected {
            code: i64::from(*code),
            reason: text.clone(),
        },
        Library::Iq(_) => SendError::Transient(error.to_string()),
        Library::InvalidRequest(reason) => SendError::Rejected {
            code: 400,
            reason: reason.clone(),
        },
        _ => SendError::Rejected {
            code: 0,
            reason: error.to_string(),
        },
    }
}

/// Now, unix ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Whether a library store error is our fence's refusal.
fn is_fenced(error: &LibraryError) -> bool {
    WebSessionError::find(error).is_some_and(WebSessionError::is_fenced)
}

#[async_trait]
impl WhatsAppConnection for WhatsAppWebClient {
    async fn send_text(
        &self,
        to: &ChatId,
        body: &str,
        reply_to: Option<&Wamid>,
    ) -> Result<Wamid, SendError> {
        let quoted = reply_to.and_then(|id| self.shared.recent.get(id.as_str()).map(|r| (id, r)));
        let message = match quoted {
            Some((id, recent)) => wa::Message::text_with_context(
                body,
                build_quote_context_with_info(
                    id.as_str(),
                    &recent.sender,
                    &recent.chat,
                    &recent.chat,
                    &recent.message,
                ),
            ),
            None => wa::Message::text(body),
        };
        self.send(to, message).await
    }

    async fn send_content(
        &self,
        to: &ChatId,
        content: &OutboundContent,
    ) -> Result<Wamid, SendError> {
        // Templates, interactive and media messages are Cloud API features; the Web engine
        // sends text only (media needs an upload, not built yet).
        let _ = to;
        Err(SendError::Rejected {
            code: 0,
            reason: format!(
                "the web engine cannot send {} messages",
                content_kind(content)
            ),
        })
    }

    async fn mark_read(&self, message: &Wamid, typing: bool) -> Result<(), SendError> {
        let Some(recent) = self.shared.recent.get(message.as_str()) else {
            debug!(tenant = %self.shared.tenant, wamid = %message, "read receipt for an unknown message skipped");
            return Ok(());
        };
        let client = self.online().await?;
        let sender = (recent.sender != recent.chat).then_some(&recent.sender);
        client
            .mark_as_read(&recent.chat, sender, &[message.as_str()])
            .await
            .map_err(|error| SendError::Transient(format!("read receipt failed: {error}")))?;
        if typing {
            client
                .chatstate()
                .send_composing(&recent.chat)
                .await
                .map_err(|error| SendError::Transient(format!("typing state failed: {error}")))?;
        }
        Ok(())
    }
}

/// The kind of an outbound content, for errors.
fn content_kind(content: &OutboundContent) -> String {
    serde_json::to_value(content)
        .ok()
        .and_then(|value| {
            value
                .get("type")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "these".to_owned())
}

#[async_trait]
impl WebClient for WhatsAppWebClient {
    async fn connect(&self) -> Result<(), WebError> {
        if self.shared.is_fenced() {
            return Err(WebError::Fenced);
        }
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(WebError::Failed("the client was shut down".to_owned()));
        }
        let mut run = self.run.lock().await;
        if run
            .as_ref()
            .is_some_and(|running| !running.task.is_finished())
        {
            // The library reconnects on its own while its run loop runs.
            return Ok(());
        }
        if let Some(ended) = run.take() {
            // The loop ended on its own (a failure the library does not retry): flush what
            // that client cached before another one loads the store.
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, ended.client.disconnect())
                .await
                .is_err()
            {
                warn!(tenant = %self.shared.tenant, "ended web client's disconnect timed out");
            }
        }
        let bot = match self.build().await {
            Ok(bot) => bot,
            Err(error) => {
                // The library reads and writes the store while it builds (the device, a probe
                // of the durability buffer) and does not always keep our error as the source:
                // a fenced write is told by the fence itself.
                let fenced = matches!(&error, BotBuilderError::Store(error) if is_fenced(error))
                    || matches!(self.shared.check_fence().await, Ok(false));
                if fenced {
                    self.shared.fence(None);
                    return Err(WebError::Fenced);
                }
                return Err(WebError::Failed(error.to_string()));
            }
        };
        let client = bot.client();
        *self.shared.auto_reconnect.lock() = Some(Arc::clone(&client.enable_auto_reconnect));
        let tenant = self.shared.tenant.clone();
        let task = tokio::spawn(async move {
            bot.run().await;
            debug!(%tenant, "web client run loop ended");
        });
        info!(tenant = %self.shared.tenant, epoch = self.shared.epoch, "web client connecting");
        *run = Some(Running { client, task });
        Ok(())
    }

    async fn pair_code(&self, phone: &str) -> Result<String, WebError> {
        if !jid::is_digits(phone) || !(7..=15).contains(&phone.len()) {
            return Err(WebError::InvalidPhone(phone.to_owned()));
        }
        let client = self.client().await.ok_or(WebError::NotConnected)?;
        if client.is_logged_in() {
            return Err(WebError::AlreadyPaired);
        }
        // just after `connect`, the socket may still be opening
        if client.wait_for_socket(PAIR_SOCKET_WAIT).await.is_err() {
            return Err(WebError::NotConnected);
        }
        client
            .pair_with_code(PairCodeOptions {
                phone_number: phone.to_owned(),
                ..PairCodeOptions::default()
            })
            .await
            .map_err(|error| WebError::Failed(format!("pairing code refused: {error}")))
    }

    async fn logout(&self) -> Result<(), WebError> {
        let running = self.run.lock().await.take();
        self.shared.stopped.store(true, Ordering::SeqCst);
        let connected = running
            .as_ref()
            .is_some_and(|running| running.client.is_connected());
        if !connected {
            warn!(tenant = %self.shared.tenant, "web session logged out while not connected: the device could not be unlinked on WhatsApp (remove it on the phone); its keys are forgotten");
        }
        if let Some(Running { client, task }) = running {
            // unlinks the device (when connected), reports `LoggedOut`, disconnects
            client.logout().await;
            finish(task).await;
        }
        // The library keeps the keys: forget the whole session (the device, its Signal
        // sessions, pre-keys and app state: a credential no longer linked) and start a fresh
        // device, so pairing again starts from new keys.
        let backend = self
            .shared
            .store
            .web_session_store(self.shared.tenant.clone(), self.shared.epoch);
        backend.forget().await.map_err(|error| {
            if error.is_fenced() {
                WebError::Fenced
            } else {
                WebError::Failed(format!("forgetting the session failed: {error}"))
            }
        })?;
        backend
            .save(&whatsapp_rust::wacore::store::Device::new())
            .await
            .map_err(|error| {
                if is_fenced(&error) {
                    WebError::Fenced
                } else {
                    WebError::Failed(format!("starting a fresh device failed: {error}"))
                }
            })
    }

    async fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let Some(Running { client, task }) = self.run.lock().await.take() else {
            return;
        };
        if let Some(switch) = self.shared.auto_reconnect.lock().as_ref() {
            switch.store(false, Ordering::Relaxed);
        }
        // Write the device whole (not only when the library marked it changed), so what
        // the store holds is this client's last state, or the fence says it is not ours.
        let persistence = client.persistence_manager();
        persistence.modify_device(|_| ()).await;
        match persistence.flush().await {
            Ok(()) => debug!(tenant = %self.shared.tenant, "web client state flushed"),
            Err(error) if is_fenced(&error) => {
                self.shared.fenced.store(true, Ordering::SeqCst);
                warn!(tenant = %self.shared.tenant, epoch = self.shared.epoch, "web client state not flushed: another node hosts the tenant");
            }
            Err(error) => {
                warn!(tenant = %self.shared.tenant, %error, "web client state not flushed");
            }
        }
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, client.disconnect())
            .await
            .is_err()
        {
            warn!(tenant = %self.shared.tenant, "web client disconnect timed out");
        }
        // `disconnect` closes an established connection; one still in its handshake is the
        // library's run loop's until the handshake times out: hang it up (and any opened
        // from now on, `FencedTransport`).
        let connection = self.shared.connection.lock().take();
        if let Some(connection) = connection.and_then(|weak| weak.upgrade())
            && tokio::time::timeout(SHUTDOWN_TIMEOUT, connection.disconnect())
                .await
                .is_err()
        {
            warn!(tenant = %self.shared.tenant, "web connection hang-up timed out");
        }
        finish(task).await;
        info!(tenant = %self.shared.tenant, "web client shut down");
    }
}

/// Waits for a run loop to end (bounded), aborting it past the bound.
async fn finish(mut task: JoinHandle<()>) {
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::{IqError, SendError as Library};

    use super::*;

    #[test]
    fn send_failures_are_classified_for_the_retry_policy() {
        assert!(send_error(&Library::NotLoggedIn).is_retryable());
        assert!(send_error(&Library::Iq(IqError::Timeout)).is_retryable());
        assert!(send_error(&Library::Iq(IqError::NotConnected)).is_retryable());
        assert_eq!(
            send_error(&Library::InvalidRequest("no such chat".into())),
            SendError::Rejected {
                code: 400,
                reason: "no such chat".into()
            }
        );
        assert!(!send_error(&Library::Internal(anyhow::anyhow!("encrypt failed"))).is_retryable());
    }
}
