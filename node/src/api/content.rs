//! What `message.send` sends: exactly one of a text, a template, an interactive message
//! (reply buttons or a list), an image or a document ([`SendRequest`]), checked against the
//! Cloud API's limits before anything is recorded, and the Cloud API object it becomes
//! ([`OutboundContent`]).
//!
//! | kind | fields | limits (a 400 `invalid_field` naming the field otherwise) |
//! |---|---|---|
//! | `text` | a string | 1–4096 characters, not blank |
//! | `template` | `name`, `language`, optional `components` | name 1–512 of `[a-z0-9_]`; language `en`, `en_US`, `fil`…; at most 10 components of type `header`, `body` or `button` (a button with `sub_type` and `index`) |
//! | `interactive` | `body`, optional `header`, `footer`, and exactly one of `buttons`, `list` | body 1–1024 characters (4096 for a list), header and footer at most 60; 1–3 buttons with distinct `id` (1–256) and `title` (1–20); a list's `button` 1–20, 1–10 sections (each with a `title` of at most 24 when there are several), 1–10 rows in all with distinct `id` (1–200), `title` 1–24, `description` at most 72 |
//! | `image` | `link`, optional `caption` | link an `https` URL of at most 2048 characters; caption at most 1024 |
//! | `document` | `link`, optional `caption`, `filename` | as an image; filename at most 240 |

use std::collections::HashSet;

use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::whatsapp::send::{
    Interactive, InteractiveAction, InteractiveHeader, InteractiveText, ListRow, ListSection,
    Media, ReplyButton, Template, TemplateComponent, TemplateLanguage, TemplateParameter,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiError;

/// Longest text, in characters (WhatsApp's limit for a text body).
pub const MAX_TEXT_CHARS: usize = 4_096;

/// Most reply buttons in an interactive message.
pub const MAX_BUTTONS: usize = 3;

/// Longest reply button title, in characters.
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;

/// Most rows of a list, over all its sections.
pub const MAX_LIST_ROWS: usize = 10;

/// A message to send: exactly one of `text`, `template`, `interactive`, `image`,
/// `document`, and optionally the client's idempotency key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// A text, 1 to 4096 characters.
    #[schema(example = "Hi, this is Anna from Acme: your order ships today.")]
    pub text: Option<String>,
    /// An approved template (the only kind Meta delivers outside the 24-hour window).
    pub template: Option<TemplateRequest>,
    /// Reply buttons or a list.
    pub interactive: Option<InteractiveRequest>,
    /// An image by link.
    pub image: Option<MediaRequest>,
    /// A document by link.
    pub document: Option<DocumentRequest>,
    /// The client's idempotency key, 1 to 128 characters: the tenant's same key sent again
    /// sends nothing and answers the first message's `outbound_id`.
    #[schema(example = "order-1042-shipped")]
    pub client_ref: Option<String>,
}

/// A template message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// The approved template's name.
    #[schema(example = "order_update")]
    pub name: String,
    /// Its language code (`en_US`, `pt_BR`, `en`…).
    #[schema(example = "en_US")]
    pub language: String,
    /// Values for its variables, per component, exactly as the Cloud API takes them
    /// (`{"type": "body", "parameters": [{"type": "text", "text": "Kerry"}]}`).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub components: Vec<TemplateComponent>,
}

/// An interactive message: a text with reply buttons, or with a list to choose from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractiveRequest {
    /// The message text.
    #[schema(example = "Which size do you wear?")]
    pub body: String,
    /// A text header.
    pub header: Option<String>,
    /// A footer.
    pub footer: Option<String>,
    /// Up to 3 reply buttons.
    pub buttons: Option<Vec<ButtonRequest>>,
    /// A list.
    pub list: Option<ListRequest>,
}

/// A reply button.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonRequest {
    /// What the webhook reports when it is tapped.
    #[schema(example = "size-42")]
    pub id: String,
    /// Its label, 1 to 20 characters.
    #[schema(example = "42")]
    pub title: String,
}

/// A list: the button that opens it and its sections.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// The label of the button that opens the list, 1 to 20 characters.
    #[schema(example = "Choose a size")]
    pub button: String,
    /// 1 to 10 sections, 10 rows at most in all.
    pub sections: Vec<SectionRequest>,
}

