//! `ConversationActor`: one customer's chat with a tenant.
//!
//! Messages are processed in arrival order. Inbound messages collect in a batch until the
//! customer pauses for `debounce`; the batch is then answered once: the responder writes the
//! reply, the reply is **recorded** (linked to every message of the batch) and only then
//! handed to the session to send. While a reply is being written, new messages form the next
//! batch. When the bot is paused in this chat (owner takeover), or it has nothing to answer
//! (a reaction), the batch is dismissed instead: recorded as handled without a reply. A
//! message the customer sent (Meta's `timestamp`) more than 24 hours ago, or longer ago than
//! the node's maximum message age, is dismissed on its own and the rest of its batch
//! answered: an old or replayed delivery is stored, never answered.
//!
//! The actor is passivated when idle; its durable state (pause, last inbound, history) lives
//! in the store and is reloaded when it starts again.
//!
//! The actor, its messages and state are here; `batch` holds a batch's way from the debounce
//! to a recorded reply or a dismissal.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, warn};

mod batch;

use batch::{finish_batch, start_batch};

use crate::command::CommandReply;
use crate::error::TenantError;
use crate::handoff::ConversationHandoff;
use crate::links::TenantLinks;
use crate::ports::{Speaker, Turn};
use crate::services::Services;
use crate::stop::StopReason;
use crate::store::{Direction, Predecessor, StoreError, StoredMessage};

/// An inbound message handed to a conversation (already persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundItem {
    /// The stored message's id.
    pub id: i64,
    /// Meta's id of the message (the reply quotes it; read receipts name it).
    pub wamid: Option<Wamid>,
    /// The text to answer, if the message has one.
    pub text: Option<String>,
    /// When the ingress received it (ms since the Unix epoch).
    pub received_ms: i64,
    /// When the customer sent it: Meta's `timestamp` (ms since the Unix epoch). The 24-hour
    /// customer service window and the maximum message age count from it.
    pub sent_ms: i64,
    /// The chat's inbound message stored before it, as the ingress that stored it saw it.
    /// Kept on this node: not sent to another one nor carried by a hand-over (it arrives
    /// there as unknown), so a message that crossed nodes is checked against the store.
    #[serde(skip)]
    pub predecessor: Predecessor,
}

impl InboundItem {
    /// The item for a stored inbound message.
    pub fn from_stored(message: &StoredMessage) -> Self {
        Self {
            id: message.id,
            wamid: message.wamid.clone(),
            text: message.body.clone(),
            received_ms: message.created_ms,
            // Stored without Meta's timestamp (before it was kept): the receive time.
            sent_ms: message.sent_ms.unwrap_or(message.created_ms),
            predecessor: Predecessor::Unknown,
        }
    }
}

/// Why a batch was handled without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DismissReason {
    /// The owner took over the chat (the bot is paused there).
    BotPaused,
    /// The message was sent (Meta's `timestamp`) more than 24 hours ago: the customer
    /// service window is closed.
    OutsideWindow,
    /// Nothing to answer (a reaction, an empty text).
    NothingToAnswer,
    /// The message was sent (Meta's `timestamp`) longer ago than the node's maximum message
    /// age ([`Settings::max_message_age`](crate::services::Settings::max_message_age)): an
    /// old or replayed delivery is stored, not answered.
    TooOld,
}

impl DismissReason {
    /// A short stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BotPaused => "bot_paused",
            Self::OutsideWindow => "outside_window",
            Self::NothingToAnswer => "nothing_to_answer",
            Self::TooOld => "too_old",
        }
    }
}

/// Messages of a conversation.
#[derive(Debug)]
pub enum ConversationMsg {
    /// A persisted inbound message.
    Inbound(InboundItem),
    /// The debounce timer of generation `0` fired.
    DebounceElapsed(u64),
    /// The responder's answer to batch `batch`.
    ReplyReady {
        /// The batch token.
        batch: u64,
        /// The reply text, or why none could be written.
        reply: Result<String, String>,
        /// The knowledge passages the reply was written from.
        passages: Vec<crate::store::PassageChoice>,
        /// Time spent in the LLM.
        llm_time: Duration,
    },
    /// Pause the bot until `until_ms` (`None` resumes it).
    SetPaused {
        /// Until when; [`crate::store::PAUSED_INDEFINITELY`] for no end.
        until_ms: Option<i64>,
        /// Done, or why not.
        reply: RpcReplyPort<Result<CommandReply, TenantError>>,
    },
    /// The owner wrote in this chat (API send or WhatsApp echo): the bot steps back.
    OwnerActivity {
        /// When the owner wrote.
        at_ms: i64,
    },
    /// Stop if idle for `idle_for` with nothing pending.
    Passivate {
        /// The idle threshold.
        idle_for: Duration,
    },
    /// The conversation's state.
    Observe(RpcReplyPort<ConversationSnapshot>),
    /// Stop starting replies and hand over the state once the reply under way (if any) is
    /// recorded: the tenant is moving.
    Freeze(RpcReplyPort<ConversationHandoff>),
    /// The move was called off: carry on.
    Thaw,
}

