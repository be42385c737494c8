//! Building a node from its parts: the actor tree on its ports and, on a bus, this node's
//! cluster member (directory, membership, leader lease, the member runtime).
//!
//! [`assemble`] is the one assembly path. `run` calls it with the real database, adapters
//! and NATS; the fault simulation (`salesboy-sim chaos`) with its simulated clock, store, bus
//! and ports. So the simulation builds its nodes exactly as production does, and a change to
//! the wiring is a change to both.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::{
    Clock, EpochSource, EventSink, LlmProviderFactory, WhatsAppConnector,
};
use salesboy_actors::services::{Counters, ResponseCache, Services, Settings};
use salesboy_actors::store::Store;
use salesboy_actors::web::WebConnector;
use salesboy_protocol::NodeId;
use tracing::warn;

use crate::background::Background;
use crate::bus::Bus;
use crate::cluster::directory::Directory;
use crate::cluster::epochs::ClusterEpochs;
use crate::cluster::leader::{Leadership, LeaseConfig};
use crate::cluster::membership::{
    CallLoad, LoadFn, Membership, MembershipConfig, NodeInfo, NodeLoad, ReplyLoad,
};
use crate::cluster::placement::{MostHeadroom, PlacementStrategy};
use crate::cluster::placement_log::PlacementLog;
use crate::cluster::{ClusterKey, ClusterMember, ClusterParts, ClusterSettings, SealedKvBus};
use crate::local::StoreEpochs;
use crate::routing::Router;

/// What a node is built from: its ports, its tunables and, on a bus, its cluster settings.
pub struct NodeParts {
    /// This node.
    pub id: NodeId,
    /// The database.
    pub store: Arc<dyn Store>,
    /// The WhatsApp Cloud API.
    pub whatsapp: Arc<dyn WhatsAppConnector>,
    /// WhatsApp Web clients; `None` without the Web engine.
    pub web: Option<Arc<dyn WebConnector>>,
    /// The LLM providers.
    pub llm: Arc<dyn LlmProviderFactory>,
    /// Wall-clock time for records.
    pub clock: Arc<dyn Clock>,
    /// Where the actors' events go.
    pub events: Arc<dyn EventSink>,
    /// Cached LLM answers.
    pub cache: ResponseCache,
    /// The actors' tunables.
    pub settings: Settings,
    /// On a bus: this node's cluster member; `None`: a single node.
    pub cluster: Option<MemberSettings>,
}

/// What this node's cluster member is built from.
pub struct MemberSettings {
    /// The bus between the nodes.
    pub bus: Arc<dyn Bus>,
    /// The key cluster messages are sealed with.
    pub key: Arc<ClusterKey>,
    /// What the membership record says about this node.
    pub info: NodeInfo,
    /// Membership timings.
    pub membership: MembershipConfig,
    /// Leader lease timings.
    pub lease: LeaseConfig,
    /// The member's tunables.
    pub settings: ClusterSettings,
    /// Where tenants go.
    pub strategy: Arc<dyn PlacementStrategy>,
    /// This process's resident memory, for the membership record (the simulation says 0: its
    /// runs must not depend on the machine).
    pub rss_bytes: fn() -> u64,
    /// The CPU time this process has used, in seconds, for the membership record's CPU
    /// percentage (the simulation says `None`: unknown, shown as 0).
    pub cpu_seconds: fn() -> Option<f64>,
    /// Wraps the epoch source the actors use (the simulation logs every grant there);
    /// `None` in production.
    pub epochs_layer: Option<EpochsLayer>,
    /// Where this node records its placement decisions (the SQL store's log in production);
    /// `None`: nowhere.
    pub placement_log: Option<PlacementLog>,
}

/// Wraps an epoch source ([`MemberSettings::epochs_layer`]).
pub type EpochsLayer = Box<dyn FnOnce(Arc<dyn EpochSource>) -> Arc<dyn EpochSource> + Send>;

impl MemberSettings {
    /// Production settings on `bus`: the `membership` timings, the default lease and member
    /// tunables, most-headroom placement, the process's measured memory.
    pub fn new(
        bus: Arc<dyn Bus>,
        key: Arc<ClusterKey>,
        info: NodeInfo,
        membership: MembershipConfig,
    ) -> Self {
        Self {
            bus,
            key,
            info,
            membership,
            lease: LeaseConfig::default(),
            settings: ClusterSettings::default(),
            strategy: Arc::new(MostHeadroom::new()),
            rss_bytes: || crate::process::rss_bytes().unwrap_or(0),
            cpu_seconds: crate::process::cpu_seconds,
            epochs_layer: None,
            placement_log: None,
        }
    }
}

/// A node built by [`assemble`].
pub struct AssembledNode {
    /// The actor tree.
    pub node: NodeHandle,
    /// This node's cluster member, on a bus.
    pub cluster: Option<Arc<ClusterMember>>,
    /// Where tenant commands go.
    pub router: Router,
}

impl AssembledNode {
    /// Stops the actors, then the cluster member (its tasks, waited for), each within
    /// `timeout`.
    pub async fn stop(&self, timeout: Duration) {
        self.node.shutdown(timeout).await;
        if let Some(cluster) = &self.cluster
            && let Err(e) = cluster.stop(timeout).await
        {
            warn!(
                left = e.left,
                "cluster member tasks still running after the timeout"
            );
        }
    }
}

