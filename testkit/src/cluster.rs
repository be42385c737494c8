//! [`ClusterSandbox`]: real `salesboy serve` processes for multi-node tests, with their own
//! NATS server, database and fakes, cleaned up on drop.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};
use salesboy_protocol::{PhoneNumberId, TenantId};
use sqlx::{AnyConnection, Connection, Executor, Row};
use tokio::process::{Child, Command};

use crate::{
    FakeLlm, FakeLlmOptions, FakeWhatsApp, FakeWhatsAppOptions, NatsServer, PostgresDatabase,
    TcpProxy,
};
use salesboy_node::store::{SqlStore, SqlStoreOptions};

/// The Meta app secret every sandbox node checks webhook signatures with.
pub const SANDBOX_APP_SECRET: &str = "sandbox-app-secret";

/// The admin API token of every sandbox node.
pub const SANDBOX_ADMIN_TOKEN: &str = "sandbox-admin-token";

/// How long [`ClusterSandboxBuilder::start`] and [`ClusterSandbox::add_node`] wait for a
/// node to answer `/health`.
pub const NODE_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest one `/health` request may take.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a webhook post may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// How long a SIGKILLed node may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many tenants one seeding transaction writes. Every statement of a batch stays well
/// under 16 KiB: sqlx 0.9 no longer sets `TCP_NODELAY`, and on Postgres a bigger message
/// waits ~40 ms for a delayed ACK (transact-rs/sqlx#4335), which made 500-tenant batches
/// ten times slower than these.
const SEED_BATCH: usize = 200;

/// At most this much of a log file's end is read for a tail.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// How many log lines of each node a sandbox dropped during a panic prints.
const PANIC_LOG_LINES: usize = 40;

/// Variables the sandbox sets itself; the builder's extra environment cannot replace them.
const MANAGED_ENV: &[&str] = &[
    "SALESBOY_NODE_ID",
    "SALESBOY_HTTP_ADDR",
    "SALESBOY_DATA_DIR",
    "SALESBOY_DATABASE_URL",
    "SALESBOY_NATS_URL",
    "SALESBOY_WHATSAPP_APP_SECRET",
    "SALESBOY_WHATSAPP_API_BASE",
    "SALESBOY_ADMIN_TOKEN",
    "PATH",
];

/// Which database a test node uses: the one a sandbox's nodes share, or a [`Gateway`]'s.
///
/// [`Gateway`]: crate::Gateway
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh database on the test PostgreSQL server ([`PostgresDatabase`]).
    Postgres,
    /// A SQLite file in the test's directory: one node only.
    Sqlite,
}

/// A snapshot of one node of a [`ClusterSandbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHandleInfo {
    /// The node's index in the sandbox (`0..`).
    pub index: usize,
    /// Its node id, `node-<index>`.
    pub id: String,
    /// Its HTTP base URL, `http://127.0.0.1:<port>`.
    pub http_base: String,
    /// The process id while it runs.
    pub pid: Option<u32>,
    /// Whether its process runs.
    pub alive: bool,
    /// How its last process ended, once it has and was reaped.
    pub exit: Option<ExitStatus>,
}

/// Builds a [`ClusterSandbox`]: `ClusterSandbox::builder().nodes(3).binary(…).start()`.
#[derive(Debug, Clone)]
pub struct ClusterSandboxBuilder {
    nodes: usize,
    binary: Option<PathBuf>,
    database: Db,
    env: Vec<(String, String)>,
}

impl ClusterSandboxBuilder {
    /// How many nodes to start (default 1; 0 is allowed, see [`ClusterSandbox::add_node`]).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// The `salesboy` binary to run; tests pass `env!("CARGO_BIN_EXE_salesboy")`. Required.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The shared database (default [`Db::Postgres`]).
    pub fn database(mut self, database: Db) -> Self {
        self.database = database;
        self
    }

