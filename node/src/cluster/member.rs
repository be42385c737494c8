//! This node's member of the cluster: its state, how it joins ([`ClusterMember::start`]) and what it
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
use tokio_util::task::TaskTracker;

use super::directory::Directory;
use super::duties::{fence_watch, leader_duties, membership_events};
use super::inbox::{Answers, DEDUP_WINDOW, INBOX_TIMEOUT};
use super::leader::Leadership;
use super::membership::{Membership, MembershipError, NodeRecord};
use super::placement::{CandidateLoad, PlacementDecision, PlacementReason, PlacementStrategy};
use super::placement_log::PlacementLog;
use super::seal::ClusterKey;
use crate::background::{Background, StillRunning};
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

/// What this node's member is made of ([`ClusterMember::start`]). `crate::assembly` builds them.
pub struct ClusterParts {
    /// This node.
    pub me: NodeId,
    /// The bus between the nodes.
    pub bus: Arc<dyn Bus>,
    /// The key every inbox and control message is sealed with.
    pub key: Arc<ClusterKey>,
    /// This node's actors.
    pub node: NodeHandle,
    /// The tenant directory.
    pub directory: Arc<Directory>,
    /// This node's membership.
    pub membership: Arc<Membership>,
    /// This node's part in the leader election.
    pub leadership: Arc<Leadership>,
    /// Where tenants go.
    pub strategy: Arc<dyn PlacementStrategy>,
    /// Where the placement decisions this node makes are recorded; `None`: nowhere.
    pub placement_log: Option<PlacementLog>,
    /// Tunables.
    pub settings: ClusterSettings,
    /// Where the member's tasks run: the one the directory, membership and leadership were
    /// started on, so that [`ClusterMember::stop`] stops them all.
    pub background: Background,
}

/// A node's cluster runtime.
pub struct ClusterMember {
    pub(super) me: NodeId,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) key: Arc<ClusterKey>,
    pub(super) node: NodeHandle,
    pub(super) directory: Arc<Directory>,
    pub(super) membership: Arc<Membership>,
    pub(super) leadership: Arc<Leadership>,
    pub(super) strategy: Arc<dyn PlacementStrategy>,
    pub(super) placement_log: Option<PlacementLog>,
    pub(super) settings: ClusterSettings,
    pub(super) answers: Answers,
    pub(super) draining: AtomicBool,
    pub(super) exit: watch::Sender<bool>,
    pub(super) background: Background,
    pub(super) moves: AtomicU64,
    /// Tenants this node is moving right now.
    pub(super) moving: std::sync::Mutex<std::collections::HashSet<TenantId>>,
}

impl ClusterMember {
    /// Joins the cluster: serves this node's inbox and control subject and runs the leader's
    /// duties when elected, on `parts.background` until [`ClusterMember::stop`].
    pub async fn start(parts: ClusterParts) -> Result<Arc<Self>, BusError> {
        let ClusterParts {
            me,
            bus,
            key,
            node,
            directory,
            membership,
            leadership,
            strategy,
            placement_log,
            settings,
            background,
        } = parts;
        let inbox = bus.subscribe(&subjects::node_inbox(&me), None).await?;
        let control = bus.subscribe(&subjects::node_control(&me), None).await?;
        let (exit, _) = watch::channel(false);
        let cluster = Arc::new(Self {
            me,
            bus,
            key,
            node,
            directory,
            membership,
            leadership,
            strategy,
            placement_log,
            settings,
            answers: Answers::new(DEDUP_WINDOW, INBOX_TIMEOUT),
            draining: AtomicBool::new(false),
            exit,
            background,
            moves: AtomicU64::new(0),
            moving: std::sync::Mutex::default(),
        });
        let background = &cluster.background;
        background.spawn_until_cancelled(serve(Arc::clone(&cluster), inbox, Kind::Inbox));
        background.spawn_until_cancelled(serve(Arc::clone(&cluster), control, Kind::Control));
        background.spawn_until_cancelled(leader_duties(Arc::clone(&cluster)));
        background.spawn_until_cancelled(fence_watch(Arc::clone(&cluster)));
        background.spawn_until_cancelled(membership_events(Arc::clone(&cluster)));
        Ok(cluster)
    }

    /// Leaves the member's work: stops its loops, membership's heartbeat and watch, the
    /// leader election and the directory's watch, and waits (at most `timeout`) for them and
    /// for the requests it is still answering. Without a drain before, this is a crash as the
    /// others see it: the membership record and the lease stay until they time out.
    pub async fn stop(&self, timeout: Duration) -> Result<(), StillRunning> {
        self.background.stop(timeout).await
    }

    /// Stops the member's tasks as [`ClusterMember::stop`] does, without waiting for them (the
    /// requests it is answering run to their end).
    pub fn cancel(&self) {
        self.background.cancel();
    }

    /// The member's tasks: empty once [`ClusterMember::stop`] returns.
    pub fn tasks(&self) -> &TaskTracker {
        self.background.tracker()
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

    /// Removes the membership records of nodes dead for longer than `grace` that the
    /// directory gives no tenant any more (those wait for their failover); how many.
    /// Leader only: elsewhere it does nothing.
    pub async fn forget_dead_nodes(&self, grace: Duration) -> Result<u64, MembershipError> {
        if !self.is_leader() {
            return Ok(0);
        }
        self.membership
            .forget_dead(grace, |node| {
                self.directory
                    .cached_where(|v| &v.entry.node == node)
                    .is_empty()
            })
            .await
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

/// Serves a subscription, each message in its own task (which runs to its end: a request
/// being answered is answered).
async fn serve(
    cluster: Arc<ClusterMember>,
    mut subscription: crate::bus::Subscription,
    kind: Kind,
) {
    while let Some(message) = subscription.next().await {
        let handler = Arc::clone(&cluster);
        cluster.background.spawn(async move {
            match kind {
                Kind::Inbox => handler.on_inbox(message).await,
                Kind::Control => handler.on_control(message).await,
            }
        });
    }
}

impl ClusterMember {
    /// Records that this node placed `tenant` on `node` under `epoch` (when known) for
    /// `reason` (leaving `from`), among `candidates` as it saw them.
    pub(super) fn record_placement(
        &self,
        tenant: &TenantId,
        node: &NodeId,
        epoch: Option<u64>,
        reason: PlacementReason,
        from: Option<&NodeId>,
        candidates: &[NodeRecord],
    ) {
        let Some(log) = &self.placement_log else {
            return;
        };
        log.record(PlacementDecision {
            tenant: tenant.to_string(),
            node: node.to_string(),
            epoch,
            reason,
            from: from.map(ToString::to_string),
            decided_by: self.me.to_string(),
            decided_ms: self.node.services().clock.now_ms(),
            candidates: candidates.iter().map(CandidateLoad::of).collect(),
        });
    }
}
