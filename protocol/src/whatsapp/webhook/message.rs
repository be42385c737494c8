//! The messages a webhook carries: a customer's inbound messages, the business's echoes, and
//! their content objects as Meta names them after the message `type`.

use serde::{Deserialize, Serialize};

use super::ErrorDetail;
use crate::ids::{ChatId, Wamid};
use crate::serde_util::u64_string;
use crate::whatsapp::inbound::{Echo, IgnoredReason, InboundMessage, MessageContent};

/// The MIME type assumed for media when Meta sends none.
const UNKNOWN_MIME_TYPE: &str = "application/octet-stream";

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
