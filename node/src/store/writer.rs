//! Group commit: the hot path's writes (inbound messages, bot replies, send results) from
//! many callers go into one transaction.
//!
//! Callers hand a [`Job`] (one or more writes that belong together, e.g. every message of one
//! webhook delivery) to [`GroupWriter::write`] and wait for its results. A writer task takes
//! the jobs that are queued when it is free — no timer: under light load a job commits
//! alone at once; under heavy load many share a commit — bounded by [`MAX_WRITES`] writes
//! and [`MAX_BYTES`] bytes, always whole jobs, and runs them in one transaction:
//!
//! - the duplicates among the inbound messages, and their chats, are read in one statement,
//!   and the fence of every tenant that has a fenced write in two (`fencing::Fences`);
//! - each kind of write goes in with one statement per table, whatever the number of
//!   writes (their rows as one JSON parameter, `messages::grouped`), and all their events
//!   with one more;
//! - the statements go in round trips, each a [`RoundTrip`] (one command to SQLite's
//!   connection thread; on Postgres still one statement after the other): on SQLite two,
//!   `BEGIN` with the inbound messages, the fences' reads, the replies and the send results
//!   (each fenced in its statement, `messages::FenceTest`), then the replies' links with
//!   the events and `COMMIT` (alone after them when the group holds replies); on Postgres
//!   the replies and the send results go in a round trip of their own after the fences'
//!   reads, the stale writes left out;
//! - a write that decides to change nothing (duplicate, already answered, stale epoch)
//!   reports it and leaves the others to commit;
//! - a database error fails the transaction: it is rolled back and each of its writes runs
//!   again in a transaction of its own, so one bad row fails alone; once no connection can
//!   be had (the pool timed out or is closed, connecting failed), the writes left all get
//!   that failure at once instead of each waiting for a connection in turn;
//! - a caller hears its results only after the commit (or after its own transaction).
//!
//! SQLite has one writer task (it has one writer connection); Postgres
//! [`POSTGRES_WRITER_TASKS`], each with its own transaction. A task keeps its connection
//! from one transaction to the next while jobs are queued (taking a connection from the pool
//! and giving it back cost a hand-off to the connection each, and wake-ups between every two
//! transactions), at most [`HOLD_FOR_TRANSACTIONS`] in a row.

use std::sync::Arc;

use salesboy_actors::store::{NewInbound, NewReply, ReplyOutcome, StoreError, StoredInbound};
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{debug, warn};

use super::error::Failure;
use super::fencing::Fences;
use super::messages::{self, FenceTest, ReplySent};
use super::round_trip::RoundTrip;
use super::{Db, Dialect, outbox};

/// The most writes one transaction holds (a job larger than this commits alone).
pub(crate) const MAX_WRITES: usize = 256;

/// The most bytes of message text one transaction holds (a job larger than this commits
/// alone).
pub(crate) const MAX_BYTES: usize = 4 << 20;

/// How many jobs may wait for a writer before callers wait to hand theirs in.
const QUEUE: usize = 4096;

/// One write of a group commit.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// Persist an inbound message.
    Inbound(NewInbound),
    /// Record a bot reply and link its batch. Fenced.
    Reply(NewReply),
    /// Record that Meta accepted a pending outbound message. Fenced.
    ReplySent(ReplySent),
}

impl Write {
    fn tenant(&self) -> &TenantId {
        match self {
            Self::Inbound(message) => &message.tenant,
            Self::Reply(reply) => &reply.tenant,
            Self::ReplySent(sent) => &sent.tenant,
        }
    }

    fn fenced(&self) -> bool {
        !matches!(self, Self::Inbound(_))
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Inbound(message) => {
                message.body.as_ref().map_or(0, String::len)
                    + message.raw.as_ref().map_or(0, String::len)
            }
            Self::Reply(reply) => reply.body.len(),
            Self::ReplySent(_) => 0,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// An inbound message: stored, or a duplicate.
    Inbound(StoredInbound),
    /// A reply: recorded, or its batch was answered already.
    Reply(ReplyOutcome),
    /// A send result: recorded (or the message was no longer pending).
    ReplySent,
}

/// Writes that commit together, and where their results go (in the writes' order).
struct Job {
    writes: Vec<Write>,
    done: oneshot::Sender<Vec<Result<Written, Failure>>>,
}

impl Job {
    fn bytes(&self) -> usize {
        self.writes.iter().map(Write::bytes).sum()
    }
}

/// The writer tasks on PostgreSQL (one with a pool of two connections or fewer): one
/// builds its transaction while the other commits. More tasks each take a smaller group,
/// and a transaction runs the same dozen statements for three writes as for 256: with five
/// (half the default pool), PostgreSQL spent a third more CPU per message than with two,
/// and the gateway's p99 at 1,000 msg/s was a third higher (docs/benchmarks.md).
pub(crate) const POSTGRES_WRITER_TASKS: u32 = 2;

/// Hands writes to the writer tasks. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    jobs: Option<mpsc::Sender<Job>>,
}

