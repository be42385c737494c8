//! A tenant supervisor's children: starting them, and [`Children`], the one place that
//! knows which actor is which child — with what depends on it, the refs the conversations
//! share ([`TenantLinks`]) and the node's gauge of active conversations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use salesboy_protocol::{ChatId, Engine};
use tokio::time::Instant;
use tracing::warn;

use super::{ChildKind, TenantMsg, TenantState};
use crate::conversation::{
    ConversationActor, ConversationArgs, ConversationMsg, ConversationStart,
};
use crate::links::TenantLinks;
use crate::responder::{ResponderActor, ResponderArgs, ResponderMsg};
use crate::services::Services;
use crate::session::{SessionActor, SessionArgs, SessionEngine, SessionMsg};

/// A tenant's running children.
pub(super) struct Children {
    services: Arc<Services>,
    links: Arc<TenantLinks>,
    session: Option<ActorId>,
    responder: Option<ActorId>,
    conversations: HashMap<ChatId, LiveConversation>,
    chats: HashMap<ActorId, ChatId>,
}

/// An active conversation, and when it was last handed something to do.
struct LiveConversation {
    actor: ActorRef<ConversationMsg>,
    /// When it started or was last looked up to be handed a message ([`Children::hand`]).
    /// Its own last activity is never earlier, so one handed a message less than a
    /// conversation's idle time ago is not idle.
    handed_at: Instant,
}

impl Children {
    /// No children yet.
    pub(super) fn new(services: Arc<Services>) -> Self {
        Self {
            services,
            links: Arc::new(TenantLinks::default()),
            session: None,
            responder: None,
            conversations: HashMap::new(),
            chats: HashMap::new(),
        }
    }

    /// The refs the conversations share.
    pub(super) fn links(&self) -> &Arc<TenantLinks> {
        &self.links
    }

    /// The session, unless there is none (no number, or restarting).
    pub(super) fn session(&self) -> Option<ActorRef<SessionMsg>> {
        self.links.session()
    }

    /// Whether a session runs.
    pub(super) fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// The responder, unless it is restarting.
    pub(super) fn responder(&self) -> Option<ActorRef<ResponderMsg>> {
        self.links.responder()
    }

    /// The chat's conversation, if it is active.
    pub(super) fn conversation(&self, chat: &ChatId) -> Option<&ActorRef<ConversationMsg>> {
        self.conversations.get(chat).map(|live| &live.actor)
    }

    /// The chat's conversation, if it is active, to hand it a message: it counts as busy
    /// from now ([`Children::possibly_idle`]).
    pub(super) fn hand(&mut self, chat: &ChatId) -> Option<&ActorRef<ConversationMsg>> {
        let live = self.conversations.get_mut(chat)?;
        live.handed_at = Instant::now();
        Some(&live.actor)
    }

    /// The active conversations.
    pub(super) fn conversations(&self) -> impl Iterator<Item = &ActorRef<ConversationMsg>> {
        self.conversations.values().map(|live| &live.actor)
    }

    /// The active conversations that may have been idle for `idle_for`: those not handed a
    /// message for that long. (Asking every one of thousands each sweep woke them all at
    /// once, and everything else waited tens of milliseconds.)
    pub(super) fn possibly_idle(
        &self,
        idle_for: Duration,
    ) -> impl Iterator<Item = &ActorRef<ConversationMsg>> {
        self.conversations
            .values()
            .filter(move |live| live.handed_at.elapsed() >= idle_for)
            .map(|live| &live.actor)
    }

    /// How many conversations are active.
    pub(super) fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    fn add_session(&mut self, session: ActorRef<SessionMsg>) {
        self.session = Some(session.get_id());
        self.links.set_session(Some(session));
    }

    fn add_responder(&mut self, responder: ActorRef<ResponderMsg>) {
        self.responder = Some(responder.get_id());
        self.links.set_responder(Some(responder));
    }

