//! The SQL implementation of the actors' [`Store`](salesboy_actors::store::Store): one
//! implementation for Postgres and SQLite, through sqlx's `Any` driver.
//!
//! Every query is written once with `$N` placeholders (sqlx's SQLite driver binds `$N`
//! positionally, as Postgres does) and runs on both databases; the [`Dialect`] switch is
//! used only where the SQL must differ: full-text search (Postgres `tsvector` with a GIN
//! index, SQLite FTS5), the lock that fences writes (`FOR SHARE` on Postgres, `BEGIN
//! IMMEDIATE` on SQLite), and connection set-up (SQLite pragmas).
//!
//! Schema: `migrations/postgres` and `migrations/sqlite`, embedded and applied by
//! [`SqlStore::connect`]. Times are `BIGINT` unix milliseconds, ids of the outside world
//! `TEXT`.
//!
//! Modules, one per concern:
//! - `error`: [`redact_url`] and the one mapping from sqlx errors to [`StoreError`];
//! - `decode`: rows back into records;
//! - `lists`: statements over lists of values, padded to few lengths so each is prepared once;
//! - `fencing`: tenant epochs and the fence every state-changing write passes;
//! - `tenants`: tenants and their WhatsApp numbers;
//! - `messages`: conversations, messages, replies, statuses and the reads reconciliation
//!   needs;
//! - `webhooks`: HTTP event webhooks and the events each has still to receive;
//! - `retention`: deleting what is older than its window, one bounded batch at a time
//!   (every table that grows), folding usage into `usage_monthly` as it goes;
//! - `rejected`: webhook items that could not be read, with their `message_rejected` events;
//! - `knowledge`: the knowledge base and its full-text search;
//! - `embeddings`: passage vectors, the background embedding pass and the hybrid search
//!   ([`crate::retrieval`]);
//! - `activity`: LLM usage;
//! - `outbox`: the events outbox, written in the transactions of the changes it reports;
//! - `secrets`: the secret columns sealed under the node's key ([`crate::secrets`]), and
//!   sealing them all again (plaintext at start, everything on a rotation);
//! - `placements`: the last placement decision about each tenant, with its inputs;
//! - `size`: the database's size and its knowledge chunks (for the alerts), and the SQLite
//!   backup (`VACUUM INTO`);
//! - `tokens`: tenant API tokens, by digest ([`TenantTokenStore`](salesboy_actors::store::TenantTokenStore));
//! - `writer`: group commit of the hot path's writes (inbound messages, replies, send
//!   results), many callers' writes in one transaction;
//! - `checkpoint`: SQLite's write-ahead log checkpointed by a task of its own, the writer's
//!   commits only past a backstop;
//! - `roles`: the actors' store roles on [`SqlStore`], each method running its module's query;
//! - `web_session` (feature `web-engine`): the WhatsApp Web engine's protocol state, the
//!   storage backend of `whatsapp-rust` for one tenant at one epoch ([`WebSessionStore`]).

mod activity;
mod checkpoint;
mod decode;
mod embeddings;
mod error;
mod fencing;
mod json_rows;
mod knowledge;
mod lists;
mod messages;
mod outbox;
mod placements;
mod rejected;
mod retention;
mod roles;
mod round_trip;
mod secrets;
mod size;
mod tenants;
mod tokens;
#[cfg(feature = "web-engine")]
mod web_session;
mod webhooks;
mod writer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use tokio::sync::Notify;
use tracing::{debug, warn};

pub use embeddings::EmbedPass;
pub use error::redact_url;
use error::{Failure, map_sqlx_error};
pub use outbox::OutboxEvent;
pub use retention::{Batch, BatchCursor, RetentionTable};
pub use secrets::{ColumnReport, ResealProgress};
#[cfg(feature = "web-engine")]
pub use web_session::{WebSessionError, WebSessionStore};
pub use webhooks::{
    AttemptOutcome, AttemptRecord, DeadLetter, DueDelivery, QueueKey, Queued, Webhook,
    WebhookSummary,
};

