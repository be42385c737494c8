//! Wiring a node together, and shutting it down cleanly.
//!
//! [`start`] builds everything from a [`Config`] and returns a [`RunningNode`] (tests use it
//! to run real nodes in-process); [`run`] is `start`, wait for the shutdown signal, stop. The
//! actors and the cluster member are built by [`crate::assembly`], as the fault simulation
//! builds its nodes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::{LlmProviderFactory, SystemClock, WhatsAppConnector};
use salesboy_actors::services::{Settings, response_cache};
use salesboy_actors::store::Store;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::alerts::AlertEvaluator;
use crate::assembly::{self, AssembledNode, MemberSettings, NodeParts};
use crate::background::Background;
use crate::bus::{Bus, NatsBus};
use crate::cluster::membership::NodeInfo;
use crate::cluster::placement_log::PlacementLog;
use crate::cluster::{ClusterKey, ClusterKeyError, ClusterMember};
use crate::config::Config;
use crate::events::NodeEvents;
use crate::events::live::LiveEvents;
use crate::events::publisher::{self, Publisher, StreamSettings};
use crate::events::webhooks::{WebhookDeliverer, WebhookSettings};
use crate::http::{self, AppState, HttpSettings};
use crate::routing::Router;
use crate::secrets::files::{create_private_dir, protect_sqlite_files, write_private};
use crate::secrets::{KeySource, keyring_for};
use crate::store::{SqlStore, redact_url};

/// The file in the data dir that holds the generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// How long shutdown waits for the actors to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the node's LLM response cache.
const RESPONSE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Installs ring as the process's rustls crypto provider (docs/decisions/0004). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A node started by [`start`].
pub struct RunningNode {
    /// Where HTTP listens (the real port when the config said port 0).
    pub http_addr: SocketAddr,
    /// Where the admin API listens when it listens apart (`admin_http_addr`; the real port).
    pub admin_http_addr: Option<SocketAddr>,
    /// The admin API's bearer token.
    pub admin_token: SecretString,
    /// The actor tree.
    pub node: NodeHandle,
    /// The database.
    pub store: Arc<dyn Store>,
    /// The node's events.
    pub events: Arc<NodeEvents>,
    /// The cluster runtime, when the node runs on a bus.
    pub cluster: Option<Arc<ClusterMember>>,
    /// Where tenant commands go.
    pub router: Router,
    /// The parent of `tasks` and of the cluster member's tasks (its own tracker holds
    /// nothing); cancelled last at stop.
    background: Background,
    /// The node's own background tasks (HTTP, the NATS service API, retention, the alert
    /// evaluator, event publishing, ingress hand-offs, alert writes); stop cancels them first and waits until
    /// none is left.
    tasks: Background,
    sql: SqlStore,
}

impl RunningNode {
    /// On a cluster: moves every tenant off (drain) and leaves. Then stops like
    /// [`RunningNode::stop`].
    pub async fn drain_and_stop(self) {
        if let Some(cluster) = &self.cluster {
            match cluster.drain().await {
                Ok(moved) => info!(moved, "drained before stopping"),
                Err(e) => warn!(error = %e, "drain incomplete, stopping anyway"),
            }
        }
        self.stop().await;
    }

