//! The Graph API as the fake speaks it: the two request bodies of the messages endpoint
//! (a text send, a mark-read) and the error answers Meta gives (auth, invalid parameter,
//! server error, throughput and pair-rate limits).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use salesboy_protocol::whatsapp::{MarkReadRequest, SendTextRequest};
use serde_json::{Value, json};

/// What one request asked for, once parsed.
pub(super) enum Request {
    Send(SendTextRequest),
    MarkRead(MarkReadRequest),
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
        return serde_json::from_value(value)
            .map(Request::Send)
            .map_err(|_| invalid());
    }
    Err(invalid())
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