/// The schema of a dialect, applied at connect. Migrations a newer build applied are
/// tolerated: during a rolling upgrade an older node (re)starts against a database the newer
/// nodes migrated, which the expand-then-contract rule keeps readable (docs/upgrades.md).
fn migrator(dialect: Dialect) -> Migrator {
    let mut migrator = match dialect {
        Dialect::Postgres => sqlx::migrate!("../migrations/postgres"),
        Dialect::Sqlite => sqlx::migrate!("../migrations/sqlite"),
    };
    migrator.set_ignore_missing(true);
    migrator
}

/// Warns when the database holds migrations newer than this build's: it runs as the older
/// build of a rolling upgrade (or after a downgrade).
async fn warn_of_newer_migrations(pool: &AnyPool, migrator: &Migrator) {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await;
    if let Ok(Some(applied)) = applied
        && applied > known
    {
        warn!(
            database_migration = applied,
            build_migration = known,
            "the database has migrations newer than this build's: running as an older build beside newer ones (docs/upgrades.md)"
        );
    }
}

/// Per-connection SQLite settings: write-ahead log (readers never block the writer),
/// `synchronous=NORMAL` (durable at checkpoints, the recommended pairing with WAL),
/// foreign keys enforced, a 5 s wait for a busy database instead of failing at once, a
/// page cache of up to 32 MiB (SQLite's default is 2 MiB): every group commit descends
/// the `messages` indexes, and on a large table their upper pages no longer fit; and
/// temporary storage in memory: a statement that changes many rows inside a transaction
/// keeps the pages it changes in a statement journal, which SQLite otherwise spills to a
/// temporary file past 64 KiB — a second write of every page of a group commit's inserts.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -32768; \
     PRAGMA temp_store = MEMORY;";

/// The read pool's connections: as [`SQLITE_PRAGMAS`], and they refuse to write.
const SQLITE_READER_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
     PRAGMA query_only = ON;";

/// How a SQLite read-then-write transaction starts ([`Db::begin`]).
const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE";

/// How long a write waits for SQLite's one writer connection.
const SQLITE_WRITER_WAIT: Duration = Duration::from_secs(30);

/// A pooled connection idle for at least this long is pinged before it is handed out; one
/// used more recently is handed out as it is. (sqlx's own test pings on every acquire: a
/// round trip to PostgreSQL, or a hand-off to SQLite's connection thread, before each read
/// and each transaction.)
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// When a store last saw a connection lost ([`Failure::lost_connection`]: the server
/// restarted, the network dropped): every pooled connection that went idle before then is
/// pinged before it is handed out, however recently it was used.
#[derive(Debug)]
struct ConnectionHealth {
    started: std::time::Instant,
    /// Milliseconds from `started` to the last loss seen, plus one; 0: none seen.
    lost_at_ms: AtomicU64,
}

impl ConnectionHealth {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            lost_at_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// A connection was lost just now.
    fn lost(&self) {
        self.lost_at_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle_for` is pinged before it is handed out: idle for
    /// [`PING_AFTER_IDLE`] or more, or since before the last loss. (One that went idle
    /// after the loss needs no ping: sqlx pinged it as it went back to the pool.)
    fn needs_ping(&self, idle_for: Duration) -> bool {
        if idle_for >= PING_AFTER_IDLE {
            return true;
        }
        let lost_at = self.lost_at_ms.load(Ordering::Relaxed);
        let idle_since = self
            .now_ms()
            .saturating_sub(u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX));
        lost_at != 0 && idle_since <= lost_at
    }
}

/// `options` with the liveness test of [`ConnectionHealth::needs_ping`] in place of sqlx's:
/// a connection that fails its ping is closed and a new one opened.
fn ping_when_idle(options: AnyPoolOptions, health: Arc<ConnectionHealth>) -> AnyPoolOptions {
    options.test_before_acquire(false).before_acquire(
        move |connection: &mut AnyConnection, meta| {
            let ping = health.needs_ping(meta.idle_for);
            Box::pin(async move {
                if !ping {
                    return Ok(true);
                }
                match connection.ping().await {
                    Ok(()) => Ok(true),
                    Err(error) => {
                        debug!(%error, "an idle pooled connection failed its ping: closed");
                        Ok(false)
                    }
                }
            })
        },
    )
}

/// Which SQL database a store talks to; picked from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres:` or `postgresql:` URLs.
    Postgres,
    /// `sqlite:` URLs.
    Sqlite,
}

impl Dialect {
    /// The statement that opens a write transaction (SQLite's takes the write lock at once,
    /// [`SQLITE_BEGIN`]).
    pub(crate) fn begin(self) -> &'static str {
        match self {
            Self::Postgres => "BEGIN",
            Self::Sqlite => SQLITE_BEGIN,
        }
    }

