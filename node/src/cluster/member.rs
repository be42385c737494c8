//! This node's member of the cluster: its state, how it joins ([`Cluster::start`]) and what it
//! tells the rest of the node. The member's work lives beside it, one concern a file:
//! routing (`router`), the inbox it hosts (`inbox`), control requests (`control`), live
//! migration (`migration`), drain (`drain`) and the leader's duties (`duties`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use salesboy_actors::node::NodeHandle;
use salesboy_protocol::subjects::{self, EventKind};
use salesboy_protocol::{NodeId, TenantId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::directory::Directory;
use super::duties::{fence_watch, leader_duties, membership_events};
use super::inbox::{Answers, DEDUP_WINDOW, INBOX_TIMEOUT};
use super::leader::Leadership;
use super::membership::Membership;
use super::placement::PlacementStrategy;
use crate::bus::{Bus, BusError};

/// Tunables.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How often the leader looks for dead nodes' tenants and for imbalance.
    pub leader_every: Duration,
    /// Tenants moved per rebalancing round at most.
    pub max_moves_per_round: usize,
    /// Migrations under way at once (rebalancing, drain).
    pub move_concurrency: usize,
    /// Whether the leader rebalances at all.
    pub rebalance: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            leader_every: Duration::from_secs(2),
            max_moves_per_round: 200,
            move_concurrency: 32,
            rebalance: true,
        }
    }
}

/// A node's cluster runtime.
pub struct Cluster {
    pub(super) me: NodeId,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) node: NodeHandle,
    pub(super) directory: Arc<Directory>,
    pub(super) membership: Arc<Membership>,
    pub(super) leadership: Arc<Leadership>,
    pub(super) placement: Arc<dyn PlacementStrategy>,
    pub(super) settings: ClusterSettings,
    pub(super) answers: Answers,
    pub(super) draining: AtomicBool,
    pub(super) exit: watch::Sender<bool>,
    pub(super) tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    pub(super) moves: AtomicU64,
    /// Tenants this node is moving right now.
    pub(super) moving: std::sync::Mutex<std::collections::HashSet<TenantId>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Cluster {
    /// Joins the cluster: serves this node's inbox and control subject and runs the leader's
    /// duties when elected.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        me: NodeId,
        bus: Arc<dyn Bus>,
        node: NodeHandle,
        directory: Arc<Directory>,
        membership: Arc<Membership>,
        leadership: Arc<Leadership>,
        placement: Arc<dyn PlacementStrategy>,
        settings: ClusterSettings,
    ) -> Result<Arc<Self>, BusError> {
        let inbox = bus.subscribe(&subjects::node_inbox(&me), None).await?;
        let control = bus.subscribe(&subjects::node_control(&me), None).await?;
        let (exit, _) = watch::channel(false);
        let cluster = Arc::new(Self {
            me,
            bus,
            node,
            directory,
            membership,
            leadership,
            placement,
            settings,
            answers: Answers::new(DEDUP_WINDOW, INBOX_TIMEOUT),
            draining: AtomicBool::new(false),
            exit,
            tasks: std::sync::Mutex::default(),
            moves: AtomicU64::new(0),
            moving: std::sync::Mutex::default(),
        });
        let tasks = vec![
            tokio::spawn(serve(Arc::downgrade(&cluster), inbox, Kind::Inbox)),
            tokio::spawn(serve(Arc::downgrade(&cluster), control, Kind::Control)),
            tokio::spawn(leader_duties(Arc::downgrade(&cluster))),
            tokio::spawn(fence_watch(Arc::downgrade(&cluster))),
            tokio::spawn(membership_events(Arc::downgrade(&cluster))),
        ];
        cluster
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(tasks);
        Ok(cluster)
    }

    /// This node.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// Membership view.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Whether this node leads the cluster now.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// The leader as this node sees it.
    pub fn leader(&self) -> Option<NodeId> {
        self.leadership.changes().borrow().clone()
    }

    /// Completes (true) once a drain has finished and the node should exit.
    pub fn exit_signal(&self) -> watch::Receiver<bool> {
        self.exit.subscribe()
    }

    pub(super) fn publish(
        &self,
        kind: EventKind,
        tenant: Option<&TenantId>,
        detail: serde_json::Value,
    ) {
        let services = self.node.services();
        let event = match tenant {
            Some(tenant) => services.tenant_event(kind, tenant, detail),
            None => services.cluster_event(kind, detail),
        };
        services.publish(event);
    }

    /// Tenants moved by this node since it started.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Inbox,
    Control,
}

/// Serves a subscription, each message in its own task.
async fn serve(
    cluster: std::sync::Weak<Cluster>,
    mut subscription: crate::bus::Subscription,
    kind: Kind,
) {
    while let Some(message) = subscription.next().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            match kind {
                Kind::Inbox => cluster.on_inbox(message).await,
                Kind::Control => cluster.on_control(message).await,
            }
        });
    }
}
