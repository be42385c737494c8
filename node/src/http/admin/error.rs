//! Error answers: [`AdminError`], its one mapping to statuses, the JSON body users see, and
//! the extractors whose rejections are admin errors.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use salesboy_actors::node::ActivationError;
use salesboy_actors::store::StoreError;
use salesboy_protocol::{PhoneNumberId, TenantId};
use serde::Serialize;
use tracing::warn;
use utoipa::ToSchema;

use crate::cluster::RouteError;

/// Why an admin request failed. [`AdminError::status`] is the one place that gives each
/// failure its HTTP status; the message (the `Display` text) is what users read.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A field of the request is invalid (400); the message names it.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the request names it (`id`, `wa_id`, `limit`…).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request cannot be read (400): malformed JSON, path or query, a body that does
    /// not fit the route. The message says why, naming the field where it can.
    #[error("{0}")]
    Malformed(String),
    /// The body is larger than the route accepts (413).
    #[error("{0}")]
    TooLarge(String),
    /// No bearer token was sent (401).
    #[error("missing admin token: send authorization: bearer <token>")]
    MissingToken,
    /// The bearer token is not the admin token (401).
    #[error("invalid admin token")]
    InvalidToken,
    /// No such tenant (404).
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// No such knowledge document of the tenant (404).
    #[error("unknown knowledge document {document} of tenant {tenant}")]
    UnknownDocument {
        /// The tenant.
        tenant: TenantId,
        /// The document's id.
        document: i64,
    },
    /// No admin route at this path (404).
    #[error("no such admin route")]
    UnknownRoute,
    /// The route exists, but not with this method (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The phone number is attached to another tenant (409).
    #[error("phone_number_id: {number} already belongs to tenant {owner}")]
    NumberTaken {
        /// The number.
        number: PhoneNumberId,
        /// The tenant it belongs to.
        owner: TenantId,
    },
    /// The store failed; the status follows the store's error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A command did not reach its tenant; the status follows why.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// This node could not run the tenant; the status follows why.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// The node broke one of its own rules (500).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// 400 for a bad `field`.
    pub(super) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field,
            reason: reason.to_string(),
        }
    }

    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } | Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::UnknownTenant(_) | Self::UnknownDocument { .. } | Self::UnknownRoute => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NumberTaken { .. } => StatusCode::CONFLICT,
            Self::Store(error) => match error {
                StoreError::Unavailable { .. } | StoreError::StaleEpoch { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
                StoreError::Conflict { .. } => StatusCode::CONFLICT,
                StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
                StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Route(error) => match error {
                RouteError::UnknownTenant(_) => StatusCode::NOT_FOUND,
                RouteError::Unplaceable { .. } | RouteError::Unreachable { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                RouteError::Refused(_) | RouteError::RefusedBy { .. } | RouteError::Encode(_) => {
                    StatusCode::CONFLICT
                }
            },
            Self::Activation(error) => match error {
                ActivationError::UnknownTenant(_) => StatusCode::NOT_FOUND,
                ActivationError::AtCapacity { .. }
                | ActivationError::Store { .. }
                | ActivationError::Epoch { .. }
                | ActivationError::AlreadyHosted(_)
                | ActivationError::AlreadyActivating(_)
                | ActivationError::StartFailed { .. }
                | ActivationError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong, lowercase.
    #[schema(example = "unknown tenant acme")]
    error: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = self.to_string();
        if status.is_server_error() {
            warn!(status = status.as_u16(), error = %error, "admin request failed");
        }
        let mut response = (status, Json(ErrorBody { error })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl AdminError {
    /// An extractor's rejection: 413 stays 413, anything else is a malformed request.
    fn rejected(status: StatusCode, text: String) -> Self {
        let message = lowercase_first(&text);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(message)
        } else {
            Self::Malformed(message)
        }
    }
}

impl From<JsonRejection> for AdminError {
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
            other => Self::rejected(other.status(), text),
        }
    }
}

impl From<PathRejection> for AdminError {
    fn from(rejection: PathRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `axum::Json` whose rejections are admin errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AdminError))]
pub(super) struct ApiJson<T>(pub(super) T);

/// `axum::extract::Path` whose rejections are admin errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AdminError))]
pub(super) struct ApiPath<T>(pub(super) T);

/// `axum::extract::Query` whose rejections are admin errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AdminError))]
pub(super) struct ApiQuery<T>(pub(super) T);

/// The answer to a path no admin route serves.
pub(super) async fn unknown_route() -> AdminError {
    AdminError::UnknownRoute
}

/// The answer to a method a route does not serve.
pub(super) async fn method_not_allowed() -> AdminError {
    AdminError::MethodNotAllowed
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
