//! Webhook bodies exactly as Meta posts them, and their normalisation into
//! [`WebhookEvent`]s.
//!
//! Verify the signature ([`crate::whatsapp::signature`]) over the raw bytes first, then call
//! [`parse_webhook`], then [`WebhookBody::events`]. Parsing is lenient where Meta is (optional
//! fields are optional; an unknown message `type`, status or change `field` does not fail the
//! body) and strict on what routing and dedup rely on (`phone_number_id`, wamids, customer ids
//! are validated through [`crate::ids`]).
//!
//! These raw types travel only as JSON; the domain types they convert to are in
//! [`crate::whatsapp::inbound`].

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, PhoneNumberId, Wamid};
use crate::serde_util::{opt_u64_string, u64_string};
use crate::whatsapp::inbound::{
    DeliveryStatus, Echo, ErrorInfo, IgnoredReason, InboundMessage, MessageContent, StatusUpdate,
    WebhookEvent,
};

/// The largest webhook body accepted (3 MiB); larger bodies are refused unparsed.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The `object` of every WhatsApp Business webhook body.
pub const WHATSAPP_BUSINESS_ACCOUNT: &str = "whatsapp_business_account";

/// The change `field` of inbound messages and status updates.
pub const FIELD_MESSAGES: &str = "messages";

/// The change `field` of messages the business sent from the WhatsApp Business app.
pub const FIELD_SMB_MESSAGE_ECHOES: &str = "smb_message_echoes";

/// The MIME type assumed for media when Meta sends none.
const UNKNOWN_MIME_TYPE: &str = "application/octet-stream";

/// Why a webhook body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The body is larger than [`MAX_WEBHOOK_BODY_BYTES`].
    #[error("webhook body is {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// The body's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not JSON (or is cut short); the reason names the line and column.
    #[error("webhook body is not valid json: {reason}")]
    Malformed {
        /// serde_json's description, with line and column.
        reason: String,
    },
    /// The body is JSON but not a webhook: a required field is missing, a value has the wrong
    /// type or an id is invalid. The reason names the field.
    #[error("webhook body is invalid: {reason}")]
    Invalid {
        /// serde's description, naming the field, with line and column.
        reason: String,
    },
    /// The body is for another Meta product (`object` is not `whatsapp_business_account`).
    #[error("webhook object is {object:?}, expected \"whatsapp_business_account\"")]
    UnexpectedObject {
        /// The `object` value (at most 64 characters of it).
        object: String,
    },
}

/// Parses a webhook body (after its signature was verified).
pub fn parse_webhook(raw: &[u8]) -> Result<WebhookBody, WebhookError> {
    if raw.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookError::TooLarge {
            len: raw.len(),
            max: MAX_WEBHOOK_BODY_BYTES,
        });
    }
    match serde_json::from_slice::<WebhookBody>(raw) {
        Ok(body) if body.object == WHATSAPP_BUSINESS_ACCOUNT => Ok(body),
        Ok(body) => Err(unexpected_object(&body.object)),
        Err(error) => {
            // Another product's body fails on its different shape: name the object instead.
            if let Some(object) = foreign_object(raw) {
                return Err(unexpected_object(&object));
            }
            Err(match error.classify() {
                serde_json::error::Category::Data => WebhookError::Invalid {
                    reason: error.to_string(),
                },
                _ => WebhookError::Malformed {
                    reason: error.to_string(),
                },
            })
        }
    }
}

fn unexpected_object(object: &str) -> WebhookError {
    WebhookError::UnexpectedObject {
        object: object.chars().take(64).collect(),
    }
}

/// The `object` of a JSON object body, when it is a string other than ours.
fn foreign_object(raw: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        object: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(raw).ok()?;
    probe
        .object
        .filter(|object| object != WHATSAPP_BUSINESS_ACCOUNT)
}

/// A whole webhook body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookBody {
    /// Always `whatsapp_business_account` once [`parse_webhook`] accepted it.
    pub object: String,
    /// One entry per WhatsApp Business Account.
    pub entry: Vec<Entry>,
}