/// What `Observe` shows of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSnapshot {
    /// The customer's chat.
    pub chat: ChatId,
    /// Messages waiting for the customer to stop typing.
    pub pending: usize,
    /// Whether a reply is being written.
    pub replying: bool,
    /// The bot is paused until then.
    pub bot_paused_until_ms: Option<i64>,
    /// Lines of history held.
    pub history_len: usize,
    /// Replies recorded by this activation.
    pub replies: u64,
    /// Batches dismissed by this activation.
    pub dismissed: u64,
}

/// Start-up arguments.
pub struct ConversationArgs {
    /// The tenant.
    pub tenant: TenantId,
    /// The chat.
    pub chat: ChatId,
    /// The tenant's placement epoch.
    pub epoch: u64,
    /// Shared services.
    pub services: Arc<Services>,
    /// The tenant's session and responder.
    pub links: Arc<TenantLinks>,
    /// Where its state comes from.
    pub start: ConversationStart,
}

/// Where a starting conversation's state comes from.
#[derive(Debug)]
pub enum ConversationStart {
    /// The store: pause, history, and the unanswered messages left out of the history.
    Load,
    /// The node the tenant moved from.
    Restore(ConversationHandoff),
    /// Nowhere: the chat is new (the ingress created it), so it has no history and no
    /// pause, and a first batch that starts with the chat's first message has nothing to
    /// check against the store.
    NewChat,
}

/// How far a conversation knows its chat's inbound messages to be handled. A batch whose
/// messages continue from there, one after the other (each one's [`Predecessor`] known
/// from the ingress), needs no check against the store: nothing of the chat can be left
/// unanswered before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Not known (the conversation was loaded or restored, or a batch was left unfinished):
    /// the next batch is checked against the store.
    Unknown,
    /// The chat had no inbound message before this conversation started.
    Nothing,
    /// Every inbound message of the chat up to this id is answered or dismissed.
    Through(i64),
}

impl Settled {
    /// Whether `items` (sorted by id) continue from here, each the successor of the one
    /// before.
    fn continued_by(self, items: &[InboundItem]) -> bool {
        let mut expected = match self {
            Self::Unknown => return false,
            Self::Nothing => Predecessor::FirstInChat,
            Self::Through(id) => Predecessor::Message(id),
        };
        for item in items {
            if item.predecessor != expected {
                return false;
            }
            expected = Predecessor::Message(item.id);
        }
        !items.is_empty()
    }
}

/// The batch a reply is being written for.
#[derive(Debug)]
struct InFlight {
    token: u64,
    items: Vec<InboundItem>,
    question: String,
    debounced_at: Instant,
    /// What the conversation has handled once this batch is: every message of the chat up
    /// to its newest, unless part of it was left unfinished on the way here.
    settles: Settled,
}

/// A conversation's state.
pub struct ConversationState {
    args: ConversationArgs,
    pending: Vec<InboundItem>,
    in_flight: Option<InFlight>,
    generation: u64,
    paused_until_ms: Option<i64>,
    history: VecDeque<Turn>,
    last_activity: Instant,
    replies: u64,
    dismissed: u64,
    frozen: bool,
    freeze_waiter: Option<RpcReplyPort<ConversationHandoff>>,
    /// How far the chat's inbound messages are known to be handled.
    settled: Settled,
}

