//! [`ClusterSandboxBuilder`]: what a sandbox starts with, and starting it (the services,
//! then the nodes).

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

use parking_lot::Mutex;
use salesboy_node::store::{SqlStore, SqlStoreOptions};

use super::{ClusterSandbox, Db, HEALTH_REQUEST_TIMEOUT, NODE_STARTUP_TIMEOUT, SandboxNats};
use crate::{
    FakeLlm, FakeLlmOptions, FakeWebEndpoint, FakeWhatsApp, FakeWhatsAppOptions, NatsCluster,
    NatsServer, PostgresDatabase,
};

/// How long a NATS cluster's JetStream may take to work with every server in it.
const NATS_CLUSTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Variables the sandbox sets itself; the builder's extra environment cannot replace them.
const MANAGED_ENV: &[&str] = &[
    "SALESBOY_NODE_ID",
    "SALESBOY_HTTP_ADDR",
    "SALESBOY_DATA_DIR",
    "SALESBOY_DATABASE_URL",
    "SALESBOY_NATS_URL",
    "SALESBOY_WHATSAPP_APP_SECRET",
    "SALESBOY_WHATSAPP_API_BASE",
    "SALESBOY_WHATSAPP_WEB_URL",
    "SALESBOY_ADMIN_TOKEN",
    "PATH",
];

/// Builds a [`ClusterSandbox`]: `ClusterSandbox::builder().nodes(3).binary(…).start()`.
#[derive(Debug, Clone)]
pub struct ClusterSandboxBuilder {
    nodes: usize,
    binary: Option<PathBuf>,
    database: Db,
    env: Vec<(String, String)>,
    nats_servers: usize,
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

    /// Runs a JetStream cluster of `servers` nats-servers ([`NatsCluster`]) instead of one
    /// server, and gives every node all their URLs (no proxies: `partition`, `cut_nats` and
    /// `heal` are errors then). The nodes start once a bucket replicated on every server
    /// works.
    pub fn nats_cluster(mut self, servers: usize) -> Self {
        self.nats_servers = servers;
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
        let nats = if self.nats_servers > 1 {
            let servers = self.nats_servers;
            let cluster = tokio::task::spawn_blocking(move || NatsCluster::start(servers))
                .await
                .map_err(|e| format!("the nats-server start task failed: {e}"))?
                .map_err(|e| e.to_string())?;
            cluster.wait_jetstream(NATS_CLUSTER_TIMEOUT).await?;
            SandboxNats::Cluster(cluster)
        } else {
            let server = tokio::task::spawn_blocking(NatsServer::start)
                .await
                .map_err(|e| format!("the nats-server start task failed: {e}"))?
                .map_err(|e| e.to_string())?;
            SandboxNats::Single(server)
        };
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
        let whatsapp_web = FakeWebEndpoint::start().await?;
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
        .map_err(|e| format!("cannot open the sandbox database: {e}"))?
        .with_secrets(super::sandbox_keyring());

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
            whatsapp_web,
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

impl ClusterSandbox {
    /// A builder: one node on Postgres until told otherwise.
    pub fn builder() -> ClusterSandboxBuilder {
        ClusterSandboxBuilder {
            nodes: 1,
            binary: None,
            database: Db::Postgres,
            env: Vec::new(),
            nats_servers: 1,
        }
    }
}
