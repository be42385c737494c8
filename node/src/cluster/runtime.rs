//! A node's part in the cluster: routing commands to wherever a tenant lives, serving its
//! own inbox and control subject, moving tenants (live migration), and — on the leader —
//! failover and rebalancing. Drain moves everything off before the node exits.
//!
//! Delivery between nodes is request + reply with bounded retries: a command is wrapped in
//! an [`Envelope`] with a fresh message id and the placement epoch the sender knows, and sent
//! to the host's inbox; the host answers only after the command is handed to the tenant's
//! actors. A retry carries the same id and the host's dedup window answers it from memory,
//! so a command is carried out once. "No responders" or a timeout sends the sender back to
//! the directory; a dead host's tenants are re-placed (failover) and reconcile from SQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use salesboy_actors::handoff::{HeldMessage, TenantHandoff};
use salesboy_actors::node::{ActivationError, NodeHandle, TenantError};
use salesboy_protocol::subjects::{self, EventKind};
use salesboy_protocol::{Codec, Envelope, MessageId, NodeId, TenantId};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::directory::{Directory, DirectoryError, Placement, PlacementState, Versioned};
use super::leader::Leadership;
use super::membership::{Membership, MembershipEvent};
use super::placement::PlacementStrategy;
use super::rebalance::{self, NodeLoadView};
use super::wire::{CommandReply, ControlReply, ControlRequest, RemoteError, TenantCommand};
use crate::bus::{Bus, BusError, Headers, Message};

/// How long a command may take to reach its tenant, retries included.
const ROUTE_DEADLINE: Duration = Duration::from_secs(15);
/// One request's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A control request's timeout (adopting a large subtree, activating).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a drain request may run.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times a drain looks for tenants left on the node.
const DRAIN_ROUNDS: usize = 30;
/// The pause between two drain rounds.
const DRAIN_ROUND_PAUSE: Duration = Duration::from_millis(250);
/// How often a mover reads the directory to learn how a move it could not confirm ended.
const SETTLE_ATTEMPTS: usize = 20;
/// The pause between those reads (20 × 250 ms: about the default failure timeout).
const SETTLE_PAUSE: Duration = Duration::from_millis(250);
/// How long a host remembers the answers it gave (the dedup window).
const DEDUP_WINDOW: Duration = Duration::from_secs(120);

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

/// Why a command could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such tenant.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// No node can host the tenant (all full, none alive, unknown tenant…).
    #[error("tenant {tenant} cannot be placed: {reason}")]
    Unplaceable {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: String,
    },
    /// The host refused the command.
    #[error("{0}")]
    Refused(String),
    /// It did not get through before the deadline.
    #[error("tenant {tenant} unreachable: {reason}")]
    Unreachable {
        /// The tenant.
        tenant: TenantId,
        /// The last failure.
        reason: String,
    },
}

/// A node's cluster runtime.
pub struct Cluster {
    me: NodeId,
    bus: Arc<dyn Bus>,
    node: NodeHandle,
    directory: Arc<Directory>,
    membership: Arc<Membership>,
    leadership: Arc<Leadership>,
    placement: Arc<dyn PlacementStrategy>,
    settings: ClusterSettings,
    replies: moka::sync::Cache<MessageId, Bytes>,
    draining: AtomicBool,
    exit: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    moves: AtomicU64,
    /// Tenants this node is moving right now.
    moving: std::sync::Mutex<std::collections::HashSet<TenantId>>,
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
            replies: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(DEDUP_WINDOW)
                .build(),
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

