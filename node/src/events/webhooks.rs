//! HTTP event webhooks' delivery worker: POSTs each published event to the tenant's webhooks
//! that want it, signed, one event at a time per chat, retried with exponential backoff and
//! jitter until the retry window ends, then dead-lettered (`docs/protocol.md`, "HTTP event
//! webhooks").
//!
//! Deliveries of just-published events are handed to the worker in memory, with one
//! `webhook_batches` row written at publishing standing for them (decision 0015): a first
//! attempt that succeeds writes nothing. A delivery enters the queue in SQL
//! (`webhook_deliveries`) when it fails (tried again later), when it waits behind one of its
//! chat that failed, or when the worker cannot hold it; the batch row goes once each of its
//! deliveries is delivered or queued. So nothing is lost when the node stops: the next
//! worker (the restarted node, the next leader) recovers the batch rows left behind,
//! queueing their events again, and carries on with the queue. Delivery is at least once:
//! a node killed between a receiver's 2xx and the batch's settling delivers that event
//! again; receivers deduplicate on `X-Salesboy-Event-Id`. One worker runs at a time: the
//! leader's on a cluster, the node's own alone.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::ports::Clock;
use salesboy_protocol::events::{
    EVENT_ID_HEADER, EVENT_SIGNATURE_HEADER, EVENT_TIMESTAMP_HEADER, sign_event,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::cluster::ClusterMember;
use crate::store::{AttemptOutcome, AttemptRecord, DueDelivery, QueueKey, SqlStore};

/// A write for the outcome recorder.
#[derive(Debug)]
enum Write {
    /// What became of a delivery.
    Record(AttemptRecord),
    /// A batch whose deliveries are all delivered or queued: its row goes.
    Settled(i64),
}

/// The recorder's report of one transaction: the records written (or not).
struct Recorded {
    records: Vec<AttemptRecord>,
    written: bool,
}

/// Attempts under way at once (at most one per queue, i.e. webhook and chat): a slow or
/// hanging receiver holds one of them, the others go on.
const CONCURRENCY: usize = 128;

/// The most outcomes recorded in one transaction.
const RECORD_BATCH: usize = 512;

/// The most queue heads held in memory; queues beyond wait for room.
const MAX_HEADS: usize = 20_000;

/// The most queues whose heads are read in one query.
const READ_BATCH: usize = 500;

/// How often the whole queue is read again, for deliveries queued by another node (a
/// leader before this one) or re-queued behind the worker's back.
const RESYNC: Duration = Duration::from_secs(30);

/// The longest the worker sleeps without looking at the queue (a follower checks whether
/// it leads now).
const IDLE: Duration = Duration::from_millis(500);

/// Waits between attempts of one delivery: 1 s, doubling up to 60 s, each plus jitter.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
    retries: usize::MAX,
};

/// How long a new leader waits before it mirrors queues (the leader before it may still be
/// queueing deliveries for a moment); see [`Schedule`].
const LEADER_SETTLED: Duration = Duration::from_secs(5);

/// Waits after the queue itself could not be read or written.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

/// The longest settled batches wait for the recorder's next write before they are written
/// on their own (a node killed meanwhile delivers their events again).
const SETTLE_EVERY: Duration = Duration::from_secs(1);

/// How old a batch row not held by the worker must be before a periodic resync recovers it
/// (a row just written is on its way to the worker).
const ORPHANED_AFTER_MS: i64 = 60_000;

/// Longest error text kept with a failed delivery.
const MAX_ERROR_CHARS: usize = 300;

/// How much of a receiver's answer is read (and dropped) so that its connection can be
/// used again; a longer answer closes the connection.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// How long a delivery is retried before it is dead-lettered.
    pub retry_window: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// The delivery worker; see the module docs.
pub struct WebhookDeliverer {
    /// The queue.
    pub store: SqlStore,
    /// The HTTP client (rustls; its timeout is per attempt).
    pub http: reqwest::Client,
    /// Retry window and timeout.
    pub settings: WebhookSettings,
    /// The cluster, whose leader delivers; `None` alone.
    pub cluster: Option<Arc<ClusterMember>>,
    /// The time of attempts and signatures.
    pub clock: Arc<dyn Clock>,
}

