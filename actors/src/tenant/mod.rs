//! `TenantSupervisor`: one hosted tenant. Spawns its session, responder and (on demand) its
//! conversations; routes the tenant's messages to them; restarts failed children with
//! backoff and gives up after too many failures (the tenant is then reported failed and
//! stops); reconciles from the store on activation and after restarts (architecture §5.4);
//! stops itself when idle.
//!
//! [`children`] starts the children and keeps track of them.

mod children;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use salesboy_protocol::events::Alert;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, Engine, TenantId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use self::children::{Children, conversation, spawn_child, spawn_conversation};
use crate::command::{CommandReply, TenantCommand};
use crate::conversation::{ConversationMsg, ConversationSnapshot, ConversationStart, InboundItem};
use crate::error::TenantError;
use crate::handoff::{SessionHandoff, TenantHandoff};
use crate::responder::{ResponderMsg, ResponderSnapshot};
use crate::rpc::ask;
use crate::services::{CUSTOMER_WINDOW_MS, Services};
use crate::session::{SendJob, SessionMsg, SessionSnapshot};
use crate::stop::{ChildExit, StopReason};
use crate::store::{InsertOutcome, NewOutbound, OutboundOrigin, StoreError, Tenant};
use crate::supervision::{RestartDecision, RestartTracker};
use crate::web::WebError;

/// How long the supervisor waits for a child's `Observe`.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which long-lived child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    /// The WhatsApp session.
    Session,
    /// The responder.
    Responder,
    /// A conversation.
    Conversation,
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ChildKind {
    /// The name in metrics, logs and snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Responder => "responder",
            Self::Conversation => "conversation",
        }
    }
}

/// Messages of a tenant supervisor.
#[derive(Debug)]
pub enum TenantMsg {
    /// A command (from the webhook ingress, the admin API, another node's router, or held
    /// by the node the tenant moved from). `reply`, when given, gets what it produced or why
    /// not; commands [done on receipt](TenantCommand::done_on_receipt) are sent without one.
    Command {
        /// The command.
        command: TenantCommand,
        /// Where to answer.
        reply: Option<CommandReplyPort>,
    },
    /// Offer unanswered messages to their conversations again; with `unsent`, also queue
    /// replies recorded but never sent.
    Reconcile {
        /// Whether to resend pending outbound messages too.
        unsent: bool,
    },
    /// Periodic: passivate idle conversations, stop if the whole tenant is idle.
    Sweep,
    /// Messages wait for a live conversation: ask the idle ones to stop (again, until none
    /// waits).
    MakeRoom,
    /// Restart a child after its backoff.
    Respawn(ChildKind),
    /// Freeze the subtree for a move: stop admitting (messages are held), let the reply
    /// under way finish, collect the children's state.
    Freeze(RpcReplyPort<Result<TenantHandoff, TenantError>>),
    /// The move was called off: resume and handle what was held.
    Thaw,
    /// The move succeeded: hand over what was held since the freeze, then stop.
    Release(RpcReplyPort<Vec<TenantCommand>>),
    /// The tenant's state.
    Observe(RpcReplyPort<TenantSnapshot>),
    /// One conversation's state, if it is active.
    ObserveConversation {
        /// The chat.
        chat: ChatId,
        /// Its snapshot.
        reply: RpcReplyPort<Option<ConversationSnapshot>>,
    },
}

/// Where a tenant answers a command.
pub type CommandReplyPort = RpcReplyPort<Result<CommandReply, TenantError>>;

/// What `Observe` shows of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSnapshot {
    /// The tenant.
    pub tenant: TenantId,
    /// Its placement epoch on this node.
    pub epoch: u64,
    /// The session, if running (no number configured, or restarting, otherwise).
    pub session: Option<SessionSnapshot>,
    /// The responder, if running.
    pub responder: Option<ResponderSnapshot>,
    /// Active conversations.
    pub conversations: usize,
    /// Child restarts by kind.
    pub restarts: HashMap<String, u64>,
}

