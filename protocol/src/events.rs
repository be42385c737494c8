//! Events published for external services (JSON, on the subjects of
//! [`crate::subjects::tenant_event`] and [`crate::subjects::cluster_event`]).

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, TenantId};
use crate::subjects::EventKind;

/// The version of the event format, the `v` field of every event.
pub const EVENT_FORMAT_VERSION: u8 = 1;

/// One event, as external services receive it: on the events stream (published with
/// `Nats-Msg-Id` = `id`) and in HTTP event webhooks. `detail` carries the kind-specific
/// fields as a JSON object (`docs/protocol.md`, "Events").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and stable: a re-published event keeps it, so consumers deduplicate on it.
    /// A UUID v7 in simple form (32 hex digits, ordered by creation time).
    pub id: String,
    /// The format's version, [`EVENT_FORMAT_VERSION`].
    pub v: u8,
    /// What happened.
    pub kind: EventKind,
    /// The tenant concerned; `None` for cluster events.
    pub tenant: Option<TenantId>,
    /// The chat concerned, when there is one.
    pub chat: Option<ChatId>,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Kind-specific fields.
    pub detail: serde_json::Value,
}

impl Event {
    /// A tenant event with a new id.
    pub fn tenant(
        kind: EventKind,
        tenant: TenantId,
        at_ms: i64,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            tenant: Some(tenant),
            ..Self::cluster(kind, at_ms, detail)
        }
    }

    /// A cluster event (no tenant) with a new id.
    pub fn cluster(kind: EventKind, at_ms: i64, detail: serde_json::Value) -> Self {
        Self {
            id: new_event_id(),
            v: EVENT_FORMAT_VERSION,
            kind,
            tenant: None,
            chat: None,
            at_ms,
            detail,
        }
    }

    /// The same event about one chat.
    pub fn with_chat(mut self, chat: ChatId) -> Self {
        self.chat = Some(chat);
        self
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        match &self.tenant {
            Some(tenant) => crate::subjects::tenant_event(tenant, self.kind),
            None => crate::subjects::cluster_event(self.kind),
        }
    }

    /// The key events are ordered by: events with the same key reach every consumer in the
    /// order they happened. The chat for chat events, else the tenant, else the cluster.
    pub fn order_key(&self) -> String {
        match (&self.tenant, &self.chat) {
            (Some(tenant), Some(chat)) => format!("{tenant}/{chat}"),
            (Some(tenant), None) => tenant.to_string(),
            (None, _) => String::new(),
        }
    }
}

/// The header of an event webhook delivery that carries the event's id.
pub const EVENT_ID_HEADER: &str = "X-Salesboy-Event-Id";
/// The header of an event webhook delivery that carries when it was signed (unix seconds).
pub const EVENT_TIMESTAMP_HEADER: &str = "X-Salesboy-Timestamp";
/// The header of an event webhook delivery that carries its signature:
/// `sha256=<hex HMAC-SHA256 of timestamp + "." + body>`, keyed with the webhook's secret.
pub const EVENT_SIGNATURE_HEADER: &str = "X-Salesboy-Signature-256";