/// The conversation actor (behaviour only).
#[derive(Debug, Default)]
pub struct ConversationActor;

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mut args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        match std::mem::replace(&mut args.start, ConversationStart::Load) {
            ConversationStart::Restore(restore) => {
                let mut state =
                    ConversationState::new(args, restore.history.into(), restore.paused_until_ms);
                state.pending = restore.pending;
                if !state.pending.is_empty() {
                    arm_debounce(&myself, &mut state);
                }
                return Ok(state);
            }
            ConversationStart::NewChat => {
                let mut state = ConversationState::new(args, VecDeque::new(), None);
                state.settled = Settled::Nothing;
                return Ok(state);
            }
            ConversationStart::Load => {}
        }
        let store = &args.services.store;
        let conversation = store.conversation(&args.tenant, &args.chat).await?;
        let window = args.services.settings.history_window;
        // Messages not answered yet are the next batch's question, not history: leaving them
        // in would show the LLM the customer's question twice.
        let unanswered: HashSet<i64> = store
            .unanswered_inbound_in_chat(&args.tenant, &args.chat)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let history = store
            .recent_history(&args.tenant, &args.chat, window)
            .await?
            .into_iter()
            .filter(|m| !unanswered.contains(&m.id))
            .filter_map(|m| {
                let speaker = match m.direction {
                    Direction::Inbound => Speaker::Customer,
                    Direction::Outbound => Speaker::Business,
                };
                m.body.map(|text| Turn { speaker, text })
            })
            .collect();
        let paused_until_ms = conversation.and_then(|c| c.bot_paused_until_ms);
        Ok(ConversationState::new(args, history, paused_until_ms))
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConversationMsg::Inbound(item) => {
                state.last_activity = Instant::now();
                // A message held (waiting or in the batch under way) is not taken twice: the
                // sweep and late or repeated hand-offs offer it again. One no longer held is
                // taken again (its batch was answered elsewhere in part, say); the batch's
                // check against the store drops it if it was answered. Nothing is kept per
                // message past its batch, so a long conversation does not grow.
                if !state.holds(item.id) {
                    state.pending.push(item);
                    if !state.frozen {
                        arm_debounce(&myself, state);
                    }
                }
            }
            ConversationMsg::DebounceElapsed(generation) => {
                if !state.frozen
                    && generation == state.generation
                    && state.in_flight.is_none()
                    && !state.pending.is_empty()
                {
                    start_batch(&myself, state).await?;
                }
            }
            ConversationMsg::ReplyReady {
                batch,
                reply,
                passages,
                llm_time,
            } => {
                let Some(in_flight) = state.in_flight.take_if(|f| f.token == batch) else {
                    return Ok(());
                };
                finish_batch(&myself, state, in_flight, reply, passages, llm_time).await?;
                if let Some(waiter) = state.freeze_waiter.take() {
                    let _ = waiter.send(state.handoff());
                } else if !state.pending.is_empty() {
                    arm_debounce(&myself, state);
                }
            }
            ConversationMsg::Freeze(reply) => {
                state.frozen = true;
                if state.in_flight.is_some() {
                    state.freeze_waiter = Some(reply);
                } else {
                    let _ = reply.send(state.handoff());
                }
            }
            ConversationMsg::Thaw => {
                state.frozen = false;
                state.freeze_waiter = None;
                // The chat may have been handled elsewhere while the move was under way.
                state.settled = Settled::Unknown;
                if !state.pending.is_empty() {
                    arm_debounce(&myself, state);
                }
            }
            ConversationMsg::SetPaused { until_ms, reply } => {
                state.last_activity = Instant::now();
                let result = set_paused(&myself, state, until_ms).await;
                let result = result
                    .map(|()| CommandReply::Done)
                    .map_err(|e| TenantError::store(&state.args.tenant, e));
                let _ = reply.send(result);
            }
            ConversationMsg::OwnerActivity { at_ms } => {
                state.last_activity = Instant::now();
                let takeover =
                    i64::try_from(state.args.services.settings.owner_takeover.as_millis())
                        .unwrap_or(i64::MAX);
                let until = at_ms.saturating_add(takeover);
                if state.paused_until_ms.is_none_or(|current| current < until) {
                    set_paused(&myself, state, Some(until)).await?;
                }
            }
            ConversationMsg::Passivate { idle_for } => {
                let idle = state.last_activity.elapsed() >= idle_for;
                if idle && !state.frozen && state.pending.is_empty() && state.in_flight.is_none() {
                    debug!(tenant = %state.args.tenant, chat = %state.args.chat, "passivating idle conversation");
                    StopReason::Passivated.stop(&myself);
                }
            }
            ConversationMsg::Observe(reply) => {
                let _ = reply.send(ConversationSnapshot {
                    chat: state.args.chat.clone(),
                    pending: state.pending.len(),
                    replying: state.in_flight.is_some(),
                    bot_paused_until_ms: state.paused_until_ms,
                    history_len: state.history.len(),
                    replies: state.replies,
                    dismissed: state.dismissed,
                });
            }
        }
        Ok(())
    }
}

