//! HTTP: the WhatsApp webhook, health, metrics, the admin API and its OpenAPI document.
//!
//! - [`webhook`]: `GET/POST /webhooks/whatsapp`;
//! - [`health`]: `GET /health` (ready or not; the details are `GET /api/health`);
//! - [`metrics`]: `GET /metrics` (Prometheus);
//! - [`admin`]: `/api/…` behind the bearer token, `/api/openapi.json`;
//! - [`dashboard`]: the web page at `/` (on the admin listener);
//! - [`limits`]: the request timeout and the concurrency limit of a listener, and serving it.
//!
//! A node serves [`router`] on one listener, or [`public_router`] (the webhook and
//! `/health`) and [`admin_router`] (`/api/…` and `/metrics`) on two.

pub mod admin;
pub mod dashboard;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::store::{Store, TenantTokenStore};
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ingress::Ingress;
use crate::store::SqlStore;

/// Everything the HTTP handlers share. Build it with [`AppState::new`].
#[derive(Clone)]
pub struct AppState {
    /// The node: routes messages to tenants.
    pub node: NodeHandle,
    /// The database.
    pub store: Arc<dyn Store>,
    /// The same database, for what only the SQL store offers (event webhooks).
    pub sql: SqlStore,
    /// Tenant API tokens (the same database): the admin API's auth reads them.
    pub tokens: Arc<dyn TenantTokenStore>,
    /// Secrets and settings of the HTTP side.
    pub http: Arc<HttpSettings>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// When the node started.
    pub started: Instant,
    /// Persists webhook deliveries and hands them to the tenants.
    pub ingress: Ingress,
    /// Where tenant commands go (this node, or wherever the cluster hosts the tenant).
    pub router: crate::routing::Router,
    /// The cluster runtime, on a cluster.
    pub cluster: Option<Arc<crate::cluster::ClusterMember>>,
    /// Clients locked out of the admin API for their wrong tokens.
    pub auth_throttle: Arc<admin::AuthThrottle>,
    /// The alert conditions raised on this node and not cleared.
    pub alerts: Arc<crate::alerts::ActiveAlerts>,
    /// The events the dashboard's live streams watch.
    pub live: crate::events::live::LiveEvents,
    /// Cancelled when the node stops: live streams end then.
    pub stopping: CancellationToken,
    /// The live streams open, by caller (bounded).
    pub streams: Arc<admin::StreamSlots>,
    /// The node's monitoring figures, one reading shared by the live streams.
    pub figures: Arc<crate::api::live::FigureReader>,
}

impl AppState {
    /// The state for a node, its store (and its tenant tokens), its HTTP settings and its metrics renderer; the
    /// background work (the ingress's hand-offs) runs on the node's `tasks` and stops when
    /// `shutdown` is cancelled.
    pub fn new(
        node: NodeHandle,
        sql: SqlStore,
        http: HttpSettings,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let store: Arc<dyn Store> = Arc::new(sql.clone());
        let tokens: Arc<dyn TenantTokenStore> = Arc::new(sql.clone());
        let router = crate::routing::Router::Local(node.clone());
        let ingress = Ingress::new(
            Arc::clone(&store),
            Arc::clone(&node.services().clock),
            router.clone(),
            tasks,
            shutdown.clone(),
        );
        Self {
            router,
            cluster: None,
            auth_throttle: Arc::new(admin::AuthThrottle::new(http.auth_throttle)),
            alerts: Arc::default(),
            live: crate::events::live::LiveEvents::none(),
            stopping: shutdown,
            streams: Arc::default(),
            figures: Arc::default(),
            node,
            store,
            sql,
            tokens,
            http: Arc::new(http),
            metrics,
            started: Instant::now(),
            ingress,
        }
    }

    /// The operations behind the admin API, on this state's node, store and router.
    pub fn api(&self) -> crate::api::Api {
        crate::api::Api {
            node: self.node.clone(),
            store: Arc::clone(&self.store),
            sql: self.sql.clone(),
            tokens: Arc::clone(&self.tokens),
            ingress: self.ingress.clone(),
            router: self.router.clone(),
            cluster: self.cluster.clone(),
            node_id: self.http.node_id.clone(),
        }
    }

    /// The same state showing `alerts` (the node's event sink's) in health and metrics.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::ActiveAlerts>) -> Self {
        self.alerts = alerts;
        self
    }

    /// The same state watching `live` for the dashboard's live streams.
    pub fn with_live_events(mut self, live: crate::events::live::LiveEvents) -> Self {
        self.live = live;
        self
    }

    /// The same state routing through `router` (a cluster node's).
    pub fn with_router(
        mut self,
        router: crate::routing::Router,
        cluster: Option<Arc<crate::cluster::ClusterMember>>,
    ) -> Self {
        self.ingress = self.ingress.with_router(router.clone());
        self.router = router;
        self.cluster = cluster;
        self
    }
}

/// Secrets and settings of the HTTP side.
pub struct HttpSettings {
    /// Meta app secret; without it webhook deliveries are refused (503).
    pub app_secret: Option<SecretString>,
    /// Verify token of the subscription handshake; without it the handshake is refused.
    pub verify_token: Option<SecretString>,
    /// Bearer token of the admin API.
    pub admin_token: SecretString,
    /// The node id, for `/health`.
    pub node_id: String,
    /// The bus the node's cluster member runs on (`Bus::kind`), or `none` on a single
    /// node (for `/api/health`).
    pub bus: &'static str,
    /// When wrong admin tokens lock a client out.
    pub auth_throttle: admin::AuthThrottleSettings,
}

/// The node's whole HTTP surface, for one listener.
pub fn router(state: AppState) -> Router {
    public_routes(state.clone())
        .merge(admin_routes(state.clone()))
        .with_state(state)
}

/// What faces the internet when the admin API listens apart: the WhatsApp webhook and the
/// ready/not-ready `/health`.
pub fn public_router(state: AppState) -> Router {
    public_routes(state.clone()).with_state(state)
}

/// The admin listener's routes: `/api/…`, `/metrics` and the dashboard.
pub fn admin_router(state: AppState) -> Router {
    admin_routes(state.clone()).with_state(state)
}

fn public_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(webhook::routes(state))
        .merge(health::routes())
}

fn admin_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(metrics::routes())
        .merge(dashboard::routes())
        .nest("/api", admin::routes(state))
}
