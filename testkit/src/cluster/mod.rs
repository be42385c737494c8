//! [`ClusterSandbox`]: real `salesboy serve` processes for multi-node tests, with their own
//! NATS server, database and fakes, cleaned up on drop.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use salesboy_node::store::SqlStore;
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};
use tokio::process::Child;

use crate::{FakeLlm, FakeWebEndpoint, FakeWhatsApp, NatsCluster, NatsServer, PostgresDatabase};

mod builder;
mod control;
mod node;
mod seed;

pub use builder::ClusterSandboxBuilder;

use node::{SandboxNode, log_tail};

/// The Meta app secret every sandbox node checks webhook signatures with.
pub const SANDBOX_APP_SECRET: &str = "sandbox-app-secret";

/// The admin API token of every sandbox node.
pub const SANDBOX_ADMIN_TOKEN: &str = "sandbox-admin-token-0123456789abcdef";

/// The secrets key every sandbox node (and every test node on PostgreSQL) encrypts secrets at
/// rest with: nodes sharing a database share its key. The bytes 0 to 31, in base64.
pub const SANDBOX_SECRETS_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// [`SANDBOX_SECRETS_KEY`] as the keyring the nodes seal and open secrets at rest with.
pub fn sandbox_keyring() -> salesboy_node::secrets::Keyring {
    let key = salesboy_node::secrets::SecretsKey::parse(SANDBOX_SECRETS_KEY)
        .expect("the sandbox secrets key is a key");
    salesboy_node::secrets::Keyring::new(key, [])
}

/// The cluster key every test cluster seals its messages with: the bytes 32 to 63, in
/// base64. A client without it cannot make a node do anything.
pub const SANDBOX_CLUSTER_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// [`SANDBOX_CLUSTER_KEY`] as a key (for control requests a test sends itself).
pub fn sandbox_cluster_key() -> std::sync::Arc<salesboy_node::cluster::ClusterKey> {
    std::sync::Arc::new(
        salesboy_node::cluster::ClusterKey::parse(SANDBOX_CLUSTER_KEY, None)
            .expect("the sandbox cluster key is a key"),
    )
}

/// `bus` as the sandbox nodes see their buckets: sealed under [`SANDBOX_CLUSTER_KEY`] (for a
/// test that reads the directory or membership itself).
pub fn sandbox_sealed_bus(
    bus: Arc<dyn salesboy_node::bus::Bus>,
) -> Arc<dyn salesboy_node::bus::Bus> {
    Arc::new(salesboy_node::cluster::SealedKvBus::new(
        bus,
        sandbox_cluster_key(),
    ))
}

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

/// At most this much of a log file's end is read for a tail.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// How many log lines of each node a sandbox dropped during a panic prints.
const PANIC_LOG_LINES: usize = 40;

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

/// The sandbox's NATS: one server (each node behind its own proxy) or a cluster.
#[derive(Debug)]
pub(crate) enum SandboxNats {
    Single(NatsServer),
    Cluster(NatsCluster),
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

/// Real `salesboy serve` processes with a private NATS server, a shared database, a fake
/// WhatsApp Cloud API and a fake LLM.
///
/// ```no_run
/// # async fn example(salesboy: &std::path::Path) -> Result<(), String> {
/// use salesboy_testkit::{ClusterSandbox, Db, webhooks};
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
/// | `SALESBOY_NATS_URL` | its own [`TcpProxy`] in front of the NATS server; on a NATS cluster ([`ClusterSandboxBuilder::nats_cluster`]) every server's URL |
/// | `SALESBOY_WHATSAPP_APP_SECRET` | [`SANDBOX_APP_SECRET`] |
/// | `SALESBOY_WHATSAPP_API_BASE` | the fake's base URL |
/// | `SALESBOY_ADMIN_TOKEN` | [`SANDBOX_ADMIN_TOKEN`] |
/// | `SALESBOY_SECRETS_KEY` | [`SANDBOX_SECRETS_KEY`] |
/// | `SALESBOY_CLUSTER_KEY` | [`SANDBOX_CLUSTER_KEY`] |
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
    whatsapp_web: FakeWebEndpoint,
    llm: FakeLlm,
    nats: SandboxNats,
    /// Kept for its drop (the database is dropped after the nodes are dead).
    _postgres: Option<PostgresDatabase>,
    root: tempfile::TempDir,
}

impl ClusterSandbox {
    /// A snapshot of every node, by index.
    pub fn nodes(&self) -> Vec<NodeHandleInfo> {
        self.all_nodes().iter().map(|node| node.info()).collect()
    }

