//! Tolerant parsing: a webhook body read item by item ([`parse_webhook_items`]).
//!
//! Meta retries a delivery that is not answered 200 for up to 7 days, the whole body each
//! time, whatever other tenants' messages it carries. So once the signature verified, only
//! a body that is not JSON, or not a WhatsApp Business webhook at all, is refused; inside
//! it, each entry, change, contact, message, status, error and echo is read on its own. An
//! item that does not read becomes a [`WebhookEvent::Rejected`] (its path, the reason, its
//! JSON bounded; placed before the events of its list) and every other item gives the
//! events the strict parser ([`super::parse_webhook`] then [`super::WebhookBody::events`])
//! gives for it.
//!
//! What makes an item unreadable is what makes the strict parser fail: an id that does not
//! validate ([`crate::ids`]: an over-long or odd `wa_id`, a bad wamid), a missing required
//! field, a value of the wrong type. A change whose `metadata.phone_number_id` does not
//! read is rejected as a whole (its items cannot be routed); an entry without a string `id`
//! likewise.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Contact, ErrorDetail, FIELD_MESSAGES, FIELD_SMB_MESSAGE_ECHOES, MAX_WEBHOOK_BODY_BYTES,
    Message, MessageEcho, Metadata, Status, WHATSAPP_BUSINESS_ACCOUNT, WebhookError,
    unexpected_object,
};
use crate::ids::PhoneNumberId;
use crate::whatsapp::inbound::{IgnoredReason, RejectedItem, WebhookEvent};

/// Parses a webhook body (after its signature was verified) item by item: the events of
/// every item in body order, an unreadable item as a [`WebhookEvent::Rejected`] placed before
/// the events of its list (its change, for a change that cannot be routed).
///
/// Fails only when the body as a whole is not a WhatsApp Business webhook: larger than
/// [`MAX_WEBHOOK_BODY_BYTES`], not JSON ([`WebhookError::Malformed`]), not a JSON object or
/// without a string `object` ([`WebhookError::Invalid`]), or another product's
/// ([`WebhookError::UnexpectedObject`]).
pub fn parse_webhook_items(raw: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    if raw.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookError::TooLarge {
            len: raw.len(),
            max: MAX_WEBHOOK_BODY_BYTES,
        });
    }
    let body: Value = serde_json::from_slice(raw).map_err(|error| WebhookError::Malformed {
        reason: error.to_string(),
    })?;
    let Value::Object(body) = body else {
        return Err(WebhookError::Invalid {
            reason: "the body is not a JSON object".into(),
        });
    };
    match body.get("object") {
        Some(Value::String(object)) if object == WHATSAPP_BUSINESS_ACCOUNT => {}
        Some(Value::String(object)) => return Err(unexpected_object(object)),
        Some(_) => {
            return Err(WebhookError::Invalid {
                reason: "field `object` is not a string".into(),
            });
        }
        None => {
            return Err(WebhookError::Invalid {
                reason: "missing field `object`".into(),
            });
        }
    }
    let mut walk = Walk::default();
    match body.get("entry") {
        Some(Value::Array(entries)) => {
            for (index, entry) in entries.iter().enumerate() {
                walk.entry(format!("entry[{index}]"), entry);
            }
        }
        Some(other) => walk.reject(None, None, "entry".into(), "expected an array", other),
        None => walk.reject(
            None,
            None,
            "entry".into(),
            "missing field `entry`",
            &Value::Null,
        ),
    }
    Ok(walk.events)
}

/// The events found so far.
#[derive(Default)]
struct Walk {
    events: Vec<WebhookEvent>,
}

impl Walk {
    fn reject(
        &mut self,
        phone_number_id: Option<&PhoneNumberId>,
        waba_id: Option<&str>,
        path: String,
        reason: impl std::fmt::Display,
        raw: &Value,
    ) {
        self.events.push(WebhookEvent::Rejected {
            phone_number_id: phone_number_id.cloned(),
            waba_id: waba_id.map(str::to_owned),
            item: RejectedItem::new(path, reason, raw),
        });
    }

    fn entry(&mut self, path: String, entry: &Value) {
        let Some(waba_id) = entry.get("id").and_then(Value::as_str) else {
            let phone_number_id = first_phone_number_id(entry);
            let reason = "missing field `id` or not a string";
            self.reject(phone_number_id.as_ref(), None, path, reason, entry);
            return;
        };
        match entry.get("changes") {
            None => {}
            Some(Value::Array(changes)) => {
                for (index, change) in changes.iter().enumerate() {
                    self.change(waba_id, format!("{path}.changes[{index}]"), change);
                }
            }
            Some(other) => {
                let phone_number_id = first_phone_number_id(entry);
                let path = format!("{path}.changes");
                let reason = "expected an array";
                self.reject(phone_number_id.as_ref(), Some(waba_id), path, reason, other);
            }
        }
    }