    /// An extra environment variable for every node (e.g. `SALESBOY_DEBOUNCE_MS`), set after
    /// the sandbox's own; `RUST_LOG` may be replaced, the other variables the sandbox sets
    /// and `SALESBOY_TEST_*` may not ([`Self::start`] refuses them).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the services, then the nodes, and waits until every node answers `/health`
    /// (at most [`NODE_STARTUP_TIMEOUT`]). The error says what failed; for a node, it carries
    /// the tail of its log.
    pub async fn start(self) -> Result<ClusterSandbox, String> {
        let binary = self.binary.ok_or_else(|| {
            "no salesboy binary: call .binary(env!(\"CARGO_BIN_EXE_salesboy\"))".to_owned()
        })?;
        if self.database == Db::Sqlite && self.nodes > 1 {
            return Err(format!(
                "a sqlite sandbox has one node, {} were asked for: use Db::Postgres",
                self.nodes
            ));
        }
        for (key, _) in &self.env {
            if key.starts_with("SALESBOY_TEST_") {
                return Err(format!(
                    "{key} belongs to the test suite and is never passed to a node"
                ));
            }
            if MANAGED_ENV.contains(&key.as_str()) {
                return Err(format!("{key} is set by the sandbox itself"));
            }
        }

        salesboy_node::run::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(HEALTH_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the http client: {e}"))?;
        let root = tempfile::Builder::new()
            .prefix("salesboy-sandbox-")
            .tempdir()
            .map_err(|e| format!("cannot create the sandbox directory: {e}"))?;
        let nats = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .map_err(|e| format!("the nats-server start task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let (postgres, database_url) = match self.database {
            Db::Postgres => {
                let database = PostgresDatabase::create().await?;
                let url = database.url().to_owned();
                (Some(database), url)
            }
            Db::Sqlite => {
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    root.path().join("salesboy.db").display()
                );
                (None, url)
            }
        };
        let whatsapp = FakeWhatsApp::try_start(FakeWhatsAppOptions::default())
            .await
            .map_err(|e| format!("cannot start the fake whatsapp api: {e}"))?;
        let llm = FakeLlm::try_start(FakeLlmOptions::default())
            .await
            .map_err(|e| format!("cannot start the fake llm: {e}"))?;
        // Connecting migrates the schema before any node starts, so nodes never race to.
        let store = SqlStore::connect_with(
            &database_url,
            &SqlStoreOptions {
                max_connections: 4,
                ..SqlStoreOptions::default()
            },
        )
        .await
        .map_err(|e| format!("cannot open the sandbox database: {e}"))?;

        let sandbox = ClusterSandbox {
            nodes: Mutex::new(Vec::new()),
            binary,
            extra_env: self.env,
            database: self.database,
            database_url,
            http,
            store,
            seeded: AtomicUsize::new(0),
            whatsapp,
            llm,
            nats,
            _postgres: postgres,
            root,
        };
        let mut started = Vec::with_capacity(self.nodes);
        for _ in 0..self.nodes {
            started.push(sandbox.launch_node().await?);
        }
        let waits = started
            .iter()
            .map(|&index| sandbox.wait_started(index, NODE_STARTUP_TIMEOUT));
        for result in futures::future::join_all(waits).await {
            result?;
        }
        Ok(sandbox)
    }
}

/// Real `salesboy serve` processes with a private NATS server, a shared database, a fake
/// WhatsApp Cloud API and a fake LLM.
///
/// ```no_run
/// # async fn example(salesboy: &std::path::Path) -> Result<(), String> {
/// use crate::{ClusterSandbox, Db, webhooks};
///
/// // In an integration test: `env!("CARGO_BIN_EXE_salesboy")`.
/// let sandbox = ClusterSandbox::builder()
///     .nodes(3)
///     .binary(salesboy)
///     .database(Db::Postgres)
///     .env("SALESBOY_DEBOUNCE_MS", "20")
///     .start()
///     .await?;
/// let tenants = sandbox.seed_tenants(300, "We ship worldwide in 3 days.").await?;
/// let (_, number) = &tenants[0];
/// let body = webhooks::text_message(number.as_str(), "16505550100", "wamid.1", "Hi!");
/// sandbox.post_webhook(0, &body).await?;
/// sandbox.partition(2)?; // node-2 no longer reaches NATS
/// sandbox.kill(1).await?; // SIGKILL
/// # Ok(()) }
/// ```
///
/// What [`ClusterSandboxBuilder::start`] starts: a private [`NatsServer`], a fresh
/// [`PostgresDatabase`] (or, for [`Db::Sqlite`] and one node, a SQLite file), a
/// [`FakeWhatsApp`], a [`FakeLlm`], then the nodes. Node `i` is configured by environment
/// only (`env_clear`, then `PATH` and):
///
/// | variable | value |
/// |---|---|
/// | `SALESBOY_NODE_ID` | `node-<i>` |
/// | `SALESBOY_HTTP_ADDR` | `127.0.0.1:<a free port>`, kept across restarts |
/// | `SALESBOY_DATA_DIR` | its own directory, kept across restarts |
/// | `SALESBOY_DATABASE_URL` | the shared database |
/// | `SALESBOY_NATS_URL` | its own [`TcpProxy`] in front of the NATS server |
/// | `SALESBOY_WHATSAPP_APP_SECRET` | [`SANDBOX_APP_SECRET`] |
/// | `SALESBOY_WHATSAPP_API_BASE` | the fake's base URL |
/// | `SALESBOY_ADMIN_TOKEN` | [`SANDBOX_ADMIN_TOKEN`] |
/// | `RUST_LOG` | `info` |
/// | `NO_COLOR` | `1` (plain log files) |
///
/// then the builder's extra variables. `SALESBOY_TEST_*` variables never reach a node.
/// Each node writes stdout and stderr to its own log file (appended across restarts, each
/// start marked); [`ClusterSandbox::node_log_tail`] reads it, and a sandbox dropped while
/// its test panics prints every node's tail to stderr.
///
/// Every method takes `&self`, so a test can share the sandbox (`Arc`) between a load
/// generator and the code that kills, partitions and adds nodes.
///
/// Dropping it kills every node (SIGKILL) and reaps it, stops the proxies, the fakes and the
/// NATS server, drops the Postgres database and deletes the sandbox's directory.
pub struct ClusterSandbox {
    // Declared first: dropped (with their proxies) right after `Drop::drop` killed the nodes.
    nodes: Mutex<Vec<Arc<SandboxNode>>>,
    binary: PathBuf,
    extra_env: Vec<(String, String)>,
    database: Db,
    database_url: String,
    http: reqwest::Client,
    store: SqlStore,
    seeded: AtomicUsize,
    whatsapp: FakeWhatsApp,
    llm: FakeLlm,
    nats: NatsServer,
    /// Kept for its drop (the database is dropped after the nodes are dead).
    _postgres: Option<PostgresDatabase>,
    root: tempfile::TempDir,
}

/// One node: what stays across restarts, and its current process.
struct SandboxNode {
    index: usize,
    id: String,
    port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// In front of the NATS server; the node's `SALESBOY_NATS_URL`.
    proxy: TcpProxy,
    process: Mutex<Process>,
}

/// A node's process, if it runs, and how the last one ended.
#[derive(Default)]
struct Process {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    starts: u32,
}

impl Process {
    /// Reaps the child if it has exited; its pid while it runs.
    fn running_pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => child.id(),
            Ok(Some(status)) => {
                self.exit = Some(status);
                self.child = None;
                None
            }
            // Cannot tell: treat it as running, a later call will know.
            Err(_) => child.id(),
        }
    }

    /// Why the node does not run, for error messages.
    fn describe_stopped(&self) -> String {
        match self.exit {
            Some(status) => format!("its process exited ({status})"),
            None => "it has no process".to_owned(),
        }
    }
}

