//! `web` tenants stay hosted. A Cloud API tenant is activated by its next webhook or command;
//! a `web` tenant's messages come in on its own session's connection, so a tenant hosted
//! nowhere (after a restart of its node or of the whole cluster, or an activation that
//! failed) would never hear from its customers. Every [`CHECK_EVERY`] this duty finds the
//! `web` tenants whose session is not stopped and that no live node hosts, and starts each
//! one (`TenantCommand::Start` through the router: placed by the cluster's strategy, or here
//! on a single node). Failover already activates the tenants it moves; this covers the rest.

use std::time::Duration;

use futures::StreamExt;
use salesboy_actors::command::TenantCommand;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::store::Store;
use salesboy_protocol::{Engine, TenantId};
use std::sync::Arc;
use tracing::{debug, info, warn};

use crate::cluster::ClusterMember;
use crate::routing::Router;

/// How often the duty looks for `web` tenants hosted nowhere.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// How many starts run at once.
const CONCURRENT_STARTS: usize = 8;

/// What keeps `web` tenants hosted.
pub struct WebHosting {
    /// The database (the tenants and their engines).
    pub store: Arc<dyn Store>,
    /// This node's actors.
    pub node: NodeHandle,
    /// Where starts go.
    pub router: Router,
    /// On a cluster: where tenants are placed, and which nodes live.
    pub cluster: Option<Arc<ClusterMember>>,
}

impl WebHosting {
    /// Checks every [`CHECK_EVERY`] until cancelled (run it with the node's task set).
    pub async fn run(self) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.check().await;
        }
    }

    /// Starts the `web` tenants hosted nowhere; returns how many it started.
    pub async fn check(&self) -> usize {
        let tenants = match self.store.list_tenants().await {
            Ok(tenants) => tenants,
            Err(error) => {
                warn!(%error, "web tenants not checked: the store did not answer");
                return 0;
            }
        };
        let hosted_here = self.node.hosted_tenants();
        let unhosted: Vec<TenantId> = tenants
            .into_iter()
            .filter(|tenant| tenant.engine == Engine::Web && tenant.session_stopped_ms.is_none())
            .map(|tenant| tenant.id)
            .filter(|id| !hosted_here.contains(id) && !self.hosted_elsewhere(id))
            .collect();
        if unhosted.is_empty() {
            return 0;
        }
        info!(
            tenants = unhosted.len(),
            "starting web tenants hosted nowhere"
        );
        futures::stream::iter(unhosted)
            .map(|tenant| async move {
                match self.router.deliver(&tenant, TenantCommand::Start).await {
                    Ok(_) => 1,
                    Err(error) => {
                        debug!(tenant = %tenant, %error, "web tenant not started yet");
                        0
                    }
                }
            })
            .buffer_unordered(CONCURRENT_STARTS)
            .fold(0, |started, one| async move { started + one })
            .await
    }

    /// Whether the directory places the tenant on another node that lives (it runs there,
    /// or that node's activation of it is its business).
    fn hosted_elsewhere(&self, tenant: &TenantId) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        cluster.directory().cached(tenant).is_some_and(|placed| {
            placed.entry.node != *cluster.me() && cluster.membership().is_alive(&placed.entry.node)
        })
    }
}