impl ConversationState {
    fn new(args: ConversationArgs, history: VecDeque<Turn>, paused_until_ms: Option<i64>) -> Self {
        Self {
            args,
            pending: Vec::new(),
            in_flight: None,
            generation: 0,
            paused_until_ms,
            history,
            last_activity: Instant::now(),
            replies: 0,
            dismissed: 0,
            frozen: false,
            freeze_waiter: None,
            settled: Settled::Unknown,
        }
    }

    /// Whether message `id` waits in the batch or is being answered.
    fn holds(&self, id: i64) -> bool {
        self.pending.iter().any(|i| i.id == id)
            || self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.items.iter().any(|i| i.id == id))
    }

    /// The state to hand over (no reply is under way when this is called).
    fn handoff(&self) -> ConversationHandoff {
        ConversationHandoff {
            chat: self.args.chat.clone(),
            pending: self.pending.clone(),
            history: self.history.iter().cloned().collect(),
            paused_until_ms: self.paused_until_ms,
        }
    }
}

/// (Re)starts the debounce timer; only the newest generation's timer counts.
fn arm_debounce(myself: &ActorRef<ConversationMsg>, state: &mut ConversationState) {
    state.generation += 1;
    let generation = state.generation;
    let debounce = state.args.services.settings.debounce;
    if debounce.is_zero() {
        let _ = myself.send_message(ConversationMsg::DebounceElapsed(generation));
    } else {
        myself.send_after(debounce, move || {
            ConversationMsg::DebounceElapsed(generation)
        });
    }
}

fn paused_at(state: &ConversationState, now_ms: i64) -> bool {
    state.paused_until_ms.is_some_and(|until| now_ms < until)
}

async fn set_paused(
    myself: &ActorRef<ConversationMsg>,
    state: &mut ConversationState,
    until_ms: Option<i64>,
) -> Result<(), StoreError> {
    let services = Arc::clone(&state.args.services);
    let result = services
        .store
        .set_bot_paused(
            &state.args.tenant,
            &state.args.chat,
            until_ms,
            services.clock.now_ms(),
            state.args.epoch,
        )
        .await;
    if let Err(StoreError::StaleEpoch { .. }) = &result {
        let _ = fenced(myself, state);
    }
    result?;
    state.paused_until_ms = until_ms;
    Ok(())
}

/// Another node owns the tenant now: stop without writing anything more.
fn fenced(
    myself: &ActorRef<ConversationMsg>,
    state: &ConversationState,
) -> Result<(), ActorProcessingErr> {
    warn!(tenant = %state.args.tenant, chat = %state.args.chat, epoch = state.args.epoch, "fenced by a newer epoch, stopping");
    StopReason::Fenced.stop(myself);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, predecessor: Predecessor) -> InboundItem {
        InboundItem {
            id,
            wamid: None,
            text: Some("hi".into()),
            received_ms: 0,
            sent_ms: 0,
            predecessor,
        }
    }

    #[test]
    fn a_batch_skips_the_store_only_when_each_message_follows_the_one_before() {
        use Predecessor::{FirstInChat, Message, Unknown};
        let chain = [item(3, Message(1)), item(5, Message(3))];
        assert!(Settled::Through(1).continued_by(&chain));
        // Something between the last one handled and the batch, or before a new chat's first.
        assert!(!Settled::Through(2).continued_by(&chain));
        assert!(!Settled::Nothing.continued_by(&chain));
        assert!(Settled::Nothing.continued_by(&[item(3, FirstInChat), item(5, Message(3))]));
        // A gap inside the batch (message 4 not held).
        assert!(!Settled::Through(1).continued_by(&[item(3, Message(1)), item(5, Message(4))]));
        // An unknown predecessor (from the store or another node), an unknown start, nothing.
        assert!(!Settled::Through(1).continued_by(&[item(3, Message(1)), item(5, Unknown)]));
        assert!(!Settled::Unknown.continued_by(&chain));
        assert!(!Settled::Through(1).continued_by(&[]));
        // A message handled already, offered again.
        assert!(!Settled::Through(3).continued_by(&[item(3, Message(1))]));
    }

    #[test]
    fn a_predecessor_stays_on_its_node() {
        let known = item(3, Predecessor::Message(1));
        for codec in [
            salesboy_protocol::Codec::Bincode,
            salesboy_protocol::Codec::Json,
        ] {
            let bytes = codec.encode(&known).unwrap();
            assert_eq!(bytes, codec.encode(&item(3, Predecessor::Unknown)).unwrap());
            let decoded: InboundItem = codec.decode(&bytes).unwrap();
            assert_eq!(decoded.predecessor, Predecessor::Unknown);
        }
    }
}
