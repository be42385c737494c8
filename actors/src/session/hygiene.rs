//! Ban hygiene of a `web` session (docs/engines.md, "Ban hygiene"): unofficial clients get
//! numbers banned when they behave like bots, so a `web` session by default
//!
//! - answers only: it never writes first to a chat that has not written to us;
//! - marks the customer's last message read, shows typing, and waits a delay that grows with
//!   the reply's length plus a random part before each send (in the send's own task: other
//!   chats' sends go on meanwhile);
//! - leaves at least `min_gap_per_chat_ms` between two messages to one chat (the session's
//!   per-chat pacing);
//! - sends at most `daily_cap` messages per UTC day: over it, sends wait (pending) for the
//!   next day and `web_daily_cap_reached` is raised once.
//!
//! A session starts the day's count from the chat log (every outbound message of the
//! tenant recorded since the UTC day began), so the cap holds across restarts and moves;
//! from there it counts its sends in memory.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::ports::WhatsAppConnection;
use crate::services::Services;
use crate::store::Direction;

/// A day, in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// How many of a chat's latest messages are looked through for one from the customer.
const CONTACT_LOOKBACK: u32 = 200;

/// Ban hygiene of `web` sessions: node defaults in `Settings::web_hygiene`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebHygiene {
    /// Never write first: a send to a chat that has never written to us fails
    /// (`not_a_contact`).
    pub answer_only: bool,
    /// Typing time per character of the message, in milliseconds.
    pub typing_ms_per_char: u32,
    /// The shortest typing time, in milliseconds.
    pub typing_min_ms: u32,
    /// The longest typing time (before the random part), in milliseconds.
    pub typing_max_ms: u32,
    /// A random extra of up to this many milliseconds on top of the typing time.
    pub typing_jitter_ms: u32,
    /// The shortest time between two messages to one chat, in milliseconds.
    pub min_gap_per_chat_ms: u32,
    /// Messages sent per number and UTC day at most; 0: no cap.
    pub daily_cap: u32,
}

impl Default for WebHygiene {
    fn default() -> Self {
        Self {
            answer_only: true,
            typing_ms_per_char: 40,
            typing_min_ms: 1_000,
            // With the jitter at most 4 s: a move's freeze waits for sends under way
            // (`Settings::freeze_timeout`, 5 s), typing included.
            typing_max_ms: 3_000,
            typing_jitter_ms: 1_000,
            min_gap_per_chat_ms: 3_000,
            daily_cap: 1_000,
        }
    }
}

impl WebHygiene {
    /// Why these settings cannot be used, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.typing_min_ms > self.typing_max_ms {
            return Err("typing_min_ms must not exceed typing_max_ms".into());
        }
        const HOUR_MS: u32 = 3_600_000;
        for (name, value) in [
            ("typing_max_ms", self.typing_max_ms),
            ("typing_jitter_ms", self.typing_jitter_ms),
            ("min_gap_per_chat_ms", self.min_gap_per_chat_ms),
        ] {
            if value > HOUR_MS {
                return Err(format!("{name} must be at most {HOUR_MS}"));
            }
        }
        Ok(())
    }

    /// How long to show typing before sending `chars` characters; `draw` is a random
    /// number.
    pub fn typing_delay(&self, chars: usize, draw: u64) -> Duration {
        let per_char = u64::from(self.typing_ms_per_char)
            .saturating_mul(u64::try_from(chars).unwrap_or(u64::MAX));
        let base = per_char.clamp(
            u64::from(self.typing_min_ms),
            u64::from(self.typing_max_ms.max(self.typing_min_ms)),
        );
        let jitter = match self.typing_jitter_ms {
            0 => 0,
            most => draw % (u64::from(most) + 1),
        };
        Duration::from_millis(base + jitter)
    }

    /// The minimum gap between two messages to one chat.
    pub fn min_gap(&self) -> Duration {
        Duration::from_millis(u64::from(self.min_gap_per_chat_ms))
    }
}

/// What a `web` session keeps for its hygiene.
#[derive(Debug)]
pub(super) struct Hygiene {
    /// The UTC day (days since the epoch) `sent_today` counts.
    day: i64,
    /// Sends started that day.
    sent_today: u32,
    /// `web_daily_cap_reached` is raised.
    pub(super) cap_alerted: bool,
    /// `session_banned` is raised.
    pub(super) ban_alerted: bool,
    /// Chats known to have written to us.
    contacts: HashSet<ChatId>,
    /// Each chat's last inbound message, to mark read and type on before a send.
    last_inbound: HashMap<ChatId, Wamid>,
    /// The state of the random draws.
    seed: u64,
}

