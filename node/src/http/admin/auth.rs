//! Who may call an admin route: [`AdminAuth`] (the admin token only) and [`TenantAuth`] (the
//! admin token, or an API token of the tenant the path names). The router layers one of
//! them over every admin route but the OpenAPI document.
//!
//! A request's bearer token is, in this order: the admin token (compared in constant time),
//! else a tenant API token (looked up by its SHA-256 digest, see [`crate::api::tokens`]),
//! else nothing: 401. A tenant token where it does not reach (another tenant, an operator
//! route, the token routes) is 403 `forbidden`.
//!
//! A wrong token counts against the client's IP in the [`AuthThrottle`]; a locked-out IP is
//! answered 429 `too_many_attempts` (with `Retry-After`) before its token is looked at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use salesboy_protocol::TenantId;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::AppState;
use super::throttle::AuthThrottle;
use crate::api::{ApiError, tokens};

/// Proof that the request carries the admin token as a bearer token (scheme in any case).
/// Rejected with [`ApiError::MissingToken`] or [`ApiError::InvalidToken`] (401), or
/// [`ApiError::Forbidden`] (403) for a tenant's token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match caller(parts, state).await? {
            Caller::Admin => Ok(Self),
            Caller::Tenant(tenant) => Err(ApiError::Forbidden(format!(
                "the api token of tenant {tenant} cannot use operator routes"
            ))),
        }
    }
}

/// Proof that the request may act on the tenant of the path's `{id}`: the admin token, or
/// an API token of that tenant. Rejected like [`AdminAuth`].
#[derive(Debug, Clone, Copy)]
pub struct TenantAuth;

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let tenant = match caller(parts, state).await? {
            Caller::Admin => return Ok(Self),
            Caller::Tenant(tenant) => tenant,
        };
        let path_tenant = RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(name, _)| *name == "id")
                    .map(|(_, value)| value.to_owned())
            });
        match path_tenant {
            Some(id) if id == tenant.as_str() => Ok(Self),
            _ => Err(ApiError::Forbidden(format!(
                "the api token of tenant {tenant} reaches only /api/tenants/{tenant}"
            ))),
        }
    }
}

/// Whose token a request carries (an extractor: 401 for no or a wrong token, 429 while the
/// client is locked out).
pub(super) enum Caller {
    /// The operator's.
    Admin,
    /// One tenant's.
    Tenant(TenantId),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        caller(parts, state).await
    }
}

/// The caller a request's bearer token designates, or 401; 429 while the client is locked
/// out for its wrong tokens.
async fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let client = client_ip(parts);
    let throttle: &AuthThrottle = &state.auth_throttle;
    if let Err(left) = throttle.check(client) {
        let retry_after_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        return Err(ApiError::TooManyAttempts { retry_after_secs });
    }
    let Some(presented) = bearer(parts) else {
        return Err(ApiError::MissingToken);
    };
    if token_matches(presented, state.http.admin_token.expose_secret()) {
        return Ok(Caller::Admin);
    }
    match tokens::tenant_of(state.tokens.as_ref(), presented).await? {
        Some(tenant) => Ok(Caller::Tenant(tenant)),
        None => {
            throttle.failed(client);
            Err(ApiError::InvalidToken)
        }
    }
}

/// The TCP peer's address; a router served without connect info (in-process tests) counts
/// every request as one client.
fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The bearer token of the `authorization` header (scheme in any case), trimmed.
fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(&parts.headers)
}

/// The bearer token of `headers`' `authorization` (scheme in any case), trimmed.
pub(super) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Constant-time comparison; an empty configured token matches nothing.
fn token_matches(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret!", "s3cret"));
        assert!(!token_matches("", ""));
    }
}
