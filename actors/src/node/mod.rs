//! `NodeSupervisor` and [`NodeHandle`] ([`handle`]): the tenants hosted on this node.
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

mod handle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Alert;
use tracing::{info, warn};

pub use self::handle::{NodeHandle, NodeSnapshot};
use crate::command::TenantCommand;
pub use crate::error::{ActivationError, EpochError, TenantError};
use crate::handoff::TenantHandoff;
use crate::services::{CUSTOMER_WINDOW_MS, Services};
use crate::stop::StopReason;
use crate::tenant::{TenantArgs, TenantMsg, TenantSupervisor};

/// The tenants hosted here, shared by the node supervisor and its handles.
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
    /// Whether the tenant is hosted here, answered once an activation of it under way (if
    /// any) has finished: a move must not take "not hosted" for "not hosted yet".
    Hosted {
        /// The tenant.
        tenant: TenantId,
        /// Hosted or not.
        reply: RpcReplyPort<bool>,
    },
    /// Stop hosting a tenant that moved away: forget it here at once (so nothing activates
    /// it again by mistake), then collect what it held since it froze. An activation under
    /// way finishes first and is released then.
    Release {
        /// The tenant.
        tenant: TenantId,
        /// The messages it held.
        reply: RpcReplyPort<Vec<TenantCommand>>,
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
    /// A `Hosted` question.
    Hosted(RpcReplyPort<bool>),
    /// A `Release` call: the tenant is released as soon as it is started.
    Release(RpcReplyPort<Vec<TenantCommand>>),
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
            Self::Hosted(reply) => {
                let _ = reply.send(result.is_ok());
            }
            // Answered by the caller, which releases the tenant.
            Self::Release(reply) => {
                let _ = reply.send(Vec::new());
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
    /// What the sweeps have looked through so far.
    swept: SweepProgress,
}

/// Every how many periodic sweeps one looks through the whole lookback window; the others
/// look only at what was received since the one before (a minute at the default 5 s).
pub const FULL_SWEEP_EVERY: u32 = 12;

/// How far the sweeps have looked: a sweep's cost follows the traffic since the last one,
/// not the traffic of the whole lookback window.
#[derive(Debug, Default)]
struct SweepProgress {
    /// Messages received before this (ms) were looked at by a sweep.
    covered_ms: Option<i64>,
    /// Sweeps since the last one over the whole window.
    since_full: u32,
}

impl SweepProgress {
    /// Where a sweep for `[full_since_ms, before_ms)` starts: the whole window every
    /// [`FULL_SWEEP_EVERY`] sweeps (and at first), otherwise where the last one stopped.
    /// A message the short sweeps cannot see (committed more than the grace after it was
    /// received, or stamped by a node whose clock lags) waits for the next full one.
    fn since_ms(&self, full_since_ms: i64) -> i64 {
        match self.covered_ms {
            Some(covered) if self.since_full < FULL_SWEEP_EVERY => covered.max(full_since_ms),
            _ => full_since_ms,
        }
    }

    /// A sweep that started at `since_ms` looked through everything before `before_ms`.
    fn swept(&mut self, full_since_ms: i64, since_ms: i64, before_ms: i64) {
        self.since_full = if since_ms == full_since_ms {
            0
        } else {
            self.since_full + 1
        };
        self.covered_ms = Some(self.covered_ms.unwrap_or(before_ms).max(before_ms));
    }
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
            swept: SweepProgress::default(),
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
                    state
                        .registry
                        .write()
                        .insert(tenant.clone(), supervisor.clone());
                }
                let mut releases = Vec::new();
                for waiter in waiters {
                    match waiter {
                        Waiter::Release(reply) if result.is_ok() => releases.push(reply),
                        waiter => waiter.answer(&tenant, &result),
                    }
                }
                for reply in releases {
                    release(state, &tenant, reply);
                }
            }
            NodeMsg::Hosted { tenant, reply } => match state.activating.get_mut(&tenant) {
                Some(waiters) => waiters.push(Waiter::Hosted(reply)),
                None => {
                    let _ = reply.send(state.registry.read().contains_key(&tenant));
                }
            },
            NodeMsg::Release { tenant, reply } => match state.activating.get_mut(&tenant) {
                Some(waiters) => waiters.push(Waiter::Release(reply)),
                None => release(state, &tenant, reply),
            },
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
            state.registry.write().remove(&tenant);
            info!(tenant = %tenant, reason = reason.as_deref().unwrap_or("stopped"), "tenant deactivated");
        }
        Ok(())
    }
}

