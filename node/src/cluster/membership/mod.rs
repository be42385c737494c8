//! Membership: which nodes are in the cluster and alive, and self-fencing (architecture §7).
//!
//! Every node writes its [`NodeRecord`] (address, version, capacity, measured load, draining
//! flag) as JSON into the KV bucket [`NODES_BUCKET`] under its node id, every
//! [`MembershipConfig::heartbeat`], and watches the bucket to build its view of the others.
//!
//! # Failure detection never trusts another machine's clock
//!
//! A node is **alive** while its record keeps changing: each write takes a new revision, and
//! this node notes, on its own monotonic clock, when it last saw each record change. A node
//! whose record has not changed for [`MembershipConfig::failure_timeout`] is **dead**; a node
//! whose record is deleted has **left** (a clean exit, seen at once). Both are reported as
//! [`MembershipEvent::Left`]; a dead node whose record changes again is
//! [`MembershipEvent::Joined`] again. [`NodeRecord::heartbeat_ms`] is informational only.
//!
//! A record found when the watch starts (or restarts after the bus gave up on it) gets the
//! benefit of the doubt: it counts as alive from that moment and is declared dead only after
//! `failure_timeout` without a change. So a node is declared dead only by an observer that
//! has been watching the bucket for `failure_timeout` without seeing a write from it (a
//! watch that stalls without ending, because this node is cut off, looks like silence: the
//! cut-off node then reports the others dead, but it has fenced itself by then, see below);
//! a freshly started node reports a long-dead node's leftover record as alive for up to
//! `failure_timeout`, then as left (which lets the leader fail over any tenant the directory
//! still gives it). Records of dead nodes stay in the bucket (the 2.9 server has no per-key
//! TTL) and in [`Membership::view`] as not alive, until that node id writes again or the
//! leader removes them after a grace period ([`Membership::forget_dead`], run by retention).
//!
//! # Self-fencing
//!
//! A node whose own heartbeat has not succeeded for [`MembershipConfig::fence_after`] (the
//! bus is disconnected, writes fail or hang) is **fenced**: [`Membership::fenced`] turns true
//! and [`MembershipEvent::Fenced`] is sent, and the node must stop all its tenants. When a
//! heartbeat succeeds again it is [`MembershipEvent::Unfenced`]. Before it unfences, it
//! counts afresh what it saw while cut off: a node it declared dead since the start of its
//! last successful heartbeat is alive again ([`MembershipEvent::Joined`]), and every live
//! node's silence is counted from that moment, as when the watch starts again. Cut off, it
//! could not see the others write, so those deaths and silences may be its own; when every
//! node was cut off at once, acting on them would fail over tenants their host is serving
//! again (the old host's send and the new host's resend of the same pending reply). The
//! price: a node that really died meanwhile is failed over one failure timeout later, and
//! may be offered placements until then (they fail and are retried elsewhere).
//!
//! The timing guarantee: let `S` be the moment (on the fenced node's clock) its last
//! successful heartbeat write *began*. No survivor can have seen that write before `S`, so
//! none declares the node dead before `S + failure_timeout` (measured on the survivor's own
//! clock, from when it saw the write). The node fences at `S + fence_after`, and
//! `fence_after < failure_timeout` is enforced. The difference (the margin, 1.5 s by default:
//! heartbeat 1 s, fence 3.5 s, failure 5 s) must cover what can delay the fence: clock *rate*
//! differences between machines (monotonic clocks, so no wall-clock skew is involved),
//! scheduling delays and pauses of the fenced process (a stopped VM, a blocked runtime
//! thread, swapping), and the time the node takes to actually stop its tenants. A pause
//! longer than the margin can break the guarantee; the epoch check on SQL writes (§7) is the
//! backstop that then refuses the stale node's writes.
//!
//! Heartbeat writes are bounded by a timeout (at most one heartbeat, and never past the fence
//! deadline), so a dead connection cannot hang the loop or delay the fence.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use salesboy_protocol::subjects::NODES_BUCKET;
use salesboy_protocol::{NodeId, ProtocolRange};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::background::{Background, until_cancelled};
use crate::bus::{Bus, BusError, Kv, KvError};

mod heartbeat;
mod watcher;

use heartbeat::{Heartbeat, HeartbeatLoop};
use watcher::Watcher;

/// History kept per key in the nodes bucket: only the latest record matters.
const NODES_HISTORY: u8 = 1;