impl SandboxNode {
    fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn process(&self) -> MutexGuard<'_, Process> {
        lock(&self.process)
    }

    fn info(&self) -> NodeHandleInfo {
        let mut process = self.process();
        let pid = process.running_pid();
        NodeHandleInfo {
            index: self.index,
            id: self.id.clone(),
            http_base: self.http_base(),
            pid,
            alive: pid.is_some(),
            exit: process.exit,
        }
    }
}

impl ClusterSandbox {
    /// A builder: one node on Postgres until told otherwise.
    pub fn builder() -> ClusterSandboxBuilder {
        ClusterSandboxBuilder {
            nodes: 1,
            binary: None,
            database: Db::Postgres,
            env: Vec::new(),
        }
    }

    /// A snapshot of every node, by index.
    pub fn nodes(&self) -> Vec<NodeHandleInfo> {
        self.all_nodes().iter().map(|node| node.info()).collect()
    }

    /// How many nodes the sandbox has (running or not).
    pub fn node_count(&self) -> usize {
        lock(&self.nodes).len()
    }

    /// Node `i`'s HTTP base URL, `http://127.0.0.1:<port>`.
    pub fn http_base(&self, i: usize) -> Result<String, String> {
        Ok(self.node(i)?.http_base())
    }

    /// Node `i`'s data directory (kept across restarts).
    pub fn data_dir(&self, i: usize) -> Result<PathBuf, String> {
        Ok(self.node(i)?.data_dir.clone())
    }

