//! The admin token check: [`AdminAuth`], an extractor that succeeds only for a request with
//! `Authorization: Bearer <admin token>`. The router layers it over every admin route but
//! the OpenAPI document.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::api::ApiError;

/// Proof that the request carries the admin token as a bearer token (scheme in any case).
/// Rejected with [`ApiError::MissingToken`] or [`ApiError::InvalidToken`] (401).
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) if token_matches(token, state.http.admin_token.expose_secret()) => Ok(Self),
            Some(_) => Err(ApiError::InvalidToken),
            None => Err(ApiError::MissingToken),
        }
    }
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
