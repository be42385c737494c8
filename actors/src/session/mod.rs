//! `SessionActor`: a tenant's WhatsApp number. The only actor that holds its credentials.
//!
//! Outbound messages queue here and leave at most `messages_per_second` per second (a token
//! bucket, Meta's default limit is 80/s per number). A throughput error (130429) pauses the
//! whole queue; a pair-rate error (131056) delays that message and paces every send to that
//! customer (one per [`PAIR_RATE_GAP`]) for a minute, while other customers' messages go on;
//! transient failures (5xx, timeouts) retry with exponential backoff up to
//! `send_max_attempts`; a message outside the
//! 24-hour window (131047) or refused for another reason fails at once. A refused access
//! token puts the session in `auth_failed`, fails the queue and raises an event instead of
//! retrying forever. Sends run concurrently (each in its own task) so one slow request does
//! not hold the queue.
//!
//! A `web` session adds ban hygiene (`hygiene`): answer only, read then typing with a
//! delay before each send, a minimum gap per chat, a daily cap per number.
//!
//! The actor, its messages and the queue are here; `send` holds one send and what its outcome
//! does to the session, `bucket` the rate limit, `hygiene` the `web` rules.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use salesboy_protocol::events::{Alert, AlertKind};
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, Engine, TenantId, Wamid};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, warn};

mod bucket;
mod hygiene;
mod send;
mod web;

pub use hygiene::WebHygiene;
pub use send::Delivery;
pub use web::{MAX_RECONNECT_BACKOFF, PairingView, WebView};

use bucket::TokenBucket;
use hygiene::{BeforeSend, Hygiene};
use send::{deliver, fail, on_sent};
use web::WebLink;

use crate::handoff::{QueuedSend, SessionHandoff};
use crate::ports::WhatsAppConnection;
use crate::services::Services;
use crate::store::WhatsAppNumber;
use crate::tenant::TenantMsg;
use crate::web::WebError;

/// When a reply's customer message arrived and how long the LLM took: for the latency
/// metrics that split gateway time from LLM time.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTiming {
    /// When the first message of the batch was received (ms since the Unix epoch).
    pub first_received_ms: i64,
    /// When the debounce ended and the reply was asked for.
    pub debounced_at: Instant,
    /// Time spent in the LLM.
    pub llm_time: Duration,
}

/// An outbound message to send (already recorded as pending).
#[derive(Debug, Clone)]
pub struct SendJob {
    /// The outbound message's id in the store.
    pub outbound_id: i64,
    /// The customer.
    pub chat: ChatId,
    /// The text (for other content, its readable rendition).
    pub body: String,
    /// A template, interactive or media message to send instead of `body`.
    pub content: Option<OutboundContent>,
    /// The message to quote, if any.
    pub reply_to: Option<Wamid>,
    /// Attempts so far.
    pub attempts: u32,
    /// Latency bookkeeping of bot replies.
    pub timing: Option<ReplyTiming>,
}

/// The session's state, as events and `Observe` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Sending normally.
    Connected,
    /// Meta asked us to slow down; the queue waits.
    RateLimited,
    /// The access token was refused; nothing is sent until the tenant's credentials change.
    AuthFailed,
    /// `web`: the device is not linked; the owner scans the QR code or types the pairing
    /// code. Replies wait.
    Pairing,
    /// `web`: the connection dropped (reconnecting after a backoff), or pairing codes ran
    /// out (pairing must be asked for again). Replies wait.
    Disconnected,
    /// `web`: the device was unlinked (from the phone or `session.logout`); pairing again is
    /// needed.
    LoggedOut,
    /// `web`: WhatsApp banned the number for a while.
    TemporarilyBanned,
    /// `web`: another connection of the device took over (another node hosts the tenant).
    Replaced,
    /// `web`: WhatsApp refuses this client version; the node needs an update.
    Outdated,
}

impl SessionStatus {
    /// Whether messages may be sent in this state (a rate-limited session sends once its
    /// pause is over).
    fn may_send(self) -> bool {
        matches!(self, Self::Connected | Self::RateLimited)
    }
}

