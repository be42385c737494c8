//! [`FakeWebEndpoint`]: where a sandbox's nodes connect their WhatsApp Web clients
//! (`SALESBOY_WHATSAPP_WEB_URL`), instead of WhatsApp's servers. A local HTTP server that
//! records each websocket upgrade request — which node asked, from the `node` parameter of
//! the URL the sandbox gave it — and refuses the upgrade, so the clients back off and try
//! again as they would while WhatsApp is unreachable. A test reads who connects, and when.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::fake_server::FakeServer;

/// Each attempt: the node that made it, and when its request came.
type Attempts = Arc<Mutex<Vec<(String, Instant)>>>;

/// A local stand-in for WhatsApp Web's websocket endpoint that counts connection attempts
/// per node. Stops when dropped.
pub struct FakeWebEndpoint {
    attempts: Attempts,
    server: FakeServer,
}

impl FakeWebEndpoint {
    /// Listens on a free local port.
    pub async fn start() -> Result<Self, String> {
        let attempts = Attempts::default();
        let router = Router::new()
            .route("/ws/chat", get(upgrade))
            .with_state(Arc::clone(&attempts));
        let (stop, _) = watch::channel(false);
        let server = FakeServer::start(router, stop)
            .await
            .map_err(|e| format!("cannot start the fake whatsapp web endpoint: {e}"))?;
        Ok(Self { attempts, server })
    }

    /// The URL node `node` is given: its attempts are counted under its id.
    pub fn url_for(&self, node: &str) -> String {
        format!("ws://{}/ws/chat?node={node}", self.server.addr())
    }

    /// How many connection attempts node `node` made so far.
    pub fn attempts(&self, node: &str) -> usize {
        self.attempts
            .lock()
            .iter()
            .filter(|(n, _)| n == node)
            .count()
    }

    /// How many connection attempts of node `node` came after `since`.
    pub fn attempts_since(&self, node: &str, since: Instant) -> usize {
        self.attempts
            .lock()
            .iter()
            .filter(|(n, at)| n == node && *at > since)
            .count()
    }

    /// Every attempt so far, oldest first: the id of the node that made it.
    pub fn all_attempts(&self) -> Vec<String> {
        self.attempts
            .lock()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl std::fmt::Debug for FakeWebEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWebEndpoint")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

/// Records an upgrade request under its `node` parameter (`"?"` without one) and refuses
/// it, as an unreachable WhatsApp would leave the client.
async fn upgrade(
    State(attempts): State<Attempts>,
    Query(query): Query<HashMap<String, String>>,
) -> StatusCode {
    let node = query.get("node").cloned().unwrap_or_else(|| "?".to_owned());
    attempts.lock().push((node, Instant::now()));
    StatusCode::SERVICE_UNAVAILABLE
}
