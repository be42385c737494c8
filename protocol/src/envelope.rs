//! The node-to-node envelope: every message that crosses a process travels in one.

use serde::{Deserialize, Serialize};

use crate::address::ActorAddress;
use crate::ids::{MessageId, NodeId};

/// One cross-node message.
///
/// Receivers drop a second envelope with the same `id` (a bounded dedup window) and refuse
/// one whose `epoch` is older than the tenant's current placement epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message; the receivers' dedup key.
    pub id: MessageId,
    /// The node that sent it.
    pub sender: NodeId,
    /// The actor it is for.
    pub target: ActorAddress,
    /// The tenant's placement epoch the sender knew when sending.
    pub epoch: u64,
    /// What `payload` holds, so the receiver knows which type to decode.
    pub kind: MessageKind,
    /// The message itself, encoded with the codec named in the NATS header.
    pub payload: Vec<u8>,
}

/// The kind of message an envelope carries. New kinds are appended at the end: the binary
/// codec numbers variants by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    /// An inbound customer message, already persisted, for a conversation.
    Inbound,
    /// A delivery-status update of an outbound message.
    Status,
    /// A command for a conversation (pause, resume, owner send, …).
    ConversationCommand,
    /// A command for a WhatsApp session (send, start, stop, …).
    SessionCommand,
    /// A request for a reply from the responder.
    ResponderRequest,
    /// A tenant subtree snapshot (live migration).
    Snapshot,
    /// A node control request (activate, migrate-out, adopt, drain).
    Control,
    /// The receiver's acknowledgement of an envelope.
    Ack,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::ids::{ChatId, TenantId};

    #[test]
    fn envelopes_round_trip_in_both_codecs() {
        let envelope = Envelope {
            id: MessageId::from_u128(u128::MAX - 7),
            sender: NodeId::new("node-a").unwrap(),
            target: ActorAddress::Conversation(
                TenantId::new("acme").unwrap(),
                ChatId::new("1650").unwrap(),
            ),
            epoch: 12,
            kind: MessageKind::Inbound,
            payload: vec![0, 1, 2, 255],
        };
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode(&envelope).unwrap();
            assert_eq!(
                codec.decode::<Envelope>(&bytes).unwrap(),
                envelope,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn envelopes_with_invalid_ids_do_not_decode() {
        let json = r#"{"id":1,"sender":"bad.node","target":{"Session":"acme"},"epoch":1,"kind":"Ack","payload":[]}"#;
        assert!(Codec::Json.decode::<Envelope>(json.as_bytes()).is_err());
    }
}
