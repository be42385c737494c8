//! The session of a `web` tenant: the WhatsApp Web client it holds, and what the client's
//! events do to the session (docs/engines.md).
//!
//! - The client is opened at the session's epoch and connects at start; a move shuts it
//!   down (flushing its state) before the tenant is handed on, and the next host opens its
//!   own: break, then make. A move called off opens a new one here.
//! - A passing disconnection reconnects after a doubling backoff (from
//!   `Settings::web_reconnect_backoff`, at most [`MAX_RECONNECT_BACKOFF`]); logged out,
//!   banned, replaced (`StreamReplaced`: another node hosts the tenant), outdated and pairing
//!   expired never reconnect on their own.
//! - An inbound message is stored first, then acknowledged to the client (which
//!   acknowledges it to the server only then), then handed to the tenant's conversations,
//!   exactly as the webhook ingress does for the Cloud API; a message the owner wrote on the
//!   phone is recorded as an echo and is an owner takeover.
//! - Every event of a client the session has replaced (a new connection after a move called
//!   off) is ignored: each client's events carry its connection number.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};
use salesboy_protocol::Wamid;
use salesboy_protocol::events::{Alert, AlertKind};
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::whatsapp::DeliveryStatus;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{SessionMsg, SessionState, SessionStatus, pump, set_status};
use crate::command::TenantCommand;
use crate::conversation::InboundItem;
use crate::ports::WhatsAppConnection;
use crate::store::{
    InsertOutcome, NewInbound, NewOutbound, NewStatus, OutboundOrigin, StatusOutcome, StoreError,
};
use crate::tenant::TenantMsg;
use crate::web::{WebClient, WebConnector, WebError, WebEvent, WebEvents, WebMessage};

/// The longest wait between two reconnection attempts.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(120);

/// The Web client a session holds and where its connection stands.
pub(super) struct WebLink {
    connector: Arc<dyn WebConnector>,
    /// The client of connection number `connection`.
    pub(super) client: Arc<dyn WebClient>,
    connection: u64,
    /// Reconnection attempts since the last successful connection.
    failures: u32,
    /// Shut down, or ended for a reason that needs someone (logged out, banned, replaced,
    /// outdated, pairing expired): no reconnection on its own.
    ended: bool,
    /// What the owner needs to link the device, while it is not linked.
    pairing: Option<PairingView>,
    /// The linked account's phone number.
    account: Option<String>,
    /// When a temporary ban ends (unix ms), while banned.
    banned_until_ms: Option<i64>,
    /// Why it is disconnected, for the next `session_status` event.
    reason: Option<String>,
}

/// What the owner needs to link a `web` session, while it is not linked (`Observe`, the
/// API's session status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingView {
    /// The text of the QR code to scan now.
    pub qr: Option<String>,
    /// Until when it may be scanned (unix ms).
    pub qr_expires_ms: Option<i64>,
    /// The 8-character pairing code asked for, if one was.
    pub code: Option<String>,
    /// WhatsApp stopped offering codes: pairing must be asked for again.
    pub expired: bool,
}

/// What `Observe` shows of a `web` session beyond its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebView {
    /// The linked account's phone number, once linked.
    pub account: Option<String>,
    /// While the device is not linked: its QR code or pairing code.
    pub pairing: Option<PairingView>,
    /// When a temporary ban ends (unix ms), while banned.
    pub banned_until_ms: Option<i64>,
}

impl WebLink {
    /// Opens connection number `connection` (not connected yet).
    pub(super) fn open(
        myself: &ActorRef<SessionMsg>,
        connector: Arc<dyn WebConnector>,
        state_tenant: &salesboy_protocol::TenantId,
        epoch: u64,
        connection: u64,
    ) -> Self {
        let client = connector.open(state_tenant, epoch, events_for(myself, connection));
        Self {
            connector,
            client,
            connection,
            failures: 0,
            ended: false,
            pairing: None,
            account: None,
            banned_until_ms: None,
            reason: None,
        }
    }

    /// The client, as the connection sends go through.
    pub(super) fn connection(&self) -> Arc<dyn WhatsAppConnection> {
        Arc::clone(&self.client) as Arc<dyn WhatsAppConnection>
    }

    /// The `session_status` event's fields beyond `status`, for `status`: the account, and
    /// the QR code (pairing), the ban's end (banned) or the reason (disconnected).
    pub(super) fn status_detail(
        &mut self,
        status: SessionStatus,
        detail: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        use serde_json::Value;
        detail.insert("engine".into(), Value::from("web"));
        if let Some(account) = &self.account {
            detail.insert("account".into(), Value::from(account.as_str()));
        }
        let reason = self.reason.take();
        match status {
            SessionStatus::Pairing => {
                if let Some(pairing) = &self.pairing {
                    detail.insert("qr".into(), Value::from(pairing.qr.clone()));
                    detail.insert("qr_expires_ms".into(), Value::from(pairing.qr_expires_ms));
                }
            }
            SessionStatus::TemporarilyBanned => {
                detail.insert("expires_ms".into(), Value::from(self.banned_until_ms));
            }
            SessionStatus::Disconnected => {
                detail.insert("reason".into(), Value::from(reason));
            }
            _ => {}
        }
    }

