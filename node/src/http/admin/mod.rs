//! The admin API under `/api`: tenants and their WhatsApp numbers, knowledge documents,
//! conversations (messages, bot pause/resume, owner sends) and the cluster view.
//!
//! Every route but `GET /api/openapi.json` requires `Authorization: Bearer <admin token>`
//! (compared in constant time, never logged). Errors are JSON `{"error": "…"}`: 400 invalid
//! input (naming the field), 401 no or wrong token, 404 unknown tenant, document or route,
//! 409 a phone number owned by another tenant, 503 database unavailable or node at capacity,
//! 500 otherwise. Responses never carry access tokens or LLM API keys.
//!
//! [`ROUTES`] lists every route; the OpenAPI document ([`openapi`]) describes exactly those,
//! and a test checks both against the router. `docs/api.md` documents the API for people.
//!
//! One module per concern:
//! - `error`: the error answer, the mapping of domain errors to statuses, the extractors
//!   whose rejections are error answers;
//! - `auth`: the bearer-token check;
//! - `tenants`: `/tenants`, `/tenants/{id}` (tenants and their numbers);
//! - `knowledge`: `/tenants/{id}/knowledge…`;
//! - `conversations`: `/tenants/{id}/conversations/{wa_id}/…` (messages, pause, resume,
//!   owner sends);
//! - `cluster`: `/cluster`;
//! - `openapi`: the OpenAPI document and `/openapi.json`.

mod auth;
mod cluster;
mod conversations;
mod error;
mod knowledge;
mod openapi;
mod tenants;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use salesboy_actors::store::Tenant;
use salesboy_protocol::{ChatId, IdError, TenantId};

use super::AppState;
use error::ApiError;

pub use conversations::{DEFAULT_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT, MAX_SEND_CHARS};
pub use knowledge::MAX_KNOWLEDGE_BYTES;
pub use openapi::openapi;

/// Every admin route as (lowercase method, full path); the OpenAPI document lists exactly
/// these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/openapi.json"),
    ("get", "/api/tenants"),
    ("post", "/api/tenants"),
    ("get", "/api/tenants/{id}"),
    ("get", "/api/tenants/{id}/knowledge"),
    ("post", "/api/tenants/{id}/knowledge"),
    ("delete", "/api/tenants/{id}/knowledge/{doc_id}"),
    ("get", "/api/tenants/{id}/conversations/{wa_id}/messages"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/pause"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/resume"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/send"),
    ("get", "/api/cluster"),
];

/// The admin routes, relative to `/api` (the caller nests them there).
pub fn routes(state: AppState) -> Router<AppState> {
    let conversation = "/tenants/{id}/conversations/{wa_id}";
    let protected = Router::new()
        .route(
            "/tenants",
            get(tenants::list_tenants).post(tenants::upsert_tenant),
        )
        .route("/tenants/{id}", get(tenants::show_tenant))
        .route(
            "/tenants/{id}/knowledge",
            get(knowledge::list_knowledge)
                .post(knowledge::add_knowledge)
                .layer(DefaultBodyLimit::max(MAX_KNOWLEDGE_BYTES)),
        )
        .route(
            "/tenants/{id}/knowledge/{doc_id}",
            delete(knowledge::delete_knowledge),
        )
        .route(
            &format!("{conversation}/messages"),
            get(conversations::messages),
        )
        .route(&format!("{conversation}/pause"), post(conversations::pause))
        .route(
            &format!("{conversation}/resume"),
            post(conversations::resume),
        )
        .route(&format!("{conversation}/send"), post(conversations::send))
        .route("/cluster", get(cluster::cluster))
        .route_layer(middleware::from_fn_with_state(
            state,
            auth::require_admin_token,
        ));
    Router::new()
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(protected)
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::method_not_allowed)
}

// ----- helpers the route modules share -----

/// A tenant id from the request, or 400 naming `field`.
fn tenant_id(field: &str, value: String) -> Result<TenantId, ApiError> {
    TenantId::new(value).map_err(|e: IdError| ApiError::invalid(field, e))
}

/// A customer's WhatsApp id from the path, or 400.
fn chat_id(value: String) -> Result<ChatId, ApiError> {
    ChatId::new(value).map_err(|e| ApiError::invalid("wa_id", e))
}

/// The tenant, or 404.
async fn existing_tenant(state: &AppState, id: &TenantId) -> Result<Tenant, ApiError> {
    state
        .store
        .tenant(id)
        .await?
        .ok_or_else(|| ApiError::unknown_tenant(id))
}

/// The node's clock, in unix ms.
fn now_ms(state: &AppState) -> i64 {
    state.node.services().clock.now_ms()
}
