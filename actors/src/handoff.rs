//! The state a tenant subtree carries when it moves between nodes (live migration,
//! architecture §7): pending work, debounce buffers, history windows, takeover pauses, the
//! session's queue and rate-limit pause, and messages held while it was frozen.
//!
//! Travels node to node in bincode: plain structs and externally tagged enums only.

use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};

use crate::command::TenantCommand;
use crate::conversation::InboundItem;
use crate::ports::Turn;
use crate::session::SessionStatus;

/// A frozen tenant subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantHandoff {
    /// The tenant.
    pub tenant: TenantId,
    /// The epoch it was hosted under on the node it leaves.
    pub epoch: u64,
    /// Its active conversations.
    pub conversations: Vec<ConversationHandoff>,
    /// Its session, if it had one.
    pub session: Option<SessionHandoff>,
    /// Messages that arrived while it was frozen (persisted inbound messages and owner
    /// activity only), in arrival order.
    pub held: Vec<TenantCommand>,
}

/// A conversation's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationHandoff {
    /// The chat.
    pub chat: ChatId,
    /// Messages waiting for the customer to stop typing (the debounce buffer).
    pub pending: Vec<InboundItem>,
    /// The history window, oldest first.
    pub history: Vec<Turn>,
    /// The bot is paused in this chat until then.
    pub paused_until_ms: Option<i64>,
}

/// A session's state. No credentials: the new host's session reads the number and its
/// access token from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHandoff {
    /// Messages recorded and waiting to be sent, in order.
    pub queue: Vec<QueuedSend>,
    /// How long Meta asked the number to wait before sending again (130429), from now.
    pub blocked_for_ms: u64,
    /// The session's status.
    pub status: SessionStatus,
}

/// One queued outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedSend {
    /// The outbound message's id in the store.
    pub outbound_id: i64,
    /// The customer.
    pub chat: ChatId,
    /// The text.
    pub body: String,
    /// The message quoted, if any.
    pub reply_to: Option<Wamid>,
    /// Attempts so far.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesboy_protocol::Codec;

    #[test]
    fn handoffs_round_trip_in_both_codecs() {
        let chat = ChatId::new("16505551234").unwrap();
        let item = InboundItem {
            id: 7,
            wamid: Some(Wamid::new("wamid.A").unwrap()),
            text: Some("hi".into()),
            received_ms: 5,
            sent_ms: 4,
            predecessor: Default::default(),
        };
        let handoff = TenantHandoff {
            tenant: TenantId::new("acme").unwrap(),
            epoch: 3,
            conversations: vec![ConversationHandoff {
                chat: chat.clone(),
                pending: vec![item.clone()],
                history: vec![Turn::business("hello")],
                paused_until_ms: Some(i64::MAX),
            }],
            session: Some(SessionHandoff {
                queue: vec![QueuedSend {
                    outbound_id: 9,
                    chat: chat.clone(),
                    body: "b".into(),
                    reply_to: None,
                    attempts: 1,
                }],
                blocked_for_ms: 250,
                status: SessionStatus::RateLimited,
            }),
            held: vec![
                TenantCommand::Inbound {
                    chat: chat.clone(),
                    item,
                },
                TenantCommand::OwnerActivity { chat, at_ms: 9 },
            ],
        };
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode(&handoff).unwrap();
            assert_eq!(
                codec.decode::<TenantHandoff>(&bytes).unwrap(),
                handoff,
                "{codec:?}"
            );
        }
    }
}
