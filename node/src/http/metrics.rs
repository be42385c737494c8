//! `GET /metrics`: Prometheus text format.
//!
//! Counters and histograms are recorded where things happen (`salesboy_webhook_requests_total`,
//! `salesboy_messages_in_total`, `salesboy_sends_total`, `salesboy_llm_calls_total`,
//! `salesboy_actor_restarts_total`, `salesboy_activations_total`,
//! `salesboy_reply_gateway_seconds`, `salesboy_reply_llm_seconds`, …); the gauges of active
//! actors and memory are refreshed when the page is rendered.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// Latency buckets (seconds) of the reply histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use (several nodes in one test
/// process share it).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The metrics route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> String {
    let node = state.node.observe();
    metrics::gauge!("salesboy_active_tenants").set(node.tenants as f64);
    metrics::gauge!("salesboy_active_conversations").set(node.conversations as f64);
    if let Some(rss) = crate::process::rss_bytes() {
        metrics::gauge!("salesboy_rss_bytes").set(rss as f64);
    }
    state.metrics.render()
}
