//! A node's life as a whole: what `/health` says runs, and what a stopped node leaves
//! behind.

use std::sync::Arc;
use std::time::Duration;

use salesboy_node::bus::{Bus, LocalBus, NatsBus, NatsBusOptions};
use salesboy_node::config::Config;
use salesboy_node::run;
use salesboy_testkit::{Db, Gateway, NatsServer};
use secrecy::SecretString;

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(20);

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

/// A cluster node on NATS: stopping it ends every task it started, the cluster member's
/// (its loops, membership, the leader election, the directory's watch) as well as its own;
/// the runtime is left with the tasks it had before the node started. A task spawned outside
/// the trackers would still be running (they loop until told to stop) and fail this.
#[tokio::test]
async fn a_stopped_cluster_node_leaves_no_task_running() {
    let server = NatsServer::start().expect("nats-server");
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&server.url(), NatsBusOptions::default())
            .await
            .expect("connect to nats"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        http_addr: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_owned(),
        admin_token: Some(SecretString::from("lifecycle-admin-token-0123456789abcdef")),
        cluster_key: Some(SecretString::from(salesboy_testkit::SANDBOX_CLUSTER_KEY)),
        failure_timeout_ms: 2_000,
        ..Config::default()
    };
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();

    let node = run::start_with_bus(config, Some(Arc::clone(&bus)))
        .await
        .expect("node starts");
    let cluster = node.cluster.clone().expect("a cluster member");
    let member_tasks = cluster.tasks().clone();
    let node_tasks = node.tasks().clone();
    assert!(!member_tasks.is_empty(), "a running member has tasks");
    assert!(!node_tasks.is_empty(), "a running node has tasks");
    assert!(runtime.num_alive_tasks() > before);
    drop(cluster);

    node.stop().await;

    for (tasks, whose) in [(&member_tasks, "member"), (&node_tasks, "node")] {
        assert!(tasks.is_closed(), "the {whose} tracker is closed");
        assert_eq!(tasks.len(), 0, "{whose} tasks left running after stop");
    }
    // Tasks that have ended may still be on their way out of the scheduler: let them go.
    tokio::time::timeout(WAIT, async {
        while runtime.num_alive_tasks() > before {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} tasks still running after stop, {before} before the node started",
            runtime.num_alive_tasks()
        )
    });
    drop(bus);
}