/// Start-up arguments.
pub struct TenantArgs {
    /// The tenant.
    pub tenant: TenantId,
    /// The placement epoch under which this node hosts it.
    pub epoch: u64,
    /// Shared services.
    pub services: Arc<Services>,
    /// The state it brings from another node, when it moved here.
    pub handoff: Option<TenantHandoff>,
}

/// A tenant supervisor's state.
pub struct TenantState {
    tenant: TenantId,
    epoch: u64,
    record: Tenant,
    services: Arc<Services>,
    children: Children,
    trackers: HashMap<ChildKind, RestartTracker>,
    last_activity: Instant,
    frozen: bool,
    held: Vec<TenantCommand>,
    /// The session's state brought from another node, used by the first session spawned.
    restore_session: Option<SessionHandoff>,
    /// Messages for chats without a live conversation, waiting because the tenant has as
    /// many live conversations as it may (they are stored: past [`MAX_WAITING`] they are
    /// left to the node's sweep).
    waiting: VecDeque<TenantCommand>,
    /// A `MakeRoom` is scheduled.
    making_room: bool,
}

/// How often a tenant with messages waiting for a live conversation asks the idle ones to
/// stop.
const MAKE_ROOM_EVERY: Duration = Duration::from_millis(100);

/// The most messages a tenant keeps waiting for a live conversation in memory.
const MAX_WAITING: usize = 10_000;

/// Whether a message for `chat` must wait: it has no live conversation and the tenant has
/// as many as it may.
fn at_conversation_bound(state: &TenantState, chat: &ChatId) -> bool {
    state.children.conversation(chat).is_none()
        && state.children.conversation_count()
            >= state.services.settings.max_conversations_per_tenant
}

/// Keeps an inbound message (stored already) until a conversation stops, and has the idle
/// ones stop.
fn wait_for_room(myself: &ActorRef<TenantMsg>, state: &mut TenantState, command: TenantCommand) {
    metrics::counter!("salesboy_conversation_bound_waits_total").increment(1);
    if state.waiting.is_empty() {
        warn!(tenant = %state.tenant, live = state.children.conversation_count(), "tenant at its bound of live conversations: new chats wait for idle ones to stop");
    }
    if state.waiting.len() < MAX_WAITING {
        state.waiting.push_back(command);
    }
    make_room(myself, state);
}

/// Asks every idle conversation to stop, and to ask again shortly (while messages wait,
/// conversations that are replying now become idle).
fn make_room(myself: &ActorRef<TenantMsg>, state: &mut TenantState) {
    for conversation in state.children.conversations() {
        let _ = conversation.send_message(ConversationMsg::Passivate {
            idle_for: Duration::ZERO,
        });
    }
    if !state.making_room {
        state.making_room = true;
        myself.send_after(MAKE_ROOM_EVERY, || TenantMsg::MakeRoom);
    }
}

/// A conversation stopped: hands the waiting messages on while there is room.
fn serve_waiting(myself: &ActorRef<TenantMsg>, state: &mut TenantState) {
    let room = state
        .services
        .settings
        .max_conversations_per_tenant
        .saturating_sub(state.children.conversation_count());
    for command in state.waiting.drain(..room.min(state.waiting.len())) {
        let _ = myself.send_message(TenantMsg::Command {
            command,
            reply: None,
        });
    }
}

/// The tenant supervisor (behaviour only).
#[derive(Debug, Default)]
pub struct TenantSupervisor;