/// How many events a [`Membership::subscribe`] receiver may fall behind before it lags.
const EVENT_CAPACITY: usize = 256;

/// The first and the longest wait before watching the bucket again after the watch failed.
const REWATCH_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// A node's membership record: what it writes into [`NODES_BUCKET`] at every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node (also the record's key).
    pub node: NodeId,
    /// Where its HTTP server listens (`host:port`).
    pub http_addr: String,
    /// Its software version.
    pub version: String,
    /// The cluster protocol versions it speaks (records of builds that announced none: 1).
    #[serde(default = "ProtocolRange::first")]
    pub protocol: ProtocolRange,
    /// The most tenants it may host.
    pub max_tenants: u64,
    /// How many tenants it hosts.
    pub tenants: u64,
    /// How many conversations it has active.
    pub conversations: u64,
    /// Its resident memory, in bytes.
    pub rss_bytes: u64,
    /// Its CPU use in percent of one core; 0 if unknown.
    #[serde(default)]
    pub cpu_percent: f32,
    /// The bot replies it sent since it started, and their summed times (zero from builds
    /// that did not report them).
    #[serde(default)]
    pub replies: ReplyLoad,
    /// The calls it made since it started, and how many failed (zero from builds that did
    /// not report them).
    #[serde(default)]
    pub calls: CallLoad,
    /// Whether it is draining: it takes no new tenants and gives its own away.
    pub draining: bool,
    /// When it started, in milliseconds since the Unix epoch (its own clock).
    pub started_ms: i64,
    /// When it wrote this record, in milliseconds since the Unix epoch (its own clock;
    /// informational only, failure detection does not use it).
    pub heartbeat_ms: i64,
}

/// A node's measured load, read from the load function at every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeLoad {
    /// How many tenants it hosts.
    pub tenants: u64,
    /// How many conversations it has active.
    pub conversations: u64,
    /// Its resident memory, in bytes.
    pub rss_bytes: u64,
    /// Its CPU use in percent of one core; 0 if unknown.
    pub cpu_percent: f32,
    /// Bot replies sent since the node started and their summed times.
    pub replies: ReplyLoad,
    /// Calls made since the node started, and failures.
    pub calls: CallLoad,
}

/// The calls a node made since it started and how many failed, by kind: two readings give
/// the error rate in between (what the alerts watch, `salesboy_error_rate_ratio`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallLoad {
    /// Webhook deliveries from Meta persisted.
    pub webhooks_ok: u64,
    /// Webhook deliveries from Meta that could not be persisted.
    pub webhooks_failed: u64,
    /// Messages WhatsApp accepted.
    pub sends_ok: u64,
    /// Messages WhatsApp refused for good.
    pub sends_failed: u64,
    /// LLM provider calls answered.
    pub llm_ok: u64,
    /// LLM provider calls that failed.
    pub llm_failed: u64,
}

impl CallLoad {
    /// The totals of `counters`.
    pub fn of(counters: &salesboy_actors::services::Counters) -> Self {
        let (webhooks_ok, webhooks_failed) = counters.webhooks.totals();
        let (sends_ok, sends_failed) = counters.sends.totals();
        let (llm_ok, llm_failed) = counters.llm_calls.totals();
        Self {
            webhooks_ok,
            webhooks_failed,
            sends_ok,
            sends_failed,
            llm_ok,
            llm_failed,
        }
    }
}

/// Bot replies a node sent since it started, and their summed time in the gateway
/// (everything but the debounce and the LLM) and in the LLM: two readings give the means
/// in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLoad {
    /// Replies sent.
    pub sent: u64,
    /// Their gateway time, in ms.
    pub gateway_ms: u64,
    /// Their LLM time, in ms.
    pub llm_ms: u64,
}

impl ReplyLoad {
    /// The totals of `counters`.
    pub fn of(counters: &salesboy_actors::services::Counters) -> Self {
        let (sent, gateway_ms, llm_ms) = counters.replies.totals();
        Self {
            sent,
            gateway_ms,
            llm_ms,
        }
    }
}

/// The function that measures this node's load at every heartbeat.
pub type LoadFn = Arc<dyn Fn() -> NodeLoad + Send + Sync>;

/// What a node says about itself that does not change while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where its HTTP server listens (`host:port`).
    pub http_addr: String,
    /// Its software version.
    pub version: String,
    /// The cluster protocol versions it speaks: [`ProtocolRange::BUILD`] (a test may announce
    /// another range to play a node of another build).
    pub protocol: ProtocolRange,
    /// The most tenants it may host.
    pub max_tenants: u64,
}