impl WebhookBody {
    /// Flattens the body into events, in body order. Within a `messages` change: its
    /// messages, then its statuses, then one ignored item for its `errors`, if any. An unknown
    /// status, an echo to an invalid recipient and an unknown `field` each become
    /// [`WebhookEvent::Ignored`] in place.
    pub fn events(&self) -> Vec<WebhookEvent> {
        let mut events = Vec::new();
        for entry in &self.entry {
            for change in &entry.changes {
                change.push_events(&entry.id, &mut events);
            }
        }
        events
    }
}

/// The changes of one WhatsApp Business Account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The WhatsApp Business Account (WABA) id.
    pub id: String,
    /// What changed.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change: a `field` name and a `value` whose shape depends on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawChange")]
pub struct Change {
    /// The webhook field (`messages`, `smb_message_echoes`, …).
    pub field: String,
    /// The value, parsed for the fields this gateway knows.
    pub value: ChangeValue,
}

/// The value of a [`Change`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ChangeValue {
    /// Field `messages`: inbound messages and status updates.
    Messages(MessagesValue),
    /// Field `smb_message_echoes`: messages the business sent from the WhatsApp Business app.
    MessageEchoes(EchoesValue),
    /// Any other field, kept as JSON.
    Other(serde_json::Value),
}

#[derive(Deserialize)]
struct RawChange {
    field: String,
    #[serde(default)]
    value: serde_json::Value,
}

impl TryFrom<RawChange> for Change {
    type Error = serde_json::Error;

    fn try_from(raw: RawChange) -> Result<Self, Self::Error> {
        let value = match raw.field.as_str() {
            FIELD_MESSAGES => ChangeValue::Messages(serde_json::from_value(raw.value)?),
            FIELD_SMB_MESSAGE_ECHOES => {
                ChangeValue::MessageEchoes(serde_json::from_value(raw.value)?)
            }
            _ => ChangeValue::Other(raw.value),
        };
        Ok(Self {
            field: raw.field,
            value,
        })
    }
}

impl Change {
    fn push_events(&self, waba_id: &str, events: &mut Vec<WebhookEvent>) {
        let ignored = |phone_number_id: Option<&PhoneNumberId>, reason| WebhookEvent::Ignored {
            phone_number_id: phone_number_id.cloned(),
            waba_id: waba_id.to_owned(),
            reason,
        };
        match &self.value {
            ChangeValue::Messages(value) => {
                let phone_number_id = &value.metadata.phone_number_id;
                for message in &value.messages {
                    events.push(WebhookEvent::Inbound {
                        phone_number_id: phone_number_id.clone(),
                        waba_id: waba_id.to_owned(),
                        message: message.to_inbound(&value.contacts),
                    });
                }
                for status in &value.statuses {
                    events.push(match status.to_update() {
                        Ok(update) => WebhookEvent::Status {
                            phone_number_id: phone_number_id.clone(),
                            waba_id: waba_id.to_owned(),
                            status: update,
                        },
                        Err(reason) => ignored(Some(phone_number_id), reason),
                    });
                }
                if !value.errors.is_empty() {
                    let errors = value.errors.iter().map(ErrorDetail::to_info).collect();
                    events.push(ignored(
                        Some(phone_number_id),
                        IgnoredReason::Errors { errors },
                    ));
                }
            }
            ChangeValue::MessageEchoes(value) => {
                let phone_number_id = &value.metadata.phone_number_id;
                for echo in &value.message_echoes {
                    events.push(match echo.to_echo() {
                        Ok(echo) => WebhookEvent::Echo {
                            phone_number_id: phone_number_id.clone(),
                            waba_id: waba_id.to_owned(),
                            echo,
                        },
                        Err(reason) => ignored(Some(phone_number_id), reason),
                    });
                }
            }
            ChangeValue::Other(value) => {
                let phone_number_id = value
                    .pointer("/metadata/phone_number_id")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|id| PhoneNumberId::new(id).ok());
                let reason = IgnoredReason::UnknownField {
                    field: self.field.clone(),
                };
                events.push(ignored(phone_number_id.as_ref(), reason));
            }
        }
    }
}