/// Messages of a session.
#[derive(Debug)]
pub enum SessionMsg {
    /// Queue a message.
    Send(SendJob),
    /// Mark an inbound message read and show the typing indicator.
    MarkRead {
        /// The inbound message.
        wamid: Wamid,
    },
    /// A send finished.
    Sent {
        /// The job.
        job: SendJob,
        /// How it ended.
        outcome: Delivery,
    },
    /// Send what the rate limit allows now.
    Pump,
    /// A send's backoff is over: queue it again.
    Retry(i64),
    /// Stop sending and hand over the queue once the sends under way have finished: the
    /// tenant is moving.
    Freeze(RpcReplyPort<SessionHandoff>),
    /// The move was called off: carry on.
    Thaw,
    /// The tenant's number or access token changed: send with the new credentials from now
    /// on (sends under way finish with the old ones); an `auth_failed` session connects again.
    UpdateNumber(WhatsAppNumber),
    /// The tenant's own ban hygiene changed (`None`: the node's from now on).
    UpdateHygiene(Option<WebHygiene>),
    /// The session's state.
    Observe(RpcReplyPort<SessionSnapshot>),
    /// `web`: what Web client number `connection` reports.
    Web {
        /// The client's connection number (events of replaced clients are ignored).
        connection: u64,
        /// What happened.
        event: crate::web::WebEvent,
    },
    /// `web`: the backoff after a disconnection of client `connection` is over.
    Reconnect {
        /// The client's connection number.
        connection: u64,
    },
    /// `web`: link the device with an 8-character pairing code for this phone number
    /// (digits, international format).
    PairCode {
        /// The account's phone number.
        phone: String,
        /// The code, or why not.
        reply: RpcReplyPort<Result<String, WebError>>,
    },
    /// `web`: start pairing again (new QR codes) after the codes ran out or the device was
    /// unlinked (nothing to do for a session that is linked or pairing); answers the
    /// session's account, pairing codes and ban.
    Pair(RpcReplyPort<Result<WebView, WebError>>),
    /// `web`: unlink the device.
    Logout(RpcReplyPort<Result<(), WebError>>),
}

/// What `Observe` shows of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// How the number is reached.
    #[serde(default)]
    pub engine: Engine,
    /// Connection state.
    pub status: SessionStatus,
    /// Messages waiting to be sent.
    pub queued: usize,
    /// Sends under way.
    pub in_flight: usize,
    /// Messages sent by this activation.
    pub sent: u64,
    /// Messages that failed for good.
    pub failed: u64,
    /// Retries.
    pub retries: u64,
    /// `web`: the linked account, the pairing codes, a ban's end; `null` for `cloud_api`.
    #[serde(default)]
    pub web: Option<WebView>,
}

/// How a session reaches its number.
#[derive(Debug, Clone)]
pub enum SessionEngine {
    /// Meta's Cloud API with this number's credentials.
    CloudApi(WhatsAppNumber),
    /// A WhatsApp Web client (`Services::web` opens it).
    Web,
}

/// Start-up arguments.
pub struct SessionArgs {
    /// The tenant.
    pub tenant: TenantId,
    /// The tenant's placement epoch.
    pub epoch: u64,
    /// How the number is reached.
    pub engine: SessionEngine,
    /// The tenant supervisor, which `web` sessions hand inbound messages to.
    pub tenant_ref: ActorRef<TenantMsg>,
    /// Shared services.
    pub services: Arc<Services>,
    /// State brought from the node the tenant moved from.
    pub restore: Option<SessionHandoff>,
    /// `web`: the tenant's own ban hygiene; `None` uses the node's.
    pub web_hygiene: Option<WebHygiene>,
}

/// A session's state.
pub struct SessionState {
    args: SessionArgs,
    connection: Arc<dyn WhatsAppConnection>,
    status: SessionStatus,
    queue: VecDeque<SendJob>,
    bucket: TokenBucket,
    blocked_until: Option<Instant>,
    pump_at: Option<Instant>,
    in_flight: usize,
    sent: u64,
    failed: u64,
    retries: u64,
    /// Ids of the jobs this session holds (queued, backing off or in flight): a second
    /// `Send` of one of them (reconciliation racing with the queue) is ignored.
    owned: HashSet<i64>,
    /// Jobs waiting out a retry backoff.
    delayed: HashMap<i64, SendJob>,
    frozen: bool,
    freeze_waiter: Option<RpcReplyPort<SessionHandoff>>,
    /// `web`: the client.
    web: Option<WebLink>,
    /// Per-customer pacing: no send to the chat before then.
    paced_until: HashMap<ChatId, Instant>,
    /// Customers Meta said we write to too often (131056), until when sends to them stay
    /// spaced by [`PAIR_RATE_GAP`].
    pair_limited: HashMap<ChatId, Instant>,
    /// `web`: the ban hygiene's counts and what it knows of the chats.
    hygiene: Hygiene,
    /// `web`: the ban hygiene's rules (the tenant's own, or the node's).
    hygiene_rules: WebHygiene,
}