    /// Whether a reason waits to be published with the next status.
    pub(super) fn has_reason(&self) -> bool {
        self.reason.is_some()
    }

    /// What `Observe` shows.
    pub(super) fn view(&self) -> WebView {
        WebView {
            account: self.account.clone(),
            pairing: self.pairing.clone(),
            banned_until_ms: self.banned_until_ms,
        }
    }
}

/// The events of connection number `connection`, into the session's mailbox.
fn events_for(myself: &ActorRef<SessionMsg>, connection: u64) -> WebEvents {
    let session = myself.clone();
    WebEvents::new(move |event| {
        let _ = session.send_message(SessionMsg::Web { connection, event });
    })
}

/// Starts connecting the current client; a failure to start counts as a disconnection.
pub(super) async fn connect(myself: &ActorRef<SessionMsg>, state: &mut SessionState) {
    let Some(link) = state.web.as_mut() else {
        return;
    };
    link.ended = false;
    if let Err(error) = link.client.connect().await {
        warn!(tenant = %state.args.tenant, %error, "web client could not start connecting");
        disconnected(myself, state, &error.to_string());
    }
}

/// Opens a new client (connection number one higher) and connects it: after a move was
/// called off, or when pairing is asked for again.
pub(super) async fn reopen(myself: &ActorRef<SessionMsg>, state: &mut SessionState) {
    let Some(link) = state.web.as_mut() else {
        return;
    };
    link.client.shutdown().await;
    let next = WebLink::open(
        myself,
        Arc::clone(&link.connector),
        &state.args.tenant,
        state.args.epoch,
        link.connection + 1,
    );
    *link = WebLink {
        account: link.account.take(),
        ..next
    };
    state.connection = link.connection();
    connect(myself, state).await;
}

/// Shuts the client down (flushing its state) and keeps it from reconnecting.
pub(super) async fn shut_down(state: &mut SessionState) {
    if let Some(link) = state.web.as_mut() {
        link.ended = true;
        link.client.shutdown().await;
    }
}

/// A reconnection timer fired for `connection`.
pub(super) async fn on_reconnect(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    connection: u64,
) {
    let due = state
        .web
        .as_ref()
        .is_some_and(|link| link.connection == connection && !link.ended)
        && !state.frozen
        && state.status == SessionStatus::Disconnected;
    if due {
        connect(myself, state).await;
    }
}