/// A section of a list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionRequest {
    /// Its title (required when there are several sections), at most 24 characters.
    pub title: Option<String>,
    /// Its rows.
    pub rows: Vec<RowRequest>,
}

/// A row of a list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowRequest {
    /// What the webhook reports when it is chosen.
    pub id: String,
    /// Its title, 1 to 24 characters.
    pub title: String,
    /// A line under the title, at most 72 characters.
    pub description: Option<String>,
}

/// An image by link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaRequest {
    /// A public `https` URL, at most 2048 characters (the pattern is what the document can
    /// say; the handler parses the URL).
    #[schema(
        example = "https://example.com/shoes.jpg",
        pattern = "^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?$",
        max_length = 2048
    )]
    pub link: String,
    /// A caption, at most 1024 characters.
    pub caption: Option<String>,
}

/// A document by link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRequest {
    /// A public `https` URL, at most 2048 characters (the pattern is what the document can
    /// say; the handler parses the URL).
    #[schema(
        example = "https://example.com/invoice-1042.pdf",
        pattern = "^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?$",
        max_length = 2048
    )]
    pub link: String,
    /// A caption, at most 1024 characters.
    pub caption: Option<String>,
    /// The file name shown, at most 240 characters.
    pub filename: Option<String>,
}

/// What a valid [`SendRequest`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text.
    Text(String),
    /// A template, interactive or media message.
    Content(OutboundContent),
}

impl SendRequest {
    /// The message, once every limit is checked; 400 otherwise.
    pub fn message(self) -> Result<Message, ApiError> {
        let given: Vec<&str> = [
            ("text", self.text.is_some()),
            ("template", self.template.is_some()),
            ("interactive", self.interactive.is_some()),
            ("image", self.image.is_some()),
            ("document", self.document.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let content = match (
            self.text,
            self.template,
            self.interactive,
            self.image,
            self.document,
        ) {
            (Some(text), None, None, None, None) => return text_message(text).map(Message::Text),
            (None, Some(template), None, None, None) => template_content(template)?,
            (None, None, Some(interactive), None, None) => interactive_content(interactive)?,
            (None, None, None, Some(image), None) => {
                OutboundContent::Image(media("image", image.link, image.caption, None)?)
            }
            (None, None, None, None, Some(document)) => OutboundContent::Document(media(
                "document",
                document.link,
                document.caption,
                document.filename,
            )?),
            _ => {
                let got = if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                };
                return Err(ApiError::Malformed(format!(
                    "exactly one of text, template, interactive, image, document is required, got {got}"
                )));
            }
        };
        Ok(Message::Content(content))
    }
}

fn text_message(text: String) -> Result<String, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::invalid(
            "text",
            format!("{chars} characters, at most {MAX_TEXT_CHARS} are allowed"),
        ));
    }
    Ok(text)
}

/// `value` has 1 to `max` characters and is not blank (or, with `min` 0, at most `max`).
fn length(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if min > 0 && value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if chars > max {
        return Err(ApiError::invalid(
            field,
            format!("{chars} characters, at most {max} are allowed"),
        ));
    }
    Ok(())
}

fn template_content(template: TemplateRequest) -> Result<OutboundContent, ApiError> {
    length("template.name", &template.name, 1, 512)?;
    if !template
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::invalid(
            "template.name",
            "only lowercase letters, digits and _ are allowed",
        ));
    }
    if !language_code(&template.language) {
        return Err(ApiError::invalid(
            "template.language",
            format!(
                "expected a language code such as en or en_US, got {:?}",
                template.language
            ),
        ));
    }
    if template.components.len() > 10 {
        return Err(ApiError::invalid(
            "template.components",
            format!("{} components, at most 10", template.components.len()),
        ));
    }
    for component in &template.components {
        match component.kind.as_str() {
            "header" | "body" => {}
            "button" if component.sub_type.is_some() && component.index.is_some() => {}
            "button" => {
                return Err(ApiError::invalid(
                    "template.components",
                    "a button component needs sub_type and index",
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    "template.components",
                    format!("unknown component type {other:?}: header, body or button"),
                ));
            }
        }
        for parameter in &component.parameters {
            if let TemplateParameter::Text { text, .. } = parameter {
                length("template.components", text, 1, 32_768)?;
            }
        }
    }
    Ok(OutboundContent::Template(Template {
        name: template.name,
        language: TemplateLanguage {
            code: template.language,
        },
        components: template.components,
    }))
}