    /// Node `i`'s log file: stdout and stderr of every start, appended.
    pub fn log_path(&self, i: usize) -> Result<PathBuf, String> {
        Ok(self.node(i)?.log_path.clone())
    }

    /// The last `lines` lines of node `i`'s log (at most its last 256 KiB), for a failing
    /// test to print; a note instead when it cannot be read.
    pub fn node_log_tail(&self, i: usize, lines: usize) -> String {
        match self.node(i) {
            Ok(node) => log_tail(&node.log_path, lines),
            Err(error) => error,
        }
    }

    /// Polls node `i`'s `GET /health` until it answers 200. Fails at once when the node's
    /// process does not run (killed or exited), else after `timeout` with the
    /// last answer or error.
    pub async fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<(), String> {
        let node = self.node(i)?;
        let url = format!("{}/health", node.http_base());
        let deadline = Instant::now() + timeout;
        let mut last = "no answer yet".to_owned();
        loop {
            {
                let mut process = node.process();
                if process.running_pid().is_none() {
                    return Err(format!(
                        "{} is not running: {}",
                        node.id,
                        process.describe_stopped()
                    ));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} not healthy within {timeout:?}: {last}",
                    node.id
                ));
            }
            let answer = self
                .http
                .get(&url)
                .timeout(left.min(HEALTH_REQUEST_TIMEOUT))
                .send()
                .await;
            match answer {
                Ok(response) if response.status() == StatusCode::OK => return Ok(()),
                Ok(response) => last = format!("/health answered {}", response.status()),
                Err(error) => last = format!("/health failed: {error}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(POLL_INTERVAL)).await;
        }
    }

    /// Adds a node with the next index and id and the same configuration as the others,
    /// starts it and waits until it answers `/health` (at most [`NODE_STARTUP_TIMEOUT`]);
    /// returns its index. A SQLite sandbox refuses a second node.
    pub async fn add_node(&self) -> Result<usize, String> {
        let index = self.launch_node().await?;
        self.wait_started(index, NODE_STARTUP_TIMEOUT).await?;
        Ok(index)
    }

    /// Kills node `i` with SIGKILL and reaps it. A node that does not run is left as it is.
    pub async fn kill(&self, i: usize) -> Result<(), String> {
        let node = self.node(i)?;
        {
            let mut process = node.process();
            if process.running_pid().is_none() {
                return Ok(());
            }
            if let Some(child) = process.child.as_mut() {
                child
                    .start_kill()
                    .map_err(|e| format!("cannot kill {}: {e}", node.id))?;
            }
        }
        match poll_exit(&node, REAP_TIMEOUT).await {
            Some(_) => Ok(()),
            None => Err(format!(
                "{} was not reaped within {REAP_TIMEOUT:?} of SIGKILL",
                node.id
            )),
        }
    }