/// What the worker knows of the queues: the heads it holds (by when they are due), the
/// queues under way (attempted, outcome not yet recorded), the queues whose head it must
/// read (new deliveries, or the one before was recorded), the queues held in memory, and
/// the deliveries handed over at publishing that are not in the queue.
///
/// A queue held in memory ("mirrored") has nothing in SQL: its deliveries were handed over
/// at publishing ([`Queued::fresh`](crate::store::Queued)) and the worker holds them all,
/// its head (held or under way) and the rest in order behind it, so a chat's next event is
/// attempted without a write or a read. A handed-over delivery starts or extends a mirror
/// only while the worker is in step with the queue ([`Schedule::in_step`]): it read the
/// whole queue after recovering the batches left behind, and every delivery queued since
/// reached it through the store (this node publishes alone); the queue must also have
/// nothing in SQL (nothing held, read, under way or being queued). Otherwise the delivery
/// is queued in SQL behind what is there, and read back in turn. A failed attempt of a
/// mirrored queue, or the queue named to be read, sends what the mirror holds to SQL too.
///
/// Each handed-over delivery counts toward its batch ([`Schedule::batches`]) until it is
/// delivered or its queuing is written; then the batch is settled and its row deleted.
#[derive(Default)]
struct Schedule {
    heads: HashMap<QueueKey, DueDelivery>,
    timeline: BTreeSet<(i64, i64, QueueKey)>,
    under_way: HashSet<QueueKey>,
    unread: HashSet<QueueKey>,
    mirrored: HashMap<QueueKey, VecDeque<DueDelivery>>,
    /// Deliveries behind the heads of mirrored queues.
    mirrored_len: usize,
    in_step: bool,
    /// Handed-over deliveries of each batch not yet delivered or queued.
    batches: HashMap<i64, usize>,
    /// Batches recovered into the queue: deliveries handed over for them are in it.
    recovered: HashSet<i64>,
    /// Queues with deliveries on their way into SQL (written, not yet recorded).
    queuing: HashMap<QueueKey, usize>,
    /// For the recorder: handed-over deliveries to queue, and settled batches.
    writes: Vec<Write>,
}

impl Schedule {
    /// Deliveries held in memory: heads and mirrored queues' tails.
    fn held(&self) -> usize {
        self.heads.len() + self.mirrored_len
    }

    /// Holds a head read from the queue, unless its queue is under way or held already.
    fn hold(&mut self, head: DueDelivery) {
        if self.under_way.contains(&head.key) || self.heads.contains_key(&head.key) {
            return;
        }
        self.timeline
            .insert((head.next_attempt_ms, head.event.seq, head.key.clone()));
        self.heads.insert(head.key.clone(), head);
    }

    /// Marks a queue to be read, unless it is under way or its head is held (a new
    /// delivery waits behind that head; the queue is read after it). What its mirror holds,
    /// if it has one, goes to SQL: the queue may hold deliveries the mirror lacks.
    fn touch(&mut self, key: QueueKey, now_ms: i64) {
        self.spill(&key, now_ms);
        // A queue with deliveries on their way into SQL is read once they are written.
        if !self.under_way.contains(&key)
            && !self.heads.contains_key(&key)
            && !self.queuing.contains_key(&key)
        {
            self.unread.insert(key);
        }
    }

    /// Holds a head read with the whole queue. A queue held in memory that has deliveries
    /// in SQL too (recovered ones) goes to SQL whole and is read in order once written; one
    /// with deliveries on their way into SQL is read once they are written.
    fn hold_read(&mut self, head: DueDelivery, now_ms: i64) {
        if self.mirrored.contains_key(&head.key) {
            self.spill(&head.key, now_ms);
        }
        if self.queuing.contains_key(&head.key) {
            return;
        }
        self.hold(head);
    }

    /// Takes a delivery handed over at publishing (not in SQL): held as its queue's head
    /// when the queue is known empty, kept behind the head of a mirrored queue, else queued
    /// in SQL behind what is there.
    fn offer(&mut self, delivery: DueDelivery, now_ms: i64) {
        let Some(batch) = delivery.batch else {
            return;
        };
        if self.recovered.contains(&batch) {
            // Recovered into the queue before it was taken: read from there.
            return;
        }
        *self.batches.entry(batch).or_default() += 1;
        let key = delivery.key.clone();
        if self.mirrored.contains_key(&key) {
            if self.held() < MAX_HEADS {
                if let Some(tail) = self.mirrored.get_mut(&key) {
                    tail.push_back(delivery);
                    self.mirrored_len += 1;
                }
            } else {
                // No room: the queue goes to SQL.
                self.spill(&key, now_ms);
                self.queue(delivery, now_ms);
            }
            return;
        }
        let in_sql = self.under_way.contains(&key)
            || self.heads.contains_key(&key)
            || self.unread.contains(&key)
            || self.queuing.contains_key(&key);
        if !in_sql && self.in_step && self.held() < MAX_HEADS {
            self.mirrored.insert(key, VecDeque::new());
            self.hold(delivery);
        } else {
            self.queue(delivery, now_ms);
        }
    }

