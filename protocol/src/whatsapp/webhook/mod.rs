//! Webhook bodies exactly as Meta posts them, and their normalisation into
//! [`WebhookEvent`]s.
//!
//! Verify the signature ([`crate::whatsapp::signature`]) over the raw bytes first, then call
//! [`parse_webhook_items`]: it reads the body item by item, and an item that does not read
//! becomes a [`WebhookEvent::Rejected`] instead of failing the body (`items`). The strict
//! [`parse_webhook`], then [`WebhookBody::events`], gives the same events for a body whose
//! every item reads, and fails on the first one that does not. Parsing is lenient where Meta is (optional
//! fields are optional; an unknown message `type`, status or change `field` does not fail the
//! body) and strict on what routing and dedup rely on (`phone_number_id`, wamids, customer ids
//! are validated through [`crate::ids`]).
//!
//! These raw types travel only as JSON; the domain types they convert to are in
//! [`crate::whatsapp::inbound`].
//!
//! The body's frame (entries, changes, their values and errors) is here; the messages it
//! carries (inbound messages, echoes and their content) are in `message`, the status updates
//! of outbound messages in `status`; the tolerant walk over all of them in `items`.

mod items;
mod message;
mod status;

pub use items::parse_webhook_items;

pub use message::{
    ButtonPayload, ButtonReplyPayload, Contact, Context, InteractivePayload, ListReplyPayload,
    LocationPayload, MediaPayload, Message, MessageEcho, MessagePayload, Profile, ReactionPayload,
    TextPayload,
};
pub use status::{Conversation, ConversationOrigin, Pricing, Status};

use serde::{Deserialize, Serialize};

use crate::ids::PhoneNumberId;
use crate::whatsapp::inbound::{ErrorInfo, IgnoredReason, WebhookEvent};

/// The largest webhook body accepted (3 MiB); larger bodies are refused unparsed.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The `object` of every WhatsApp Business webhook body.
pub const WHATSAPP_BUSINESS_ACCOUNT: &str = "whatsapp_business_account";

/// The change `field` of inbound messages and status updates.
pub const FIELD_MESSAGES: &str = "messages";

/// The change `field` of messages the business sent from the WhatsApp Business app.
pub const FIELD_SMB_MESSAGE_ECHOES: &str = "smb_message_echoes";

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

/// Parses a webhook body (after its signature was verified), strictly: the first item that
/// does not read fails the whole body. The webhook endpoint uses [`parse_webhook_items`].
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