impl Actor for TenantSupervisor {
    type Msg = TenantMsg;
    type State = TenantState;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TenantMsg>,
        args: TenantArgs,
    ) -> Result<TenantState, ActorProcessingErr> {
        let record = args
            .services
            .store
            .tenant(&args.tenant)
            .await?
            .ok_or_else(|| format!("unknown tenant {}", args.tenant))?;
        let (restore_conversations, restore_session, held) = match args.handoff {
            Some(handoff) => (handoff.conversations, handoff.session, handoff.held),
            None => (Vec::new(), None, Vec::new()),
        };
        let mut state = TenantState {
            tenant: args.tenant,
            epoch: args.epoch,
            record,
            children: Children::new(Arc::clone(&args.services)),
            services: args.services,
            trackers: HashMap::new(),
            last_activity: Instant::now(),
            frozen: false,
            held,
            restore_session,
            waiting: VecDeque::new(),
            making_room: false,
        };
        state
            .children
            .links()
            .set_read_receipts(state.record.read_receipts);
        spawn_child(&myself, &mut state, ChildKind::Session).await?;
        spawn_child(&myself, &mut state, ChildKind::Responder).await?;
        for restore in restore_conversations {
            let chat = restore.chat.clone();
            spawn_conversation(
                &myself,
                &mut state,
                &chat,
                ConversationStart::Restore(restore),
            )
            .await?;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        info!(tenant = %state.tenant, epoch = state.epoch, "tenant activated");
        // Messages held by the node it moved from come first, then the store's view.
        for held in std::mem::take(&mut state.held) {
            carry_out(&myself, state, held, None).await?;
        }
        let _ = myself.send_message(TenantMsg::Reconcile { unsent: true });
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        state.children.forget_all();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TenantMsg>,
        message: TenantMsg,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TenantMsg::Command { command: c, reply } => carry_out(&myself, state, c, reply).await?,
            TenantMsg::Reconcile { .. }
            | TenantMsg::Sweep
            | TenantMsg::MakeRoom
            | TenantMsg::Respawn(_)
                if state.frozen =>
            {
                // Done by the next host (or after a thaw).
            }
            TenantMsg::Freeze(reply) => {
                let result = freeze(state).await;
                if result.is_err() {
                    thaw(&myself, state).await?;
                }
                let _ = reply.send(result);
            }
            TenantMsg::Thaw => thaw(&myself, state).await?,
            TenantMsg::Release(reply) => {
                let _ = reply.send(std::mem::take(&mut state.held));
                info!(tenant = %state.tenant, epoch = state.epoch, "tenant moved away");
                StopReason::Moved.stop(&myself);
            }
            TenantMsg::Reconcile { unsent } => reconcile(&myself, state, unsent).await?,
            TenantMsg::Sweep => {
                // Messages waiting for a live conversation: every idle one makes room.
                let idle_for = if state.waiting.is_empty() {
                    state.services.settings.conversation_idle
                } else {
                    Duration::ZERO
                };
                for conversation in state.children.possibly_idle(idle_for) {
                    let _ = conversation.send_message(ConversationMsg::Passivate { idle_for });
                }
                // A `web` tenant's messages come in on its session's connection: it stays.
                if state.children.conversation_count() == 0
                    && state.record.engine != Engine::Web
                    && state.last_activity.elapsed() >= state.services.settings.tenant_idle
                {
                    info!(tenant = %state.tenant, "tenant idle, stopping");
                    StopReason::Idle.stop(&myself);
                }
            }
            TenantMsg::MakeRoom => {
                state.making_room = false;
                if !state.waiting.is_empty() {
                    make_room(&myself, state);
                }
            }
            TenantMsg::Respawn(kind) => {
                spawn_child(&myself, state, kind).await?;
                let _ = myself.send_message(TenantMsg::Reconcile {
                    unsent: kind == ChildKind::Session,
                });
            }
            TenantMsg::Observe(reply) => {
                let session = match state.children.session() {
                    Some(session) => ask(&session, SessionMsg::Observe, OBSERVE_TIMEOUT).await,
                    None => None,
                };
                let responder = match state.children.responder() {
                    Some(responder) => {
                        ask(&responder, ResponderMsg::Observe, OBSERVE_TIMEOUT).await
                    }
                    None => None,
                };
                let restarts = state
                    .trackers
                    .iter()
                    .map(|(kind, tracker)| (kind.as_str().to_owned(), tracker.restarts()))
                    .collect();
                let _ = reply.send(TenantSnapshot {
                    tenant: state.tenant.clone(),
                    epoch: state.epoch,
                    session,
                    responder,
                    conversations: state.children.conversation_count(),
                    restarts,
                });
            }
            TenantMsg::ObserveConversation { chat, reply } => {
                let snapshot = match state.children.conversation(&chat) {
                    Some(conversation) => {
                        ask(conversation, ConversationMsg::Observe, OBSERVE_TIMEOUT).await
                    }
                    None => None,
                };
                let _ = reply.send(snapshot);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TenantMsg>,
        event: SupervisionEvent,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, exit)) = ChildExit::of(event) else {
            return Ok(());
        };
        let Some(kind) = state.children.forget(&cell) else {
            return Ok(());
        };
        let reason = match exit {
            ChildExit::Stopped => {
                if kind == ChildKind::Conversation {
                    serve_waiting(&myself, state);
                }
                return Ok(());
            }
            ChildExit::Fenced => {
                warn!(tenant = %state.tenant, epoch = state.epoch, "tenant fenced by a newer epoch, stopping");
                StopReason::Fenced.stop(&myself);
                return Ok(());
            }
            ChildExit::Failed(reason) => reason,
        };
        metrics::counter!("salesboy_actor_restarts_total", "kind" => kind.as_str()).increment(1);
        let policy = state.services.settings.restart;
        let decision = state
            .trackers
            .entry(kind)
            .or_default()
            .on_failure(&policy, Instant::now());
        match decision {
            RestartDecision::Restart { after } => {
                warn!(tenant = %state.tenant, child = kind.as_str(), reason, ?after, "child failed, restarting");
                match kind {
                    // Conversations come back on demand; reconciliation re-offers their messages.
                    ChildKind::Conversation => {
                        myself.send_after(after, || TenantMsg::Reconcile { unsent: false });
                    }
                    _ => {
                        myself.send_after(after, move || TenantMsg::Respawn(kind));
                    }
                }
            }
            RestartDecision::GiveUp => {
                warn!(tenant = %state.tenant, child = kind.as_str(), reason, "too many failures, tenant failed");
                let alert = Alert::TenantFailed {
                    child: kind.as_str().to_owned(),
                    reason,
                };
                state
                    .services
                    .publish(state.services.alert(&state.tenant, &alert));
                StopReason::Failed.stop(&myself);
            }
        }
        Ok(())
    }
}

