//! The cluster in one process: three nodes on one in-process bus and one database, one fake
//! Cloud API. DirectoryEntry spreads tenants, any node's webhook reaches the tenant's host,
//! a stopped node's tenants fail over, a drained node ends with none — and every message
//! gets exactly one reply throughout. A session stop, start and a tenant's deletion asked of
//! one node reach the tenant's host on another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use salesboy_node::bus::{Bus, LocalBus};
use salesboy_protocol::{ProtocolRange, TenantId};
use salesboy_testkit::gateway::WAIT;
use salesboy_testkit::{Db, Gateway, eventually};
use salesboy_testkit::{FakeWhatsApp, FakeWhatsAppOptions, webhooks};

const TENANTS: usize = 24;

fn phone(i: usize) -> String {
    format!("1065403522{i:05}")
}

struct Cluster {
    nodes: Vec<Option<Gateway>>,
    whatsapp: FakeWhatsApp,
    bus: Arc<dyn Bus>,
    tenants: Vec<TenantId>,
    sent_before: usize,
}

impl Cluster {
    async fn start(nodes: usize) -> Self {
        Self::start_speaking(&vec![ProtocolRange::BUILD; nodes]).await
    }

    /// A cluster whose node `i` announces `protocols[i]` (a node of another build).
    async fn start_speaking(protocols: &[ProtocolRange]) -> Self {
        let whatsapp = FakeWhatsApp::start(FakeWhatsAppOptions::default()).await;
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let first = Self::node(&bus, &whatsapp, 0, None, protocols[0]).await;
        let shared = first.config.effective_database_url();
        let mut gateways = vec![Some(first)];
        for (i, protocol) in protocols.iter().enumerate().skip(1) {
            gateways.push(Some(
                Self::node(&bus, &whatsapp, i, Some(shared.clone()), *protocol).await,
            ));
        }
        let mut tenants = Vec::new();
        let seeder = gateways[0].as_ref().expect("node 0");
        for i in 0..TENANTS {
            let tenant = seeder.add_tenant(&format!("t{i}"), &phone(i), None).await;
            seeder
                .add_knowledge(&tenant, "faq", &["We open at 9am every day."])
                .await;
            tenants.push(tenant);
        }
        Self {
            nodes: gateways,
            whatsapp,
            bus,
            tenants,
            sent_before: 0,
        }
    }

    async fn node(
        bus: &Arc<dyn Bus>,
        whatsapp: &FakeWhatsApp,
        i: usize,
        database: Option<String>,
        protocol: ProtocolRange,
    ) -> Gateway {
        let base = whatsapp.base_url();
        Gateway::start_on(Db::Sqlite, Some(Arc::clone(bus)), move |c| {
            c.node_id = salesboy_protocol::NodeId::new(format!("node-{i}")).expect("node id");
            c.protocol = protocol;
            c.whatsapp_api_base = base;
            c.failure_timeout_ms = 2_000;
            c.debounce_ms = 0;
            if let Some(database) = database {
                c.database_url = Some(database);
            }
        })
        .await
    }

    fn live(&self) -> impl Iterator<Item = &Gateway> {
        self.nodes.iter().flatten()
    }

    /// One message per tenant, each posted to a different live node; waits for every reply.
    async fn round(&mut self, tag: &str) {
        let live: Vec<&Gateway> = self.live().collect();
        for (i, tenant) in self.tenants.iter().enumerate() {
            let gateway = live[i % live.len()];
            let body = webhooks::text_message(
                &phone(i),
                "16505550000",
                &format!("wamid.{tag}.{i}"),
                "when do you open?",
            );
            assert_eq!(
                gateway.post_webhook(&body).await,
                StatusCode::OK,
                "{tenant}"
            );
        }
        let expected = self.sent_before + self.tenants.len();
        self.whatsapp
            .wait_for_sent(expected, WAIT)
            .await
            .expect("every message answered");
        self.sent_before = expected;
    }

