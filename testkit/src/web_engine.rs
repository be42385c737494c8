//! The real WhatsApp Web engine (`whatsapp-rust` on our store) with no WhatsApp: a `web`
//! tenant at a claimed epoch ([`create_web_tenant`]), a fresh database holding one
//! ([`WebFixture`]), and transport factories with no network: [`FlakyTransport`] (every
//! connection fails or closes) and [`SilentTransport`] (every connection opens and never
//! answers: the client waits for WhatsApp's handshake, idle).
//!
//! Used by the adapter's and the storage backend's tests (`node/tests/web_adapter.rs`,
//! `node/tests/web_session_storage.rs`) and by `salesboy-sim web-memory`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{NewTenant, StoreError};
use salesboy_node::secrets::{Keyring, SecretsKey};
use salesboy_node::store::{SqlStore, WebSessionStore};
use salesboy_protocol::{Engine, TenantId};
use sqlx::Row;
use whatsapp_rust::async_channel;
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};
use whatsapp_rust::wacore::net::DisconnectReason;

use crate::databases::{Backend, FreshDatabase};

/// When the test kit's web tenants were created (unix ms), fixed so runs compare.
const CREATED_MS: i64 = 1_700_000_000_000;

/// `tenant` (named after its id) on the `web` engine, with the node's defaults otherwise.
pub fn web_tenant(tenant: &TenantId) -> NewTenant {
    NewTenant {
        id: tenant.clone(),
        name: tenant.as_str().to_owned(),
        system_prompt: None,
        llm_config: None,
        llm_monthly_spend_cap_micros: None,
        embedding_model: None,
        engine: Engine::Web,
        web_hygiene: None,
        read_receipts: None,
        created_ms: CREATED_MS,
    }
}

/// Creates `tenant` ([`web_tenant`]) and claims `epoch` for it, as the node does before it
/// opens the tenant's session: its Web session backend at `epoch` can write from then on.
pub async fn create_web_tenant(
    store: &SqlStore,
    tenant: &TenantId,
    epoch: u64,
) -> Result<(), StoreError> {
    store.upsert_tenant(&web_tenant(tenant)).await?;
    store.claim_epoch(tenant, epoch).await?;
    Ok(())
}

/// A fresh database (removed with the fixture) whose store seals secrets under
/// [`WebFixture::keys`], with the `web` tenant `acme` at epoch 1.
pub struct WebFixture {
    /// The store, as the node hosting the tenant has it.
    pub store: SqlStore,
    /// The store's secrets keys, for another node on the same database.
    pub keys: Keyring,
    /// The tenant, `acme`.
    pub tenant: TenantId,
    database: FreshDatabase,
}

impl WebFixture {
    /// Creates the database, the store and the tenant; panics when the database cannot be
    /// reached (Postgres tests are never skipped).
    pub async fn new(backend: Backend) -> Self {
        let database = FreshDatabase::create(backend).await;
        let keys = Keyring::new(SecretsKey::generate(), []);
        let store = open_sealed(database.url(), keys.clone()).await;
        let tenant = TenantId::new("acme").expect("a valid tenant id");
        create_web_tenant(&store, &tenant, 1)
            .await
            .unwrap_or_else(|error| panic!("cannot create the web tenant: {error}"));
        Self {
            store,
            keys,
            tenant,
            database,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        self.database.url()
    }

    /// The tenant's Web session backend at `epoch` on this fixture's store.
    pub fn backend(&self, epoch: u64) -> WebSessionStore {
        self.store.web_session_store(self.tenant.clone(), epoch)
    }

    /// Another node: its own store (pools) on the same database, with the same keys.
    pub async fn node(&self) -> SqlStore {
        open_sealed(self.url(), self.keys.clone()).await
    }

    /// The database through plain SQL.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(self.url())
            .await
            .expect("plain sql pool")
    }

    /// When the tenant's device row was last written, if it has one.
    pub async fn device_updated_ms(&self) -> Option<i64> {
        let pool = self.raw().await;
        let row = sqlx::query("SELECT updated_ms FROM web_devices WHERE tenant_id = $1")
            .bind(self.tenant.as_str())
            .fetch_optional(&pool)
            .await
            .expect("web_devices readable");
        pool.close().await;
        row.map(|row| row.get::<i64, _>(0))
    }