/// Carries out a command; while the tenant is frozen, holds the messages for the next host
/// (or the thaw), refuses the requests (the caller retries on the next host) and drops a
/// reload (the next host reads the record when it starts).
async fn carry_out(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    command: TenantCommand,
    reply: Option<CommandReplyPort>,
) -> Result<(), ActorProcessingErr> {
    let answer = |reply: Option<CommandReplyPort>, result| {
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    };
    if state.frozen {
        match command {
            TenantCommand::Inbound { .. }
            | TenantCommand::InboundNewChat { .. }
            | TenantCommand::OwnerActivity { .. } => {
                state.held.push(command);
                answer(reply, Ok(CommandReply::Done));
            }
            TenantCommand::SetPaused { .. }
            | TenantCommand::OwnerSend { .. }
            | TenantCommand::OwnerSendOnce { .. }
            | TenantCommand::OwnerSendContent { .. } => {
                answer(reply, Err(TenantError::Moving(state.tenant.clone())));
            }
            TenantCommand::WebPair
            | TenantCommand::WebPairCode { .. }
            | TenantCommand::WebLogout => {
                answer(reply, Err(TenantError::Moving(state.tenant.clone())));
            }
            TenantCommand::Reload | TenantCommand::Start => answer(reply, Ok(CommandReply::Done)),
        }
        return Ok(());
    }
    if !matches!(
        command,
        TenantCommand::Reload
            | TenantCommand::Start
            | TenantCommand::WebPair
            | TenantCommand::WebPairCode { .. }
            | TenantCommand::WebLogout
    ) {
        state.last_activity = Instant::now();
    }
    match command {
        TenantCommand::Inbound { ref chat, .. }
        | TenantCommand::InboundNewChat { ref chat, .. }
            if at_conversation_bound(state, chat) =>
        {
            wait_for_room(myself, state, command);
            answer(reply, Ok(CommandReply::Done));
        }
        TenantCommand::Inbound { chat, item } => {
            let conversation = conversation(myself, state, &chat).await?;
            let _ = conversation.send_message(ConversationMsg::Inbound(item));
            answer(reply, Ok(CommandReply::Done));
        }
        TenantCommand::InboundNewChat { chat, item } => {
            let conversation = match state.children.hand(&chat) {
                Some(existing) => existing.clone(),
                None => {
                    let start = ConversationStart::NewChat;
                    spawn_conversation(myself, state, &chat, start).await?
                }
            };
            let _ = conversation.send_message(ConversationMsg::Inbound(item));
            answer(reply, Ok(CommandReply::Done));
        }
        TenantCommand::OwnerActivity { chat, at_ms } => {
            let conversation = conversation(myself, state, &chat).await?;
            let _ = conversation.send_message(ConversationMsg::OwnerActivity { at_ms });
            answer(reply, Ok(CommandReply::Done));
        }
        TenantCommand::SetPaused { chat, until_ms } => {
            let conversation = conversation(myself, state, &chat).await?;
            // The conversation answers (a caller that does not wait gets a port nobody reads).
            let reply = reply.unwrap_or_else(|| ractor::concurrency::oneshot().0.into());
            let _ = conversation.send_message(ConversationMsg::SetPaused { until_ms, reply });
        }
        TenantCommand::OwnerSend { chat, body } => {
            let result = owner_send(myself, state, chat, OwnerMessage::Text(body), None).await;
            let result = result
                .map(CommandReply::Outbound)
                .map_err(|e| TenantError::store(&state.tenant, e));
            answer(reply, result);
        }
        TenantCommand::OwnerSendOnce {
            chat,
            body,
            client_ref,
        } => {
            let message = OwnerMessage::Text(body);
            let result = owner_send(myself, state, chat, message, Some(client_ref)).await;
            let result = result
                .map(CommandReply::Outbound)
                .map_err(|e| TenantError::store(&state.tenant, e));
            answer(reply, result);
        }
        TenantCommand::OwnerSendContent {
            chat,
            content,
            client_ref,
        } => {
            let message = OwnerMessage::Content(*content);
            let result = owner_send(myself, state, chat, message, client_ref).await;
            let result = result
                .map(CommandReply::Outbound)
                .map_err(|e| TenantError::store(&state.tenant, e));
            answer(reply, result);
        }
        TenantCommand::Reload => {
            reload(myself, state).await?;
            answer(reply, Ok(CommandReply::Done));
        }
        // Hosted now, so reconciled on activation: nothing more to do.
        TenantCommand::Start => answer(reply, Ok(CommandReply::Done)),
        TenantCommand::WebPair => {
            ask_web_session(state, reply, SessionMsg::Pair, CommandReply::Web);
        }
        TenantCommand::WebPairCode { phone } => {
            let request = |reply| SessionMsg::PairCode { phone, reply };
            ask_web_session(state, reply, request, CommandReply::PairCode);
        }
        TenantCommand::WebLogout => {
            ask_web_session(state, reply, SessionMsg::Logout, |()| CommandReply::Done);
        }
    }
    Ok(())
}