/// The bytes an event webhook signature covers: `timestamp + "." + body`.
fn signed_content(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(timestamp.len() + 1 + body.len());
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The [`EVENT_SIGNATURE_HEADER`] value of a delivery of `body` signed at `timestamp`.
pub fn sign_event(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    crate::whatsapp::signature::sign(secret, &signed_content(timestamp, body))
}

/// Checks a delivery's [`EVENT_SIGNATURE_HEADER`] value in constant time (what a receiver
/// does; it should also refuse timestamps far from its clock, against replays).
pub fn verify_event(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), crate::whatsapp::signature::SignatureError> {
    crate::whatsapp::signature::verify_signature(secret, &signed_content(timestamp, body), header)
}

/// A new event id: a UUID v7 in simple form.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// An alert: something an operator must look at. Published as the `detail` of an
/// [`EventKind::AlertRaised`] (and, when its condition is over, [`EventKind::AlertCleared`])
/// event, tagged by `"alert"` (`{"alert": "node_at_capacity",
/// "max_tenants": 100}`).
///
/// Some alerts report one occurrence; the others are conditions ([`AlertKind::is_condition`]):
/// raised once when the condition starts, cleared once when it is over. A condition is
/// identified by its kind, its event's tenant (tenant alerts) and its [`Alert::scope`] (the
/// error source, the node that is down), which its `alert_cleared` detail repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum Alert {
    /// A node refused to activate a tenant: it hosts `max_tenants` already.
    NodeAtCapacity {
        /// The node's limit.
        max_tenants: usize,
    },
    /// A tenant's child failed too often; the tenant stopped.
    TenantFailed {
        /// Which child (`session`, `responder`, `conversation`).
        child: String,
        /// Its last failure.
        reason: String,
    },
    /// Messages older than the 24-hour customer service window were left without a reply.
    OutsideWindow {
        /// How many.
        messages: usize,
    },
    /// The tenant's LLM configuration cannot be used; it answers offline.
    LlmConfigInvalid {
        /// Why.
        reason: String,
    },
    /// An LLM provider's quota is exhausted.
    LlmQuotaExhausted,
    /// The tenant's LLM cost this calendar month (UTC) reached its monthly spend cap: it
    /// answers offline until the month turns or the cap is raised.
    LlmSpendCapReached {
        /// The cap, in millionths of a US dollar.
        cap_micros: i64,
        /// What the tenant spent this month, in millionths of a US dollar.
        spent_micros: i64,
    },
    /// The tenant's WhatsApp access token was refused: its session is `auth_failed` and
    /// sends nothing until the number is updated.
    SessionAuthFailed {
        /// The number whose token was refused.
        phone_number_id: String,
    },
    /// WhatsApp banned a `web` tenant's number for a while: it sends nothing until the ban
    /// ends and it connects again (cleared on the next connection).
    SessionBanned {
        /// When the ban ends (unix ms), if WhatsApp said.
        expires_ms: Option<i64>,
    },
    /// A `web` tenant's number sent its daily cap of messages (UTC day): further sends wait,
    /// pending, for the next day (cleared when sending resumes).
    WebDailyCapReached {
        /// The cap, in messages per UTC day.
        cap: u32,
    },
    /// The node's resident memory passed its share of the node's memory limit: add a node.
    NodeMemoryHigh {
        /// Resident memory, in bytes.
        rss_bytes: u64,
        /// The limit (the cgroup's, or configured), in bytes.
        limit_bytes: u64,
        /// The share of the limit that raises the alert, in percent.
        threshold_percent: u64,
    },
    /// The active tenants of the cluster (one node alone: of the node) reached the share of
    /// its capacity (the sum of its live nodes' `max_tenants`) that raises the alert.
    TenantCapacityHigh {
        /// Tenants hosted.
        active_tenants: u64,
        /// Tenants the live nodes may host together.
        capacity: u64,
        /// The share that raises the alert, in percent.
        threshold_percent: u64,
    },
    /// The database grew past its threshold.
    DatabaseSizeHigh {
        /// Its size, in bytes.
        size_bytes: u64,
        /// The threshold, in bytes.
        threshold_bytes: u64,
    },
    /// The knowledge chunks of every tenant together passed their threshold.
    KnowledgeChunksHigh {
        /// Chunks stored.
        chunks: u64,
        /// The threshold.
        threshold_chunks: u64,
    },
    /// Too many of one kind of call failed over the window.
    ErrorRateHigh {
        /// `webhooks` (deliveries not persisted), `sends` (replies WhatsApp did not
        /// accept) or `llm_calls` (provider calls that failed).
        source: String,
        /// Failed calls in the window.
        failed: u64,
        /// Calls in the window.
        total: u64,
        /// The window, in seconds.
        window_secs: u64,
        /// The error rate that raises the alert, in percent.
        threshold_percent: u64,
    },
    /// A node of the cluster stopped renewing its membership (a clean drain is no alert).
    NodeDown {
        /// The node that is down.
        down_node: String,
    },
    /// The cluster has had no leader (or a leader that is not a live member) for longer
    /// than the threshold: nobody rebalances or fails tenants over.
    LeaderMissing {
        /// How long it has been missing, in seconds.
        missing_secs: u64,
    },
}

/// Which alert, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// [`Alert::NodeAtCapacity`].
    NodeAtCapacity,
    /// [`Alert::TenantFailed`].
    TenantFailed,
    /// [`Alert::OutsideWindow`].
    OutsideWindow,
    /// [`Alert::LlmConfigInvalid`].
    LlmConfigInvalid,
    /// [`Alert::LlmQuotaExhausted`].
    LlmQuotaExhausted,
    /// [`Alert::LlmSpendCapReached`].
    LlmSpendCapReached,
    /// [`Alert::SessionAuthFailed`].
    SessionAuthFailed,
    /// [`Alert::SessionBanned`].
    SessionBanned,
    /// [`Alert::WebDailyCapReached`].
    WebDailyCapReached,
    /// [`Alert::NodeMemoryHigh`].
    NodeMemoryHigh,
    /// [`Alert::TenantCapacityHigh`].
    TenantCapacityHigh,
    /// [`Alert::DatabaseSizeHigh`].
    DatabaseSizeHigh,
    /// [`Alert::KnowledgeChunksHigh`].
    KnowledgeChunksHigh,
    /// [`Alert::ErrorRateHigh`].
    ErrorRateHigh,
    /// [`Alert::NodeDown`].
    NodeDown,
    /// [`Alert::LeaderMissing`].
    LeaderMissing,
}

