//! Where the webhook ingress and the admin API send tenant commands: straight to this node's
//! actors on a single node, through the cluster (wherever the tenant lives) on a cluster.

use std::sync::Arc;

use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::node::{ActivationError, NodeHandle, TenantError};
use salesboy_protocol::TenantId;

use crate::cluster::{ClusterMember, RouteError};

/// Routes tenant commands.
#[derive(Clone)]
pub enum Router {
    /// A single node: every tenant is hosted here.
    Local(NodeHandle),
    /// A cluster node: tenants live wherever the directory says.
    Cluster(Arc<ClusterMember>),
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
            Self::Local(node) => node
                .deliver(tenant, command)
                .await
                .map_err(|e| local_error(tenant, e)),
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
        TenantError::Activation(ActivationError::SessionStopped(tenant)) => {
            RouteError::SessionStopped(tenant)
        }
        TenantError::Activation(error @ ActivationError::Stopping) => RouteError::Unreachable {
            tenant: tenant.clone(),
            reason: error.to_string(),
        },
        other => RouteError::Refused(other),
    }
}
