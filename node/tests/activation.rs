//! A tenant caught mid-activation by a move or a release. Activation runs off the node
//! actor's loop (its SQL and epoch claim take a moment); a move that asked "is it hosted?"
//! and heard "no" while it was still starting, or a release that found nothing to stop yet,
//! left a copy running beside the tenant's new host, which then sent replies twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use salesboy_actors::error::EpochError;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::EpochSource;
use salesboy_actors::services::Settings;
use salesboy_actors::store::{NewTenant, Store};
use salesboy_node::store::SqlStore;
use salesboy_protocol::TenantId;
use salesboy_testkit::ports::{FirstEpoch, FixedProviders, RecordingWhatsApp, services};
use tokio::sync::{Notify, Semaphore};

const WAIT: Duration = Duration::from_secs(10);

/// Epochs that wait for the test to open a gate: the activation is held mid-way.
struct GatedEpochs {
    entered: Notify,
    gate: Semaphore,
    inner: FirstEpoch,
}

#[async_trait]
impl EpochSource for GatedEpochs {
    async fn epoch_for(&self, tenant: &TenantId) -> Result<u64, EpochError> {
        self.entered.notify_one();
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.epoch_for(tenant).await
    }
}

struct Harness {
    node: NodeHandle,
    epochs: Arc<GatedEpochs>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.expect("store"));
    store
        .upsert_tenant(&NewTenant::new(acme(), "acme shop".into(), 1))
        .await
        .expect("tenant");
    let epochs = Arc::new(GatedEpochs {
        entered: Notify::new(),
        gate: Semaphore::new(0),
        inner: FirstEpoch,
    });
    let shared = services(
        store,
        RecordingWhatsApp::default(),
        FixedProviders(vec![]),
        Settings::default(),
    );
    let mut services = Arc::into_inner(shared).expect("services not shared yet");
    services.epochs = Arc::clone(&epochs) as Arc<dyn EpochSource>;
    let (node, _) = NodeHandle::start(Arc::new(services)).await.expect("node");
    Harness {
        node,
        epochs,
        _dir: dir,
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").expect("tenant id")
}

impl Harness {
    /// Starts activating the tenant and returns once the activation is held at the gate.
    async fn activation_held(&self) -> tokio::task::JoinHandle<()> {
        let node = self.node.clone();
        let activation = tokio::spawn(async move {
            node.activate(&acme()).await.expect("activated");
        });
        tokio::time::timeout(WAIT, self.epochs.entered.notified())
            .await
            .expect("activation reaches the epoch claim");
        activation
    }
}

#[tokio::test]
async fn a_move_asking_mid_activation_learns_the_tenant_is_hosted() {
    let h = harness().await;
    let activation = h.activation_held().await;
    let node = h.node.clone();
    let asked = tokio::spawn(async move { node.is_hosted(&acme()).await });
    // The answer waits for the activation, so it cannot be "not hosted" yet.
    tokio::task::yield_now().await;
    assert!(
        !asked.is_finished(),
        "answered while the activation was held"
    );
    h.epochs.gate.add_permits(1);
    activation.await.expect("activation task");
    let hosted = tokio::time::timeout(WAIT, asked)
        .await
        .expect("answered")
        .expect("task")
        .expect("the node answers");
    assert!(hosted, "a tenant activated under way counts as hosted");
}

#[tokio::test]
async fn a_release_mid_activation_stops_the_tenant_once_started() {
    let h = harness().await;
    let activation = h.activation_held().await;
    let node = h.node.clone();
    let released = tokio::spawn(async move { node.release(&acme()).await });
    tokio::task::yield_now().await;
    h.epochs.gate.add_permits(1);
    activation.await.expect("activation task");
    tokio::time::timeout(WAIT, released)
        .await
        .expect("release answered")
        .expect("task");
    assert!(
        h.node.hosted_tenants().is_empty(),
        "released, yet still hosted: {:?}",
        h.node.hosted_tenants()
    );
}