/// What an event of connection number `connection` does to the session.
pub(super) async fn on_event(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    connection: u64,
    event: WebEvent,
) -> Result<(), ActorProcessingErr> {
    let now_ms = state.args.services.clock.now_ms();
    let Some(link) = state.web.as_mut() else {
        return Ok(());
    };
    if link.connection != connection {
        debug!(tenant = %state.args.tenant, connection, "event of a replaced web client ignored");
        if let WebEvent::Message(message) = event {
            // Not ours to store: the current client gets it again from the server.
            drop(message.committed);
        }
        return Ok(());
    }
    match event {
        WebEvent::Qr { code, valid_for } => {
            let expires_ms =
                now_ms.saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX));
            let pairing = link.pairing.get_or_insert_with(PairingView::default);
            pairing.qr = Some(code);
            pairing.qr_expires_ms = Some(expires_ms);
            pairing.expired = false;
            set_status(state, SessionStatus::Pairing);
        }
        WebEvent::PairingExpired => {
            link.ended = true;
            let pairing = link.pairing.get_or_insert_with(PairingView::default);
            *pairing = PairingView {
                expired: true,
                ..PairingView::default()
            };
            info!(tenant = %state.args.tenant, "no QR code scanned in time: pairing must be asked for again");
            set_status_because(state, SessionStatus::Disconnected, "pairing_expired");
        }
        WebEvent::Paired { phone } => {
            info!(tenant = %state.args.tenant, "web device linked");
            link.account = Some(phone);
            link.pairing = None;
        }
        WebEvent::Connected { phone } => {
            link.failures = 0;
            link.pairing = None;
            link.banned_until_ms = None;
            if phone.is_some() {
                link.account = phone;
            }
            set_status(state, SessionStatus::Connected);
            if std::mem::take(&mut state.hygiene.ban_alerted) {
                let services = &state.args.services;
                services
                    .publish(services.alert_cleared(&state.args.tenant, AlertKind::SessionBanned));
            }
            pump(myself, state);
        }
        WebEvent::Disconnected { reason } => disconnected(myself, state, &reason),
        WebEvent::LoggedOut => {
            link.ended = true;
            link.account = None;
            link.pairing = None;
            warn!(tenant = %state.args.tenant, "web device unlinked: pairing again is needed");
            set_status(state, SessionStatus::LoggedOut);
        }
        WebEvent::TemporarilyBanned { code, expires_ms } => {
            link.ended = true;
            link.banned_until_ms = expires_ms;
            warn!(tenant = %state.args.tenant, code, expires_ms, "number temporarily banned by WhatsApp");
            set_status(state, SessionStatus::TemporarilyBanned);
            // The `session_banned` condition: raised on a ban, cleared on the next connection.
            state.hygiene.ban_alerted = true;
            let services = &state.args.services;
            let alert = Alert::SessionBanned { expires_ms };
            services.publish(services.alert(&state.args.tenant, &alert));
        }
        WebEvent::Replaced => {
            // Another node's client took over: we are fenced. Stop, and never come back.
            warn!(tenant = %state.args.tenant, "web connection replaced by another: stopping it");
            link.ended = true;
            let client = Arc::clone(&link.client);
            set_status(state, SessionStatus::Replaced);
            client.shutdown().await;
        }
        WebEvent::Outdated => {
            link.ended = true;
            warn!(tenant = %state.args.tenant, "WhatsApp refuses this client version: the node needs an update");
            set_status(state, SessionStatus::Outdated);
        }
        WebEvent::Message(message) => receive(state, message).await?,
        WebEvent::Receipt { ids, status, at_ms } => receipt(state, ids, status, at_ms).await,
        WebEvent::Undecryptable { chat, id, sent_ms } => {
            info!(tenant = %state.args.tenant, chat = %chat, wamid = %id, "message could not be decrypted; the sender's phone was asked again");
            let services = &state.args.services;
            services.publish(
                services
                    .tenant_event(
                        EventKind::MessageUndecryptable,
                        &state.args.tenant,
                        serde_json::json!({"wamid": id, "sent_ms": sent_ms}),
                    )
                    .with_chat(chat),
            );
        }
    }
    Ok(())
}

/// When a receipt's id not recorded yet is tried again: a receipt can come before the send's
/// result (its wamid) is committed, in the send's own task.
const RECEIPT_RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
];

/// Moves the status of the messages a receipt names forward (the store publishes
/// `status_changed`), as the Cloud API's status webhooks do; late receipts change nothing.
/// Ids not recorded yet are tried again in a task of their own ([`RECEIPT_RETRIES`]); ids
/// never recorded (messages from before the gateway) change nothing.
async fn receipt(state: &SessionState, ids: Vec<Wamid>, status: DeliveryStatus, at_ms: i64) {
    let tenant = &state.args.tenant;
    let store = &state.args.services.store;
    let mut unknown = Vec::new();
    for wamid in ids {
        let update = NewStatus {
            tenant: tenant.clone(),
            wamid,
            status,
            at_ms,
            error: None,
        };
        match store.update_status(&update).await {
            Ok(StatusOutcome::UnknownMessage) => unknown.push(update),
            Ok(outcome) => {
                debug!(tenant = %tenant, wamid = %update.wamid, status = status.as_str(), ?outcome, "receipt")
            }
            Err(error) => {
                warn!(tenant = %tenant, wamid = %update.wamid, %error, "a receipt's status was not recorded")
            }
        }
    }
    if unknown.is_empty() {
        return;
    }
    let store = Arc::clone(store);
    tokio::spawn(async move {
        for wait in RECEIPT_RETRIES {
            tokio::time::sleep(wait).await;
            let mut still = Vec::new();
            for update in unknown {
                match store.update_status(&update).await {
                    Ok(StatusOutcome::UnknownMessage) => still.push(update),
                    Ok(_) => {}
                    Err(error) => {
                        warn!(tenant = %update.tenant, wamid = %update.wamid, %error, "a receipt's status was not recorded")
                    }
                }
            }
            if still.is_empty() {
                return;
            }
            unknown = still;
        }
        debug!(
            receipts = unknown.len(),
            "receipts for messages never recorded, dropped"
        );
    });
}

/// A passing disconnection: reconnect after the backoff, unless the session ended.
fn disconnected(myself: &ActorRef<SessionMsg>, state: &mut SessionState, reason: &str) {
    let base = state.args.services.settings.web_reconnect_backoff;
    let Some(link) = state.web.as_mut() else {
        return;
    };
    if link.ended {
        return;
    }
    let delay = base
        .saturating_mul(1 << link.failures.min(16))
        .min(MAX_RECONNECT_BACKOFF);
    link.failures = link.failures.saturating_add(1);
    let connection = link.connection;
    info!(tenant = %state.args.tenant, reason, delay_ms = delay.as_millis(), "web connection lost, reconnecting after a backoff");
    set_status_because(state, SessionStatus::Disconnected, reason);
    myself.send_after(delay, move || SessionMsg::Reconnect { connection });
}