    /// Delivers a command to the tenant wherever it lives, placing (activating) it first if
    /// it lives nowhere.
    pub async fn deliver(
        &self,
        tenant: &TenantId,
        command: TenantCommand,
    ) -> Result<CommandReply, RouteError> {
        let id = MessageId::from_u128(uuid::Uuid::now_v7().as_u128());
        let deadline = Instant::now() + ROUTE_DEADLINE;
        let mut fresh = false;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = match self.owner(tenant, fresh).await {
                Ok(owner) if owner.node == self.me => {
                    self.deliver_here(tenant, command.clone()).await
                }
                Ok(owner) => self.deliver_to(&owner, tenant, &command, id).await,
                Err(e) => Err(e),
            };
            let error = match outcome {
                Ok(reply) => return Ok(reply),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(reason)) => reason,
            };
            if Instant::now() >= deadline {
                return Err(RouteError::Unreachable {
                    tenant: tenant.clone(),
                    reason: error,
                });
            }
            debug!(tenant = %tenant, attempt, reason = %error, "delivery retry");
            fresh = true;
            tokio::time::sleep(Duration::from_millis(
                20u64.saturating_mul(1 << attempt.min(6)),
            ))
            .await;
        }
    }

    /// The tenant's host; places it when it has none (or its host is dead).
    async fn owner(&self, tenant: &TenantId, fresh: bool) -> Result<Placement, Attempt> {
        let known = if fresh {
            None
        } else {
            self.directory.cached(tenant)
        };
        let known = match known {
            Some(known) => Some(known),
            None => self
                .directory
                .fetch(tenant)
                .await
                .map_err(|e| Attempt::Retry(e.to_string()))?,
        };
        match known {
            Some(Versioned { placement, .. })
                if matches!(placement.state, PlacementState::Moving { .. }) =>
            {
                Err(Attempt::Retry("tenant is moving".into()))
            }
            Some(Versioned { placement, .. })
                if placement.node == self.me
                    || !super::is_known_dead(&self.membership, &placement.node) =>
            {
                Ok(placement)
            }
            _ => self.place(tenant).await,
        }
    }

    /// Chooses a host for a tenant that has none and has it activated there.
    async fn place(&self, tenant: &TenantId) -> Result<Placement, Attempt> {
        let nodes = self.membership.live_nodes();
        let target = self.placement.place(tenant, &nodes, &[]).map_err(|e| {
            Attempt::Final(RouteError::Unplaceable {
                tenant: tenant.clone(),
                reason: e.to_string(),
            })
        })?;
        if target == self.me {
            self.node
                .activate(tenant)
                .await
                .map_err(|e| activation_attempt(tenant, e))?;
        } else {
            match self
                .control(
                    &target,
                    &ControlRequest::Activate {
                        tenant: tenant.clone(),
                    },
                )
                .await
            {
                Ok(ControlReply::Ok) => {}
                Ok(ControlReply::Error(reason)) => return Err(Attempt::Retry(reason)),
                Ok(other) => return Err(Attempt::Retry(format!("unexpected answer {other:?}"))),
                Err(e) => return Err(Attempt::Retry(e.to_string())),
            }
        }
        let placed = self
            .directory
            .fetch(tenant)
            .await
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        placed
            .map(|v| v.placement)
            .ok_or_else(|| Attempt::Retry("placement not recorded yet".into()))
    }

    async fn deliver_here(
        &self,
        tenant: &TenantId,
        command: TenantCommand,
    ) -> Result<CommandReply, Attempt> {
        crate::routing::execute(&self.node, tenant, command)
            .await
            .map_err(|e| activation_attempt(tenant, e))
    }

    async fn deliver_to(
        &self,
        owner: &Placement,
        tenant: &TenantId,
        command: &TenantCommand,
        id: MessageId,
    ) -> Result<CommandReply, Attempt> {
        let payload = Codec::Bincode
            .encode(command)
            .map_err(|e| Attempt::Final(RouteError::Refused(e.to_string())))?;
        let envelope = Envelope {
            id,
            sender: self.me.clone(),
            target: command.target(tenant),
            epoch: owner.epoch,
            kind: command.kind(),
            payload,
        };
        let bytes = Codec::Bincode
            .encode(&envelope)
            .map_err(|e| Attempt::Final(RouteError::Refused(e.to_string())))?;
        let reply = self
            .bus
            .request(
                &subjects::node_inbox(&owner.node),
                codec_headers(),
                Bytes::from(bytes),
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(|e| Attempt::Retry(format!("{} did not answer: {e}", owner.node)))?;
        let answer: Result<CommandReply, RemoteError> = Codec::Bincode
            .decode(&reply.payload)
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        answer.map_err(|e| match e {
            RemoteError::NotHere | RemoteError::Moving => Attempt::Retry(e.to_string()),
            RemoteError::Refused(reason) => Attempt::Final(RouteError::Refused(reason)),
        })
    }

    /// Sends a control request to a node.
    async fn control(
        &self,
        node: &NodeId,
        request: &ControlRequest,
    ) -> Result<ControlReply, BusError> {
        let timeout = if matches!(request, ControlRequest::Drain) {
            DRAIN_TIMEOUT
        } else {
            CONTROL_TIMEOUT
        };
        control_request(self.bus.as_ref(), node, request, timeout).await
    }

    /// Handles one message of the inbox.
    async fn on_inbox(&self, message: Message) {
        let answer: Result<CommandReply, RemoteError> =
            match Codec::Bincode.decode::<Envelope>(&message.payload) {
                Err(e) => Err(RemoteError::Refused(format!("bad envelope: {e}"))),
                Ok(envelope) => {
                    if let Some(cached) = self.replies.get(&envelope.id) {
                        let _ = self.bus.respond(&message, codec_headers(), cached).await;
                        return;
                    }
                    let tenant = envelope.target.tenant().clone();
                    let answer = self.accept(&tenant, &envelope).await;
                    let bytes = Bytes::from(Codec::Bincode.encode(&answer).unwrap_or_default());
                    if answer.is_ok() {
                        self.replies.insert(envelope.id, bytes.clone());
                    }
                    let _ = self.bus.respond(&message, codec_headers(), bytes).await;
                    return;
                }
            };
        let bytes = Bytes::from(Codec::Bincode.encode(&answer).unwrap_or_default());
        let _ = self.bus.respond(&message, codec_headers(), bytes).await;
    }

    /// Carries out a command sent to this node for a tenant it should host.
    async fn accept(
        &self,
        tenant: &TenantId,
        envelope: &Envelope,
    ) -> Result<CommandReply, RemoteError> {
        let placement = match self.directory.cached(tenant) {
            Some(v) if v.placement.node == self.me => v.placement,
            _ => match self.directory.fetch(tenant).await {
                Ok(Some(v)) if v.placement.node == self.me => v.placement,
                Ok(_) => return Err(RemoteError::NotHere),
                Err(e) => return Err(RemoteError::Refused(e.to_string())),
            },
        };
        if matches!(placement.state, PlacementState::Moving { .. }) {
            return Err(RemoteError::Moving);
        }
        if envelope.epoch > placement.epoch {
            // The sender knows a newer placement than this node: this node is stale.
            return Err(RemoteError::NotHere);
        }
        let command: TenantCommand = Codec::Bincode
            .decode(&envelope.payload)
            .map_err(|e| RemoteError::Refused(format!("bad command: {e}")))?;
        self.deliver_here(tenant, command)
            .await
            .map_err(|e| match e {
                Attempt::Retry(_) => RemoteError::NotHere,
                Attempt::Final(e) => RemoteError::Refused(e.to_string()),
            })
    }

    /// Handles one control request.
    async fn on_control(self: &Arc<Self>, message: Message) {
        let reply = match Codec::Bincode.decode::<ControlRequest>(&message.payload) {
            Err(e) => ControlReply::Error(format!("bad control request: {e}")),
            Ok(ControlRequest::Activate { tenant }) => match self.node.activate(&tenant).await {
                Ok(_) => ControlReply::Ok,
                Err(e) => ControlReply::Error(e.to_string()),
            },
            Ok(ControlRequest::MigrateOut { tenant, to }) => {
                match self.migrate_out(&tenant, &to).await {
                    Ok(()) => ControlReply::Ok,
                    Err(e) => ControlReply::Error(e),
                }
            }
            Ok(ControlRequest::Adopt {
                handoff,
                epoch,
                mark_revision,
            }) => match self.adopt(handoff, epoch, mark_revision).await {
                Ok(()) => ControlReply::Ok,
                Err(e) => ControlReply::Error(e),
            },
            Ok(ControlRequest::Drain) => match self.drain().await {
                Ok(moved) => ControlReply::Drained { moved },
                Err(e) => ControlReply::Error(e),
            },
        };
        let bytes = Codec::Bincode.encode(&reply).unwrap_or_default();
        let _ = self
            .bus
            .respond(&message, codec_headers(), Bytes::from(bytes))
            .await;
    }

    /// Takes over a tenant another node is moving here: first points the directory here with
    /// a compare-and-set on the mover's moving mark (so the move cannot also be called off),
    /// then hosts the handed-over state. Once the directory names this node, the tenant is
    /// hosted here even if the state cannot be: it is activated from storage instead.
    async fn adopt(
        &self,
        handoff: TenantHandoff,
        epoch: u64,
        mark_revision: u64,
    ) -> Result<(), String> {
        let tenant = handoff.tenant.clone();
        let here = Placement {
            node: self.me.clone(),
            epoch,
            state: PlacementState::Active,
        };
        self.directory
            .update(&tenant, here, mark_revision)
            .await
            .map_err(|e| format!("the move of {tenant} was called off: {e}"))?;
        if let Err(e) = self.node.adopt(handoff, epoch).await {
            warn!(tenant = %tenant, error = %e, "handed-over state not adopted, activating from storage");
            // A copy left here by an earlier placement is stale: drop it first.
            let _ = self.node.release(&tenant).await;
            self.node
                .activate(&tenant)
                .await
                .map_err(|e| format!("{tenant} placed here but not activated: {e}"))?;
        }
        Ok(())
    }

    /// After an adoption that did not answer "adopted" (refused, lost, timed out), the
    /// directory tells whether `to` took the tenant: it names another node, or it still holds
    /// this node's moving mark, which this node then rolls back, calling the move off for
    /// good (the adopter's compare-and-set on the mark can no longer succeed). `Ok(true)`:
    /// moved; `Ok(false)`: stays here; `Err`: the directory could not be read, so nobody knows.
    async fn settle_move(
        &self,
        tenant: &TenantId,
        epoch: u64,
        mark_revision: u64,
    ) -> Result<bool, String> {
        let mut last_error = String::new();
        for attempt in 0..SETTLE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(SETTLE_PAUSE).await;
            }
            match self.directory.fetch(tenant).await {
                Ok(Some(now)) if now.revision == mark_revision => {
                    let active = Placement {
                        node: self.me.clone(),
                        epoch,
                        state: PlacementState::Active,
                    };
                    match self.directory.update(tenant, active, mark_revision).await {
                        Ok(_) => return Ok(false),
                        // The adopter's compare-and-set came first, or the answer was lost:
                        // read again.
                        Err(e) => last_error = e.to_string(),
                    }
                }
                Ok(Some(now)) => return Ok(now.placement.node != self.me),
                Ok(None) => return Ok(false),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
    }

    /// Moves a tenant this node hosts to `to` (architecture §7): mark it moving, freeze it
    /// (the turn under way finishes), have `to` adopt the state under the next epoch (it
    /// points the directory at itself), hand over what was held, release it here. When the
    /// adoption fails, the directory decides (see `settle_move`): the tenant resumes here or
    /// is released, never both hosts.
    pub async fn migrate_out(&self, tenant: &TenantId, to: &NodeId) -> Result<(), String> {
        let Some(_guard) = MoveGuard::claim(&self.moving, tenant) else {
            return Err(format!("tenant {tenant} is already moving"));
        };
        let started = Instant::now();
        let mut current = self
            .directory
            .fetch(tenant)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("tenant {tenant} has no placement"))?;
        if current.placement.node == self.me
            && matches!(current.placement.state, PlacementState::Moving { .. })
        {
            // Marked moving by this node, but no move is under way here: an earlier move
            // failed and could not roll its mark back. Roll it back now.
            warn!(tenant = %tenant, "stale moving mark, rolling it back");
            let active = Placement {
                node: self.me.clone(),
                epoch: current.placement.epoch,
                state: PlacementState::Active,
            };
            current = self
                .directory
                .update(tenant, active, current.revision)
                .await
                .map_err(|e| e.to_string())?;
        }
        if current.placement.node != self.me || current.placement.state != PlacementState::Active {
            return Err(format!("tenant {tenant} is not hosted here"));
        }
        let epoch = current.placement.epoch;
        let moving = Placement {
            node: self.me.clone(),
            epoch,
            state: PlacementState::Moving { to: to.clone() },
        };
        let marked = self
            .directory
            .update(tenant, moving, current.revision)
            .await
            .map_err(|e| e.to_string())?;
        let back_here = |revision| async move {
            let active = Placement {
                node: self.me.clone(),
                epoch,
                state: PlacementState::Active,
            };
            if let Err(e) = self.directory.update(tenant, active, revision).await {
                warn!(tenant = %tenant, error = %e, "could not mark tenant active again after a failed move");
            }
        };

        let hosted = self.node.observe_tenant(tenant).await.is_some();
        let handoff = if hosted {
            match self.node.freeze(tenant).await {
                Ok(handoff) => handoff,
                Err(e) => {
                    back_here(marked.revision).await;
                    return Err(format!("freeze failed: {e}"));
                }
            }
        } else {
            // Not active here: nothing to carry but the placement.
            TenantHandoff {
                tenant: tenant.clone(),
                epoch,
                conversations: vec![],
                session: None,
                held: vec![],
            }
        };
        let adopted = self
            .control(
                to,
                &ControlRequest::Adopt {
                    handoff,
                    epoch: epoch + 1,
                    mark_revision: marked.revision,
                },
            )
            .await;
        if !matches!(adopted, Ok(ControlReply::Ok)) {
            match self.settle_move(tenant, epoch, marked.revision).await {
                Ok(true) => {
                    info!(tenant = %tenant, to = %to, answer = ?adopted, "adopted although the answer said otherwise");
                }
                Ok(false) => {
                    if hosted {
                        self.node.thaw(tenant);
                    }
                    return Err(format!("{to} did not adopt {tenant}: {adopted:?}"));
                }
                Err(e) => {
                    // Whether `to` hosts it is unknown: hosting it here too could answer
                    // twice. Its messages are persisted; whoever the directory names (once
                    // it can be read) reconciles them from storage.
                    let _ = self.node.release(tenant).await;
                    error!(tenant = %tenant, to = %to, error = %e, "move outcome unknown, tenant released here");
                    return Err(format!("{to} may or may not have adopted {tenant}: {e}"));
                }
            }
        }
        let held = if hosted {
            self.node.release(tenant).await
        } else {
            Vec::new()
        };
        for message in held {
            let command = match message {
                HeldMessage::Inbound { chat, item } => TenantCommand::Inbound { chat, item },
                HeldMessage::OwnerActivity { chat, at_ms } => {
                    TenantCommand::OwnerActivity { chat, at_ms }
                }
            };
            if let Err(e) = self.deliver(tenant, command).await {
                // Persisted: the new host's reconciliation finds it.
                warn!(tenant = %tenant, error = %e, "held message not forwarded");
            }
        }
        self.moves.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("salesboy_migrations_total").increment(1);
        metrics::histogram!("salesboy_migration_seconds").record(started.elapsed().as_secs_f64());
        self.publish(
            EventKind::TenantMigrated,
            Some(tenant),
            serde_json::json!({"from": self.me.as_str(), "to": to.as_str(), "epoch": epoch + 1}),
        );
        info!(tenant = %tenant, to = %to, epoch = epoch + 1, "tenant moved");
        Ok(())
    }

    /// Moves every tenant placed on this node elsewhere, then asks the node to exit.
    pub async fn drain(self: &Arc<Self>) -> Result<u64, String> {
        if self.draining.swap(true, Ordering::SeqCst) {
            return Err("already draining".into());
        }
        info!(node = %self.me, "draining");
        self.membership.set_draining(true);
        let mut moved = 0u64;
        // Rounds until nothing is left here. Moves started by others (the leader's
        // rebalancing) may still be under way, and the directory cache may lag a move by a
        // moment: pause between rounds instead of failing fast.
        for round in 0..DRAIN_ROUNDS {
            if round > 0 {
                tokio::time::sleep(DRAIN_ROUND_PAUSE).await;
            }
            let mine: Vec<TenantId> = self
                .directory
                .cached_where(|v| v.placement.node == self.me)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            if mine.is_empty() {
                break;
            }
            info!(node = %self.me, round, tenants = mine.len(), "moving tenants off");
            moved += self
                .move_many(
                    mine.into_iter()
                        .filter_map(|t| {
                            let nodes = self.membership.live_nodes();
                            let to = self
                                .placement
                                .place(&t, &nodes, std::slice::from_ref(&self.me))
                                .ok()?;
                            Some((t, to))
                        })
                        .collect(),
                )
                .await;
        }
        let left = self
            .directory
            .cached_where(|v| v.placement.node == self.me)
            .len();
        if left > 0 {
            self.draining.store(false, Ordering::SeqCst);
            self.membership.set_draining(false);
            return Err(format!("{left} tenants could not be moved off"));
        }
        if let Err(e) = self.leadership.step_down().await {
            warn!(error = %e, "could not release the leader lease");
        }
        if let Err(e) = self.membership.leave().await {
            warn!(error = %e, "could not remove the membership record");
        }
        info!(node = %self.me, moved, "drained");
        let _ = self.exit.send(true);
        Ok(moved)
    }

    /// Runs moves with bounded concurrency; returns how many succeeded.
    async fn move_many(&self, moves: Vec<(TenantId, NodeId)>) -> u64 {
        let permits = Arc::new(Semaphore::new(self.settings.move_concurrency.max(1)));
        let done = AtomicU64::new(0);
        let moves = moves.into_iter().map(|(tenant, to)| {
            let permits = Arc::clone(&permits);
            let done = &done;
            async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                match self.migrate_out(&tenant, &to).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => warn!(tenant = %tenant, to = %to, error = %e, "move failed"),
                }
            }
        });
        futures::future::join_all(moves).await;
        done.load(Ordering::Relaxed)
    }

    /// Rolls back this node's own "moving" marks that no move here stands behind: left by a
    /// move cut short (the node was killed, paused or cut off mid-move, or could not learn
    /// how the move ended). Until then senders would retry that tenant forever. The roll-back
    /// is a compare-and-set on the mark, so it cannot overtake the adopter's.
    async fn roll_back_stale_marks(&self) {
        let stale = self.directory.cached_where(|v| {
            v.placement.node == self.me
                && matches!(v.placement.state, PlacementState::Moving { .. })
        });
        for (tenant, mark) in stale {
            // A move under way here holds its guard from before the mark to after it is
            // resolved; holding the guard keeps a new move off while rolling back.
            let Some(_guard) = MoveGuard::claim(&self.moving, &tenant) else {
                continue;
            };
            let active = Placement {
                node: self.me.clone(),
                epoch: mark.placement.epoch,
                state: PlacementState::Active,
            };
            match self.directory.update(&tenant, active, mark.revision).await {
                Ok(_) => warn!(tenant = %tenant, "stale moving mark rolled back"),
                Err(e) => debug!(tenant = %tenant, error = %e, "stale moving mark not rolled back"),
            }
        }
    }

    /// Re-places the tenants of dead nodes (leader only).
    async fn fail_over(&self) {
        let live = self.membership.live_nodes();
        // Known dead: seen, and silent past the failure timeout (never merely unseen).
        let dead_nodes: std::collections::HashSet<NodeId> = self
            .membership
            .view()
            .into_iter()
            .filter(|view| !view.alive && view.record.node != self.me)
            .map(|view| view.record.node)
            .collect();
        if dead_nodes.is_empty() {
            return;
        }
        let dead = self
            .directory
            .cached_where(|v| dead_nodes.contains(&v.placement.node));
        if dead.is_empty() {
            return;
        }
        info!(tenants = dead.len(), "failing over tenants of dead nodes");
        let permits = Arc::new(Semaphore::new(self.settings.move_concurrency.max(1)));
        let tasks = dead.into_iter().map(|(tenant, current)| {
            let permits = Arc::clone(&permits);
            let live = &live;
            async move {
                let Ok(_permit) = permits.acquire().await else { return };
                let Ok(target) = self.placement.place(&tenant, live, &[]) else {
                    warn!(tenant = %tenant, "no node can take over tenant");
                    return;
                };
                let from = current.placement.node.clone();
                let placement = Placement { node: target.clone(), epoch: current.placement.epoch + 1, state: PlacementState::Active };
                match self.directory.update(&tenant, placement, current.revision).await {
                    Ok(_) => {}
                    Err(DirectoryError::Conflict) => return,
                    Err(e) => {
                        warn!(tenant = %tenant, error = %e, "failover write failed");
                        return;
                    }
                }
                let activated = if target == self.me {
                    self.node.activate(&tenant).await.map(|_| ()).map_err(|e| e.to_string())
                } else {
                    match self.control(&target, &ControlRequest::Activate { tenant: tenant.clone() }).await {
                        Ok(ControlReply::Ok) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                };
                if let Err(e) = activated {
                    // Placed: the next message or sweep activates it there.
                    warn!(tenant = %tenant, to = %target, error = %e, "failed-over tenant not activated yet");
                }
                metrics::counter!("salesboy_failovers_total").increment(1);
                self.publish(EventKind::TenantMigrated, Some(&tenant), serde_json::json!({"from": from.as_str(), "to": target.as_str(), "failover": true}));
            }
        });
        futures::future::join_all(tasks).await;
    }

    /// Evens out the spread (leader only).
    async fn rebalance(&self) {
        let live = self.membership.live_nodes();
        if live.len() < 2 {
            return;
        }
        let placements = self.directory.cached_all();
        let views: Vec<NodeLoadView> = live
            .iter()
            .map(|record| NodeLoadView {
                node: record.node.clone(),
                tenants: placements
                    .iter()
                    .filter(|(_, v)| {
                        v.placement.node == record.node
                            && v.placement.state == PlacementState::Active
                    })
                    .map(|(t, _)| t.clone())
                    .collect(),
                // Tenants mid-move stay where they are this round.
                pinned: placements
                    .iter()
                    .filter(|(_, v)| {
                        v.placement.node == record.node
                            && v.placement.state != PlacementState::Active
                    })
                    .count() as u64,
                capacity: record.max_tenants,
                draining: record.draining,
            })
            .collect();
        let moves = rebalance::plan(&views, self.settings.max_moves_per_round);
        if moves.is_empty() {
            return;
        }
        info!(moves = moves.len(), "rebalancing");
        metrics::counter!("salesboy_rebalance_rounds_total").increment(1);
        let permits = Arc::new(Semaphore::new(self.settings.move_concurrency.max(1)));
        let tasks = moves.into_iter().map(|planned| {
            let permits = Arc::clone(&permits);
            async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let request = ControlRequest::MigrateOut {
                    tenant: planned.tenant.clone(),
                    to: planned.to.clone(),
                };
                let result = if planned.from == self.me {
                    self.migrate_out(&planned.tenant, &planned.to).await
                } else {
                    match self.control(&planned.from, &request).await {
                        Ok(ControlReply::Ok) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                };
                if let Err(e) = result {
                    debug!(tenant = %planned.tenant, error = %e, "rebalancing move skipped");
                }
            }
        });
        futures::future::join_all(tasks).await;
    }

    fn publish(&self, kind: EventKind, tenant: Option<&TenantId>, detail: serde_json::Value) {
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

/// Marks a tenant as being moved by this node for as long as it lives.
struct MoveGuard<'a> {
    moving: &'a std::sync::Mutex<std::collections::HashSet<TenantId>>,
    tenant: TenantId,
}

impl<'a> MoveGuard<'a> {
    /// `None` when the tenant is already being moved.
    fn claim(
        moving: &'a std::sync::Mutex<std::collections::HashSet<TenantId>>,
        tenant: &TenantId,
    ) -> Option<Self> {
        let mut set = moving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(tenant.clone()).then(|| Self {
            moving,
            tenant: tenant.clone(),
        })
    }
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        self.moving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.tenant);
    }
}

