//! `/cluster`: the cluster's nodes and what they host (on a single node, the node itself).

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ErrorBody;
use crate::cluster::status::{ClusterStatus, NodeStatus};

/// The cluster's nodes and what they host.
#[utoipa::path(
    get, path = "/api/cluster", tag = "cluster",
    responses(
        (status = 200, description = "the cluster", body = ClusterStatus),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
    )
)]
pub(super) async fn cluster(State(state): State<AppState>) -> Json<ClusterStatus> {
    if let Some(cluster) = &state.cluster {
        return Json(ClusterStatus::of(cluster));
    }
    let snapshot = state.node.observe();
    Json(ClusterStatus {
        tenants: snapshot.tenants,
        leader: None,
        nodes: vec![NodeStatus {
            node_id: state.http.node_id.clone(),
            http_addr: String::new(),
            alive: true,
            draining: false,
            placed: snapshot.tenants,
            tenants: snapshot.tenants as u64,
            conversations: snapshot.conversations,
            max_tenants: snapshot.max_tenants as u64,
            rss_bytes: crate::process::rss_bytes().unwrap_or(0),
        }],
    })
}