    /// A conversation spawned at `spawned_at` (taken before it started, so before its own
    /// first activity).
    fn add_conversation(
        &mut self,
        chat: ChatId,
        conversation: ActorRef<ConversationMsg>,
        spawned_at: Instant,
    ) {
        self.chats.insert(conversation.get_id(), chat.clone());
        self.conversations.insert(
            chat,
            LiveConversation {
                actor: conversation,
                handed_at: spawned_at,
            },
        );
        self.services
            .counters
            .conversations
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets an exited child; which kind it was, if it was one of these.
    pub(super) fn forget(&mut self, cell: &ActorCell) -> Option<ChildKind> {
        let id = cell.get_id();
        if self.session == Some(id) {
            self.session = None;
            self.links.set_session(None);
            return Some(ChildKind::Session);
        }
        if self.responder == Some(id) {
            self.responder = None;
            self.links.set_responder(None);
            return Some(ChildKind::Responder);
        }
        let chat = self.chats.remove(&id)?;
        self.conversations.remove(&chat);
        self.services
            .counters
            .conversations
            .fetch_sub(1, Ordering::Relaxed);
        Some(ChildKind::Conversation)
    }

    /// Forgets every child (the tenant stopped, and they with it).
    pub(super) fn forget_all(&mut self) {
        let active = self.conversations.len() as u64;
        self.services
            .counters
            .conversations
            .fetch_sub(active, Ordering::Relaxed);
        self.conversations.clear();
        self.chats.clear();
        self.session = None;
        self.responder = None;
        self.links.set_session(None);
        self.links.set_responder(None);
    }
}

/// Starts the session or the responder (conversations start on demand:
/// [`conversation`]). A tenant without a WhatsApp number runs no session.
pub(super) async fn spawn_child(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    kind: ChildKind,
) -> Result<(), ActorProcessingErr> {
    let supervisor = myself.get_cell();
    match kind {
        ChildKind::Session => {
            let engine = match state.record.engine {
                Engine::CloudApi => {
                    let Some(number) = state.record.numbers.first().cloned() else {
                        warn!(tenant = %state.tenant, "tenant has no whatsapp number, replies stay pending");
                        return Ok(());
                    };
                    SessionEngine::CloudApi(number)
                }
                Engine::Web if state.services.web.is_none() => {
                    warn!(tenant = %state.tenant, "this node was built without the web engine: the web tenant's replies stay pending");
                    return Ok(());
                }
                Engine::Web => SessionEngine::Web,
            };
            let args = SessionArgs {
                tenant: state.tenant.clone(),
                epoch: state.epoch,
                engine,
                tenant_ref: myself.clone(),
                services: Arc::clone(&state.services),
                restore: state.restore_session.take(),
                web_hygiene: state.record.web_hygiene,
            };
            let (session, _) = Actor::spawn_linked(None, SessionActor, args, supervisor).await?;
            state.children.add_session(session);
        }
        ChildKind::Responder => {
            let args = ResponderArgs {
                tenant: state.tenant.clone(),
                system_prompt: state.record.system_prompt.clone(),
                llm_config: state.record.llm_config.clone(),
                spend_cap_micros: state.record.llm_monthly_spend_cap_micros,
                knowledge_version: state.record.knowledge_version,
                tenant_created_ms: state.record.created_ms,
                services: Arc::clone(&state.services),
            };
            let (responder, _) =
                Actor::spawn_linked(None, ResponderActor, args, supervisor).await?;
            state.children.add_responder(responder);
        }
        ChildKind::Conversation => {}
    }
    Ok(())
}

/// The chat's conversation, to hand it a message ([`Children::hand`]), started if it is
/// not active.
pub(super) async fn conversation(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    chat: &ChatId,
) -> Result<ActorRef<ConversationMsg>, ActorProcessingErr> {
    if let Some(existing) = state.children.hand(chat) {
        return Ok(existing.clone());
    }
    spawn_conversation(myself, state, chat, ConversationStart::Load).await
}

/// Starts a conversation, its state from where `start` says.
pub(super) async fn spawn_conversation(
    myself: &ActorRef<TenantMsg>,
    state: &mut TenantState,
    chat: &ChatId,
    start: ConversationStart,
) -> Result<ActorRef<ConversationMsg>, ActorProcessingErr> {
    let args = ConversationArgs {
        tenant: state.tenant.clone(),
        chat: chat.clone(),
        epoch: state.epoch,
        services: Arc::clone(&state.services),
        links: Arc::clone(state.children.links()),
        start,
    };
    let spawned_at = Instant::now();
    let (conversation, _) =
        Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await?;
    state
        .children
        .add_conversation(chat.clone(), conversation.clone(), spawned_at);
    Ok(conversation)
}