/// One delivery attempt's failure.
enum Attempt {
    /// Try again (after looking the tenant up afresh).
    Retry(String),
    /// Give up.
    Final(RouteError),
}

fn activation_attempt(tenant: &TenantId, error: impl Into<TenantError>) -> Attempt {
    match error.into() {
        TenantError::Activation(ActivationError::UnknownTenant(tenant)) => {
            Attempt::Final(RouteError::UnknownTenant(tenant))
        }
        TenantError::Activation(error @ ActivationError::AtCapacity { .. }) => {
            Attempt::Final(RouteError::Unplaceable {
                tenant: tenant.clone(),
                reason: error.to_string(),
            })
        }
        // Hosted elsewhere, moving, stopped, the store unavailable: look again.
        other => Attempt::Retry(other.to_string()),
    }
}

fn codec_headers() -> Headers {
    Headers::from_iter([(
        salesboy_protocol::codec::CODEC_HEADER,
        Codec::Bincode.header_value(),
    )])
}

/// Sends a control request to `node` and decodes the answer.
pub async fn control_request(
    bus: &dyn Bus,
    node: &NodeId,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, BusError> {
    let payload = Codec::Bincode
        .encode(request)
        .map_err(|e| BusError::Other(e.to_string()))?;
    let reply = bus
        .request(
            &subjects::node_control(node),
            codec_headers(),
            Bytes::from(payload),
            timeout,
        )
        .await?;
    Codec::Bincode
        .decode(&reply.payload)
        .map_err(|e| BusError::Other(e.to_string()))
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

/// Failover and rebalancing while this node leads.
async fn leader_duties(cluster: std::sync::Weak<Cluster>) {
    let (every, mut events) = match cluster.upgrade() {
        Some(c) => (c.settings.leader_every, c.membership.subscribe()),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    loop {
        // Every `leader_every`, and at once when a node joins, leaves or is declared dead.
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            event = events.recv() => match event {
                Ok(MembershipEvent::Joined(_) | MembershipEvent::Left(_))
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Ok(MembershipEvent::Fenced | MembershipEvent::Unfenced) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let fenced = *cluster.membership.fenced().borrow();
        if !fenced {
            // Every node, leader or not, cleans up after its own cut-short moves.
            cluster.roll_back_stale_marks().await;
        }
        if fenced || !cluster.is_leader() || cluster.draining.load(Ordering::Relaxed) {
            // A fenced node's view of the others is stale: it must not act on it.
            continue;
        }
        cluster.fail_over().await;
        if cluster.settings.rebalance {
            cluster.rebalance().await;
        }
    }
}

/// Publishes membership changes as cluster events (node joined, node left), from the leader.
async fn membership_events(cluster: std::sync::Weak<Cluster>) {
    let mut events = match cluster.upgrade() {
        Some(c) => c.membership.subscribe(),
        None => return,
    };
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        // Every node sees every change; the leader speaks for the cluster.
        if !cluster.is_leader() {
            continue;
        }
        let (kind, node) = match &event {
            MembershipEvent::Joined(node) => (EventKind::NodeJoined, node),
            MembershipEvent::Left(node) => (EventKind::NodeLeft, node),
            MembershipEvent::Fenced | MembershipEvent::Unfenced => continue,
        };
        cluster.publish(kind, None, serde_json::json!({"node": node.as_str()}));
    }
}

/// Stops every tenant when this node fences itself (it can no longer prove it is alive, so
/// the others will take its tenants over).
async fn fence_watch(cluster: std::sync::Weak<Cluster>) {
    let mut fenced = match cluster.upgrade() {
        Some(c) => c.membership.fenced(),
        None => return,
    };
    while fenced.changed().await.is_ok() {
        if !*fenced.borrow() {
            info!("membership renewed: serving again");
            continue;
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let hosted = cluster.node.hosted_tenants();
        warn!(
            tenants = hosted.len(),
            "fenced: membership not renewed in time, stopping every tenant"
        );
        metrics::counter!("salesboy_self_fences_total").increment(1);
        for tenant in hosted {
            let _ = cluster.node.release(&tenant).await;
        }
    }
}
