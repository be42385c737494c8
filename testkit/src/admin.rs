//! The admin HTTP API in-process: a node on a fresh SQLite file, with a recording WhatsApp,
//! a scripted WhatsApp Web engine and no LLM, and its router, for tests that drive the routes with
//! `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::Router;
use parking_lot::Mutex;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::services::Settings;
use salesboy_actors::store::Store;
use salesboy_node::http::{AppState, HttpSettings, router};
use salesboy_node::store::SqlStore;
use secrecy::SecretString;

use crate::fake_web::ScriptedWeb;
use crate::ports::{FixedProviders, RecordingWhatsApp, services};

/// A node's admin API in-process.
pub struct AdminApp {
    /// The router, admin routes and webhook alike.
    pub router: Router,
    /// Its state.
    pub state: AppState,
    /// The node's store.
    pub store: Arc<dyn Store>,
    /// The texts sent through the recording WhatsApp, oldest first.
    pub sent: Arc<Mutex<Vec<(String, String)>>>,
    /// The Web engine of `web` tenants, which the test plays WhatsApp's part of.
    pub web: ScriptedWeb,
    /// Holds the database's temp dir.
    _dir: tempfile::TempDir,
}

impl AdminApp {
    /// A node named `node_id` whose admin token is `admin_token`.
    pub async fn start(admin_token: &str, node_id: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let sql = SqlStore::connect(&url).await.expect("sqlite store");
        let store: Arc<dyn Store> = Arc::new(sql.clone());
        let whatsapp = RecordingWhatsApp::default();
        let sent = Arc::clone(&whatsapp.sent);
        let services = services(
            Arc::clone(&store),
            whatsapp,
            FixedProviders::default(),
            Settings::default(),
        );
        let web = ScriptedWeb::default();
        let mut services = Arc::into_inner(services).expect("services not shared yet");
        services.web = Some(Arc::new(web.clone()));
        let (node, _) = NodeHandle::start(Arc::new(services)).await.expect("node");
        let state = AppState::new(
            node,
            sql,
            HttpSettings {
                app_secret: None,
                verify_token: None,
                admin_token: SecretString::from(admin_token),
                node_id: node_id.into(),
                bus: "in-process",
                auth_throttle: Default::default(),
            },
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        Self {
            router: router(state.clone()),
            state,
            store,
            sent,
            web,
            _dir: dir,
        }
    }
}