    /// Completes when a drain asked through the cluster has finished (never on a single
    /// node).
    pub async fn drained(&self) {
        match &self.cluster {
            Some(cluster) => {
                let mut exit = cluster.exit_signal();
                let _ = exit.wait_for(|done| *done).await;
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// The node's own background tasks (HTTP, retention, event publishing, ingress
    /// hand-offs, alert writes): empty once [`RunningNode::stop`] returns. The cluster
    /// member's are [`ClusterMember::tasks`].
    pub fn tasks(&self) -> &TaskTracker {
        self.tasks.tracker()
    }

    /// Cancels the node's own background tasks and waits for them (HTTP stops accepting and
    /// finishes its requests), then stops the actors, then the cluster member (its tasks,
    /// waited for), then waits for the alerts raised meanwhile, then closes the database.
    pub async fn stop(self) {
        info!("shutting down");
        if let Err(e) = self.tasks.stop(SHUTDOWN_TIMEOUT).await {
            warn!(
                left = e.left,
                "background tasks still running after the shutdown timeout"
            );
        }
        let assembled = AssembledNode {
            node: self.node,
            cluster: self.cluster,
            router: self.router,
        };
        assembled.stop(SHUTDOWN_TIMEOUT).await;
        if let Err(e) = self.tasks.wait(SHUTDOWN_TIMEOUT).await {
            warn!(
                left = e.left,
                "alert writes still running after the shutdown timeout"
            );
        }
        self.background.cancel();
        self.sql.close().await;
        info!("stopped");
    }
}

/// Runs a node until `shutdown` completes (on a cluster: drains first), or until a drain
/// asked through the cluster completes; then stops it cleanly. Tells systemd when it is
/// ready and when it stops ([`crate::notify`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // A signal while the node starts (a database or NATS that does not answer) ends it.
    let node = tokio::select! {
        node = start(config) => node?,
        () = &mut shutdown => {
            info!("stopped while starting");
            return Ok(());
        }
    };
    // Under systemd (`Type=notify`): ready now, stopping when the drain starts.
    crate::notify::ready();
    tokio::select! {
        () = &mut shutdown => {
            crate::notify::stopping();
            node.drain_and_stop().await;
        }
        () = node.drained() => {
            crate::notify::stopping();
            node.stop().await;
        }
    }
    Ok(())
}

/// Builds and starts a node: database (migrations), actors, HTTP; on a cluster (NATS URL
/// configured) also membership, directory, leadership, the cluster runtime and, on NATS,
/// the service API (`salesboy`, [`crate::api::service`]).
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    let bus: Option<Arc<dyn Bus>> = match &config.nats_url {
        Some(url) => {
            // Without a key, refuse before connecting: the node could not join anyway.
            ClusterKey::from_config(&config)?.ok_or(ClusterKeyError::Missing)?;
            let options = config.nats_options(format!("salesboy-{}", config.node_id));
            let bus = NatsBus::connect(url, options)
                .await
                .with_context(|| format!("connecting to nats at {}", redact_url(url)))?;
            Some(Arc::new(bus))
        }
        None => None,
    };
    start_with_bus(config, bus).await
}

/// [`start`] on a given bus (`None`: a single node). Tests run several nodes in one process
/// on one in-process bus this way.
pub async fn start_with_bus(
    config: Config,
    bus: Option<Arc<dyn Bus>>,
) -> anyhow::Result<RunningNode> {
    install_crypto_provider();
    let not_private = create_private_dir(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    if let Some(error) = not_private {
        warn!(dir = %config.data_dir.display(), %error, "cannot make the data dir private (0700)");
    }

    let admin_token = admin_token(&config)?;
    let database_url = config.effective_database_url();
    let mut sql = open_database(&config, &database_url).await?;
    if let Some(retrieval) = retrieval_from_config(&config)? {
        info!(
            model = retrieval.model(),
            models = retrieval.models().collect::<Vec<_>>().join(","),
            "semantic retrieval on: knowledge passages are embedded"
        );
        sql = sql.with_retrieval(retrieval);
    }
    let store: Arc<dyn Store> = Arc::new(sql.clone());

    let (whatsapp, llm) = adapters(&config)?;
    let background = Background::new();
    let tasks = background.child();
    let events = Arc::new(NodeEvents::new(Arc::clone(&store), &tasks));
    let cluster = bus.as_ref().map(|bus| {
        let info = NodeInfo {
            http_addr: config.http_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: config.protocol,
            max_tenants: config.max_tenants,
        };
        let key = ClusterKey::from_config(&config)?.ok_or(ClusterKeyError::Missing)?;
        anyhow::Ok(MemberSettings {
            placement_log: Some(PlacementLog::start(sql.clone(), &tasks)),
            ..MemberSettings::new(Arc::clone(bus), Arc::new(key), info, config.membership()?)
        })
    });
    let cluster = cluster.transpose()?;
    let AssembledNode {
        node,
        cluster,
        router,
    } = assembly::assemble(
        NodeParts {
            id: config.node_id.clone(),
            store: Arc::clone(&store),
            whatsapp,
            // The WhatsApp Web engine (docs/engines.md), on the node's SQL store.
            #[cfg(feature = "web-engine")]
            web: Some(Arc::new(crate::adapters::WhatsAppWebConnector::new(
                sql.clone(),
                &config.whatsapp_web_url,
            ))
                as Arc<dyn salesboy_actors::web::WebConnector>),
            #[cfg(not(feature = "web-engine"))]
            web: None,
            llm,
            clock: Arc::new(SystemClock),
            events: events.clone(),
            cache: response_cache(RESPONSE_CACHE_BYTES),
            settings: settings(&config),
            cluster,
        },
        &background,
    )
    .await?;

    let state = AppState::new(
        node.clone(),
        sql.clone(),
        HttpSettings {
            app_secret: config.whatsapp_app_secret.clone(),
            verify_token: config.whatsapp_verify_token.clone(),
            admin_token: admin_token.clone(),
            node_id: config.node_id.to_string(),
            bus: bus.as_ref().map_or("none", |bus| bus.kind()),
            auth_throttle: http::admin::AuthThrottleSettings {
                max_failures: config.admin_auth_max_failures,
                window: Duration::from_secs(config.admin_auth_lockout_secs),
            },
        },
        http::metrics::recorder(),
        tasks.tracker().clone(),
        tasks.token().clone(),
    )
    .with_router(router.clone(), cluster.clone())
    .with_alerts(events.active_alerts())
    .with_live_events(match bus.as_ref() {
        Some(bus) if bus.nats_client().is_some() => LiveEvents::Bus(Arc::clone(bus)),
        _ => LiveEvents::Local(events.feed()),
    });
    if let Some(client) = bus.as_ref().and_then(|bus| bus.nats_client()) {
        crate::api::service::start(client, state.api(), env!("CARGO_PKG_VERSION"), &tasks)
            .await
            .context("starting the nats service api")?;
    }
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP to {}", config.http_addr))?;
    let http_addr = listener.local_addr().context("reading the HTTP address")?;
    let admin_listener = match config.admin_http_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin HTTP listener to {addr}"))?,
        ),
        None => None,
    };
    let admin_http_addr = admin_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()
        .context("reading the admin HTTP address")?;
    tasks.spawn(crate::retrieval::worker::run(
        sql.clone(),
        cluster.clone(),
        tasks.token().clone(),
    ));
    tasks.spawn_until_cancelled(
        crate::web_hosting::WebHosting {
            store: Arc::clone(&store),
            node: node.clone(),
            router: router.clone(),
            cluster: cluster.clone(),
        }
        .run(),
    );
    tasks.spawn_until_cancelled(crate::retention::retention_job(
        sql.clone(),
        cluster.clone(),
        config.retention,
    ));
    tasks.spawn_until_cancelled(
        AlertEvaluator {
            settings: config.alerts,
            node_id: config.node_id.clone(),
            node: node.clone(),
            sql: sql.clone(),
            events: events.clone(),
            active: events.active_alerts(),
            cluster: cluster.clone(),
            clock: Arc::new(SystemClock),
        }
        .run(),
    );
    let stream_settings = StreamSettings {
        max_age: Duration::from_secs(config.events_max_age_secs),
        duplicate_window: Duration::from_secs(config.events_duplicate_window_secs),
        replicas: config.replicas(),
    };
    let stream = bus
        .as_ref()
        .and_then(|bus| bus.nats_client())
        .map(async_nats::jetstream::new);
    if let Some(js) = &stream {
        publisher::ensure_stream_at_start(js, &stream_settings)
            .await
            .context("starting the events publisher")?;
    }
    tasks.spawn_until_cancelled(
        Publisher {
            store: sql.clone(),
            stream,
            settings: stream_settings,
            feed: events.feed(),
            cluster: cluster.clone(),
            clock: Arc::new(SystemClock),
        }
        .run(),
    );
    tasks.spawn_until_cancelled(
        WebhookDeliverer {
            store: sql.clone(),
            http: webhook_client()?,
            settings: WebhookSettings {
                retry_window: Duration::from_secs(config.webhook_retry_secs),
                timeout: Duration::from_millis(config.webhook_timeout_ms),
            },
            cluster: cluster.clone(),
            clock: Arc::new(SystemClock),
        }
        .run(),
    );
    if config.whatsapp_app_secret.is_none() {
        warn!(
            "SALESBOY_WHATSAPP_APP_SECRET is not set: webhook deliveries are refused (503) until it is"
        );
    }
    // Served last (bound early, so a taken port fails at once): a node that answers HTTP
    // has everything running, and has said so in its log.
    let limits = http::limits::HttpLimits {
        request_timeout: Duration::from_millis(config.http_request_timeout_ms),
        max_concurrent: config.http_max_concurrent_requests,
    };
    let stopped = tasks.token().clone();
    info!(
        node = %config.node_id,
        http = %http_addr,
        admin_http = admin_http_addr.map(|addr| addr.to_string()),
        database = %redact_url(&database_url),
        cluster = cluster.is_some(),
        "node ready"
    );
    // Graceful: on cancel, stops accepting and finishes the requests under way.
    match admin_listener {
        None => {
            tasks.spawn(http::limits::serve(
                listener,
                http::router(state),
                limits,
                stopped,
            ));
        }
        Some(admin_listener) => {
            tasks.spawn(http::limits::serve(
                admin_listener,
                http::admin_router(state.clone()),
                limits,
                stopped.clone(),
            ));
            tasks.spawn(http::limits::serve(
                listener,
                http::public_router(state),
                limits,
                stopped,
            ));
        }
    }
    Ok(RunningNode {
        http_addr,
        admin_http_addr,
        admin_token,
        node,
        store,
        events,
        cluster,
        router,
        background,
        tasks,
        sql,
    })
}

