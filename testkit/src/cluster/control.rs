//! Controlling a sandbox's node processes: launching them, waiting for health, SIGKILL and
//! SIGTERM, restarts, and cutting them off NATS and letting them back.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use tokio::process::Command;

use super::node::{Process, SandboxNode, poll_exit};
use super::{
    ClusterSandbox, Db, HEALTH_REQUEST_TIMEOUT, NODE_STARTUP_TIMEOUT, POLL_INTERVAL, REAP_TIMEOUT,
    SANDBOX_ADMIN_TOKEN, SANDBOX_APP_SECRET, SANDBOX_CLUSTER_KEY, SANDBOX_SECRETS_KEY, SandboxNats,
};
use crate::TcpProxy;

impl ClusterSandbox {
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
        self.node(i)?.proxy()?.blackhole();
        Ok(())
    }

    /// Cuts node `i`'s NATS connection: it is reset at once and reconnects are refused
    /// until [`Self::heal`]. The node notices immediately (unlike [`Self::partition`]).
    pub fn cut_nats(&self, i: usize) -> Result<(), String> {
        self.node(i)?.proxy()?.cut();
        Ok(())
    }

    /// Ends a [`Self::partition`] or [`Self::cut_nats`] of node `i`: its proxy forwards
    /// again (a connection held by a partition resumes).
    pub fn heal(&self, i: usize) -> Result<(), String> {
        self.node(i)?.proxy()?.restore();
        Ok(())
    }

    /// How many connections node `i` has open (or held) through its NATS proxy.
    pub fn nats_connections(&self, i: usize) -> Result<usize, String> {
        Ok(self.node(i)?.proxy()?.connections())
    }

    /// Creates the next node (proxy, port, directory) and starts its process.
    pub(super) async fn launch_node(&self) -> Result<usize, String> {
        let proxy = match &self.nats {
            SandboxNats::Single(server) => {
                let nats = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
                Some(
                    TcpProxy::start(nats)
                        .await
                        .map_err(|e| format!("cannot start a nats proxy: {e}"))?,
                )
            }
            SandboxNats::Cluster(_) => None,
        };
        let node = {
            let mut nodes = self.nodes.lock();
            if self.database == Db::Sqlite && !nodes.is_empty() {
                return Err("a sqlite sandbox has one node: use Db::Postgres".to_owned());
            }
            let port = crate::free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
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
    pub(super) async fn wait_started(&self, i: usize, timeout: Duration) -> Result<(), String> {
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
            .env("SALESBOY_NATS_URL", self.node_nats_url_of(node))
            .env("SALESBOY_WHATSAPP_APP_SECRET", SANDBOX_APP_SECRET)
            .env("SALESBOY_WHATSAPP_API_BASE", self.whatsapp.base_url())
            .env(
                "SALESBOY_WHATSAPP_WEB_URL",
                self.whatsapp_web.url_for(&node.id),
            )
            .env("SALESBOY_ADMIN_TOKEN", SANDBOX_ADMIN_TOKEN)
            .env("SALESBOY_SECRETS_KEY", SANDBOX_SECRETS_KEY)
            .env("SALESBOY_CLUSTER_KEY", SANDBOX_CLUSTER_KEY)
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
