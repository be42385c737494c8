//! One simulated node incarnation: the real actor tree (`NodeHandle`) and the real cluster
//! runtime (membership, directory, leader lease, `ClusterMember`: routing, migration, failover,
//! rebalancing), built by the production assembly ([`assembly::assemble`], as
//! `salesboy serve` builds a node), but on in-memory ports behind the node's gate, and
//! without HTTP (the harness's customers call the production [`Ingress`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::services::{Settings, response_cache};
use salesboy_actors::store::Store;
use salesboy_node::assembly::{self, AssembledNode, MemberSettings, NodeParts};
use salesboy_node::background::Background;
use salesboy_node::cluster::ClusterMember;
use salesboy_node::cluster::membership::{MembershipConfig, NodeInfo};
use salesboy_node::ingress::Ingress;
use salesboy_protocol::NodeId;

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
    pub cluster: Arc<ClusterMember>,
    /// Its actor tree.
    pub node: NodeHandle,
    /// Its ingress (what the webhook handler calls once a delivery is verified and parsed).
    pub ingress: Ingress,
    /// The parent of every task of the incarnation (its ingress hand-offs, its cluster
    /// member's tasks).
    background: Background,
    /// Its ingress hand-offs.
    handoffs: Background,
}

impl SimNode {
    /// Starts incarnation `incarnation` of node `index`: [`assembly::assemble`], as
    /// `salesboy serve` builds a node, on the simulated ports behind the node's gate.
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
        let member = MemberSettings {
            // Its machine is not part of the run.
            rss_bytes: || 0,
            cpu_seconds: || None,
            // Every epoch granted to the incarnation is logged for the checks.
            epochs_layer: Some(Box::new({
                let node = label.clone();
                let log = Arc::clone(&shared.log);
                move |inner| Arc::new(LoggedEpochs { node, inner, log })
            })),
            ..MemberSettings::new(
                bus,
                salesboy_testkit::sandbox_cluster_key(),
                NodeInfo {
                    http_addr: format!("sim:{index}"),
                    version: "sim".into(),
                    protocol: salesboy_protocol::ProtocolRange::BUILD,
                    max_tenants: 10_000,
                },
                MembershipConfig::for_failure_timeout(FAILURE_TIMEOUT),
            )
        };
        let parts = NodeParts {
            id: id.clone(),
            store: Arc::clone(&store),
            whatsapp: Arc::new(SimWhatsApp {
                node: label.clone(),
                gate: gate.clone(),
                outbox: Arc::clone(&shared.outbox),
                draws: Arc::clone(&shared.draws),
                transient_per_mille: shared.whatsapp_transient_per_mille,
                clock: shared.clock,
            }),
            web: None,
            llm: Arc::new(SimLlm {
                node: label.clone(),
                gate: gate.clone(),
                draws: Arc::clone(&shared.draws),
                answers: Arc::default(),
            }),
            clock: Arc::new(shared.clock),
            events: Arc::new(NoEvents),
            // No cache: every answer is a fresh, uniquely tagged one.
            cache: response_cache(0),
            settings: Settings {
                debounce: Duration::from_millis(300),
                ..Settings::default()
            },
            cluster: Some(member),
        };
        let background = Background::new();
        let AssembledNode {
            node,
            cluster,
            router,
        } = assembly::assemble(parts, &background).await?;
        let cluster = cluster.context("a simulated node is a cluster member")?;
        let handoffs = background.child();
        let ingress = Ingress::new(
            Arc::clone(&store),
            Arc::new(shared.clock),
            router,
            handoffs.tracker().clone(),
            handoffs.token().clone(),
        );
        Ok(Self {
            label,
            id,
            gate,
            store,
            cluster,
            node,
            ingress,
            background,
            handoffs,
        })
    }

    /// Kills the incarnation: every call it makes fails from now on, its tasks stop, its
    /// actors stop without being able to write anything. Nothing is waited for (a crash).
    pub async fn kill(self) {
        self.gate.set(Link::Down);
        self.handoffs.cancel();
        self.node.shutdown(Duration::from_secs(1)).await;
        self.background.cancel();
    }
}
