//! [`TenantCommand`]: what the rest of the gateway asks of a tenant, in one type. The webhook
//! ingress builds it, the router sends it (to this node's actors, or in an envelope to the
//! host's inbox), the inbox decodes it, the tenant supervisor carries it out
//! ([`TenantMsg::Command`](crate::tenant::TenantMsg::Command)), and a frozen tenant holds
//! it for its next host ([`TenantHandoff::held`](crate::handoff::TenantHandoff::held)).
//!
//! Travels node to node in bincode (decision 0002), where a variant is encoded by its
//! position: add new variants at the end, never reorder or change one in place.

use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ActorAddress, ChatId, MessageKind, TenantId};
use serde::{Deserialize, Serialize};

use crate::conversation::InboundItem;
use crate::session::WebView;

/// A command for a tenant, carried out by whichever node hosts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantCommand {
    /// A persisted inbound message for a conversation.
    Inbound {
        /// The customer's chat.
        chat: ChatId,
        /// The message.
        item: InboundItem,
    },
    /// The owner wrote in a chat from their own WhatsApp app (echo): the bot steps back.
    OwnerActivity {
        /// The chat.
        chat: ChatId,
        /// When the owner wrote.
        at_ms: i64,
    },
    /// Pause (`Some`) or resume (`None`) the bot in a chat.
    SetPaused {
        /// The chat.
        chat: ChatId,
        /// Until when; [`crate::store::PAUSED_INDEFINITELY`] for no end.
        until_ms: Option<i64>,
    },
    /// Send a message as the owner: recorded, sent, and the bot steps back in that chat.
    OwnerSend {
        /// The chat.
        chat: ChatId,
        /// The text.
        body: String,
    },
    /// The tenant's record changed (number, token, prompt, providers, knowledge version): a
    /// hosted tenant reads it again; one hosted nowhere reads it when it is next activated.
    Reload,
    /// [`TenantCommand::OwnerSend`] with the client's idempotency key: the tenant's same
    /// `client_ref` sent again records and sends nothing and answers the first message's id.
    OwnerSendOnce {
        /// The chat.
        chat: ChatId,
        /// The text.
        body: String,
        /// The client's key, unique per tenant.
        client_ref: String,
    },
    /// Send a template, an interactive message or a media message as the owner, like
    /// [`TenantCommand::OwnerSendOnce`] (with a key) or [`TenantCommand::OwnerSend`].
    OwnerSendContent {
        /// The chat.
        chat: ChatId,
        /// What to send (its JSON text in bincode).
        #[serde(with = "salesboy_protocol::whatsapp::send::content_as_json_text")]
        content: Box<OutboundContent>,
        /// The client's key, unique per tenant, if given.
        client_ref: Option<String>,
    },
    /// Be hosted: activate the tenant if it is not (it then reconciles from the store:
    /// answers what came in meanwhile, sends what is pending), nothing else. Sent by
    /// `session.start`.
    Start,
    /// A persisted inbound message that started its chat (the ingress created the
    /// conversation): as [`TenantCommand::Inbound`], and a conversation started for it has
    /// nothing to load from the store (no history, no pause).
    InboundNewChat {
        /// The customer's chat.
        chat: ChatId,
        /// The message.
        item: InboundItem,
    },
    /// `web`: be hosted, and have the session offer QR codes again if they ran out or the
    /// device was unlinked; answers the session's [`WebView`] (`session.qr`).
    WebPair,
    /// `web`: ask WhatsApp for a pairing code for this phone number (`session.pair_code`);
    /// answers [`CommandReply::PairCode`].
    WebPairCode {
        /// The account's phone number: digits, international format.
        phone: String,
    },
    /// `web`: unlink the device (`session.logout`).
    WebLogout,
}

impl TenantCommand {
    /// The actor the command is for (the envelope's target).
    pub fn target(&self, tenant: &TenantId) -> ActorAddress {
        match self {
            Self::Inbound { chat, .. }
            | Self::InboundNewChat { chat, .. }
            | Self::OwnerActivity { chat, .. }
            | Self::SetPaused { chat, .. }
            | Self::OwnerSend { chat, .. }
            | Self::OwnerSendOnce { chat, .. }
            | Self::OwnerSendContent { chat, .. } => {
                ActorAddress::Conversation(tenant.clone(), chat.clone())
            }
            Self::Reload
            | Self::Start
            | Self::WebPair
            | Self::WebPairCode { .. }
            | Self::WebLogout => ActorAddress::Session(tenant.clone()),
        }
    }