impl GroupWriter {
    /// A writer without tasks, for the `Db` the tasks themselves use (they never hand
    /// writes to it).
    pub(crate) fn detached() -> Self {
        Self { jobs: None }
    }

    /// Starts `tasks` writer tasks on `db`. They stop when every clone of the writer is
    /// dropped and the queue is empty.
    pub(crate) fn start(db: &Db, tasks: u32) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..tasks.max(1) {
            tokio::spawn(run(db.clone(), Arc::clone(&receiver)));
        }
        Self { jobs: Some(sender) }
    }

    /// Commits `writes` (in one transaction with whatever else is queued) and answers
    /// each one's result, in order.
    pub(crate) async fn write(&self, writes: Vec<Write>) -> Vec<Result<Written, Failure>> {
        let count = writes.len();
        let closed = || {
            (0..count)
                .map(|_| {
                    Err(StoreError::Backend("the store's writer has stopped".to_owned()).into())
                })
                .collect()
        };
        let Some(jobs) = &self.jobs else {
            return closed();
        };
        let (done, results) = oneshot::channel();
        if jobs.send(Job { writes, done }).await.is_err() {
            return closed();
        }
        results.await.unwrap_or_else(|_| closed())
    }
}

/// A writer task: takes the queued jobs, commits them together, answers them. It keeps its
/// connection from one transaction to the next while jobs are queued, up to
/// [`HOLD_FOR_TRANSACTIONS`] in a row, then hands it back to the pool so other writers (on
/// SQLite, the one writer connection is theirs too) get their turn.
async fn run(db: Db, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut held: Option<PoolConnection<Any>> = None;
    let mut in_a_row = 0;
    loop {
        let queued = match held {
            Some(_) if in_a_row < HOLD_FOR_TRANSACTIONS => take(&jobs, false).await,
            _ => None,
        };
        let batch = match queued {
            Some(batch) => batch,
            None => {
                // Nothing queued (or held long enough): the connection goes back before
                // the task waits.
                held = None;
                in_a_row = 0;
                let Some(batch) = take(&jobs, true).await else {
                    return;
                };
                batch
            }
        };
        let connection = match held.take() {
            Some(connection) => Ok(connection),
            None => db.pool.acquire().await,
        };
        in_a_row += 1;
        held = commit_jobs(&db, connection, batch).await;
    }
}

/// The most transactions a writer task runs in a row on one connection before handing it
/// back to the pool.
const HOLD_FOR_TRANSACTIONS: u32 = 16;

/// The jobs to commit next, whole jobs up to [`MAX_WRITES`] and [`MAX_BYTES`]: waits for
/// the first when `wait` (`None`: every sender is gone), else only takes what is queued,
/// and nothing while another task takes (it may be waiting for a job, and a task that does
/// not wait holds a connection).
async fn take(jobs: &Mutex<mpsc::Receiver<Job>>, wait: bool) -> Option<Vec<Job>> {
    let (mut jobs, first) = if wait {
        let mut jobs = jobs.lock().await;
        let first = jobs.recv().await?;
        (jobs, first)
    } else {
        let mut jobs = jobs.try_lock().ok()?;
        let first = jobs.try_recv().ok()?;
        (jobs, first)
    };
    let mut writes = first.writes.len();
    let mut bytes = first.bytes();
    let mut batch = vec![first];
    while writes < MAX_WRITES && bytes < MAX_BYTES {
        let Ok(job) = jobs.try_recv() else { break };
        writes += job.writes.len();
        bytes += job.bytes();
        batch.push(job);
    }
    Some(batch)
}

