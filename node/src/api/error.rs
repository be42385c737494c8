//! [`ApiError`]: why an operation failed, with its one mapping to an HTTP-like status and a
//! snake_case code. The HTTP admin API answers the status and `{"error": "<message>"}`; the
//! NATS service answers the micro error headers and `{"error": {"code", "message"}}`.

use salesboy_actors::node::ActivationError;
use salesboy_actors::store::StoreError;
use salesboy_actors::web::WebError;
use salesboy_protocol::{PhoneNumberId, TenantId};

use crate::cluster::RouteError;

/// Why an operation failed. [`ApiError::status`] and [`ApiError::code`] are the one place
/// that classifies each failure; the message (the `Display` text) is what people read.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is invalid (400); the message names it.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the request names it (`id`, `wa_id`, `limit`…).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request cannot be read (400): malformed JSON, path or query, a body that does
    /// not fit the command. The message says why, naming the field where it can.
    #[error("{0}")]
    Malformed(String),
    /// The request is larger than the command accepts (413).
    #[error("{0}")]
    TooLarge(String),
    /// No credentials were sent (401).
    #[error("missing admin token: send authorization: bearer <token>")]
    MissingToken,
    /// The credentials are not valid (401).
    #[error("invalid admin token")]
    InvalidToken,
    /// Too many wrong tokens came from this client lately (429): it may try again after
    /// `retry_after_secs` (HTTP: the `Retry-After` header); its token was not checked.
    #[error("too many wrong tokens from this address: retry in {retry_after_secs} s")]
    TooManyAttempts {
        /// Seconds until the client may try again.
        retry_after_secs: u64,
    },
    /// The credentials are valid but do not reach this resource (403): a tenant's API token
    /// on another tenant or on an operator route.
    #[error("{0}")]
    Forbidden(String),
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
    /// No such webhook of the tenant (404).
    #[error("unknown webhook {webhook} of tenant {tenant}")]
    UnknownWebhook {
        /// The tenant.
        tenant: TenantId,
        /// The webhook's id.
        webhook: String,
    },
    /// No such API token of the tenant (404).
    #[error("unknown api token {token} of tenant {tenant}")]
    UnknownApiToken {
        /// The tenant.
        tenant: TenantId,
        /// The token's id.
        token: String,
    },
    /// No such route or command (404).
    #[error("no such admin route")]
    UnknownRoute,
    /// The route exists, but not with this method (405, HTTP only).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The tenant exists already (409): `tenant.create` never overwrites.
    #[error("id: tenant {0} already exists")]
    TenantExists(TenantId),
    /// The phone number is attached to another tenant (409).
    #[error("phone_number_id: {number} already belongs to tenant {owner}")]
    NumberTaken {
        /// The number.
        number: PhoneNumberId,
        /// The tenant it belongs to.
        owner: TenantId,
    },
    /// The tenant's WhatsApp session is stopped (409): `session.start` runs it again.
    #[error("the whatsapp session of tenant {0} is stopped: session.start runs it again")]
    SessionStopped(TenantId),
    /// The store failed; the status follows the store's error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A command did not reach its tenant; the status follows why.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// This node could not run the tenant; the status follows why.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// Something the operation needs does not answer (503).
    #[error("{0}")]
    Unavailable(String),
    /// The caller has as many live streams open as it may (429).
    #[error("{0}")]
    TooManyStreams(String),
    /// No node of that id in the cluster (404).
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// The node cannot be drained (409): not alive, the last live node, or alone.
    #[error("{0}")]
    NotDrainable(String),
    /// The node broke one of its own rules (500).
    #[error("{0}")]
    Internal(String),
    /// Pairing was asked of a tenant whose engine is not `web` (409).
    #[error("{0}")]
    NotWeb(String),
    /// The `web` tenant's device is linked already: nothing to pair (409).
    #[error("{0}")]
    AlreadyPaired(String),
    /// The `web` session could not do what was asked; the status follows why.
    #[error("{0}")]
    Web(#[from] WebError),
}

