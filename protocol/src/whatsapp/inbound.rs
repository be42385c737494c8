//! The domain form of what a webhook delivers: inbound messages, status updates, echoes.
//!
//! These types travel node to node in bincode (see [`crate::codec`]), so they use only
//! externally tagged enums and plain fields: no internally tagged or untagged enums, no
//! `skip_serializing_if`, no `flatten`. [`crate::whatsapp::webhook`] builds them from Meta's
//! JSON with [`WebhookBody::events`](crate::whatsapp::webhook::WebhookBody::events).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, PhoneNumberId, Wamid};
use crate::whatsapp::error::GraphErrorKind;

/// One message a customer sent to a tenant's WhatsApp number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Meta's id of the message: the dedup key (unique per tenant).
    pub wamid: Wamid,
    /// The customer's WhatsApp id (`wa_id`): the chat the message belongs to.
    pub from: ChatId,
    /// When the customer sent it, in Unix seconds.
    pub timestamp: u64,
    /// The customer's WhatsApp profile name, when Meta sent one.
    pub profile_name: Option<String>,
    /// The message this one replies to (`context.id`), if any.
    pub reply_to: Option<Wamid>,
    /// What the customer sent.
    pub content: MessageContent,
}

impl InboundMessage {
    /// The text the assistant should answer to: the body, a caption or the chosen button's
    /// title. `None` when there is nothing to answer in words (reactions, stickers, audio,
    /// unsupported messages, media without caption).
    pub fn text_for_assistant(&self) -> Option<String> {
        self.content.text_for_assistant()
    }
}

/// The content of a WhatsApp message, inbound or echoed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageContent {
    /// A text message.
    Text {
        /// The text.
        body: String,
    },
    /// An image; fetch it with the media id.
    Image {
        /// Meta's media id (`GET /{media-id}` gives a short-lived URL).
        media_id: String,
        /// Its MIME type.
        mime_type: String,
        /// The caption the customer wrote, if any.
        caption: Option<String>,
    },
    /// An audio file or a voice note.
    Audio {
        /// Meta's media id.
        media_id: String,
        /// Its MIME type.
        mime_type: String,
        /// Whether it was recorded as a voice note.
        voice: bool,
    },
    /// A video.
    Video {
        /// Meta's media id.
        media_id: String,
        /// Its MIME type.
        mime_type: String,
        /// The caption, if any.
        caption: Option<String>,
    },
    /// A document (PDF, spreadsheet, …).
    Document {
        /// Meta's media id.
        media_id: String,
        /// Its MIME type.
        mime_type: String,
        /// The caption, if any.
        caption: Option<String>,
        /// The file name, if any.
        filename: Option<String>,
    },
    /// A sticker.
    Sticker {
        /// Meta's media id.
        media_id: String,
        /// Its MIME type.
        mime_type: String,
        /// Whether it is animated.
        animated: bool,
    },
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// The place's name, if any.
        name: Option<String>,
        /// The place's address, if any.
        address: Option<String>,
    },
    /// The customer tapped a reply button of an interactive message.
    ButtonReply {
        /// The button id the business chose.
        id: String,
        /// The button's title.
        title: String,
    },
    /// The customer picked a row of an interactive list.
    ListReply {
        /// The row id the business chose.
        id: String,
        /// The row's title.
        title: String,
        /// The row's description, if any.
        description: Option<String>,
    },
    /// The customer tapped a quick-reply button of a template message.
    QuickReply {
        /// The payload the business set on the button, if any.
        payload: Option<String>,
        /// The button's text.
        text: String,
    },
    /// A reaction to a message; `emoji` is `None` when the reaction was removed.
    Reaction {
        /// The emoji, or `None` for a removed reaction.
        emoji: Option<String>,
        /// The message reacted to.
        message_id: Wamid,
    },
    /// A message type this gateway does not handle (or Meta could not show), by its `type`.
    Unsupported {
        /// Meta's `type` value (`"unsupported"`, `"order"`, `"interactive.nfm_reply"`, …).
        kind: String,
    },
}

