//! The admin API under `/api`: tenants and their WhatsApp numbers, knowledge documents,
//! conversations (messages, bot pause/resume, owner sends), a tenant's monthly usage and the
//! cluster view. Handlers are thin: they extract the request, call the operation in
//! [`crate::api`] (the same one the NATS service calls) and answer its result or its
//! [`ApiError`].
//!
//! Every route but `GET /api/openapi.json` requires a bearer token (never logged): the
//! admin token (compared in constant time) reaches every route; a tenant's API token
//! reaches only the routes under `/api/tenants/{its id}` but its tokens (see `auth`).
//! Errors are JSON `{"error": "…"}`: 400 invalid input (naming the field), 401 no or wrong
//! token, 403 a tenant token out of its tenant, 429 too many wrong tokens from the client, 404 unknown tenant, document, token,
//! webhook or route, 409 a phone number owned by another tenant or a stopped session, 503 database unavailable or node at
//! capacity, 500 otherwise. Responses never carry access tokens or LLM API keys.
//!
//! Each route module declares its routes with `utoipa_axum::routes!`, from the handlers'
//! `#[utoipa::path]` attributes, so the router and the OpenAPI document ([`openapi`]) come
//! from one place. `docs/api.md` documents the API for people.
//!
//! One module per concern:
//! - `error`: the error answer of an [`ApiError`]; the extractors whose rejections are error
//!   answers;
//! - `auth`: [`AdminAuth`] and [`TenantAuth`], the bearer-token checks;
//! - `tenants`: `/tenants`, `/tenants/{id}` (tenants and their numbers, deletion),
//!   `/tenants/{id}/session`, `/tenants/{id}/session/stop` and `…/start`;
//! - `pairing`: `/tenants/{id}/session/qr`, `…/pair_code`, `…/logout` (linking a `web`
//!   tenant's number);
//! - `knowledge`: `/tenants/{id}/knowledge…`;
//! - `conversations`: `/tenants/{id}/conversations` and
//!   `/tenants/{id}/conversations/{wa_id}/…` (messages, pause, resume, owner sends);
//! - `usage`: `/tenants/{id}/usage` (a month's LLM tokens and cost, messages in and out);
//! - `webhooks`: `/tenants/{id}/webhooks…` (HTTP event webhooks, their dead letters);
//! - `rejected`: `/tenants/{id}/webhook/rejected` (items of Meta's webhook deliveries that
//!   could not be read);
//! - `tokens`: `/tenants/{id}/tokens…` (a tenant's API tokens; admin token only);
//! - `cluster`: `/cluster`, `/cluster/nodes/{node_id}/drain`;
//! - `live`: `/me` (who a token is), `/cluster/stream` and `/tenants/{id}/stream` (the
//!   dashboard's server-sent events);
//! - `health`: `/health` (this node in detail; the public `/health` says only ready or not);
//! - `throttle`: [`AuthThrottle`], the lockout of clients that keep sending wrong tokens;
//! - `openapi`: the OpenAPI document and `/openapi.json`.

mod auth;
mod cluster;
mod conversations;
mod error;
mod health;
mod knowledge;
mod live;
mod openapi;
mod pairing;
mod rejected;
mod tenants;
mod throttle;
mod tokens;
mod usage;
mod webhooks;

use axum::Router;
use axum::middleware;
use salesboy_protocol::{ChatId, TenantId};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use crate::api::ApiError;

use auth::Caller;
pub use auth::{AdminAuth, TenantAuth};
pub use live::StreamSlots;
pub use openapi::openapi;
pub use throttle::{AuthThrottle, AuthThrottleSettings};

/// The admin routes, relative to `/api` (the caller nests them there): every one but the
/// OpenAPI document behind a token.
pub fn routes(state: AppState) -> Router<AppState> {
    let admin = middleware::from_extractor_with_state::<AdminAuth, _>(state.clone());
    let tenant = middleware::from_extractor_with_state::<TenantAuth, _>(state);
    let (router, _document) = api(Guards {
        operator: Box::new(|routes| routes.route_layer(admin)),
        tenant: Box::new(|routes| routes.route_layer(tenant)),
    })
    .split_for_parts();
    router
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::method_not_allowed)
}

/// A function that puts a token check over a group of routes.
type Guard = Box<dyn FnOnce(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>>;

/// What wraps each group of routes: the real token checks, or nothing (for the document).
struct Guards {
    /// Routes for the operator only (admin token): every tenant, the cluster, tenant tokens.
    operator: Guard,
    /// Routes about the tenant of the path's `{id}` (admin token or that tenant's token).
    tenant: Guard,
}

impl Guards {
    /// No checks: the routes as the OpenAPI document lists them.
    fn none() -> Self {
        Self {
            operator: Box::new(|routes| routes),
            tenant: Box::new(|routes| routes),
        }
    }
}

/// Every admin route with its documentation, relative to `/api`, each group under its guard.
fn api(guards: Guards) -> OpenApiRouter<AppState> {
    let operator = OpenApiRouter::default()
        .merge(tenants::operator_routes())
        .merge(tokens::routes())
        .merge(cluster::routes())
        .merge(live::operator_routes())
        .merge(health::routes());
    let tenant = OpenApiRouter::default()
        .merge(tenants::tenant_routes())
        .merge(pairing::routes())
        .merge(knowledge::routes())
        .merge(conversations::routes())
        .merge(usage::routes())
        .merge(live::tenant_routes())
        .merge(webhooks::routes())
        .merge(rejected::routes());
    openapi::routes()
        .merge(live::caller_routes())
        .merge((guards.operator)(operator))
        .merge((guards.tenant)(tenant))
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
