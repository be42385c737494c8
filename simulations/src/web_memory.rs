//! `salesboy-sim web-memory`: the resident memory of idle WhatsApp Web sessions (issue 12:
//! "≤ 1 MiB per idle connected session").
//!
//! N `web` tenants are created in our store, each with a realistic protocol state written
//! through its Web session backend ([`SqlStore::web_session_store`], the storage traits
//! `whatsapp-rust` reads and writes): the device as the library's `PersistenceManager`
//! creates it (with a phone number, a LID and a push name, as after pairing), ~300 Signal
//! sessions of 1–3 KiB, ~800 pre-keys, a signed pre-key, ~20 app-state sync keys, ~300
//! contacts' identity keys and ~300 LID ↔ phone mappings ([`StoredState`]). Then, in this
//! process:
//!
//! 1. its resident memory (VmRSS, VmHWM) and threads are read from `/proc/self/status`;
//! 2. N real clients are opened by the node's connector ([`WhatsAppWebConnector`], through
//!    the [`WebConnector`] trait the session actor uses) on a transport that connects and
//!    never answers ([`SilentTransport`]), and each is asked to `connect`: its state is
//!    loaded (building the client loads the device; the LID mappings are warmed up by a
//!    task of its own) and its run loop waits for WhatsApp's handshake answer;
//! 3. once every client opened a connection and the resident memory stopped growing
//!    (bounded polls), memory and threads are read again: per session = (after − before)
//!    / N. The clients are opened in two halves, with figures after each, so the report
//!    also gives the second half's marginal cost, without the fixed costs the first clients
//!    bring (pool connections, the runtime's and the allocator's growth);
//! 4. every stored item of every tenant is then loaded through the backend and kept: what a
//!    session would hold if the library kept its whole state in memory (it does not: an idle
//!    client that never logged in loads only its device and LID mappings; Signal sessions
//!    are loaded when a message needs them, into a cache of at most 2,000 entries).
//!
//! The clients are then shut down, and the report printed (human lines on stderr, one JSON
//! line on stdout). Logging in needs WhatsApp's servers: a logged-in client also holds a
//! noise session and the caches its traffic fills, which this cannot measure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use salesboy_actors::store::prelude::*;
use salesboy_actors::web::{WebClient, WebConnector, WebEvents};
use salesboy_node::adapters::WhatsAppWebConnector;
use salesboy_node::secrets::{Keyring, SecretsKey};
use salesboy_node::store::{Dialect, SqlStore, SqlStoreOptions};
use salesboy_protocol::TenantId;
use salesboy_testkit::SplitMix64;
use salesboy_testkit::web_engine::{SilentTransport, create_web_tenant};
use serde::Serialize;
use whatsapp_rust::Jid;
use whatsapp_rust::wacore::store::PersistenceManager;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, Backend, DeviceStore, LidPnMappingEntry, ProtocolStore,
    SignalStore,
};

use crate::bench::env::{Machine, git_commit, kib_field, utc_now};
use crate::bench::node::workspace_root;

/// The target: resident memory per idle connected session, bytes.
pub const TARGET_BYTES_PER_SESSION: u64 = 1 << 20;

/// The epoch every tenant of the bench is claimed at.
const EPOCH: u64 = 1;

/// Clients connected, tenants seeded or loaded at once.
const CONCURRENCY: usize = 16;

/// How long every client may take to open its first connection, on top of a second per
/// ten clients.
const OPEN_PATIENCE: Duration = Duration::from_secs(60);

/// How long the resident memory may take to stop growing once every client connected.
const SETTLE_PATIENCE: Duration = Duration::from_secs(20);

/// How often the bounded polls look.
const POLL: Duration = Duration::from_millis(250);

/// Size of a pre-key record as the library stores it (protobuf: id, 33-byte public key,
/// 32-byte private key).
const PREKEY_BYTES: usize = 72;

/// Size of a signed pre-key record (a pre-key, its 64-byte signature and a timestamp).
const SIGNED_PREKEY_BYTES: usize = 150;

