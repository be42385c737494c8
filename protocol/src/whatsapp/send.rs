//! Graph API request and response bodies for sending: text, templates, interactive messages
//! (reply buttons, lists), images and documents by link, mark-read with a typing indicator,
//! and the media URL lookup.
//!
//! Requests are `POST /{phone-number-id}/messages`; the media lookup is `GET /{media-id}`.

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, Wamid};

/// The `messaging_product` of every Cloud API request.
pub const MESSAGING_PRODUCT: &str = "whatsapp";

/// The longest text body Meta accepts, in characters.
pub const MAX_TEXT_BODY_CHARS: usize = 4096;

/// A free-form text message (allowed within 24 hours of the customer's last message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTextRequest {
    /// Always `whatsapp`.
    pub messaging_product: String,
    /// Always `individual`.
    pub recipient_type: String,
    /// The customer's WhatsApp id (or phone number).
    pub to: String,
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The message this one replies to (shown quoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReplyContext>,
    /// The text.
    pub text: TextBody,
}

impl SendTextRequest {
    /// A text message to `to` (sent to its `wa_id`), optionally quoting `reply_to`, with
    /// link previews off.
    pub fn new(to: &ChatId, body: impl Into<String>, reply_to: Option<&Wamid>) -> Self {
        Self {
            messaging_product: MESSAGING_PRODUCT.to_owned(),
            recipient_type: "individual".to_owned(),
            to: to.as_str().to_owned(),
            kind: "text".to_owned(),
            context: reply_to.map(|id| ReplyContext {
                message_id: id.clone(),
            }),
            text: TextBody {
                preview_url: false,
                body: body.into(),
            },
        }
    }

    /// Turns link previews on or off.
    #[must_use]
    pub fn with_preview_url(mut self, preview_url: bool) -> Self {
        self.text.preview_url = preview_url;
        self
    }
}

/// The message a sent message replies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyContext {
    /// The quoted message.
    pub message_id: Wamid,
}

/// The `text` object of a [`SendTextRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextBody {
    /// Whether WhatsApp renders a preview of the first URL.
    pub preview_url: bool,
    /// The text (at most [`MAX_TEXT_BODY_CHARS`] characters).
    pub body: String,
}

/// An approved template message (the only kind allowed outside the 24-hour window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTemplateRequest {
    /// Always `whatsapp`.
    pub messaging_product: String,
    /// The customer's WhatsApp id (or phone number).
    pub to: String,
    /// Always `template`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The template and its parameters.
    pub template: Template,
}

impl SendTemplateRequest {
    /// The template `name` in `language_code` (`en_US`, `pt_BR`, …) to `to`.
    pub fn new(
        to: &ChatId,
        name: impl Into<String>,
        language_code: impl Into<String>,
        components: Vec<TemplateComponent>,
    ) -> Self {
        Self {
            messaging_product: MESSAGING_PRODUCT.to_owned(),
            to: to.as_str().to_owned(),
            kind: "template".to_owned(),
            template: Template {
                name: name.into(),
                language: TemplateLanguage {
                    code: language_code.into(),
                },
                components,
            },
        }
    }
}

/// The `template` object of a [`SendTemplateRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The approved template's name.
    pub name: String,
    /// Its language.
    pub language: TemplateLanguage,
    /// Values for its variables, per component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

/// A template language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLanguage {
    /// The language code (`en_US`, …).
    pub code: String,
}

/// Parameters for one component of a template (header, body or a button).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateComponent {
    /// `header`, `body` or `button`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The button type (`quick_reply`, `url`), for buttons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
    /// The button's position (`"0"`, `"1"`, …), for buttons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// The values, in variable order.
    #[serde(default)]
    pub parameters: Vec<TemplateParameter>,
}

impl TemplateComponent {
    /// Values for the body's variables.
    pub fn body(parameters: Vec<TemplateParameter>) -> Self {
        Self {
            kind: "body".to_owned(),
            sub_type: None,
            index: None,
            parameters,
        }
    }

    /// Values for the header's variables.
    pub fn header(parameters: Vec<TemplateParameter>) -> Self {
        Self {
            kind: "header".to_owned(),
            sub_type: None,
            index: None,
            parameters,
        }
    }

    /// The payload returned when the quick-reply button at `index` is tapped.
    pub fn quick_reply_button(index: u8, payload: impl Into<String>) -> Self {
        Self {
            kind: "button".to_owned(),
            sub_type: Some("quick_reply".to_owned()),
            index: Some(index.to_string()),
            parameters: vec![TemplateParameter::Payload {
                payload: payload.into(),
            }],
        }
    }
}

