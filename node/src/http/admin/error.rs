//! Error answers: the JSON body, the mapping of domain errors to statuses, and the
//! extractors whose rejections are error answers.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use salesboy_actors::node::ActivationError;
use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use serde::Serialize;
use tracing::warn;
use utoipa::ToSchema;

use crate::cluster::runtime::RouteError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong, lowercase.
    #[schema(example = "unknown tenant acme")]
    error: String,
}

/// An error answer: a status and a lowercase message.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 for a bad `field`.
    pub(super) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{field}: {reason}"))
    }

    pub(super) fn unknown_tenant(tenant: &TenantId) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unknown tenant {tenant}"))
    }

    /// An extractor's rejection, with its status unless it is a plain client error.
    fn rejected(status: StatusCode, text: String) -> Self {
        let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, lowercase_first(&text))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = self.status.as_u16(), error = %self.message, "admin request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::Unavailable { .. } | StoreError::StaleEpoch { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
            StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error.to_string())
    }
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> Self {
        let status = match &error {
            RouteError::UnknownTenant(_) => StatusCode::NOT_FOUND,
            RouteError::Unplaceable { .. } | RouteError::Unreachable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RouteError::Refused(_) => StatusCode::CONFLICT,
        };
        Self::new(status, error.to_string())
    }
}

impl From<ActivationError> for ApiError {
    fn from(error: ActivationError) -> Self {
        let status = match &error {
            ActivationError::UnknownTenant(_) => StatusCode::NOT_FOUND,
            ActivationError::AtCapacity { .. }
            | ActivationError::Store { .. }
            | ActivationError::AlreadyHosted(_)
            | ActivationError::AlreadyActivating(_)
            | ActivationError::StartFailed { .. }
            | ActivationError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
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
                Self::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid json body: {reason}"),
                )
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "expected content-type: application/json",
            ),
            other => Self::rejected(other.status(), text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
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

/// `axum::Json` whose rejections are JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct ApiJson<T>(pub(super) T);

/// `axum::extract::Path` whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct ApiPath<T>(pub(super) T);

/// `axum::extract::Query` whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct ApiQuery<T>(pub(super) T);

pub(super) async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such admin route")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
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