/// How long a `web` session's pairing or logout may take (a round trip to WhatsApp).
const WEB_SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the session (a pairing or a logout, which wait on WhatsApp) off the tenant's loop
/// and answers `reply` with what it said.
fn ask_web_session<T: Send + 'static>(
    state: &TenantState,
    reply: Option<CommandReplyPort>,
    request: impl FnOnce(RpcReplyPort<Result<T, WebError>>) -> SessionMsg + Send + 'static,
    done: impl FnOnce(T) -> CommandReply + Send + 'static,
) {
    let session = state.children.session();
    tokio::spawn(async move {
        let answer = match session {
            Some(session) => ask(&session, request, WEB_SESSION_TIMEOUT)
                .await
                .unwrap_or(Err(WebError::NoSession)),
            None => Err(WebError::NoSession),
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer.map(done).map_err(TenantError::Web));
        }
    });
}

/// Freezes every child, conversations first (their last replies reach the session's queue
/// before the session freezes), each within the freeze timeout.
async fn freeze(state: &mut TenantState) -> Result<TenantHandoff, TenantError> {
    state.frozen = true;
    let timeout = state.services.settings.freeze_timeout;
    let mut calls = tokio::task::JoinSet::new();
    for conversation in state.children.conversations() {
        let conversation = conversation.clone();
        calls.spawn(async move { ask(&conversation, ConversationMsg::Freeze, timeout).await });
    }
    let mut conversations = Vec::with_capacity(state.children.conversation_count());
    while let Some(joined) = calls.join_next().await {
        match joined.ok().flatten() {
            Some(handoff) => conversations.push(handoff),
            None => {
                return Err(TenantError::FreezeTimeout {
                    tenant: state.tenant.clone(),
                    child: ChildKind::Conversation,
                    timeout,
                });
            }
        }
    }
    let session = match state.children.session() {
        Some(session) => Some(
            ask(&session, SessionMsg::Freeze, timeout)
                .await
                .ok_or_else(|| TenantError::FreezeTimeout {
                    tenant: state.tenant.clone(),
                    child: ChildKind::Session,
                    timeout,
                })?,
        ),
        None => None,
    };
    conversations.sort_by(|a, b| a.chat.cmp(&b.chat));
    Ok(TenantHandoff {
        tenant: state.tenant.clone(),
        epoch: state.epoch,
        conversations,
        session,
        // Messages that waited for a live conversation go first: they came in first.
        held: state
            .waiting
            .drain(..)
            .chain(std::mem::take(&mut state.held))
            .collect(),
    })
}