    /// Sends SIGTERM to node `i` (a graceful shutdown) and returns at once; see
    /// [`Self::wait_exit`]. The signal is sent by running `kill -TERM <pid>` (procps), as the
    /// node crate has no signal-sending dependency; the child is not reaped yet, so the pid
    /// cannot have been reused.
    pub fn terminate(&self, i: usize) -> Result<(), String> {
        let node = self.node(i)?;
        let mut process = node.process();
        let Some(pid) = process.running_pid() else {
            return Err(format!(
                "{} is not running: {}",
                node.id,
                process.describe_stopped()
            ));
        };
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run kill -TERM {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid} ({}) failed: {status}", node.id));
        }
        Ok(())
    }

    /// Waits up to `timeout` for node `i`'s process to exit and reaps it: its exit status,
    /// or `None` if it still runs (or never ran). A node that already exited answers at once.
    pub async fn wait_exit(&self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let node = self.node(i).ok()?;
        poll_exit(&node, timeout).await
    }

    /// Starts node `i` again with the same id, port and data directory (its log is
    /// appended to). A node that still runs is killed (SIGKILL) first. Does not wait for
    /// health: see [`Self::wait_healthy`].
    pub async fn restart(&self, i: usize) -> Result<(), String> {
        self.kill(i).await?;
        let node = self.node(i)?;
        self.spawn(&node)
    }

    /// Partitions node `i` from NATS: its proxy blackholes, so its connection goes silent
    /// without being closed and reconnects hang; the node only notices by its own timeouts.
    /// HTTP and the database stay reachable.
    pub fn partition(&self, i: usize) -> Result<(), String> {
        self.node(i)?.proxy.blackhole();
        Ok(())
    }

    /// Cuts node `i`'s NATS connection: it is reset at once and reconnects are refused
    /// until [`Self::heal`]. The node notices immediately (unlike [`Self::partition`]).
    pub fn cut_nats(&self, i: usize) -> Result<(), String> {
        self.node(i)?.proxy.cut();
        Ok(())
    }

    /// Ends a [`Self::partition`] or [`Self::cut_nats`] of node `i`: its proxy forwards
    /// again (a connection held by a partition resumes).
    pub fn heal(&self, i: usize) -> Result<(), String> {
        self.node(i)?.proxy.restore();
        Ok(())
    }

    /// How many connections node `i` has open (or held) through its NATS proxy.
    pub fn nats_connections(&self, i: usize) -> Result<usize, String> {
        Ok(self.node(i)?.proxy.connections())
    }

    /// The NATS server's own URL (not proxied), for the test's clients.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// Node `i`'s NATS URL: its proxy.
    pub fn node_nats_url(&self, i: usize) -> Result<String, String> {
        Ok(format!("nats://{}", self.node(i)?.proxy.addr()))
    }

    /// The shared database's URL.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Which database the nodes share.
    pub fn database(&self) -> Db {
        self.database
    }

    /// A connection pool of the test's own to the shared database, to seed and to check.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The fake WhatsApp Cloud API every node sends to.
    pub fn whatsapp(&self) -> &FakeWhatsApp {
        &self.whatsapp
    }

    /// The fake LLM seeded tenants use.
    pub fn llm(&self) -> &FakeLlm {
        &self.llm
    }

    /// The admin API token of every node.
    pub fn admin_token(&self) -> &str {
        SANDBOX_ADMIN_TOKEN
    }

    /// The app secret webhooks are signed with.
    pub fn app_secret(&self) -> &str {
        SANDBOX_APP_SECRET
    }

    /// The sandbox's HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Posts `body` to node `i`'s `/webhooks/whatsapp`, signed with the app secret as Meta
    /// signs it; the status the node answered.
    pub async fn post_webhook(
        &self,
        i: usize,
        body: &serde_json::Value,
    ) -> Result<StatusCode, String> {
        let node = self.node(i)?;
        let raw = body.to_string().into_bytes();
        let signature = sign(SANDBOX_APP_SECRET.as_bytes(), &raw);
        self.http
            .post(format!("{}/webhooks/whatsapp", node.http_base()))
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .timeout(WEBHOOK_TIMEOUT)
            .body(raw)
            .send()
            .await
            .map(|response| response.status())
            .map_err(|e| format!("cannot post a webhook to {}: {e}", node.id))
    }

    /// Writes `count` new tenants straight into the database, each with one WhatsApp number,
    /// the fake LLM as its provider and one knowledge passage, `knowledge`; returns them in
    /// order. Tenants are numbered on from earlier calls: tenant `n` is `seed-<n:05>` with
    /// number `1<n:014>` and access token `token-seed-<n:05>`.
    ///
    /// The rows are those the store's own calls write (tenant at epoch 0 and knowledge
    /// version 1, number, document, passage), inserted 200 tenants per transaction
    /// with multi-row statements, so thousands seed in well under a second. It bypasses the
    /// `Store` API for speed: the sandbox tests read seeded tenants back through it, which
    /// catches a schema change this writer missed.
    pub async fn seed_tenants(
        &self,
        count: usize,
        knowledge: &str,
    ) -> Result<Vec<(TenantId, PhoneNumberId)>, String> {
        let providers = serde_json::json!([{
            "kind": "openai",
            "model": "gpt-4o-mini",
            "api_key": "sk-sandbox",
            "base_url": self.llm.openai_base_url(),
        }]);
        self.seed_tenants_with(count, knowledge, &providers).await
    }

    /// As [`Self::seed_tenants`], with the tenants' LLM provider chain `providers` (the
    /// `llm_config` JSON array, e.g. a Gemini fake first and an OpenAI-compatible fallback).
    pub async fn seed_tenants_with(
        &self,
        count: usize,
        knowledge: &str,
        providers: &serde_json::Value,
    ) -> Result<Vec<(TenantId, PhoneNumberId)>, String> {
        let first = self.seeded.fetch_add(count, Ordering::SeqCst);
        let tenants = (first..first + count)
            .map(|n| {
                let tenant = TenantId::new(format!("seed-{n:05}"))
                    .map_err(|e| format!("bad seeded tenant id: {e}"))?;
                let number = PhoneNumberId::new(format!("1{n:014}"))
                    .map_err(|e| format!("bad seeded phone number id: {e}"))?;
                Ok((tenant, number))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let providers = providers.to_string();
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let seeding = |e: sqlx::Error| format!("cannot seed tenants: {e}");

        sqlx::any::install_default_drivers();
        let mut connection = AnyConnection::connect(&self.database_url)
            .await
            .map_err(seeding)?;
        if self.database == Db::Sqlite {
            connection
                .execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                .await
                .map_err(seeding)?;
        }
        let seed = Seed {
            providers: &providers,
            knowledge,
            created_ms,
        };
        for batch in tenants.chunks(SEED_BATCH) {
            seed.insert(&mut connection, batch).await.map_err(seeding)?;
        }
        let _ = connection.close().await;
        Ok(tenants)
    }

    /// Every node, by index.
    fn all_nodes(&self) -> Vec<Arc<SandboxNode>> {
        lock(&self.nodes).clone()
    }

    fn node(&self, i: usize) -> Result<Arc<SandboxNode>, String> {
        let nodes = lock(&self.nodes);
        nodes.get(i).cloned().ok_or_else(|| {
            format!(
                "no node {i}: the sandbox has {} (indexes 0..{})",
                nodes.len(),
                nodes.len()
            )
        })
    }

    /// Creates the next node (proxy, port, directory) and starts its process.
    async fn launch_node(&self) -> Result<usize, String> {
        let nats = SocketAddr::from((Ipv4Addr::LOCALHOST, self.nats.port()));
        let proxy = TcpProxy::start(nats)
            .await
            .map_err(|e| format!("cannot start a nats proxy: {e}"))?;
        let node = {
            let mut nodes = lock(&self.nodes);
            if self.database == Db::Sqlite && !nodes.is_empty() {
                return Err("a sqlite sandbox has one node: use Db::Postgres".to_owned());
            }
            let taken: Vec<u16> = nodes.iter().map(|node| node.port).collect();
            let port = free_port(&taken)?;
            let index = nodes.len();
            let id = format!("node-{index}");
            let node = Arc::new(SandboxNode {
                index,
                data_dir: self.root.path().join(&id),
                log_path: self.root.path().join(format!("{id}.log")),
                id,
                port,
                proxy,
                process: Mutex::new(Process::default()),
            });
            nodes.push(Arc::clone(&node));
            node
        };
        self.spawn(&node)?;
        Ok(node.index)
    }

    /// Waits for a node just started; the error carries its log's tail.
    async fn wait_started(&self, i: usize, timeout: Duration) -> Result<(), String> {
        self.wait_healthy(i, timeout).await.map_err(|error| {
            format!(
                "{error}\n--- node-{i} log tail ---\n{}",
                self.node_log_tail(i, 30)
            )
        })
    }

    /// Starts `node`'s process (it must not run).
    fn spawn(&self, node: &SandboxNode) -> Result<(), String> {
        let mut process = node.process();
        if process.running_pid().is_some() {
            return Err(format!("{} is already running", node.id));
        }
        std::fs::create_dir_all(&node.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", node.data_dir.display()))?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|e| format!("cannot open {}: {e}", node.log_path.display()))?;
        let start = process.starts + 1;
        writeln!(log, "--- sandbox: start {start} of {} ---", node.id)
            .map_err(|e| format!("cannot write {}: {e}", node.log_path.display()))?;
        let stdout = log
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", node.log_path.display()))?;

        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            // Plain log lines: the log is a file, not a terminal.
            .env("NO_COLOR", "1")
            .env("SALESBOY_NODE_ID", &node.id)
            .env("SALESBOY_HTTP_ADDR", format!("127.0.0.1:{}", node.port))
            .env("SALESBOY_DATA_DIR", &node.data_dir)
            .env("SALESBOY_DATABASE_URL", &self.database_url)
            .env("SALESBOY_NATS_URL", format!("nats://{}", node.proxy.addr()))
            .env("SALESBOY_WHATSAPP_APP_SECRET", SANDBOX_APP_SECRET)
            .env("SALESBOY_WHATSAPP_API_BASE", self.whatsapp.base_url())
            .env("SALESBOY_ADMIN_TOKEN", SANDBOX_ADMIN_TOKEN)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        process.child = Some(child);
        process.exit = None;
        process.starts = start;
        Ok(())
    }
}

impl std::fmt::Debug for ClusterSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSandbox")
            .field("nodes", &self.nodes())
            .field("database", &self.database)
            .field("nats", &self.nats.url())
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterSandbox {
    fn drop(&mut self) {
        let nodes = self.all_nodes();
        if std::thread::panicking() {
            for node in &nodes {
                eprintln!(
                    "--- {} log tail ({}) ---\n{}",
                    node.id,
                    node.log_path.display(),
                    log_tail(&node.log_path, PANIC_LOG_LINES)
                );
            }
        }
        // SIGKILL every node first, then reap them all, so they die together.
        let mut children: Vec<Child> = nodes
            .iter()
            .filter_map(|node| node.process().child.take())
            .collect();
        for child in &mut children {
            let _ = child.start_kill();
        }
        let deadline = Instant::now() + REAP_TIMEOUT;
        for child in &mut children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// What every seeded tenant shares.
struct Seed<'a> {
    providers: &'a str,
    knowledge: &'a str,
    created_ms: i64,
}

impl Seed<'_> {
    /// Inserts one batch of tenants in one transaction. Values shared by every row are bound
    /// once (`$1`, `$2`) and constants written as literals, which keeps every statement small
    /// (see [`SEED_BATCH`]).
    async fn insert(
        &self,
        connection: &mut AnyConnection,
        batch: &[(TenantId, PhoneNumberId)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = connection.begin().await?;

        let mut tenants = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tenants (id, name, system_prompt, llm_config, knowledge_version, \
             created_ms) VALUES {}",
            values(batch.len(), 2, &["?", "?", "NULL", "$1", "1", "$2"])
        )))
        .bind(self.providers.to_owned())
        .bind(self.created_ms);
        for (tenant, _) in batch {
            tenants = tenants
                .bind(tenant.to_string())
                .bind(format!("{tenant} shop"));
        }
        tenants.execute(&mut *tx).await?;

        let mut epochs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tenant_epochs (tenant_id, epoch) VALUES {} \
             ON CONFLICT (tenant_id) DO NOTHING",
            values(batch.len(), 0, &["?", "0"])
        )));
        for (tenant, _) in batch {
            epochs = epochs.bind(tenant.to_string());
        }
        epochs.execute(&mut *tx).await?;

        let mut numbers = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO whatsapp_numbers (phone_number_id, tenant_id, waba_id, access_token) \
             VALUES {}",
            values(batch.len(), 0, &["?", "?", "NULL", "?"])
        )));
        for (tenant, number) in batch {
            numbers = numbers
                .bind(number.to_string())
                .bind(tenant.to_string())
                .bind(format!("token-{tenant}"));
        }
        numbers.execute(&mut *tx).await?;

        let mut documents = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO knowledge_documents (tenant_id, title, created_ms) VALUES {} \
             RETURNING id, tenant_id",
            values(batch.len(), 1, &["?", "'seeded'", "$1"])
        )))
        .bind(self.created_ms);
        for (tenant, _) in batch {
            documents = documents.bind(tenant.to_string());
        }
        let documents = documents.fetch_all(&mut *tx).await?;

        let mut chunks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO knowledge_chunks (document_id, tenant_id, ordinal, text) VALUES {}",
            values(documents.len(), 1, &["?", "?", "0", "$1"])
        )))
        .bind(self.knowledge.to_owned());
        for document in &documents {
            chunks = chunks
                .bind(document.try_get::<i64, _>("id")?)
                .bind(document.try_get::<String, _>("tenant_id")?);
        }
        chunks.execute(&mut *tx).await?;

        tx.commit().await
    }
}

