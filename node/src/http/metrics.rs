//! `GET /metrics`: Prometheus text format.
//!
//! Counters and histograms are recorded where things happen (`salesboy_webhook_requests_total`,
//! `salesboy_messages_in_total`, `salesboy_sends_total`, `salesboy_llm_calls_total`,
//! `salesboy_actor_restarts_total`, `salesboy_activations_total`,
//! `salesboy_reply_gateway_seconds`, `salesboy_reply_llm_seconds`, …); the gauges of active
//! actors, memory and raised alerts (`salesboy_alert_active{alert}`) are refreshed when the
//! page is rendered, the alerts' measures by the evaluator ([`crate::alerts`]).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use salesboy_protocol::events::AlertKind;

use super::AppState;

/// Latency buckets (seconds) of the reply histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of `salesboy_store_group_commit_writes`: writes per group commit (at most 256).
const GROUP_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process-wide Prometheus recorder, installed on first use (several nodes in one test
/// process share it).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("salesboy_store_group_commit_writes".into()),
                        GROUP_SIZE_BUCKETS,
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Every metric's help text (`# HELP`, which `promtool check metrics` asks for), by kind.
const COUNTERS: &[(&str, &str)] = &[
    (
        "salesboy_activations_total",
        "tenant activations, by outcome",
    ),
    (
        "salesboy_actor_restarts_total",
        "actor restarts by their supervisor, by kind",
    ),
    (
        "salesboy_admin_auth_lockouts_total",
        "client IPs locked out for wrong admin tokens",
    ),
    (
        "salesboy_bus_rejected_total",
        "cluster messages refused, by reason",
    ),
    (
        "salesboy_conversation_bound_waits_total",
        "messages that waited for a live conversation",
    ),
    (
        "salesboy_event_publish_failures_total",
        "failed publications to the events stream",
    ),
    (
        "salesboy_events_dropped_total",
        "events given up before reaching the outbox",
    ),
    (
        "salesboy_events_published_total",
        "events published to the events stream",
    ),
    (
        "salesboy_failovers_total",
        "tenants failed over from dead nodes",
    ),
    (
        "salesboy_http_requests_shed_total",
        "HTTP requests answered 503 for the concurrency limit",
    ),
    (
        "salesboy_llm_calls_total",
        "LLM provider calls, by provider and outcome",
    ),
    (
        "salesboy_llm_spend_capped_total",
        "replies answered offline for the monthly spend cap",
    ),
    (
        "salesboy_messages_in_total",
        "inbound customer messages, by outcome",
    ),
    ("salesboy_migrations_total", "tenants moved between nodes"),
    (
        "salesboy_rebalance_rounds_total",
        "rebalancing rounds of the leader",
    ),
    (
        "salesboy_replies_paced_total",
        "replies slowed down by the tenant's reply rate",
    ),
    (
        "salesboy_retention_batches_total",
        "retention delete batches, by table",
    ),
    (
        "salesboy_retention_deleted_rows_total",
        "rows deleted by retention, by table",
    ),
    (
        "salesboy_retention_runs_total",
        "retention runs, by outcome",
    ),
    (
        "salesboy_self_fences_total",
        "times this node fenced itself",
    ),
    ("salesboy_sends_total", "WhatsApp sends, by outcome"),
    (
        "salesboy_webhook_deliveries_total",
        "event webhook deliveries, by outcome",
    ),
    (
        "salesboy_webhook_rejected_items_total",
        "unreadable items of signed webhook deliveries",
    ),
    (
        "salesboy_webhook_requests_total",
        "WhatsApp webhook requests, by outcome",
    ),
    (
        "salesboy_webhook_unknown_numbers_total",
        "webhook items for numbers of no tenant",
    ),
    (
        "salesboy_whatsapp_requests_total",
        "WhatsApp Cloud API requests, by operation and outcome",
    ),
];

/// Gauges' help texts.
const GAUGES: &[(&str, &str)] = &[
    (
        "salesboy_active_conversations",
        "conversations active on this node",
    ),
    ("salesboy_active_tenants", "tenants hosted by this node"),
    (
        "salesboy_alert_active",
        "alert conditions raised on this node and not cleared, by alert",
    ),
    (
        "salesboy_cluster_active_tenants",
        "tenants active in the cluster (leader, or a node alone)",
    ),
    (
        "salesboy_cluster_leader_present",
        "1 while a live node leads the cluster, else 0",
    ),
    (
        "salesboy_cluster_nodes_down",
        "members that stopped heartbeating (leader)",
    ),
    (
        "salesboy_cluster_tenant_capacity",
        "tenants the live nodes may host together (leader)",
    ),
    (
        "salesboy_database_size_bytes",
        "the database's size in bytes (leader, or a node alone)",
    ),
    (
        "salesboy_error_rate_ratio",
        "failed calls over the alert window, by source, 0 to 1",
    ),
    (
        "salesboy_knowledge_chunks",
        "knowledge chunks of all tenants (leader, or a node alone)",
    ),
    (
        "salesboy_memory_limit_bytes",
        "this node's memory limit in bytes",
    ),
    ("salesboy_rss_bytes", "this node's resident memory in bytes"),
    (
        "salesboy_sqlite_wal_frames",
        "SQLite: frames in the write-ahead log at the last checkpoint",
    ),
];

/// Histograms' help texts.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "salesboy_migration_seconds",
        "how long moving a tenant took",
    ),
    (
        "salesboy_reply_gateway_seconds",
        "a reply's time in the gateway, the LLM's excluded",
    ),
    (
        "salesboy_reply_llm_seconds",
        "a reply's time waiting for the LLM",
    ),
    (
        "salesboy_store_group_commit_seconds",
        "how long a group commit's transaction took, from its begin to its commit",
    ),
    (
        "salesboy_store_group_commit_writes",
        "writes per group commit",
    ),
];

/// Registers every metric's help text with the recorder.
fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    for (name, help) in HISTOGRAMS {
        metrics::describe_histogram!(*name, *help);
    }
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
    for kind in AlertKind::CONDITIONS {
        metrics::gauge!("salesboy_alert_active", "alert" => kind.as_str())
            .set(state.alerts.count(kind) as f64);
    }
    state.metrics.render()
}
