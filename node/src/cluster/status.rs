//! What the cluster looks like: nodes with their load, capacity and state, and where the
//! tenants are placed. Served by `GET /api/cluster` and printed by `salesboy status`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use salesboy_protocol::ProtocolRange;
use salesboy_protocol::subjects::{DIRECTORY_BUCKET, LEADER_BUCKET, LEADER_KEY, NODES_BUCKET};
use serde::{Deserialize, Serialize};

use super::ClusterMember;
use super::directory::DirectoryEntry;
use super::membership::{CallLoad, NodeRecord};
use crate::bus::{Bus, BusError};

/// How long [`ClusterStatus::read`] may take.
pub const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// Every node that has a membership record, by id.
    pub nodes: Vec<NodeStatus>,
    /// Tenants placed across the cluster.
    pub tenants: usize,
    /// The leader (rebalancing, failover), if one is known.
    pub leader: Option<String>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: String,
    /// Where its HTTP server listens.
    pub http_addr: String,
    /// Its software version.
    pub version: String,
    /// The cluster protocol versions it speaks: `"1"`, or a span such as `"1-2"`.
    pub protocol: String,
    /// Whether it speaks a protocol version in common with the node (or CLI) that answers;
    /// a node that does not is refused: never placed on or moved to.
    pub compatible: bool,
    /// Whether it is alive (its heartbeat is recent).
    pub alive: bool,
    /// Whether it is handing its tenants over before stopping.
    pub draining: bool,
    /// Tenants the directory places on it.
    pub placed: usize,
    /// Tenants active on it now (placed tenants idle out and come back on demand).
    pub tenants: u64,
    /// Conversations active on it.
    pub conversations: u64,
    /// The most tenants it hosts.
    pub max_tenants: u64,
    /// Its resident memory in bytes.
    pub rss_bytes: u64,
    /// Its CPU use between its last two heartbeats, in percent of one core (0: unknown).
    pub cpu_percent: f32,
    /// Bot replies it sent since it started (its last heartbeat).
    pub replies_sent: u64,
    /// Their summed time in the gateway (everything but the debounce and the LLM), in ms:
    /// two readings give the mean in between.
    pub reply_gateway_ms: u64,
    /// Their summed time in the LLM, in ms.
    pub reply_llm_ms: u64,
    /// The calls it made since it started and how many failed (two readings give the error
    /// rate in between).
    pub calls: CallLoad,
}

impl NodeStatus {
    fn from_record(record: &NodeRecord, alive: bool, compatible: bool, placed: usize) -> Self {
        Self {
            node_id: record.node.to_string(),
            http_addr: record.http_addr.clone(),
            version: record.version.clone(),
            protocol: record.protocol.to_string(),
            compatible,
            alive,
            draining: record.draining,
            placed,
            tenants: record.tenants,
            conversations: record.conversations,
            max_tenants: record.max_tenants,
            rss_bytes: record.rss_bytes,
            cpu_percent: record.cpu_percent,
            replies_sent: record.replies.sent,
            reply_gateway_ms: record.replies.gateway_ms,
            reply_llm_ms: record.replies.llm_ms,
            calls: record.calls,
        }
    }
}

impl ClusterStatus {
    /// The live view of a running cluster node: its membership and directory caches.
    pub fn of(cluster: &ClusterMember) -> Self {
        let placements = cluster.directory().cached_all();
        let mut placed: HashMap<String, usize> = HashMap::new();
        for (_, versioned) in &placements {
            *placed.entry(versioned.entry.node.to_string()).or_default() += 1;
        }
        let nodes = cluster
            .membership()
            .view()
            .into_iter()
            .map(|view| {
                let count = placed.get(view.record.node.as_str()).copied().unwrap_or(0);
                NodeStatus::from_record(&view.record, view.alive, view.compatible, count)
            })
            .collect();
        Self {
            nodes,
            tenants: placements.len(),
            leader: cluster.leader().map(|l| l.to_string()),
        }
    }

