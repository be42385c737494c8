//! The rebalancer's leader: one node at a time holds a lease in KV (architecture §7).
//!
//! The lease is the key [`LEADER_KEY`] of bucket [`LEADER_BUCKET`], holding
//! `{"node": <id>, "acquired_ms": <ms since epoch>}` ([`LeaseRecord`]). Each node runs one
//! [`Leadership`] task:
//!
//! - no lease value: `create` it; whoever creates it leads;
//! - the lease is this node's: renew it every [`LeaseConfig::renew_every`] with `update`
//!   at the revision it knows (compare-and-set);
//! - another node holds it: watch it; if its revision does not change for
//!   [`LeaseConfig::lease`] on this node's monotonic clock, take it over with `update` at the
//!   revision last seen. Only one contender can win that compare-and-set; the others see the
//!   winner's write. Losing the race is normal.
//!
//! # Timing guarantee
//!
//! Let `S` be the moment (on the leader's clock) its last successful renewal *began*. Nobody
//! can have seen that write before `S`, and a contender waits `lease` after the last change
//! it saw, so nobody takes over before `S + lease`. The leader stops leading at
//! `S + step_down_after` (default 3.5 s for a 5 s lease): [`Leadership::is_leader`] compares
//! with that deadline on every call, so it turns false on time even if the task is late. The
//! margin `lease − step_down_after` (1.5 s by default) must cover clock rate differences,
//! pauses of the leader's process and finishing the step in progress (a rebalancing round
//! checks `is_leader` before each move). Clean exits call [`Leadership::step_down`], which
//! deletes the lease: the others watch it and take over at once instead of after `lease`.
//! After a crash, a new leader is chosen `lease` (plus up to one `renew_every`) after the
//! crashed leader's last renewal.
//!
//! Leadership only decides who runs the rebalancer; the directory's compare-and-set and
//! epochs keep tenants safe even if two nodes briefly both believed they led.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use salesboy_protocol::NodeId;
use salesboy_protocol::subjects::{LEADER_BUCKET, LEADER_KEY};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::membership::now_ms;
use crate::background::Background;
use crate::bus::{Bus, BusError, Kv, KvError, KvEvent, KvOp, KvWatch};

/// History kept for the lease key: only the latest value matters.
const LEASE_HISTORY: u8 = 1;

/// The first and the longest wait before watching the lease again after the watch failed.
const REWATCH_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// The lease's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The leader.
    pub node: NodeId,
    /// When it acquired the lease, in milliseconds since the Unix epoch (its own clock;
    /// informational only).
    pub acquired_ms: i64,
}

/// Lease timings. See the module docs for the guarantee they give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How often the leader renews its lease (default 1 s).
    pub renew_every: Duration,
    /// How long a lease that is not renewed stays valid: others take over after seeing no
    /// renewal for this long (default 5 s).
    pub lease: Duration,
    /// How long the leader keeps leading without a successful renewal (default 3.5 s: `lease`
    /// minus a 1.5 s margin). Must be longer than `renew_every` and shorter than `lease`.
    pub step_down_after: Duration,
}

impl LeaseConfig {
    /// The default margin between the leader stepping down and others taking over.
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(1500);

    /// Checks `0 < renew_every < step_down_after < lease`.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |reason: &str| Err(LeaderError::InvalidConfig(reason.to_owned()));
        if self.renew_every.is_zero() {
            return invalid("renew_every must be positive");
        }
        if self.step_down_after <= self.renew_every {
            return invalid("step_down_after must be longer than renew_every");
        }
        if self.step_down_after >= self.lease {
            return invalid("step_down_after must be shorter than lease");
        }
        Ok(())
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        let lease = Duration::from_secs(5);
        Self {
            renew_every: Duration::from_secs(1),
            lease,
            step_down_after: lease - Self::DEFAULT_MARGIN,
        }
    }
}