impl Hygiene {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            day: 0,
            sent_today: 0,
            cap_alerted: false,
            ban_alerted: false,
            contacts: HashSet::new(),
            last_inbound: HashMap::new(),
            seed,
        }
    }

    /// Starts the count of the day holding `now_ms` at `sent` (the sends of that day before
    /// this session started).
    pub(super) fn resume_day(&mut self, now_ms: i64, sent: u32) {
        self.day = now_ms.div_euclid(DAY_MS);
        self.sent_today = sent;
    }

    /// A message arrived from `chat`.
    pub(super) fn inbound(&mut self, chat: &ChatId, wamid: &Wamid) {
        self.contacts.insert(chat.clone());
        self.last_inbound.insert(chat.clone(), wamid.clone());
    }

    /// The last message of `chat` the session knows of.
    pub(super) fn last_inbound(&self, chat: &ChatId) -> Option<Wamid> {
        self.last_inbound.get(chat).cloned()
    }

    /// Whether `chat` is known to have written to us (without asking the store).
    pub(super) fn known_contact(&self, chat: &ChatId) -> bool {
        self.contacts.contains(chat)
    }

    /// At `now_ms`: `None` if one more send fits in the day's cap, otherwise how long until
    /// the next UTC day. A new day starts the count again.
    pub(super) fn over_cap(&mut self, cap: u32, now_ms: i64) -> Option<Duration> {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            self.day = day;
            self.sent_today = 0;
        }
        if cap == 0 || self.sent_today < cap {
            return None;
        }
        let next_day_ms = (day + 1) * DAY_MS - now_ms;
        Some(Duration::from_millis(
            u64::try_from(next_day_ms).unwrap_or(0).max(1),
        ))
    }

    /// A send started.
    pub(super) fn count(&mut self) {
        self.sent_today = self.sent_today.saturating_add(1);
    }

    /// A send counted by [`Hygiene::count`] was refused before it went out.
    pub(super) fn uncount(&mut self) {
        self.sent_today = self.sent_today.saturating_sub(1);
    }

    /// A random number (splitmix64).
    pub(super) fn draw(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// When the UTC day holding `now_ms` began.
pub(super) fn day_start_ms(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS) * DAY_MS
}

/// What a `web` send does before it goes out, in its own task.
pub(super) struct BeforeSend {
    /// The send must be refused unless the chat has written to us (not known yet).
    pub(super) check_contact: bool,
    /// The customer's last message, to mark read with typing.
    pub(super) last_inbound: Option<Wamid>,
    /// How long to show typing.
    pub(super) typing: Duration,
}

impl BeforeSend {
    /// Checks the chat is a contact, marks its last message read with typing, and waits
    /// the typing delay. `Err` names why the send is refused.
    pub(super) async fn run(
        self,
        connection: &dyn WhatsAppConnection,
        services: &Services,
        tenant: &TenantId,
        chat: &ChatId,
    ) -> Result<(), &'static str> {
        if self.check_contact && !has_written(services, tenant, chat).await? {
            return Err("not_a_contact");
        }
        if let Some(wamid) = &self.last_inbound
            && let Err(error) = connection.mark_read(wamid, true).await
        {
            debug!(%tenant, %error, "typing indicator failed");
        }
        tokio::time::sleep(self.typing).await;
        Ok(())
    }
}

/// Whether the store holds a message from `chat` among its latest.
async fn has_written(
    services: &Services,
    tenant: &TenantId,
    chat: &ChatId,
) -> Result<bool, &'static str> {
    match services
        .store
        .conversation_messages(tenant, chat, None, CONTACT_LOOKBACK)
        .await
    {
        Ok(messages) => Ok(messages
            .iter()
            .any(|message| message.direction == Direction::Inbound)),
        Err(error) => {
            debug!(%tenant, %error, "cannot tell whether the chat wrote to us: refused");
            Err("contact_unknown")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_grows_with_length_within_bounds() {
        let hygiene = WebHygiene {
            typing_max_ms: 8_000,
            typing_jitter_ms: 0,
            ..WebHygiene::default()
        };
        assert_eq!(hygiene.typing_delay(1, 7), Duration::from_millis(1_000));
        assert_eq!(hygiene.typing_delay(100, 7), Duration::from_millis(4_000));
        assert_eq!(
            hygiene.typing_delay(10_000, 7),
            Duration::from_millis(8_000)
        );
        let jittery = WebHygiene {
            typing_max_ms: 8_000,
            typing_jitter_ms: 1_500,
            ..WebHygiene::default()
        };
        let delay = jittery.typing_delay(100, 123_456);
        assert!(delay >= Duration::from_millis(4_000) && delay <= Duration::from_millis(5_500));
        // The defaults stay within a move's freeze timeout.
        let longest = WebHygiene::default().typing_delay(100_000, 99);
        assert!(longest <= Duration::from_millis(4_000), "{longest:?}");
    }

    #[test]
    fn the_cap_holds_until_the_next_utc_day() {
        let mut hygiene = Hygiene::new(1);
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        assert_eq!(hygiene.over_cap(2, noon), None);
        hygiene.count();
        assert_eq!(hygiene.over_cap(2, noon), None);
        hygiene.count();
        let wait = hygiene.over_cap(2, noon).expect("over the cap");
        assert_eq!(
            wait,
            Duration::from_millis(u64::try_from(DAY_MS / 2).unwrap())
        );
        assert_eq!(hygiene.over_cap(2, noon + DAY_MS / 2), None, "a new day");
        assert_eq!(hygiene.over_cap(0, noon + DAY_MS / 2), None, "no cap");
    }

    #[test]
    fn invalid_settings_are_named() {
        let bad = WebHygiene {
            typing_min_ms: 9_000,
            ..WebHygiene::default()
        };
        assert!(bad.validate().unwrap_err().contains("typing_min_ms"));
        assert!(WebHygiene::default().validate().is_ok());
    }
}
