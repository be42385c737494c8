//! Routing: delivers a command to wherever its tenant lives, activating it first if it lives
//! nowhere.
//!
//! Delivery between nodes is request + reply with bounded retries: a command is wrapped in
//! an [`Envelope`] with a fresh message id and the placement epoch the sender knows, and sent
//! to the host's inbox; the host answers only after the command is handed to the tenant's
//! actors. A retry carries the same id and the host's dedup window answers it from memory
//! (or, while the first is still running, with the first's answer), so a command is carried
//! out once. "No responders" or a timeout sends the sender back to
//! the directory; a dead host's tenants are re-placed (failover) and reconcile from SQL.

use std::time::Duration;

use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::node::{ActivationError, TenantError};
use salesboy_protocol::subjects;
use salesboy_protocol::{Codec, CodecError, Envelope, MessageId, NodeId, TenantId};
use tokio::time::Instant;
use tracing::debug;

use super::control::codec_headers;
use super::directory::{DirectoryEntry, EntryState, Versioned};
use super::member::ClusterMember;
use super::placement::PlacementReason;
use super::wire::{ControlError, ControlReply, ControlRequest, RemoteError};

/// How long a command may take to reach its tenant, retries included.
pub(super) const ROUTE_DEADLINE: Duration = Duration::from_secs(15);
/// One request's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The tenant, hosted on this node, refused or failed the command.
    #[error(transparent)]
    Refused(TenantError),
    /// The tenant's host refused the command (it could not read it, or not read the
    /// directory).
    #[error("{node} refused the command: {error}")]
    RefusedBy {
        /// The host.
        node: NodeId,
        /// Why.
        error: RemoteError,
    },
    /// The command could not be encoded for the wire.
    #[error(transparent)]
    Encode(CodecError),
    /// It did not get through before the deadline.
    #[error("tenant {tenant} unreachable: {reason}")]
    Unreachable {
        /// The tenant.
        tenant: TenantId,
        /// The last failure.
        reason: String,
    },
    /// The tenant's WhatsApp session is stopped: no node hosts it until `session.start`.
    #[error("the whatsapp session of tenant {0} is stopped: session.start runs it again")]
    SessionStopped(TenantId),
}

impl ClusterMember {
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
    pub(super) async fn owner(
        &self,
        tenant: &TenantId,
        fresh: bool,
    ) -> Result<DirectoryEntry, Attempt> {
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
            Some(Versioned {
                entry: placement, ..
            }) if matches!(placement.state, EntryState::Moving { .. }) => {
                Err(Attempt::Retry("tenant is moving".into()))
            }
            Some(Versioned {
                entry: placement, ..
            }) if placement.node == self.me
                || !super::is_known_dead(&self.membership, &placement.node) =>
            {
                Ok(placement)
            }
            // Placed on a dead node (a takeover before the leader's failover), or nowhere.
            known => {
                let dead = known.map(|known| known.entry.node);
                self.place_and_activate(tenant, dead.as_ref()).await
            }
        }
    }

    /// Chooses a host for a tenant that has none (or whose host, `dead`, died) and has it
    /// activated there.
    pub(super) async fn place_and_activate(
        &self,
        tenant: &TenantId,
        dead: Option<&NodeId>,
    ) -> Result<DirectoryEntry, Attempt> {
        let nodes = self.membership.live_nodes();
        let target = self.strategy.place(tenant, &nodes, &[]).map_err(|e| {
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
                // Stopped is stopped on every node.
                Ok(ControlReply::Error(ControlError::Activation(
                    ActivationError::SessionStopped(tenant),
                ))) => return Err(Attempt::Final(RouteError::SessionStopped(tenant))),
                // Whatever the chosen node's reason, look again (the placement may change).
                Ok(ControlReply::Error(error)) => return Err(Attempt::Retry(error.to_string())),
                Ok(other) => return Err(Attempt::Retry(format!("unexpected answer {other:?}"))),
                Err(e) => return Err(Attempt::Retry(e.to_string())),
            }
        }
        let placed = self
            .directory
            .fetch(tenant)
            .await
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        let placed = placed
            .map(|v| v.entry)
            .ok_or_else(|| Attempt::Retry("placement not recorded yet".into()))?;
        if placed.node == target {
            let reason = if dead.is_some() {
                PlacementReason::Failover
            } else {
                PlacementReason::Activation
            };
            self.record_placement(tenant, &target, Some(placed.epoch), reason, dead, &nodes);
        }
        Ok(placed)
    }

    pub(super) async fn deliver_here(
        &self,
        tenant: &TenantId,
        command: TenantCommand,
    ) -> Result<CommandReply, Attempt> {
        self.node
            .deliver(tenant, command)
            .await
            .map_err(|e| activation_attempt(tenant, e))
    }

    pub(super) async fn deliver_to(
        &self,
        owner: &DirectoryEntry,
        tenant: &TenantId,
        command: &TenantCommand,
        id: MessageId,
    ) -> Result<CommandReply, Attempt> {
        let payload = Codec::Bincode
            .encode(command)
            .map_err(|e| Attempt::Final(RouteError::Encode(e)))?;
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
            .map_err(|e| Attempt::Final(RouteError::Encode(e)))?;
        let subject = subjects::node_inbox(&owner.node);
        let (sealed, nonce) = self.key.seal_request(&subject, &bytes);
        let reply = self
            .bus
            .request(&subject, codec_headers(), sealed, REQUEST_TIMEOUT)
            .await
            .map_err(|e| Attempt::Retry(format!("{} did not answer: {e}", owner.node)))?;
        let answer = self.key.open_answer(&nonce, &reply.payload).map_err(|e| {
            e.record(&subject);
            Attempt::Retry(format!("{}'s answer refused: {e}", owner.node))
        })?;
        let answer: Result<CommandReply, RemoteError> = Codec::Bincode
            .decode(&answer)
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        answer.map_err(|error| match error {
            RemoteError::NotHere | RemoteError::Moving => Attempt::Retry(error.to_string()),
            // The host sends only what would fail anywhere (unknown tenant, at capacity).
            RemoteError::Tenant(error) => activation_attempt(tenant, error),
            RemoteError::Directory(_)
            | RemoteError::BadEnvelope(_)
            | RemoteError::BadCommand(_)
            | RemoteError::Unencodable(_)
            | RemoteError::TimedOut(_) => Attempt::Final(RouteError::RefusedBy {
                node: owner.node.clone(),
                error,
            }),
        })
    }
}

/// One delivery attempt's failure.
pub(super) enum Attempt {
    /// Try again (after looking the tenant up afresh).
    Retry(String),
    /// Give up.
    Final(RouteError),
}

/// What a tenant's failure to carry out a command means for the delivery: give up when any
/// node would fail the same way, look again otherwise.
pub(super) fn activation_attempt(tenant: &TenantId, error: impl Into<TenantError>) -> Attempt {
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
        TenantError::Activation(ActivationError::SessionStopped(tenant)) => {
            Attempt::Final(RouteError::SessionStopped(tenant))
        }
        // The tenant's own session said no (pairing, logout): it would say so anywhere.
        error @ TenantError::Web(_) => Attempt::Final(RouteError::Refused(error)),
        // Hosted elsewhere, moving, stopped, the store unavailable: look again.
        other => Attempt::Retry(other.to_string()),
    }
}