/// The business number a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The number as displayed (digits, no `+`).
    #[serde(default)]
    pub display_phone_number: String,
    /// Meta's id of the number: the tenant routing key.
    pub phone_number_id: PhoneNumberId,
}

/// The value of a `messages` change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesValue {
    /// Always `whatsapp`.
    #[serde(default)]
    pub messaging_product: String,
    /// The business number.
    pub metadata: Metadata,
    /// The senders' profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    /// Inbound messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Status updates of outbound messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
    /// Errors about the whole change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
}

/// A sender's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The profile, when Meta sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// The customer's WhatsApp id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<ChatId>,
}

/// A WhatsApp profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The name the customer set.
    #[serde(default)]
    pub name: String,
}

/// One inbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The customer's WhatsApp id.
    pub from: ChatId,
    /// The message id.
    pub id: Wamid,
    /// Unix seconds (Meta sends a string).
    #[serde(with = "u64_string")]
    pub timestamp: u64,
    /// The message replied to, or forwarding flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
    /// `type` and the object named after it.
    #[serde(flatten)]
    pub payload: MessagePayload,
}

impl Message {
    /// The domain form, taking the profile name from the matching contact.
    pub fn to_inbound(&self, contacts: &[Contact]) -> InboundMessage {
        let profile_name = contacts
            .iter()
            .find(|contact| contact.wa_id.as_ref() == Some(&self.from))
            .and_then(|contact| contact.profile.as_ref())
            .map(|profile| profile.name.clone())
            .filter(|name| !name.is_empty());
        InboundMessage {
            wamid: self.id.clone(),
            from: self.from.clone(),
            timestamp: self.timestamp,
            profile_name,
            reply_to: self.context.as_ref().and_then(|context| context.id.clone()),
            content: self.payload.content(),
        }
    }
}

/// The context of a message: the message it replies to, or forwarding flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The business number the replied-to message came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The replied-to message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Wamid>,
    /// Whether the message was forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<bool>,
    /// Whether it was forwarded more than five times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequently_forwarded: Option<bool>,
}

/// A message's `type` and its content object (Meta names the object after the type).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessagePayload {
    /// The message type (`text`, `image`, …, `unsupported`, or a type newer than this code).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `type: text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextPayload>,
    /// `type: image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<MediaPayload>,
    /// `type: audio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<MediaPayload>,
    /// `type: video`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<MediaPayload>,
    /// `type: document`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<MediaPayload>,
    /// `type: sticker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticker: Option<MediaPayload>,
    /// `type: location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationPayload>,
    /// `type: interactive` (button and list replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<InteractivePayload>,
    /// `type: button` (a template's quick-reply button).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<ButtonPayload>,
    /// `type: reaction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionPayload>,
    /// Why Meta could not deliver the content (`type: unsupported`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
}

impl MessagePayload {
    /// The typed content. An unknown type, or a known type without its object, is
    /// [`MessageContent::Unsupported`] with Meta's type.
    pub fn content(&self) -> MessageContent {
        self.known_content()
            .unwrap_or_else(|| MessageContent::Unsupported {
                kind: self.kind.clone(),
            })
    }

