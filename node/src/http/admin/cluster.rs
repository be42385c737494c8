//! `/cluster`: the cluster's nodes and what they host (on a single node, the node itself);
//! `/cluster/nodes/{node_id}/drain`: a node's drain, asked for. The work is in
//! [`crate::api::cluster`].

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ErrorBody, TokenRefusal};
use crate::api::ApiError;
use crate::api::cluster::DrainAccepted;
use crate::cluster::status::ClusterStatus;

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(cluster))
        .routes(routes!(drain))
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

/// Asks a node to drain: move every tenant it hosts to the other nodes, then exit. Answers
/// at once; `GET /api/cluster` (or the dashboard) shows the node draining, then gone.
#[utoipa::path(
    post, path = "/cluster/nodes/{node_id}/drain", tag = "cluster",
    params(("node_id" = String, Path, description = "the node to drain")),
    responses(
        (status = 202, description = "the node was asked to drain", body = DrainAccepted),
        (status = 400, description = "invalid node id", body = ErrorBody),
        TokenRefusal,
        (status = 404, description = "no such node in the cluster", body = ErrorBody),
        (status = 409, description = "the node is not alive or draining already, no other live node takes tenants, or the node runs alone", body = ErrorBody),
    )
)]
pub(super) async fn drain(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
) -> Result<(StatusCode, Json<DrainAccepted>), ApiError> {
    let accepted = crate::api::cluster::drain(&state.api(), &node_id)?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
