//! The system under test: a real `salesboy serve` process, configured through environment
//! variables exactly as `node/tests/crash.rs` does, its database (SQLite in a temp dir or a
//! fresh PostgreSQL database) and the fake WhatsApp Cloud API it sends to, which runs in the
//! bench process so that its receive times share the load generator's clock.
//!
//! Everything started here is stopped when the [`Deployment`] is dropped: the node process
//! is killed, the temp dir removed and the PostgreSQL database dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use salesboy_node::http::health::Health;
use salesboy_node::store::SqlStore;
use salesboy_testkit::{FakeWhatsApp, FakeWhatsAppOptions, NatsServer, PostgresDatabase};
use serde::Serialize;

use super::env::{Rss, process_rss};
use super::report::Report;
use super::setup::create_tenants;

/// The app secret the bench signs webhooks with.
pub const APP_SECRET: &str = "bench-app-secret";
/// The node's admin token (the bench reads `/api/health` with it).
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
/// How long the node may take to answer `/health` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Which database the node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    /// SQLite in the node's data dir (the embedded default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server (`SALESBOY_TEST_POSTGRES_URL`).
    Postgres,
}

impl DbKind {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// How to run the node under test (shared by every bench).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeOptions {
    /// The `salesboy` binary to benchmark (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/salesboy")]
    pub salesboy_bin: PathBuf,
    /// The database the node runs on.
    #[arg(long, value_enum, default_value_t = DbKind::Sqlite)]
    pub db: DbKind,
    /// `SALESBOY_WHATSAPP_MESSAGES_PER_SECOND`: the node's outbound limit per WhatsApp
    /// number (Meta's default is 80).
    #[arg(long, default_value_t = 80)]
    pub per_number_rate: u32,
    /// Sets `MALLOC_ARENA_MAX` on the node process (glibc malloc arenas: no effect on a
    /// `salesboy` built with mimalloc, decision 0016).
    #[arg(long)]
    pub malloc_arena_max: Option<u32>,
    /// An environment variable for the node process, `KEY=VALUE` (repeatable; set after the
    /// bench's own, so it can override them), for trials such as `TOKIO_WORKER_THREADS=1` or
    /// `MIMALLOC_PURGE_DELAY=-1` (an experiment, not the production setting: label such
    /// results). The node otherwise gets none of the bench's environment.
    #[arg(long = "node-env", value_name = "KEY=VALUE", value_parser = parse_node_env)]
    pub node_env: Vec<(String, String)>,
    /// Keep the node's log (stdout and stderr) in this file instead of the temp dir.
    #[arg(long)]
    pub node_log: Option<PathBuf>,
    /// Extra query parameters for the node's database URL, e.g.
    /// `options=-c%20synchronous_commit%3Doff` on PostgreSQL (an experiment, not the
    /// production setting: label such results).
    #[arg(long)]
    pub db_url_params: Option<String>,
    /// Before the measured phase, wait up to this many seconds for the machine to be quiet
    /// (under 15% busy over 2 s while the node idles): other work on a shared machine
    /// skews every figure. 0: do not wait (the load before the run is reported anyway).
    #[arg(long, default_value_t = 0)]
    pub wait_quiet_secs: u64,
    /// Run the node on its own nats-server (a one-node cluster: membership, the service
    /// API, and events published to the `SB_EVENTS` stream) instead of alone.
    #[arg(long)]
    pub nats: bool,
}

impl NodeOptions {
    /// Options for `db` with every other setting at its default.
    pub fn new(salesboy_bin: PathBuf, db: DbKind) -> Self {
        Self {
            salesboy_bin,
            db,
            per_number_rate: 80,
            malloc_arena_max: None,
            node_env: Vec::new(),
            node_log: None,
            db_url_params: None,
            wait_quiet_secs: 0,
            nats: false,
        }
    }