    /// The dialect of a database URL, or [`StoreError::Invalid`] for an unknown scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(StoreError::Invalid {
                reason: format!(
                    "unsupported database url {}: expected a sqlite:, postgres: or postgresql: url",
                    redact_url(url)
                ),
            })
        }
    }
}

/// Pool settings of a [`SqlStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStoreOptions {
    /// Most connections open at once. Postgres: the one pool's size. SQLite: the size of
    /// the read pool; writes always go through one more connection, the only one that
    /// writes (in-memory databases use one connection for everything).
    pub max_connections: u32,
    /// How long an operation waits for a connection, including opening one: a database
    /// that is down fails within this time.
    pub acquire_timeout: Duration,
}

impl Default for SqlStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The pools and the dialect, handed to the per-concern query functions.
#[derive(Clone)]
pub(crate) struct Db {
    /// Where writes go, and reads that are not on the hot path. SQLite: one connection,
    /// so writers queue in the pool instead of sleeping in SQLite's busy handler.
    /// Postgres: the one pool.
    pool: AnyPool,
    /// Where the hot path's reads go. SQLite: a pool of read-only connections (WAL lets
    /// them read while the writer writes). Postgres: the same pool as `pool`.
    reader: AnyPool,
    dialect: Dialect,
    /// The group-commit writer the hot path's writes go through.
    writer: writer::GroupWriter,
    /// Woken after each commit that wrote to the events outbox (the publisher waits on it).
    outbox: Arc<Notify>,
    /// The queues (webhook and chat) that got deliveries through this store, for the
    /// delivery worker, which is woken.
    webhooks: Arc<webhooks::NamedQueues>,
    /// The webhooks the deliveries handed over at publishing go to.
    webhook_cache: Arc<webhooks::WebhookCache>,
    /// The keys of the secret columns, shared by every clone (the writer's too); unset:
    /// written as they come ([`SqlStore::with_secrets`]).
    secrets: Arc<std::sync::OnceLock<crate::secrets::Keyring>>,
    /// When a connection was last lost: the pools test those idle since before then.
    health: Arc<ConnectionHealth>,
}

impl Db {
    /// Notes a failure: one that lost its connection has the pools test the connections
    /// that went idle before it.
    fn saw(&self, failure: &Failure) {
        if failure.lost_connection() {
            self.health.lost();
        }
    }

    /// Tells the events publisher that the outbox has new events (call after the commit).
    fn outbox_written(&self) {
        self.outbox.notify_one();
    }

    /// Tells the webhook delivery worker that these queues got deliveries.
    fn webhooks_queued(&self, queued: Vec<QueueKey>) {
        self.webhooks.name(queued);
    }

    /// Hands deliveries just queued at publishing to the webhook delivery worker.
    fn webhooks_fresh(&self, fresh: Vec<DueDelivery>) {
        self.webhooks.hand_over(fresh);
    }