/// Runs the jobs' writes in one transaction on `connection` and answers them; after a
/// failure, each write in a transaction of its own ([`each_alone`]). Gives the connection
/// back for the next transaction, unless it failed (a fresh one is then taken from the
/// pool).
async fn commit_jobs(
    db: &Db,
    connection: Result<PoolConnection<Any>, sqlx::Error>,
    jobs: Vec<Job>,
) -> Option<PoolConnection<Any>> {
    let writes: Vec<&Write> = jobs.iter().flat_map(|job| job.writes.iter()).collect();
    metrics::histogram!("salesboy_store_group_commit_writes").record(writes.len() as f64);
    let started = std::time::Instant::now();
    let (outcome, mut held) = match connection {
        Ok(mut connection) => {
            let outcome = transaction(db, &mut connection, &writes).await;
            (outcome, Some(connection))
        }
        Err(error) => (Err(error.into()), None),
    };
    metrics::histogram!("salesboy_store_group_commit_seconds")
        .record(started.elapsed().as_secs_f64());
    let mut results = match outcome {
        Ok(results) => results,
        Err(failure) => {
            db.saw(&failure);
            // The connection may be what failed: the pool tests it when it goes back. None
            // held: the group's own acquire is what failed.
            let acquired = held.take().is_some();
            if writes.len() > 1 {
                debug!(writes = writes.len(), error = ?failure, "group commit failed, each write on its own");
            }
            let unreachable = (!acquired).then_some(failure);
            each_alone(db, &writes, unreachable).await
        }
    }
    .into_iter();
    for job in jobs {
        let answers: Vec<_> = results.by_ref().take(job.writes.len()).collect();
        if job.done.send(answers).is_err() {
            // The caller is gone (its request was cancelled); the writes stand.
            warn!("a group-committed write's caller stopped waiting");
        }
    }
    held
}

/// Runs each of `writes` in a transaction of its own, after their group's failed: one bad
/// row fails alone. Once no connection could be had (`unreachable`: the group's own
/// acquire failed, or one of these; a database error on connecting, which cannot be
/// repeated, stops nothing), the writes left get that failure without trying: each
/// would otherwise wait for a connection in turn, up to the acquire timeout apiece while
/// the database is unreachable, and every job queued behind them too. A connection lost
/// under a transaction is no reason to stop: the next write takes a fresh one (after a
/// database restart, the pool's other connections may be as dead as the group's was).
async fn each_alone(
    db: &Db,
    writes: &[&Write],
    mut unreachable: Option<Failure>,
) -> Vec<Result<Written, Failure>> {
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        if let Some(again) = unreachable
            .as_ref()
            .and_then(Failure::connection_failure_again)
        {
            results.push(Err(again));
            continue;
        }
        let result = match db.pool.acquire().await {
            Ok(mut connection) => {
                match transaction(db, &mut connection, std::slice::from_ref(write)).await {
                    Ok(mut one) => one.pop().unwrap_or_else(|| {
                        Err(StoreError::Backend("a write gave no result".to_owned()).into())
                    }),
                    Err(failure) => {
                        db.saw(&failure);
                        Err(failure)
                    }
                }
            }
            Err(error) => {
                let failure = Failure::from(error);
                unreachable = failure.connection_failure_again();
                Err(failure)
            }
        };
        results.push(result);
    }
    results
}

/// One transaction over `writes`: `Err` when it failed as a whole (nothing committed, the
/// transaction rolled back). Each kind of write goes in with one statement per table
/// (`messages::grouped`), the events of all of them with one more, in two round trips on
/// SQLite (on Postgres each statement is one): `BEGIN` with the inbound messages, the
/// fences' reads, the replies and the send results; the replies' links with the events and
/// `COMMIT`.
async fn transaction(
    db: &Db,
    connection: &mut AnyConnection,
    writes: &[&Write],
) -> Result<Vec<Result<Written, Failure>>, Failure> {
    let outcome = statements(db, connection, writes).await;
    if outcome.is_err() {
        // Undo what ran before the failure. A connection that cannot roll back is dead (or
        // no transaction was open): the pool tests it as it goes back.
        let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
    }
    outcome
}

