//! One simulated node incarnation: the real actor tree (`NodeHandle`) and the real cluster
//! runtime (membership, directory, leader lease, `Cluster`: routing, migration, failover,
//! rebalancing), wired as `salesboy serve` wires them, but on in-memory ports behind the
//! node's gate, and without HTTP (the harness's customers call the production [`Ingress`]).

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Context;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::EpochSource;
use salesboy_actors::services::{Counters, Services, Settings, response_cache};
use salesboy_actors::store::Store;
use salesboy_node::cluster::directory::Directory;
use salesboy_node::cluster::epochs::ClusterEpochs;
use salesboy_node::cluster::leader::{Leadership, LeaseConfig};
use salesboy_node::cluster::membership::{
    LoadFn, Membership, MembershipConfig, NodeInfo, NodeLoad,
};
use salesboy_node::cluster::placement::MostHeadroom;
use salesboy_node::cluster::{Cluster, ClusterSettings};
use salesboy_node::ingress::Ingress;
use salesboy_node::routing::Router;
use salesboy_protocol::NodeId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bus::Network;
use super::gate::{Gate, Link};
use super::ports::{LoggedEpochs, NoEvents, Outbox, SimClock, SimLlm, SimWhatsApp};
use super::rng::KeyedDraws;
use super::store::{GatedStore, MemoryStore, WriteLog};

/// The failure timeout of the simulated cluster (membership declares a silent node dead).
pub const FAILURE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// What every node of one simulated cluster shares.
pub struct Shared {
    /// The database.
    pub store: Arc<MemoryStore>,
    /// The network.
    pub network: Arc<Network>,
    /// What Meta accepted.
    pub outbox: Outbox,
    /// Accepted claims and fenced writes.
    pub log: WriteLog,
    /// Seeded draws for latencies and transient failures.
    pub draws: Arc<KeyedDraws>,
    /// The clock.
    pub clock: SimClock,
    /// Thousandths of WhatsApp sends that fail transiently.
    pub whatsapp_transient_per_mille: u64,
    /// The longest store latency.
    pub max_store_latency_ms: u64,
}

/// One running node incarnation.
pub struct SimNode {
    /// `node-<i>#<incarnation>`.
    pub label: String,
    /// The node's id (the same across restarts).
    pub id: NodeId,
    /// Its gate.
    pub gate: Gate,
    /// Its view of the database.
    pub store: Arc<dyn Store>,
    /// Its cluster runtime.
    pub cluster: Arc<Cluster>,
    /// Its actor tree.
    pub node: NodeHandle,
    /// Its ingress (what the webhook handler calls once a delivery is verified and parsed).
    pub ingress: Ingress,
    /// Cancelled when it dies: stops its ingress hand-offs.
    shutdown: CancellationToken,
    /// The node whose load membership reports; emptied at death (it would otherwise be a
    /// cycle that keeps the dead incarnation's membership alive).
    slot: Arc<Mutex<Option<NodeHandle>>>,
}

impl SimNode {
    /// Starts incarnation `incarnation` of node `index`.
    pub async fn start(shared: &Shared, index: usize, incarnation: u32) -> anyhow::Result<Self> {
        let id = NodeId::new(format!("node-{index}")).context("node id")?;
        let label = format!("{id}#{incarnation}");
        let gate = Gate::new();
        let bus = shared.network.handle(gate.clone());
        let store: Arc<dyn Store> = Arc::new(GatedStore::new(
            Arc::clone(&shared.store),
            gate.clone(),
            label.clone(),
            Arc::clone(&shared.draws),
            shared.max_store_latency_ms,
            Arc::clone(&shared.log),
        ));
        let directory = Arc::new(Directory::open(&bus).await.context("directory")?);
        let slot: Arc<Mutex<Option<NodeHandle>>> = Arc::default();
        let load_slot = Arc::clone(&slot);
        let load: LoadFn = Arc::new(move || match load_slot.lock().clone() {
            Some(node) => {
                let snapshot = node.observe();
                NodeLoad {
                    tenants: snapshot.tenants as u64,
                    conversations: snapshot.conversations,
                    rss_bytes: 0,
                    cpu_percent: 0.0,
                }
            }
            None => NodeLoad::default(),
        });
        let margin = FAILURE_TIMEOUT * 3 / 10;
        let membership = Arc::new(
            Membership::start(
                Arc::clone(&bus),
                id.clone(),
                NodeInfo {
                    http_addr: format!("sim:{index}"),
                    version: "sim".into(),
                    max_tenants: 10_000,
                },
                load,
                MembershipConfig {
                    heartbeat: FAILURE_TIMEOUT / 5,
                    failure_timeout: FAILURE_TIMEOUT,
                    fence_after: FAILURE_TIMEOUT - margin,
                },
            )
            .await
            .context("membership")?,
        );
        let epochs: Arc<dyn EpochSource> = Arc::new(LoggedEpochs {
            node: label.clone(),
            inner: Arc::new(ClusterEpochs::new(
                id.clone(),
                Arc::clone(&directory),
                Arc::clone(&membership),
                Arc::clone(&store),
            )),
            log: Arc::clone(&shared.log),
        });
        let services = Arc::new(Services {
            node: id.clone(),
            store: Arc::clone(&store),
            whatsapp: Arc::new(SimWhatsApp {
                node: label.clone(),
                gate: gate.clone(),
                outbox: Arc::clone(&shared.outbox),
                draws: Arc::clone(&shared.draws),
                transient_per_mille: shared.whatsapp_transient_per_mille,
                clock: shared.clock,
            }),
            llm: Arc::new(SimLlm {
                node: label.clone(),
                gate: gate.clone(),
                draws: Arc::clone(&shared.draws),
                answers: Arc::default(),
            }),
            clock: Arc::new(shared.clock),
            events: Arc::new(NoEvents),
            epochs,
            // No cache: every answer is a fresh, uniquely tagged one.
            cache: response_cache(0),
            settings: Settings {
                debounce: Duration::from_millis(300),
                ..Settings::default()
            },
            counters: Counters::default(),
            sends: Default::default(),
        });
        let (node, _) = NodeHandle::start(services)
            .await
            .context("node supervisor")?;
        *slot.lock() = Some(node.clone());
        let leadership = Leadership::start(Arc::clone(&bus), id.clone(), LeaseConfig::default())
            .await
            .context("leadership")?;
        let cluster = Cluster::start(
            id.clone(),
            bus,
            node.clone(),
            directory,
            membership,
            Arc::new(leadership),
            Arc::new(MostHeadroom::new()),
            ClusterSettings::default(),
        )
        .await
        .context("cluster")?;
        let shutdown = CancellationToken::new();
        let ingress = Ingress::new(
            Arc::clone(&store),
            Arc::new(shared.clock),
            Router::Cluster(Arc::clone(&cluster)),
            TaskTracker::new(),
            shutdown.clone(),
        );
        Ok(Self {
            label,
            id,
            gate,
            store,
            cluster,
            node,
            ingress,
            shutdown,
            slot,
        })
    }

    /// Kills the incarnation: every call it makes fails from now on, its tasks stop, its
    /// actors stop without being able to write anything.
    pub async fn kill(self) {
        self.gate.set(Link::Down);
        self.shutdown.cancel();
        self.node.shutdown(Duration::from_secs(1)).await;
        *self.slot.lock() = None;
        drop(self.cluster);
    }
}