/// Forgets a hosted tenant here and stops it, answering with what it held (off the node
/// actor's loop: the tenant may take a moment).
fn release(state: &mut NodeState, tenant: &TenantId, reply: RpcReplyPort<Vec<TenantCommand>>) {
    let supervisor = state.registry.write().remove(tenant);
    let Some(supervisor) = supervisor else {
        let _ = reply.send(Vec::new());
        return;
    };
    state.names.remove(&supervisor.get_id());
    let timeout = state.services.settings.freeze_timeout;
    tokio::spawn(async move {
        let held = crate::rpc::ask(&supervisor, TenantMsg::Release, timeout)
            .await
            .unwrap_or_default();
        let _ = reply.send(held);
    });
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
    if let Some(existing) = state.registry.read().get(&tenant).cloned() {
        let result = match adopt {
            Some(_) => Err(ActivationError::AlreadyHosted(tenant.clone())),
            None => Ok(existing),
        };
        waiter.answer(&tenant, &result);
        return;
    }
    if let Some(waiters) = state.activating.get_mut(&tenant) {
        match adopt {
            Some(_) => waiter.answer(
                &tenant,
                &Err(ActivationError::AlreadyActivating(tenant.clone())),
            ),
            None => waiters.push(waiter),
        }
        return;
    }
    let max = state.services.settings.max_tenants;
    if state.registry.read().len() + state.activating.len() >= max {
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
    let store_error = |error| ActivationError::Store {
        tenant: tenant.clone(),
        error,
    };
    match services.store.tenant(&tenant).await {
        Ok(Some(record)) if record.session_stopped_ms.is_some() => {
            return Err(ActivationError::SessionStopped(tenant));
        }
        Ok(Some(_)) => {}
        Ok(None) => return Err(ActivationError::UnknownTenant(tenant)),
        Err(error) => return Err(store_error(error)),
    }
    let (epoch, handoff) = match adopt {
        // The epoch was decided by whoever moved the tenant (the cluster directory); the
        // store must fence the old host's writes from now on.
        Some((handoff, epoch)) => {
            services
                .store
                .claim_epoch(&tenant, epoch)
                .await
                .map_err(store_error)?;
            (epoch, Some(handoff))
        }
        None => {
            let epoch = services.epochs.epoch_for(&tenant).await.map_err(|error| {
                ActivationError::Epoch {
                    tenant: tenant.clone(),
                    error,
                }
            })?;
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
        .map_err(|e| ActivationError::StartFailed {
            tenant: tenant.clone(),
            reason: e.to_string(),
        })?;
    Ok(supervisor)
}

async fn sweep(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    grace: Duration,
    lookback: Duration,
) {
    // By tenant: a fixed order keeps runs reproducible (the simulation).
    let mut hosted: Vec<(TenantId, ActorRef<TenantMsg>)> = state
        .registry
        .read()
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
    let full_since_ms = now_ms.saturating_sub(millis(lookback));
    let before_ms = now_ms.saturating_sub(millis(grace));
    let since_ms = state.swept.since_ms(full_since_ms);
    let pending = match services
        .store
        .tenants_with_pending_work(since_ms, before_ms)
        .await
    {
        Ok(pending) => {
            state.swept.swept(full_since_ms, since_ms, before_ms);
            pending
        }
        Err(error) => {
            warn!(%error, "sweep could not read pending work");
            return;
        }
    };
    for tenant in pending {
        let active = state.registry.read().get(&tenant).cloned();
        match active {
            Some(supervisor) => {
                let _ = supervisor.send_message(TenantMsg::Reconcile { unsent: false });
            }
            // Activation reconciles (and resends unsent replies) by itself.
            None => activate(myself, state, tenant, None, Waiter::Sweep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_look_at_what_came_since_the_last_and_at_the_whole_window_every_few() {
        let mut swept = SweepProgress::default();
        // The first sweep looks through the whole window.
        assert_eq!(swept.since_ms(1_000), 1_000);
        swept.swept(1_000, 1_000, 290_000);
        // The next ones start where the last stopped.
        let mut since = Vec::new();
        for n in 1..=FULL_SWEEP_EVERY {
            let full = 1_000 + i64::from(n) * 5_000;
            let start = swept.since_ms(full);
            since.push(start);
            swept.swept(full, start, 290_000 + i64::from(n) * 5_000);
        }
        assert_eq!(since[0], 290_000);
        assert_eq!(since[1], 295_000);
        // Then one looks through the whole window again.
        let full = 1_000 + i64::from(FULL_SWEEP_EVERY + 1) * 5_000;
        assert_eq!(
            *since.last().unwrap(),
            290_000 + i64::from(FULL_SWEEP_EVERY - 1) * 5_000
        );
        assert_eq!(swept.since_ms(full), full);
        // A window that starts after what was covered (a long pause) is a full one.
        let mut paused = SweepProgress::default();
        paused.swept(0, 0, 10_000);
        assert_eq!(paused.since_ms(50_000), 50_000);
    }
}
