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
}