fn settings(config: &Config) -> Settings {
    Settings {
        debounce: Duration::from_millis(config.debounce_ms),
        history_window: config.history_window,
        max_conversations_per_tenant: usize::try_from(config.tenant_max_conversations)
            .unwrap_or(usize::MAX),
        max_batch_messages: usize::try_from(config.conversation_max_batch_messages)
            .unwrap_or(usize::MAX),
        max_question_chars: usize::try_from(config.conversation_max_question_chars)
            .unwrap_or(usize::MAX),
        replies_per_second_per_tenant: config.tenant_replies_per_second,
        conversation_idle: Duration::from_secs(config.conversation_idle_secs),
        tenant_idle: Duration::from_secs(config.tenant_idle_secs),
        max_tenants: usize::try_from(config.max_tenants).unwrap_or(usize::MAX),
        messages_per_second: config.whatsapp_messages_per_second,
        max_message_age: Duration::from_secs(config.whatsapp_max_message_age_secs),
        read_receipts: config.whatsapp_read_receipts,
        llm_monthly_spend_cap_micros: config
            .llm_monthly_spend_cap_micros
            .map(|cap| i64::try_from(cap).unwrap_or(i64::MAX)),
        ..Settings::default()
    }
}

/// The real WhatsApp Cloud API client and LLM providers.
fn adapters(
    config: &Config,
) -> anyhow::Result<(Arc<dyn WhatsAppConnector>, Arc<dyn LlmProviderFactory>)> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .build()
        .context("building the HTTP client")?;
    let whatsapp = crate::adapters::whatsapp::CloudApiConnector::new(
        client.clone(),
        &config.whatsapp_api_base,
    );
    let llm = crate::adapters::llm::HttpLlmFactory::new(client, None);
    Ok((Arc::new(whatsapp), Arc::new(llm)))
}

