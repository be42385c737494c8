//! Error answers over HTTP: an [`ApiError`] as its status and the JSON body users see, and
//! the extractors whose rejections are API errors.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::warn;
use utoipa::{IntoResponses, ToSchema};

use crate::api::ApiError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong, lowercase.
    #[schema(example = "unknown tenant acme")]
    error: String,
}

/// The refusals every route behind the admin token documents: no or wrong token, a
/// tenant's token where it does not reach.
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "never built: it documents answers in the OpenAPI document"
)]
pub(super) enum TokenRefusal {
    /// No or wrong admin token.
    #[response(status = 401, description = "no or wrong admin token")]
    Unauthorized(ErrorBody),
    /// A tenant's API token on a route it does not reach.
    #[response(status = 403, description = "a tenant's api token out of its reach")]
    Forbidden(ErrorBody),
    /// Too many wrong tokens from this client: locked out for `Retry-After` seconds.
    #[response(status = 429, description = "too many wrong tokens from this client")]
    TooManyAttempts(ErrorBody),
}

/// The refusals every route about one tenant documents beside its own: no or wrong token,
/// another tenant's token, unknown tenant, database unavailable.
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "never built: it documents answers in the OpenAPI document"
)]
pub(super) enum TenantRefusals {
    /// No or wrong admin token.
    #[response(status = 401, description = "no or wrong admin token")]
    Unauthorized(ErrorBody),
    /// Another tenant's API token (or a tenant token on its tokens).
    #[response(status = 403, description = "another tenant's api token")]
    Forbidden(ErrorBody),
    /// Too many wrong tokens from this client: locked out for `Retry-After` seconds.
    #[response(status = 429, description = "too many wrong tokens from this client")]
    TooManyAttempts(ErrorBody),
    /// Unknown tenant.
    #[response(status = 404, description = "unknown tenant")]
    UnknownTenant(ErrorBody),
    /// Database unavailable.
    #[response(status = 503, description = "database unavailable")]
    Unavailable(ErrorBody),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = self.to_string();
        let retry_after = match &self {
            ApiError::TooManyAttempts { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        if status.is_server_error() {
            warn!(status = status.as_u16(), error = %error, "admin request failed");
        }
        let mut response = (status, Json(ErrorBody { error })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An extractor's rejection: 413 stays 413, anything else is a malformed request.
fn rejected(status: StatusCode, text: String) -> ApiError {
    let message = lowercase_first(&text);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(message)
    } else {
        ApiError::Malformed(message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            // "Failed to deserialize the JSON body into the target type: id: invalid type…":
            // keep the reason, which names the field.
            JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                let reason = text.split_once(": ").map_or(text.as_str(), |(_, r)| r);
                Self::Malformed(format!("invalid json body: {reason}"))
            }
            JsonRejection::MissingJsonContentType(_) => {
                Self::Malformed("expected content-type: application/json".to_owned())
            }
            other => rejected(other.status(), text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        rejected(rejection.status(), rejection.body_text())
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `axum::Json` whose rejections are API errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct ApiJson<T>(pub(super) T);

/// `axum::extract::Path` whose rejections are API errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct ApiPath<T>(pub(super) T);

/// `axum::extract::Query` whose rejections are API errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct ApiQuery<T>(pub(super) T);

/// The answer to a path no admin route serves.
pub(super) async fn unknown_route() -> ApiError {
    ApiError::UnknownRoute
}

/// The answer to a method a route does not serve.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// An optional JSON body read from its bytes (so no content type is needed when empty):
/// nothing, only whitespace or `null` is `T::default()`; anything else must be a JSON
/// object (serde's derived structs would also read an array such as `[null]`).
pub(super) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match Json::<serde_json::Value>::from_bytes(body)?.0 {
        serde_json::Value::Null => Ok(T::default()),
        object @ serde_json::Value::Object(_) => serde_path_to_error::deserialize(object)
            .map_err(|e| ApiError::Malformed(format!("invalid json body: {e}"))),
        _ => Err(ApiError::Malformed(
            "invalid json body: expected a JSON object".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_start_lowercase() {
        assert_eq!(lowercase_first("Failed to parse"), "failed to parse");
        assert_eq!(lowercase_first(""), "");
    }
}