impl MessageContent {
    /// A short name of the variant for logs and metrics (`"text"`, `"image"`, …); for
    /// [`MessageContent::Unsupported`], Meta's type.
    pub fn kind(&self) -> &str {
        match self {
            Self::Text { .. } => "text",
            Self::Image { .. } => "image",
            Self::Audio { .. } => "audio",
            Self::Video { .. } => "video",
            Self::Document { .. } => "document",
            Self::Sticker { .. } => "sticker",
            Self::Location { .. } => "location",
            Self::ButtonReply { .. } => "button_reply",
            Self::ListReply { .. } => "list_reply",
            Self::QuickReply { .. } => "quick_reply",
            Self::Reaction { .. } => "reaction",
            Self::Unsupported { kind } => kind,
        }
    }

    /// The text to answer to; see [`InboundMessage::text_for_assistant`]. Blank text counts
    /// as none.
    pub fn text_for_assistant(&self) -> Option<String> {
        let text = match self {
            Self::Text { body } => Some(body),
            Self::Image { caption, .. }
            | Self::Video { caption, .. }
            | Self::Document { caption, .. } => caption.as_ref(),
            Self::ButtonReply { title, .. } | Self::ListReply { title, .. } => Some(title),
            Self::QuickReply { text, .. } => Some(text),
            Self::Audio { .. }
            | Self::Sticker { .. }
            | Self::Location { .. }
            | Self::Reaction { .. }
            | Self::Unsupported { .. } => None,
        };
        text.filter(|t| !t.trim().is_empty()).cloned()
    }
}

/// A message the business itself sent from the WhatsApp Business app (coexistence
/// `smb_message_echoes`): a human is answering, so the bot should step back for that chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    /// Meta's id of the echoed message.
    pub wamid: Wamid,
    /// The customer it was sent to (Meta's `to`, without a leading `+`).
    pub to: ChatId,
    /// When it was sent, in Unix seconds.
    pub timestamp: u64,
    /// What the business sent.
    pub content: MessageContent,
}

/// The delivery state of an outbound message: what Meta reports of it, and `Pending` before
/// Meta has it.
///
/// Progress is monotonic: `Pending < Sent < Delivered < Read`; `Failed` may follow `Pending`,
/// `Sent` or `Delivered` and nothing follows it. Webhooks are unordered, so an update is
/// applied only if [`DeliveryStatus::may_follow`] the current one. Meta's webhooks report the
/// last four ([`DeliveryStatus::from_meta`]); `Pending` is the gateway's own: recorded, not
/// yet accepted by Meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Recorded by the gateway, not yet accepted by Meta (Meta never reports it).
    Pending,
    /// Meta accepted and sent the message.
    Sent,
    /// It reached the customer's device.
    Delivered,
    /// The customer read it.
    Read,
    /// It could not be delivered.
    Failed,
}

impl DeliveryStatus {
    /// Every status, in rank order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
    ];

    /// The position in the progression: pending 0, sent 1, delivered 2, read 3, failed 4
    /// (terminal).
    pub const fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }

    /// Whether `self` may replace `prev`: progress only moves forward (pending < sent <
    /// delivered < read), `Failed` may follow pending, sent or delivered, and nothing follows
    /// `Failed`. A repeated status does not follow itself.
    pub const fn may_follow(self, prev: Self) -> bool {
        match (prev, self) {
            (Self::Failed, _) => false,
            (Self::Read, Self::Failed) => false,
            (_, Self::Failed) => true,
            _ => self.rank() > prev.rank(),
        }
    }

    /// Whether no further status can follow.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Read | Self::Failed)
    }

    /// The status's name, as Meta spells it (`"sent"`, `"delivered"`, `"read"`, `"failed"`)
    /// and, for the gateway's own, `"pending"`. The store keeps this name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// The status named `value` by [`Self::as_str`] (`pending` included): a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// The status Meta names `value`, if it is one of the four Meta reports (never
    /// `Pending`).
    pub fn from_meta(value: &str) -> Option<Self> {
        match value {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery-status update of one outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The outbound message's id.
    pub wamid: Wamid,
    /// The customer it was sent to.
    pub recipient: ChatId,
    /// The new status.
    pub status: DeliveryStatus,
    /// When Meta recorded it, in Unix seconds.
    pub timestamp: u64,
    /// Why it failed (empty unless `status` is `Failed`, usually).
    pub errors: Vec<ErrorInfo>,
}

/// An error Meta reported in a webhook (a failed status, an unsupported message, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Meta's error code (131047, 130429, …).
    pub code: i64,
    /// Its short title (empty when Meta sent none).
    pub title: String,
    /// Its message, if any.
    pub message: Option<String>,
    /// `error_data.details`, if any.
    pub details: Option<String>,
}

