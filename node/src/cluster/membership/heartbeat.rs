//! This node's heartbeat: writing its record every beat, and fencing itself when the writes
//! stop succeeding in time (see the parent module on the timing guarantee).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use salesboy_protocol::NodeId;
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, error, info, warn};

use super::watcher::count_afresh_after_cut_off;
use super::{LoadFn, MembershipConfig, MembershipEvent, NodeInfo, NodeRecord, Tracked, now_ms};
use crate::bus::{BusError, Kv, KvError};

/// Writes this node's record.
pub(super) struct Heartbeat {
    pub(super) kv: Arc<dyn Kv>,
    pub(super) me: NodeId,
    pub(super) info: NodeInfo,
    pub(super) load: LoadFn,
    pub(super) draining: Arc<AtomicBool>,
    pub(super) started_ms: i64,
}

impl Heartbeat {
    pub(super) fn record(&self) -> NodeRecord {
        let load = (self.load)();
        NodeRecord {
            node: self.me.clone(),
            http_addr: self.info.http_addr.clone(),
            version: self.info.version.clone(),
            protocol: self.info.protocol,
            max_tenants: self.info.max_tenants,
            tenants: load.tenants,
            conversations: load.conversations,
            rss_bytes: load.rss_bytes,
            cpu_percent: load.cpu_percent,
            replies: load.replies,
            calls: load.calls,
            draining: self.draining.load(Ordering::Relaxed),
            started_ms: self.started_ms,
            heartbeat_ms: now_ms(),
        }
    }

    pub(super) async fn write(&self) -> Result<u64, KvError> {
        let value = serde_json::to_vec(&self.record())
            .map_err(|e| KvError::Bus(BusError::Other(format!("cannot encode record: {e}"))))?;
        self.kv.put(self.me.as_str(), Bytes::from(value)).await
    }
}

/// The heartbeat task: writes the record every beat and fences when writes keep failing.
pub(super) struct HeartbeatLoop {
    pub(super) heartbeat: Heartbeat,
    pub(super) config: MembershipConfig,
    /// When the last successful write began.
    pub(super) last_ok: Instant,
    pub(super) fenced: watch::Sender<bool>,
    pub(super) events: broadcast::Sender<MembershipEvent>,
    pub(super) beat_now: Arc<Notify>,
    /// The view of the others, counted afresh on unfencing.
    pub(super) nodes: Arc<Mutex<BTreeMap<NodeId, Tracked>>>,
    /// Wakes the watch task after that, for its next expiry.
    pub(super) recount: Arc<Notify>,
}

impl HeartbeatLoop {
    pub(super) async fn run(mut self) {
        let me = self.heartbeat.me.clone();
        let mut next_beat = self.last_ok + self.config.heartbeat;
        let mut failures: u64 = 0;
        loop {
            // Until the next beat (or an early one), fencing on time meanwhile.
            loop {
                let fence_at = self.fence_deadline();
                tokio::select! {
                    // Polled in order: a fixed order keeps runs reproducible (simulation).
                    biased;
                    () = sleep_until(next_beat) => break,
                    () = self.beat_now.notified() => break,
                    () = sleep_until(fence_at), if !self.is_fenced() => self.fence(),
                }
            }
            let began = Instant::now();
            next_beat = began + self.config.heartbeat;
            // Never wait past the fence deadline: the fence must not depend on the bus.
            let budget = if self.is_fenced() {
                self.config.heartbeat
            } else {
                self.config
                    .heartbeat
                    .min(self.fence_deadline().saturating_duration_since(began))
            };
            match timeout(budget, self.heartbeat.write()).await {
                Ok(Ok(revision)) => {
                    let cut_off_since = self.last_ok;
                    if failures > 0 {
                        info!(node = %me, failures, "heartbeat succeeds again");
                    }
                    failures = 0;
                    self.last_ok = began;
                    debug!(node = %me, revision, "heartbeat written");
                    if self.is_fenced() {
                        self.unfence(cut_off_since);
                    }
                }
                Ok(Err(e)) => {
                    failures += 1;
                    log_failure(&me, failures, &e);
                }
                Err(_) => {
                    failures += 1;
                    log_failure(&me, failures, &"timed out");
                }
            }
            if !self.is_fenced() && Instant::now() >= self.fence_deadline() {
                self.fence();
            }
        }
    }

    fn fence_deadline(&self) -> Instant {
        self.last_ok + self.config.fence_after
    }

    fn is_fenced(&self) -> bool {
        *self.fenced.borrow()
    }

    fn fence(&self) {
        error!(
            node = %self.heartbeat.me,
            fence_after_ms = self.config.fence_after.as_millis(),
            "heartbeat failing for too long, fencing this node"
        );
        self.fenced.send_replace(true);
        let _ = self.events.send(MembershipEvent::Fenced);
    }

    /// Serves again, once what this node saw while cut off (since `cut_off_since`) is
    /// counted afresh.
    fn unfence(&self, cut_off_since: Instant) {
        count_afresh_after_cut_off(
            &self.nodes,
            &self.events,
            self.heartbeat.info.protocol,
            cut_off_since,
            Instant::now(),
        );
        self.recount.notify_one();
        info!(node = %self.heartbeat.me, "heartbeat restored, unfencing this node");
        self.fenced.send_replace(false);
        let _ = self.events.send(MembershipEvent::Unfenced);
    }
}

/// The first failure of a run is a warning, the rest are debug (the fence says the rest).
fn log_failure(me: &NodeId, failures: u64, error: &dyn fmt::Display) {
    if failures == 1 {
        warn!(node = %me, error = %error, "heartbeat failed");
    } else {
        debug!(node = %me, failures, error = %error, "heartbeat failed again");
    }
}
