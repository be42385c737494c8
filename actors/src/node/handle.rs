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
use crate::conversation::{ConversationSnapshot, InboundItem};
use crate::error::{ActivationError, TenantError};
use crate::handoff::{HeldMessage, TenantHandoff};
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
        ask(
            &self.supervisor,
            |reply| NodeMsg::Activate { tenant, reply },
            CALL_TIMEOUT,
        )
        .await
        .unwrap_or(Err(ActivationError::Stopping))
    }

    /// Hands a persisted inbound message to its conversation.
    pub async fn deliver_inbound(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        item: InboundItem,
    ) -> Result<(), TenantError> {
        self.tell(tenant, TenantMsg::Inbound { chat, item }).await
    }

    /// The owner wrote in a chat from their own app: the bot steps back there.
    pub async fn owner_activity(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        at_ms: i64,
    ) -> Result<(), TenantError> {
        self.tell(tenant, TenantMsg::OwnerActivity { chat, at_ms })
            .await
    }

    /// Pauses (`Some(until)`) or resumes (`None`) the bot in a chat.
    pub async fn set_paused(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        until_ms: Option<i64>,
    ) -> Result<(), TenantError> {
        self.command(tenant, |reply| TenantMsg::SetPaused {
            chat,
            until_ms,
            reply,
        })
        .await
    }

    /// Sends a message as the owner; returns the outbound message's id.
    pub async fn owner_send(
        &self,
        tenant: &TenantId,
        chat: ChatId,
        body: String,
    ) -> Result<i64, TenantError> {
        self.command(tenant, |reply| TenantMsg::OwnerSend { chat, body, reply })
            .await
    }

    /// Tells a hosted tenant that its record changed; a tenant not hosted here picks the
    /// change up when it is next activated.
    pub fn reload_tenant(&self, tenant: &TenantId) {
        if let Some(supervisor) = self.hosted(tenant) {
            let _ = supervisor.send_message(TenantMsg::Reload);
        }
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
        ask(&supervisor, TenantMsg::Freeze, timeout)
            .await
            .ok_or_else(|| TenantError::Gone(tenant.clone()))?
    }

    /// Resumes a frozen tenant (the move was called off).
    pub fn thaw(&self, tenant: &TenantId) {
        if let Some(supervisor) = self.hosted(tenant) {
            let _ = supervisor.send_message(TenantMsg::Thaw);
        }
    }

    /// Stops hosting a tenant that moved away; returns what it held since it froze, for the
    /// new host.
    pub async fn release(&self, tenant: &TenantId) -> Vec<HeldMessage> {
        let tenant = tenant.clone();
        ask(
            &self.supervisor,
            |reply| NodeMsg::Release { tenant, reply },
            CALL_TIMEOUT,
        )
        .await
        .unwrap_or_default()
    }

    /// Hosts a tenant that moved here, under its new `epoch` (claimed in the store first, so
    /// the old host's late writes are refused).
    pub async fn adopt(&self, handoff: TenantHandoff, epoch: u64) -> Result<(), ActivationError> {
        let handoff = Box::new(handoff);
        ask(
            &self.supervisor,
            |reply| NodeMsg::Adopt {
                handoff,
                epoch,
                reply,
            },
            CALL_TIMEOUT,
        )
        .await
        .unwrap_or(Err(ActivationError::Stopping))
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

    /// The tenant's supervisor if it is hosted here (never activates).
    fn hosted(&self, tenant: &TenantId) -> Option<ActorRef<TenantMsg>> {
        self.registry.read().get(tenant).cloned()
    }

    /// Activates the tenant and hands it a message that needs no answer.
    async fn tell(&self, tenant: &TenantId, message: TenantMsg) -> Result<(), TenantError> {
        self.activate(tenant)
            .await?
            .send_message(message)
            .map_err(|_| TenantError::Gone(tenant.clone()))
    }

    /// Activates the tenant, asks it and waits for its answer: the one `call → answered →
    /// gone` chain of every command.
    async fn command<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        request: impl FnOnce(RpcReplyPort<Result<T, TenantError>>) -> TenantMsg,
    ) -> Result<T, TenantError> {
        let supervisor = self.activate(tenant).await?;
        ask(&supervisor, request, CALL_TIMEOUT)
            .await
            .ok_or_else(|| TenantError::Gone(tenant.clone()))?
    }
}