    /// Sends a handed-over delivery to SQL, due at `now_ms` (behind its queue's head).
    fn queue(&mut self, delivery: DueDelivery, now_ms: i64) {
        *self.queuing.entry(delivery.key.clone()).or_default() += 1;
        self.writes.push(Write::Record(AttemptRecord {
            key: delivery.key,
            seq: delivery.event.seq,
            batch: delivery.batch,
            since_ms: delivery.since_ms,
            outcome: AttemptOutcome::Queued { at_ms: now_ms },
        }));
    }

    /// Sends what the queue's mirror holds (its held head and the rest) to SQL; the mirror
    /// goes.
    fn spill(&mut self, key: &QueueKey, now_ms: i64) {
        let Some(tail) = self.mirrored.remove(key) else {
            return;
        };
        self.mirrored_len -= tail.len();
        if let Some(head) = self.heads.get(key)
            && head.batch.is_some()
        {
            let head = self.heads.remove(key).expect("held");
            self.timeline
                .remove(&(head.next_attempt_ms, head.event.seq, key.clone()));
            self.queue(head, now_ms);
        }
        for delivery in tail {
            self.queue(delivery, now_ms);
        }
    }

    /// A handed-over delivery of `batch` is delivered or its queuing written: the batch is
    /// settled once none of its deliveries is left.
    fn settle(&mut self, batch: i64) {
        if let Some(left) = self.batches.get_mut(&batch) {
            *left -= 1;
            if *left == 0 {
                self.batches.remove(&batch);
                self.writes.push(Write::Settled(batch));
            }
        }
    }

    /// Handed-over deliveries of a queue were written to SQL: once none is on its way, the
    /// queue is read.
    fn queued(&mut self, key: QueueKey, now_ms: i64) {
        if let Some(left) = self.queuing.get_mut(&key) {
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.queuing.remove(&key);
        }
        self.touch(key, now_ms);
    }

    /// A queue's attempt was delivered (and recorded, if it was in SQL) or recorded as
    /// failed: the next delivery of a mirrored queue is held at once; any other queue is
    /// read again.
    fn recorded(&mut self, key: QueueKey, delivered: bool, now_ms: i64) {
        self.under_way.remove(&key);
        if delivered && let Some(tail) = self.mirrored.get_mut(&key) {
            match tail.pop_front() {
                Some(next) => {
                    self.mirrored_len -= 1;
                    self.hold(next);
                }
                None => {
                    self.mirrored.remove(&key);
                }
            }
            return;
        }
        self.touch(key, now_ms);
    }

    /// An attempt finished. A handed-over delivery that succeeded is done, with nothing to
    /// write: answers `false`. Anything else is to be recorded first (`true`); a failed
    /// handed-over delivery sends the rest of its chat to SQL behind it.
    fn finished(&mut self, record: &AttemptRecord, now_ms: i64) -> bool {
        match record.batch {
            Some(batch) if record.outcome == AttemptOutcome::Delivered => {
                self.settle(batch);
                self.recorded(record.key.clone(), true, now_ms);
                false
            }
            Some(_) => {
                self.spill(&record.key, now_ms);
                true
            }
            None => true,
        }
    }

    /// The recorder could not write `records`: their attempts are over and their queuings
    /// no longer on their way (the batch rows stand for them).
    fn unwritten(&mut self, records: &[AttemptRecord]) {
        for record in records {
            if matches!(record.outcome, AttemptOutcome::Queued { .. }) {
                if let Some(left) = self.queuing.get_mut(&record.key) {
                    *left -= 1;
                    if *left == 0 {
                        self.queuing.remove(&record.key);
                    }
                }
            } else {
                self.under_way.remove(&record.key);
            }
        }
    }

    /// The recorder wrote `records`: their batches settle, their queues go on.
    fn written(&mut self, records: Vec<AttemptRecord>, now_ms: i64) {
        for record in records {
            if let Some(batch) = record.batch {
                self.settle(batch);
            }
            match record.outcome {
                AttemptOutcome::Queued { .. } => self.queued(record.key, now_ms),
                AttemptOutcome::Delivered => self.recorded(record.key, true, now_ms),
                AttemptOutcome::Retry { .. } | AttemptOutcome::Dead { .. } => {
                    self.recorded(record.key, false, now_ms);
                }
            }
        }
    }

    /// The next held head due at `now_ms`, taken and marked under way.
    fn take_due(&mut self, now_ms: i64) -> Option<DueDelivery> {
        let first = self.timeline.first()?;
        if first.0 > now_ms {
            return None;
        }
        let (_, _, key) = self.timeline.pop_first()?;
        let head = self.heads.remove(&key)?;
        self.under_way.insert(key);
        Some(head)
    }

