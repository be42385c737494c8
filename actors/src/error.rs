//! The errors of the actor tree's front door ([`crate::node::NodeHandle`]): why a tenant
//! could not be activated ([`ActivationError`], with [`EpochError`] when this node may not
//! host it now) and why a command to a tenant failed ([`TenantError`]). Callers decide on
//! variants, never on the text. They are plain data (serde), so a node can tell another why
//! (the cluster's control replies carry them).

use std::time::Duration;

use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::tenant::ChildKind;
use crate::web::WebError;

/// Why the [`EpochSource`](crate::ports::EpochSource) gave this node no epoch for a tenant:
/// this node may not host it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EpochError {
    /// Another live node hosts the tenant.
    #[error("hosted by {node}")]
    HostedBy {
        /// Its host.
        node: NodeId,
    },
    /// This node is moving the tenant to another node.
    #[error("moving to another node")]
    Moving,
    /// The tenant's directory entry changed under every attempt to claim it.
    #[error("the directory kept changing")]
    DirectoryChurn,
    /// The directory could not be read or written.
    #[error("directory unavailable: {reason}")]
    DirectoryUnavailable {
        /// What the directory said.
        reason: String,
    },
    /// The store could not read or claim the epoch.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tenant's epoch is the largest there is (only a forged or corrupt directory entry
    /// or row holds it): there is no greater one to claim.
    #[error("no epoch after {epoch}")]
    Exhausted {
        /// The largest epoch seen.
        epoch: u64,
    },
}

/// Why a tenant could not be activated (or adopted) on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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
    /// The store could not read the tenant, or claim the epoch of an adoption.
    #[error("tenant {tenant} unavailable: {error}")]
    Store {
        /// The tenant.
        tenant: TenantId,
        /// What the store said.
        #[source]
        error: StoreError,
    },
    /// This node may not host the tenant now (another node hosts it, it is moving, the
    /// directory or the store could not settle its epoch).
    #[error("tenant {tenant} unavailable: {error}")]
    Epoch {
        /// The tenant.
        tenant: TenantId,
        /// Why no epoch.
        #[source]
        error: EpochError,
    },
    /// An adoption found the tenant hosted here already.
    #[error("tenant {0} unavailable: already hosted here")]
    AlreadyHosted(TenantId),
    /// An adoption found the tenant being activated here already.
    #[error("tenant {0} unavailable: already being activated here")]
    AlreadyActivating(TenantId),
    /// The tenant's supervisor failed to start.
    #[error("tenant {tenant} unavailable: {reason}")]
    StartFailed {
        /// The tenant.
        tenant: TenantId,
        /// ractor's account of the failure.
        reason: String,
    },
    /// The node is shutting down.
    #[error("node is stopping")]
    Stopping,
    /// The tenant's WhatsApp session is stopped (`session.stop`): it is hosted nowhere
    /// until `session.start`.
    #[error("the whatsapp session of tenant {0} is stopped: session.start runs it again")]
    SessionStopped(TenantId),
}

/// Why a command to a hosted tenant (deliver, pause, send, freeze) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TenantError {
    /// The tenant could not be activated.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// The tenant stopped (or did not answer in time) before it answered.
    #[error("tenant {0} unavailable: tenant stopped")]
    Gone(TenantId),
    /// The tenant is frozen for a move to another node: retry.
    #[error("tenant {0} unavailable: tenant is moving to another node, retry")]
    Moving(TenantId),
    /// The store refused or failed the command's write.
    #[error("tenant {tenant} unavailable: {error}")]
    Store {
        /// The tenant.
        tenant: TenantId,
        /// What the store said.
        #[source]
        error: StoreError,
    },
    /// A child did not freeze in time; the tenant resumed.
    #[error("tenant {tenant} unavailable: a {child} did not freeze within {timeout:?}")]
    FreezeTimeout {
        /// The tenant.
        tenant: TenantId,
        /// Which child.
        child: ChildKind,
        /// How long it had.
        timeout: Duration,
    },
    /// A `web` session could not do what was asked (pairing, logout).
    #[error(transparent)]
    Web(#[from] WebError),
}

impl TenantError {
    /// The store's error about `tenant`.
    pub fn store(tenant: &TenantId, error: StoreError) -> Self {
        Self::Store {
            tenant: tenant.clone(),
            error,
        }
    }
}
