//! The admin API under `/api`: tenants and their WhatsApp numbers, knowledge documents,
//! conversations (messages, bot pause/resume, owner sends), a tenant's monthly usage and the
//! cluster view. Handlers are thin: they extract the request, call the operation in
//! [`crate::api`] (the same one the NATS service calls) and answer its result or its
//! [`ApiError`].
//!
//! Every route but `GET /api/openapi.json` requires `Authorization: Bearer <admin token>`
//! (compared in constant time, never logged). Errors are JSON `{"error": "…"}`: 400 invalid
//! input (naming the field), 401 no or wrong token, 404 unknown tenant, document or route,
//! 409 a phone number owned by another tenant or a stopped session, 503 database unavailable
//! or node at capacity, 500 otherwise. Responses never carry access tokens or LLM API keys.
//!
//! Each route module declares its routes with `utoipa_axum::routes!`, from the handlers'
//! `#[utoipa::path]` attributes, so the router and the OpenAPI document ([`openapi`]) come
//! from one place. `docs/api.md` documents the API for people.
//!
//! One module per concern:
//! - `error`: the error answer of an [`ApiError`]; the extractors whose rejections are error
//!   answers;
//! - `auth`: [`AdminAuth`], the bearer-token check;
//! - `tenants`: `/tenants`, `/tenants/{id}` (tenants and their numbers, deletion),
//!   `/tenants/{id}/session`, `/tenants/{id}/session/stop` and `…/start`;
//! - `knowledge`: `/tenants/{id}/knowledge…`;
//! - `conversations`: `/tenants/{id}/conversations` and
//!   `/tenants/{id}/conversations/{wa_id}/…` (messages, pause, resume, owner sends);
//! - `usage`: `/tenants/{id}/usage` (a month's LLM tokens and cost, messages in and out);
//! - `cluster`: `/cluster`;
//! - `openapi`: the OpenAPI document and `/openapi.json`.

mod auth;
mod cluster;
mod conversations;
mod error;
mod knowledge;
mod openapi;
mod tenants;
mod usage;

use axum::Router;
use axum::middleware;
use salesboy_protocol::{ChatId, TenantId};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use crate::api::ApiError;

pub use auth::AdminAuth;
pub use openapi::openapi;

/// The admin routes, relative to `/api` (the caller nests them there): every one but the
/// OpenAPI document behind the admin token.
pub fn routes(state: AppState) -> Router<AppState> {
    let guard = middleware::from_extractor_with_state::<AdminAuth, _>(state);
    let (router, _document) = api(|protected| protected.route_layer(guard)).split_for_parts();
    router
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::method_not_allowed)
}

/// Every admin route with its documentation, relative to `/api`; `guard` wraps the routes
/// that need the admin token.
fn api(
    guard: impl FnOnce(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let protected = OpenApiRouter::default()
        .merge(tenants::routes())
        .merge(knowledge::routes())
        .merge(conversations::routes())
        .merge(usage::routes())
        .merge(cluster::routes());
    openapi::routes().merge(guard(protected))
}

// ----- helpers the route modules share -----

/// A tenant id from the request, or 400 naming `field`.
fn tenant_id(field: &'static str, value: String) -> Result<TenantId, ApiError> {
    crate::api::tenant_id(field, value)
}

/// A customer's WhatsApp id from the path, or 400.
fn chat_id(value: String) -> Result<ChatId, ApiError> {
    crate::api::chat_id("wa_id", value)
}