/// The rows of a multi-row `VALUES`: in each copy of `row`, every `?` becomes the next
/// placeholder, numbered after the `shared` ones (`$1..=$shared`, bound first); any other
/// item (a shared placeholder, a literal) is copied as it is.
fn values(rows: usize, shared: usize, row: &[&str]) -> String {
    let mut next = shared;
    (0..rows)
        .map(|_| {
            let items: Vec<String> = row
                .iter()
                .map(|item| {
                    if *item == "?" {
                        next += 1;
                        format!("${next}")
                    } else {
                        (*item).to_owned()
                    }
                })
                .collect();
            format!("({})", items.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A free port on 127.0.0.1 that is not in `taken`.
fn free_port(taken: &[u16]) -> Result<u16, String> {
    for _ in 0..16 {
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| format!("cannot find a free port: {e}"))?;
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err("cannot find a free port not already given to a node".to_owned())
}

/// Polls `node`'s process until it has exited (and is reaped), at most `timeout`: how it
/// ended, or `None` if it still runs or never ran. Polling keeps the child in place, so
/// [`ClusterSandbox::nodes`] stays truthful meanwhile.
async fn poll_exit(node: &SandboxNode, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let mut process = node.process();
            if process.running_pid().is_none() {
                return process.exit;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        tokio::time::sleep(left.min(POLL_INTERVAL)).await;
    }
}

/// The last `lines` lines of the file at `path`, reading at most its last 256 KiB.
fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn numbers_fresh_placeholders_after_the_shared_ones() {
        assert_eq!(values(2, 0, &["?", "?"]), "($1, $2), ($3, $4)");
        assert_eq!(
            values(2, 1, &["?", "$1", "NULL"]),
            "($2, $1, NULL), ($3, $1, NULL)"
        );
    }
}