/// The node's semantic retrieval from `embedding_providers` (validated when the
/// configuration was loaded); `None` when unset: full-text search only.
fn retrieval_from_config(
    config: &Config,
) -> anyhow::Result<Option<Arc<crate::retrieval::Retrieval>>> {
    use secrecy::ExposeSecret;
    let Some(json) = &config.embedding_providers else {
        return Ok(None);
    };
    let client = crate::adapters::http_client().context("building the embedding HTTP client")?;
    let settings = crate::retrieval::RetrievalSettings {
        int8: config.embedding_int8,
        cache_bytes: config.embedding_cache_bytes,
        ..crate::retrieval::RetrievalSettings::default()
    };
    crate::retrieval::from_config(&client, Some(json.expose_secret()), settings)
        .context("reading embedding_providers")
}

/// The HTTP client of event webhooks: rustls, no redirects (a 3xx is a failed attempt).
fn webhook_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("salesboy-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")
}

/// The configured admin token, or the one in the data dir (generated on first start); one
/// shorter than [`crate::config::MIN_ADMIN_TOKEN_CHARS`] is an error (never showing it).
fn admin_token(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(token) = &config.admin_token {
        crate::config::check_admin_token(token.expose_secret())
            .map_err(|reason| anyhow::anyhow!("the admin token (SALESBOY_ADMIN_TOKEN) {reason}"))?;
        return Ok(token.clone());
    }
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            crate::config::check_admin_token(existing).map_err(|reason| {
                anyhow::anyhow!("the admin token in {} {reason}", path.display())
            })?;
            info!(path = %path.display(), "admin token read from the data dir");
            return Ok(SecretString::from(existing.to_owned()));
        }
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &token)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    info!(path = %path.display(), "admin token generated; the admin API and CLI read it from this file");
    Ok(SecretString::from(token))
}

