//! What the dashboard's live streams tell: message rates and reply latency second by second,
//! counted from the events they watch ([`Pulse`]); which events belong on the cluster's
//! timeline ([`on_timeline`]); the node's monitoring figures ([`FigureReader`]).
//!
//! Reply latency here is what a customer sees: from a message received to the bot's next
//! reply in that chat (event times, so it includes the debounce and the LLM's answer).

use std::collections::HashMap;

use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use serde::Serialize;

/// Most chats a [`Pulse`] remembers waiting for a reply; beyond it new ones are not timed.
const MAX_WAITING: usize = 20_000;

/// How long a chat's wait for a bot reply is timed: a chat the bot does not answer (paused,
/// stopped) is forgotten after it.
const MAX_WAIT_MS: i64 = 10 * 60 * 1000;

/// Every how many seconds a [`Pulse`] forgets the waits longer than [`MAX_WAIT_MS`].
const FORGET_EVERY_SECONDS: u64 = 60;

/// One second of traffic, as a live stream sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PulseSecond {
    /// Customer messages received.
    pub received: u64,
    /// Bot replies sent.
    pub replies: u64,
    /// Owner messages sent (from the API, the dashboard or the phone).
    pub owner: u64,
    /// The median reply latency of the replies sent, in ms.
    pub reply_p50_ms: Option<u64>,
    /// The longest reply latency of the replies sent, in ms.
    pub reply_max_ms: Option<u64>,
}

/// Counts events as they come and hands out one [`PulseSecond`] at a time.
#[derive(Debug, Default)]
pub struct Pulse {
    current: PulseSecond,
    latencies: Vec<u64>,
    /// When each chat's oldest unanswered message arrived (unix ms), by tenant and chat.
    waiting: HashMap<(String, String), i64>,
    /// The newest event time seen (unix ms).
    latest_ms: i64,
    /// Seconds handed out.
    seconds: u64,
}

impl Pulse {
    /// Counts `event`.
    pub fn observe(&mut self, event: &Event) {
        self.latest_ms = self.latest_ms.max(event.at_ms);
        let chat = match (&event.tenant, &event.chat) {
            (Some(tenant), Some(chat)) => Some((tenant.to_string(), chat.to_string())),
            _ => None,
        };
        match event.kind {
            EventKind::MessageReceived => {
                self.current.received += 1;
                if let Some(chat) = chat
                    && self.waiting.len() < MAX_WAITING
                {
                    self.waiting.entry(chat).or_insert(event.at_ms);
                }
            }
            EventKind::ReplySent => {
                self.current.replies += 1;
                if let Some(since) = chat.and_then(|chat| self.waiting.remove(&chat)) {
                    self.latencies
                        .push(u64::try_from(event.at_ms - since).unwrap_or(0));
                }
            }
            EventKind::OwnerMessageSent => {
                self.current.owner += 1;
                // The owner answered: the chat no longer waits for the bot.
                if let Some(chat) = chat {
                    self.waiting.remove(&chat);
                }
            }
            _ => {}
        }
    }

    /// The second counted since the last call; counting starts again.
    pub fn take_second(&mut self) -> PulseSecond {
        self.seconds += 1;
        if self.seconds.is_multiple_of(FORGET_EVERY_SECONDS) {
            let oldest = self.latest_ms - MAX_WAIT_MS;
            self.waiting.retain(|_, since| *since >= oldest);
        }
        let mut second = std::mem::take(&mut self.current);
        if !self.latencies.is_empty() {
            self.latencies.sort_unstable();
            second.reply_p50_ms = Some(self.latencies[self.latencies.len() / 2]);
            second.reply_max_ms = self.latencies.last().copied();
            self.latencies.clear();
        }
        second
    }
}

/// The seed's monitoring figures of the node that answers, as a live stream sends them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeFigures {
    /// CPU used by the node's process since the last reading, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Its resident memory in bytes.
    pub rss_bytes: Option<u64>,
    /// The memory it may use (its cgroup's limit, else the machine's), in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Tenants hosted (each with its WhatsApp session).
    pub sessions: usize,
    /// The database's size in bytes.
    pub database_size_bytes: Option<u64>,
    /// Knowledge passages stored, every tenant's.
    pub knowledge_passages: Option<u64>,
    /// Failed calls since the last reading, in percent of calls, by kind (`webhooks`: deliveries
    /// from Meta not persisted; `sends`: messages WhatsApp refused for good; `llm_calls`).
    /// `None` where nothing was called.
    pub error_percent: ErrorPercent,
}

/// Failed calls in percent, by kind; `None` where nothing was called.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErrorPercent {
    /// Webhook deliveries from Meta that could not be persisted.
    pub webhooks: Option<f64>,
    /// Messages WhatsApp refused for good.
    pub sends: Option<f64>,
    /// LLM provider calls that failed.
    pub llm_calls: Option<f64>,
}

/// How old the figures may be before they are read again (two queries and `/proc`).
pub const FIGURES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The node's [`NodeFigures`], read at most every [`FIGURES_EVERY`] however many streams ask:
/// they share one reading. Rates are over the time since the reading before.
#[derive(Debug, Default)]
pub struct FigureReader {
    state: tokio::sync::Mutex<ReaderState>,
}

/// The last reading's counters and the figures made of it.
#[derive(Debug, Default)]
struct ReaderState {
    last: Option<Reading>,
    figures: NodeFigures,
}

/// The counters of one reading.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: std::time::Instant,
    cpu_seconds: Option<f64>,
    webhooks: (u64, u64),
    sends: (u64, u64),
    llm_calls: (u64, u64),
}