/// Membership timings. See the module docs for why `fence_after < failure_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often this node writes its record (default 1 s).
    pub heartbeat: Duration,
    /// How long a node's record may stay unchanged before it is dead (default 5 s).
    pub failure_timeout: Duration,
    /// How long this node's own heartbeat may keep failing before it fences itself (default
    /// 3.5 s: `failure_timeout` minus a 1.5 s margin). Must be longer than `heartbeat` and
    /// shorter than `failure_timeout`.
    pub fence_after: Duration,
}

impl MembershipConfig {
    /// The default margin between fencing and being declared dead.
    pub const DEFAULT_FENCE_MARGIN: Duration = Duration::from_millis(1500);

    /// Checks `heartbeat < fence_after < failure_timeout` and `heartbeat > 0`.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |reason: &str| Err(MembershipError::InvalidConfig(reason.to_owned()));
        if self.heartbeat.is_zero() {
            return invalid("heartbeat must be positive");
        }
        if self.fence_after <= self.heartbeat {
            return invalid("fence_after must be longer than heartbeat");
        }
        if self.fence_after >= self.failure_timeout {
            return invalid("fence_after must be shorter than failure_timeout");
        }
        Ok(())
    }

    /// The timings for a failure timeout: the defaults at 5 s (heartbeat every 1 s, fence
    /// after 3.5 s); a shorter timeout scales the heartbeat (a fifth of it) and the margin
    /// (three tenths of it) down.
    pub fn for_failure_timeout(failure_timeout: Duration) -> Self {
        let margin = Self::DEFAULT_FENCE_MARGIN.min(failure_timeout * 3 / 10);
        Self {
            heartbeat: Duration::from_secs(1).min(failure_timeout / 5),
            failure_timeout,
            fence_after: failure_timeout - margin,
        }
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        let failure_timeout = Duration::from_secs(5);
        Self {
            heartbeat: Duration::from_secs(1),
            failure_timeout,
            fence_after: failure_timeout - Self::DEFAULT_FENCE_MARGIN,
        }
    }
}

/// A node as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Its latest record.
    pub record: NodeRecord,
    /// Whether its record changed within the failure timeout (counted afresh when this
    /// node unfences, see the module doc).
    pub alive: bool,
    /// Whether this node and it speak a protocol version in common; a node that does not
    /// is never placed on or moved to (it may still be alive).
    pub compatible: bool,
}

/// A change in membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A node appeared, or came back after being declared dead (its record changed, or this
    /// node withdrew a death it declared while cut off).
    Joined(NodeId),
    /// A node was declared dead (no heartbeat for the failure timeout) or left cleanly.
    Left(NodeId),
    /// This node could not write its heartbeat for `fence_after`: it must stop its tenants.
    Fenced,
    /// This node's heartbeat succeeds again.
    Unfenced,
}

/// Why membership could not start or leave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The configuration breaks a rule of [`MembershipConfig::validate`].
    #[error("invalid membership config: {0}")]
    InvalidConfig(String),
    /// The nodes bucket could not be opened.
    #[error("cannot open the nodes bucket: {0}")]
    Bucket(#[source] BusError),
    /// This node's record could not be written or deleted.
    #[error("cannot write this node's record: {0}")]
    Write(#[source] KvError),
    /// Writing or deleting this node's record took too long.
    #[error("timed out writing this node's record")]
    Timeout,
    /// A live node speaks no protocol version in common with this one: this node does not
    /// join (docs/upgrades.md).
    #[error(
        "node {peer} (salesboy {peer_version}) speaks cluster protocol {peer_protocol} and this build speaks {own_protocol}: they have no version in common, so this node does not join. Upgrade one step at a time through a release that speaks both (docs/upgrades.md)"
    )]
    IncompatiblePeer {
        /// The live node.
        peer: NodeId,
        /// Its software version.
        peer_version: String,
        /// What it speaks.
        peer_protocol: ProtocolRange,
        /// What this node speaks.
        own_protocol: ProtocolRange,
    },
    /// The nodes bucket could not be read to check the live nodes' protocol versions.
    #[error("cannot read the nodes bucket: {0}")]
    Read(#[source] KvError),
}

