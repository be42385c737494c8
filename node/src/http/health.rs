//! Health: `GET /health` (public) says only whether this node is ready; `GET /api/health`
//! (behind the admin token, [`super::admin`]) says what it holds and which alerts are raised
//! ([`crate::alerts`]). Both answer 503 when the
//! database does not answer, or when a cluster node has fenced itself (it could not renew
//! its membership, so its tenants are being taken over elsewhere).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::alerts::ActiveAlert;

/// The public health document: nothing but readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// `ok` (ready, 200) or `unavailable` (not ready, 503).
    pub status: String,
}

/// The detailed health document (`GET /api/health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `unavailable` (database) or `fenced` (cut off from the cluster).
    pub status: String,
    /// This node.
    pub node_id: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Resident memory in bytes.
    pub rss_bytes: Option<u64>,
    /// Tenants hosted.
    pub tenants: usize,
    /// Conversations active.
    pub conversations: u64,
    /// The tenant limit.
    pub max_tenants: usize,
    /// `ok`, or the database error (its URL's password masked).
    pub database: String,
    /// The bus this node's cluster member runs on (`nats`, or `in-process` when nodes share
    /// one process), or `none`: a single node, no bus (decision 0009).
    pub bus: String,
    /// The alert conditions this node raised and has not cleared (its tenants' and, on the
    /// cluster's leader or a node alone, the cluster's), oldest kind first.
    pub alerts: Vec<ActiveAlert>,
}

/// The public health route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(readiness))
}

/// 200 `{"status":"ok"}` or 503 `{"status":"unavailable"}`: no internals.
async fn readiness(State(state): State<AppState>) -> Response {
    let health = health(&state).await;
    let ready = health.status == "ok";
    let status = if ready { "ok" } else { "unavailable" }.to_owned();
    (status_code(&health), Json(Readiness { status })).into_response()
}

/// 200 when `health` says ready, else 503.
pub fn status_code(health: &Health) -> StatusCode {
    if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// This node's health, in detail.
pub async fn health(state: &AppState) -> Health {
    let database = state.store.health().await;
    let fenced = state
        .cluster
        .as_ref()
        .is_some_and(|cluster| *cluster.membership().fenced().borrow());
    let ready = database.is_ok() && !fenced;
    let database = match database {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let node = state.node.observe();
    Health {
        status: match (ready, fenced) {
            (true, _) => "ok",
            (false, true) => "fenced",
            (false, false) => "unavailable",
        }
        .to_owned(),
        node_id: state.http.node_id.clone(),
        uptime_secs: state.started.elapsed().as_secs(),
        rss_bytes: crate::process::rss_bytes(),
        tenants: node.tenants,
        conversations: node.conversations,
        max_tenants: node.max_tenants,
        database,
        bus: state.http.bus.to_owned(),
        alerts: state.alerts.list(),
    }
}
