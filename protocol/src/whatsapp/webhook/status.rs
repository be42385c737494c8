//! Status updates of outbound messages as a webhook carries them, with their conversation
//! and pricing.

use serde::{Deserialize, Serialize};

use super::ErrorDetail;
use crate::ids::{ChatId, Wamid};
use crate::serde_util::{opt_u64_string, u64_string};
use crate::whatsapp::inbound::{DeliveryStatus, IgnoredReason, StatusUpdate};

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