/// How long after its last heartbeat (by the writer's clock) a record counts as a live node
/// at start, beyond the failure timeout: room for clock skew between machines.
const START_CHECK_SKEW: Duration = Duration::from_secs(30);

/// This node's membership: its heartbeat, its view of the cluster, its fence.
///
/// Cancelling the background it was started on stops both tasks without deleting the record
/// (as a crash would: the others declare this node dead after the failure timeout);
/// [`Membership::leave`] exits cleanly.
pub struct Membership {
    me: NodeId,
    config: MembershipConfig,
    protocol: ProtocolRange,
    kv: Arc<dyn Kv>,
    nodes: Arc<Mutex<BTreeMap<NodeId, Tracked>>>,
    events: broadcast::Sender<MembershipEvent>,
    fenced: watch::Receiver<bool>,
    draining: Arc<AtomicBool>,
    beat_now: Arc<Notify>,
    /// Until [`Membership::leave`].
    tasks: Mutex<Option<Tasks>>,
}

/// The running tasks, for [`Membership::leave`].
struct Tasks {
    /// Stops the heartbeat (a child of `watch`).
    heartbeat_stop: CancellationToken,
    heartbeat: JoinHandle<Option<()>>,
    /// Stops both tasks (a child of the background's token).
    watch_stop: CancellationToken,
}

/// What this node knows of one node.
struct Tracked {
    record: NodeRecord,
    revision: u64,
    /// When this node last saw the record change (its own monotonic clock), or when it
    /// unfenced, if later: silence is counted from there.
    changed_at: Instant,
    /// When this node declared it dead; `None` while it counts as alive.
    declared_dead_at: Option<Instant>,
}

impl Tracked {
    fn alive(&self) -> bool {
        self.declared_dead_at.is_none()
    }
}