/// Builds and starts a node: on a bus, joins the directory and membership first (the actors'
/// epochs come from them), then starts the actors, the leader election and the member
/// runtime. The member's tasks run on a [`Background::child`] of `background`.
pub async fn assemble(parts: NodeParts, background: &Background) -> anyhow::Result<AssembledNode> {
    let member = background.child();
    let assembled = build(parts, &member).await;
    if assembled.is_err() {
        // What was started before the failure stops with it.
        member.cancel();
    }
    assembled
}

async fn build(parts: NodeParts, member: &Background) -> anyhow::Result<AssembledNode> {
    let NodeParts {
        id,
        store,
        whatsapp,
        web,
        llm,
        clock,
        events,
        cache,
        settings,
        cluster,
    } = parts;
    let services = |epochs: Arc<dyn EpochSource>| {
        Arc::new(Services {
            node: id.clone(),
            store: Arc::clone(&store),
            whatsapp,
            web,
            llm,
            clock,
            events,
            epochs,
            cache,
            settings,
            counters: Counters::default(),
            sends: Default::default(),
        })
    };
    let Some(cluster) = cluster else {
        let epochs: Arc<dyn EpochSource> = Arc::new(StoreEpochs::new(Arc::clone(&store)));
        let (node, _) = NodeHandle::start(services(epochs))
            .await
            .context("starting the node supervisor")?;
        return Ok(AssembledNode {
            router: Router::Local(node.clone()),
            node,
            cluster: None,
        });
    };
    let MemberSettings {
        bus,
        key,
        info,
        membership,
        lease,
        settings: cluster_settings,
        strategy,
        rss_bytes,
        cpu_seconds,
        epochs_layer,
        placement_log,
    } = cluster;
    // The membership, directory and leader records are sealed like the messages.
    let bus: Arc<dyn Bus> = Arc::new(SealedKvBus::new(bus, Arc::clone(&key)));

    let directory = Arc::new(
        Directory::open(&bus, member)
            .await
            .context("opening the tenant directory")?,
    );
    // Membership reads the load from the node, which needs the epochs, which need
    // membership: the node goes into this slot once it runs.
    let slot: Arc<OnceLock<NodeHandle>> = Arc::default();
    let membership = Arc::new(
        Membership::start(
            Arc::clone(&bus),
            id.clone(),
            info,
            load(Arc::clone(&slot), rss_bytes, cpu_seconds),
            membership,
            member,
        )
        .await
        .context("joining cluster membership")?,
    );
    let mut epochs: Arc<dyn EpochSource> = Arc::new(ClusterEpochs::new(
        id.clone(),
        Arc::clone(&directory),
        Arc::clone(&membership),
        Arc::clone(&store),
    ));
    if let Some(layer) = epochs_layer {
        epochs = layer(epochs);
    }
    let (node, _) = NodeHandle::start(services(epochs))
        .await
        .context("starting the node supervisor")?;
    let _ = slot.set(node.clone());
    let leadership = Leadership::start(Arc::clone(&bus), id.clone(), lease, member)
        .await
        .context("starting leader election")?;
    let cluster = ClusterMember::start(ClusterParts {
        me: id,
        bus,
        key,
        node: node.clone(),
        directory,
        membership,
        leadership: Arc::new(leadership),
        strategy,
        placement_log,
        settings: cluster_settings,
        background: member.clone(),
    })
    .await
    .context("joining the cluster")?;
    Ok(AssembledNode {
        router: Router::Cluster(Arc::clone(&cluster)),
        node,
        cluster: Some(cluster),
    })
}

/// The load membership reports: the node's, once it is in `slot`.
fn load(
    slot: Arc<OnceLock<NodeHandle>>,
    rss_bytes: fn() -> u64,
    cpu_seconds: fn() -> Option<f64>,
) -> LoadFn {
    // When the CPU time was last read, what it was, and the percentage then reported.
    type CpuReading = (std::time::Instant, f64, f32);
    let last: parking_lot::Mutex<Option<CpuReading>> = parking_lot::Mutex::new(None);
    // A beat soon after the last (a drain's, say) repeats the last figure: over a few ms,
    // CPU time (counted in 10 ms ticks) reads as 0 % or as hundreds.
    const MIN_CPU_INTERVAL: f64 = 0.5;
    Arc::new(move || match slot.get() {
        Some(node) => {
            let snapshot = node.observe();
            let cpu_percent = cpu_seconds().map_or(0.0, |used| {
                let now = std::time::Instant::now();
                let mut last = last.lock();
                match *last {
                    Some((then, _, percent))
                        if now.duration_since(then).as_secs_f64() < MIN_CPU_INTERVAL =>
                    {
                        percent
                    }
                    previous => {
                        let percent = previous.map_or(0.0, |(then, before, _)| {
                            let elapsed = now.duration_since(then).as_secs_f64();
                            ((used - before) / elapsed * 100.0).max(0.0) as f32
                        });
                        *last = Some((now, used, percent));
                        percent
                    }
                }
            });
            NodeLoad {
                tenants: snapshot.tenants as u64,
                conversations: snapshot.conversations,
                rss_bytes: rss_bytes(),
                cpu_percent,
                replies: ReplyLoad::of(&node.services().counters),
                calls: CallLoad::of(&node.services().counters),
            }
        }
        None => NodeLoad::default(),
    })
}