impl Alert {
    /// Which alert this is.
    pub fn kind(&self) -> AlertKind {
        match self {
            Self::NodeAtCapacity { .. } => AlertKind::NodeAtCapacity,
            Self::TenantFailed { .. } => AlertKind::TenantFailed,
            Self::OutsideWindow { .. } => AlertKind::OutsideWindow,
            Self::LlmConfigInvalid { .. } => AlertKind::LlmConfigInvalid,
            Self::LlmQuotaExhausted => AlertKind::LlmQuotaExhausted,
            Self::LlmSpendCapReached { .. } => AlertKind::LlmSpendCapReached,
            Self::SessionAuthFailed { .. } => AlertKind::SessionAuthFailed,
            Self::SessionBanned { .. } => AlertKind::SessionBanned,
            Self::WebDailyCapReached { .. } => AlertKind::WebDailyCapReached,
            Self::NodeMemoryHigh { .. } => AlertKind::NodeMemoryHigh,
            Self::TenantCapacityHigh { .. } => AlertKind::TenantCapacityHigh,
            Self::DatabaseSizeHigh { .. } => AlertKind::DatabaseSizeHigh,
            Self::KnowledgeChunksHigh { .. } => AlertKind::KnowledgeChunksHigh,
            Self::ErrorRateHigh { .. } => AlertKind::ErrorRateHigh,
            Self::NodeDown { .. } => AlertKind::NodeDown,
            Self::LeaderMissing { .. } => AlertKind::LeaderMissing,
        }
    }

    /// What tells this condition apart from others of its kind (besides the tenant), as
    /// the detail field that carries it: `("source", "sends")`, `("down_node", "n2")`.
    pub fn scope(&self) -> Option<(&'static str, String)> {
        let value = match self {
            Self::ErrorRateHigh { source, .. } => source.clone(),
            Self::NodeDown { down_node } => down_node.clone(),
            _ => return None,
        };
        self.kind().scope_field().map(|field| (field, value))
    }

