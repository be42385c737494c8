//! [`NatsCluster`]: several nats-server processes clustered with JetStream on loopback, for
//! tests that kill and restart NATS servers under a running gateway cluster.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use salesboy_node::bus::{Bus, NatsBus, NatsBusOptions};

use crate::nats::wait_listening;
use crate::{NatsServerError, nats_server_binary};

/// The cluster's name (`--cluster_name`).
const CLUSTER_NAME: &str = "sbtest";

/// The stream [`NatsCluster::wait_jetstream`] creates and deletes to prove the cluster works.
const PROBE_BUCKET: &str = "sb_test_probe";

/// One server: what stays across restarts (name, ports, store) and its process.
#[derive(Debug)]
struct ClusterServer {
    name: String,
    client_port: u16,
    route_port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

/// nats-server processes in one JetStream cluster on 127.0.0.1: each with its own client
/// and route port (fixed at start, kept across restarts), JetStream store (kept across
/// restarts, so a restarted server rejoins with its data) and log file. Dropping it kills
/// every server and deletes their stores.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<ClusterServer>,
    _root: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` clustered servers and waits until each listens for clients; see
    /// [`NatsCluster::wait_jetstream`] for the cluster's JetStream to be up.
    pub fn start(size: usize) -> Result<Self, NatsServerError> {
        let root = tempfile::Builder::new()
            .prefix("salesboy-nats-cluster-")
            .tempdir()
            .map_err(NatsServerError::TempDir)?;
        let ports = crate::free_ports(size * 2).map_err(NatsServerError::NoFreePorts)?;
        let servers = (0..size)
            .map(|i| ClusterServer {
                name: format!("n{i}"),
                client_port: ports[2 * i],
                route_port: ports[2 * i + 1],
                store: root.path().join(format!("n{i}")),
                log: root.path().join(format!("n{i}.log")),
                child: Mutex::new(None),
            })
            .collect();
        let cluster = Self {
            servers,
            _root: root,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// How many servers the cluster has (running or not).
    pub fn size(&self) -> usize {
        self.servers.len()
    }

    /// Server `i`'s client URL, e.g. `nats://127.0.0.1:40123`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// Every server's client URL, comma-separated: a node's `SALESBOY_NATS_URL`.
    pub fn urls(&self) -> String {
        (0..self.size())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`'s log file (all its starts, appended).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.servers[i].log.clone()
    }

    /// Whether server `i`'s process runs.
    pub fn is_running(&self, i: usize) -> bool {
        let mut child = self.servers[i].child.lock();
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// Kills server `i` with SIGKILL and reaps it; a server that does not run is left as it is.
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.servers[i].child.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store (it must not run) and waits until it
    /// listens for clients.
    pub fn restart(&self, i: usize) -> Result<(), NatsServerError> {
        self.spawn(i)
    }

    /// Waits until the cluster's JetStream answers with every server in it: a KV bucket
    /// replicated on all of them can be created and written (it is deleted after). The error
    /// names what failed last.
    pub async fn wait_jetstream(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let options = NatsBusOptions {
            name: "salesboy-test-probe".into(),
            kv_replicas: self.size(),
            ..NatsBusOptions::default()
        };
        let bus = NatsBus::connect(&self.urls(), options)
            .await
            .map_err(|e| e.to_string())?;
        let bus: Arc<dyn Bus> = Arc::new(bus);
        let mut last = String::from("not tried");
        while tokio::time::Instant::now() < deadline {
            let attempt = async {
                let kv = bus.kv(PROBE_BUCKET, 1).await.map_err(|e| e.to_string())?;
                kv.put("probe", bytes::Bytes::from_static(b"1"))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => {
                    if let Some(client) = bus.nats_client() {
                        let js = async_nats::jetstream::new(client);
                        let _ = js
                            .delete_stream(salesboy_protocol::subjects::kv_stream(PROBE_BUCKET))
                            .await;
                    }
                    return Ok(());
                }
                Ok(Err(error)) => last = error,
                Err(_) => last = "timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the nats cluster's jetstream did not answer within {timeout:?}: {last}"
        ))
    }

    fn spawn(&self, i: usize) -> Result<(), NatsServerError> {
        let server = &self.servers[i];
        let mut slot = server.child.lock();
        let routes = self
            .servers
            .iter()
            .filter(|other| other.name != server.name)
            .map(|other| format!("nats://127.0.0.1:{}", other.route_port))
            .collect::<Vec<_>>()
            .join(",");
        let binary = nats_server_binary();
        let mut child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(server.client_port.to_string())
            .args(["-js", "-sd"])
            .arg(&server.store)
            .args([
                "-n",
                &server.name,
                "--cluster_name",
                CLUSTER_NAME,
                "--cluster",
            ])
            .arg(format!("nats://127.0.0.1:{}", server.route_port))
            .arg("--routes")
            .arg(routes)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NatsServerError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        match wait_listening(&mut child, Some(server.log.clone())) {
            Ok(_) => {
                *slot = Some(child);
                Ok(())
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