    /// Starts a transaction for a read-then-write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can fail
    /// with `SQLITE_BUSY` when another connection wrote in between, whatever the timeout.
    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Postgres => self.pool.begin().await,
            Dialect::Sqlite => self.pool.begin_with(SQLITE_BEGIN).await,
        }
    }

    /// [`Db::begin`] on a connection of the write pool the caller holds.
    async fn begin_on<'c>(
        &self,
        connection: &'c mut AnyConnection,
    ) -> Result<Transaction<'c, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Postgres => connection.begin().await,
            Dialect::Sqlite => connection.begin_with(SQLITE_BEGIN).await,
        }
    }
}

/// The gateway's [`Store`](salesboy_actors::store::Store) on Postgres or SQLite.
///
/// Cheap to clone (the pool is shared). Errors name the database by its URL with the
/// password replaced by `***`.
#[derive(Clone)]
pub struct SqlStore {
    db: Db,
    /// The redacted URL, for error messages.
    url: Arc<str>,
    /// Semantic retrieval, when an embedding provider is configured
    /// ([`SqlStore::with_retrieval`]); `None`: full-text search only.
    retrieval: Option<Arc<crate::retrieval::Retrieval>>,
    /// The tenants' full-text indexes the search without retrieval ranks from.
    texts: Arc<crate::retrieval::text_cache::TextCache>,
    /// SQLite files: the task that checkpoints the write-ahead log, stopped with the last
    /// clone of the store.
    _checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.db.dialect)
            .field("url", &self.url)
            .finish()
    }
}