    /// When the next held head is due.
    fn next_due(&self) -> Option<i64> {
        self.timeline.first().map(|(at, _, _)| *at)
    }

    /// Forgets what was read and mirrored (not what is under way or on its way into SQL,
    /// nor the writes to make): the batches of the handed-over deliveries forgotten stay
    /// unsettled, and are recovered.
    fn forget(&mut self) {
        self.heads.clear();
        self.timeline.clear();
        self.unread.clear();
        self.mirrored.clear();
        self.mirrored_len = 0;
        self.in_step = false;
        self.batches.clear();
    }
}

impl WebhookDeliverer {
    /// Delivers until the task is cancelled.
    ///
    /// The queue is read by queue (webhook and chat), never whole on the hot path: the
    /// store hands over the deliveries of the events it marks published, whole, and names
    /// the queues that got deliveries otherwise (re-queued dead letters); the worker
    /// attempts a handed-over delivery at once when its queue is known empty or mirrored
    /// ([`Schedule`]), queues the others in SQL, reads the other queues' heads (one index
    /// probe each), attempts those due, up to [`CONCURRENCY`] at once, each started as soon
    /// as a slot is free. A handed-over delivery that succeeds writes nothing; what must be
    /// written (failed attempts, queued deliveries, attempts of deliveries read from SQL,
    /// settled batches) goes to a recorder task that writes whatever is waiting in one
    /// transaction while the next attempts run (a group commit, at most one per
    /// [`PACE`](super::PACE)) and hands the queues back, whose next heads are read then.
    /// The batches left behind are recovered and the whole queue is read at the start and
    /// on gaining the leadership; the whole queue again every [`RESYNC`].
    pub async fn run(self) {
        let this = Arc::new(self);
        let (writes_tx, writes_rx) = mpsc::unbounded_channel();
        let (recorded_tx, mut recorded_rx) = mpsc::unbounded_channel::<Recorded>();
        let recorder = tokio::spawn(Arc::clone(&this).record(writes_rx, recorded_tx));
        let mut running: JoinSet<AttemptRecord> = JoinSet::new();
        let mut schedule = Schedule::default();
        let mut resync_at: Option<tokio::time::Instant> = None;
        let mut leading_since: Option<tokio::time::Instant> = None;
        let mut recovery_due = true;
        loop {
            if recorder.is_finished() {
                warn!("webhook outcome recorder stopped; delivery stops");
                return;
            }
            let leads = this.cluster.as_ref().is_none_or(|c| c.is_leader());
            if !leads {
                // Attempts under way finish and are recorded; the next leader recovers the
                // batches of what this worker held and reads the queue itself.
                schedule.forget();
                drop(this.store.take_queued());
                resync_at = None;
                leading_since = None;
                recovery_due = true;
            } else {
                let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
                // On a cluster the leader before this one may still be publishing (and
                // holding deliveries) for a moment.
                let settled = this.cluster.is_none() || since.elapsed() >= LEADER_SETTLED;
                this.read_queue(&mut schedule, &mut resync_at, &mut recovery_due, settled)
                    .await;
                let now = this.clock.now_ms();
                while running.len() < CONCURRENCY {
                    let Some(head) = schedule.take_due(now) else {
                        break;
                    };
                    let this = Arc::clone(&this);
                    running.spawn(async move { this.deliver(head).await });
                }
            }
            let wake = if leads {
                // A head due while every slot is taken waits for a slot, not a timer.
                let next_due = schedule.next_due().filter(|_| running.len() < CONCURRENCY);
                let next = next_due.map_or(IDLE, |at| {
                    let now = this.clock.now_ms();
                    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
                        .min(IDLE)
                });
                resync_at.map_or(next, |at| {
                    next.min(at.saturating_duration_since(tokio::time::Instant::now()))
                })
            } else {
                IDLE
            };
            for write in schedule.writes.drain(..) {
                // The recorder lives as long as this loop.
                let _ = writes_tx.send(write);
            }
            tokio::select! {
                Some(joined) = running.join_next() => match joined {
                    Ok(record) => {
                        if schedule.finished(&record, this.clock.now_ms()) {
                            // The recorder lives as long as this loop.
                            let _ = writes_tx.send(Write::Record(record));
                        }
                    }
                    Err(e) => warn!(error = %e, "webhook attempt task failed"),
                },
                Some(recorded) = recorded_rx.recv() => {
                    let now = this.clock.now_ms();
                    if !recorded.written {
                        // What was to be written is not: forget what is held and recover
                        // it from the batch rows (delivering some events again).
                        schedule.unwritten(&recorded.records);
                        schedule.forget();
                        recovery_due = true;
                        resync_at = None;
                    } else {
                        schedule.written(recorded.records, now);
                    }
                    if !leads {
                        schedule.forget();
                    }
                }
                () = this.store.webhooks_queued() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Brings the schedule up to date: takes the deliveries handed over and the queues
    /// named; when a resync is due, recovers the batches left behind (if `recovery_due` and
    /// `settled`) and reads the whole queue, else the heads of the queues named and of those
    /// recorded since. `settled`: no other node publishes (the worker may recover batches
    /// and mirror queues).
    async fn read_queue(
        &self,
        schedule: &mut Schedule,
        resync_at: &mut Option<tokio::time::Instant>,
        recovery_due: &mut bool,
        settled: bool,
    ) {
        let now = tokio::time::Instant::now();
        let now_ms = self.clock.now_ms();
        match self.store.take_queued() {
            Some(queued) => {
                queued
                    .keys
                    .into_iter()
                    .for_each(|key| schedule.touch(key, now_ms));
                queued
                    .fresh
                    .into_iter()
                    .for_each(|delivery| schedule.offer(delivery, now_ms));
            }
            // Too many piled up to keep: their batches are recovered, with those of what
            // is held (the recovered events may belong to chats held in memory).
            None => {
                schedule.forget();
                *recovery_due = true;
                *resync_at = None;
            }
        }
        if resync_at.is_none_or(|at| at <= now) && settled {
            // All the batches not held when recovery is due; else those left behind a
            // while ago (a publisher that handed over to a worker no longer leading), never
            // ones just written and not yet taken.
            let written_by_ms = if *recovery_due {
                i64::MAX
            } else {
                now_ms.saturating_sub(ORPHANED_AFTER_MS)
            };
            let held: HashSet<i64> = schedule.batches.keys().copied().collect();
            match self
                .store
                .recover_webhook_batches(&held, written_by_ms, now_ms)
                .await
            {
                Ok(recovered) => {
                    if !recovered.is_empty() {
                        info!(
                            batches = recovered.len(),
                            "webhook deliveries left behind queued again"
                        );
                        metrics::counter!("salesboy_webhook_batches_recovered_total")
                            .increment(recovered.len() as u64);
                        schedule.recovered = recovered.into_iter().collect();
                    }
                    *recovery_due = false;
                }
                Err(e) => {
                    warn!(error = %e, "webhook batches not recovered, retrying");
                    *resync_at = Some(now + QUEUE_RETRY);
                    return;
                }
            }
        }
        if resync_at.is_none_or(|at| at <= now) {
            // What is under way and what is held in memory stay; the queue is read again.
            schedule.in_step = false;
            let room = MAX_HEADS.saturating_sub(schedule.heads.len());
            match self
                .store
                .due_deliveries(i64::MAX, u32::try_from(room).unwrap_or(u32::MAX))
                .await
            {
                Ok(heads) => {
                    schedule.unread.clear();
                    // Every queue with a delivery is in `heads` (or under way, or being
                    // queued): the ones left out are empty.
                    schedule.in_step = settled && !*recovery_due && heads.len() < room;
                    let now_ms = self.clock.now_ms();
                    heads
                        .into_iter()
                        .for_each(|head| schedule.hold_read(head, now_ms));
                    // A leader not yet settled reads again once it is, to get in step.
                    *resync_at = Some(now + if settled { RESYNC } else { LEADER_SETTLED });
                }
                Err(e) => {
                    warn!(error = %e, "webhook queue not read, retrying");
                    *resync_at = Some(now + QUEUE_RETRY);
                }
            }
            return;
        }
        while !schedule.unread.is_empty() && schedule.held() < MAX_HEADS {
            let keys: Vec<QueueKey> = schedule
                .unread
                .iter()
                .take(READ_BATCH.min(MAX_HEADS - schedule.held()))
                .cloned()
                .collect();
            match self.store.queue_heads(&keys).await {
                Ok(heads) => {
                    for key in &keys {
                        schedule.unread.remove(key);
                    }
                    heads.into_iter().for_each(|head| schedule.hold(head));
                }
                Err(e) => {
                    // Read whole at the next look.
                    warn!(error = %e, "webhook queue not read, retrying");
                    *resync_at = Some(now + QUEUE_RETRY);
                    return;
                }
            }
        }
    }

    /// Writes what is waiting (outcomes, queued deliveries, settled batches) in one
    /// transaction, and hands the records back. A write that fails hands them back all the
    /// same, marked not written: the worker forgets what it holds and recovers it
    /// (attempted again, at least once).
    async fn record(
        self: Arc<Self>,
        mut writes: mpsc::UnboundedReceiver<Write>,
        recorded: mpsc::UnboundedSender<Recorded>,
    ) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        // Settled batches wait for other writes, or for SETTLE_EVERY: while every delivery
        // succeeds they are all there is to write, and each write transaction takes
        // SQLite's one write lock from the hot path.
        let mut settled = Vec::new();
        let mut settled_since = tokio::time::Instant::now();
        loop {
            let received = if settled.is_empty() {
                writes.recv_many(&mut batch, RECORD_BATCH).await
            } else {
                let wait = SETTLE_EVERY.saturating_sub(settled_since.elapsed());
                tokio::time::timeout(wait, writes.recv_many(&mut batch, RECORD_BATCH))
                    .await
                    .unwrap_or(usize::MAX)
            };
            if received == 0 {
                // The worker is gone: what settled goes if it can.
                if let Err(e) = self.store.record_attempts(&[], &settled).await {
                    debug!(error = %e, "settled webhook batches not written at the end");
                }
                return;
            }
            let mut records = Vec::with_capacity(batch.len());
            for write in batch.drain(..) {
                match write {
                    Write::Record(record) => records.push(record),
                    Write::Settled(id) => {
                        if settled.is_empty() {
                            settled_since = tokio::time::Instant::now();
                        }
                        settled.push(id);
                    }
                }
            }
            if records.is_empty() && settled_since.elapsed() < SETTLE_EVERY {
                continue;
            }
            let written = match self.store.record_attempts(&records, &settled).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, deliveries = records.len(), "webhook outcomes not recorded");
                    tokio::time::sleep(QUEUE_RETRY).await;
                    false
                }
            };
            settled.clear();
            if (!records.is_empty() || !written)
                && recorded.send(Recorded { records, written }).is_err()
            {
                return;
            }
            // Let outcomes gather: fewer, larger write transactions.
            tokio::time::sleep(super::PACE).await;
        }
    }

    /// One attempt of one delivery, and what is to be recorded of it.
    async fn deliver(&self, delivery: DueDelivery) -> AttemptRecord {
        let outcome = match self.attempt(&delivery).await {
            Ok(()) => {
                metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                AttemptOutcome::Delivered
            }
            Err(error) => self.failed(&delivery, error),
        };
        AttemptRecord {
            key: delivery.key,
            seq: delivery.event.seq,
            batch: delivery.batch,
            since_ms: delivery.since_ms,
            outcome,
        }
    }

    /// A failed attempt: retried after a backoff while its retry window lasts, then
    /// dead-lettered.
    fn failed(&self, delivery: &DueDelivery, error: String) -> AttemptOutcome {
        let now = self.clock.now_ms();
        let webhook_id = delivery.webhook.id.as_str();
        let window = i64::try_from(self.settings.retry_window.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(delivery.since_ms) < window {
            metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "retried")
                .increment(1);
            debug!(webhook = webhook_id, event = delivery.event.event.id, error = %error, "webhook delivery failed, retrying");
            let attempts = usize::try_from(delivery.attempts).unwrap_or(0);
            let delay = RETRY.delays().nth(attempts).unwrap_or(RETRY.max);
            AttemptOutcome::Retry {
                at_ms: now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                error,
            }
        } else {
            metrics::counter!("salesboy_webhook_deliveries_total", "outcome" => "dead_lettered")
                .increment(1);
            warn!(
                webhook = webhook_id,
                tenant = %delivery.webhook.tenant,
                event = delivery.event.event.id,
                error = %error,
                "webhook delivery dead-lettered after its retry window"
            );
            AttemptOutcome::Dead { at_ms: now, error }
        }
    }

    /// POSTs the event; `Err` with a short reason unless the receiver answered 2xx.
    async fn attempt(&self, delivery: &DueDelivery) -> Result<(), String> {
        let event = &delivery.event.event;
        let body = serde_json::to_vec(event).map_err(|e| format!("encoding: {e}"))?;
        let timestamp = (self.clock.now_ms() / 1000).to_string();
        let signature = sign_event(delivery.webhook.secret.as_bytes(), &timestamp, &body);
        let mut response = self
            .http
            .post(&delivery.webhook.url)
            .timeout(self.settings.timeout)
            .header("content-type", "application/json")
            .header(EVENT_ID_HEADER, event.id.as_str())
            .header(EVENT_TIMESTAMP_HEADER, timestamp)
            .header(EVENT_SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| short(&describe(&e)))?;
        let status = response.status();
        // Read what the receiver answered (up to a bound) so that its connection goes back
        // to the pool: an answer dropped unread closes it, and the next delivery connects.
        let mut read = 0;
        while read < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// A reqwest error without its URL (a webhook URL may carry a token in its query).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

fn short(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use salesboy_protocol::events::Event;
    use salesboy_protocol::subjects::EventKind;
    use salesboy_protocol::{ChatId, TenantId};
    use serde_json::Value;

    use super::*;
    use crate::store::{OutboxEvent, Webhook};

    fn delivery(chat: &str, seq: i64) -> DueDelivery {
        let tenant = TenantId::new("acme").unwrap();
        let key = QueueKey {
            webhook_id: "wh_1".into(),
            order_key: format!("acme/{chat}"),
        };
        let mut event = Event::tenant(EventKind::MessageReceived, tenant.clone(), 0, Value::Null);
        event.chat = Some(ChatId::new(chat).unwrap());
        DueDelivery {
            key,
            next_attempt_ms: 0,
            webhook: Webhook {
                id: "wh_1".into(),
                tenant,
                url: "http://127.0.0.1:9/hook".into(),
                kinds: None,
                secret: "s".into(),
                created_ms: 0,
            },
            event: OutboxEvent {
                seq,
                event,
                published_ms: Some(0),
            },
            attempts: 0,
            since_ms: 0,
            batch: Some(1),
        }
    }

    fn in_step() -> Schedule {
        Schedule {
            in_step: true,
            ..Schedule::default()
        }
    }

    /// Takes every due head; answers their sequences.
    fn attempt_all(schedule: &mut Schedule) -> Vec<i64> {
        std::iter::from_fn(|| schedule.take_due(0))
            .map(|d| d.event.seq)
            .collect()
    }

    fn record(chat: &str, seq: i64, outcome: AttemptOutcome) -> AttemptRecord {
        let d = delivery(chat, seq);
        AttemptRecord {
            key: d.key,
            seq,
            batch: d.batch,
            since_ms: 0,
            outcome,
        }
    }

    fn failed() -> AttemptOutcome {
        AttemptOutcome::Retry {
            at_ms: 1_000,
            error: "answered 500".into(),
        }
    }

    /// The writes waiting for the recorder, taken: the sequences to queue and the batches
    /// settled.
    fn take_writes(schedule: &mut Schedule) -> (Vec<AttemptRecord>, Vec<i64>) {
        let mut records = Vec::new();
        let mut settled = Vec::new();
        for write in schedule.writes.drain(..) {
            match write {
                Write::Record(r) => records.push(r),
                Write::Settled(b) => settled.push(b),
            }
        }
        (records, settled)
    }

    fn seqs(records: &[AttemptRecord]) -> Vec<i64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn a_mirrored_queue_goes_out_in_order_without_a_write() {
        let mut schedule = in_step();
        for seq in [1, 2, 3] {
            schedule.offer(delivery("c1", seq), 0);
        }
        schedule.offer(delivery("c2", 4), 0);
        assert_eq!(attempt_all(&mut schedule), [1, 4], "one head per chat");
        for (chat, seq) in [("c1", 1), ("c1", 2), ("c2", 4)] {
            assert!(!schedule.finished(&record(chat, seq, AttemptOutcome::Delivered), 0));
            if seq == 1 {
                assert_eq!(attempt_all(&mut schedule), [2]);
            }
        }
        assert_eq!(attempt_all(&mut schedule), [3]);
        assert_eq!(
            take_writes(&mut schedule),
            (vec![], vec![]),
            "batch 1 not settled"
        );
        assert!(!schedule.finished(&record("c1", 3, AttemptOutcome::Delivered), 0));
        assert_eq!(
            take_writes(&mut schedule),
            (vec![], vec![1]),
            "settled: its row goes, nothing else is written"
        );
        assert!(schedule.unread.is_empty(), "nothing to read back");
        assert!(schedule.mirrored.is_empty() && schedule.mirrored_len == 0);
        assert!(schedule.batches.is_empty());
    }

    #[test]
    fn a_failed_first_attempt_sends_the_rest_of_its_chat_to_sql() {
        let mut schedule = in_step();
        for seq in [1, 2, 3] {
            schedule.offer(delivery("c1", seq), 0);
        }
        assert_eq!(attempt_all(&mut schedule), [1]);
        let first = record("c1", 1, failed());
        assert!(schedule.finished(&first, 0), "the failure is written");
        let (queued, settled) = take_writes(&mut schedule);
        assert_eq!(seqs(&queued), [2, 3], "2 and 3 wait behind 1 in SQL");
        assert!(settled.is_empty());
        assert!(schedule.heads.is_empty() && schedule.mirrored.is_empty());
        // Handed over while the chat is in SQL: queued behind, never attempted before 1.
        schedule.offer(delivery("c1", 4), 0);
        let (later, _) = take_writes(&mut schedule);
        assert_eq!(seqs(&later), [4]);
        assert!(attempt_all(&mut schedule).is_empty());
        // Written: the batch settles and the chat is read from SQL.
        let mut all = vec![first];
        all.extend(queued);
        all.extend(later);
        schedule.written(all, 0);
        assert_eq!(take_writes(&mut schedule), (vec![], vec![1]));
        assert!(schedule.unread.contains(&delivery("c1", 1).key));
        assert!(schedule.queuing.is_empty() && schedule.under_way.is_empty());
    }

    #[test]
    fn out_of_step_handed_over_deliveries_are_queued_in_sql() {
        let mut schedule = Schedule::default();
        schedule.offer(delivery("c1", 1), 0);
        assert!(schedule.heads.is_empty());
        let (queued, _) = take_writes(&mut schedule);
        assert_eq!(seqs(&queued), [1]);
        assert!(matches!(queued[0].outcome, AttemptOutcome::Queued { .. }));
        // In step now, but the chat is on its way into SQL: queued behind too.
        schedule.in_step = true;
        schedule.offer(delivery("c1", 2), 0);
        assert!(schedule.heads.is_empty());
        let (second, _) = take_writes(&mut schedule);
        schedule.written(queued, 0);
        assert!(schedule.unread.is_empty(), "read once both are written");
        schedule.written(second, 0);
        assert!(schedule.unread.contains(&delivery("c1", 1).key));
        assert_eq!(take_writes(&mut schedule), (vec![], vec![1]));
    }

    #[test]
    fn a_queue_named_to_be_read_sends_its_mirror_to_sql() {
        let mut schedule = in_step();
        for seq in [1, 2] {
            schedule.offer(delivery("c1", seq), 0);
        }
        assert_eq!(attempt_all(&mut schedule), [1]);
        // Dead letters of this chat queued again: the queue holds more than the mirror.
        schedule.touch(delivery("c1", 1).key, 0);
        let (queued, _) = take_writes(&mut schedule);
        assert_eq!(seqs(&queued), [2]);
        assert!(!schedule.finished(&record("c1", 1, AttemptOutcome::Delivered), 0));
        assert!(schedule.heads.is_empty());
        assert!(schedule.unread.is_empty(), "read once 2 is in SQL");
        schedule.written(queued, 0);
        assert!(schedule.unread.contains(&delivery("c1", 1).key));
    }

    #[test]
    fn a_head_read_for_a_queue_held_in_memory_sends_the_queue_to_sql() {
        let mut schedule = in_step();
        for seq in [5, 6] {
            schedule.offer(delivery("c1", seq), 0);
        }
        // A recovered delivery of the same chat, read with the whole queue.
        let mut recovered = delivery("c1", 3);
        recovered.batch = None;
        schedule.hold_read(recovered, 0);
        assert!(schedule.heads.is_empty() && schedule.mirrored.is_empty());
        let (queued, _) = take_writes(&mut schedule);
        assert_eq!(
            seqs(&queued),
            [5, 6],
            "all of the chat in SQL, read in order"
        );
        schedule.written(queued, 0);
        assert!(schedule.unread.contains(&delivery("c1", 3).key));
    }

    #[test]
    fn a_failed_write_ends_attempts_but_not_the_one_under_way() {
        let mut schedule = in_step();
        schedule.offer(delivery("c1", 1), 0);
        assert_eq!(attempt_all(&mut schedule), [1]);
        schedule.touch(delivery("c1", 1).key, 0);
        schedule.offer(delivery("c1", 2), 0);
        let (queued, _) = take_writes(&mut schedule);
        assert_eq!(seqs(&queued), [2]);
        schedule.unwritten(&queued);
        assert!(
            schedule.under_way.contains(&delivery("c1", 1).key),
            "1 is still being attempted"
        );
        assert!(schedule.queuing.is_empty());
    }

    #[test]
    fn deliveries_of_a_recovered_batch_are_left_to_the_queue() {
        let mut schedule = in_step();
        schedule.recovered.insert(1);
        schedule.offer(delivery("c1", 1), 0);
        assert!(schedule.heads.is_empty() && schedule.batches.is_empty());
        assert_eq!(take_writes(&mut schedule), (vec![], vec![]));
    }

    #[test]
    fn forgotten_batches_stay_unsettled() {
        let mut schedule = in_step();
        schedule.offer(delivery("c1", 1), 0);
        assert_eq!(attempt_all(&mut schedule), [1]);
        schedule.forget();
        assert!(!schedule.finished(&record("c1", 1, AttemptOutcome::Delivered), 0));
        assert_eq!(
            take_writes(&mut schedule),
            (vec![], vec![]),
            "its row stays for the recovery"
        );
    }
}
