//! `NodeSupervisor` and [`NodeHandle`]: the tenants hosted on this node.
//!
//! The handle is what the rest of the node (webhook ingress, admin API) talks to: it finds a
//! tenant's supervisor in a shared registry without a hop through the node actor, and only
//! asks the node actor when the tenant must be activated — so activations are serialised
//! (never two supervisors for one tenant) while routing stays concurrent. Activation takes
//! the tenant's epoch from the [`EpochSource`](crate::ports::EpochSource) and refuses with
//! [`ActivationError::AtCapacity`] beyond `max_tenants` (existing tenants keep working).
//!
//! Every `sweep_interval` the node passivates idle conversations and tenants, and re-routes
//! messages that were persisted but never reached their conversation (architecture §5.4):
//! the tenants with such messages are activated and reconciled.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use salesboy_protocol::events::Alert;
use salesboy_protocol::{ChatId, TenantId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::conversation::{ConversationSnapshot, InboundItem};
use crate::handoff::{HeldMessage, TenantHandoff};
use crate::services::{CUSTOMER_WINDOW_MS, Services};
use crate::stop::StopReason;
use crate::tenant::{TenantArgs, TenantMsg, TenantSnapshot, TenantSupervisor};

/// How long callers wait for an activation or a tenant's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tenant could not be reached on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    /// This node hosts `max_tenants` already.
    #[error("node at capacity: {max} tenants hosted")]
    AtCapacity {
        /// The limit.
        max: usize,
    },
    /// No such tenant in the store.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// The tenant failed to start or to answer.
    #[error("tenant {tenant} unavailable: {reason}")]
    Unavailable {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: String,
    },
    /// The node is shutting down.
    #[error("node is stopping")]
    Stopping,
}

type Registry = Arc<RwLock<HashMap<TenantId, ActorRef<TenantMsg>>>>;

/// Messages of the node supervisor.
#[derive(Debug)]
pub enum NodeMsg {
    /// Activate a tenant (or return its running supervisor).
    Activate {
        /// The tenant.
        tenant: TenantId,
        /// Its supervisor, or why not.
        reply: RpcReplyPort<Result<ActorRef<TenantMsg>, ActivationError>>,
    },
    /// Host a tenant that moved here, from its handoff, under `epoch`.
    Adopt {
        /// The moved state.
        handoff: Box<TenantHandoff>,
        /// The tenant's new epoch.
        epoch: u64,
        /// Done, or why not.
        reply: RpcReplyPort<Result<(), ActivationError>>,
    },
    /// Stop hosting a tenant that moved away: forget it here at once (so nothing activates
    /// it again by mistake), then collect what it held since it froze.
    Release {
        /// The tenant.
        tenant: TenantId,
        /// The messages it held.
        reply: RpcReplyPort<Vec<HeldMessage>>,
    },
    /// Housekeeping: passivation, and re-routing persisted messages that were never
    /// answered: received between `lookback` and `grace` ago (at start-up: the whole 24-hour
    /// window, no grace, to recover from a crash at once).
    Sweep {
        /// How old an unanswered message must be to count as never routed.
        grace: Duration,
        /// How far back to look.
        lookback: Duration,
    },
    /// An activation prepared off the supervisor's loop finished (sent by the supervisor's
    /// own activation task).
    Activated {
        /// The tenant.
        tenant: TenantId,
        /// Its running supervisor, or why not.
        result: Result<ActorRef<TenantMsg>, ActivationError>,
    },
}

/// Who waits for an activation under way.
enum Waiter {
    /// An `Activate` call.
    Activate(RpcReplyPort<Result<ActorRef<TenantMsg>, ActivationError>>),
    /// An `Adopt` call.
    Adopt(RpcReplyPort<Result<(), ActivationError>>),
    /// The sweep (nobody to answer; failures are logged).
    Sweep,
}

impl Waiter {
    fn answer(self, tenant: &TenantId, result: &Result<ActorRef<TenantMsg>, ActivationError>) {
        match self {
            Self::Activate(reply) => {
                let _ = reply.send(result.clone());
            }
            Self::Adopt(reply) => {
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
            }
            Self::Sweep => {
                if let Err(error) = result {
                    warn!(tenant = %tenant, %error, "sweep could not activate tenant");
                }
            }
        }
    }
}