/// The protocol state written for each tenant.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StoredState {
    /// Signal sessions (one per contact's device).
    pub signal_sessions: usize,
    /// A session's smallest size, bytes.
    pub session_min_bytes: usize,
    /// A session's largest size, bytes.
    pub session_max_bytes: usize,
    /// One-time pre-keys.
    pub prekeys: usize,
    /// App-state sync keys.
    pub app_state_keys: usize,
    /// Contacts' identity keys.
    pub identities: usize,
    /// LID ↔ phone number mappings.
    pub lid_mappings: usize,
}

impl Default for StoredState {
    /// A number that has talked with a few hundred customers: the figures.
    fn default() -> Self {
        Self {
            signal_sessions: 300,
            session_min_bytes: 1024,
            session_max_bytes: 3 * 1024,
            prekeys: 800,
            app_state_keys: 20,
            identities: 300,
            lid_mappings: 300,
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct WebMemoryArgs {
    /// Idle sessions (tenants, clients).
    pub sessions: usize,
    /// The database (`sqlite:…`, `postgres:…`), empty; `None`: a SQLite file in a temp dir.
    pub database: Option<String>,
    /// Each tenant's stored state.
    pub state: StoredState,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The process's memory and threads, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessMemory {
    /// Resident set size (VmRSS), bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far (VmHWM), bytes.
    pub hwm_bytes: u64,
    /// Threads of the process.
    pub threads: u64,
}

impl ProcessMemory {
    /// Reads this process's figures now.
    pub fn read() -> anyhow::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")
            .context("reading /proc/self/status (the bench needs Linux)")?;
        Self::parse(&status)
    }

    /// The figures of a `/proc/<pid>/status` text.
    pub fn parse(status: &str) -> anyhow::Result<Self> {
        let kib = |name: &str| {
            kib_field(status, name).with_context(|| format!("no {name} in /proc/self/status"))
        };
        let threads = status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .and_then(|count| count.trim().parse().ok())
            .context("no Threads in /proc/self/status")?;
        Ok(Self {
            rss_bytes: kib("VmRSS:")? * 1024,
            hwm_bytes: kib("VmHWM:")? * 1024,
            threads,
        })
    }
}

/// What the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct WebMemoryReport {
    /// When it ran, UTC.
    pub date_utc: String,
    /// The commit of the working tree it ran in (with the folders of uncommitted changes).
    pub git_commit: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// Idle sessions measured.
    pub sessions: usize,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Each tenant's stored state.
    pub state: StoredState,
    /// Bytes written per tenant through the backend (sessions, keys, identities, mappings;
    /// the device not included), before sealing.
    pub stored_bytes_per_tenant: u64,
    /// The database's size over the tenants (sealed values, indexes, the other tables),
    /// bytes, when the database tells.
    pub database_bytes_per_tenant: Option<u64>,
    /// Seeding every tenant, s.
    pub seed_secs: f64,
    /// Clients whose `connect` succeeded.
    pub clients_connected: usize,
    /// Connections the clients opened on the silent transport.
    pub connections_opened: usize,
    /// Connections open (waiting for the handshake's answer) when the idle figures were
    /// read.
    pub connections_open: usize,
    /// Opening and connecting every client until each opened a connection, s.
    pub open_secs: f64,
    /// Whether the resident memory stopped growing before the idle figures were read
    /// (within the bench's patience).
    pub settled: bool,
    /// Events the clients reported (none expected: nothing answers them).
    pub events: usize,
    /// The process before any client.
    pub before: ProcessMemory,
    /// With the first half of the clients idle (none when there is one session).
    pub first_half: Option<ProcessMemory>,
    /// With every client idle.
    pub idle: ProcessMemory,
    /// With every client idle and every tenant's stored state loaded and held.
    pub all_loaded: ProcessMemory,
    /// Bytes held by the loaded state, per tenant.
    pub loaded_bytes_per_tenant: u64,
    /// Resident memory per idle session, bytes: (idle − before) / sessions.
    pub rss_per_session_bytes: u64,
    /// Resident memory per idle session of the second half, bytes: (idle − first half) /
    /// (sessions of the second half): the fixed costs the first clients bring (pool
    /// connections, the runtime's and the allocator's growth) left out.
    pub rss_per_session_marginal_bytes: Option<u64>,
    /// Resident memory per session with its whole stored state held, bytes:
    /// (all loaded − before) / sessions.
    pub rss_per_session_all_loaded_bytes: u64,
    /// Hanging the transport up and shutting every client down (each flushes its device and
    /// disconnects), s.
    pub shutdown_secs: f64,
    /// The target, bytes per idle session.
    pub target_bytes: u64,
}

impl WebMemoryReport {
    /// Whether an idle session costs no more than the target.
    pub fn within_target(&self) -> bool {
        self.rss_per_session_bytes <= self.target_bytes
    }