/// `en`, `fil`, `en_US`, `zh_CN`…
fn language_code(code: &str) -> bool {
    let (language, region) = match code.split_once('_') {
        Some((language, region)) => (language, Some(region)),
        None => (code, None),
    };
    (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.chars().all(|c| c.is_ascii_uppercase()))
}

fn interactive_content(interactive: InteractiveRequest) -> Result<OutboundContent, ApiError> {
    if let Some(header) = &interactive.header {
        length("interactive.header", header, 1, 60)?;
    }
    if let Some(footer) = &interactive.footer {
        length("interactive.footer", footer, 1, 60)?;
    }
    let (kind, action, body_max) = match (interactive.buttons, interactive.list) {
        (Some(buttons), None) => ("button", buttons_action(buttons)?, 1_024),
        (None, Some(list)) => ("list", list_action(list)?, 4_096),
        _ => {
            return Err(ApiError::invalid(
                "interactive",
                "exactly one of buttons and list is required",
            ));
        }
    };
    length("interactive.body", &interactive.body, 1, body_max)?;
    Ok(OutboundContent::Interactive(Interactive {
        kind: kind.to_owned(),
        header: interactive.header.map(|text| InteractiveHeader {
            kind: "text".to_owned(),
            text,
        }),
        body: InteractiveText {
            text: interactive.body,
        },
        footer: interactive.footer.map(|text| InteractiveText { text }),
        action,
    }))
}

fn buttons_action(buttons: Vec<ButtonRequest>) -> Result<InteractiveAction, ApiError> {
    if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
        return Err(ApiError::invalid(
            "interactive.buttons",
            format!("{} buttons, 1 to {MAX_BUTTONS} are allowed", buttons.len()),
        ));
    }
    let (mut ids, mut titles) = (HashSet::new(), HashSet::new());
    for button in &buttons {
        length("interactive.buttons.id", &button.id, 1, 256)?;
        length(
            "interactive.buttons.title",
            &button.title,
            1,
            MAX_BUTTON_TITLE_CHARS,
        )?;
        if !ids.insert(button.id.as_str()) {
            return Err(ApiError::invalid(
                "interactive.buttons.id",
                format!("{:?} is used twice", button.id),
            ));
        }
        if !titles.insert(button.title.as_str()) {
            return Err(ApiError::invalid(
                "interactive.buttons.title",
                format!("{:?} is used twice", button.title),
            ));
        }
    }
    Ok(InteractiveAction {
        button: None,
        buttons: buttons
            .into_iter()
            .map(|b| ReplyButton::new(b.id, b.title))
            .collect(),
        sections: Vec::new(),
    })
}

