//! Leader election against both buses: the in-process `LocalBus` (clones of one bus are the
//! nodes) and `NatsBus` (one connection per node to a private nats-server per test).
//!
//! Timings are shortened (renew 100 ms, step down 350 ms, lease 600 ms); every wait is
//! bounded, and time-dependent checks poll with a deadline instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use salesboy_node::background::Background;
use salesboy_node::bus::Bus;
use salesboy_node::cluster::leader::{LeaderError, Leadership, LeaseConfig};
use salesboy_protocol::NodeId;
use salesboy_testkit::NatsServer;
use tokio::time::{Instant, timeout};

use salesboy_testkit::buses::*;

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

/// Slack for "within step_down_after" on a busy 2-core machine.
const TOLERANCE: Duration = Duration::from_millis(300);

fn fast() -> LeaseConfig {
    LeaseConfig {
        renew_every: Duration::from_millis(100),
        lease: Duration::from_millis(600),
        step_down_after: Duration::from_millis(350),
    }
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Starts contending as node `name` on `bus` (its task runs until the test ends).
async fn contend(bus: Arc<dyn Bus>, name: &str, config: LeaseConfig) -> Leadership {
    contend_on(bus, name, config, &Background::new()).await
}

/// [`contend`], with its task on `background`.
async fn contend_on(
    bus: Arc<dyn Bus>,
    name: &str,
    config: LeaseConfig,
    background: &Background,
) -> Leadership {
    timeout(WAIT, Leadership::start(bus, node(name), config, background))
        .await
        .expect("start timed out")
        .expect("leadership starts")
}

/// Polls `condition` until it holds; panics after [`WAIT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The one leader among `nodes` once they all agree on it.
async fn agreed_leader(nodes: &[&Leadership]) -> NodeId {
    let mut leader = None;
    eventually("exactly one leader, seen by all", || {
        let leaders: Vec<&Leadership> = nodes.iter().copied().filter(|n| n.is_leader()).collect();
        let [one] = leaders.as_slice() else {
            return false;
        };
        let id = one.node_id().clone();
        let agreed = nodes
            .iter()
            .all(|n| n.changes().borrow().as_ref() == Some(&id));
        leader = Some(id);
        agreed
    })
    .await;
    leader.expect("a leader")
}

fn leaders(nodes: &[&Leadership]) -> Vec<NodeId> {
    nodes
        .iter()
        .filter(|n| n.is_leader())
        .map(|n| n.node_id().clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests, once per bus.

async fn exactly_one_of_three_leads(cluster: &impl Cluster) {
    let a = contend(cluster.bus().await, "a", fast()).await;
    let b = contend(cluster.bus().await, "b", fast()).await;
    let c = contend(cluster.bus().await, "c", fast()).await;
    let all = [&a, &b, &c];
    let leader = agreed_leader(&all).await;

    // It keeps the lease through many renewals, and nobody else ever leads meanwhile.
    let until = Instant::now() + fast().lease * 3;
    while Instant::now() < until {
        assert_eq!(leaders(&all), std::slice::from_ref(&leader));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_crashed_leader_is_replaced_after_the_lease(cluster: &impl Cluster) {
    let config = fast();
    let mut tasks: Vec<Background> = (0..3).map(|_| Background::new()).collect();
    let mut nodes = vec![
        contend_on(cluster.bus().await, "a", config, &tasks[0]).await,
        contend_on(cluster.bus().await, "b", config, &tasks[1]).await,
        contend_on(cluster.bus().await, "c", config, &tasks[2]).await,
    ];
    let old = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let at = nodes
        .iter()
        .position(|n| *n.node_id() == old)
        .expect("leader is one of ours");

    // A crash: the task stops, the lease stays until it expires.
    let crashed = Instant::now();
    tasks.remove(at).cancel();
    drop(nodes.remove(at));
    let survivors: Vec<&Leadership> = nodes.iter().collect();
    let new = agreed_leader(&survivors).await;
    let elapsed = crashed.elapsed();
    assert_ne!(new, old);
    // Its last renewal began at most one period before the crash.
    assert!(
        elapsed >= config.lease - config.renew_every,
        "taken over after {elapsed:?}"
    );
}

async fn stepping_down_hands_over_at_once(cluster: &impl Cluster) {
    // A 10 s lease: a takeover within 3 s proves the handover did not wait for it.
    let config = LeaseConfig {
        renew_every: Duration::from_millis(100),
        lease: Duration::from_secs(10),
        step_down_after: Duration::from_secs(8),
    };
    let a = contend(cluster.bus().await, "a", config).await;
    let b = contend(cluster.bus().await, "b", config).await;
    let old = agreed_leader(&[&a, &b]).await;
    let (leaving, staying) = if *a.node_id() == old {
        (&a, &b)
    } else {
        (&b, &a)
    };

    let stepped = Instant::now();
    timeout(WAIT, leaving.step_down())
        .await
        .expect("step down timed out")
        .expect("step down");
    assert!(!leaving.is_leader());
    eventually("the other node leads", || staying.is_leader()).await;
    assert!(
        stepped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stepped.elapsed()
    );
    // A node that stepped down stays out, and stepping down again is harmless.
    leaving.step_down().await.expect("second step down");
    let until = Instant::now() + config.renew_every * 5;
    while Instant::now() < until {
        assert!(!leaving.is_leader() && staying.is_leader());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cuts the leader's KV off (`mode`): it stops leading within `step_down_after`, before
/// anyone else takes over; once healed it learns it lost.
async fn cut_off_leader_steps_down_before_takeover(cluster: &impl Cluster, mode: u8) {
    let config = fast();
    let buses = [
        CuttableBus::new(cluster.bus().await),
        CuttableBus::new(cluster.bus().await),
        CuttableBus::new(cluster.bus().await),
    ];
    let mut nodes = Vec::new();
    for (bus, name) in buses.iter().zip(["a", "b", "c"]) {
        nodes.push(contend(Arc::new(bus.clone()), name, config).await);
    }
    let all: Vec<&Leadership> = nodes.iter().collect();
    let old = agreed_leader(&all).await;
    let at = all
        .iter()
        .position(|n| *n.node_id() == old)
        .expect("leader is one of ours");

    let cut = Instant::now();
    buses[at].set(mode);
    let (mut stepped_down, mut taken_over) = (None, None);
    eventually("the leader steps down and another takes over", || {
        if stepped_down.is_none() && !all[at].is_leader() {
            stepped_down = Some(cut.elapsed());
        }
        if taken_over.is_none() {
            let current = leaders(&all);
            if current.iter().any(|n| *n != old) {
                taken_over = Some(cut.elapsed());
                // Never two at once.
                assert_eq!(current.len(), 1, "two leaders: {current:?}");
            }
        }
        stepped_down.is_some() && taken_over.is_some()
    })
    .await;
    let (stepped_down, taken_over) = (stepped_down.unwrap(), taken_over.unwrap());
    assert!(
        stepped_down <= config.step_down_after + TOLERANCE,
        "stepped down after {stepped_down:?}"
    );
    assert!(
        stepped_down < taken_over,
        "stepped down after {stepped_down:?}, taken over after {taken_over:?}"
    );
    assert!(
        taken_over >= config.lease - config.renew_every,
        "taken over after {taken_over:?}"
    );

    buses[at].set(HEALTHY);
    let new = agreed_leader(&all).await;
    assert_ne!(new, old, "the healed node must not grab the lease back");
}

async fn hanging_renewals_step_down(cluster: &impl Cluster) {
    cut_off_leader_steps_down_before_takeover(cluster, HANGING).await;
}

async fn failing_renewals_step_down(cluster: &impl Cluster) {
    cut_off_leader_steps_down_before_takeover(cluster, FAILING).await;
}

async fn invalid_config_is_refused(cluster: &impl Cluster) {
    let mut config = fast();
    config.step_down_after = config.lease;
    let result =
        Leadership::start(cluster.bus().await, node("a"), config, &Background::new()).await;
    assert!(
        matches!(result, Err(LeaderError::InvalidConfig(_))),
        "{result:?}"
    );
}

salesboy_testkit::bus_suite!([
    exactly_one_of_three_leads,
    a_crashed_leader_is_replaced_after_the_lease,
    stepping_down_hands_over_at_once,
    hanging_renewals_step_down,
    failing_renewals_step_down,
    invalid_config_is_refused,
]);

// ---------------------------------------------------------------------------------------------
// NATS only.

/// Killing the server: the leader cannot renew and stops leading within `step_down_after`;
/// nobody else can take over.
#[tokio::test]
async fn nats_losing_the_server_makes_the_leader_step_down() {
    let config = fast();
    let server = NatsServer::start().expect("start nats-server");
    let connections = AtomicUsize::new(0);
    let a = contend(Arc::new(nats_bus(&server, &connections).await), "a", config).await;
    let b = contend(Arc::new(nats_bus(&server, &connections).await), "b", config).await;
    agreed_leader(&[&a, &b]).await;

    let killed = Instant::now();
    drop(server);
    eventually("nobody leads", || !a.is_leader() && !b.is_leader()).await;
    let elapsed = killed.elapsed();
    assert!(
        elapsed <= config.step_down_after + TOLERANCE,
        "stepped down after {elapsed:?}"
    );
    let until = Instant::now() + config.lease * 2;
    while Instant::now() < until {
        assert!(!a.is_leader() && !b.is_leader());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
