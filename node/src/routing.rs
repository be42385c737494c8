//! Where the webhook ingress and the admin API send tenant commands: straight to this node's
//! actors on a single node, through the cluster (wherever the tenant lives) on a cluster.

use std::sync::Arc;

use salesboy_actors::node::{ActivationError, NodeHandle, TenantError};
use salesboy_protocol::TenantId;

use crate::cluster::wire::{CommandReply, TenantCommand};
use crate::cluster::{Cluster, RouteError};

/// Routes tenant commands.
#[derive(Clone)]
pub enum Router {
    /// A single node: every tenant is hosted here.
    Local(NodeHandle),
    /// A cluster node: tenants live wherever the directory says.
    Cluster(Arc<Cluster>),
}

impl Router {
    /// Delivers a command to the tenant.
    pub async fn deliver(
        &self,
        tenant: &TenantId,
        command: TenantCommand,
    ) -> Result<CommandReply, RouteError> {
        match self {
            Self::Cluster(cluster) => cluster.deliver(tenant, command).await,
            Self::Local(node) => execute(node, tenant, command)
                .await
                .map_err(|e| local_error(tenant, e)),
        }
    }
}

/// Carries out a command with this node's actors (activating the tenant here if needed).
pub async fn execute(
    node: &NodeHandle,
    tenant: &TenantId,
    command: TenantCommand,
) -> Result<CommandReply, TenantError> {
    match command {
        TenantCommand::Inbound { chat, item } => node
            .deliver_inbound(tenant, chat, item)
            .await
            .map(|()| CommandReply::Done),
        TenantCommand::OwnerActivity { chat, at_ms } => node
            .owner_activity(tenant, chat, at_ms)
            .await
            .map(|()| CommandReply::Done),
        TenantCommand::SetPaused { chat, until_ms } => node
            .set_paused(tenant, chat, until_ms)
            .await
            .map(|()| CommandReply::Done),
        TenantCommand::OwnerSend { chat, body } => node
            .owner_send(tenant, chat, body)
            .await
            .map(CommandReply::Outbound),
        TenantCommand::Reload => {
            node.reload_tenant(tenant);
            Ok(CommandReply::Done)
        }
    }
}

fn local_error(tenant: &TenantId, error: TenantError) -> RouteError {
    match error {
        TenantError::Activation(ActivationError::UnknownTenant(tenant)) => {
            RouteError::UnknownTenant(tenant)
        }
        TenantError::Activation(error @ ActivationError::AtCapacity { .. }) => {
            RouteError::Unplaceable {
                tenant: tenant.clone(),
                reason: error.to_string(),
            }
        }
        TenantError::Activation(error @ ActivationError::Stopping) => RouteError::Unreachable {
            tenant: tenant.clone(),
            reason: error.to_string(),
        },
        other => RouteError::Refused(other),
    }
}