async fn thaw(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
) -> Result<(), ActorProcessingErr> {
    state.frozen = false;
    for conversation in state.children.conversations() {
        let _ = conversation.send_message(ConversationMsg::Thaw);
    }
    if let Some(session) = state.children.session() {
        let _ = session.send_message(SessionMsg::Thaw);
    }
    for held in std::mem::take(&mut state.held) {
        carry_out(myself, state, held, None).await?;
    }
    let _ = myself.send_message(TenantMsg::Reconcile { unsent: false });
    Ok(())
}

async fn reload(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
) -> Result<(), ActorProcessingErr> {
    let Some(record) = state.services.store.tenant(&state.tenant).await? else {
        info!(tenant = %state.tenant, "tenant deleted, stopping");
        StopReason::Deleted.stop(myself);
        return Ok(());
    };
    if record.session_stopped_ms.is_some() {
        info!(tenant = %state.tenant, "whatsapp session stopped, tenant stopping");
        StopReason::SessionStopped.stop(myself);
        return Ok(());
    }
    let before = std::mem::replace(&mut state.record, record);
    let record = &state.record;
    state
        .children
        .links()
        .set_read_receipts(record.read_receipts);
    // Only what changed is applied: a knowledge add or delete reloads the tenant too, and
    // must neither touch its session (an `auth_failed` one would show connected) nor reset
    // its providers' circuits.
    match (state.children.session(), record.numbers.first()) {
        (Some(session), Some(number)) if before.numbers.first() != Some(number) => {
            let _ = session.send_message(SessionMsg::UpdateNumber(number.clone()));
        }
        (None, Some(_)) if !state.children.has_session() => {
            spawn_child(myself, state, ChildKind::Session).await?;
            let _ = myself.send_message(TenantMsg::Reconcile { unsent: true });
        }
        _ => {}
    }
    let record = &state.record;
    if let Some(session) = state.children.session()
        && before.web_hygiene != record.web_hygiene
    {
        let _ = session.send_message(SessionMsg::UpdateHygiene(record.web_hygiene));
    }
    if let Some(responder) = state.children.responder() {
        let same_configuration = |t: &Tenant| {
            (t.system_prompt.as_deref(), t.llm_config.as_deref())
                == (
                    record.system_prompt.as_deref(),
                    record.llm_config.as_deref(),
                )
                && t.llm_monthly_spend_cap_micros == record.llm_monthly_spend_cap_micros
                // Deleted and created again: its knowledge versions start over.
                && t.created_ms == record.created_ms
        };
        if !same_configuration(&before) {
            let _ = responder.send_message(ResponderMsg::Reconfigure {
                system_prompt: record.system_prompt.clone(),
                llm_config: record.llm_config.clone(),
                spend_cap_micros: record.llm_monthly_spend_cap_micros,
                knowledge_version: record.knowledge_version,
                tenant_created_ms: record.created_ms,
            });
        } else if before.knowledge_version != record.knowledge_version {
            let _ = responder.send_message(ResponderMsg::KnowledgeChanged {
                version: record.knowledge_version,
            });
        }
    }
    info!(tenant = %state.tenant, "tenant configuration reloaded");
    Ok(())
}

