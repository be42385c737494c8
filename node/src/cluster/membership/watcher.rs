//! The watch of the nodes bucket: which nodes are alive, left or dead, on this node's own
//! monotonic clock (see the parent module).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use salesboy_protocol::{NodeId, ProtocolRange};
use tokio::sync::{Notify, broadcast};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{error, info, warn};

use super::{MembershipEvent, NodeRecord, REWATCH_BACKOFF, Tracked, lock};
use salesboy_protocol::subjects::NODES_BUCKET;

use crate::bus::{ALL_KEYS, Kv, KvEvent, KvOp, KvWatch};

/// The watch task: turns the bucket's changes and silences into the live view.
pub(super) struct Watcher {
    pub(super) kv: Arc<dyn Kv>,
    pub(super) nodes: Arc<Mutex<BTreeMap<NodeId, Tracked>>>,
    pub(super) events: broadcast::Sender<MembershipEvent>,
    pub(super) failure_timeout: Duration,
    /// What this node speaks: a node with no version in common is tracked but refused.
    pub(super) protocol: ProtocolRange,
    /// Woken when the view changed outside the watch (counted afresh on unfencing), so the
    /// next expiry is taken from it.
    pub(super) recount: Arc<Notify>,
}

impl Watcher {
    pub(super) async fn run(self) {
        let mut backoff = REWATCH_BACKOFF.0;
        loop {
            match self.kv.watch(ALL_KEYS).await {
                Ok(watch) => {
                    self.restart_timers();
                    self.follow(watch, &mut backoff).await;
                    warn!(bucket = NODES_BUCKET, "nodes watch ended, watching again");
                }
                Err(e) => warn!(bucket = NODES_BUCKET, error = %e, "cannot watch nodes, retrying"),
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(REWATCH_BACKOFF.1);
        }
    }

    /// Applies the watch's events and expires silent nodes until the watch ends.
    async fn follow(&self, mut watch: KvWatch, backoff: &mut Duration) {
        loop {
            let deadline = self.next_expiry();
            tokio::select! {
                biased;
                event = watch.next() => match event {
                    Some(event) => {
                        *backoff = REWATCH_BACKOFF.0;
                        self.apply(event);
                    }
                    None => return,
                },
                () = sleep_until_some(deadline) => self.expire(Instant::now()),
                () = self.recount.notified() => {}
            }
        }
    }

    /// While not watching, nobody was seen (or not seen) writing: every live node's silence
    /// is counted afresh from now.
    fn restart_timers(&self) {
        restart_silences(&mut lock(&self.nodes), Instant::now());
    }

    fn apply(&self, event: KvEvent) {
        let Ok(node) = NodeId::new(event.key.as_str()) else {
            warn!(key = %event.key, "ignoring a nodes bucket key that is not a node id");
            return;
        };
        let mut nodes = lock(&self.nodes);
        match event.op {
            KvOp::Delete => {
                if nodes.remove(&node).is_some_and(|tracked| {
                    tracked.alive() && self.protocol.overlaps(tracked.record.protocol)
                }) {
                    info!(node = %node, "node left the cluster");
                    let _ = self.events.send(MembershipEvent::Left(node));
                }
            }
            KvOp::Put => {
                let record = match serde_json::from_slice::<NodeRecord>(&event.value) {
                    Ok(record) if record.node == node => record,
                    Ok(record) => {
                        warn!(key = %node, record_node = %record.node, "ignoring a node record under another node's key");
                        return;
                    }
                    Err(e) => {
                        warn!(node = %node, error = %e, "ignoring an unreadable node record");
                        return;
                    }
                };
                let now = Instant::now();
                let compatible = self.protocol.overlaps(record.protocol);
                let newly_refused = !compatible
                    && nodes
                        .get(&node)
                        .is_none_or(|t| t.record.protocol != record.protocol);
                if newly_refused {
                    error!(
                        node = %node,
                        node_version = %record.version,
                        node_protocol = %record.protocol,
                        protocol = %self.protocol,
                        "refusing a node that speaks no cluster protocol version in common with this one: it is never placed on or moved to (docs/upgrades.md)"
                    );
                }
                match nodes.get_mut(&node) {
                    // A replay (the watch started again): no news.
                    Some(tracked) if event.revision <= tracked.revision => {}
                    Some(tracked) => {
                        tracked.record = record;
                        tracked.revision = event.revision;
                        tracked.changed_at = now;
                        if tracked.declared_dead_at.take().is_some() && compatible {
                            info!(node = %node, "node is back");
                            let _ = self.events.send(MembershipEvent::Joined(node));
                        }
                    }
                    None => {
                        nodes.insert(
                            node.clone(),
                            Tracked {
                                record,
                                revision: event.revision,
                                changed_at: now,
                                declared_dead_at: None,
                            },
                        );
                        if compatible {
                            info!(node = %node, "node joined the cluster");
                            let _ = self.events.send(MembershipEvent::Joined(node));
                        }
                    }
                }
            }
        }
    }

    /// When the next live node times out, if any is alive.
    fn next_expiry(&self) -> Option<Instant> {
        lock(&self.nodes)
            .values()
            .filter(|t| t.alive())
            .map(|t| t.changed_at + self.failure_timeout)
            .min()
    }

    fn expire(&self, now: Instant) {
        let mut nodes = lock(&self.nodes);
        for (node, tracked) in nodes.iter_mut() {
            if tracked.alive() && now >= tracked.changed_at + self.failure_timeout {
                tracked.declared_dead_at = Some(now);
                warn!(
                    node = %node,
                    silent_ms = now.duration_since(tracked.changed_at).as_millis(),
                    "node declared dead"
                );
                if self.protocol.overlaps(tracked.record.protocol) {
                    let _ = self.events.send(MembershipEvent::Left(node.clone()));
                }
            }
        }
    }
}

/// Counts afresh what this node saw while it was cut off, before it serves again: every
/// node it declared dead at or after `since` (the start of its last successful heartbeat
/// before the fence) is alive again, and every live node's silence is counted from `now`, as
/// when the watch starts again. A node that could not write could not see the others write
/// either, so those deaths, and the silences under way, may be only its own; acting on them
/// would fail over the tenants of a node that is serving them. A node still silent is
/// declared dead again `failure_timeout` after `now`.
pub(super) fn count_afresh_after_cut_off(
    nodes: &Mutex<BTreeMap<NodeId, Tracked>>,
    events: &broadcast::Sender<MembershipEvent>,
    protocol: ProtocolRange,
    since: Instant,
    now: Instant,
) {
    let mut nodes = lock(nodes);
    for (node, tracked) in nodes.iter_mut() {
        if tracked.declared_dead_at.is_some_and(|at| at >= since) {
            tracked.declared_dead_at = None;
            info!(node = %node, "counting a node declared dead while this node was cut off as alive again");
            if protocol.overlaps(tracked.record.protocol) {
                let _ = events.send(MembershipEvent::Joined(node.clone()));
            }
        }
    }
    restart_silences(&mut nodes, now);
}

/// Counts every live node's silence afresh from `now`.
fn restart_silences(nodes: &mut BTreeMap<NodeId, Tracked>, now: Instant) {
    for tracked in nodes.values_mut().filter(|t| t.alive()) {
        tracked.changed_at = now;
    }
}

/// Sleeps until `deadline`, forever if there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