    /// The alert as an event's `detail`.
    pub fn to_detail(&self) -> serde_json::Value {
        // A tagged enum of plain fields always serialises to a JSON object.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The alert an event's `detail` carries, if it is one this version knows.
    pub fn from_detail(detail: &serde_json::Value) -> Option<Self> {
        Self::deserialize(detail).ok()
    }
}

impl AlertKind {
    /// The name in the `"alert"` field and in the store's event records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeAtCapacity => "node_at_capacity",
            Self::TenantFailed => "tenant_failed",
            Self::OutsideWindow => "outside_window",
            Self::LlmConfigInvalid => "llm_config_invalid",
            Self::LlmQuotaExhausted => "llm_quota_exhausted",
            Self::LlmSpendCapReached => "llm_spend_cap_reached",
            Self::SessionAuthFailed => "session_auth_failed",
            Self::SessionBanned => "session_banned",
            Self::WebDailyCapReached => "web_daily_cap_reached",
            Self::NodeMemoryHigh => "node_memory_high",
            Self::TenantCapacityHigh => "tenant_capacity_high",
            Self::DatabaseSizeHigh => "database_size_high",
            Self::KnowledgeChunksHigh => "knowledge_chunks_high",
            Self::ErrorRateHigh => "error_rate_high",
            Self::NodeDown => "node_down",
            Self::LeaderMissing => "leader_missing",
        }
    }

    /// The alerts that are conditions (raised, then cleared), as opposed to occurrences.
    pub const CONDITIONS: [Self; 12] = [
        Self::LlmQuotaExhausted,
        Self::LlmSpendCapReached,
        Self::SessionAuthFailed,
        Self::SessionBanned,
        Self::WebDailyCapReached,
        Self::NodeMemoryHigh,
        Self::TenantCapacityHigh,
        Self::DatabaseSizeHigh,
        Self::KnowledgeChunksHigh,
        Self::ErrorRateHigh,
        Self::NodeDown,
        Self::LeaderMissing,
    ];

    /// The detail field that tells conditions of this kind apart ([`Alert::scope`]).
    pub fn scope_field(self) -> Option<&'static str> {
        match self {
            Self::ErrorRateHigh => Some("source"),
            Self::NodeDown => Some("down_node"),
            _ => None,
        }
    }

    /// Whether this alert is a condition: raised once, cleared once it is over.
    pub fn is_condition(self) -> bool {
        Self::CONDITIONS.contains(&self)
    }

    /// The kind named `name` (its [`AlertKind::as_str`]), if this version knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::deserialize(serde_json::Value::from(name)).ok()
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn events_round_trip_as_json_and_know_their_subject() {
        let event = Event::tenant(
            EventKind::ReplySent,
            TenantId::new("acme").unwrap(),
            1_700_000_000_000,
            serde_json::json!({"wamid": "wamid.X", "latency_ms": 12}),
        )
        .with_chat(ChatId::new("16505551234").unwrap());
        let bytes = Codec::Json.encode(&event).unwrap();
        assert_eq!(Codec::Json.decode::<Event>(&bytes).unwrap(), event);
        assert_eq!(event.subject(), "sb.v1.evt.t.acme.reply_sent");
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["kind"], "reply_sent");
        assert_eq!(json["v"], 1);
        assert_eq!(json["id"].as_str().map(str::len), Some(32));
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7, "the contract's fields, no others: {keys:?}");
        for key in ["id", "v", "kind", "tenant", "chat", "at_ms", "detail"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(event.order_key(), "acme/16505551234");
    }

    #[test]
    fn event_signatures_cover_the_timestamp_and_the_body() {
        let body = br#"{"id":"x"}"#;
        let signature = sign_event(b"whsec_test", "1764806400", body);
        // The documented recipe, computed independently.
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1764806400.");
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, expected);
        assert_eq!(
            verify_event(b"whsec_test", "1764806400", body, Some(&signature)),
            Ok(())
        );
        assert!(verify_event(b"whsec_test", "1764806401", body, Some(&signature)).is_err());
        assert!(verify_event(b"other", "1764806400", body, Some(&signature)).is_err());
        assert!(verify_event(b"whsec_test", "1764806400", b"{}", Some(&signature)).is_err());
    }

    #[test]
    fn event_ids_are_unique_and_ordered_by_creation() {
        let first = new_event_id();
        let second = new_event_id();
        assert_ne!(first, second);
        assert!(first < second, "{first} then {second}");
    }

    #[test]
    fn alerts_keep_their_json_shape() {
        let alert = Alert::NodeAtCapacity { max_tenants: 3 };
        let detail = alert.to_detail();
        assert_eq!(
            detail,
            serde_json::json!({"alert": "node_at_capacity", "max_tenants": 3})
        );
        assert_eq!(Alert::from_detail(&detail), Some(alert));
        let quota = serde_json::json!({"alert": "llm_quota_exhausted"});
        assert_eq!(
            Alert::from_detail(&quota).map(|a| a.kind()),
            Some(AlertKind::LlmQuotaExhausted)
        );
        assert_eq!(AlertKind::LlmQuotaExhausted.as_str(), "llm_quota_exhausted");
        let capped = Alert::LlmSpendCapReached {
            cap_micros: 5,
            spent_micros: 7,
        };
        assert_eq!(
            capped.to_detail(),
            serde_json::json!({"alert": "llm_spend_cap_reached", "cap_micros": 5, "spent_micros": 7})
        );
        assert_eq!(capped.kind().as_str(), "llm_spend_cap_reached");
        assert_eq!(Alert::from_detail(&serde_json::json!({"x": 1})), None);
    }

    #[test]
    fn condition_alerts_name_their_scope() {
        let errors = Alert::ErrorRateHigh {
            source: "sends".into(),
            failed: 3,
            total: 10,
            window_secs: 300,
            threshold_percent: 5,
        };
        assert_eq!(errors.scope(), Some(("source", "sends".to_owned())));
        assert_eq!(errors.to_detail()["alert"], "error_rate_high");
        let down = Alert::NodeDown {
            down_node: "n2".into(),
        };
        assert_eq!(
            down.to_detail(),
            serde_json::json!({"alert": "node_down", "down_node": "n2"})
        );
        assert!(AlertKind::NodeDown.is_condition());
        assert!(!AlertKind::NodeAtCapacity.is_condition());
        for kind in AlertKind::CONDITIONS {
            assert_eq!(AlertKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(AlertKind::from_name("nope"), None);
    }
}
