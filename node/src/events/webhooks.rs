//! HTTP event webhooks' delivery worker: POSTs each published event to the tenant's webhooks
//! that want it, signed, one event at a time per chat, retried with exponential backoff and
//! jitter until the retry window ends, then dead-lettered (`docs/protocol.md`, "HTTP event
//! webhooks").
//!
//! The queue is in SQL (`webhook_deliveries`): events are queued when they are published, a
//! delivered event leaves the queue, a failed one is tried again later. So nothing is lost
//! when the node stops, and the worker of the next leader carries on. Delivery is at least
//! once: a node killed between a receiver's 2xx and its record delivers that event again;
//! receivers deduplicate on `X-Salesboy-Event-Id`. One worker runs at a time: the leader's
//! on a cluster, the node's own alone.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::ports::Clock;
use salesboy_protocol::events::{
    EVENT_ID_HEADER, EVENT_SIGNATURE_HEADER, EVENT_TIMESTAMP_HEADER, sign_event,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::cluster::ClusterMember;
use crate::store::{AttemptOutcome, AttemptRecord, DueDelivery, QueueKey, SqlStore};

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

/// Longest error text kept with a failed delivery.
const MAX_ERROR_CHARS: usize = 300;

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
/// read (new deliveries, or the one before was recorded), and the queues it mirrors.
///
/// A mirrored queue is one whose every pending delivery the worker holds: its head (held or
/// under way) and the rest in order behind it. Deliveries handed over at publishing
/// ([`Queued::fresh`](crate::store::Queued)) start or extend a mirror, so a chat's next
/// event is attempted without reading the queue back. A queue is mirrored only while the
/// worker is in step with the queue ([`Schedule::in_step`]): it read the whole queue, and
/// every delivery queued since reached it through the store (this node publishes alone).
/// Anything else (a failed attempt, a queue named to be read, a resync, a lost lead) drops
/// the mirror: the queue is read from SQL again after its head, as without one.
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
    /// delivery waits behind that head; the queue is read after it). Its mirror, if any,
    /// is dropped: the queue may hold deliveries the mirror lacks.
    fn touch(&mut self, key: QueueKey) {
        self.unmirror(&key);
        if !self.under_way.contains(&key) && !self.heads.contains_key(&key) {
            self.unread.insert(key);
        }
    }

    /// Takes a delivery handed over at publishing (queued in SQL too): held as its queue's
    /// head when the queue is known empty, kept behind the head of a mirrored queue, else
    /// left to be read from the queue after the head before it.
    fn offer(&mut self, delivery: DueDelivery) {
        let key = delivery.key.clone();
        if self.mirrored.contains_key(&key) {
            if self.held() < MAX_HEADS {
                if let Some(tail) = self.mirrored.get_mut(&key) {
                    tail.push_back(delivery);
                    self.mirrored_len += 1;
                }
            } else {
                // No room: read from the queue after its head.
                self.unmirror(&key);
            }
            return;
        }
        if self.under_way.contains(&key)
            || self.heads.contains_key(&key)
            || self.unread.contains(&key)
        {
            return;
        }
        if self.in_step && self.held() < MAX_HEADS {
            self.mirrored.insert(key, VecDeque::new());
            self.hold(delivery);
        } else {
            self.unread.insert(key);
        }
    }

    /// A queue's attempt was recorded (`delivered`: delivered, and its record written): the
    /// next delivery of a mirrored queue is held at once; any other queue is read again.
    fn recorded(&mut self, key: QueueKey, delivered: bool) {
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
        self.touch(key);
    }

    fn unmirror(&mut self, key: &QueueKey) {
        if let Some(tail) = self.mirrored.remove(key) {
            self.mirrored_len -= tail.len();
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

    /// Forgets what was read and mirrored (not what is under way).
    fn forget(&mut self) {
        self.heads.clear();
        self.timeline.clear();
        self.unread.clear();
        self.mirrored.clear();
        self.mirrored_len = 0;
        self.in_step = false;
    }
}

impl WebhookDeliverer {
    /// Delivers until the task is cancelled.
    ///
    /// The queue is read by queue (webhook and chat), never whole on the hot path: the
    /// store hands over the deliveries it queued at publishing, whole, and names the other
    /// queues that got deliveries; the worker attempts a handed-over delivery at once when
    /// its queue is known empty or mirrored ([`Schedule`]), reads the other queues' heads
    /// (one index probe each), attempts those due, up to [`CONCURRENCY`] at once, each started as soon
    /// as a slot is free. Outcomes go to a recorder task that writes whatever has finished
    /// in one transaction while the next attempts run (a group commit, at most one per
    /// [`PACE`](super::PACE)) and hands
    /// the queues back, whose next heads are read then. The whole queue is read at the
    /// start, on gaining the leadership and every [`RESYNC`].
    pub async fn run(self) {
        let this = Arc::new(self);
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let (recorded_tx, mut recorded_rx) = mpsc::unbounded_channel::<Vec<(QueueKey, bool)>>();
        let recorder = tokio::spawn(Arc::clone(&this).record(finished_rx, recorded_tx));
        let mut running: JoinSet<AttemptRecord> = JoinSet::new();
        let mut schedule = Schedule::default();
        let mut resync_at: Option<tokio::time::Instant> = None;
        let mut leading_since: Option<tokio::time::Instant> = None;
        loop {
            if recorder.is_finished() {
                warn!("webhook outcome recorder stopped; delivery stops");
                return;
            }
            let leads = this.cluster.as_ref().is_none_or(|c| c.is_leader());
            if !leads {
                // Attempts under way finish and are recorded; the next leader reads the
                // queue itself.
                schedule.forget();
                resync_at = None;
                leading_since = None;
            } else {
                let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
                // On a cluster the leader before this one may still be publishing (and
                // queueing deliveries this worker is not told of) for a moment.
                let settled = this.cluster.is_none() || since.elapsed() >= LEADER_SETTLED;
                this.read_queue(&mut schedule, &mut resync_at, settled)
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
            tokio::select! {
                Some(joined) = running.join_next() => match joined {
                    Ok(record) => {
                        // The recorder lives as long as this loop.
                        let _ = finished_tx.send(record);
                    }
                    Err(e) => warn!(error = %e, "webhook attempt task failed"),
                },
                Some(recorded) = recorded_rx.recv() => {
                    for (key, delivered) in recorded {
                        if leads {
                            schedule.recorded(key, delivered);
                        } else {
                            schedule.under_way.remove(&key);
                        }
                    }
                }
                () = this.store.webhooks_queued() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Brings the schedule up to date: the whole queue when a resync is due, else the
    /// deliveries handed over and the heads of the queues the store named and of those
    /// recorded since. `settled`: no other node publishes (the worker may mirror queues
    /// after reading the whole queue).
    async fn read_queue(
        &self,
        schedule: &mut Schedule,
        resync_at: &mut Option<tokio::time::Instant>,
        settled: bool,
    ) {
        let now = tokio::time::Instant::now();
        let resync = resync_at.is_none_or(|at| at <= now);
        match self.store.take_queued() {
            Some(queued) if !resync => {
                queued.keys.into_iter().for_each(|key| schedule.touch(key));
                queued
                    .fresh
                    .into_iter()
                    .for_each(|delivery| schedule.offer(delivery));
            }
            // Too many to keep, or read whole anyway (what was handed over is in it).
            _ => {
                *resync_at = None;
            }
        }
        if resync_at.is_none() {
            // What is under way stays; everything else is read again.
            schedule.mirrored.clear();
            schedule.mirrored_len = 0;
            schedule.in_step = false;
            let room = MAX_HEADS.saturating_sub(schedule.heads.len());
            match self
                .store
                .due_deliveries(i64::MAX, u32::try_from(room).unwrap_or(u32::MAX))
                .await
            {
                Ok(heads) => {
                    schedule.unread.clear();
                    // Every queue with a delivery is in `heads` (or under way): the ones
                    // left out are empty.
                    schedule.in_step = settled && heads.len() < room;
                    heads.into_iter().for_each(|head| schedule.hold(head));
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

    /// Writes finished attempts' outcomes, all that are waiting in one transaction, and
    /// hands their queues back. A write that fails hands them back all the same: their
    /// deliveries are still due in the queue and are attempted again (at least once).
    async fn record(
        self: Arc<Self>,
        mut finished: mpsc::UnboundedReceiver<AttemptRecord>,
        recorded: mpsc::UnboundedSender<Vec<(QueueKey, bool)>>,
    ) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while finished.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            let written = match self.store.record_attempts(&batch).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, deliveries = batch.len(), "webhook outcomes not recorded");
                    tokio::time::sleep(QUEUE_RETRY).await;
                    false
                }
            };
            let keys = batch
                .drain(..)
                .map(|r| {
                    let delivered = written && r.outcome == AttemptOutcome::Delivered;
                    (r.key, delivered)
                })
                .collect();
            if recorded.send(keys).is_err() {
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
        let response = self
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

    #[test]
    fn a_mirrored_queue_goes_out_in_order_without_reading_it_back() {
        let mut schedule = in_step();
        for seq in [1, 2, 3] {
            schedule.offer(delivery("c1", seq));
        }
        schedule.offer(delivery("c2", 4));
        assert_eq!(attempt_all(&mut schedule), [1, 4], "one head per chat");
        schedule.recorded(delivery("c1", 1).key, true);
        assert_eq!(attempt_all(&mut schedule), [2]);
        schedule.recorded(delivery("c1", 2).key, true);
        schedule.recorded(delivery("c2", 4).key, true);
        assert_eq!(attempt_all(&mut schedule), [3]);
        schedule.recorded(delivery("c1", 3).key, true);
        assert!(schedule.unread.is_empty(), "nothing to read back");
        assert!(schedule.mirrored.is_empty() && schedule.mirrored_len == 0);
    }

    #[test]
    fn a_failed_attempt_drops_the_mirror_and_the_queue_is_read_again() {
        let mut schedule = in_step();
        for seq in [1, 2] {
            schedule.offer(delivery("c1", seq));
        }
        assert_eq!(attempt_all(&mut schedule), [1]);
        schedule.recorded(delivery("c1", 1).key, false);
        assert!(schedule.heads.is_empty(), "2 is not attempted before 1");
        assert!(schedule.unread.contains(&delivery("c1", 1).key));
        assert_eq!(schedule.mirrored_len, 0);
        // Handed over while the queue waits to be read: read from the queue, in order.
        schedule.offer(delivery("c1", 3));
        assert!(schedule.heads.is_empty());
    }

    #[test]
    fn out_of_step_nothing_is_mirrored() {
        let mut schedule = Schedule::default();
        schedule.offer(delivery("c1", 1));
        assert!(schedule.heads.is_empty());
        assert!(schedule.unread.contains(&delivery("c1", 1).key));
    }

    #[test]
    fn a_queue_named_to_be_read_loses_its_mirror() {
        let mut schedule = in_step();
        for seq in [1, 2] {
            schedule.offer(delivery("c1", seq));
        }
        assert_eq!(attempt_all(&mut schedule), [1]);
        // Dead letters of this chat queued again: the queue holds more than the mirror.
        schedule.touch(delivery("c1", 1).key);
        schedule.recorded(delivery("c1", 1).key, true);
        assert!(schedule.heads.is_empty());
        assert!(schedule.unread.contains(&delivery("c1", 1).key));
    }
}