/// Why leadership could not start or step down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderError {
    /// The configuration breaks a rule of [`LeaseConfig::validate`].
    #[error("invalid lease config: {0}")]
    InvalidConfig(String),
    /// The leader bucket could not be opened.
    #[error("cannot open the leader bucket: {0}")]
    Bucket(#[source] BusError),
    /// The lease could not be deleted (the others take over when it expires instead).
    #[error("cannot delete the lease: {0}")]
    Delete(#[source] KvError),
    /// Deleting the lease took too long (the others take over when it expires instead).
    #[error("timed out deleting the lease")]
    Timeout,
}

/// This node's part in the leader election. Cancelling the background it was started on stops
/// the task without releasing the lease (as a crash would); [`Leadership::step_down`]
/// releases it.
pub struct Leadership {
    me: NodeId,
    leader: watch::Receiver<Option<NodeId>>,
    /// Until when this node leads, if it holds the lease.
    leading_until: Arc<Mutex<Option<Instant>>>,
    step_down: mpsc::Sender<oneshot::Sender<Result<(), LeaderError>>>,
}

impl Leadership {
    /// Opens [`LEADER_BUCKET`] and starts contending for the lease, on `background`.
    pub async fn start(
        bus: Arc<dyn Bus>,
        me: NodeId,
        config: LeaseConfig,
        background: &Background,
    ) -> Result<Self, LeaderError> {
        config.validate()?;
        let kv = bus
            .kv(LEADER_BUCKET, LEASE_HISTORY)
            .await
            .map_err(LeaderError::Bucket)?;
        let (leader_sender, leader) = watch::channel(None);
        let leading_until = Arc::new(Mutex::new(None));
        let (step_down, commands) = mpsc::channel(1);
        background.spawn_until_cancelled(
            Contender {
                kv,
                me: me.clone(),
                config,
                leader: leader_sender,
                leading_until: Arc::clone(&leading_until),
                held: None,
                seen: None,
                next_attempt: Instant::now(),
            }
            .run(commands),
        );
        Ok(Self {
            me,
            leader,
            leading_until,
            step_down,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// Whether this node leads now: it holds the lease and renewed it less than
    /// `step_down_after` ago.
    pub fn is_leader(&self) -> bool {
        lock(&self.leading_until).is_some_and(|until| Instant::now() < until)
    }

    /// The leader as this node sees it: itself while it leads, the holder of the lease it last
    /// saw otherwise, `None` when there is no lease (or it is this node's own expired one).
    pub fn changes(&self) -> watch::Receiver<Option<NodeId>> {
        self.leader.clone()
    }

    /// Stops contending and, if this node leads, deletes the lease so another node takes over
    /// at once (for clean exits and drains). Afterwards this node never leads again; calling
    /// it again does nothing.
    pub async fn step_down(&self) -> Result<(), LeaderError> {
        let (reply, result) = oneshot::channel();
        if self.step_down.send(reply).await.is_err() {
            return Ok(());
        }
        result.await.unwrap_or(Ok(()))
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("me", &self.me)
            .field("leader", &*self.leader.borrow())
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

/// The lease as this node holds it.
struct Held {
    revision: u64,
    /// When the last successful renewal (or acquisition) began.
    renewed_at: Instant,
    value: Bytes,
}

/// The lease as this node last saw it change.
struct Seen {
    /// `None` if the value could not be read.
    holder: Option<NodeId>,
    revision: u64,
    changed_at: Instant,
}

/// The election task.
struct Contender {
    kv: Arc<dyn Kv>,
    me: NodeId,
    config: LeaseConfig,
    leader: watch::Sender<Option<NodeId>>,
    leading_until: Arc<Mutex<Option<Instant>>>,
    held: Option<Held>,
    seen: Option<Seen>,
    /// No write or read of the lease before this.
    next_attempt: Instant,
}

impl Contender {
    async fn run(mut self, mut commands: mpsc::Receiver<oneshot::Sender<Result<(), LeaderError>>>) {
        let mut watch: Option<KvWatch> = None;
        let mut rewatch_at = Instant::now();
        let mut backoff = REWATCH_BACKOFF.0;
        loop {
            if watch.is_none() && Instant::now() >= rewatch_at {
                match timeout(self.budget(), self.kv.watch(LEADER_KEY)).await {
                    Ok(Ok(opened)) => {
                        watch = Some(opened);
                        backoff = REWATCH_BACKOFF.0;
                    }
                    failed => {
                        if let Ok(Err(e)) = failed {
                            debug!(node = %self.me, error = %e, "cannot watch the lease, retrying");
                        }
                        rewatch_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(REWATCH_BACKOFF.1);
                    }
                }
            }
            let mut wake = self.next_wakeup();
            if watch.is_none() {
                wake = wake.min(rewatch_at);
            }
            tokio::select! {
                // Polled in order: a fixed order keeps runs reproducible (simulation).
                biased;
                event = next_event(&mut watch) => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        warn!(node = %self.me, "lease watch ended, watching again");
                        watch = None;
                        rewatch_at = Instant::now() + backoff;
                    }
                },
                () = sleep_until(wake) => self.act().await,
                command = commands.recv() => {
                    // `None`: the `Leadership` is gone without stepping down; keep the lease
                    // (it expires), as when the background is cancelled.
                    if let Some(reply) = command {
                        let _ = reply.send(self.release().await);
                    }
                    return;
                }
            }
        }
    }

    /// When something is due: a renewal or the step-down deadline while leading; an attempt
    /// to acquire the lease (at once if there is none, when it expires otherwise).
    fn next_wakeup(&self) -> Instant {
        match (&self.held, &self.seen) {
            (Some(held), _) => self
                .next_attempt
                .min(held.renewed_at + self.config.step_down_after),
            (None, None) => self.next_attempt,
            (None, Some(seen)) => self.next_attempt.max(seen.changed_at + self.config.lease),
        }
    }

    /// How long a bus operation may take now: one renewal period, and while leading never
    /// past the step-down deadline.
    fn budget(&self) -> Duration {
        match &self.held {
            Some(held) => self.config.renew_every.min(
                (held.renewed_at + self.config.step_down_after)
                    .saturating_duration_since(Instant::now()),
            ),
            None => self.config.renew_every,
        }
    }

    async fn act(&mut self) {
        let now = Instant::now();
        if let Some(held) = &self.held {
            if now >= held.renewed_at + self.config.step_down_after {
                warn!(
                    node = %self.me,
                    step_down_after_ms = self.config.step_down_after.as_millis(),
                    "cannot renew the lease, stepping down"
                );
                self.seen = Some(Seen {
                    holder: Some(self.me.clone()),
                    revision: held.revision,
                    changed_at: held.renewed_at,
                });
                self.held = None;
                self.publish();
            } else if now >= self.next_attempt {
                self.renew().await;
            }
            return;
        }
        if now < self.next_attempt {
            return;
        }
        match &self.seen {
            None => self.acquire(None).await,
            Some(seen) if now >= seen.changed_at + self.config.lease => {
                let revision = seen.revision;
                self.acquire(Some(revision)).await;
            }
            Some(_) => {}
        }
    }

    /// Creates the lease (`expected` = `None`) or takes over the one at revision `expected`.
    async fn acquire(&mut self, expected: Option<u64>) {
        let began = Instant::now();
        self.next_attempt = began + self.config.renew_every;
        let record = LeaseRecord {
            node: self.me.clone(),
            acquired_ms: now_ms(),
        };
        let value = match serde_json::to_vec(&record) {
            Ok(value) => Bytes::from(value),
            Err(e) => {
                warn!(node = %self.me, error = %e, "cannot encode the lease");
                return;
            }
        };
        let write = async {
            match expected {
                None => self.kv.create(LEADER_KEY, value.clone()).await,
                Some(revision) => self.kv.update(LEADER_KEY, value.clone(), revision).await,
            }
        };
        match timeout(self.config.renew_every, write).await {
            Ok(Ok(revision)) => {
                info!(node = %self.me, revision, "acquired the leader lease");
                self.held = Some(Held {
                    revision,
                    renewed_at: began,
                    value,
                });
                self.seen = Some(Seen {
                    holder: Some(self.me.clone()),
                    revision,
                    changed_at: Instant::now(),
                });
                self.publish();
            }
            // Somebody else got there first: learn who.
            Ok(Err(KvError::AlreadyExists | KvError::WrongRevision { .. })) => {
                self.refresh().await;
            }
            Ok(Err(e)) => debug!(node = %self.me, error = %e, "cannot acquire the lease"),
            Err(_) => debug!(node = %self.me, "acquiring the lease timed out"),
        }
    }

    async fn renew(&mut self) {
        let Some(held) = &self.held else {
            return;
        };
        let began = Instant::now();
        self.next_attempt = began + self.config.renew_every;
        let (value, revision) = (held.value.clone(), held.revision);
        match timeout(self.budget(), self.kv.update(LEADER_KEY, value, revision)).await {
            Ok(Ok(revision)) => {
                if let Some(held) = &mut self.held {
                    held.revision = revision;
                    held.renewed_at = began;
                }
                self.seen = Some(Seen {
                    holder: Some(self.me.clone()),
                    revision,
                    changed_at: Instant::now(),
                });
                self.publish();
            }
            // Taken over, deleted, or an earlier renewal that timed out went through.
            Ok(Err(KvError::WrongRevision { .. })) => self.refresh().await,
            Ok(Err(e)) => warn!(node = %self.me, error = %e, "lease renewal failed"),
            Err(_) => warn!(node = %self.me, "lease renewal timed out"),
        }
    }

    /// Reads the lease as it is now.
    async fn refresh(&mut self) {
        match timeout(self.budget(), self.kv.get(LEADER_KEY)).await {
            Ok(Ok(Some(entry))) => {
                let holder = read_holder(&entry.value);
                self.observe(holder, entry.revision);
            }
            Ok(Ok(None)) => self.observe_gone(),
            Ok(Err(e)) => debug!(node = %self.me, error = %e, "cannot read the lease"),
            Err(_) => debug!(node = %self.me, "reading the lease timed out"),
        }
    }

    fn on_event(&mut self, event: KvEvent) {
        if self
            .seen
            .as_ref()
            .is_some_and(|seen| event.revision <= seen.revision)
        {
            // Already known (a replay after watching again, or our own write).
            return;
        }
        match event.op {
            KvOp::Put => self.observe(read_holder(&event.value), event.revision),
            KvOp::Delete => self.observe_gone(),
        }
    }

    /// The lease was written at `revision`, naming `holder`.
    fn observe(&mut self, holder: Option<NodeId>, revision: u64) {
        if self
            .seen
            .as_ref()
            .is_some_and(|seen| revision <= seen.revision)
        {
            return;
        }
        if holder.as_ref() == Some(&self.me) {
            // Only this node writes its own name: a write of ours whose answer we missed.
            // Keep leading on it, counting from the last renewal we know succeeded.
            if let Some(held) = &mut self.held {
                held.revision = revision;
            }
        } else if self.held.take().is_some() {
            warn!(node = %self.me, leader = ?holder.as_ref().map(NodeId::as_str), "lost the leader lease");
        }
        self.seen = Some(Seen {
            holder,
            revision,
            changed_at: Instant::now(),
        });
        self.publish();
    }

    /// The lease is gone: try to acquire it at once.
    fn observe_gone(&mut self) {
        if self.held.take().is_some() {
            warn!(node = %self.me, "the leader lease was deleted");
        }
        self.seen = None;
        self.next_attempt = Instant::now();
        self.publish();
    }

    /// Step down for good: delete the lease if this node leads.
    async fn release(&mut self) -> Result<(), LeaderError> {
        let leading = self
            .held
            .take()
            .is_some_and(|held| Instant::now() < held.renewed_at + self.config.step_down_after);
        self.seen = None;
        self.publish();
        if !leading {
            return Ok(());
        }
        match timeout(self.config.renew_every, self.kv.delete(LEADER_KEY)).await {
            Ok(Ok(())) => {
                info!(node = %self.me, "stepped down as leader");
                Ok(())
            }
            Ok(Err(e)) => Err(LeaderError::Delete(e)),
            Err(_) => Err(LeaderError::Timeout),
        }
    }

    /// Tells `is_leader` and `changes` what this node now knows.
    fn publish(&self) {
        *lock(&self.leading_until) = self
            .held
            .as_ref()
            .map(|held| held.renewed_at + self.config.step_down_after);
        let leader = match (&self.held, &self.seen) {
            (Some(_), _) => Some(self.me.clone()),
            (None, Some(seen)) => seen.holder.clone().filter(|node| *node != self.me),
            (None, None) => None,
        };
        self.leader.send_if_modified(|current| {
            let changed = *current != leader;
            if changed {
                *current = leader;
            }
            changed
        });
    }
}

/// The holder named by a lease value; `None` (and a warning) if it cannot be read.
fn read_holder(value: &Bytes) -> Option<NodeId> {
    match serde_json::from_slice::<LeaseRecord>(value) {
        Ok(record) => Some(record.node),
        Err(e) => {
            warn!(error = %e, "unreadable leader lease");
            None
        }
    }
}

/// The next event of the watch, or never if there is none.
async fn next_event(watch: &mut Option<KvWatch>) -> Option<KvEvent> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lease_steps_down_1_5_s_before_takeover() {
        let config = LeaseConfig::default();
        assert_eq!(config.renew_every, Duration::from_secs(1));
        assert_eq!(config.lease, Duration::from_secs(5));
        assert_eq!(config.step_down_after, Duration::from_millis(3500));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn config_must_step_down_before_the_lease_expires() {
        let ms = Duration::from_millis;
        let config = |renew_every, step_down_after, lease| LeaseConfig {
            renew_every: ms(renew_every),
            lease: ms(lease),
            step_down_after: ms(step_down_after),
        };
        assert!(config(100, 350, 600).validate().is_ok());
        for bad in [
            config(0, 350, 600),
            config(100, 100, 600),
            config(100, 600, 600),
        ] {
            assert!(
                matches!(bad.validate(), Err(LeaderError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lease_value_is_the_documented_json() {
        let record = LeaseRecord {
            node: NodeId::new("n1").unwrap(),
            acquired_ms: 42,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, r#"{"node":"n1","acquired_ms":42}"#);
        assert_eq!(read_holder(&Bytes::from(json)), Some(record.node));
        assert_eq!(read_holder(&Bytes::from_static(b"nope")), None);
    }
}