impl FigureReader {
    /// The figures of `api`'s node, read again when the last reading is older than
    /// [`FIGURES_EVERY`].
    pub async fn current(&self, api: &super::Api) -> NodeFigures {
        let mut state = self.state.lock().await;
        if state
            .last
            .is_some_and(|last| last.at.elapsed() < FIGURES_EVERY)
        {
            return state.figures.clone();
        }
        let counters = &api.node.services().counters;
        let now = Reading {
            at: std::time::Instant::now(),
            cpu_seconds: crate::process::cpu_seconds(),
            webhooks: counters.webhooks.totals(),
            sends: counters.sends.totals(),
            llm_calls: counters.llm_calls.totals(),
        };
        let last = state.last.replace(now);
        let cpu_percent = last.and_then(|last| {
            let elapsed = now.at.duration_since(last.at).as_secs_f64();
            let used = now.cpu_seconds? - last.cpu_seconds?;
            (elapsed > 0.0).then(|| (used / elapsed * 100.0).max(0.0))
        });
        // The first reading has nothing to compare with: no rate yet.
        let error_percent = |now: (u64, u64), last: Option<(u64, u64)>| {
            let last = last?;
            let (ok, failed) = (now.0.saturating_sub(last.0), now.1.saturating_sub(last.1));
            let total = ok + failed;
            (total > 0).then(|| failed as f64 / total as f64 * 100.0)
        };
        state.figures = NodeFigures {
            cpu_percent,
            rss_bytes: crate::process::rss_bytes(),
            memory_limit_bytes: crate::alerts::measure::memory_limit_bytes(),
            sessions: api.node.observe().tenants,
            database_size_bytes: api.sql.database_size_bytes().await.ok(),
            knowledge_passages: api.sql.knowledge_chunks().await.ok(),
            error_percent: ErrorPercent {
                webhooks: error_percent(now.webhooks, last.map(|l| l.webhooks)),
                sends: error_percent(now.sends, last.map(|l| l.sends)),
                llm_calls: error_percent(now.llm_calls, last.map(|l| l.llm_calls)),
            },
        };
        state.figures.clone()
    }
}

/// Whether `event` belongs on the cluster's timeline: joins, departures, migrations, alerts,
/// session changes and rejected deliveries (not the message traffic, which [`Pulse`] counts).
pub fn on_timeline(event: &Event) -> bool {
    matches!(
        event.kind,
        EventKind::NodeJoined
            | EventKind::NodeLeft
            | EventKind::TenantMigrated
            | EventKind::AlertRaised
            | EventKind::AlertCleared
            | EventKind::SessionStatus
            | EventKind::MessageRejected
    )
}

#[cfg(test)]
mod tests {
    use salesboy_protocol::{ChatId, TenantId};

    use super::*;

    fn event(kind: EventKind, chat: &str, at_ms: i64) -> Event {
        Event::tenant(
            kind,
            TenantId::new("acme").unwrap(),
            at_ms,
            serde_json::json!({}),
        )
        .with_chat(ChatId::new(chat).unwrap())
    }

    #[test]
    fn counts_a_second_and_times_replies_from_the_first_unanswered_message() {
        let mut pulse = Pulse::default();
        pulse.observe(&event(EventKind::MessageReceived, "111", 1_000));
        pulse.observe(&event(EventKind::MessageReceived, "111", 1_500));
        pulse.observe(&event(EventKind::MessageReceived, "222", 1_000));
        pulse.observe(&event(EventKind::ReplySent, "111", 3_000));
        pulse.observe(&event(EventKind::ReplySent, "222", 1_400));
        pulse.observe(&event(EventKind::OwnerMessageSent, "333", 1_400));
        let second = pulse.take_second();
        assert_eq!(
            second,
            PulseSecond {
                received: 3,
                replies: 2,
                owner: 1,
                reply_p50_ms: Some(2_000),
                reply_max_ms: Some(2_000),
            }
        );
        assert_eq!(pulse.take_second(), PulseSecond::default());
    }

    #[test]
    fn a_chat_the_bot_never_answers_is_forgotten() {
        let mut pulse = Pulse::default();
        pulse.observe(&event(EventKind::MessageReceived, "111", 1_000));
        pulse.observe(&event(
            EventKind::MessageReceived,
            "222",
            1_000 + MAX_WAIT_MS + 1,
        ));
        for _ in 0..FORGET_EVERY_SECONDS {
            pulse.take_second();
        }
        pulse.observe(&event(EventKind::ReplySent, "111", 2_000 + MAX_WAIT_MS));
        assert_eq!(
            pulse.take_second().reply_p50_ms,
            None,
            "the old wait was forgotten"
        );
        pulse.observe(&event(EventKind::ReplySent, "222", 2_000 + MAX_WAIT_MS));
        assert_eq!(pulse.take_second().reply_p50_ms, Some(999));
    }

    #[test]
    fn an_owner_answer_ends_the_wait() {
        let mut pulse = Pulse::default();
        pulse.observe(&event(EventKind::MessageReceived, "111", 1_000));
        pulse.observe(&event(EventKind::OwnerMessageSent, "111", 2_000));
        pulse.observe(&event(EventKind::ReplySent, "111", 9_000));
        let second = pulse.take_second();
        assert_eq!(second.reply_p50_ms, None);
        assert_eq!(second.replies, 1);
    }

    #[test]
    fn the_timeline_keeps_cluster_changes_not_traffic() {
        assert!(on_timeline(&Event::cluster(
            EventKind::NodeLeft,
            1,
            serde_json::json!({})
        )));
        assert!(!on_timeline(&event(EventKind::MessageReceived, "111", 1)));
    }
}