    fn known_content(&self) -> Option<MessageContent> {
        Some(match self.kind.as_str() {
            "text" => MessageContent::Text {
                body: self.text.as_ref()?.body.clone(),
            },
            "image" => {
                let media = self.image.as_ref()?;
                MessageContent::Image {
                    media_id: media.id.clone(),
                    mime_type: media.mime(),
                    caption: media.caption.clone(),
                }
            }
            "audio" => {
                let media = self.audio.as_ref()?;
                MessageContent::Audio {
                    media_id: media.id.clone(),
                    mime_type: media.mime(),
                    voice: media.voice.unwrap_or(false),
                }
            }
            "video" => {
                let media = self.video.as_ref()?;
                MessageContent::Video {
                    media_id: media.id.clone(),
                    mime_type: media.mime(),
                    caption: media.caption.clone(),
                }
            }
            "document" => {
                let media = self.document.as_ref()?;
                MessageContent::Document {
                    media_id: media.id.clone(),
                    mime_type: media.mime(),
                    caption: media.caption.clone(),
                    filename: media.filename.clone(),
                }
            }
            "sticker" => {
                let media = self.sticker.as_ref()?;
                MessageContent::Sticker {
                    media_id: media.id.clone(),
                    mime_type: media.mime(),
                    animated: media.animated.unwrap_or(false),
                }
            }
            "location" => {
                let location = self.location.as_ref()?;
                MessageContent::Location {
                    latitude: location.latitude,
                    longitude: location.longitude,
                    name: location.name.clone(),
                    address: location.address.clone(),
                }
            }
            "interactive" => {
                let interactive = self.interactive.as_ref()?;
                match interactive.kind.as_str() {
                    "button_reply" => {
                        let reply = interactive.button_reply.as_ref()?;
                        MessageContent::ButtonReply {
                            id: reply.id.clone(),
                            title: reply.title.clone(),
                        }
                    }
                    "list_reply" => {
                        let reply = interactive.list_reply.as_ref()?;
                        MessageContent::ListReply {
                            id: reply.id.clone(),
                            title: reply.title.clone(),
                            description: reply.description.clone(),
                        }
                    }
                    other => MessageContent::Unsupported {
                        kind: format!("interactive.{other}"),
                    },
                }
            }
            "button" => {
                let button = self.button.as_ref()?;
                MessageContent::QuickReply {
                    payload: button.payload.clone(),
                    text: button.text.clone(),
                }
            }
            "reaction" => {
                let reaction = self.reaction.as_ref()?;
                MessageContent::Reaction {
                    emoji: reaction.emoji.clone().filter(|emoji| !emoji.is_empty()),
                    message_id: reaction.message_id.clone(),
                }
            }
            _ => return None,
        })
    }
}

/// `text` content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextPayload {
    /// The text.
    pub body: String,
}

/// `image`, `audio`, `video`, `document` or `sticker` content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaPayload {
    /// Meta's media id.
    pub id: String,
    /// The MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The SHA-256 of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The caption (image, video, document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The file name (document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Whether it is a voice note (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<bool>,
    /// Whether it is animated (sticker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animated: Option<bool>,
}

impl MediaPayload {
    fn mime(&self) -> String {
        self.mime_type
            .clone()
            .unwrap_or_else(|| UNKNOWN_MIME_TYPE.to_owned())
    }
}

/// `location` content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationPayload {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// The place's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The place's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A URL for the place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `interactive` content: the customer's answer to an interactive message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractivePayload {
    /// `button_reply`, `list_reply`, or another (`nfm_reply`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The chosen reply button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_reply: Option<ButtonReplyPayload>,
    /// The chosen list row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_reply: Option<ListReplyPayload>,
}

/// A chosen reply button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonReplyPayload {
    /// The button id.
    pub id: String,
    /// The button title.
    pub title: String,
}

/// A chosen list row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReplyPayload {
    /// The row id.
    pub id: String,
    /// The row title.
    pub title: String,
    /// The row description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `button` content: a template's quick-reply button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonPayload {
    /// The payload the business set on the button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The button text.
    pub text: String,
}

/// `reaction` content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionPayload {
    /// The message reacted to.
    pub message_id: Wamid,
    /// The emoji; absent (or empty) when the reaction was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

/// A status update of an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The outbound message's id.
    pub id: Wamid,
    /// `sent`, `delivered`, `read`, `failed` (or a newer value).
    pub status: String,
    /// Unix seconds (Meta sends a string).
    #[serde(with = "u64_string")]
    pub timestamp: u64,
    /// The customer's WhatsApp id.
    pub recipient_id: ChatId,
    /// The conversation the message opened or belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// How the message is billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
    /// The `biz_opaque_callback_data` set when sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
}