fn list_action(list: ListRequest) -> Result<InteractiveAction, ApiError> {
    length("interactive.list.button", &list.button, 1, 20)?;
    let sections = list.sections.len();
    if sections == 0 || sections > 10 {
        return Err(ApiError::invalid(
            "interactive.list.sections",
            format!("{sections} sections, 1 to 10 are allowed"),
        ));
    }
    let rows: usize = list.sections.iter().map(|s| s.rows.len()).sum();
    if rows == 0 || rows > MAX_LIST_ROWS {
        return Err(ApiError::invalid(
            "interactive.list.sections.rows",
            format!("{rows} rows in all, 1 to {MAX_LIST_ROWS} are allowed"),
        ));
    }
    let mut ids = HashSet::new();
    for section in &list.sections {
        match &section.title {
            Some(title) => length("interactive.list.sections.title", title, 1, 24)?,
            None if sections > 1 => {
                return Err(ApiError::invalid(
                    "interactive.list.sections.title",
                    "required when there are several sections",
                ));
            }
            None => {}
        }
        if section.rows.is_empty() {
            return Err(ApiError::invalid(
                "interactive.list.sections.rows",
                "a section needs at least one row",
            ));
        }
        for row in &section.rows {
            length("interactive.list.sections.rows.id", &row.id, 1, 200)?;
            length("interactive.list.sections.rows.title", &row.title, 1, 24)?;
            if let Some(description) = &row.description {
                length(
                    "interactive.list.sections.rows.description",
                    description,
                    0,
                    72,
                )?;
            }
            if !ids.insert(row.id.as_str()) {
                return Err(ApiError::invalid(
                    "interactive.list.sections.rows.id",
                    format!("{:?} is used twice", row.id),
                ));
            }
        }
    }
    Ok(InteractiveAction {
        button: Some(list.button),
        buttons: Vec::new(),
        sections: list
            .sections
            .into_iter()
            .map(|section| ListSection {
                title: section.title,
                rows: section
                    .rows
                    .into_iter()
                    .map(|row| ListRow {
                        id: row.id,
                        title: row.title,
                        description: row.description,
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn media(
    kind: &'static str,
    link: String,
    caption: Option<String>,
    filename: Option<String>,
) -> Result<Media, ApiError> {
    let (link_field, caption_field, filename_field) = match kind {
        "image" => ("image.link", "image.caption", "image.filename"),
        _ => ("document.link", "document.caption", "document.filename"),
    };
    if link.chars().count() > 2_048 {
        return Err(ApiError::invalid(link_field, "longer than 2048 characters"));
    }
    match reqwest::Url::parse(&link) {
        Ok(url) if url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(url) => {
            return Err(ApiError::invalid(
                link_field,
                format!("must be an https URL, got scheme {:?}", url.scheme()),
            ));
        }
        Err(error) => return Err(ApiError::invalid(link_field, format!("not a URL: {error}"))),
    }
    if let Some(caption) = &caption {
        length(caption_field, caption, 0, 1_024)?;
    }
    if let Some(filename) = &filename {
        length(filename_field, filename, 1, 240)?;
    }
    Ok(Media {
        link,
        caption,
        filename,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Message, ApiError> {
        serde_json::from_value::<SendRequest>(json)
            .unwrap()
            .message()
    }

    fn refused(json: serde_json::Value) -> String {
        let error = request(json).unwrap_err();
        assert_eq!(error.status(), 400, "{error}");
        error.to_string()
    }

    #[test]
    fn exactly_one_kind() {
        assert!(refused(serde_json::json!({})).contains("got none"));
        let both = serde_json::json!({"text": "hi", "image": {"link": "https://x.test/a.png"}});
        assert!(refused(both).contains("got text, image"));
        assert_eq!(
            request(serde_json::json!({"text": "hi"})).unwrap(),
            Message::Text("hi".into())
        );
    }

    #[test]
    fn interactive_limits_are_checked() {
        let buttons = |n: usize| {
            let buttons: Vec<_> = (0..n)
                .map(|i| serde_json::json!({"id": format!("b{i}"), "title": format!("B{i}")}))
                .collect();
            serde_json::json!({"interactive": {"body": "Pick", "buttons": buttons}})
        };
        assert!(request(buttons(3)).is_ok());
        assert!(refused(buttons(4)).starts_with("interactive.buttons: 4 buttons"));
        assert!(refused(buttons(0)).starts_with("interactive.buttons: 0 buttons"));
        let long = serde_json::json!({"interactive": {"body": "Pick",
            "buttons": [{"id": "a", "title": "x".repeat(21)}]}});
        assert!(refused(long).starts_with("interactive.buttons.title: 21 characters"));
        let rows: Vec<_> = (0..11)
            .map(|i| serde_json::json!({"id": format!("r{i}"), "title": "Row"}))
            .collect();
        let list = serde_json::json!({"interactive": {"body": "Pick",
            "list": {"button": "Sizes", "sections": [{"rows": rows}]}}});
        assert!(refused(list).starts_with("interactive.list.sections.rows: 11 rows"));
    }

    #[test]
    fn links_must_be_https() {
        let image = |link: &str| serde_json::json!({"image": {"link": link}});
        assert!(request(image("https://cdn.example.com/a.png")).is_ok());
        assert!(
            refused(image("http://cdn.example.com/a.png"))
                .starts_with("image.link: must be an https URL")
        );
        assert!(refused(image("not a url")).starts_with("image.link: not a URL"));
    }

    #[test]
    fn template_name_and_language_are_checked() {
        let template = |name: &str, language: &str| serde_json::json!({"template": {"name": name, "language": language}});
        assert!(request(template("order_update", "en_US")).is_ok());
        assert!(request(template("order_update", "fil")).is_ok());
        assert!(refused(template("Order Update", "en_US")).starts_with("template.name:"));
        assert!(refused(template("order_update", "english")).starts_with("template.language:"));
    }
}