    /// The binary, found relative to the current directory or else to the workspace root;
    /// an error telling how to build it when it is missing.
    pub fn binary(&self) -> anyhow::Result<PathBuf> {
        let given = &self.salesboy_bin;
        if given.is_file() {
            return Ok(given.clone());
        }
        if given.is_relative() {
            let from_root = workspace_root().join(given);
            if from_root.is_file() {
                return Ok(from_root);
            }
        }
        bail!(
            "the salesboy binary {} does not exist: run `cargo build --release -p salesboy-node` \
             (or pass --salesboy-bin)",
            given.display()
        )
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// A running `salesboy serve` process; killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
}

impl NodeProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's memory, from `/proc/<pid>/status`.
    pub fn rss(&self) -> anyhow::Result<Rss> {
        process_rss(self.pid()).context("reading the node's /proc/<pid>/status")
    }

    /// The node's peak resident set size (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        super::env::kib_field(&status, "VmHWM:").map(|kib| kib * 1024)
    }

    /// The last lines of the node's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An error unless the process is still running.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the node exited ({status}); last log lines:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }
}

impl Drop for NodeProcess {
    /// Asks the node to stop (SIGTERM: it shuts down cleanly, and a heap profiler wrapping
    /// it writes its output), and kills it if it is still running 10 s later.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node, its database and the fake Cloud API; see the module docs.
pub struct Deployment {
    /// The node, once [`Deployment::start_node`] ran.
    pub node: Option<NodeProcess>,
    /// The fake WhatsApp Cloud API the node sends to.
    pub whatsapp: FakeWhatsApp,
    /// The client the bench posts webhooks with.
    pub http: reqwest::Client,
    /// The database URL the node uses.
    pub database_url: String,
    /// The node's environment that matters for the figures (no secrets).
    pub settings: BTreeMap<String, String>,
    options: NodeOptions,
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// The node's nats-server, with `--nats` (dropped after the node).
    pub nats: Option<NatsServer>,
    // Dropped last: the node is gone by then (`DROP DATABASE … WITH (FORCE)` anyway).
    postgres: Option<PostgresDatabase>,
}

impl Deployment {
    /// Creates the database and starts the fake Cloud API; the node is not started yet, so
    /// that tenants can be written first (the webhook caches unknown numbers for 10 s).
    /// `settings` are extra `SALESBOY_*` variables for the node.
    pub async fn prepare(
        options: &NodeOptions,
        settings: &[(&str, String)],
        connections: usize,
    ) -> anyhow::Result<Self> {
        salesboy_node::run::install_crypto_provider();
        let binary = options.binary()?;
        let dir = tempfile::Builder::new()
            .prefix("salesboy-bench-")
            .tempdir()
            .context("creating a temp dir")?;
        let postgres = match options.db {
            DbKind::Sqlite => None,
            DbKind::Postgres => Some(
                PostgresDatabase::create()
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?,
            ),
        };
        let database_url = match &postgres {
            Some(db) => db.url().to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("salesboy.db").display()
            ),
        };
        let database_url = match &options.db_url_params {
            Some(params) if database_url.contains('?') => format!("{database_url}&{params}"),
            Some(params) => format!("{database_url}?{params}"),
            None => database_url,
        };
        let whatsapp = FakeWhatsApp::try_start(FakeWhatsAppOptions::default())
            .await
            .context("starting the fake Cloud API")?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections.max(1))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let mut node_settings = BTreeMap::new();
        node_settings.insert("SALESBOY_DEBOUNCE_MS".to_owned(), "0".to_owned());
        node_settings.insert(
            "SALESBOY_WHATSAPP_MESSAGES_PER_SECOND".to_owned(),
            options.per_number_rate.to_string(),
        );
        node_settings.insert("RUST_LOG".to_owned(), "warn".to_owned());
        node_settings.insert("SALESBOY_LOG_FORMAT".to_owned(), "text".to_owned());
        for (key, value) in settings {
            node_settings.insert((*key).to_owned(), value.clone());
        }
        if let Some(arenas) = options.malloc_arena_max {
            node_settings.insert("MALLOC_ARENA_MAX".to_owned(), arenas.to_string());
        }
        for (key, value) in &options.node_env {
            node_settings.insert(key.clone(), value.clone());
        }
        let nats = if options.nats {
            let server = NatsServer::start().context("starting the node's nats-server")?;
            node_settings.insert("SALESBOY_NATS_URL".to_owned(), server.url());
            Some(server)
        } else {
            None
        };
        Ok(Self {
            node: None,
            whatsapp,
            http,
            database_url,
            settings: node_settings,
            options: options.clone(),
            binary,
            dir,
            nats,
            postgres,
        })
    }

    /// [`Deployment::prepare`], then `tenants` tenants written (with a knowledge base if
    /// `knowledge`), then the node started: every bench's first steps.
    pub async fn start_with_tenants(
        options: &NodeOptions,
        settings: &[(&str, String)],
        connections: usize,
        tenants: usize,
        knowledge: bool,
    ) -> anyhow::Result<Self> {
        Self::start_with_history(options, settings, connections, tenants, knowledge, None).await
    }

    /// As [`Deployment::start_with_tenants`], with `history` — (rows, age in days) — old
    /// inbound messages of those tenants written before the node starts
    /// ([`seed::old_messages`](super::seed::old_messages)).
    pub async fn start_with_history(
        options: &NodeOptions,
        settings: &[(&str, String)],
        connections: usize,
        tenants: usize,
        knowledge: bool,
        history: Option<(u64, u32)>,
    ) -> anyhow::Result<Self> {
        let mut deployment = Self::prepare(options, settings, connections).await?;
        let store = deployment.store().await?;
        create_tenants(&store, tenants, knowledge).await?;
        store.close().await;
        if let Some((rows, age_days)) = history.filter(|(rows, _)| *rows > 0) {
            super::seed::old_messages(
                &deployment.database_url,
                deployment.db(),
                tenants,
                rows,
                age_days,
            )
            .await?;
        }
        deployment.start_node().await?;
        super::progress(format!(
            "node ready on {} (pid {})",
            deployment.db().as_str(),
            deployment.node()?.pid()
        ));
        Ok(deployment)
    }

    /// How busy the machine is (0–1, all CPUs) over 2 s; with `--wait-quiet-secs`, first
    /// waits (that long at most) for it to be under 15%.
    pub async fn machine_load_before_run(&self) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(self.options.wait_quiet_secs);
        loop {
            let (busy0, total0) = super::env::machine_cpu_secs();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (busy1, total1) = super::env::machine_cpu_secs();
            let load = (busy1 - busy0) / (total1 - total0).max(1e-9);
            if load < 0.15 || Instant::now() >= deadline {
                return load;
            }
            super::progress(format!(
                "  machine {:.0}% busy before the run, waiting for it to quieten",
                100.0 * load
            ));
        }
    }

    /// The node's settings for a report: its environment (no secrets) and the database URL
    /// parameters, if any.
    pub fn report_settings(&self) -> BTreeMap<String, String> {
        let mut settings = self.settings.clone();
        if let Some(params) = &self.options.db_url_params {
            settings.insert("database URL parameters".to_owned(), params.clone());
        }
        settings
    }

    /// An empty report of `bench` on this deployment's database and settings.
    pub fn report(&self, bench: &str) -> Report {
        Report::new(bench, self.db().as_str(), self.report_settings())
    }

    /// The database the node uses.
    pub fn db(&self) -> DbKind {
        self.options.db
    }

    /// A store on the node's database (migrated): for setting up tenants before the node
    /// starts. Close it when done.
    pub async fn store(&self) -> anyhow::Result<SqlStore> {
        SqlStore::connect(&self.database_url)
            .await
            .context("connecting to the bench database")
    }

    /// Spawns the node and waits until `/health` answers 200.
    pub async fn start_node(&mut self) -> anyhow::Result<&mut NodeProcess> {
        let port = free_port()?;
        let log = self
            .options
            .node_log
            .clone()
            .unwrap_or_else(|| self.dir.path().join("node.log"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the node log {}", log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SALESBOY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("SALESBOY_DATA_DIR", self.dir.path())
            .env("SALESBOY_DATABASE_URL", &self.database_url)
            .env("SALESBOY_WHATSAPP_APP_SECRET", APP_SECRET)
            .env("SALESBOY_WHATSAPP_API_BASE", self.whatsapp.base_url())
            .env("SALESBOY_ADMIN_TOKEN", ADMIN_TOKEN)
            // a bench on PostgreSQL needs a key configured
            .env(
                "SALESBOY_SECRETS_KEY",
                salesboy_testkit::SANDBOX_SECRETS_KEY,
            )
            .env(
                "SALESBOY_CLUSTER_KEY",
                salesboy_testkit::SANDBOX_CLUSTER_KEY,
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("node log")?)
            .stderr(log_file);
        for (key, value) in &self.settings {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        let mut node = NodeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        loop {
            node.check_alive()?;
            if let Ok(health) = health(&self.http, &node.base).await
                && health.status == "ok"
            {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the node did not become ready within {READY_TIMEOUT:?}; last log lines:\n{}",
                    node.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(self.node.insert(node))
    }

    /// The running node.
    pub fn node(&self) -> anyhow::Result<&NodeProcess> {
        self.node.as_ref().context("the node is not started")
    }

    /// The running node, mutably.
    pub fn node_mut(&mut self) -> anyhow::Result<&mut NodeProcess> {
        self.node.as_mut().context("the node is not started")
    }

    /// The node's `/api/health`.
    pub async fn health(&self) -> anyhow::Result<Health> {
        health(&self.http, &self.node()?.base).await
    }

    /// Messages deleted by the node's retention so far
    /// (`salesboy_retention_deleted_rows_total{table="messages"}`; 0 before its first batch).
    pub async fn retention_deleted_messages(&self) -> f64 {
        let Ok(node) = self.node() else { return 0.0 };
        let page = self
            .http
            .get(format!("{}/metrics", node.base))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let Ok(page) = page else { return 0.0 };
        let text = page.text().await.unwrap_or_default();
        text.lines()
            .find_map(|line| {
                line.strip_prefix("salesboy_retention_deleted_rows_total{table=\"messages\"} ")
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The webhook URL.
    pub fn webhook_url(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{}{}",
            self.node()?.base,
            salesboy_node::http::webhook::PATH
        ))
    }

    /// Kills the node and removes everything (also done on drop).
    pub async fn shutdown(mut self) {
        drop(self.node.take());
        self.whatsapp.shutdown().await;
        let postgres = self.postgres.take();
        // PostgresDatabase's Drop blocks on its own runtime: keep it off this one.
        let _ = tokio::task::spawn_blocking(move || drop(postgres)).await;
    }
}

async fn health(http: &reqwest::Client, base: &str) -> anyhow::Result<Health> {
    let response = http
        .get(format!("{base}/api/health"))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    Ok(response.json().await?)
}

fn free_port() -> anyhow::Result<u16> {
    salesboy_testkit::free_port().context("finding a free port")
}

/// `KEY=VALUE` for `--node-env`: a key that is not empty and has no `=` or whitespace.
fn parse_node_env(given: &str) -> Result<(String, String), String> {
    match given.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected KEY=VALUE (e.g. TOKIO_WORKER_THREADS=1), got {given:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeOptions,
    }

    #[test]
    fn node_env_takes_key_value_pairs_in_order_and_refuses_anything_else() {
        let cli = Cli::try_parse_from([
            "bench",
            "--node-env",
            "TOKIO_WORKER_THREADS=1",
            "--node-env",
            "SALESBOY_EXTRA=a=b",
            "--node-env",
            "EMPTY=",
        ])
        .expect("valid pairs parse");
        assert_eq!(
            cli.node.node_env,
            [
                ("TOKIO_WORKER_THREADS".to_owned(), "1".to_owned()),
                ("SALESBOY_EXTRA".to_owned(), "a=b".to_owned()),
                ("EMPTY".to_owned(), String::new()),
            ]
        );
        for bad in ["TOKIO_WORKER_THREADS", "=1", "TWO WORDS=1"] {
            let error = Cli::try_parse_from(["bench", "--node-env", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} is refused"));
            assert!(error.to_string().contains("expected KEY=VALUE"), "{error}");
        }
    }
}