/// One template variable's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TemplateParameter {
    /// A text value.
    Text {
        /// The text.
        text: String,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A quick-reply button's payload.
    Payload {
        /// The payload.
        payload: String,
    },
    /// An image (header).
    Image {
        /// The image.
        image: MediaRef,
    },
    /// A document (header).
    Document {
        /// The document.
        document: MediaRef,
    },
    /// A video (header).
    Video {
        /// The video.
        video: MediaRef,
    },
}

impl TemplateParameter {
    /// A positional text value.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            parameter_name: None,
        }
    }
}

/// A media file for a template header: an uploaded media id or a public link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// An uploaded media id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What an outbound message carries other than plain text, as the Cloud API names it: the
/// object sent under the message's `type`. Its JSON (externally tagged,
/// `{"template": {…}}`) is what the store keeps to send it again after a restart; between
/// nodes (bincode) it travels as that JSON text ([`OutboundContent::as_json_text`]), because
/// the template's parameters are internally tagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundContent {
    /// An approved template.
    Template(Template),
    /// Reply buttons or a list.
    Interactive(Interactive),
    /// An image by link.
    Image(Media),
    /// A document by link.
    Document(Media),
}

impl OutboundContent {
    /// The message `type`: `template`, `interactive`, `image` or `document`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Template(_) => "template",
            Self::Interactive(_) => "interactive",
            Self::Image(_) => "image",
            Self::Document(_) => "document",
        }
    }

    /// A readable rendition for the chat log and the assistant's history: the caption or the
    /// body text, `[template <name>]`, `[image]`, `[document <filename>]`.
    pub fn text(&self) -> String {
        match self {
            Self::Template(template) => format!("[template {}]", template.name),
            Self::Interactive(interactive) => interactive.body.text.clone(),
            Self::Image(media) => media
                .caption
                .clone()
                .unwrap_or_else(|| "[image]".to_owned()),
            Self::Document(media) => match (&media.caption, &media.filename) {
                (Some(caption), _) => caption.clone(),
                (None, Some(filename)) => format!("[document {filename}]"),
                (None, None) => "[document]".to_owned(),
            },
        }
    }

    /// The JSON the store keeps.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("outbound content always encodes as JSON")
    }

    /// Reads the JSON the store keeps.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// `#[serde(with = "…")]` for an [`OutboundContent`] field of a type that travels in bincode:
/// the content as its JSON text.
pub mod content_as_json_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::OutboundContent;

    /// Writes the content's JSON as a string.
    pub fn serialize<S: Serializer>(
        content: &OutboundContent,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&content.to_json())
    }

    /// Reads the content from a JSON string (into an `OutboundContent` or a box of one).
    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: From<OutboundContent>,
    {
        let json = String::deserialize(deserializer)?;
        let content = OutboundContent::from_json(&json).map_err(serde::de::Error::custom)?;
        Ok(T::from(content))
    }
}

/// A send of [`OutboundContent`]: `POST /{phone-number-id}/messages` with `type` and the
/// object of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendContentRequest {
    /// Always `whatsapp`.
    pub messaging_product: String,
    /// Always `individual`.
    pub recipient_type: String,
    /// The customer's WhatsApp id.
    pub to: String,
    /// `template`, `interactive`, `image` or `document`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The template, for `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// The interactive object, for `interactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
    /// The image, for `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Media>,
    /// The document, for `document`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Media>,
}

impl SendContentRequest {
    /// `content` to `to`.
    pub fn new(to: &ChatId, content: &OutboundContent) -> Self {
        let mut request = Self {
            messaging_product: MESSAGING_PRODUCT.to_owned(),
            recipient_type: "individual".to_owned(),
            to: to.as_str().to_owned(),
            kind: content.kind().to_owned(),
            template: None,
            interactive: None,
            image: None,
            document: None,
        };
        match content.clone() {
            OutboundContent::Template(template) => request.template = Some(template),
            OutboundContent::Interactive(interactive) => request.interactive = Some(interactive),
            OutboundContent::Image(image) => request.image = Some(image),
            OutboundContent::Document(document) => request.document = Some(document),
        }
        request
    }