    /// The report for people, one line each.
    pub fn human_lines(&self) -> Vec<String> {
        let kib = |bytes: u64| bytes as f64 / 1024.0;
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let mut lines = vec![
            format!(
                "web-memory: {} idle sessions on {}, {} connected, {} connections opened ({} open)",
                self.sessions,
                self.database,
                self.clients_connected,
                self.connections_opened,
                self.connections_open
            ),
            format!(
                "stored per tenant: {:.1} KiB written through the backend{}",
                kib(self.stored_bytes_per_tenant),
                self.database_bytes_per_tenant
                    .map(|bytes| format!(", {:.1} KiB of database", kib(bytes)))
                    .unwrap_or_default()
            ),
            format!(
                "before clients: RSS {:.1} MiB (peak {:.1}), {} threads",
                mib(self.before.rss_bytes),
                mib(self.before.hwm_bytes),
                self.before.threads
            ),
            format!(
                "half the clients: {}",
                self.first_half
                    .map(|half| format!(
                        "RSS {:.1} MiB, {} threads",
                        mib(half.rss_bytes),
                        half.threads
                    ))
                    .unwrap_or_else(|| "-".to_owned())
            ),
            format!(
                "idle clients:   RSS {:.1} MiB (peak {:.1}), {} threads{}",
                mib(self.idle.rss_bytes),
                mib(self.idle.hwm_bytes),
                self.idle.threads,
                if self.settled { "" } else { " (still growing)" }
            ),
            format!(
                "all loaded:     RSS {:.1} MiB (peak {:.1}), {} threads; {:.1} KiB held per tenant",
                mib(self.all_loaded.rss_bytes),
                mib(self.all_loaded.hwm_bytes),
                self.all_loaded.threads,
                kib(self.loaded_bytes_per_tenant)
            ),
            format!(
                "per idle session: {:.1} KiB (target ≤ {:.0} KiB: {}); with its whole state held: {:.1} KiB",
                kib(self.rss_per_session_bytes),
                kib(self.target_bytes),
                if self.within_target() {
                    "met"
                } else {
                    "MISSED"
                },
                kib(self.rss_per_session_all_loaded_bytes)
            ),
        ];
        if let Some(marginal) = self.rss_per_session_marginal_bytes {
            lines.push(format!(
                "per idle session of the second half (marginal): {:.1} KiB",
                kib(marginal)
            ));
        }
        lines.push(format!(
            "seeding {:.1} s, opening {:.1} s, shutting down {:.1} s",
            self.seed_secs, self.open_secs, self.shutdown_secs
        ));
        lines
    }
}

/// Runs the bench: seeds the tenants, opens the clients, measures. See the module's docs.
pub async fn run(args: &WebMemoryArgs) -> anyhow::Result<WebMemoryReport> {
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let (url, _sqlite_dir) = match &args.database {
        Some(url) => (url.clone(), None),
        None => {
            let dir = tempfile::tempdir().context("creating a temp dir for SQLite")?;
            let url = format!("sqlite://{}", dir.path().join("salesboy.db").display());
            (url, Some(dir))
        }
    };
    let store = SqlStore::connect_with(&url, &SqlStoreOptions::default())
        .await
        .context("opening the store")?
        .with_secrets(Keyring::new(SecretsKey::generate(), []));
    let outcome = measure(&store, &url, args).await;
    store.close().await;
    outcome
}

/// The bench on an open store.
async fn measure(
    store: &SqlStore,
    url: &str,
    args: &WebMemoryArgs,
) -> anyhow::Result<WebMemoryReport> {
    let tenants = (0..args.sessions)
        .map(|index| TenantId::new(format!("webmem-{index:05}")))
        .collect::<Result<Vec<_>, _>>()
        .context("tenant ids")?;
    if store.current_epoch(&tenants[0]).await?.is_some() {
        bail!("the database already holds this bench's tenants: give it an empty one");
    }

    let started = Instant::now();
    let stored_bytes_per_tenant = seed(store, &tenants, &args.state, args.progress).await?;
    let seed_secs = started.elapsed().as_secs_f64();
    let database_bytes_per_tenant = database_bytes(store, url)
        .await
        .map(|bytes| bytes / args.sessions as u64);
    eprintln!(
        "web-memory: {} tenants seeded in {seed_secs:.1} s",
        tenants.len()
    );

    let before = ProcessMemory::read()?;
    let transport = SilentTransport::new();
    let events = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    let measured = measure_clients(store, &tenants, args, &transport, &events, &mut clients).await;
    let started = Instant::now();
    shut_down(&clients).await;
    let shutdown_secs = started.elapsed().as_secs_f64();
    let figures = measured?;

    let sessions = args.sessions as u64;
    let per_session =
        |after: &ProcessMemory| after.rss_bytes.saturating_sub(before.rss_bytes) / sessions;
    let second_half = sessions
        - figures
            .first_half
            .as_ref()
            .map_or(0, |(count, _)| *count as u64);
    let rss_per_session_marginal_bytes = figures.first_half.as_ref().map(|(_, half)| {
        figures.idle.rss_bytes.saturating_sub(half.rss_bytes) / second_half.max(1)
    });
    Ok(WebMemoryReport {
        date_utc: utc_now(),
        git_commit: git_commit(&workspace_root()),
        machine: Machine::detect(),
        sessions: args.sessions,
        database: match store.dialect() {
            Dialect::Sqlite => "sqlite".to_owned(),
            Dialect::Postgres => "postgres".to_owned(),
        },
        state: args.state,
        stored_bytes_per_tenant,
        database_bytes_per_tenant,
        seed_secs,
        clients_connected: clients.len(),
        connections_opened: figures.connections_opened,
        connections_open: figures.connections_open,
        open_secs: figures.open_secs,
        settled: figures.settled,
        events: events.load(Ordering::SeqCst),
        before,
        first_half: figures.first_half.map(|(_, half)| half),
        idle: figures.idle,
        all_loaded: figures.all_loaded,
        loaded_bytes_per_tenant: figures.loaded_bytes_per_tenant,
        rss_per_session_bytes: per_session(&figures.idle),
        rss_per_session_marginal_bytes,
        rss_per_session_all_loaded_bytes: per_session(&figures.all_loaded),
        shutdown_secs,
        target_bytes: TARGET_BYTES_PER_SESSION,
    })
}

/// What [`measure_clients`] read.
struct ClientFigures {
    /// Clients of the first half, and the figures with them idle.
    first_half: Option<(usize, ProcessMemory)>,
    idle: ProcessMemory,
    settled: bool,
    open_secs: f64,
    connections_open: usize,
    connections_opened: usize,
    all_loaded: ProcessMemory,
    loaded_bytes_per_tenant: u64,
}

/// Opens the clients (half of them, figures, then the rest), reads the idle figures, then
/// loads and holds every tenant's state and reads them again. The clients opened are left
/// in `clients`, for the caller to shut down whatever happened.
async fn measure_clients(
    store: &SqlStore,
    tenants: &[TenantId],
    args: &WebMemoryArgs,
    transport: &SilentTransport,
    events: &Arc<AtomicUsize>,
    clients: &mut Vec<Arc<dyn WebClient>>,
) -> anyhow::Result<ClientFigures> {
    let connector = WhatsAppWebConnector::with_transport(store.clone(), transport.factory());
    let started = Instant::now();
    let half = tenants.len() / 2;
    let mut first_half = None;
    let mut idle = None;
    for part in [&tenants[..half], &tenants[half..]] {
        if part.is_empty() {
            continue;
        }
        open_clients(&connector, part, events, clients).await?;
        eprintln!(
            "web-memory: {} clients connected, waiting for their connections",
            clients.len()
        );
        let patience = OPEN_PATIENCE + Duration::from_millis(100 * clients.len() as u64);
        let opened = poll_until(patience, || transport.connections() >= clients.len()).await;
        if !opened {
            bail!(
                "only {} of {} clients opened a connection within {patience:?}",
                transport.connections(),
                clients.len()
            );
        }
        let figures = settled_memory().await?;
        if clients.len() < tenants.len() {
            first_half = Some((clients.len(), figures.0));
        } else {
            idle = Some(figures);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let (idle, settled) = idle.context("no clients opened")?;
    let connections_open = transport.open();
    eprintln!("web-memory: idle figures read; loading every tenant's stored state");

    let held = load_everything(store, tenants, &args.state).await?;
    let all_loaded = ProcessMemory::read()?;
    let loaded_bytes_per_tenant =
        held.iter().map(HeldState::bytes).sum::<u64>() / tenants.len() as u64;
    drop(held);
    Ok(ClientFigures {
        first_half,
        idle,
        settled,
        open_secs,
        connections_open,
        connections_opened: transport.connections(),
        all_loaded,
        loaded_bytes_per_tenant,
    })
}

// ---------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------

/// Creates and seeds every tenant; returns the bytes written per tenant (the mean).
async fn seed(
    store: &SqlStore,
    tenants: &[TenantId],
    state: &StoredState,
    progress: bool,
) -> anyhow::Result<u64> {
    let bar = if progress {
        ProgressBar::new(tenants.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("seeding {bar:40} {pos}/{len} tenants, {elapsed}, eta {eta}")
            .context("progress template")?,
    );
    let mut written = futures::stream::iter(tenants.iter().enumerate())
        .map(|(index, tenant)| seed_tenant(store, tenant, index as u64, state))
        .buffer_unordered(CONCURRENCY);
    let mut bytes = 0;
    while let Some(tenant_bytes) = written.next().await {
        bytes += tenant_bytes?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(bytes / tenants.len().max(1) as u64)
}

/// A contact's phone number (user part), the `index`-th of tenant `tenant`.
fn contact_phone(tenant: u64, index: usize) -> String {
    format!("55119{:04}{:04}", tenant % 10_000, index)
}

/// A contact's LID (user part).
fn contact_lid(tenant: u64, index: usize) -> String {
    format!("1{:07}{:07}", tenant, index)
}

/// `len` seeded random bytes.
fn random_bytes(rng: &mut SplitMix64, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}

/// 32 seeded random bytes.
fn random_key(rng: &mut SplitMix64) -> [u8; 32] {
    let mut key = [0; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    key
}

/// Creates tenant `tenant` (the `index`-th) on the `web` engine at [`EPOCH`] and writes its
/// protocol state through its backend, as the library would; returns the bytes written.
async fn seed_tenant(
    store: &SqlStore,
    tenant: &TenantId,
    index: u64,
    state: &StoredState,
) -> anyhow::Result<u64> {
    create_web_tenant(store, tenant, EPOCH)
        .await
        .with_context(|| format!("creating tenant {tenant}"))?;
    let backend: Arc<dyn Backend> = Arc::new(store.web_session_store(tenant.clone(), EPOCH));
    let mut rng = SplitMix64::new(index.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let mut bytes = 0_u64;

    // The device, as the library makes it; then paired: its number, LID and name.
    let manager = PersistenceManager::new(Arc::clone(&backend))
        .await
        .context("creating the device")?;
    let mut device = manager.get_device_snapshot().await;
    device.pn = Some(parse_jid(&format!("5511{:09}@s.whatsapp.net", index))?);
    device.lid = Some(parse_jid(&format!("9{:014}@lid", index))?);
    device.push_name = format!("Shop {index}");
    backend.save(&device).await.context("saving the device")?;

    let span = state
        .session_max_bytes
        .saturating_sub(state.session_min_bytes) as u64
        + 1;
    let sessions: Vec<(Arc<str>, Bytes)> = (0..state.signal_sessions)
        .map(|contact| {
            let len = state.session_min_bytes + (rng.next_u64() % span) as usize;
            let address: Arc<str> = format!("{}@lid.0", contact_lid(index, contact)).into();
            (address, random_bytes(&mut rng, len))
        })
        .collect();
    bytes += sessions
        .iter()
        .map(|(address, session)| (address.len() + session.len()) as u64)
        .sum::<u64>();
    backend
        .put_sessions_batch(&sessions)
        .await
        .context("storing sessions")?;
    drop(sessions);

    let prekeys: Vec<(u32, Bytes)> = (1..=state.prekeys as u32)
        .map(|id| (id, random_bytes(&mut rng, PREKEY_BYTES)))
        .collect();
    bytes += (state.prekeys * (PREKEY_BYTES + 4)) as u64;
    backend
        .store_prekeys_batch(&prekeys, true)
        .await
        .context("storing pre-keys")?;
    drop(prekeys);
    let signed = random_bytes(&mut rng, SIGNED_PREKEY_BYTES);
    bytes += signed.len() as u64;
    backend
        .store_signed_prekey(1, &signed)
        .await
        .context("storing the signed pre-key")?;

    for key in 0..state.app_state_keys {
        let key_id = app_state_key_id(key);
        let sync_key = AppStateSyncKey {
            key_data: random_bytes(&mut rng, 32).to_vec(),
            fingerprint: random_bytes(&mut rng, 20).to_vec(),
            timestamp: 1_700_000_000_000 + key as i64,
        };
        bytes += (key_id.len() + 32 + 20 + 8) as u64;
        backend
            .set_sync_key(&key_id, sync_key)
            .await
            .context("storing an app-state sync key")?;
    }

    let identities: Vec<(Arc<str>, [u8; 32])> = (0..state.identities)
        .map(|contact| {
            let address: Arc<str> = format!("{}@lid.0", contact_lid(index, contact)).into();
            (address, random_key(&mut rng))
        })
        .collect();
    bytes += identities
        .iter()
        .map(|(address, _)| (address.len() + 32) as u64)
        .sum::<u64>();
    backend
        .put_identities_batch(&identities)
        .await
        .context("storing identities")?;

    let mappings: Vec<LidPnMappingEntry> = (0..state.lid_mappings)
        .map(|contact| LidPnMappingEntry {
            lid: contact_lid(index, contact),
            phone_number: contact_phone(index, contact),
            created_at: 1_700_000_000 + contact as i64,
            updated_at: 1_700_000_000 + contact as i64,
            learning_source: "usync".to_owned(),
        })
        .collect();
    bytes += mappings
        .iter()
        .map(|entry| {
            (entry.lid.len() + entry.phone_number.len() + entry.learning_source.len() + 16) as u64
        })
        .sum::<u64>();
    backend
        .put_lid_mappings(&mappings)
        .await
        .context("storing LID mappings")?;
    Ok(bytes)
}

/// The id of the `n`-th app-state sync key (the library's are 6 bytes).
fn app_state_key_id(n: usize) -> Vec<u8> {
    let mut id = vec![0, 0, 0, 0];
    id.extend_from_slice(&(n as u16).to_be_bytes());
    id
}

fn parse_jid(text: &str) -> anyhow::Result<Jid> {
    text.parse()
        .map_err(|error| anyhow::anyhow!("{text} is no jid: {error:?}"))
}

/// The database's size, bytes, when it tells.
async fn database_bytes(store: &SqlStore, url: &str) -> Option<u64> {
    let query = match store.dialect() {
        Dialect::Sqlite => {
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        }
        Dialect::Postgres => "SELECT pg_database_size(current_database())",
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.ok()?;
    let size: Option<i64> = sqlx::query_scalar(query).fetch_one(&pool).await.ok();
    pool.close().await;
    size.and_then(|size| u64::try_from(size).ok())
}

// ---------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------

/// Opens a client per tenant through the node's connector and connects each, adding them
/// to `clients`; fails unless all connect.
async fn open_clients(
    connector: &WhatsAppWebConnector,
    tenants: &[TenantId],
    events: &Arc<AtomicUsize>,
    clients: &mut Vec<Arc<dyn WebClient>>,
) -> anyhow::Result<()> {
    let opened: Vec<Arc<dyn WebClient>> = tenants
        .iter()
        .map(|tenant| {
            let events = Arc::clone(events);
            connector.open(
                tenant,
                EPOCH,
                WebEvents::new(move |_| {
                    events.fetch_add(1, Ordering::SeqCst);
                }),
            )
        })
        .collect();
    clients.extend(opened.iter().cloned());
    let outcomes: Vec<_> = futures::stream::iter(opened.iter())
        .map(|client| client.connect())
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let failures: Vec<String> = outcomes
        .into_iter()
        .filter_map(|outcome| outcome.err().map(|error| error.to_string()))
        .collect();
    if let Some(first) = failures.first() {
        bail!(
            "{} of {} clients failed to connect, the first: {first}",
            failures.len(),
            opened.len()
        );
    }
    Ok(())
}

/// Shuts every client down (each flushes its device and hangs up its connection), all at
/// once.
async fn shut_down(clients: &[Arc<dyn WebClient>]) {
    futures::future::join_all(clients.iter().map(|client| client.shutdown())).await;
}

/// Polls `done` until it holds or `patience` runs out; whether it held.
async fn poll_until(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The process's figures once its resident memory stopped growing (two readings a second
/// apart within 0.5 % of each other), or after [`SETTLE_PATIENCE`]; whether it settled.
async fn settled_memory() -> anyhow::Result<(ProcessMemory, bool)> {
    let deadline = tokio::time::Instant::now() + SETTLE_PATIENCE;
    let mut last = ProcessMemory::read()?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = ProcessMemory::read()?;
        let grown = now.rss_bytes.saturating_sub(last.rss_bytes);
        if grown * 200 <= last.rss_bytes {
            return Ok((now, true));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((now, false));
        }
        last = now;
    }
}

// ---------------------------------------------------------------------------------------
// Everything loaded
// ---------------------------------------------------------------------------------------

/// A tenant's stored state, loaded through its backend and held.
struct HeldState {
    device: Option<whatsapp_rust::wacore::store::Device>,
    sessions: Vec<Bytes>,
    prekeys: Vec<(u32, Bytes)>,
    signed_prekeys: Vec<(u32, Vec<u8>)>,
    sync_keys: Vec<AppStateSyncKey>,
    identities: Vec<[u8; 32]>,
    lid_mappings: Vec<LidPnMappingEntry>,
}

impl HeldState {
    /// The bytes of the values held (the containers' own overhead not counted).
    fn bytes(&self) -> u64 {
        let sessions: usize = self.sessions.iter().map(Bytes::len).sum();
        let prekeys: usize = self
            .prekeys
            .iter()
            .map(|(_, record)| record.len() + 4)
            .sum();
        let signed: usize = self
            .signed_prekeys
            .iter()
            .map(|(_, record)| record.len() + 4)
            .sum();
        let keys: usize = self
            .sync_keys
            .iter()
            .map(|key| key.key_data.len() + key.fingerprint.len() + 8)
            .sum();
        let mappings: usize = self
            .lid_mappings
            .iter()
            .map(|entry| {
                entry.lid.len() + entry.phone_number.len() + entry.learning_source.len() + 16
            })
            .sum();
        let device = self
            .device
            .as_ref()
            .map_or(0, |_| size_of::<whatsapp_rust::wacore::store::Device>());
        (sessions + prekeys + signed + keys + self.identities.len() * 32 + mappings + device) as u64
    }
}

/// Loads every tenant's stored state through its backend, a few tenants at a time.
async fn load_everything(
    store: &SqlStore,
    tenants: &[TenantId],
    state: &StoredState,
) -> anyhow::Result<Vec<HeldState>> {
    futures::stream::iter(tenants.iter().enumerate())
        .map(|(index, tenant)| load_tenant(store, tenant, index as u64, state))
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Loads one tenant's stored state (the `index`-th) through its backend.
async fn load_tenant(
    store: &SqlStore,
    tenant: &TenantId,
    index: u64,
    state: &StoredState,
) -> anyhow::Result<HeldState> {
    let backend = store.web_session_store(tenant.clone(), EPOCH);
    let device = backend.load().await.context("loading the device")?;
    let mut sessions = Vec::with_capacity(state.signal_sessions);
    let mut identities = Vec::with_capacity(state.identities);
    for contact in 0..state.signal_sessions.max(state.identities) {
        let address = format!("{}@lid.0", contact_lid(index, contact));
        if contact < state.signal_sessions {
            let session = backend
                .get_session(&address)
                .await
                .context("loading a session")?
                .with_context(|| format!("session {address} missing"))?;
            sessions.push(session);
        }
        if contact < state.identities {
            let identity = backend
                .load_identity(&address)
                .await
                .context("loading an identity")?
                .with_context(|| format!("identity {address} missing"))?;
            identities.push(identity);
        }
    }
    let ids: Vec<u32> = (1..=state.prekeys as u32).collect();
    let prekeys = backend
        .load_prekeys_batch(&ids)
        .await
        .context("loading pre-keys")?;
    let signed_prekeys = backend
        .load_all_signed_prekeys()
        .await
        .context("loading signed pre-keys")?;
    let mut sync_keys = Vec::with_capacity(state.app_state_keys);
    for key in 0..state.app_state_keys {
        let sync_key = backend
            .get_sync_key(&app_state_key_id(key))
            .await
            .context("loading an app-state sync key")?
            .context("an app-state sync key missing")?;
        sync_keys.push(sync_key);
    }
    let lid_mappings = backend
        .get_all_lid_mappings()
        .await
        .context("loading LID mappings")?;
    if prekeys.len() != state.prekeys || lid_mappings.len() != state.lid_mappings {
        bail!(
            "tenant {tenant}: {} pre-keys and {} LID mappings loaded, {} and {} stored",
            prekeys.len(),
            lid_mappings.len(),
            state.prekeys,
            state.lid_mappings
        );
    }
    Ok(HeldState {
        device,
        sessions,
        prekeys,
        signed_prekeys,
        sync_keys,
        identities,
        lid_mappings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_status_is_parsed() {
        let status = "Name:\tsalesboy-sim\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let memory = ProcessMemory::parse(status).unwrap();
        assert_eq!(memory.rss_bytes, 10 * 1024 * 1024);
        assert_eq!(memory.hwm_bytes, 20 * 1024 * 1024);
        assert_eq!(memory.threads, 7);
    }

    #[test]
    fn contacts_have_distinct_addresses() {
        assert_ne!(contact_lid(1, 23), contact_lid(12, 3));
        assert_eq!(contact_lid(3, 299).len(), 15);
        assert_eq!(app_state_key_id(3), vec![0, 0, 0, 0, 0, 3]);
    }
}