/// Stores an inbound message, acknowledges it, and hands it to the tenant.
async fn receive(state: &mut SessionState, message: WebMessage) -> Result<(), ActorProcessingErr> {
    let services = Arc::clone(&state.args.services);
    let tenant = state.args.tenant.clone();
    let now_ms = services.clock.now_ms();
    let WebMessage {
        chat,
        id,
        from_me,
        sent_ms,
        kind,
        body,
        committed,
    } = message;
    if from_me {
        let new = NewOutbound {
            tenant: tenant.clone(),
            chat: chat.clone(),
            origin: OutboundOrigin::Echo,
            wamid: Some(id),
            kind,
            body,
            created_ms: sent_ms,
            epoch: None,
            client_ref: None,
            content: None,
        };
        match services.store.record_outbound(&new).await {
            Ok(outcome) => {
                committed.commit();
                if matches!(outcome, InsertOutcome::Inserted { .. }) {
                    hand_to_tenant(
                        &state.args.tenant_ref,
                        TenantCommand::OwnerActivity {
                            chat,
                            at_ms: sent_ms,
                        },
                    );
                }
            }
            Err(error) => not_stored(&tenant, &error),
        }
        return Ok(());
    }
    let new = NewInbound {
        tenant: tenant.clone(),
        chat,
        wamid: id,
        received_ms: now_ms,
        sent_ms: Some(sent_ms),
        kind,
        body,
        raw: None,
    };
    let stored = services
        .store
        .insert_inbound_batch(std::slice::from_ref(&new))
        .await
        .pop()
        .unwrap_or_else(|| {
            Err(StoreError::Invalid {
                reason: "the store answered no outcome for a message".into(),
            })
        });
    match stored {
        Ok(stored) => {
            committed.commit();
            match stored.outcome {
                InsertOutcome::Inserted { id } => {
                    metrics::counter!("salesboy_messages_in_total", "outcome" => "new")
                        .increment(1);
                    state.hygiene.inbound(&new.chat, &new.wamid);
                    let item = InboundItem {
                        id,
                        wamid: Some(new.wamid),
                        text: new.body,
                        received_ms: now_ms,
                        sent_ms,
                        predecessor: stored.predecessor,
                    };
                    let chat = new.chat;
                    let command = if stored.new_chat {
                        TenantCommand::InboundNewChat { chat, item }
                    } else {
                        TenantCommand::Inbound { chat, item }
                    };
                    hand_to_tenant(&state.args.tenant_ref, command);
                }
                InsertOutcome::Duplicate { id } => {
                    metrics::counter!("salesboy_messages_in_total", "outcome" => "duplicate")
                        .increment(1);
                    debug!(tenant = %tenant, id, "duplicate web message ignored");
                }
            }
        }
        Err(error) => not_stored(&tenant, &error),
    }
    Ok(())
}

/// A message that could not be stored is not acknowledged: the server delivers it again.
fn not_stored(tenant: &salesboy_protocol::TenantId, error: &StoreError) {
    warn!(tenant = %tenant, %error, "web message not stored: left unacknowledged for the server to deliver again");
}

fn hand_to_tenant(tenant: &ActorRef<TenantMsg>, command: TenantCommand) {
    let _ = tenant.send_message(TenantMsg::Command {
        command,
        reply: None,
    });
}

/// Asks for a pairing code for `phone`.
pub(super) async fn pair_code(state: &mut SessionState, phone: &str) -> Result<String, WebError> {
    let Some(link) = state.web.as_mut() else {
        return Err(WebError::NoSession);
    };
    let code = link.client.pair_code(phone).await?;
    link.pairing.get_or_insert_with(PairingView::default).code = Some(code.clone());
    Ok(code)
}

/// Unlinks the device.
pub(super) async fn logout(state: &mut SessionState) -> Result<(), WebError> {
    let Some(link) = state.web.as_mut() else {
        return Err(WebError::NoSession);
    };
    link.client.logout().await?;
    link.ended = true;
    link.account = None;
    link.pairing = None;
    set_status(state, SessionStatus::LoggedOut);
    Ok(())
}

/// Whether the client may be asked to pair again: it is not linked and not connecting.
pub(super) fn may_pair_again(state: &SessionState) -> bool {
    state.web.as_ref().is_some_and(|link| link.ended)
        && matches!(
            state.status,
            SessionStatus::LoggedOut | SessionStatus::Disconnected
        )
}

/// `set_status` with the reason in the event's detail.
fn set_status_because(state: &mut SessionState, status: SessionStatus, reason: &str) {
    if let Some(link) = state.web.as_mut() {
        link.reason = Some(reason.to_owned());
    }
    set_status(state, status);
}