    /// The envelope's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Inbound { .. } | Self::InboundNewChat { .. } => MessageKind::Inbound,
            Self::Reload
            | Self::Start
            | Self::WebPair
            | Self::WebPairCode { .. }
            | Self::WebLogout => MessageKind::SessionCommand,
            Self::OwnerActivity { .. }
            | Self::SetPaused { .. }
            | Self::OwnerSend { .. }
            | Self::OwnerSendOnce { .. }
            | Self::OwnerSendContent { .. } => MessageKind::ConversationCommand,
        }
    }

    /// Whether the command is done once the tenant has it (a persisted message, an echo, a
    /// reload: the caller does not wait for the tenant to act), rather than once the tenant
    /// has answered.
    pub fn done_on_receipt(&self) -> bool {
        match self {
            Self::Inbound { .. }
            | Self::InboundNewChat { .. }
            | Self::OwnerActivity { .. }
            | Self::Reload
            | Self::Start => true,
            Self::SetPaused { .. }
            | Self::OwnerSend { .. }
            | Self::OwnerSendOnce { .. }
            | Self::OwnerSendContent { .. }
            | Self::WebPair
            | Self::WebPairCode { .. }
            | Self::WebLogout => false,
        }
    }
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    /// Done.
    Done,
    /// An owner message was recorded under this id.
    Outbound(i64),
    /// `web`: the session's account, pairing codes and ban ([`TenantCommand::WebPair`]).
    Web(WebView),
    /// `web`: the pairing code WhatsApp gave ([`TenantCommand::WebPairCode`]).
    PairCode(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesboy_protocol::{Codec, Wamid};

    #[test]
    fn commands_and_replies_round_trip_in_both_codecs() {
        let chat = ChatId::new("16505551234").unwrap();
        let commands = vec![
            TenantCommand::Inbound {
                chat: chat.clone(),
                item: InboundItem {
                    id: 1,
                    wamid: Some(Wamid::new("wamid.A").unwrap()),
                    text: Some("hi".into()),
                    received_ms: 2,
                    sent_ms: 1,
                    predecessor: Default::default(),
                },
            },
            TenantCommand::OwnerActivity {
                chat: chat.clone(),
                at_ms: 3,
            },
            TenantCommand::SetPaused {
                chat: chat.clone(),
                until_ms: None,
            },
            TenantCommand::OwnerSend {
                chat: chat.clone(),
                body: "b".into(),
            },
            TenantCommand::Reload,
            TenantCommand::OwnerSendOnce {
                chat: chat.clone(),
                body: "b".into(),
                client_ref: "order-42".into(),
            },
            TenantCommand::OwnerSendContent {
                chat,
                content: Box::new(OutboundContent::Template(
                    salesboy_protocol::whatsapp::send::Template {
                        name: "order_update".into(),
                        language: salesboy_protocol::whatsapp::send::TemplateLanguage {
                            code: "en_US".into(),
                        },
                        components: vec![
                            salesboy_protocol::whatsapp::send::TemplateComponent::body(vec![
                                salesboy_protocol::whatsapp::send::TemplateParameter::text("Kerry"),
                            ]),
                        ],
                    },
                )),
                client_ref: Some("order-43".into()),
            },
            TenantCommand::Start,
            TenantCommand::WebPair,
            TenantCommand::WebPairCode {
                phone: "2348000000001".into(),
            },
            TenantCommand::WebLogout,
        ];
        for codec in [Codec::Bincode, Codec::Json] {
            for command in &commands {
                let bytes = codec.encode(command).unwrap();
                assert_eq!(
                    &codec.decode::<TenantCommand>(&bytes).unwrap(),
                    command,
                    "{codec:?}"
                );
            }
            let replies = [
                CommandReply::Done,
                CommandReply::Outbound(4),
                CommandReply::Web(WebView::default()),
                CommandReply::PairCode("K7QX2M9P".into()),
            ];
            for reply in replies {
                let bytes = codec.encode(&reply).unwrap();
                assert_eq!(codec.decode::<CommandReply>(&bytes).unwrap(), reply);
            }
        }
    }

    /// A variant's position is its bincode tag: nodes of the previous release (and the
    /// handoffs they send, whose held messages were `Inbound` and `OwnerActivity`) decode
    /// these bytes.
    #[test]
    fn bincode_tags_are_stable() {
        let chat = ChatId::new("1").unwrap();
        let tag = |command: &TenantCommand| Codec::Bincode.encode(command).unwrap()[1];
        let item = InboundItem {
            id: 1,
            wamid: None,
            text: None,
            received_ms: 0,
            sent_ms: 0,
            predecessor: Default::default(),
        };
        let inbound = TenantCommand::Inbound {
            chat: chat.clone(),
            item: item.clone(),
        };
        let new_chat = TenantCommand::InboundNewChat {
            chat: chat.clone(),
            item,
        };
        let tags: Vec<u8> = [
            inbound,
            TenantCommand::OwnerActivity {
                chat: chat.clone(),
                at_ms: 0,
            },
            TenantCommand::SetPaused {
                chat: chat.clone(),
                until_ms: None,
            },
            TenantCommand::OwnerSend {
                chat: chat.clone(),
                body: String::new(),
            },
            TenantCommand::Reload,
            TenantCommand::OwnerSendOnce {
                chat: chat.clone(),
                body: String::new(),
                client_ref: String::new(),
            },
            TenantCommand::OwnerSendContent {
                chat,
                content: Box::new(OutboundContent::Image(
                    salesboy_protocol::whatsapp::send::Media {
                        link: "https://example.com/a.png".into(),
                        caption: None,
                        filename: None,
                    },
                )),
                client_ref: None,
            },
            TenantCommand::Start,
            new_chat,
            TenantCommand::WebPair,
            TenantCommand::WebPairCode {
                phone: String::new(),
            },
            TenantCommand::WebLogout,
        ]
        .iter()
        .map(tag)
        .collect();
        assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }
}
