//! [`ScriptedWeb`]: a WhatsApp Web engine the test drives. Every client a session opens is
//! kept ([`ScriptedWeb::clients`]); the test plays WhatsApp's part by emitting events through
//! it ([`ScriptedClient::emit`], [`ScriptedClient::message`]) and reads what the session did
//! (connects, sends, pairing codes, logouts, shutdowns).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use salesboy_actors::ports::{Clock, SendError, SystemClock, WhatsAppConnection};
use salesboy_actors::web::{
    InboundAck, WebClient, WebConnector, WebError, WebEvent, WebEvents, WebMessage,
};
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use tokio::sync::oneshot;

use crate::eventually;

/// The pairing code every scripted client answers.
pub const PAIR_CODE: &str = "K7QX2M9P";

/// Opens [`ScriptedClient`]s and keeps them, oldest first.
#[derive(Clone, Default)]
pub struct ScriptedWeb {
    clients: Arc<Mutex<Vec<Arc<ScriptedClient>>>>,
}

impl ScriptedWeb {
    /// Every client opened so far, oldest first.
    pub fn clients(&self) -> Vec<Arc<ScriptedClient>> {
        self.clients.lock().clone()
    }

    /// The `n`-th client opened (from 0), once it is, within `within`.
    pub async fn client(&self, n: usize, within: Duration) -> Arc<ScriptedClient> {
        eventually(within, || async { self.clients.lock().get(n).cloned() }).await
    }
}

impl WebConnector for ScriptedWeb {
    fn open(&self, tenant: &TenantId, epoch: u64, events: WebEvents) -> Arc<dyn WebClient> {
        let client = Arc::new(ScriptedClient {
            tenant: tenant.clone(),
            epoch,
            events,
            connects: AtomicU32::new(0),
            shutdowns: AtomicU32::new(0),
            logouts: AtomicU32::new(0),
            sent: Mutex::new(Vec::new()),
            read: Mutex::new(Vec::new()),
            actions: Mutex::new(Vec::new()),
            paired_phones: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
        });
        self.clients.lock().push(Arc::clone(&client));
        client
    }
}

/// What a scripted client was asked to do to a chat, in order ([`ScriptedClient::actions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebAction {
    /// A message marked read, with the typing indicator or without.
    Read {
        /// The message.
        wamid: Wamid,
        /// Whether typing was shown.
        typing: bool,
    },
    /// A message sent.
    Sent {
        /// The chat.
        to: ChatId,
        /// The text.
        body: String,
    },
}

/// One scripted client: records what the session asks of it; the test emits its events.
pub struct ScriptedClient {
    /// The tenant it was opened for.
    pub tenant: TenantId,
    /// The epoch it was opened at.
    pub epoch: u64,
    events: WebEvents,
    connects: AtomicU32,
    shutdowns: AtomicU32,
    logouts: AtomicU32,
    sent: Mutex<Vec<(ChatId, String)>>,
    read: Mutex<Vec<Wamid>>,
    actions: Mutex<Vec<WebAction>>,
    paired_phones: Mutex<Vec<String>>,
    next_id: AtomicUsize,
}

impl ScriptedClient {
    /// Reports `event` to the session, as the library would.
    pub fn emit(&self, event: WebEvent) {
        self.events.emit(event);
    }

    /// Delivers a message from `chat` (or, `from_me`, written by the owner to `chat`);
    /// returns what the client waits on before acknowledging it to the server.
    pub fn message(
        &self,
        chat: &str,
        id: &str,
        body: &str,
        from_me: bool,
    ) -> oneshot::Receiver<()> {
        let (committed, stored) = InboundAck::new();
        self.emit(WebEvent::Message(WebMessage {
            chat: ChatId::new(chat).expect("a valid chat id"),
            id: Wamid::new(id).expect("a valid message id"),
            from_me,
            sent_ms: SystemClock.now_ms(),
            kind: "text".into(),
            body: Some(body.into()),
            committed,
        }));
        stored
    }

    /// Times [`WebClient::connect`] was called.
    pub fn connects(&self) -> u32 {
        self.connects.load(Ordering::SeqCst)
    }

    /// Times [`WebClient::shutdown`] was called.
    pub fn shutdowns(&self) -> u32 {
        self.shutdowns.load(Ordering::SeqCst)
    }

    /// Times [`WebClient::logout`] was called.
    pub fn logouts(&self) -> u32 {
        self.logouts.load(Ordering::SeqCst)
    }

    /// The texts sent, as `(to, body)`, oldest first.
    pub fn sent(&self) -> Vec<(ChatId, String)> {
        self.sent.lock().clone()
    }

    /// The messages marked read.
    pub fn read(&self) -> Vec<Wamid> {
        self.read.lock().clone()
    }

    /// Reads (with typing or not) and sends, in the order they were asked for.
    pub fn actions(&self) -> Vec<WebAction> {
        self.actions.lock().clone()
    }

    /// The phone numbers pairing codes were asked for.
    pub fn paired_phones(&self) -> Vec<String> {
        self.paired_phones.lock().clone()
    }
}

#[async_trait]
impl WhatsAppConnection for ScriptedClient {
    async fn send_text(
        &self,
        to: &ChatId,
        body: &str,
        _reply_to: Option<&Wamid>,
    ) -> Result<Wamid, SendError> {
        if self.shutdowns() > 0 {
            return Err(SendError::Transient("client shut down".into()));
        }
        self.sent.lock().push((to.clone(), body.to_owned()));
        self.actions.lock().push(WebAction::Sent {
            to: to.clone(),
            body: body.to_owned(),
        });
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Wamid::new(format!("3EB0{}{n:08}", self.epoch)).expect("a valid message id"))
    }

    async fn send_content(
        &self,
        to: &ChatId,
        content: &OutboundContent,
    ) -> Result<Wamid, SendError> {
        self.send_text(to, &content.text(), None).await
    }

    async fn mark_read(&self, message: &Wamid, typing: bool) -> Result<(), SendError> {
        self.read.lock().push(message.clone());
        self.actions.lock().push(WebAction::Read {
            wamid: message.clone(),
            typing,
        });
        Ok(())
    }
}

#[async_trait]
impl WebClient for ScriptedClient {
    async fn connect(&self) -> Result<(), WebError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn pair_code(&self, phone: &str) -> Result<String, WebError> {
        if phone.is_empty() || !phone.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WebError::InvalidPhone(phone.into()));
        }
        self.paired_phones.lock().push(phone.into());
        Ok(PAIR_CODE.into())
    }

    async fn logout(&self) -> Result<(), WebError> {
        self.logouts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}