    /// How many nodes the sandbox has (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.lock().len()
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
    /// The NATS server's own URL (not proxied), for the test's clients; on a NATS cluster,
    /// every server's, comma-separated.
    pub fn nats_url(&self) -> String {
        match &self.nats {
            SandboxNats::Single(server) => server.url(),
            SandboxNats::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The NATS cluster, when the sandbox runs one ([`ClusterSandboxBuilder::nats_cluster`]):
    /// to kill and restart its servers.
    pub fn nats_cluster(&self) -> Option<&NatsCluster> {
        match &self.nats {
            SandboxNats::Single(_) => None,
            SandboxNats::Cluster(cluster) => Some(cluster),
        }
    }

    /// Node `i`'s NATS URL: its proxy, or on a NATS cluster every server's URL.
    pub fn node_nats_url(&self, i: usize) -> Result<String, String> {
        let node = self.node(i)?;
        Ok(self.node_nats_url_of(&node))
    }

    fn node_nats_url_of(&self, node: &SandboxNode) -> String {
        match &node.proxy {
            Some(proxy) => format!("nats://{}", proxy.addr()),
            None => self.nats_url(),
        }
    }

    /// The shared database's URL.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Which database the nodes share.
    pub fn database(&self) -> Db {
        self.database
    }

    /// Waits up to `wait` until the fake Cloud API has one reply per message of `rounds`
    /// rounds (round `r`'s message to tenant `i` came from chat `chat(r, i)`), then checks
    /// that each was answered exactly once and that nothing persisted is left unanswered.
    /// On a timeout the nodes' log tails are printed before the panic.
    ///
    /// # Panics
    ///
    /// When a reply is missing, doubled or unexpected, or a message is left unanswered.
    pub async fn assert_each_message_answered_once(
        &self,
        tenants: &[(
            salesboy_protocol::TenantId,
            salesboy_protocol::PhoneNumberId,
        )],
        rounds: usize,
        chat: impl Fn(usize, usize) -> String,
        wait: Duration,
    ) {
        use salesboy_actors::store::MessageStore;
        let expected = tenants.len() * rounds;
        if let Err(e) = self.whatsapp().wait_for_sent(expected, wait).await {
            for i in 0..self.node_count() {
                eprintln!("=== node {i} ===\n{}", self.node_log_tail(i, 30));
            }
            panic!("replies missing: {e}");
        }
        let sent = self.whatsapp().sent();
        let mut per_chat: std::collections::HashMap<(String, String), usize> =
            std::collections::HashMap::new();
        for message in &sent {
            *per_chat
                .entry((message.phone_number_id.clone(), message.to.clone()))
                .or_default() += 1;
        }
        let duplicates: Vec<_> = per_chat.iter().filter(|(_, n)| **n > 1).collect();
        assert!(duplicates.is_empty(), "duplicate replies: {duplicates:?}");
        assert_eq!(sent.len(), expected, "one reply per message");
        for round in 0..rounds {
            for (i, (_, phone)) in tenants.iter().enumerate() {
                assert!(
                    per_chat.contains_key(&(phone.to_string(), chat(round, i))),
                    "message {round}/{i} unanswered"
                );
            }
        }
        for (tenant, _) in tenants {
            assert!(
                self.store()
                    .unanswered_inbound(tenant, 0)
                    .await
                    .expect("read")
                    .is_empty(),
                "{tenant} has unanswered messages"
            );
        }
    }

    /// A connection pool of the test's own to the shared database, to seed and to check.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The fake WhatsApp Cloud API every node sends to.
    pub fn whatsapp(&self) -> &FakeWhatsApp {
        &self.whatsapp
    }

    /// Where every node's WhatsApp Web clients connect (each node under its own id).
    pub fn whatsapp_web(&self) -> &FakeWebEndpoint {
        &self.whatsapp_web
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

    /// Every node, by index.
    fn all_nodes(&self) -> Vec<Arc<SandboxNode>> {
        self.nodes.lock().clone()
    }

    fn node(&self, i: usize) -> Result<Arc<SandboxNode>, String> {
        let nodes = self.nodes.lock();
        nodes.get(i).cloned().ok_or_else(|| {
            format!(
                "no node {i}: the sandbox has {} (indexes 0..{})",
                nodes.len(),
                nodes.len()
            )
        })
    }
}

impl std::fmt::Debug for ClusterSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSandbox")
            .field("nodes", &self.nodes())
            .field("database", &self.database)
            .field("nats", &self.nats_url())
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