/// The statements of [`transaction`], its `BEGIN` sent with the first round trip and its
/// `COMMIT` with the last (not through sqlx's transaction, whose `BEGIN` and `COMMIT` are
/// commands of their own to SQLite's thread, each holding that thread until the caller
/// takes the answer).
async fn statements(
    db: &Db,
    tx: &mut AnyConnection,
    writes: &[&Write],
) -> Result<Vec<Result<Written, Failure>>, Failure> {
    // Each kind's writes, with their places among `writes`.
    let mut inbound: Vec<&NewInbound> = Vec::new();
    let mut inbound_at: Vec<usize> = Vec::new();
    let mut replies: Vec<&NewReply> = Vec::new();
    let mut sent: Vec<&ReplySent> = Vec::new();
    let mut sent_at: Vec<usize> = Vec::new();
    for (place, write) in writes.iter().enumerate() {
        match write {
            Write::Inbound(message) => {
                inbound.push(message);
                inbound_at.push(place);
            }
            Write::Reply(reply) => replies.push(reply),
            Write::ReplySent(one) => {
                sent.push(one);
                sent_at.push(place);
            }
        }
    }
    // The inbound messages and the fences of the fenced writes; on SQLite the replies and
    // the send results too, each fenced in its statement (`FenceTest::InStatement`).
    let fenced_in_statement = db.dialect == Dialect::Sqlite;
    let mut round = RoundTrip::new(db.dialect);
    round.push(db.dialect.begin().to_owned(), Vec::new());
    let inbound_statements =
        (!inbound.is_empty()).then(|| messages::push_inbound(&mut round, &inbound));
    let fenced: Vec<TenantId> = writes
        .iter()
        .filter(|write| write.fenced())
        .map(|write| write.tenant().clone())
        .collect();
    let mut fences = Fences::default();
    let fence_reads = fences.push_lock(&mut round, &fenced);
    let fenced_statements = fenced_in_statement.then(|| {
        (
            messages::push_replies(&mut round, FenceTest::InStatement, &replies),
            messages::push_sent(&mut round, FenceTest::InStatement, &sent),
        )
    });
    let mut answers = round.run(&mut *tx).await?;
    let mut inbound_events = Vec::new();
    let inbound_results = match inbound_statements {
        Some(statements) => {
            messages::finish_inbound(
                &mut *tx,
                statements,
                &mut answers,
                &inbound,
                &mut inbound_events,
            )
            .await?
        }
        None => Vec::new(),
    };
    fences.read(fence_reads, &mut answers)?;
    // On Postgres the replies and the send results, their stale writes left out.
    let (reply_statements, sent_statements) = match fenced_statements {
        Some(statements) => statements,
        None => {
            let mut round = RoundTrip::new(db.dialect);
            let statements = (
                messages::push_replies(&mut round, FenceTest::Read(&fences), &replies),
                messages::push_sent(&mut round, FenceTest::Read(&fences), &sent),
            );
            answers = round.run(&mut *tx).await?;
            statements
        }
    };
    let mut sent_events = Vec::new();
    let sent_results = messages::finish_sent(
        &mut *tx,
        sent_statements,
        &mut answers,
        &fences,
        &sent,
        &mut sent_events,
    )
    .await?;
    // The replies' links, and the events in the order of the writes that made them (a
    // chat's events keep the order its writes were handed in).
    let mut round = RoundTrip::new(db.dialect);
    let link_statements = messages::push_links(
        &mut round,
        reply_statements,
        &mut answers,
        &fences,
        &replies,
    )?;
    let mut events: Vec<(usize, Event)> = inbound_events
        .into_iter()
        .map(|(index, event)| (inbound_at[index], event))
        .chain(
            sent_events
                .into_iter()
                .map(|(index, event)| (sent_at[index], event)),
        )
        .collect();
    events.sort_by_key(|(place, _)| *place);
    let events: Vec<Event> = events.into_iter().map(|(_, event)| event).collect();
    outbox::push_append_all(&mut round, &events);
    // A reply whose batch turns out answered already has its rows deleted after the links'
    // statement: with replies, the commit waits for that.
    let commit_now = replies.is_empty();
    if commit_now {
        round.push("COMMIT".to_owned(), Vec::new());
    }
    let mut answers = round.run(&mut *tx).await?;
    let reply_results =
        messages::finish_replies(&mut *tx, link_statements, &mut answers, &replies).await?;
    if !commit_now {
        sqlx::query("COMMIT").execute(&mut *tx).await?;
    }
    if !events.is_empty() {
        db.outbox_written();
    }
    // Back in the writes' order.
    let mut inbound_results = inbound_results.into_iter();
    let mut reply_results = reply_results.into_iter();
    let mut sent_results = sent_results.into_iter();
    let missing = || Err(StoreError::Backend("a write gave no result".to_owned()).into());
    Ok(writes
        .iter()
        .map(|write| match write {
            Write::Inbound(_) => inbound_results
                .next()
                .map_or_else(missing, |stored| Ok(Written::Inbound(stored))),
            Write::Reply(_) => reply_results
                .next()
                .map_or_else(missing, |result| result.map(Written::Reply)),
            Write::ReplySent(_) => sent_results
                .next()
                .map_or_else(missing, |result| result.map(|()| Written::ReplySent)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use salesboy_actors::store::prelude::*;
    use salesboy_actors::store::{InsertOutcome, NewTenant};
    use salesboy_protocol::{ChatId, Wamid};
    use salesboy_testkit::{Backend, FreshDatabase};

    use super::*;
    use crate::store::SqlStore;

    const T0: i64 = 1_700_000_000_000;

    fn reply(tenant: &TenantId, chat: &ChatId, answers: &[i64]) -> Write {
        Write::Reply(NewReply {
            passages: Vec::new(),
            tenant: tenant.clone(),
            chat: chat.clone(),
            answers: answers.to_vec(),
            body: format!("answer to {answers:?}"),
            epoch: 0,
            created_ms: T0 + 10,
        })
    }

    /// Replies that commit together are decided each alone: one whose batch holds a message
    /// another reply of the group answers first, and one answering no message of its chat,
    /// are refused with their rows undone (the first of them also unlinked from the other
    /// message of its batch); the others are recorded.
    async fn replies_of_one_transaction_are_refused_alone(backend: Backend) {
        let database = FreshDatabase::create(backend).await;
        let store = SqlStore::connect(database.url()).await.expect("store");
        let tenant = TenantId::new("acme").expect("tenant id");
        let chat = ChatId::new("15550001111").expect("chat id");
        store
            .upsert_tenant(&NewTenant::new(tenant.clone(), "acme shop".to_owned(), T0))
            .await
            .expect("tenant");
        let receive = |n: i64| {
            let message = NewInbound {
                tenant: tenant.clone(),
                chat: chat.clone(),
                wamid: Wamid::new(format!("wamid.{n}")).expect("wamid"),
                received_ms: T0 + n,
                sent_ms: None,
                kind: "text".to_owned(),
                body: Some(format!("message {n}")),
                raw: None,
            };
            let store = &store;
            async move {
                match store.insert_inbound(&message).await {
                    Ok(InsertOutcome::Inserted { id }) => id,
                    other => panic!("message {n} stored: {other:?}"),
                }
            }
        };
        let first = receive(1).await;
        let second = receive(2).await;
        let third = receive(3).await;

        let results = store
            .db
            .writer
            .write(vec![
                reply(&tenant, &chat, &[first]),
                reply(&tenant, &chat, &[first, second]),
                reply(&tenant, &chat, &[999_999]),
                reply(&tenant, &chat, &[third]),
            ])
            .await;
        let outcomes: Vec<_> = results
            .into_iter()
            .map(|result| result.map_err(|failure| failure.into_store_error("test")))
            .collect();
        let recorded = |outcome: &Result<Written, StoreError>| match outcome {
            Ok(Written::Reply(ReplyOutcome::Recorded { outbound_id })) => *outbound_id,
            other => panic!("a recorded reply: {other:?} (all: {outcomes:?})"),
        };
        let recorded = [recorded(&outcomes[0]), recorded(&outcomes[3])];
        assert_eq!(
            outcomes[1],
            Ok(Written::Reply(ReplyOutcome::AlreadyAnswered {
                inbound_id: first
            }))
        );
        assert!(
            matches!(outcomes[2], Err(StoreError::NotFound { .. })),
            "{outcomes:?}"
        );

        let unsent: Vec<i64> = store
            .unsent_replies(&tenant)
            .await
            .expect("unsent replies")
            .iter()
            .map(|message| message.id)
            .collect();
        assert_eq!(unsent, recorded, "the refused replies' messages are gone");
        let unanswered: Vec<i64> = store
            .unanswered_inbound(&tenant, 0)
            .await
            .expect("unanswered")
            .iter()
            .map(|message| message.id)
            .collect();
        assert_eq!(unanswered, [second], "the refused reply's link is gone");
        store.close().await;
    }

    #[tokio::test]
    async fn replies_of_one_transaction_are_refused_alone_on_sqlite() {
        replies_of_one_transaction_are_refused_alone(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn replies_of_one_transaction_are_refused_alone_on_postgres() {
        replies_of_one_transaction_are_refused_alone(Backend::Postgres).await;
    }
}