/// Start-up arguments.
pub struct NodeArgs {
    /// Shared services.
    pub services: Arc<Services>,
    /// The registry shared with the handle.
    registry: Registry,
}

/// The node supervisor's state.
pub struct NodeState {
    services: Arc<Services>,
    registry: Registry,
    names: HashMap<ractor::ActorId, TenantId>,
    /// Activations under way (their SQL runs off the loop, so many proceed at once), with
    /// who waits for each.
    activating: HashMap<TenantId, Vec<Waiter>>,
}

/// The node supervisor (behaviour only).
#[derive(Debug, Default)]
pub struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let settings = &args.services.settings;
        let (grace, lookback) = (settings.unrouted_grace, settings.sweep_lookback);
        myself.send_interval(settings.sweep_interval, move || NodeMsg::Sweep {
            grace,
            lookback,
        });
        Ok(NodeState {
            services: args.services,
            registry: args.registry,
            names: HashMap::new(),
            activating: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<NodeMsg>,
        _state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Recover at once from a crash: tenants with unanswered or unsent messages come back.
        let lookback = Duration::from_millis(CUSTOMER_WINDOW_MS.unsigned_abs());
        let _ = myself.send_message(NodeMsg::Sweep {
            grace: Duration::ZERO,
            lookback,
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        message: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::Activate { tenant, reply } => {
                activate(&myself, state, tenant, None, Waiter::Activate(reply));
            }
            NodeMsg::Adopt {
                handoff,
                epoch,
                reply,
            } => {
                let tenant = handoff.tenant.clone();
                activate(
                    &myself,
                    state,
                    tenant,
                    Some((*handoff, epoch)),
                    Waiter::Adopt(reply),
                );
            }
            NodeMsg::Activated { tenant, result } => {
                let waiters = state.activating.remove(&tenant).unwrap_or_default();
                if let Ok(supervisor) = &result {
                    metrics::counter!("salesboy_activations_total", "outcome" => "activated")
                        .increment(1);
                    state.names.insert(supervisor.get_id(), tenant.clone());
                    write(&state.registry).insert(tenant.clone(), supervisor.clone());
                }
                for waiter in waiters {
                    waiter.answer(&tenant, &result);
                }
            }
            NodeMsg::Release { tenant, reply } => {
                let supervisor = write(&state.registry).remove(&tenant);
                let Some(supervisor) = supervisor else {
                    let _ = reply.send(Vec::new());
                    return Ok(());
                };
                state.names.remove(&supervisor.get_id());
                let timeout = state.services.settings.freeze_timeout;
                // Answered off the node actor's loop: the tenant may take a moment.
                tokio::spawn(async move {
                    let held = supervisor
                        .call(TenantMsg::Release, Some(timeout))
                        .await
                        .ok()
                        .and_then(crate::rpc::answered)
                        .unwrap_or_default();
                    let _ = reply.send(held);
                });
            }
            NodeMsg::Sweep { grace, lookback } => sweep(&myself, state, grace, lookback).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        // A tenant that stops (idle, fenced, failed) is simply no longer hosted here; the next
        // message or sweep activates it again.
        if let Some(tenant) = state.names.remove(&cell.get_id()) {
            write(&state.registry).remove(&tenant);
            info!(tenant = %tenant, reason = reason.as_deref().unwrap_or("stopped"), "tenant deactivated");
        }
        Ok(())
    }
}

fn write(
    registry: &Registry,
) -> std::sync::RwLockWriteGuard<'_, HashMap<TenantId, ActorRef<TenantMsg>>> {
    registry
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read(
    registry: &Registry,
) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, ActorRef<TenantMsg>>> {
    registry
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Activates a tenant, or adopts it from a handoff: answered at once when it is hosted
/// already (or cannot be), otherwise prepared off the supervisor's loop — the database reads
/// and the epoch claim take milliseconds, and a drain or failover brings thousands — and
/// finished by [`NodeMsg::Activated`].
fn activate(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    tenant: TenantId,
    adopt: Option<(TenantHandoff, u64)>,
    waiter: Waiter,
) {
    let busy = |reason: &str| ActivationError::Unavailable {
        tenant: tenant.clone(),
        reason: reason.into(),
    };
    if let Some(existing) = read(&state.registry).get(&tenant).cloned() {
        let result = match adopt {
            Some(_) => Err(busy("already hosted here")),
            None => Ok(existing),
        };
        waiter.answer(&tenant, &result);
        return;
    }
    if let Some(waiters) = state.activating.get_mut(&tenant) {
        match adopt {
            Some(_) => waiter.answer(&tenant, &Err(busy("already being activated here"))),
            None => waiters.push(waiter),
        }
        return;
    }
    let max = state.services.settings.max_tenants;
    if read(&state.registry).len() + state.activating.len() >= max {
        warn!(tenant = %tenant, max, "node at capacity, activation refused");
        metrics::counter!("salesboy_activations_total", "outcome" => "at_capacity").increment(1);
        state.services.publish(
            state
                .services
                .alert(&tenant, &Alert::NodeAtCapacity { max_tenants: max }),
        );
        waiter.answer(&tenant, &Err(ActivationError::AtCapacity { max }));
        return;
    }
    state.activating.insert(tenant.clone(), vec![waiter]);
    let services = Arc::clone(&state.services);
    let myself = myself.clone();
    tokio::spawn(async move {
        let result = start_tenant(&myself, services, tenant.clone(), adopt).await;
        // If the node is stopping, nobody will supervise what was just started: stop it.
        if let Err(ractor::MessagingErr::SendErr(NodeMsg::Activated {
            result: Ok(orphan), ..
        })) = myself.send_message(NodeMsg::Activated { tenant, result })
        {
            StopReason::NodeStopping.stop(&orphan);
        }
    });
}

/// Checks the tenant, decides its epoch and starts its supervisor, linked to the node's.
async fn start_tenant(
    myself: &ActorRef<NodeMsg>,
    services: Arc<Services>,
    tenant: TenantId,
    adopt: Option<(TenantHandoff, u64)>,
) -> Result<ActorRef<TenantMsg>, ActivationError> {
    let unavailable = |reason: String| ActivationError::Unavailable {
        tenant: tenant.clone(),
        reason,
    };
    match services.store.tenant(&tenant).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(ActivationError::UnknownTenant(tenant)),
        Err(error) => return Err(unavailable(error.to_string())),
    }
    let (epoch, handoff) = match adopt {
        // The epoch was decided by whoever moved the tenant (the cluster directory); the
        // store must fence the old host's writes from now on.
        Some((handoff, epoch)) => {
            services
                .store
                .claim_epoch(&tenant, epoch)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            (epoch, Some(handoff))
        }
        None => {
            let epoch = services
                .epochs
                .epoch_for(&tenant)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            (epoch, None)
        }
    };
    let args = TenantArgs {
        tenant: tenant.clone(),
        epoch,
        services,
        handoff,
    };
    let (supervisor, _) = Actor::spawn_linked(None, TenantSupervisor, args, myself.get_cell())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(supervisor)
}

async fn sweep(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    grace: Duration,
    lookback: Duration,
) {
    // By tenant: a fixed order keeps runs reproducible (the simulation).
    let mut hosted: Vec<(TenantId, ActorRef<TenantMsg>)> = read(&state.registry)
        .iter()
        .map(|(tenant, supervisor)| (tenant.clone(), supervisor.clone()))
        .collect();
    hosted.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, supervisor) in hosted {
        let _ = supervisor.send_message(TenantMsg::Sweep);
    }
    let services = &state.services;
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let now_ms = services.clock.now_ms();
    let (since_ms, before_ms) = (
        now_ms.saturating_sub(millis(lookback)),
        now_ms.saturating_sub(millis(grace)),
    );
    let pending = match services
        .store
        .tenants_with_pending_work(since_ms, before_ms)
        .await
    {
        Ok(pending) => pending,
        Err(error) => {
            warn!(%error, "sweep could not read pending work");
            return;
        }
    };
    for tenant in pending {
        let active = read(&state.registry).get(&tenant).cloned();
        match active {
            Some(supervisor) => {
                let _ = supervisor.send_message(TenantMsg::Reconcile { unsent: false });
            }
            // Activation reconciles (and resends unsent replies) by itself.
            None => activate(myself, state, tenant, None, Waiter::Sweep),
        }
    }
}

/// What `Observe` shows of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// Tenants hosted.
    pub tenants: usize,
    /// Conversations active.
    pub conversations: u64,
    /// The tenant limit.
    pub max_tenants: usize,
}