    /// Which node hosts each tenant, per the directory as node `via` sees it.
    fn hosts(&self, via: &Gateway) -> HashMap<String, usize> {
        let cluster = via.node.cluster.as_ref().expect("cluster mode");
        let mut counts = HashMap::new();
        for tenant in &self.tenants {
            if let Some(v) = cluster.directory().cached(tenant) {
                *counts.entry(v.entry.node.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }
}

#[tokio::test]
async fn tenants_spread_fail_over_and_drain_with_exactly_one_reply_each() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(3).await;
    let leader_count = cluster
        .live()
        .filter(|g| g.node.cluster.as_ref().is_some_and(|c| c.is_leader()))
        .count();
    assert!(leader_count <= 1, "at most one leader");

    cluster.round("a").await;
    let hosts = cluster.hosts(cluster.nodes[0].as_ref().expect("node 0"));
    assert_eq!(
        hosts.values().sum::<usize>(),
        TENANTS,
        "every tenant placed: {hosts:?}"
    );
    assert!(
        hosts.len() >= 2,
        "placement spreads tenants over nodes: {hosts:?}"
    );

    // Node 2 disappears without a goodbye; its tenants are placed again and answer.
    let gone = cluster.nodes[2].take().expect("node 2");
    gone.node.stop().await;
    cluster.round("b").await;
    let observer = cluster.nodes[0].as_ref().expect("node 0");
    let after = eventually(WAIT, || async {
        let hosts = cluster.hosts(observer);
        (!hosts.contains_key("node-2")).then_some(hosts)
    })
    .await;
    assert_eq!(after.values().sum::<usize>(), TENANTS, "{after:?}");

    // Drain node 0: it ends with no tenants; messages keep being answered once.
    let drained = cluster.nodes[0]
        .as_ref()
        .expect("node 0")
        .node
        .cluster
        .clone()
        .expect("cluster");
    let moved = drained.drain().await.expect("drain");
    // The rebalancer may still be moving a tenant between the survivors when the drain
    // starts, so its events can come first: wait for one of the drain's own moves, recorded
    // in the events outbox (an in-process bus has no stream to publish it to).
    let survivor = cluster.nodes[1].as_ref().expect("node 1");
    let event = eventually(WAIT, || async {
        survivor
            .node
            .store
            .recent_events(1_000)
            .await
            .expect("events")
            .into_iter()
            .find(|event| {
                event.kind == salesboy_protocol::subjects::EventKind::TenantMigrated
                    && event.detail["from"] == "node-0"
            })
    })
    .await;
    assert_eq!(
        event.detail["to"], "node-1",
        "the drain moves to the one node left"
    );
    let observer = cluster.nodes[1].as_ref().expect("node 1");
    let hosts = eventually(WAIT, || async {
        let hosts = cluster.hosts(observer);
        (!hosts.contains_key("node-0")).then_some(hosts)
    })
    .await;
    assert_eq!(
        hosts.get("node-1"),
        Some(&TENANTS),
        "all on the last node: {hosts:?} (moved {moved})"
    );
    let node0 = cluster.nodes[0].take().expect("node 0");
    node0.node.stop().await;
    cluster.round("c").await;

    // Exactly one reply per message, across every round.
    let sent = cluster.whatsapp.sent();
    let first = sent.first().map(|m| m.received);
    let mut per_tenant: HashMap<String, Vec<Duration>> = HashMap::new();
    for message in &sent {
        per_tenant
            .entry(message.phone_number_id.clone())
            .or_default()
            .push(message.received - first.unwrap_or(message.received));
    }
    per_tenant.retain(|_, replies| replies.len() != 3);
    assert_eq!(
        sent.len(),
        3 * TENANTS,
        "no duplicates; replies after the first, of tenants without 3: {per_tenant:?}"
    );
    for node in cluster.nodes.into_iter().flatten() {
        node.node.stop().await;
    }
}

/// A rolling upgrade in one process: node 1 plays the next build (it speaks this protocol
/// version and the next one). It takes tenants beside node 0, node 0 drains onto it (live
/// migration across the two builds), and every message is answered exactly once.
#[tokio::test]
async fn a_node_of_the_next_protocol_takes_the_tenants_of_a_draining_one() {
    let current = ProtocolRange::BUILD;
    let next = ProtocolRange::new(current.oldest, current.newest + 1).expect("next range");
    let mut cluster = Cluster::start_speaking(&[current, next]).await;
    {
        let node0 = cluster.nodes[0].as_ref().expect("node 0");
        let membership = node0.node.cluster.as_ref().expect("cluster").membership();
        eventually(WAIT, || async {
            (membership.live_nodes().len() == 2).then_some(())
        })
        .await;
        assert_eq!(membership.cluster_protocol(), current.newest);
    }

    cluster.round("a").await;
    let node0 = cluster.nodes[0].as_ref().expect("node 0");
    let hosts = cluster.hosts(node0);
    assert_eq!(hosts.values().sum::<usize>(), TENANTS, "{hosts:?}");
    assert_eq!(hosts.len(), 2, "both builds host tenants: {hosts:?}");

    let moved = node0
        .node
        .cluster
        .clone()
        .expect("cluster")
        .drain()
        .await
        .expect("drain onto the next build's node");
    let observer = cluster.nodes[1].as_ref().expect("node 1");
    let hosts = eventually(WAIT, || async {
        let hosts = cluster.hosts(observer);
        (hosts.get("node-1") == Some(&TENANTS)).then_some(hosts)
    })
    .await;
    assert!(moved > 0, "node 0 had tenants to hand over: {hosts:?}");
    cluster.round("b").await;
    cluster.nodes[0].take().expect("node 0").node.stop().await;
    cluster.round("c").await;

    assert_eq!(
        cluster.whatsapp.sent().len(),
        3 * TENANTS,
        "exactly one reply per message"
    );
    for node in cluster.nodes.into_iter().flatten() {
        node.node.stop().await;
    }
}

/// An adoption arriving after the mover called the move off (its moving mark rolled back, as
/// after an adoption request that timed out) is refused: the adopter hosts nothing, the
/// directory keeps the tenant where it was, and its messages are answered once.
#[tokio::test]
async fn an_adoption_the_mover_called_off_is_refused() {
    use salesboy_actors::handoff::TenantHandoff;
    use salesboy_node::cluster::MigrationError;
    use salesboy_node::cluster::control_request;
    use salesboy_node::cluster::directory::{DirectoryEntry, EntryState};
    use salesboy_node::cluster::wire::{ControlError, ControlReply, ControlRequest};

    let mut cluster = Cluster::start(2).await;
    cluster.round("a").await;
    let observer = cluster.nodes[0].as_ref().expect("node 0");
    let directory = observer
        .node
        .cluster
        .as_ref()
        .expect("cluster mode")
        .directory()
        .clone();
    let tenant = cluster.tenants[0].clone();
    let current = directory
        .fetch(&tenant)
        .await
        .expect("directory")
        .expect("placed");
    let host = current.entry.node.clone();
    let (other, other_index) = if host.as_str() == "node-0" {
        ("node-1", 1)
    } else {
        ("node-0", 0)
    };
    let other = salesboy_protocol::NodeId::new(other).expect("node id");
    // The mover marks the tenant moving, then gives up and rolls the mark back.
    let epoch = current.entry.epoch;
    let marked = directory
        .update(
            &tenant,
            DirectoryEntry {
                node: host.clone(),
                epoch,
                state: EntryState::Moving { to: other.clone() },
            },
            current.revision,
        )
        .await
        .expect("mark moving");
    directory
        .update(
            &tenant,
            DirectoryEntry {
                node: host.clone(),
                epoch,
                state: EntryState::Active,
            },
            marked.revision,
        )
        .await
        .expect("roll the mark back");

    // The late adoption request.
    let reply = control_request(
        cluster.bus.as_ref(),
        &salesboy_testkit::sandbox_cluster_key(),
        &other,
        &ControlRequest::Adopt {
            handoff: TenantHandoff {
                tenant: tenant.clone(),
                epoch,
                conversations: vec![],
                session: None,
                held: vec![],
            },
            epoch: epoch + 1,
            mark_revision: marked.revision,
        },
        WAIT,
    )
    .await
    .expect("an answer");
    assert!(
        matches!(
            reply,
            ControlReply::Error(ControlError::Migration(MigrationError::CalledOff { .. }))
        ),
        "refused: {reply:?}"
    );
    let adopter = cluster.nodes[other_index].as_ref().expect("adopter");
    assert!(
        adopter.node.node.observe_tenant(&tenant).await.is_none(),
        "the adopter hosts nothing"
    );
    let now = directory
        .fetch(&tenant)
        .await
        .expect("directory")
        .expect("placed");
    assert_eq!(
        (now.entry.node, now.entry.epoch, now.entry.state),
        (host, epoch, EntryState::Active)
    );

    cluster.round("b").await;
    assert_eq!(cluster.whatsapp.sent().len(), 2 * TENANTS, "no duplicates");
    for node in cluster.nodes.into_iter().flatten() {
        node.node.stop().await;
    }
}

/// `session.stop`, `session.start` and `tenant.delete` asked of a node that does not host
/// the tenant reach its host: the stop stops it there and no node takes it up (not even for
/// a customer's message, which waits), the start runs it again and the waiting message is
/// answered, the deletion stops it and takes it out of the directory on every node.
#[tokio::test]
async fn stop_start_and_delete_reach_the_host_on_another_node() {
    use salesboy_testkit::gateway::ADMIN_TOKEN;

    let mut cluster = Cluster::start(2).await;
    cluster.round("a").await;
    let tenant = cluster.tenants[0].clone();
    let (hosting, asking) = {
        let via = cluster.nodes[0].as_ref().expect("node 0");
        let host = via
            .node
            .cluster
            .as_ref()
            .expect("cluster mode")
            .directory()
            .cached(&tenant)
            .expect("placed")
            .entry
            .node;
        if host.as_str() == "node-0" {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let host = cluster.nodes[hosting].as_ref().expect("host");
    let api = cluster.nodes[asking].as_ref().expect("the other node");
    assert!(host.node.node.observe_tenant(&tenant).await.is_some());
    let admin = |method: reqwest::Method, path: &str| {
        api.http
            .request(method, format!("{}/api/tenants/{tenant}{path}", api.base))
            .bearer_auth(ADMIN_TOKEN)
    };

    let stopped = admin(reqwest::Method::POST, "/session/stop")
        .send()
        .await
        .expect("stop");
    assert_eq!(stopped.status(), StatusCode::OK);
    eventually(WAIT, || async {
        host.node
            .node
            .observe_tenant(&tenant)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let waiting = webhooks::text_message(&phone(0), "16505550000", "wamid.waits", "open sunday?");
    assert_eq!(api.post_webhook(&waiting).await, StatusCode::OK);
    assert!(api.node.node.observe_tenant(&tenant).await.is_none());
    assert!(host.node.node.observe_tenant(&tenant).await.is_none());

    let started = admin(reqwest::Method::POST, "/session/start")
        .send()
        .await
        .expect("start");
    let status = started.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        started.text().await.unwrap_or_default()
    );
    let expected = cluster.sent_before + 1;
    cluster
        .whatsapp
        .wait_for_sent(expected, WAIT)
        .await
        .expect("the waiting message answered once started");
    cluster.sent_before = expected;

    let deleted = admin(reqwest::Method::DELETE, "?erase_data=true")
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    for gateway in cluster.live() {
        let directory = gateway.node.cluster.as_ref().expect("cluster").directory();
        eventually(WAIT, || async {
            let gone = directory.cached(&tenant).is_none()
                && gateway.node.node.observe_tenant(&tenant).await.is_none();
            gone.then_some(())
        })
        .await;
    }
    // Another tenant carries on; the deleted one's number routes nowhere.
    let gone = webhooks::text_message(&phone(0), "16505550000", "wamid.gone", "hello?");
    assert_eq!(api.post_webhook(&gone).await, StatusCode::OK);
    let other = webhooks::text_message(&phone(1), "16505550000", "wamid.other", "open?");
    assert_eq!(api.post_webhook(&other).await, StatusCode::OK);
    let expected = cluster.sent_before + 1;
    cluster
        .whatsapp
        .wait_for_sent(expected, WAIT)
        .await
        .expect("the other tenant answers");
    let to_deleted = cluster
        .whatsapp
        .sent()
        .iter()
        .filter(|m| m.phone_number_id == phone(0))
        .count();
    assert_eq!(
        to_deleted, 2,
        "the round's answer and the waiting one, nothing after"
    );
}