impl ErrorInfo {
    /// The class of the error code, as for Graph API errors.
    pub const fn kind(&self) -> GraphErrorKind {
        GraphErrorKind::from_code(self.code)
    }
}

/// One item of a webhook body, normalised for routing to a tenant. One body can carry
/// events for several phone numbers (tenants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// A customer's message.
    Inbound {
        /// The business number it was sent to: the tenant routing key.
        phone_number_id: PhoneNumberId,
        /// The WhatsApp Business Account id (`entry[].id`).
        waba_id: String,
        /// The message.
        message: InboundMessage,
    },
    /// A delivery-status update of an outbound message.
    Status {
        /// The business number that sent the message.
        phone_number_id: PhoneNumberId,
        /// The WhatsApp Business Account id.
        waba_id: String,
        /// The update.
        status: StatusUpdate,
    },
    /// A message the business sent from the WhatsApp Business app.
    Echo {
        /// The business number it was sent from.
        phone_number_id: PhoneNumberId,
        /// The WhatsApp Business Account id.
        waba_id: String,
        /// The echoed message.
        echo: Echo,
    },
    /// An item the gateway does not act on, with the reason (for logs and metrics).
    Ignored {
        /// The business number, when it could be read.
        phone_number_id: Option<PhoneNumberId>,
        /// The WhatsApp Business Account id.
        waba_id: String,
        /// Why it is ignored.
        reason: IgnoredReason,
    },
    /// An item that could not be read (an invalid id, a missing field, a value of the wrong
    /// type): the rest of its body is processed; this one is recorded as rejected.
    Rejected {
        /// The business number of the item's change, when it could be read: the tenant
        /// routing key.
        phone_number_id: Option<PhoneNumberId>,
        /// The WhatsApp Business Account id, when it could be read.
        waba_id: Option<String>,
        /// Where the item was, why it was rejected, and (bounded) what it was.
        item: RejectedItem,
    },
}

impl WebhookEvent {
    /// The business number the event belongs to, if known: the tenant routing key.
    pub fn phone_number_id(&self) -> Option<&PhoneNumberId> {
        match self {
            Self::Inbound {
                phone_number_id, ..
            }
            | Self::Status {
                phone_number_id, ..
            }
            | Self::Echo {
                phone_number_id, ..
            } => Some(phone_number_id),
            Self::Ignored {
                phone_number_id, ..
            }
            | Self::Rejected {
                phone_number_id, ..
            } => phone_number_id.as_ref(),
        }
    }
}

/// The most bytes of a rejected item's JSON that [`RejectedItem::raw`] keeps.
pub const MAX_REJECTED_RAW_BYTES: usize = 4 * 1024;

/// The most characters of [`RejectedItem::reason`].
pub const MAX_REJECTED_REASON_CHARS: usize = 512;

/// A webhook item that could not be read, as [`WebhookEvent::Rejected`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedItem {
    /// Where the item was in its body, e.g. `entry[0].changes[1].value.messages[2]`.
    pub path: String,
    /// Why it was rejected (the parser's message, at most [`MAX_REJECTED_REASON_CHARS`]).
    pub reason: String,
    /// The item's JSON, cut to at most [`MAX_REJECTED_RAW_BYTES`] bytes (on a character
    /// boundary).
    pub raw: String,
    /// Whether `raw` was cut.
    pub truncated: bool,
}

