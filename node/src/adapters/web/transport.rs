//! The fence check before each connection attempt: the library reconnects on its own, so
//! its transport factory is where a client of an old epoch is stopped before it connects
//! again as a device another node now hosts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tracing::warn;
use whatsapp_rust::async_channel::Receiver;
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};

use super::Shared;

/// A transport factory that opens a connection only while the client's epoch is the
/// tenant's current one; past that it fences the client (no more reconnections) and fails.
pub(super) struct FencedTransport {
    shared: Arc<Shared>,
    inner: Arc<dyn TransportFactory>,
}

impl FencedTransport {
    /// Connections through `inner`, for the client sharing `shared`.
    pub(super) fn new(shared: Arc<Shared>, inner: Arc<dyn TransportFactory>) -> Self {
        Self { shared, inner }
    }
}

#[async_trait]
impl TransportFactory for FencedTransport {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, Receiver<TransportEvent>), anyhow::Error> {
        let shared = &self.shared;
        if shared.is_fenced() {
            anyhow::bail!("fenced: another node hosts the tenant");
        }
        match shared.check_fence().await {
            Ok(true) => {}
            Ok(false) => anyhow::bail!("fenced: another node hosts the tenant"),
            // The database is unreachable: connecting would not be safe to write either; the
            // library retries after its backoff.
            Err(error) => {
                warn!(tenant = %shared.tenant, %error, "fence check before connecting failed");
                anyhow::bail!("fence check failed: {error}");
            }
        }
        let (connection, events) = self.inner.create_transport().await?;
        *shared.connection.lock() = Some(Arc::downgrade(&connection));
        // Opened while the client shut down (after it hung up the last one): hang it up too.
        if shared.stopped.load(Ordering::SeqCst) {
            connection.disconnect().await;
            anyhow::bail!("the client is shutting down");
        }
        Ok((connection, events))
    }
}