/// Spacing of sends to one customer after Meta refused one for pair rate (131056): Meta's
/// guidance is about one message every 6 seconds to the same customer.
pub const PAIR_RATE_GAP: Duration = Duration::from_secs(6);

/// How long a customer stays paced after a pair-rate refusal.
pub const PAIR_RATE_PENALTY: Duration = Duration::from_secs(60);

/// The longest a session stays blocked (rate limited) on one say-so: a `Retry-After` from
/// Meta or the `blocked_for_ms` of a handoff from the bus. A longer pause is cut to this.
pub const MAX_BLOCKED: Duration = Duration::from_secs(3600);

/// When a session told to pause for `pause` at `now` may send again: at most
/// [`MAX_BLOCKED`] later, and never a panic on a huge value from the bus or from Meta.
fn blocked_until(now: Instant, pause: Duration) -> Instant {
    now.checked_add(pause.min(MAX_BLOCKED)).unwrap_or(now)
}

/// The session actor (behaviour only).
#[derive(Debug, Default)]
pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        mut args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let (connection, web) = match &args.engine {
            SessionEngine::CloudApi(number) => {
                (args.services.whatsapp.connect(&args.tenant, number), None)
            }
            SessionEngine::Web => {
                let connector = args
                    .services
                    .web
                    .clone()
                    .ok_or_else(|| WebError::Unsupported.to_string())?;
                let link = WebLink::open(&myself, connector, &args.tenant, args.epoch, 1);
                (link.connection(), Some(link))
            }
        };
        let bucket = TokenBucket::new(args.services.settings.messages_per_second);
        let restore = args.restore.take();
        let mut state = SessionState {
            args,
            connection,
            status: SessionStatus::Connected,
            queue: VecDeque::new(),
            bucket,
            blocked_until: None,
            pump_at: None,
            in_flight: 0,
            sent: 0,
            failed: 0,
            retries: 0,
            owned: HashSet::new(),
            delayed: HashMap::new(),
            frozen: false,
            freeze_waiter: None,
            web,
            paced_until: HashMap::new(),
            pair_limited: HashMap::new(),
            hygiene: Hygiene::new(seed()),
            hygiene_rules: WebHygiene::default(),
        };
        state.hygiene_rules = state.effective_hygiene(state.args.web_hygiene);
        if state.web.is_some() {
            // Connecting: `Connected` (or why not) follows.
            state.status = SessionStatus::Disconnected;
        }
        if let Some(restore) = restore {
            if state.web.is_none() {
                state.status = restore.status;
            }
            if restore.blocked_for_ms > 0 {
                let pause = Duration::from_millis(restore.blocked_for_ms);
                state.blocked_until = Some(blocked_until(Instant::now(), pause));
            }
            for queued in restore.queue {
                state.owned.insert(queued.outbound_id);
                state.queue.push_back(SendJob {
                    outbound_id: queued.outbound_id,
                    chat: queued.chat,
                    body: queued.body,
                    content: None,
                    reply_to: queued.reply_to,
                    attempts: queued.attempts,
                    timing: None,
                });
            }
            pump(&myself, &mut state);
        }
        if state.web.is_some() {
            resume_daily_count(&mut state).await;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        web::connect(&myself, state).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        web::shut_down(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Send(job) => {
                if state
                    .args
                    .services
                    .sends
                    .knows(state.args.epoch, job.outbound_id)
                {
                    debug!(tenant = %state.args.tenant, outbound_id = job.outbound_id, "send under way or done on this node");
                } else if !state.owned.insert(job.outbound_id) {
                    debug!(tenant = %state.args.tenant, outbound_id = job.outbound_id, "send already queued");
                } else if state.status == SessionStatus::AuthFailed {
                    state.owned.remove(&job.outbound_id);
                    fail(state, &job, "auth_failed", None).await?;
                } else {
                    state.queue.push_back(job);
                    pump(&myself, state);
                }
            }
            SessionMsg::Retry(outbound_id) => {
                if let Some(job) = state.delayed.remove(&outbound_id) {
                    state.queue.push_back(job);
                    pump(&myself, state);
                }
            }
            SessionMsg::Freeze(reply) => {
                state.frozen = true;
                if state.in_flight == 0 {
                    hand_over(state, reply).await;
                } else {
                    state.freeze_waiter = Some(reply);
                }
            }
            SessionMsg::Thaw => {
                state.frozen = false;
                state.freeze_waiter = None;
                if state.web.is_some() {
                    // Its client was shut down for the move: a new one connects.
                    web::reopen(&myself, state).await;
                }
                pump(&myself, state);
            }
            SessionMsg::MarkRead { wamid } => {
                if state.web.is_some() {
                    // A `web` send marks the chat's last message read, with typing, right
                    // before it goes (ban hygiene): nothing to do now.
                } else if state.status != SessionStatus::AuthFailed {
                    let connection = Arc::clone(&state.connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.mark_read(&wamid, true).await {
                            debug!(%error, "mark read failed");
                        }
                    });
                }
            }
            SessionMsg::Pump => {
                state.pump_at = None;
                pump(&myself, state);
            }
            SessionMsg::UpdateNumber(number) => {
                if state.web.is_some() {
                    debug!(tenant = %state.args.tenant, "a web session has no Cloud API number: ignored");
                    return Ok(());
                }
                state.connection = state
                    .args
                    .services
                    .whatsapp
                    .connect(&state.args.tenant, &number);
                state.args.engine = SessionEngine::CloudApi(number);
                if state.status == SessionStatus::AuthFailed {
                    set_status(state, SessionStatus::Connected);
                }
                pump(&myself, state);
            }
            SessionMsg::Sent { job, outcome } => {
                state.in_flight -= 1;
                on_sent(&myself, state, job, outcome).await?;
                if state.frozen
                    && state.in_flight == 0
                    && let Some(waiter) = state.freeze_waiter.take()
                {
                    hand_over(state, waiter).await;
                }
                pump(&myself, state);
            }
            SessionMsg::UpdateHygiene(own) => {
                state.args.web_hygiene = own;
                state.hygiene_rules = state.effective_hygiene(own);
                pump(&myself, state);
            }
            SessionMsg::Observe(reply) => {
                let _ = reply.send(SessionSnapshot {
                    engine: if state.web.is_some() {
                        Engine::Web
                    } else {
                        Engine::CloudApi
                    },
                    status: state.status,
                    queued: state.queue.len(),
                    in_flight: state.in_flight,
                    sent: state.sent,
                    failed: state.failed,
                    retries: state.retries,
                    web: state.web.as_ref().map(WebLink::view),
                });
            }
            SessionMsg::Web { connection, event } => {
                web::on_event(&myself, state, connection, event).await?;
            }
            SessionMsg::Reconnect { connection } => {
                web::on_reconnect(&myself, state, connection).await;
            }
            SessionMsg::PairCode { phone, reply } => {
                let _ = reply.send(web::pair_code(state, &phone).await);
            }
            SessionMsg::Pair(reply) => {
                if web::may_pair_again(state) {
                    web::reopen(&myself, state).await;
                }
                let answer = state
                    .web
                    .as_ref()
                    .map(WebLink::view)
                    .ok_or(WebError::NoSession);
                let _ = reply.send(answer);
            }
            SessionMsg::Logout(reply) => {
                let _ = reply.send(web::logout(state).await);
            }
        }
        Ok(())
    }
}

