//! Membership against both buses: the in-process `LocalBus` (clones of one bus are the
//! nodes) and `NatsBus` (one connection per node to a private nats-server per test).
//!
//! Timings are shortened (heartbeat 100 ms, fence 350 ms, failure 600 ms); every wait is
//! bounded, and time-dependent checks poll with a deadline instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use salesboy_node::background::Background;
use salesboy_node::bus::Bus;
use salesboy_node::cluster::membership::NodeRecord;
use salesboy_node::cluster::membership::{
    Membership, MembershipConfig, MembershipError, MembershipEvent, NodeInfo, NodeLoad,
};
use salesboy_protocol::subjects::NODES_BUCKET;
use salesboy_protocol::{NodeId, ProtocolRange};
use salesboy_testkit::NatsServer;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, timeout};

use salesboy_testkit::buses::*;

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

/// Slack for "within fence_after" on a busy 2-core machine.
const TOLERANCE: Duration = Duration::from_millis(300);

fn fast() -> MembershipConfig {
    MembershipConfig {
        heartbeat: Duration::from_millis(100),
        failure_timeout: Duration::from_millis(600),
        fence_after: Duration::from_millis(350),
    }
}

/// Beats fast, but nobody is declared dead for 10 s: to tell a clean leave from a timeout.
fn patient() -> MembershipConfig {
    MembershipConfig {
        heartbeat: Duration::from_millis(100),
        failure_timeout: Duration::from_secs(10),
        fence_after: Duration::from_secs(5),
    }
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Starts node `name` on `bus`, reporting `tenants` as its tenant count (its tasks run until
/// the test ends).
async fn join(
    bus: Arc<dyn Bus>,
    name: &str,
    tenants: Arc<AtomicU64>,
    config: MembershipConfig,
) -> Membership {
    join_on(bus, name, tenants, config, &Background::new()).await
}

/// [`join`], with its tasks on `background`.
async fn join_on(
    bus: Arc<dyn Bus>,
    name: &str,
    tenants: Arc<AtomicU64>,
    config: MembershipConfig,
    background: &Background,
) -> Membership {
    let info = NodeInfo {
        http_addr: format!("{name}.local:8080"),
        version: "0.1.0-test".into(),
        protocol: ProtocolRange::BUILD,
        max_tenants: 50,
    };
    let load = Arc::new(move || NodeLoad {
        tenants: tenants.load(Ordering::Relaxed),
        conversations: 2,
        rss_bytes: 1 << 20,
        cpu_percent: 1.5,
        replies: Default::default(),
        calls: Default::default(),
    });
    timeout(
        WAIT,
        Membership::start(bus, node(name), info, load, config, background),
    )
    .await
    .expect("start timed out")
    .expect("membership starts")
}

async fn join_simple(bus: Arc<dyn Bus>, name: &str, config: MembershipConfig) -> Membership {
    join(bus, name, Arc::new(AtomicU64::new(0)), config).await
}

/// Polls `condition` until it holds; panics after [`WAIT`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for `wanted` among the events, skipping others.
async fn expect_event(events: &mut broadcast::Receiver<MembershipEvent>, wanted: MembershipEvent) {
    let found = timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) if event == wanted => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {wanted:?} in time");
}

fn all_alive(membership: &Membership, names: &[&str]) -> bool {
    let view = membership.view();
    view.len() == names.len()
        && view
            .iter()
            .zip(names)
            .all(|(v, name)| v.alive && v.record.node.as_str() == *name)
}

// ---------------------------------------------------------------------------------------------
// The tests, once per bus.

async fn three_nodes_see_each_other_alive(cluster: &impl Cluster) {
    let tenants = Arc::new(AtomicU64::new(3));
    let a = join(cluster.bus().await, "a", Arc::clone(&tenants), fast()).await;
    let b = join_simple(cluster.bus().await, "b", fast()).await;
    let c = join_simple(cluster.bus().await, "c", fast()).await;
    for m in [&a, &b, &c] {
        eventually("every node sees three live nodes", || {
            all_alive(m, &["a", "b", "c"])
        })
        .await;
        assert!(m.is_alive(&node("b")));
        assert!(!m.is_alive(&node("nobody")));
        assert_eq!(
            m.live_nodes()
                .iter()
                .map(|r| r.node.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }
    assert!(!*a.fenced().borrow());

    let record = c
        .view()
        .into_iter()
        .find(|v| v.record.node == node("a"))
        .expect("c sees a")
        .record;
    assert_eq!(record.http_addr, "a.local:8080");
    assert_eq!(record.version, "0.1.0-test");
    assert_eq!(record.max_tenants, 50);
    assert_eq!((record.conversations, record.rss_bytes), (2, 1 << 20));
    assert_eq!(record.cpu_percent, 1.5);
    assert!(!record.draining);
    assert!(record.started_ms > 0 && record.heartbeat_ms >= record.started_ms);

    // The load is read at every beat.
    tenants.store(7, Ordering::Relaxed);
    eventually("c sees a's new tenant count", || {
        c.live_nodes()
            .iter()
            .any(|r| r.node == node("a") && r.tenants == 7)
    })
    .await;
}

async fn a_silent_node_is_declared_dead_after_the_failure_timeout(cluster: &impl Cluster) {
    let config = fast();
    let a = join_simple(cluster.bus().await, "a", config).await;
    let b = join_simple(cluster.bus().await, "b", config).await;
    let c_tasks = Background::new();
    let c = join_on(
        cluster.bus().await,
        "c",
        Arc::new(AtomicU64::new(0)),
        config,
        &c_tasks,
    )
    .await;
    eventually("a sees everyone", || all_alive(&a, &["a", "b", "c"])).await;
    eventually("b sees everyone", || all_alive(&b, &["a", "b", "c"])).await;
    let mut events = a.subscribe();

    // A crash: no leave, the record stays.
    let dropped = Instant::now();
    c_tasks.cancel();
    drop(c);
    expect_event(&mut events, MembershipEvent::Left(node("c"))).await;
    let elapsed = dropped.elapsed();
    // c's last write began at most one heartbeat before the drop.
    assert!(
        elapsed >= config.failure_timeout - config.heartbeat,
        "declared dead after {elapsed:?}"
    );
    let view = a.view();
    let dead = view.iter().find(|v| v.record.node == node("c"));
    assert!(dead.is_some_and(|v| !v.alive), "{view:?}");
    assert!(!a.is_alive(&node("c")));
    assert_eq!(a.live_nodes().len(), 2);
    eventually("b sees c dead too", || !b.is_alive(&node("c"))).await;
    assert!(a.is_alive(&node("b")) && b.is_alive(&node("a")));
}

/// Retention's part: a dead node's record is removed once it has been dead for the grace,
/// never a live node's nor one still within the grace, nor one `forget` refuses.
async fn dead_records_are_removed_after_the_grace(cluster: &impl Cluster) {
    let config = fast();
    let a = join_simple(cluster.bus().await, "a", config).await;
    let b = join_simple(cluster.bus().await, "b", config).await;
    let c_tasks = Background::new();
    let c = join_on(
        cluster.bus().await,
        "c",
        Arc::new(AtomicU64::new(0)),
        config,
        &c_tasks,
    )
    .await;
    eventually("a sees everyone", || all_alive(&a, &["a", "b", "c"])).await;
    c_tasks.cancel();
    drop(c);
    eventually("a sees c dead", || {
        a.view()
            .iter()
            .any(|v| v.record.node == node("c") && !v.alive)
    })
    .await;
    // Within the grace: kept.
    let grace = Duration::from_millis(400);
    assert_eq!(
        a.forget_dead(Duration::from_secs(3600), |_| true)
            .await
            .unwrap(),
        0
    );
    // Past it, but refused (its tenants still wait for their failover): kept.
    let past = Instant::now() + grace + config.failure_timeout;
    eventually("the grace has passed", || Instant::now() >= past).await;
    assert_eq!(a.forget_dead(grace, |_| false).await.unwrap(), 0);
    assert!(a.view().iter().any(|v| v.record.node == node("c")));
    // Past it: removed from the bucket, so from every node's view; the live ones stay.
    assert_eq!(a.forget_dead(grace, |_| true).await.unwrap(), 1);
    for m in [&a, &b] {
        eventually("c's record is gone", || {
            m.view().iter().all(|v| v.record.node != node("c"))
        })
        .await;
    }
    assert!(all_alive(&a, &["a", "b"]) && all_alive(&b, &["a", "b"]));
    assert_eq!(a.forget_dead(grace, |_| true).await.unwrap(), 0);
}

async fn leaving_is_seen_at_once(cluster: &impl Cluster) {
    let a = join_simple(cluster.bus().await, "a", patient()).await;
    let b = join_simple(cluster.bus().await, "b", patient()).await;
    eventually("a sees b", || all_alive(&a, &["a", "b"])).await;
    let mut events = a.subscribe();

    let left = Instant::now();
    timeout(WAIT, b.leave())
        .await
        .expect("leave timed out")
        .expect("leave");
    expect_event(&mut events, MembershipEvent::Left(node("b"))).await;
    // Far below the 10 s failure timeout: the delete, not a timeout.
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
    assert!(!a.is_alive(&node("b")));
    assert!(
        a.view().iter().all(|v| v.record.node != node("b")),
        "a node that left is not listed"
    );
    // Leaving twice is harmless.
    b.leave().await.expect("second leave");
}

async fn draining_is_written_at_once(cluster: &impl Cluster) {
    // A 5 s heartbeat: seeing the flag within 2 s proves the immediate write.
    let slow = MembershipConfig {
        heartbeat: Duration::from_secs(5),
        failure_timeout: Duration::from_secs(20),
        fence_after: Duration::from_secs(15),
    };
    let a = join_simple(cluster.bus().await, "a", slow).await;
    let b = join_simple(cluster.bus().await, "b", slow).await;
    eventually("a sees b", || all_alive(&a, &["a", "b"])).await;

    let set = Instant::now();
    b.set_draining(true);
    eventually("a sees b draining", || {
        a.live_nodes()
            .iter()
            .any(|r| r.node == node("b") && r.draining)
    })
    .await;
    assert!(
        set.elapsed() < Duration::from_secs(2),
        "{:?}",
        set.elapsed()
    );

    b.set_draining(false);
    eventually("a sees b no longer draining", || {
        a.live_nodes()
            .iter()
            .any(|r| r.node == node("b") && !r.draining)
    })
    .await;
}

/// Cuts one node's KV off (`mode`): it fences itself within `fence_after`, before the other
/// declares it dead; once healed it unfences and is seen again.
async fn cut_off_node_fences_before_it_is_declared_dead(cluster: &impl Cluster, mode: u8) {
    let config = fast();
    let a = join_simple(cluster.bus().await, "a", config).await;
    let cuttable = CuttableBus::new(cluster.bus().await);
    let b = join_simple(Arc::new(cuttable.clone()), "b", config).await;
    eventually("a sees b", || all_alive(&a, &["a", "b"])).await;
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    let mut fenced = b.fenced();

    let cut = Instant::now();
    cuttable.set(mode);
    expect_event(&mut b_events, MembershipEvent::Fenced).await;
    let fenced_after = cut.elapsed();
    assert!(*fenced.borrow_and_update());
    expect_event(&mut a_events, MembershipEvent::Left(node("b"))).await;
    let dead_after = cut.elapsed();
    assert!(
        fenced_after <= config.fence_after + TOLERANCE,
        "fenced after {fenced_after:?}"
    );
    assert!(
        fenced_after + config.heartbeat >= config.fence_after,
        "fenced too early: {fenced_after:?}"
    );
    assert!(
        fenced_after < dead_after,
        "fenced after {fenced_after:?}, declared dead after {dead_after:?}"
    );

    cuttable.set(HEALTHY);
    expect_event(&mut b_events, MembershipEvent::Unfenced).await;
    assert!(!*fenced.borrow_and_update());
    expect_event(&mut a_events, MembershipEvent::Joined(node("b"))).await;
    assert!(a.is_alive(&node("b")));
}

/// Waits for every event of `wanted`, in any order, skipping others.
async fn expect_events(
    events: &mut broadcast::Receiver<MembershipEvent>,
    mut wanted: Vec<MembershipEvent>,
) {
    let found = timeout(WAIT, async {
        while !wanted.is_empty() {
            match events.recv().await {
                Ok(event) => wanted.retain(|w| *w != event),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "not all of {wanted:?} in time");
}

/// The events until `Unfenced` (excluded).
async fn events_until_unfenced(
    events: &mut broadcast::Receiver<MembershipEvent>,
) -> Vec<MembershipEvent> {
    timeout(WAIT, async {
        let mut seen = Vec::new();
        loop {
            match events.recv().await {
                Ok(MembershipEvent::Unfenced) => return seen,
                Ok(event) => seen.push(event),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("unfenced in time")
}

/// Nodes a and b, both just cut off from the bus (their writes fail), as when the bus loses
/// its quorum; b's events from before the cut.
struct BothCutOff {
    a_bus: CuttableBus,
    b_bus: CuttableBus,
    _a: Membership,
    b: Membership,
    b_events: broadcast::Receiver<MembershipEvent>,
}

impl BothCutOff {
    async fn start(cluster: &impl Cluster) -> Self {
        let a_bus = CuttableBus::new(cluster.bus().await);
        let b_bus = CuttableBus::new(cluster.bus().await);
        let a = join_simple(Arc::new(a_bus.clone()), "a", fast()).await;
        let b = join_simple(Arc::new(b_bus.clone()), "b", fast()).await;
        eventually("b sees a", || all_alive(&b, &["a", "b"])).await;
        let b_events = b.subscribe();
        a_bus.set(FAILING);
        b_bus.set(FAILING);
        Self {
            a_bus,
            b_bus,
            _a: a,
            b,
            b_events,
        }
    }

    /// Heals b alone; when it was healed, and its events until it unfenced.
    async fn heal_b(&mut self) -> (Instant, Vec<MembershipEvent>) {
        let healed = Instant::now();
        self.b_bus.set(HEALTHY);
        (healed, events_until_unfenced(&mut self.b_events).await)
    }

    /// a, still silent, is declared dead again by b, `failure_timeout` after b healed at the
    /// soonest (b counts its silence from its unfencing); healed, a joins.
    async fn a_dies_again_then_joins(mut self, healed: Instant) {
        expect_event(&mut self.b_events, MembershipEvent::Left(node("a"))).await;
        assert!(
            healed.elapsed() >= fast().failure_timeout,
            "a declared dead {:?} after b healed, on a silence b counted while cut off",
            healed.elapsed()
        );
        self.a_bus.set(HEALTHY);
        expect_event(&mut self.b_events, MembershipEvent::Joined(node("a"))).await;
    }
}

/// Every node cut off at once: each declares the others dead while fenced. The first to
/// unfence withdraws those verdicts before it serves again, so it never fails over the
/// tenants of a node that comes back just after it; a node still silent is declared dead
/// again, `failure_timeout` after the unfencing at the soonest.
async fn deaths_declared_while_cut_off_are_withdrawn_on_unfencing(cluster: &impl Cluster) {
    let mut cut = BothCutOff::start(cluster).await;
    expect_events(
        &mut cut.b_events,
        vec![MembershipEvent::Fenced, MembershipEvent::Left(node("a"))],
    )
    .await;
    assert!(
        !cut.b.is_alive(&node("a")),
        "b declared a dead while cut off"
    );

    // b comes back first; a is still cut off (and fenced).
    let (healed, before_unfenced) = cut.heal_b().await;
    assert!(
        before_unfenced.contains(&MembershipEvent::Joined(node("a"))),
        "a counts as alive again before b serves: {before_unfenced:?}"
    );
    cut.a_dies_again_then_joins(healed).await;
}

/// Both nodes cut off; b heals as soon as it has fenced, before its silence count of a runs
/// out. That count, begun while b could see nothing, starts again when b unfences: a is not
/// declared dead sooner than `failure_timeout` after it.
async fn silences_counted_while_cut_off_start_again_on_unfencing(cluster: &impl Cluster) {
    let mut cut = BothCutOff::start(cluster).await;
    expect_event(&mut cut.b_events, MembershipEvent::Fenced).await;
    let (healed, before_unfenced) = cut.heal_b().await;
    // On a slow machine b may have declared a dead before it healed: then it withdrew that.
    let last_of_a = before_unfenced.iter().rev().find(
        |e| matches!(e, MembershipEvent::Left(n) | MembershipEvent::Joined(n) if *n == node("a")),
    );
    assert!(
        !matches!(last_of_a, Some(MembershipEvent::Left(_))),
        "a counts as alive when b serves again: {before_unfenced:?}"
    );
    cut.a_dies_again_then_joins(healed).await;
}

async fn hanging_writes_fence(cluster: &impl Cluster) {
    cut_off_node_fences_before_it_is_declared_dead(cluster, HANGING).await;
}

async fn failing_writes_fence(cluster: &impl Cluster) {
    cut_off_node_fences_before_it_is_declared_dead(cluster, FAILING).await;
}

async fn start_fails_when_the_first_heartbeat_fails(cluster: &impl Cluster) {
    let cuttable = CuttableBus::new(cluster.bus().await);
    cuttable.set(FAILING);
    let info = NodeInfo {
        http_addr: "x:1".into(),
        version: "0".into(),
        protocol: ProtocolRange::BUILD,
        max_tenants: 1,
    };
    let result = Membership::start(
        Arc::new(cuttable),
        node("x"),
        info.clone(),
        Arc::new(NodeLoad::default),
        fast(),
        &Background::new(),
    )
    .await;
    // The protocol check reads the bucket before the first heartbeat writes it: either fails.
    assert!(
        matches!(
            result,
            Err(MembershipError::Read(_) | MembershipError::Write(_))
        ),
        "{result:?}"
    );

    let mut invalid = fast();
    invalid.fence_after = invalid.failure_timeout;
    let result = Membership::start(
        cluster.bus().await,
        node("x"),
        info,
        Arc::new(NodeLoad::default),
        invalid,
        &Background::new(),
    )
    .await;
    assert!(
        matches!(result, Err(MembershipError::InvalidConfig(_))),
        "{result:?}"
    );
}

/// Starts node `name` announcing `protocol` (a build of another protocol version).
async fn join_speaking(
    bus: Arc<dyn Bus>,
    name: &str,
    protocol: ProtocolRange,
    config: MembershipConfig,
) -> Result<Membership, MembershipError> {
    let info = NodeInfo {
        http_addr: format!("{name}.local:8080"),
        version: format!("0.{}.0-test", protocol.newest),
        protocol,
        max_tenants: 50,
    };
    let load = Arc::new(NodeLoad::default);
    timeout(
        WAIT,
        Membership::start(bus, node(name), info, load, config, &Background::new()),
    )
    .await
    .expect("start timed out")
}

fn live_names(membership: &Membership) -> Vec<String> {
    membership
        .live_nodes()
        .iter()
        .map(|r| r.node.to_string())
        .collect()
}

/// A rolling upgrade's middle: a node of the next build (it speaks this protocol and the
/// next) joins and works beside this build; a build that speaks only the next protocol is
/// refused at start with the live node it cannot talk to named, and, should one be in the
/// bucket anyway, is never placed on by a node that cannot speak to it.
async fn the_next_protocol_joins_and_a_disjoint_one_is_refused(cluster: &impl Cluster) {
    let current = ProtocolRange::BUILD;
    let next = ProtocolRange::new(current.oldest, current.newest + 1).expect("next range");
    let next_only = ProtocolRange::new(current.newest + 1, current.newest + 1).expect("next only");

    // Patient: the record put by hand below must not be declared dead while it is checked.
    let a = join_simple(cluster.bus().await, "a", patient()).await;
    let b = join_speaking(cluster.bus().await, "b", next, patient())
        .await
        .expect("a node speaking this protocol and the next joins");
    for m in [&a, &b] {
        eventually("both see both live", || live_names(m) == ["a", "b"]).await;
        assert_eq!(m.cluster_protocol(), current.newest, "the common version");
    }
    assert!(a.view().iter().all(|v| v.compatible));

    let refused = join_speaking(cluster.bus().await, "c", next_only, fast()).await;
    let Err(error) = refused else {
        panic!("a node speaking only the next protocol joined");
    };
    assert!(
        matches!(&error, MembershipError::IncompatiblePeer { peer, peer_protocol, own_protocol, .. }
            if peer == &node("a") && *peer_protocol == current && *own_protocol == next_only),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("node a (salesboy 0.1.0-test) speaks cluster protocol")
            && message.contains("docs/upgrades.md"),
        "{message}"
    );
    assert!(
        a.view().iter().all(|v| v.record.node != node("c")),
        "the refused node wrote no record"
    );

    // A disjoint node's record in the bucket anyway (it started before a, say).
    let mut events = a.subscribe();
    let record = NodeRecord {
        node: node("d"),
        http_addr: "d.local:8080".into(),
        version: "0.9.0-test".into(),
        protocol: next_only,
        max_tenants: 50,
        tenants: 0,
        conversations: 0,
        rss_bytes: 0,
        cpu_percent: 0.0,
        replies: Default::default(),
        calls: Default::default(),
        draining: false,
        started_ms: 1,
        heartbeat_ms: 1,
    };
    let nodes = cluster
        .bus()
        .await
        .kv(NODES_BUCKET, 1)
        .await
        .expect("nodes bucket");
    nodes
        .put("d", serde_json::to_vec(&record).expect("json").into())
        .await
        .expect("put d");
    eventually("a sees d", || {
        a.view()
            .iter()
            .any(|v| v.record.node == node("d") && v.alive && !v.compatible)
    })
    .await;
    assert_eq!(
        live_names(&a),
        ["a", "b"],
        "d is never a placement target of a"
    );
    // b speaks d's version: to b, d is a member.
    eventually("b takes d", || live_names(&b) == ["a", "b", "d"]).await;
    while let Ok(event) = events.try_recv() {
        assert_ne!(
            event,
            MembershipEvent::Joined(node("d")),
            "d announced as joined"
        );
    }
}

salesboy_testkit::bus_suite!([
    the_next_protocol_joins_and_a_disjoint_one_is_refused,
    three_nodes_see_each_other_alive,
    a_silent_node_is_declared_dead_after_the_failure_timeout,
    dead_records_are_removed_after_the_grace,
    leaving_is_seen_at_once,
    draining_is_written_at_once,
    hanging_writes_fence,
    failing_writes_fence,
    deaths_declared_while_cut_off_are_withdrawn_on_unfencing,
    silences_counted_while_cut_off_start_again_on_unfencing,
    start_fails_when_the_first_heartbeat_fails,
]);

// ---------------------------------------------------------------------------------------------
// NATS only.

/// Killing the server cuts every node off: each fences itself within `fence_after`.
#[tokio::test]
async fn nats_losing_the_server_fences_every_node() {
    let config = fast();
    let server = NatsServer::start().expect("start nats-server");
    let connections = AtomicUsize::new(0);
    let a_bus: Arc<dyn Bus> = Arc::new(nats_bus(&server, &connections).await);
    let b_bus: Arc<dyn Bus> = Arc::new(nats_bus(&server, &connections).await);
    let a = join_simple(a_bus, "a", config).await;
    let b = join_simple(b_bus, "b", config).await;
    eventually("a sees b", || all_alive(&a, &["a", "b"])).await;
    let mut a_fenced = a.fenced();
    let mut b_fenced = b.fenced();

    let killed = Instant::now();
    drop(server);
    for fenced in [&mut a_fenced, &mut b_fenced] {
        timeout(WAIT, fenced.wait_for(|f| *f))
            .await
            .expect("not fenced in time")
            .expect("membership alive");
    }
    let elapsed = killed.elapsed();
    assert!(
        elapsed <= config.fence_after + TOLERANCE,
        "fenced after {elapsed:?}"
    );
}