impl Membership {
    /// Joins the cluster: opens [`NODES_BUCKET`], writes this node's first record (failing if
    /// that does not succeed within `fence_after`), then spawns the heartbeat and the watch
    /// on `background`.
    pub async fn start(
        bus: Arc<dyn Bus>,
        me: NodeId,
        info: NodeInfo,
        load: LoadFn,
        config: MembershipConfig,
        background: &Background,
    ) -> Result<Self, MembershipError> {
        config.validate()?;
        let kv = bus
            .kv(NODES_BUCKET, NODES_HISTORY)
            .await
            .map_err(MembershipError::Bucket)?;
        refuse_incompatible_peers(kv.as_ref(), &me, info.protocol, config).await?;
        let draining = Arc::new(AtomicBool::new(false));
        let protocol = info.protocol;
        let heartbeat = Heartbeat {
            kv: Arc::clone(&kv),
            me: me.clone(),
            info,
            load,
            draining: Arc::clone(&draining),
            started_ms: now_ms(),
        };
        let started = Instant::now();
        match timeout(config.fence_after, heartbeat.write()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(MembershipError::Write(e)),
            Err(_) => return Err(MembershipError::Timeout),
        }
        info!(node = %me, "joined the cluster");

        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (fence_sender, fenced) = watch::channel(false);
        let nodes = Arc::new(Mutex::new(BTreeMap::new()));
        let beat_now = Arc::new(Notify::new());
        let recount = Arc::new(Notify::new());
        let watch_stop = background.token().child_token();
        let heartbeat_stop = watch_stop.child_token();
        let heartbeat = background.tracker().spawn(until_cancelled(
            heartbeat_stop.clone(),
            HeartbeatLoop {
                heartbeat,
                config,
                last_ok: started,
                fenced: fence_sender,
                events: events.clone(),
                beat_now: Arc::clone(&beat_now),
                nodes: Arc::clone(&nodes),
                recount: Arc::clone(&recount),
            }
            .run(),
        ));
        background.tracker().spawn(until_cancelled(
            watch_stop.clone(),
            Watcher {
                kv: Arc::clone(&kv),
                nodes: Arc::clone(&nodes),
                events: events.clone(),
                failure_timeout: config.failure_timeout,
                protocol,
                recount,
            }
            .run(),
        ));
        Ok(Self {
            me,
            config,
            protocol,
            kv,
            nodes,
            events,
            fenced,
            draining,
            beat_now,
            tasks: Mutex::new(Some(Tasks {
                heartbeat_stop,
                heartbeat,
                watch_stop,
            })),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// The timings in use.
    pub fn config(&self) -> MembershipConfig {
        self.config
    }

    /// The cluster protocol versions this node speaks.
    pub fn protocol(&self) -> ProtocolRange {
        self.protocol
    }

    /// The newest protocol version every live compatible node speaks: the version a layout
    /// change may start writing once it is this high (docs/upgrades.md).
    pub fn cluster_protocol(&self) -> u8 {
        lock(&self.nodes)
            .values()
            .filter(|t| t.alive())
            .filter_map(|t| self.protocol.common(t.record.protocol))
            .fold(self.protocol.newest, u8::min)
    }

    /// Every node known, alive or dead, sorted by node id. Nodes that left cleanly are not
    /// listed.
    pub fn view(&self) -> Vec<NodeView> {
        lock(&self.nodes)
            .values()
            .map(|t| NodeView {
                record: t.record.clone(),
                alive: t.alive(),
                compatible: self.protocol.overlaps(t.record.protocol),
            })
            .collect()
    }

    /// The records of the live nodes this node can work with (they speak a protocol version
    /// in common), sorted by node id: the nodes tenants may be placed on.
    pub fn live_nodes(&self) -> Vec<NodeRecord> {
        lock(&self.nodes)
            .values()
            .filter(|t| t.alive() && self.protocol.overlaps(t.record.protocol))
            .map(|t| t.record.clone())
            .collect()
    }

    /// Whether `node` is alive as this node sees it.
    pub fn is_alive(&self, node: &NodeId) -> bool {
        lock(&self.nodes).get(node).is_some_and(Tracked::alive)
    }

    /// Membership changes from now on (including this node's own `Joined`/`Left` as its
    /// watch sees them, and its `Fenced`/`Unfenced`).
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// Whether this node is fenced: true from the moment its heartbeat has failed for
    /// `fence_after` until one succeeds again.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.clone()
    }

    /// Sets the draining flag; the record is written at once (and at every beat after).
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
        self.beat_now.notify_one();
    }

    /// Removes the records of the nodes that `forget` accepts among those declared dead
    /// (never this node) whose record has not changed for `failure_timeout + grace`; how
    /// many. A record is deleted only if the bucket still holds the revision this node saw
    /// die, so a node coming back just then keeps its new record.
    pub async fn forget_dead(
        &self,
        grace: Duration,
        forget: impl Fn(&NodeId) -> bool,
    ) -> Result<u64, MembershipError> {
        let silent_for = self.config.failure_timeout.saturating_add(grace);
        let candidates: Vec<(NodeId, u64)> = lock(&self.nodes)
            .iter()
            .filter(|(node, t)| {
                !t.alive() && **node != self.me && t.changed_at.elapsed() >= silent_for
            })
            .map(|(node, t)| (node.clone(), t.revision))
            .collect();
        let mut forgotten = 0;
        for (node, revision) in candidates {
            if !forget(&node) {
                continue;
            }
            let current = timeout(self.config.fence_after, self.kv.get(node.as_str()))
                .await
                .map_err(|_| MembershipError::Timeout)?
                .map_err(MembershipError::Write)?;
            if current.is_some_and(|entry| entry.revision != revision) {
                continue;
            }
            timeout(self.config.fence_after, self.kv.delete(node.as_str()))
                .await
                .map_err(|_| MembershipError::Timeout)?
                .map_err(MembershipError::Write)?;
            info!(node = %node, "dead node's membership record removed");
            forgotten += 1;
        }
        Ok(forgotten)
    }

    /// Leaves the cluster cleanly: stops the heartbeat, deletes this node's record (the
    /// others see it leave at once) and stops watching. Calling it again does nothing.
    pub async fn leave(&self) -> Result<(), MembershipError> {
        let tasks = lock(&self.tasks).take();
        let Some(tasks) = tasks else {
            return Ok(());
        };
        // No heartbeat may land after the delete: wait for the task to be gone.
        tasks.heartbeat_stop.cancel();
        let _ = tasks.heartbeat.await;
        let deleted = timeout(self.config.fence_after, self.kv.delete(self.me.as_str())).await;
        tasks.watch_stop.cancel();
        match deleted {
            Ok(Ok(())) => {
                info!(node = %self.me, "left the cluster");
                Ok(())
            }
            Ok(Err(e)) => Err(MembershipError::Write(e)),
            Err(_) => Err(MembershipError::Timeout),
        }
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me)
            .field("config", &self.config)
            .field("fenced", &*self.fenced.borrow())
            .finish_non_exhaustive()
    }
}