/// What an owner sends: a text, or a template, interactive or media message.
enum OwnerMessage {
    Text(String),
    Content(OutboundContent),
}

async fn owner_send(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    chat: ChatId,
    message: OwnerMessage,
    client_ref: Option<String>,
) -> Result<i64, StoreError> {
    let services = Arc::clone(&state.services);
    let now_ms = services.clock.now_ms();
    let (kind, body, content) = match message {
        OwnerMessage::Text(body) => ("text", body, None),
        OwnerMessage::Content(content) => (content.kind(), content.text(), Some(content)),
    };
    let outbound = NewOutbound {
        tenant: state.tenant.clone(),
        chat: chat.clone(),
        origin: OutboundOrigin::Owner,
        wamid: None,
        kind: kind.into(),
        body: Some(body.clone()),
        created_ms: now_ms,
        epoch: Some(state.epoch),
        client_ref,
        content: content.clone(),
    };
    let id = match services.store.record_outbound(&outbound).await? {
        InsertOutcome::Inserted { id } => id,
        // The same client_ref again: recorded (and sent, or pending) already.
        InsertOutcome::Duplicate { id } => {
            info!(tenant = %state.tenant, outbound_id = id, "owner message sent already under this client_ref");
            return Ok(id);
        }
    };
    match state.children.session() {
        Some(session) => {
            let job = SendJob {
                outbound_id: id,
                chat: chat.clone(),
                body,
                content,
                reply_to: None,
                attempts: 0,
                timing: None,
            };
            let _ = session.send_message(SessionMsg::Send(job));
        }
        None => {
            warn!(tenant = %state.tenant, outbound_id = id, "no session, owner message left pending")
        }
    }
    if let Ok(conversation) = conversation(myself, state, &chat).await {
        let _ = conversation.send_message(ConversationMsg::OwnerActivity { at_ms: now_ms });
    }
    Ok(id)
}

async fn reconcile(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    unsent: bool,
) -> Result<(), ActorProcessingErr> {
    let services = Arc::clone(&state.services);
    let since = services.clock.now_ms() - CUSTOMER_WINDOW_MS;
    let unanswered = services
        .store
        .unanswered_inbound(&state.tenant, since)
        .await?;
    if !unanswered.is_empty() {
        info!(tenant = %state.tenant, messages = unanswered.len(), "reconciling unanswered messages");
    }
    for message in unanswered {
        let conversation = conversation(myself, state, &message.chat).await?;
        let _ =
            conversation.send_message(ConversationMsg::Inbound(InboundItem::from_stored(&message)));
    }
    if !unsent {
        return Ok(());
    }
    let Some(session) = state.children.session() else {
        return Ok(());
    };
    for message in services.store.unsent_replies(&state.tenant).await? {
        let Some(body) = message.body.clone() else {
            continue;
        };
        let job = SendJob {
            outbound_id: message.id,
            chat: message.chat.clone(),
            body,
            content: message.content.clone(),
            reply_to: None,
            attempts: 0,
            timing: None,
        };
        let _ = session.send_message(SessionMsg::Send(job));
    }
    Ok(())
}