impl RejectedItem {
    /// The rejected item at `path`, with its reason and its JSON, both bounded.
    pub fn new(path: String, reason: impl fmt::Display, raw: &serde_json::Value) -> Self {
        let reason: String = reason
            .to_string()
            .chars()
            .take(MAX_REJECTED_REASON_CHARS)
            .collect();
        let mut raw = raw.to_string();
        let truncated = raw.len() > MAX_REJECTED_RAW_BYTES;
        if truncated {
            let mut end = MAX_REJECTED_RAW_BYTES;
            while !raw.is_char_boundary(end) {
                end -= 1;
            }
            raw.truncate(end);
        }
        Self {
            path,
            reason,
            raw,
            truncated,
        }
    }
}

/// Why a webhook item was not turned into an inbound message, status or echo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgnoredReason {
    /// A change whose `field` this gateway does not subscribe to or know.
    UnknownField {
        /// The `field` value.
        field: String,
    },
    /// A status other than sent, delivered, read and failed.
    UnknownStatus {
        /// The message it is about.
        wamid: Wamid,
        /// Meta's status value.
        status: String,
    },
    /// An echo whose recipient is not a valid chat id.
    InvalidEchoRecipient {
        /// The echoed message.
        wamid: Wamid,
        /// Meta's `to` value.
        to: String,
    },
    /// Errors Meta reported for the whole change (`value.errors`).
    Errors {
        /// The errors.
        errors: Vec<ErrorInfo>,
    },
}

impl fmt::Display for IgnoredReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownField { field } => write!(f, "unknown webhook field {field:?}"),
            Self::UnknownStatus { wamid, status } => {
                write!(f, "unknown status {status:?} for {wamid}")
            }
            Self::InvalidEchoRecipient { wamid, to } => {
                write!(f, "echo {wamid} has an invalid recipient {to:?}")
            }
            Self::Errors { errors } => {
                let codes: Vec<String> = errors.iter().map(|e| e.code.to_string()).collect();
                write!(f, "webhook reported errors (codes {})", codes.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
    ];

    #[test]
    fn status_progress_is_monotonic_and_failed_is_terminal() {
        use DeliveryStatus::*;
        let allowed = [
            (Sent, Delivered),
            (Sent, Read),
            (Delivered, Read),
            (Sent, Failed),
            (Delivered, Failed),
        ];
        for prev in ALL {
            for next in ALL {
                assert_eq!(
                    next.may_follow(prev),
                    allowed.contains(&(prev, next)),
                    "{prev} -> {next}"
                );
            }
        }
    }

    #[test]
    fn statuses_name_themselves_as_meta_does() {
        for status in ALL {
            assert_eq!(DeliveryStatus::from_meta(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert_eq!(DeliveryStatus::from_meta("deleted"), None);
    }

    #[test]
    fn statuses_only_move_forward() {
        use DeliveryStatus::*;
        let allowed = [
            (Pending, Sent),
            (Pending, Delivered),
            (Pending, Read),
            (Pending, Failed),
            (Sent, Delivered),
            (Sent, Read),
            (Sent, Failed),
            (Delivered, Read),
            (Delivered, Failed),
        ];
        for from in DeliveryStatus::ALL {
            for to in DeliveryStatus::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(to.may_follow(from), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("deleted"), None);
        assert_eq!(DeliveryStatus::from_meta("pending"), None);
    }

    #[test]
    fn assistant_text_skips_blank_and_wordless_content() {
        let text = |body: &str| MessageContent::Text { body: body.into() };
        assert_eq!(text("hi").text_for_assistant().as_deref(), Some("hi"));
        assert_eq!(text("  ").text_for_assistant(), None);
        let sticker = MessageContent::Sticker {
            media_id: "1".into(),
            mime_type: "image/webp".into(),
            animated: false,
        };
        assert_eq!(sticker.text_for_assistant(), None);
        assert_eq!(sticker.kind(), "sticker");
    }
}
