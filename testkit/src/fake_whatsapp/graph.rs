//! The Graph API as the fake speaks it: the request bodies of the messages endpoint (a
//! send of text, a template, an interactive message, an image or a document; a mark-read)
//! and the error answers Meta gives (auth, invalid parameter, server error, throughput and
//! pair-rate limits).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use salesboy_protocol::whatsapp::send::MAX_TEXT_BODY_CHARS;
use salesboy_protocol::whatsapp::{
    MarkReadRequest, OutboundContent, SendContentRequest, SendTextRequest,
};
use serde_json::{Value, json};

/// What one request asked for, once parsed.
pub(super) enum Request {
    Send(Send),
    MarkRead(MarkReadRequest),
}

/// A send, whatever its type.
pub(super) struct Send {
    /// The recipient.
    pub(super) to: String,
    /// The text, or the readable text of other content.
    pub(super) body: String,
    /// The quoted message.
    pub(super) reply_to: Option<String>,
    /// The template, interactive or media object; `None` for text.
    pub(super) content: Option<OutboundContent>,
    /// The request body as it came.
    pub(super) json: Value,
}

/// The send or mark-read a messages request asks for, or the error Graph answers.
pub(super) fn parse_request(body: &[u8]) -> Result<Request, GraphFailure> {
    let invalid = || GraphFailure::invalid("(#100) Invalid parameter");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    if value.get("status").and_then(Value::as_str) == Some("read") {
        return serde_json::from_value(value)
            .map(Request::MarkRead)
            .map_err(|_| invalid());
    }
    if value.get("type").and_then(Value::as_str) == Some("text") {
        let text: SendTextRequest = serde_json::from_value(value.clone()).map_err(|_| invalid())?;
        return Ok(Request::Send(Send {
            to: text.to,
            body: text.text.body,
            reply_to: text.context.map(|context| context.message_id.to_string()),
            content: None,
            json: value,
        }));
    }
    let request: SendContentRequest =
        serde_json::from_value(value.clone()).map_err(|_| invalid())?;
    let content = request.content().ok_or_else(invalid)?;
    Ok(Request::Send(Send {
        to: request.to,
        body: content.text(),
        reply_to: None,
        content: Some(content),
        json: value,
    }))
}

/// Whether Meta would take the send: a text of at most 4096 characters; content within the
/// Cloud API's rules the fake checks (up to 3 reply buttons of at most 20 characters, up to
/// 10 list rows, `https` links).
pub(super) fn acceptable(send: &Send) -> bool {
    let Some(content) = &send.content else {
        return send.body.chars().count() <= MAX_TEXT_BODY_CHARS;
    };
    match content {
        OutboundContent::Template(template) => !template.name.is_empty(),
        OutboundContent::Interactive(interactive) => {
            let action = &interactive.action;
            let rows: usize = action.sections.iter().map(|s| s.rows.len()).sum();
            match interactive.kind.as_str() {
                "button" => {
                    (1..=3).contains(&action.buttons.len())
                        && action
                            .buttons
                            .iter()
                            .all(|b| b.reply.title.chars().count() <= 20)
                }
                "list" => action.button.is_some() && (1..=10).contains(&rows),
                _ => false,
            }
        }
        OutboundContent::Image(media) | OutboundContent::Document(media) => {
            media.link.starts_with("https://")
        }
    }
}

/// A Graph API error answer.
pub(super) struct GraphFailure {
    pub(super) status: StatusCode,
    pub(super) code: i64,
    message: &'static str,
    details: Option<&'static str>,
}

impl GraphFailure {
    pub(super) fn auth(message: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: 190,
            message,
            details: None,
        }
    }

    pub(super) fn invalid(message: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 100,
            message,
            details: None,
        }
    }

    pub(super) fn server() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: 1,
            message: "An unknown error has occurred.",
            details: None,
        }
    }

    pub(super) fn throughput() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 130_429,
            message: "(#130429) Rate limit hit",
            details: Some(
                "Message failed to send because there were too many messages sent from this phone number in a short period of time",
            ),
        }
    }

    pub(super) fn pair_rate() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 131_056,
            message: "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            details: Some(
                "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
            ),
        }
    }
}

impl IntoResponse for GraphFailure {
    fn into_response(self) -> Response {
        let mut error = json!({
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "fbtrace_id": "AFakeTraceId0000000000",
        });
        if let (Some(details), Value::Object(fields)) = (self.details, &mut error) {
            fields.insert(
                "error_data".to_owned(),
                json!({"messaging_product": "whatsapp", "details": details}),
            );
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}
