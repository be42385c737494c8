//! A node's life as a whole: what `/health` says runs, and what a stopped node leaves
//! behind.

use std::sync::Arc;

use salesboy_node::bus::{Bus, LocalBus};
use salesboy_testkit::{Db, Gateway};

#[tokio::test]
async fn a_single_node_reports_that_it_runs_no_bus() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let health = gateway.health().await;
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
    let health = gateway.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["bus"], "in-process");
    gateway.node.stop().await;
}

#[tokio::test]
async fn a_stopped_node_leaves_no_task_running() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    assert_eq!(gateway.health().await["status"], "ok");
    let tasks = gateway.node.tasks().clone();
    let address = gateway.node.http_addr;
    assert!(!tasks.is_empty(), "a running node has background tasks");

    gateway.node.stop().await;

    assert!(tasks.is_closed());
    assert_eq!(tasks.len(), 0, "tasks left running after stop");
    tokio::time::timeout(std::time::Duration::from_secs(1), tasks.wait())
        .await
        .expect("the tracker is done");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "a stopped node's HTTP port refuses connections"
    );
}