    /// Closes the store; the database is removed.
    pub async fn close(self) {
        self.store.close().await;
    }
}

/// A store on `url` (migrated) sealing secrets under `keys`; panics when it cannot open.
pub async fn open_sealed(url: &str, keys: Keyring) -> SqlStore {
    SqlStore::connect(url)
        .await
        .unwrap_or_else(|error| panic!("cannot open the store: {error}"))
        .with_secrets(keys)
}

/// A transport factory with no network: odd attempts fail to connect, even ones connect and
/// close right after the client's hello. Clones share their counts.
#[derive(Clone, Default)]
pub struct FlakyTransport {
    attempts: Arc<AtomicUsize>,
    hellos: Arc<AtomicUsize>,
}

impl FlakyTransport {
    /// A factory that has seen no attempt yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// This factory, as the connector takes it.
    pub fn factory(&self) -> Arc<dyn TransportFactory> {
        Arc::new(self.clone())
    }

    /// Connection attempts so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Writes the client made on a connection (its handshake hello).
    pub fn hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TransportFactory for FlakyTransport {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if attempt.is_multiple_of(2) {
            anyhow::bail!("fake transport: no network");
        }
        let (events, receiver) = async_channel::bounded(4);
        events.try_send(TransportEvent::Connected)?;
        let transport = Closing {
            hellos: Arc::clone(&self.hellos),
            events,
        };
        Ok((Arc::new(transport), receiver))
    }
}

/// A connection that closes once the client wrote to it.
struct Closing {
    hellos: Arc<AtomicUsize>,
    events: async_channel::Sender<TransportEvent>,
}

#[async_trait]
impl Transport for Closing {
    async fn send(&self, _data: bytes::Bytes) -> Result<(), anyhow::Error> {
        self.hellos.fetch_add(1, Ordering::SeqCst);
        let _ = self
            .events
            .try_send(TransportEvent::Disconnected(DisconnectReason::StreamEnded));
        self.events.close();
        Ok(())
    }

    async fn disconnect(&self) {
        self.events.close();
    }
}

/// A transport factory with no network whose connections open and then say nothing: the
/// client sends its hello and waits for WhatsApp's answer, which never comes (the library
/// gives up after its handshake timeout, 20 s, and tries again after its backoff), until the
/// client disconnects it. Clones share their counts.
#[derive(Clone, Default)]
pub struct SilentTransport {
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    hellos: Arc<AtomicUsize>,
}

impl SilentTransport {
    /// A factory that has opened no connection yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// This factory, as the connector takes it.
    pub fn factory(&self) -> Arc<dyn TransportFactory> {
        Arc::new(self.clone())
    }

    /// Connections opened so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections open now: opened, and neither disconnected nor dropped by the client.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Writes the clients made (their handshake hellos).
    pub fn hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TransportFactory for SilentTransport {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let (events, receiver) = async_channel::bounded(1);
        events.try_send(TransportEvent::Connected)?;
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        let transport = Silent {
            open: Arc::clone(&self.open),
            hellos: Arc::clone(&self.hellos),
            closed: AtomicBool::new(false),
            events,
        };
        Ok((Arc::new(transport), receiver))
    }
}

/// A connection that takes every write and never answers; it keeps its events channel open
/// (the client sees no end of stream) until it is disconnected.
struct Silent {
    open: Arc<AtomicUsize>,
    hellos: Arc<AtomicUsize>,
    closed: AtomicBool,
    events: async_channel::Sender<TransportEvent>,
}

impl Silent {
    /// Counts this connection as closed, once.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.open.fetch_sub(1, Ordering::SeqCst);
            self.events.close();
        }
    }
}

#[async_trait]
impl Transport for Silent {
    async fn send(&self, _data: bytes::Bytes) -> Result<(), anyhow::Error> {
        self.hellos.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn disconnect(&self) {
        self.close();
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.close();
    }
}