    fn change(&mut self, waba_id: &str, path: String, change: &Value) {
        let value = change.get("value").unwrap_or(&Value::Null);
        let Some(field) = change.get("field").and_then(Value::as_str) else {
            let phone_number_id = phone_number_id(value);
            let reason = "missing field `field` or not a string";
            self.reject(
                phone_number_id.as_ref(),
                Some(waba_id),
                path,
                reason,
                change,
            );
            return;
        };
        if field != FIELD_MESSAGES && field != FIELD_SMB_MESSAGE_ECHOES {
            self.events.push(WebhookEvent::Ignored {
                phone_number_id: phone_number_id(value),
                waba_id: waba_id.to_owned(),
                reason: IgnoredReason::UnknownField {
                    field: field.to_owned(),
                },
            });
            return;
        }
        let metadata = match value.get("metadata") {
            Some(metadata) => Metadata::deserialize(metadata).map_err(|e| e.to_string()),
            None => Err("missing field `metadata`".to_owned()),
        };
        let phone_number_id = match metadata {
            Ok(metadata) => metadata.phone_number_id,
            Err(reason) => {
                let reason = format!("metadata: {reason}");
                self.reject(None, Some(waba_id), path, reason, change);
                return;
            }
        };
        let mut items = Items {
            walk: self,
            phone_number_id: &phone_number_id,
            waba_id,
            path: format!("{path}.value"),
            value,
        };
        if field == FIELD_MESSAGES {
            items.messages();
        } else {
            items.echoes();
        }
    }
}

/// The items of one `messages` or `smb_message_echoes` change.
struct Items<'a> {
    walk: &'a mut Walk,
    phone_number_id: &'a PhoneNumberId,
    waba_id: &'a str,
    path: String,
    value: &'a Value,
}

impl Items<'_> {
    /// Contacts, messages, statuses, then one ignored item for the change's errors.
    fn messages(&mut self) {
        let contacts: Vec<Contact> = self.list("contacts");
        for message in self.list::<Message>("messages") {
            let event = WebhookEvent::Inbound {
                phone_number_id: self.phone_number_id.clone(),
                waba_id: self.waba_id.to_owned(),
                message: message.to_inbound(&contacts),
            };
            self.walk.events.push(event);
        }
        for status in self.list::<Status>("statuses") {
            let event = match status.to_update() {
                Ok(update) => WebhookEvent::Status {
                    phone_number_id: self.phone_number_id.clone(),
                    waba_id: self.waba_id.to_owned(),
                    status: update,
                },
                Err(reason) => self.ignored(reason),
            };
            self.walk.events.push(event);
        }
        let errors: Vec<ErrorDetail> = self.list("errors");
        if !errors.is_empty() {
            let errors = errors.iter().map(ErrorDetail::to_info).collect();
            let event = self.ignored(IgnoredReason::Errors { errors });
            self.walk.events.push(event);
        }
    }

    /// The business's echoed messages.
    fn echoes(&mut self) {
        for echo in self.list::<MessageEcho>("message_echoes") {
            let event = match echo.to_echo() {
                Ok(echo) => WebhookEvent::Echo {
                    phone_number_id: self.phone_number_id.clone(),
                    waba_id: self.waba_id.to_owned(),
                    echo,
                },
                Err(reason) => self.ignored(reason),
            };
            self.walk.events.push(event);
        }
    }

    fn ignored(&self, reason: IgnoredReason) -> WebhookEvent {
        WebhookEvent::Ignored {
            phone_number_id: Some(self.phone_number_id.clone()),
            waba_id: self.waba_id.to_owned(),
            reason,
        }
    }

    /// The readable items of the list `key` (absent: none); each unreadable one is rejected
    /// (before the events of the list), a list that is not an array as a whole.
    fn list<T: for<'de> Deserialize<'de>>(&mut self, key: &str) -> Vec<T> {
        let path = format!("{}.{key}", self.path);
        let items = match self.value.get(key) {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                let (phone, waba) = (self.phone_number_id, self.waba_id);
                self.walk
                    .reject(Some(phone), Some(waba), path, "expected an array", other);
                return Vec::new();
            }
        };
        let mut read = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match T::deserialize(item) {
                Ok(value) => read.push(value),
                Err(error) => {
                    let (phone, waba) = (self.phone_number_id, self.waba_id);
                    let path = format!("{path}[{index}]");
                    self.walk.reject(Some(phone), Some(waba), path, error, item);
                }
            }
        }
        read
    }
}

/// The `metadata.phone_number_id` of a change's value, when it reads.
fn phone_number_id(value: &Value) -> Option<PhoneNumberId> {
    value
        .pointer("/metadata/phone_number_id")
        .and_then(Value::as_str)
        .and_then(|id| PhoneNumberId::new(id).ok())
}

/// The phone number id of an entry's first change that has one: the best guess of whose
/// entry an unreadable one is.
fn first_phone_number_id(entry: &Value) -> Option<PhoneNumberId> {
    entry
        .get("changes")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|change| phone_number_id(change.get("value")?))
}
