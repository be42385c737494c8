//! [`NodeHandle`]: the node's front door. Finds a hosted tenant's supervisor in the shared
//! registry without a hop through the node actor, and asks the node actor only to activate,
//! adopt or release a tenant.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, RpcReplyPort};
use salesboy_protocol::{ChatId, TenantId};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{NodeArgs, NodeMsg, NodeSupervisor, Registry};
use crate::command::{CommandReply, TenantCommand};
use crate::conversation::ConversationSnapshot;
use crate::error::{ActivationError, TenantError};
use crate::handoff::TenantHandoff;
use crate::rpc::ask;
use crate::services::Services;
use crate::stop::StopReason;
use crate::tenant::{TenantMsg, TenantSnapshot};

/// How long callers wait for an activation or a tenant's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// The tenant's supervisor, activating the tenant if it is not hosted yet.
    pub async fn activate(
        &self,
        tenant: &TenantId,
    ) -> Result<ActorRef<TenantMsg>, ActivationError> {
        if let Some(existing) = self.hosted(tenant) {
            return Ok(existing);
        }
        let tenant = tenant.clone();
        self.ask_node(|reply| NodeMsg::Activate { tenant, reply })
            .await
            .unwrap_or(Err(ActivationError::Stopping))
    }

    /// Delivers a command to the tenant, activating it first if it is not hosted here; a
    /// reload only tells a tenant hosted here (or being activated here: once it is) and never
    /// fails (one hosted nowhere, or gone, reads its record when it is next activated). A command [done on receipt](TenantCommand::done_on_receipt) is
    /// done once the tenant has it, the others once the tenant has answered.
    pub async fn deliver(
        &self,
        tenant: &TenantId,
        command: TenantCommand,
    ) -> Result<CommandReply, TenantError> {
        if let TenantCommand::Reload = command {
            // An activation under way may have read the record before it changed (a session
            // stop would be missed): wait for it, then tell the tenant it started.
            let supervisor = match self.hosted(tenant) {
                Some(supervisor) => Some(supervisor),
                None if self.is_hosted(tenant).await.unwrap_or(false) => self.hosted(tenant),
                None => None,
            };
            if let Some(supervisor) = supervisor {
                let _ = supervisor.send_message(TenantMsg::Command {
                    command,
                    reply: None,
                });
            }
            return Ok(CommandReply::Done);
        }
        let supervisor = self.activate(tenant).await?;
        if command.done_on_receipt() {
            return supervisor
                .send_message(TenantMsg::Command {
                    command,
                    reply: None,
                })
                .map(|()| CommandReply::Done)
                .map_err(|_| TenantError::Gone(tenant.clone()));
        }
        let request = |reply| TenantMsg::Command {
            command,
            reply: Some(reply),
        };
        ask_tenant(&supervisor, tenant, request, CALL_TIMEOUT).await?
    }

    /// The tenants hosted here.
    pub fn hosted_tenants(&self) -> Vec<TenantId> {
        let mut hosted: Vec<TenantId> = self.registry.read().keys().cloned().collect();
        hosted.sort();
        hosted
    }

    /// Freezes a hosted tenant for a move (see [`TenantMsg::Freeze`]): its state, once the
    /// reply under way is recorded. On error the tenant has resumed by itself.
    pub async fn freeze(&self, tenant: &TenantId) -> Result<TenantHandoff, TenantError> {
        let supervisor = self
            .hosted(tenant)
            .ok_or_else(|| TenantError::Gone(tenant.clone()))?;
        // The tenant bounds each child's freeze; allow for both stages.
        let timeout = self.services.settings.freeze_timeout * 3;
        ask_tenant(&supervisor, tenant, TenantMsg::Freeze, timeout).await?
    }

    /// Resumes a frozen tenant (the move was called off).
    pub fn thaw(&self, tenant: &TenantId) {
        if let Some(supervisor) = self.hosted(tenant) {
            let _ = supervisor.send_message(TenantMsg::Thaw);
        }
    }

    /// Stops hosting a tenant that moved away; returns what it held since it froze, for the
    /// new host.
    pub async fn release(&self, tenant: &TenantId) -> Vec<TenantCommand> {
        let tenant = tenant.clone();
        self.ask_node(|reply| NodeMsg::Release { tenant, reply })
            .await
            .unwrap_or_default()
    }

    /// Hosts a tenant that moved here, under its new `epoch` (claimed in the store first, so
    /// the old host's late writes are refused).
    pub async fn adopt(&self, handoff: TenantHandoff, epoch: u64) -> Result<(), ActivationError> {
        let handoff = Box::new(handoff);
        self.ask_node(|reply| NodeMsg::Adopt {
            handoff,
            epoch,
            reply,
        })
        .await
        .unwrap_or(Err(ActivationError::Stopping))
    }

    /// Whether the tenant is hosted here, once an activation of it under way (if any) has
    /// finished. A move asks this after marking the tenant moving, so no activation can
    /// start after the answer and escape the move. `Gone` when the node did not answer.
    pub async fn is_hosted(&self, tenant: &TenantId) -> Result<bool, TenantError> {
        let request = |reply| NodeMsg::Hosted {
            tenant: tenant.clone(),
            reply,
        };
        self.ask_node(request)
            .await
            .ok_or_else(|| TenantError::Gone(tenant.clone()))
    }

    /// A hosted tenant's state, without activating it.
    pub async fn observe_tenant(&self, tenant: &TenantId) -> Option<TenantSnapshot> {
        ask(&self.hosted(tenant)?, TenantMsg::Observe, CALL_TIMEOUT).await
    }

    /// An active conversation's state, without activating anything.
    pub async fn observe_conversation(
        &self,
        tenant: &TenantId,
        chat: ChatId,
    ) -> Option<ConversationSnapshot> {
        ask(
            &self.hosted(tenant)?,
            |reply| TenantMsg::ObserveConversation { chat, reply },
            CALL_TIMEOUT,
        )
        .await
        .flatten()
    }

    /// The node's state.
    pub fn observe(&self) -> NodeSnapshot {
        NodeSnapshot {
            tenants: self.registry.read().len(),
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
        let tenants: Vec<ActorRef<TenantMsg>> = self.registry.read().values().cloned().collect();
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

    /// Asks the node supervisor; `None` when it is stopping or did not answer in time (each
    /// caller says what that means for it).
    async fn ask_node<T: Send + 'static>(
        &self,
        request: impl FnOnce(RpcReplyPort<T>) -> NodeMsg,
    ) -> Option<T> {
        ask(&self.supervisor, request, CALL_TIMEOUT).await
    }

    /// The tenant's supervisor if it is hosted here (never activates).
    fn hosted(&self, tenant: &TenantId) -> Option<ActorRef<TenantMsg>> {
        self.registry.read().get(tenant).cloned()
    }
}

/// Asks a tenant's supervisor and waits up to `timeout`; [`TenantError::Gone`] when it stopped
/// or did not answer in time.
async fn ask_tenant<T: Send + 'static>(
    supervisor: &ActorRef<TenantMsg>,
    tenant: &TenantId,
    request: impl FnOnce(RpcReplyPort<T>) -> TenantMsg,
    timeout: Duration,
) -> Result<T, TenantError> {
    ask(supervisor, request, timeout)
        .await
        .ok_or_else(|| TenantError::Gone(tenant.clone()))
}