/// Refuses to join when a live node (its last heartbeat, by its own clock, within the failure
/// timeout plus [`START_CHECK_SKEW`]) speaks no protocol version in common with `own`.
async fn refuse_incompatible_peers(
    kv: &dyn Kv,
    me: &NodeId,
    own: ProtocolRange,
    config: MembershipConfig,
) -> Result<(), MembershipError> {
    let entries = timeout(config.fence_after, kv.entries())
        .await
        .map_err(|_| MembershipError::Timeout)?
        .map_err(MembershipError::Read)?;
    let live_since = now_ms().saturating_sub(
        i64::try_from((config.failure_timeout + START_CHECK_SKEW).as_millis()).unwrap_or(i64::MAX),
    );
    for entry in entries {
        let Ok(record) = serde_json::from_slice::<NodeRecord>(&entry.value) else {
            continue;
        };
        if &record.node == me || record.heartbeat_ms < live_since {
            continue;
        }
        if !own.overlaps(record.protocol) {
            return Err(MembershipError::IncompatiblePeer {
                peer: record.node,
                peer_version: record.version,
                peer_protocol: record.protocol,
                own_protocol: own,
            });
        }
    }
    Ok(())
}

/// Locks a mutex; the critical sections leave the map consistent, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This machine's wall clock in milliseconds since the Unix epoch (informational fields).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_fences_1_5_s_before_the_failure_timeout() {
        let config = MembershipConfig::default();
        assert_eq!(config.heartbeat, Duration::from_secs(1));
        assert_eq!(config.failure_timeout, Duration::from_secs(5));
        assert_eq!(config.fence_after, Duration::from_millis(3500));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn timings_scale_down_with_a_short_failure_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(
            MembershipConfig::for_failure_timeout(ms(5_000)),
            MembershipConfig::default()
        );
        assert_eq!(
            MembershipConfig::for_failure_timeout(ms(2_000)),
            MembershipConfig {
                heartbeat: ms(400),
                failure_timeout: ms(2_000),
                fence_after: ms(1_400),
            }
        );
        assert_eq!(
            MembershipConfig::for_failure_timeout(ms(10_000)),
            MembershipConfig {
                heartbeat: ms(1_000),
                failure_timeout: ms(10_000),
                fence_after: ms(8_500),
            }
        );
    }

    #[test]
    fn config_must_fence_before_failure_and_after_a_beat() {
        let ms = Duration::from_millis;
        let config = |heartbeat, fence_after, failure_timeout| MembershipConfig {
            heartbeat: ms(heartbeat),
            failure_timeout: ms(failure_timeout),
            fence_after: ms(fence_after),
        };
        assert!(config(100, 350, 600).validate().is_ok());
        for bad in [
            config(0, 350, 600),
            config(100, 600, 600),
            config(100, 700, 600),
            config(100, 100, 600),
        ] {
            assert!(
                matches!(bad.validate(), Err(MembershipError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn record_json_round_trips_and_cpu_is_optional() {
        let record = NodeRecord {
            node: NodeId::new("n1").unwrap(),
            http_addr: "10.0.0.1:8080".into(),
            version: "0.1.0".into(),
            protocol: ProtocolRange::BUILD,
            max_tenants: 100,
            tenants: 3,
            conversations: 7,
            rss_bytes: 1 << 20,
            cpu_percent: 12.5,
            replies: ReplyLoad::default(),
            calls: CallLoad::default(),
            draining: false,
            started_ms: 1,
            heartbeat_ms: 2,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["node"], "n1");
        assert_eq!(
            serde_json::from_value::<NodeRecord>(json.clone()).unwrap(),
            record
        );
        let mut without_cpu = json;
        without_cpu.as_object_mut().unwrap().remove("cpu_percent");
        let parsed: NodeRecord = serde_json::from_value(without_cpu).unwrap();
        assert_eq!(parsed.cpu_percent, 0.0);
    }

    #[test]
    fn a_record_without_a_protocol_speaks_version_1() {
        let json = serde_json::json!({
            "node": "n1", "http_addr": "10.0.0.1:8080", "version": "0.1.0", "max_tenants": 100,
            "tenants": 0, "conversations": 0, "rss_bytes": 0, "draining": false,
            "started_ms": 1, "heartbeat_ms": 2
        });
        let record: NodeRecord = serde_json::from_value(json).unwrap();
        assert_eq!(record.protocol, ProtocolRange::FIRST);
    }
}