/// A `web` session's daily cap counts the day's sends from before it started (on another
/// node, or before a restart): every outbound message of the tenant recorded since the UTC
/// day began. It errs towards the cap: messages from the phone and failed sends count, and
/// a reply recorded but not yet sent counts again when it goes out.
async fn resume_daily_count(state: &mut SessionState) {
    let services = &state.args.services;
    let now_ms = services.clock.now_ms();
    let today = services
        .store
        .usage_between(
            &state.args.tenant,
            hygiene::day_start_ms(now_ms),
            now_ms + 1,
        )
        .await;
    match today {
        Ok(usage) => {
            let sent = u32::try_from(usage.messages_out.max(0)).unwrap_or(u32::MAX);
            state.hygiene.resume_day(now_ms, sent);
        }
        Err(error) => warn!(
            tenant = %state.args.tenant,
            %error,
            "today's sends could not be counted: the daily cap counts from zero"
        ),
    }
}

/// Answers a freeze: a `web` session shuts its client down first (writing its state to the
/// store), so the next host loads all of it: break, then make.
async fn hand_over(state: &mut SessionState, reply: RpcReplyPort<SessionHandoff>) {
    web::shut_down(state).await;
    let _ = reply.send(state.handoff());
}

impl SessionState {
    /// The ban hygiene to keep: the tenant's own, else the node's.
    fn effective_hygiene(&self, own: Option<WebHygiene>) -> WebHygiene {
        own.unwrap_or(self.args.services.settings.web_hygiene)
    }