    /// A snapshot read straight from the buckets (for the CLI, which is not a member). A
    /// node counts as alive when its last heartbeat, by its own clock, is younger than
    /// `failure_timeout` by this machine's clock: close enough for a status display.
    /// [`BusError::Timeout`] when the buckets are not read within [`STATUS_READ_TIMEOUT`]
    /// (a listing of a bucket's keys waits for the server to tell it has them all).
    pub async fn read(bus: &dyn Bus, failure_timeout: Duration) -> Result<Self, BusError> {
        tokio::time::timeout(
            STATUS_READ_TIMEOUT,
            Self::read_buckets(bus, failure_timeout),
        )
        .await
        .map_err(|_| BusError::Timeout)?
    }

    async fn read_buckets(bus: &dyn Bus, failure_timeout: Duration) -> Result<Self, BusError> {
        let nodes_kv = bus.kv(NODES_BUCKET, 1).await?;
        let directory_kv = bus.kv(DIRECTORY_BUCKET, 1).await?;
        let leader_kv = bus.kv(LEADER_BUCKET, 1).await?;
        let kv = |e: crate::bus::KvError| BusError::Other(e.to_string());
        let mut placed: HashMap<String, usize> = HashMap::new();
        let placements = directory_kv.entries().await.map_err(kv)?;
        for entry in &placements {
            if let Ok(placement) = serde_json::from_slice::<DirectoryEntry>(&entry.value) {
                *placed.entry(placement.node.to_string()).or_default() += 1;
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let timeout_ms = i64::try_from(failure_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut nodes = Vec::new();
        for entry in nodes_kv.entries().await.map_err(kv)? {
            let Ok(record) = serde_json::from_slice::<NodeRecord>(&entry.value) else {
                continue;
            };
            let alive = heartbeat_is_fresh(now_ms, record.heartbeat_ms, timeout_ms);
            let count = placed.get(record.node.as_str()).copied().unwrap_or(0);
            let compatible = ProtocolRange::BUILD.overlaps(record.protocol);
            nodes.push(NodeStatus::from_record(&record, alive, compatible, count));
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let leader = leader_kv
            .get(LEADER_KEY)
            .await
            .map_err(kv)?
            .and_then(|entry| serde_json::from_slice::<serde_json::Value>(&entry.value).ok())
            .and_then(|value| {
                value
                    .get("node")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned)
            });
        Ok(Self {
            nodes,
            tenants: placements.len(),
            leader,
        })
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "NODE", "HTTP", "STATE", "PLACED", "ACTIVE", "CONVS", "CAPACITY", "RSS MB", "PROTOCOL"
        );
        for node in &self.nodes {
            let state = match (node.alive, node.compatible, node.draining) {
                (false, _, _) => "dead",
                (true, false, _) => "refused",
                (true, true, true) => "draining",
                (true, true, false) => "alive",
            };
            let leader = if self.leader.as_deref() == Some(node.node_id.as_str()) {
                " *"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:<9} {:>8} {:>8} {:>8} {:>8} {:>9.1} {:>9}",
                format!("{}{leader}", node.node_id),
                node.http_addr,
                state,
                node.placed,
                node.tenants,
                node.conversations,
                node.max_tenants,
                node.rss_bytes as f64 / 1_048_576.0,
                node.protocol
            );
        }
        let _ = writeln!(
            out,
            "{} tenants placed; * = leader; refused = speaks no protocol version in common",
            self.tenants
        );
        out
    }
}

/// Whether a heartbeat written at `heartbeat_ms` (read from the membership bucket, so any
/// value) is younger than `timeout_ms` at `now_ms`; no overflow on extreme values.
fn heartbeat_is_fresh(now_ms: i64, heartbeat_ms: i64, timeout_ms: i64) -> bool {
    now_ms.saturating_sub(heartbeat_ms) < timeout_ms
}

#[cfg(test)]
mod tests {
    use super::heartbeat_is_fresh;

    #[test]
    fn extreme_heartbeats_do_not_overflow() {
        assert!(heartbeat_is_fresh(10_000, 9_000, 5_000));
        assert!(!heartbeat_is_fresh(10_000, 1_000, 5_000));
        assert!(!heartbeat_is_fresh(10_000, i64::MIN, 5_000));
        assert!(heartbeat_is_fresh(10_000, i64::MAX, 5_000));
        assert!(!heartbeat_is_fresh(i64::MAX, i64::MIN, i64::MAX));
    }
}
