//! Events published for external services (JSON, on the subjects of
//! [`crate::subjects::tenant_event`] and [`crate::subjects::cluster_event`]).

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, NodeId, TenantId};
use crate::subjects::EventKind;

/// One event. `detail` carries the kind-specific fields as a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The tenant concerned, for tenant events.
    pub tenant: Option<TenantId>,
    /// The chat concerned, when there is one.
    pub chat: Option<ChatId>,
    /// The node that published it.
    pub node: Option<NodeId>,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Kind-specific fields.
    pub detail: serde_json::Value,
}

impl Event {
    /// A tenant event.
    pub fn tenant(
        kind: EventKind,
        tenant: TenantId,
        at_ms: i64,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            kind,
            tenant: Some(tenant),
            chat: None,
            node: None,
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
}

/// An alert: something an operator must look at. Published as the `detail` of an
/// [`EventKind::Alert`] event, tagged by `"alert"` (`{"alert": "node_at_capacity",
/// "max_tenants": 100}`), and kept in the store under its [`AlertKind`].
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
}

/// Which alert, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
        }
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
        }
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
        assert_eq!(Alert::from_detail(&serde_json::json!({"x": 1})), None);
    }
}