    /// The queue to hand over (nothing is in flight when this is called). Jobs with
    /// [`SendJob::content`] stay behind: they are pending in the store, and the new host's
    /// activation sends them from there (the handoff's format carries text only).
    fn handoff(&self) -> SessionHandoff {
        let queued = |job: &SendJob| QueuedSend {
            outbound_id: job.outbound_id,
            chat: job.chat.clone(),
            body: job.body.clone(),
            reply_to: job.reply_to.clone(),
            attempts: job.attempts,
        };
        let text_only = |job: &&SendJob| job.content.is_none();
        let mut queue: Vec<QueuedSend> = self.queue.iter().filter(text_only).map(queued).collect();
        let mut delayed: Vec<&SendJob> = self.delayed.values().filter(text_only).collect();
        delayed.sort_by_key(|job| job.outbound_id);
        queue.extend(delayed.into_iter().map(queued));
        let now = Instant::now();
        let blocked_for_ms = self
            .blocked_until
            .filter(|until| *until > now)
            .map_or(0, |until| {
                u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX)
            });
        SessionHandoff {
            queue,
            blocked_for_ms,
            status: self.status,
        }
    }
}

/// Starts as many queued sends as the limits allow; schedules the next pump otherwise.
fn pump(myself: &ActorRef<SessionMsg>, state: &mut SessionState) {
    if state.frozen {
        return;
    }
    if state.web.is_some() && !state.status.may_send() {
        // Replies wait (in the store too) for the Web client to connect.
        return;
    }
    let now = Instant::now();
    if let Some(until) = state.blocked_until {
        if until > now {
            schedule_pump(myself, state, until - now);
            return;
        }
        state.blocked_until = None;
        set_status(state, SessionStatus::Connected);
    }
    state.paced_until.retain(|_, until| *until > now);
    state.pair_limited.retain(|_, until| *until > now);
    // Jobs for customers that must wait keep their place; the others go.
    let mut waiting = VecDeque::new();
    let hygiene = state.hygiene_rules;
    while let Some(job) = state.queue.pop_front() {
        if state.paced_until.contains_key(&job.chat) {
            waiting.push_back(job);
            continue;
        }
        if state.web.is_some()
            && let Some(wait) = over_daily_cap(state, &hygiene)
        {
            state.queue.push_front(job);
            schedule_pump(myself, state, wait);
            break;
        }
        if let Err(wait) = state.bucket.take(now) {
            state.queue.push_front(job);
            schedule_pump(myself, state, wait);
            break;
        }
        if state.pair_limited.contains_key(&job.chat) {
            state
                .paced_until
                .insert(job.chat.clone(), now + PAIR_RATE_GAP);
        }
        let Some(claim) = state
            .args
            .services
            .sends
            .begin(state.args.epoch, job.outbound_id)
        else {
            debug!(tenant = %state.args.tenant, outbound_id = job.outbound_id, "send under way or done on this node");
            state.owned.remove(&job.outbound_id);
            continue;
        };
        state.in_flight += 1;
        let before = state.web.is_some().then(|| {
            let before = BeforeSend {
                check_contact: hygiene.answer_only && !state.hygiene.known_contact(&job.chat),
                last_inbound: state.hygiene.last_inbound(&job.chat),
                typing: hygiene.typing_delay(job.body.chars().count(), state.hygiene.draw()),
            };
            state.hygiene.count();
            // The next message to the chat waits for this one's typing and the gap.
            let gap = before.typing + hygiene.min_gap();
            if !gap.is_zero() {
                let until = now + gap;
                let paced = state.paced_until.entry(job.chat.clone()).or_insert(until);
                *paced = (*paced).max(until);
            }
            before
        });
        let connection = Arc::clone(&state.connection);
        let services = Arc::clone(&state.args.services);
        let (tenant, epoch) = (state.args.tenant.clone(), state.args.epoch);
        let myself = myself.clone();
        tokio::spawn(async move {
            let ready = match before {
                Some(before) => {
                    before
                        .run(connection.as_ref(), &services, &tenant, &job.chat)
                        .await
                }
                None => Ok(()),
            };
            let outcome = match ready {
                Ok(()) => deliver(connection.as_ref(), &services, &tenant, epoch, &job).await,
                Err(reason) => Delivery::Refused(reason),
            };
            match outcome {
                Delivery::Sent(_) | Delivery::Fenced => claim.finish(),
                Delivery::Failed(_) | Delivery::Refused(_) => drop(claim),
            }
            let _ = myself.send_message(SessionMsg::Sent { job, outcome });
        });
    }
    if !waiting.is_empty() {
        waiting.append(&mut state.queue);
        state.queue = waiting;
        if let Some(next) = state.paced_until.values().min().copied() {
            schedule_pump(myself, state, next.saturating_duration_since(now));
        }
    }
}