impl ApiError {
    /// 400 for a bad `field`.
    pub fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field,
            reason: reason.to_string(),
        }
    }

    /// The HTTP-like status of this failure.
    pub fn status(&self) -> u16 {
        self.class().0
    }

    /// The failure's snake_case code, stable for clients to match on.
    pub fn code(&self) -> &'static str {
        self.class().1
    }

    /// Status and code, decided here only.
    fn class(&self) -> (u16, &'static str) {
        const UNAVAILABLE: (u16, &str) = (503, "unavailable");
        const SESSION_STOPPED: (u16, &str) = (409, "session_stopped");
        match self {
            Self::Invalid { .. } => (400, "invalid_field"),
            Self::Malformed(_) => (400, "malformed_request"),
            Self::TooLarge(_) => (413, "too_large"),
            Self::MissingToken => (401, "missing_token"),
            Self::InvalidToken => (401, "invalid_token"),
            Self::TooManyAttempts { .. } => (429, "too_many_attempts"),
            Self::Forbidden(_) => (403, "forbidden"),
            Self::UnknownTenant(_) => (404, "unknown_tenant"),
            Self::UnknownApiToken { .. } => (404, "unknown_token"),
            Self::UnknownDocument { .. } => (404, "unknown_document"),
            Self::UnknownWebhook { .. } => (404, "unknown_webhook"),
            Self::UnknownRoute => (404, "unknown_route"),
            Self::MethodNotAllowed => (405, "method_not_allowed"),
            Self::TenantExists(_) => (409, "tenant_exists"),
            Self::NumberTaken { .. } => (409, "number_taken"),
            Self::SessionStopped(_) => SESSION_STOPPED,
            Self::Store(error) => match error {
                StoreError::Unavailable { .. } | StoreError::StaleEpoch { .. } => UNAVAILABLE,
                StoreError::NotFound { .. } => (404, "not_found"),
                StoreError::Conflict { .. } => (409, "conflict"),
                StoreError::Invalid { .. } => (400, "invalid_field"),
                StoreError::Backend(_) => (500, "internal"),
            },
            Self::Route(error) => match error {
                RouteError::UnknownTenant(_) => (404, "unknown_tenant"),
                RouteError::Unplaceable { .. } | RouteError::Unreachable { .. } => UNAVAILABLE,
                RouteError::Refused(_) | RouteError::RefusedBy { .. } | RouteError::Encode(_) => {
                    (409, "refused")
                }
                RouteError::SessionStopped(_) => SESSION_STOPPED,
            },
            Self::Activation(error) => match error {
                ActivationError::UnknownTenant(_) => (404, "unknown_tenant"),
                ActivationError::AtCapacity { .. }
                | ActivationError::Store { .. }
                | ActivationError::Epoch { .. }
                | ActivationError::AlreadyHosted(_)
                | ActivationError::AlreadyActivating(_)
                | ActivationError::StartFailed { .. }
                | ActivationError::Stopping => UNAVAILABLE,
                ActivationError::SessionStopped(_) => SESSION_STOPPED,
            },
            Self::Unavailable(_) => UNAVAILABLE,
            Self::TooManyStreams(_) => (429, "too_many_streams"),
            Self::UnknownNode(_) => (404, "unknown_node"),
            Self::NotDrainable(_) => (409, "not_drainable"),
            Self::Internal(_) => (500, "internal"),
            Self::NotWeb(_) => (409, "not_web"),
            Self::AlreadyPaired(_) => (409, "already_paired"),
            Self::Web(error) => match error {
                WebError::InvalidPhone(_) => (400, "invalid_field"),
                WebError::NotConnected => (409, "not_connected"),
                WebError::AlreadyPaired => (409, "already_paired"),
                WebError::NoSession | WebError::Fenced | WebError::Unsupported => UNAVAILABLE,
                WebError::Failed(_) => (502, "whatsapp_failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_and_goes_with_one_status() {
        let tenant = TenantId::new("acme").unwrap();
        let errors = [
            ApiError::invalid("id", "bad"),
            ApiError::Malformed("x".into()),
            ApiError::TooLarge("x".into()),
            ApiError::MissingToken,
            ApiError::InvalidToken,
            ApiError::TooManyAttempts {
                retry_after_secs: 1,
            },
            ApiError::Forbidden("x".into()),
            ApiError::UnknownTenant(tenant.clone()),
            ApiError::UnknownApiToken {
                tenant: tenant.clone(),
                token: "t".into(),
            },
            ApiError::UnknownDocument {
                tenant: tenant.clone(),
                document: 1,
            },
            ApiError::UnknownWebhook {
                tenant: tenant.clone(),
                webhook: "wh_1".into(),
            },
            ApiError::UnknownRoute,
            ApiError::MethodNotAllowed,
            ApiError::TenantExists(tenant.clone()),
            ApiError::SessionStopped(tenant.clone()),
            ApiError::Route(RouteError::SessionStopped(tenant.clone())),
            ApiError::Activation(ActivationError::SessionStopped(tenant.clone())),
            ApiError::Unavailable("x".into()),
            ApiError::TooManyStreams("x".into()),
            ApiError::UnknownNode("node-9".into()),
            ApiError::NotDrainable("x".into()),
            ApiError::Internal("x".into()),
            ApiError::NotWeb("x".into()),
            ApiError::AlreadyPaired("x".into()),
            ApiError::Web(WebError::AlreadyPaired),
            ApiError::Web(WebError::InvalidPhone("1".into())),
            ApiError::Web(WebError::NotConnected),
            ApiError::Web(WebError::NoSession),
            ApiError::Web(WebError::Failed("x".into())),
        ];
        let mut seen = std::collections::HashMap::new();
        for error in errors {
            let code = error.code();
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            let status = *seen.entry(code).or_insert(error.status());
            assert_eq!(status, error.status(), "{code}");
        }
        assert_eq!(ApiError::UnknownTenant(tenant).status(), 404);
    }
}