/// The node's front door: route to tenants, activating them on demand.
#[derive(Clone)]
pub struct NodeHandle {
    supervisor: ActorRef<NodeMsg>,
    registry: Registry,
    services: Arc<Services>,
}

impl NodeHandle {
    /// Starts the node supervisor.
    pub async fn start(
        services: Arc<Services>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let registry: Registry = Arc::default();
        let args = NodeArgs {
            services: Arc::clone(&services),
            registry: Arc::clone(&registry),
        };
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args).await?;
        Ok((
            Self {
                supervisor,
                registry,
                services,
            },
            join,
        ))
    }

    /// The shared services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The tenant's supervisor, activating the tenant if needed.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<ActorRef<TenantMsg>, ActivationError> {
        if let Some(existing) = read(&self.registry).get(tenant) {
            return Ok(existing.clone());
        }
        let tenant = tenant.clone();
        match self
            .supervisor
            .call(
                |reply| NodeMsg::Activate { tenant, reply },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(result) => crate::rpc::answered(result).unwrap_or(Err(ActivationError::Stopping)),
            Err(_) => Err(ActivationError::Stopping),
        }
    }

    /// Hands a persisted inbound message to its conversation.
    pub async fn deliver_inbound(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        item: InboundItem,
    ) -> Result<(), ActivationError> {
        let supervisor = self.tenant(tenant).await?;
        supervisor
            .send_message(TenantMsg::Inbound { chat, item })
            .map_err(|_| self.gone(tenant))
    }

    /// The owner wrote in a chat from their own app: the bot steps back there.
    pub async fn owner_activity(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        at_ms: i64,
    ) -> Result<(), ActivationError> {
        let supervisor = self.tenant(tenant).await?;
        supervisor
            .send_message(TenantMsg::OwnerActivity { chat, at_ms })
            .map_err(|_| self.gone(tenant))
    }

    /// Pauses (`Some(until)`) or resumes (`None`) the bot in a chat.
    pub async fn set_paused(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        until_ms: Option<i64>,
    ) -> Result<(), ActivationError> {
        let supervisor = self.tenant(tenant).await?;
        let result = supervisor
            .call(
                |reply| TenantMsg::SetPaused {
                    chat,
                    until_ms,
                    reply,
                },
                Some(CALL_TIMEOUT),
            )
            .await
            .ok()
            .and_then(crate::rpc::answered)
            .ok_or_else(|| self.gone(tenant))?;
        result.map_err(|reason| ActivationError::Unavailable {
            tenant: tenant.clone(),
            reason,
        })
    }

    /// Sends a message as the owner; returns the outbound message's id.
    pub async fn owner_send(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        body: String,
    ) -> Result<i64, ActivationError> {
        let supervisor = self.tenant(tenant).await?;
        let result = supervisor
            .call(
                |reply| TenantMsg::OwnerSend { chat, body, reply },
                Some(CALL_TIMEOUT),
            )
            .await
            .ok()
            .and_then(crate::rpc::answered)
            .ok_or_else(|| self.gone(tenant))?;
        result.map_err(|reason| ActivationError::Unavailable {
            tenant: tenant.clone(),
            reason,
        })
    }

    /// Tells a hosted tenant that its record changed; a tenant not hosted here picks the
    /// change up when it is next activated.
    pub fn reload_tenant(&self, tenant: &TenantId) {
        if let Some(supervisor) = read(&self.registry).get(tenant) {
            let _ = supervisor.send_message(TenantMsg::Reload);
        }
    }

    /// The tenants hosted here.
    pub fn hosted_tenants(&self) -> Vec<TenantId> {
        let mut hosted: Vec<TenantId> = read(&self.registry).keys().cloned().collect();
        hosted.sort();
        hosted
    }

    /// Freezes a hosted tenant for a move (see [`TenantMsg::Freeze`]): its state, once the
    /// reply under way is recorded. On error the tenant has resumed by itself.
    pub async fn freeze(&self, tenant: &TenantId) -> Result<TenantHandoff, ActivationError> {
        let supervisor = read(&self.registry)
            .get(tenant)
            .cloned()
            .ok_or_else(|| self.gone(tenant))?;
        // The tenant bounds each child's freeze; allow for both stages.
        let timeout = self.services.settings.freeze_timeout * 3;
        let result = supervisor
            .call(TenantMsg::Freeze, Some(timeout))
            .await
            .ok()
            .and_then(crate::rpc::answered)
            .ok_or_else(|| self.gone(tenant))?;
        result.map_err(|reason| ActivationError::Unavailable {
            tenant: tenant.clone(),
            reason,
        })
    }

    /// Resumes a frozen tenant (the move was called off).
    pub fn thaw(&self, tenant: &TenantId) {
        if let Some(supervisor) = read(&self.registry).get(tenant) {
            let _ = supervisor.send_message(TenantMsg::Thaw);
        }
    }

    /// Stops hosting a tenant that moved away; returns what it held since it froze, for the
    /// new host.
    pub async fn release(&self, tenant: &TenantId) -> Vec<HeldMessage> {
        let tenant = tenant.clone();
        self.supervisor
            .call(
                |reply| NodeMsg::Release { tenant, reply },
                Some(CALL_TIMEOUT),
            )
            .await
            .ok()
            .and_then(crate::rpc::answered)
            .unwrap_or_default()
    }

    /// Hosts a tenant that moved here, under its new `epoch` (claimed in the store first, so
    /// the old host's late writes are refused).
    pub async fn adopt(&self, handoff: TenantHandoff, epoch: u64) -> Result<(), ActivationError> {
        let tenant = handoff.tenant.clone();
        let handoff = Box::new(handoff);
        match self
            .supervisor
            .call(
                |reply| NodeMsg::Adopt {
                    handoff,
                    epoch,
                    reply,
                },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(result) => crate::rpc::answered(result).unwrap_or(Err(ActivationError::Stopping)),
            Err(_) => Err(ActivationError::Unavailable {
                tenant,
                reason: "node supervisor stopped".into(),
            }),
        }
    }

    /// A hosted tenant's state, without activating it.
    pub async fn observe_tenant(&self, tenant: &TenantId) -> Option<TenantSnapshot> {
        let supervisor = read(&self.registry).get(tenant).cloned()?;
        supervisor
            .call(TenantMsg::Observe, Some(CALL_TIMEOUT))
            .await
            .ok()
            .and_then(crate::rpc::answered)
    }

    /// An active conversation's state, without activating anything.
    pub async fn observe_conversation(
        &self,
        tenant: &TenantId,
        chat: ChatId,
    ) -> Option<ConversationSnapshot> {
        let supervisor = read(&self.registry).get(tenant).cloned()?;
        supervisor
            .call(
                |reply| TenantMsg::ObserveConversation { chat, reply },
                Some(CALL_TIMEOUT),
            )
            .await
            .ok()
            .and_then(crate::rpc::answered)
            .flatten()
    }

    /// The node's state.
    pub fn observe(&self) -> NodeSnapshot {
        NodeSnapshot {
            tenants: read(&self.registry).len(),
            conversations: self.services.counters.conversations(),
            max_tenants: self.services.settings.max_tenants,
        }
    }

    /// Stops every tenant and the node supervisor, waiting up to `timeout` for each stage.
    ///
    /// First every tenant is frozen: turns under way finish and record their replies, sends
    /// under way finish and record that they were sent. Stopping without that would leave a
    /// reply sent but recorded as unsent, which the tenant's next host would send again.
    pub async fn shutdown(&self, timeout: Duration) {
        let tenants: Vec<ActorRef<TenantMsg>> = read(&self.registry).values().cloned().collect();
        let mut freezing = tokio::task::JoinSet::new();
        for supervisor in tenants {
            freezing.spawn(async move {
                let _ = supervisor.call(TenantMsg::Freeze, Some(timeout)).await;
            });
        }
        if tokio::time::timeout(timeout, freezing.join_all())
            .await
            .is_err()
        {
            warn!(?timeout, "not every tenant froze before shutdown");
        }
        let _ = self
            .supervisor
            .stop_and_wait(StopReason::Shutdown.into_ractor(), Some(timeout))
            .await;
    }

    fn gone(&self, tenant: &TenantId) -> ActivationError {
        ActivationError::Unavailable {
            tenant: tenant.clone(),
            reason: "tenant stopped".into(),
        }
    }
}