/// `web`: how long until sends may go on, if the number sent its daily cap today. The
/// `web_daily_cap_reached` alert is raised on reaching the cap and cleared on the next day.
fn over_daily_cap(state: &mut SessionState, hygiene: &WebHygiene) -> Option<Duration> {
    let services = Arc::clone(&state.args.services);
    let tenant = &state.args.tenant;
    let wait = state
        .hygiene
        .over_cap(hygiene.daily_cap, services.clock.now_ms());
    match (wait.is_some(), state.hygiene.cap_alerted) {
        (true, false) => {
            warn!(%tenant, cap = hygiene.daily_cap, "daily cap of the web number reached: sends wait for the next UTC day");
            state.hygiene.cap_alerted = true;
            let alert = Alert::WebDailyCapReached {
                cap: hygiene.daily_cap,
            };
            services.publish(services.alert(tenant, &alert));
        }
        (false, true) => {
            state.hygiene.cap_alerted = false;
            services.publish(services.alert_cleared(tenant, AlertKind::WebDailyCapReached));
        }
        _ => {}
    }
    wait
}

/// A seed for the session's random draws (the standard library's random hash keys).
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn schedule_pump(myself: &ActorRef<SessionMsg>, state: &mut SessionState, after: Duration) {
    let at = Instant::now() + after;
    if state.pump_at.is_some_and(|scheduled| scheduled <= at) {
        return;
    }
    state.pump_at = Some(at);
    myself.send_after(after, || SessionMsg::Pump);
}

/// Moves the session to `status` and publishes it (`session_status`); nothing when it is in
/// it already, except `pairing` (published again with each new QR code) and a `web`
/// disconnection with a new reason.
fn set_status(state: &mut SessionState, status: SessionStatus) {
    let news =
        status == SessionStatus::Pairing || state.web.as_ref().is_some_and(WebLink::has_reason);
    if state.status == status && !news {
        return;
    }
    let was_auth_failed = state.status == SessionStatus::AuthFailed;
    state.status = status;
    let mut detail = serde_json::Map::new();
    detail.insert("status".into(), serde_json::json!(status));
    let phone_number_id = match &state.args.engine {
        SessionEngine::CloudApi(number) => {
            let id = number.phone_number_id.as_str();
            detail.insert("phone_number_id".into(), id.into());
            id
        }
        SessionEngine::Web => "",
    };
    if let Some(link) = state.web.as_mut() {
        link.status_detail(status, &mut detail);
    }
    let services = &state.args.services;
    let tenant = &state.args.tenant;
    services.publish(services.tenant_event(
        EventKind::SessionStatus,
        tenant,
        serde_json::Value::Object(detail),
    ));
    // The `session_auth_failed` condition: raised on entering `auth_failed`, cleared on
    // leaving it (the number's token was updated).
    if status == SessionStatus::AuthFailed {
        let alert = Alert::SessionAuthFailed {
            phone_number_id: phone_number_id.to_owned(),
        };
        services.publish(services.alert(tenant, &alert));
    } else if was_auth_failed {
        services.publish(services.alert_cleared(tenant, AlertKind::SessionAuthFailed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_pause_is_capped_not_a_panic() {
        let now = Instant::now();
        let pause = Duration::from_millis(u64::MAX);
        assert_eq!(blocked_until(now, pause), now + MAX_BLOCKED);
        assert_eq!(blocked_until(now, Duration::MAX), now + MAX_BLOCKED);
        let short = Duration::from_millis(250);
        assert_eq!(blocked_until(now, short), now + short);
    }
}