/// Opens the database with its secrets key: the SQLite files made owner-only (0600), the
/// key read, made or refused ([`keyring_for`]), plaintext secrets of an older database
/// sealed.
async fn open_database(config: &Config, database_url: &str) -> anyhow::Result<SqlStore> {
    let protect =
        || protect_sqlite_files(database_url).context("making the sqlite files private (0600)");
    protect()?;
    let (keys, source) = keyring_for(config, database_url).context("loading the secrets key")?;
    let key_id = keys.current().id().to_owned();
    match &source {
        KeySource::Generated(path) => {
            info!(path = %path.display(), key = %key_id, "secrets key generated; keep a copy of this file with the database's backups");
        }
        source => debug!(?source, key = %key_id, "secrets key loaded"),
    }
    let options = crate::store::SqlStoreOptions {
        max_connections: config.database_max_connections,
        ..Default::default()
    };
    let sql = SqlStore::connect_with(database_url, &options)
        .await
        .context("opening the database")?
        .with_secrets(keys);
    protect()?;
    for column in sql
        .seal_plaintext_secrets()
        .await
        .context("encrypting the secrets stored in the clear")?
    {
        if column.sealed_plaintext > 0 {
            info!(
                column = column.column,
                sealed = column.sealed_plaintext,
                key = %key_id,
                "secrets stored in the clear encrypted"
            );
        }
    }
    Ok(sql)
}

/// Listens for SIGINT (Ctrl-C) and, on Unix, SIGTERM from the call on (so a signal that
/// comes as soon as the node says it is ready is never the default action, an exit without
/// a drain); the future completes on the first. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |listener: Option<tokio::signal::unix::Signal>| async move {
                match listener {
                    Some(mut listener) => {
                        listener.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {}
                () = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
