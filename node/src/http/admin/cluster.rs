//! `/cluster`: the cluster's nodes and what they host (on a single node, the node itself).
//! The work is in [`crate::api::cluster`].

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::TokenRefusal;
use crate::cluster::status::ClusterStatus;

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(cluster))
}

/// The cluster's nodes and what they host.
#[utoipa::path(
    get, path = "/cluster", tag = "cluster",
    responses(
        (status = 200, description = "the cluster", body = ClusterStatus),
        TokenRefusal,
    )
)]
pub(super) async fn cluster(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json(crate::api::cluster::status(&state.api()))
}
