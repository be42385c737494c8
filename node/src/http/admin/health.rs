//! `/health`: this node's health in detail (the public `/health` says only ready or not).
//! The work is in [`crate::http::health`].

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::TokenRefusal;
use crate::http::health::{self as node_health, Health};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(health))
}

/// This node's health: uptime, memory, tenants and conversations hosted, the database, the
/// bus.
#[utoipa::path(
    get, path = "/health", tag = "cluster",
    responses(
        (status = 200, description = "the node is ready", body = Health),
        (status = 503, description = "the database does not answer, or the node fenced itself", body = Health),
        TokenRefusal,
    )
)]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    let health = node_health::health(&state).await;
    (node_health::status_code(&health), Json(health)).into_response()
}
