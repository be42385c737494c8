//! A node's life as a whole: what `/health` says runs, and what a stopped node leaves
//! behind.

use std::sync::Arc;

use salesboy_node::bus::{Bus, LocalBus};
use salesboy_testkit::{Db, Gateway};
use serde_json::Value;

async fn health(gateway: &Gateway) -> Value {
    gateway
        .http
        .get(format!("{}/health", gateway.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_single_node_reports_that_it_runs_no_bus() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let health = health(&gateway).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["bus"], "none");
    gateway.node.stop().await;
}

#[tokio::test]
async fn a_cluster_node_reports_the_bus_it_runs_on() {
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
    let gateway = Gateway::start_on(Db::Sqlite, Some(bus), |c| {
        c.failure_timeout_ms = 2_000;
    })
    .await;
    let health = health(&gateway).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["bus"], "in-process");
    gateway.node.stop().await;
}