    /// The content the request carries, if its `type` names one that is present.
    pub fn content(&self) -> Option<OutboundContent> {
        match self.kind.as_str() {
            "template" => self.template.clone().map(OutboundContent::Template),
            "interactive" => self.interactive.clone().map(OutboundContent::Interactive),
            "image" => self.image.clone().map(OutboundContent::Image),
            "document" => self.document.clone().map(OutboundContent::Document),
            _ => None,
        }
    }
}

/// An image or document sent by link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// The public `https` URL Meta downloads it from.
    pub link: String,
    /// The caption shown under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The file name shown (documents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// The `interactive` object: reply buttons (`type` `button`) or a list (`type` `list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    /// `button` or `list`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A text header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<InteractiveHeader>,
    /// The message text.
    pub body: InteractiveText,
    /// A footer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<InteractiveText>,
    /// The buttons or the list.
    pub action: InteractiveAction,
}

/// A text header of an [`Interactive`] message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveHeader {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The header text.
    pub text: String,
}

/// A text part (body, footer) of an [`Interactive`] message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveText {
    /// The text.
    pub text: String,
}

/// What the customer can tap: reply `buttons`, or a list's `button` and `sections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveAction {
    /// The label of the button that opens a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<String>,
    /// Reply buttons (at most 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<ReplyButton>,
    /// A list's sections (at most 10 rows in all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<ListSection>,
}

/// One reply button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyButton {
    /// Always `reply`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id and title.
    pub reply: ButtonReply,
}

impl ReplyButton {
    /// A reply button with `id` (what the webhook reports when tapped) and `title`.
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            kind: "reply".to_owned(),
            reply: ButtonReply {
                id: id.into(),
                title: title.into(),
            },
        }
    }
}

/// A reply button's id and title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonReply {
    /// The id the webhook reports when the button is tapped.
    pub id: String,
    /// The label (at most 20 characters).
    pub title: String,
}

/// A section of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSection {
    /// The section's title (required when there are several sections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its rows.
    pub rows: Vec<ListRow>,
}

/// A row of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRow {
    /// The id the webhook reports when the row is chosen.
    pub id: String,
    /// The row's title (at most 24 characters).
    pub title: String,
    /// A line under the title (at most 72 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Marks an inbound message (and the ones before it) as read, optionally showing a typing
/// indicator until the reply is sent (or 25 seconds pass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkReadRequest {
    /// Always `whatsapp`.
    pub messaging_product: String,
    /// Always `read`.
    pub status: String,
    /// The inbound message to mark.
    pub message_id: Wamid,
    /// The typing indicator to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing_indicator: Option<TypingIndicator>,
}

impl MarkReadRequest {
    /// Marks `message_id` as read.
    pub fn read(message_id: &Wamid) -> Self {
        Self {
            messaging_product: MESSAGING_PRODUCT.to_owned(),
            status: "read".to_owned(),
            message_id: message_id.clone(),
            typing_indicator: None,
        }
    }

    /// Marks `message_id` as read and shows the customer a typing indicator.
    pub fn read_with_typing(message_id: &Wamid) -> Self {
        Self {
            typing_indicator: Some(TypingIndicator {
                kind: "text".to_owned(),
            }),
            ..Self::read(message_id)
        }
    }
}

/// The typing indicator of a [`MarkReadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingIndicator {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The response to a send (text, template, interactive or media).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    /// Always `whatsapp`.
    #[serde(default)]
    pub messaging_product: String,
    /// The recipient as given and its WhatsApp id.
    #[serde(default)]
    pub contacts: Vec<SentContact>,
    /// The sent message (one).
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

impl SendMessageResponse {
    /// The id of the sent message: the key of its later status updates.
    pub fn wamid(&self) -> Option<&Wamid> {
        self.messages.first().map(|message| &message.id)
    }
}

/// A recipient in a [`SendMessageResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentContact {
    /// The `to` value of the request.
    pub input: String,
    /// The recipient's WhatsApp id (may differ from the input).
    pub wa_id: String,
}

/// A message in a [`SendMessageResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// The new message's id.
    pub id: Wamid,
    /// `accepted`, `held_for_quality_assessment`, … (templates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// The response to a [`MarkReadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkReadResponse {
    /// Whether the message was marked.
    pub success: bool,
}

/// The response to `GET /{media-id}`: a download URL valid for 5 minutes that needs the
/// bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaUrlResponse {
    /// Always `whatsapp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    /// The download URL.
    pub url: String,
    /// The MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The SHA-256 of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The size in bytes (Meta sends a string).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_util::opt_u64_string"
    )]
    pub file_size: Option<u64>,
    /// The media id.
    pub id: String,
}