impl SqlStore {
    /// Connects with default [`SqlStoreOptions`] and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &SqlStoreOptions::default()).await
    }

    /// Connects to `url` (`sqlite:…`, `postgres:…` or `postgresql:…`) and applies the
    /// migrations.
    ///
    /// SQLite: the file is created if missing (`mode=rwc` is added unless the URL sets a
    /// mode; its directory must exist) and opened in WAL mode with `synchronous=NORMAL`,
    /// foreign keys on and a 5 s busy timeout.
    ///
    /// Postgres: sqlx's migrator holds a session-level `pg_advisory_lock` (keyed on the
    /// database name) from before it reads the migrations table until it is done, so nodes
    /// starting together apply each migration exactly once; the others wait, then find
    /// nothing to do.
    ///
    /// A database that cannot be reached gives [`StoreError::Unavailable`] with the real
    /// reason (at once when the connection is refused, after `acquire_timeout` when the host
    /// does not answer); an unknown scheme gives [`StoreError::Invalid`]. Errors name the
    /// database by its redacted URL.
    pub async fn connect_with(url: &str, options: &SqlStoreOptions) -> Result<Self, StoreError> {
        let dialect = Dialect::from_url(url)?;
        let redacted: Arc<str> = redact_url(url).into();
        let scrub =
            |error: sqlx::Error| scrub_url(map_sqlx_error(error, &redacted), url, &redacted);
        sqlx::any::install_default_drivers();

        let health = Arc::new(ConnectionHealth::new());
        let mut pool_options = ping_when_idle(AnyPoolOptions::new(), Arc::clone(&health))
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        let mut connect_url = url.to_owned();
        // SQLite files: the read pool, opened after the migrations.
        let mut read_pool_options = None;
        if dialect == Dialect::Sqlite {
            connect_url = sqlite_url_with_defaults(url);
            if is_sqlite_in_memory(url) {
                // each connection of the Any driver would open its own in-memory database:
                // keep exactly one, forever, for reads and writes
                pool_options = pool_options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                read_pool_options = Some(
                    ping_when_idle(AnyPoolOptions::new(), Arc::clone(&health))
                        .max_connections(options.max_connections)
                        .acquire_timeout(options.acquire_timeout)
                        .after_connect(|connection: &mut AnyConnection, _| {
                            Box::pin(async move {
                                connection.execute(SQLITE_READER_PRAGMAS).await?;
                                Ok(())
                            })
                        }),
                );
                // The one writer: writes queue here (fairly, in order) rather than in
                // SQLite's busy handler, which sleeps between retries. A queue of writes is
                // not an outage, so it may wait longer than a read.
                pool_options = pool_options
                    .max_connections(1)
                    .acquire_timeout(options.acquire_timeout.max(SQLITE_WRITER_WAIT));
            }
            pool_options = pool_options.after_connect(|connection: &mut AnyConnection, _| {
                Box::pin(async move {
                    connection.execute(SQLITE_PRAGMAS).await?;
                    // The checkpointer copies the log, off the writer, up to a backstop
                    // (an in-memory database has no log to copy).
                    connection.execute(checkpoint::WRITER_PRAGMA).await?;
                    Ok(())
                })
            });
        }

        // One direct connection first: it fails at once with the real reason (connection
        // refused, authentication, unknown database), where the pool would retry until its
        // timeout and report only the timeout.
        match tokio::time::timeout(
            options.acquire_timeout,
            AnyConnection::connect(&connect_url),
        )
        .await
        {
            Err(_) => {
                return Err(StoreError::Unavailable {
                    url: redacted.to_string(),
                    reason: format!("no connection within {:?}", options.acquire_timeout),
                });
            }
            Ok(Err(error)) => return Err(scrub(error)),
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
            }
        }
        let pool = pool_options.connect(&connect_url).await.map_err(scrub)?;
        let migrator = migrator(dialect);
        if let Err(error) = migrator.run(&pool).await {
            // sqlx does not unlock on its error paths: closing the pool ends the session that
            // may still hold the migration lock
            pool.close().await;
            return Err(scrub(error.into()));
        }
        warn_of_newer_migrations(&pool, &migrator).await;
        let reader = match read_pool_options {
            Some(read_pool_options) => read_pool_options
                .connect(&connect_url)
                .await
                .map_err(scrub)?,
            None => pool.clone(),
        };
        let checkpointer = (dialect == Dialect::Sqlite && !is_sqlite_in_memory(url)).then(|| {
            Arc::new(checkpoint::Checkpointer::start(
                reader.clone(),
                crate::secrets::files::sqlite_file(url),
            ))
        });
        debug!(database = %redacted, ?dialect, "database connected and migrated");
        let db = Db {
            pool,
            reader,
            dialect,
            outbox: Arc::new(Notify::new()),
            webhooks: Arc::new(webhooks::NamedQueues::default()),
            webhook_cache: Arc::default(),
            writer: writer::GroupWriter::detached(),
            secrets: Arc::default(),
            health,
        };
        let writers = match dialect {
            Dialect::Postgres => options
                .max_connections
                .div_ceil(2)
                .clamp(1, writer::POSTGRES_WRITER_TASKS),
            Dialect::Sqlite => 1,
        };
        Ok(Self {
            db: Db {
                writer: writer::GroupWriter::start(&db, writers),
                ..db
            },
            url: redacted,
            retrieval: None,
            texts: Arc::new(crate::retrieval::text_cache::TextCache::new(
                crate::retrieval::text_cache::TEXT_CACHE_BYTES,
            )),
            _checkpointer: checkpointer,
        })
    }

    /// The dialect in use.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect
    }

    /// The database URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// Completes when events have been written to the outbox through this store since the
    /// last call (at once if they were). Events written by other nodes do not wake it.
    pub async fn outbox_written(&self) {
        self.db.outbox.notified().await;
    }

    /// The first `count` events not yet published to the events stream, in outbox order.
    pub async fn unpublished_events(&self, count: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.run(outbox::unpublished(&self.db, count)).await
    }

    /// Marks `events` (as read by [`Self::unpublished_events`]) published at `at_ms`, and
    /// hands their deliveries to the webhook delivery worker ([`Self::take_queued`]),
    /// written as one batch row.
    pub async fn mark_events_published(
        &self,
        events: &[OutboxEvent],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(outbox::mark_published(&self.db, events, at_ms))
            .await
    }

    /// Up to `count` events after sequence `after`, in outbox order.
    pub async fn events_after(
        &self,
        after: i64,
        count: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.run(outbox::events_after(&self.db, after, count)).await
    }

    /// Deletes the events that happened before `cutoff_ms` (those a webhook has still to
    /// receive stay), and the dead letters given up before it, in batches; answers how many
    /// events went and how many of those had never been published.
    pub async fn delete_events_before(&self, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        self.run(async {
            retention::delete_all_before(
                &self.db,
                RetentionTable::DeadLetters,
                cutoff_ms,
                retention::DEFAULT_BATCH,
            )
            .await?;
            retention::delete_all_before(
                &self.db,
                RetentionTable::Events,
                cutoff_ms,
                retention::DEFAULT_BATCH,
            )
            .await
        })
        .await
    }

    /// Deletes the rejected webhook items received before `cutoff_ms`, in batches; answers
    /// how many.
    pub async fn delete_rejected_items_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.run(retention::delete_all_before(
            &self.db,
            RetentionTable::RejectedItems,
            cutoff_ms,
            retention::DEFAULT_BATCH,
        ))
        .await
        .map(|(deleted, _)| deleted)
    }

    /// Deletes at most `limit` rows of `table` older than `cutoff_ms`, from `cursor` on, in
    /// one short transaction (retention, [`crate::retention`]).
    pub async fn retention_batch(
        &self,
        table: RetentionTable,
        cutoff_ms: i64,
        cursor: &BatchCursor,
        limit: u32,
    ) -> Result<Batch, StoreError> {
        self.run(retention::delete_batch(
            &self.db, table, cutoff_ms, cursor, limit,
        ))
        .await
    }

    /// Completes when events have been queued for webhooks through this store since the
    /// last call (at once if they were).
    pub async fn webhooks_queued(&self) {
        self.db.webhooks.named().await;
    }

    /// The deliveries queued through this store since the last call (the queues to read,
    /// and the deliveries queued at publishing, whole), or `None` when too many piled up to
    /// keep: read the whole queue then.
    pub fn take_queued(&self) -> Option<Queued> {
        self.db.webhooks.take()
    }

    /// The first pending delivery of each of these queues, whatever its next attempt's time
    /// (queues with nothing pending are left out).
    pub async fn queue_heads(&self, keys: &[QueueKey]) -> Result<Vec<DueDelivery>, StoreError> {
        self.run(webhooks::heads_of(&self.db, keys)).await
    }

    /// Adds a webhook.
    pub async fn add_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        self.run(webhooks::add(&self.db, webhook)).await
    }

    /// The tenant's webhooks, oldest first, with their pending and dead counts.
    pub async fn webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookSummary>, StoreError> {
        self.run(webhooks::list(&self.db, tenant)).await
    }

    /// Removes one of the tenant's webhooks and its queue; whether it existed.
    pub async fn remove_webhook(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        self.run(webhooks::remove(&self.db, tenant, id)).await
    }

    /// Up to `count` deliveries due at `now_ms`: the first pending event of each webhook and
    /// chat whose next attempt is due, in outbox order.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        count: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.run(webhooks::due(&self.db, now_ms, count)).await
    }

    /// Records deliveries in one transaction: delivered ones leave the queue, failed ones
    /// are retried later or dead-lettered, queued ones enter the queue; then the batch rows
    /// `settled` go (each of their deliveries delivered or queued).
    pub async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        settled: &[i64],
    ) -> Result<(), StoreError> {
        self.run(webhooks::record_attempts(&self.db, records, settled))
            .await
    }

    /// Recovers the webhook batch rows left behind (a node killed, a lost lead) written at
    /// or before `written_by_ms`, except `held` (this worker holds their deliveries): their
    /// events are queued for every matching webhook, due at `now_ms`. Answers the batches
    /// recovered.
    pub async fn recover_webhook_batches(
        &self,
        held: &std::collections::HashSet<i64>,
        written_by_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.run(webhooks::recover_batches(
            &self.db,
            held,
            written_by_ms,
            now_ms,
        ))
        .await
    }

    /// Up to `count` dead letters of the tenant's webhook, oldest first; `None` if the tenant
    /// has no such webhook.
    pub async fn dead_letters(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        count: u32,
    ) -> Result<Option<Vec<DeadLetter>>, StoreError> {
        self.run(webhooks::dead_letters(&self.db, tenant, webhook_id, count))
            .await
    }

    /// Queues dead letters of the tenant's webhook again (all, or event `event_id`'s) with a
    /// new retry window; how many, or `None` if the tenant has no such webhook.
    pub async fn redeliver(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.run(webhooks::redeliver(
            &self.db, tenant, webhook_id, event_id, now_ms,
        ))
        .await
    }

    /// Replaces the last placement decision of each decision's tenant (the dashboard's "why it
    /// is there").
    pub async fn record_placements(
        &self,
        decisions: &[crate::cluster::placement::PlacementDecision],
    ) -> Result<(), StoreError> {
        self.run(placements::record_placements(&self.db, decisions))
            .await
    }

    /// The last placement decision about `tenant`, with its inputs, if one was recorded.
    pub async fn placement_decision(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<crate::cluster::placement::PlacementDecision>, StoreError> {
        self.run(placements::placement_decision(&self.db, tenant))
            .await
    }

    /// The database's size in bytes (`pg_database_size`; SQLite: pages times page size).
    pub async fn database_size_bytes(&self) -> Result<u64, StoreError> {
        self.run(size::database_size_bytes(&self.db)).await
    }

    /// The knowledge chunks of every tenant together.
    pub async fn knowledge_chunks(&self) -> Result<u64, StoreError> {
        self.run(size::knowledge_chunks(&self.db)).await
    }

    /// Writes a consistent copy of an SQLite database to `path`, a new or empty file, while
    /// the store stays in use (`VACUUM INTO`); [`StoreError::Invalid`] on PostgreSQL (use
    /// `pg_dump`) or when `path` holds something.
    pub async fn backup_sqlite(&self, path: &std::path::Path) -> Result<(), StoreError> {
        if self.db.dialect != Dialect::Sqlite {
            return Err(StoreError::Invalid {
                reason: "backup copies an sqlite database: back PostgreSQL up with pg_dump".into(),
            });
        }
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Err(StoreError::Invalid {
                reason: format!(
                    "{} exists: a backup is written to a new file",
                    path.display()
                ),
            });
        }
        let Some(path) = path.to_str() else {
            return Err(StoreError::Invalid {
                reason: "the backup path is not valid UTF-8".into(),
            });
        };
        self.run(size::backup_sqlite(&self.db, path)).await
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.db.pool.close().await;
        // SQLite's read pool (on PostgreSQL the same pool, closed already); its checkpoint
        // task stops with it.
        self.db.reader.close().await;
    }

    /// This store with semantic retrieval: passages are embedded in the background
    /// ([`crate::retrieval::worker`]), searches fuse full text and vectors, and the
    /// knowledge list reports each document's embedded chunks.
    pub fn with_retrieval(mut self, retrieval: Arc<crate::retrieval::Retrieval>) -> Self {
        self.retrieval = Some(retrieval);
        self
    }

    /// The store's semantic retrieval, if any.
    pub fn retrieval(&self) -> Option<&Arc<crate::retrieval::Retrieval>> {
        self.retrieval.as_ref()
    }

    /// One embedding pass: a batch of pending passages (any tenant) embedded and stored
    /// ([`EmbedPass`]). [`EmbedPass::Idle`] without retrieval.
    pub async fn embed_pending(&self) -> Result<EmbedPass, StoreError> {
        let Some(retrieval) = &self.retrieval else {
            return Ok(EmbedPass::Idle);
        };
        self.run(embeddings::embed_pending(&self.db, retrieval))
            .await
    }

    /// Builds `tenant`'s full-text index (the hybrid search's, [`crate::retrieval::text_index`])
    /// from the database, bypassing the cache (the cold load the benchmarks time). `None`
    /// without retrieval.
    pub async fn load_text_index(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<crate::retrieval::text_index::TextIndex>, StoreError> {
        if self.retrieval.is_none() {
            return Ok(None);
        }
        self.run(embeddings::load_text_index(&self.db, tenant))
            .await
            .map(Some)
    }

    /// Loads `tenant`'s vector index (of its model) from the database, bypassing the cache
    /// (the cold load the benchmarks time); its number of vectors and bytes. `None` without
    /// retrieval, or when the node has no provider for the tenant's model.
    pub async fn load_vector_index(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<crate::retrieval::CachedIndex>, StoreError> {
        let Some(retrieval) = &self.retrieval else {
            return Ok(None);
        };
        let Some((model, stamp)) = self
            .run(embeddings::tenant_model(&self.db, retrieval, tenant))
            .await?
        else {
            return Ok(None);
        };
        self.run(embeddings::load_index(
            &self.db, retrieval, tenant, &model, stamp,
        ))
        .await
        .map(Some)
    }

    /// Awaits a query function and maps its failure to a [`StoreError`].
    async fn run<T>(
        &self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, StoreError> {
        work.await.map_err(|failure| {
            self.db.saw(&failure);
            failure.into_store_error(&self.url)
        })
    }
}

/// Defence in depth: an error text that quotes the raw URL shows the redacted one instead.
fn scrub_url(error: StoreError, raw: &str, redacted: &str) -> StoreError {
    let scrub = |text: String| text.replace(raw, redacted);
    match error {
        StoreError::Unavailable { url, reason } => StoreError::Unavailable {
            url,
            reason: scrub(reason),
        },
        StoreError::Invalid { reason } => StoreError::Invalid {
            reason: scrub(reason),
        },
        StoreError::Backend(reason) => StoreError::Backend(scrub(reason)),
        other => other,
    }
}

/// Adds `mode=rwc` (create the file if missing) unless the URL already sets a mode.
fn sqlite_url_with_defaults(url: &str) -> String {
    let has_mode = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("mode=")));
    if has_mode || is_sqlite_in_memory(url) {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

fn is_sqlite_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_come_from_the_scheme() {
        assert_eq!(Dialect::from_url("postgres://h/db"), Ok(Dialect::Postgres));
        assert_eq!(
            Dialect::from_url("postgresql://h/db"),
            Ok(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("sqlite://./x.db"), Ok(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("sqlite::memory:"), Ok(Dialect::Sqlite));
        let error = Dialect::from_url("mysql://root:pw@h/db").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("mysql://root:***@h/db"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }

    #[test]
    fn sqlite_urls_create_the_file_unless_told_otherwise() {
        assert_eq!(
            sqlite_url_with_defaults("sqlite://./a.db"),
            "sqlite://./a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_defaults("sqlite://./a.db?cache=private"),
            "sqlite://./a.db?cache=private&mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_defaults("sqlite://./a.db?mode=ro"),
            "sqlite://./a.db?mode=ro"
        );
        assert_eq!(
            sqlite_url_with_defaults("sqlite::memory:"),
            "sqlite::memory:"
        );
    }

    #[test]
    fn connections_are_pinged_when_idle_a_second_or_since_before_a_lost_connection() {
        let health = ConnectionHealth::new();
        assert!(!health.needs_ping(Duration::ZERO));
        assert!(!health.needs_ping(Duration::from_millis(999)));
        assert!(health.needs_ping(PING_AFTER_IDLE));

        health.lost();
        let lost_at = health.lost_at_ms.load(Ordering::Relaxed);
        // Idle since before the loss: pinged, however recently used.
        assert!(health.needs_ping(Duration::from_millis(500)));
        // Went idle after it: not pinged (sqlx pinged it as it went back to the pool).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while health.now_ms() <= lost_at {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock did not move"
            );
            std::hint::spin_loop();
        }
        assert!(!health.needs_ping(Duration::ZERO));
    }
}