impl Status {
    /// The domain form, or why it is ignored (a status value this code does not know).
    pub fn to_update(&self) -> Result<StatusUpdate, IgnoredReason> {
        let status = DeliveryStatus::from_meta(&self.status).ok_or_else(|| {
            IgnoredReason::UnknownStatus {
                wamid: self.id.clone(),
                status: self.status.clone(),
            }
        })?;
        Ok(StatusUpdate {
            wamid: self.id.clone(),
            recipient: self.recipient_id.clone(),
            status,
            timestamp: self.timestamp,
            errors: self.errors.iter().map(ErrorDetail::to_info).collect(),
        })
    }
}

/// A conversation (billing window) of a status update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation id.
    pub id: String,
    /// What opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ConversationOrigin>,
    /// When it expires, in Unix seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_u64_string"
    )]
    pub expiration_timestamp: Option<u64>,
}

/// What opened a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationOrigin {
    /// `service`, `marketing`, `utility`, `authentication`, …
    #[serde(rename = "type")]
    pub kind: String,
}

/// The pricing of a status update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    /// Whether the message is billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable: Option<bool>,
    /// `PMP` (per message) or `CBP` (per conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_model: Option<String>,
    /// The pricing type (`regular`, `free_customer_service`, …).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The category (`service`, `marketing`, `utility`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// An error inside a webhook (on a status, a message or a whole change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Meta's error code.
    pub code: i64,
    /// Its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    /// Documentation link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

impl ErrorDetail {
    /// The domain form.
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.code,
            title: self
                .title
                .clone()
                .or_else(|| self.message.clone())
                .unwrap_or_default(),
            message: self.message.clone(),
            details: self
                .error_data
                .as_ref()
                .and_then(|data| data.details.clone()),
        }
    }
}

/// `error_data` of an [`ErrorDetail`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The value of an `smb_message_echoes` change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoesValue {
    /// Always `whatsapp`.
    #[serde(default)]
    pub messaging_product: String,
    /// The business number.
    pub metadata: Metadata,
    /// The echoed messages.
    #[serde(default)]
    pub message_echoes: Vec<MessageEcho>,
}

/// A message the business sent from the WhatsApp Business app or a linked device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEcho {
    /// The business's display number.
    #[serde(default)]
    pub from: String,
    /// The customer's phone number as the business typed it (may start with `+`).
    pub to: String,
    /// The message id.
    pub id: Wamid,
    /// Unix seconds.
    #[serde(with = "u64_string")]
    pub timestamp: u64,
    /// `type` and the object named after it.
    #[serde(flatten)]
    pub payload: MessagePayload,
}

impl MessageEcho {
    /// The domain form, or why it is ignored (`to` is not a valid chat id once a leading `+`
    /// is removed).
    pub fn to_echo(&self) -> Result<Echo, IgnoredReason> {
        let to = ChatId::new(self.to.trim().trim_start_matches('+')).map_err(|_| {
            IgnoredReason::InvalidEchoRecipient {
                wamid: self.id.clone(),
                to: self.to.clone(),
            }
        })?;
        Ok(Echo {
            wamid: self.id.clone(),
            to,
            timestamp: self.timestamp,
            content: self.payload.content(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_string_timestamps_both_parse() {
        let json = r#"{"from":"1","id":"wamid.A","timestamp":1739321024,"type":"text","text":{"body":"x"}}"#;
        let message: Message = serde_json::from_str(json).unwrap();
        assert_eq!(message.timestamp, 1_739_321_024);
        let back = serde_json::to_value(&message).unwrap();
        assert_eq!(back["timestamp"], "1739321024");
    }

    #[test]
    fn negative_or_garbage_timestamps_are_refused() {
        for ts in ["-5", "\"12a\"", "1.5"] {
            let json = format!(
                r#"{{"from":"1","id":"wamid.A","timestamp":{ts},"type":"text","text":{{"body":"x"}}}}"#
            );
            assert!(serde_json::from_str::<Message>(&json).is_err(), "{ts}");
        }
    }

    #[test]
    fn a_known_type_without_its_object_is_unsupported() {
        let payload = MessagePayload {
            kind: "image".into(),
            ..MessagePayload::default()
        };
        assert_eq!(
            payload.content(),
            MessageContent::Unsupported {
                kind: "image".into()
            }
        );
    }
}
