//! Node configuration: defaults, then a TOML file (`--config`), then `SALESBOY_*`
//! environment variables, each layer overriding the one before.
//!
//! Every key has the same name in the file (`debounce_ms = 500`) and, upper-cased with the
//! `SALESBOY_` prefix, in the environment (`SALESBOY_DEBOUNCE_MS=500`). An unknown key or a
//! bad value is an error that names the key as its layer spells it. `SALESBOY_TEST_*`
//! variables belong to the test suite and are ignored here. Secrets are [`SecretString`]s:
//! they never print. `docs/configuration.md` documents every key in [`KEYS`]; a test keeps
//! the two in step.
//!
//! The layers are merged by [`figment`] and read with serde into one struct that denies
//! unknown fields; the checks serde cannot express (greater than zero, an `http(s)` URL, …)
//! follow, each error located by the layer that supplied the value. The defaults the actor
//! tree also has (debounce, idle times, capacity, history, send rate) are taken from
//! [`Settings::default`], so they are written once.
//!
//! This module holds the configuration, its defaults and its checks; `layers` holds the file
//! and environment layers and the errors that locate a key in them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use salesboy_actors::services::{ReadReceipts, Settings};
use salesboy_protocol::{NodeId, ProtocolRange};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::alerts::AlertSettings;
use crate::retention::RetentionSettings;
use crate::store::{SqlStoreOptions, redact_url};

mod layers;
mod nats;

use layers::{Layers, bad_value, env_layer, file_layer, located_error};
use nats::NatsLayers;

/// Meta's Graph API base, the default of `whatsapp_api_base`.
pub const DEFAULT_WHATSAPP_API_BASE: &str = "https://graph.facebook.com/v21.0";

/// WhatsApp Web's websocket endpoint, the default of `whatsapp_web_url` (the Web engine).
pub const DEFAULT_WHATSAPP_WEB_URL: &str = "wss://web.whatsapp.com/ws/chat";

/// The replica count on a NATS cluster (three or more server URLs) unless `nats_replicas`
/// says otherwise.
pub const DEFAULT_CLUSTER_REPLICAS: usize = 3;

/// The environment prefix of every configuration key.
pub const ENV_PREFIX: &str = "SALESBOY_";

/// Every configuration key, as written in a TOML file.
pub const KEYS: &[&str] = &[
    "node_id",
    "http_addr",
    "data_dir",
    "database_url",
    "database_max_connections",
    "nats_url",
    "nats_user",
    "nats_password",
    "nats_token",
    "nats_nkey_seed_file",
    "nats_credentials_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
    "cluster_key",
    "cluster_key_file",
    "cluster_previous_key",
    "cluster_previous_key_file",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "whatsapp_api_base",
    "whatsapp_web_url",
    "whatsapp_messages_per_second",
    "whatsapp_max_message_age_secs",
    "whatsapp_read_receipts",
    "admin_token",
    "secrets_key",
    "secrets_key_file",
    "secrets_previous_key",
    "secrets_previous_key_file",
    "max_tenants",
    "debounce_ms",
    "conversation_idle_secs",
    "tenant_idle_secs",
    "history_window",
    "tenant_max_conversations",
    "conversation_max_batch_messages",
    "conversation_max_question_chars",
    "tenant_replies_per_second",
    "retention_days",
    "log_format",
    "failure_timeout_ms",
    "heartbeat_ms",
    "events_max_age_secs",
    "events_duplicate_window_secs",
    "nats_replicas",
    "webhook_retry_secs",
    "webhook_timeout_ms",
    "admin_http_addr",
    "admin_auth_max_failures",
    "admin_auth_lockout_secs",
    "http_request_timeout_ms",
    "http_max_concurrent_requests",
    "llm_monthly_spend_cap_micros",
    "embedding_providers",
    "embedding_int8",
    "embedding_cache_bytes",
    "alert_interval_ms",
    "alert_memory_percent",
    "alert_memory_limit_bytes",
    "alert_tenant_capacity_percent",
    "alert_database_max_bytes",
    "alert_knowledge_max_chunks",
    "alert_error_rate_percent",
    "alert_error_window_secs",
    "alert_error_min_calls",
    "alert_leader_missing_secs",
    "retention_llm_usage_days",
    "retention_dead_letter_days",
    "retention_membership_grace_secs",
    "retention_batch_rows",
    "retention_batch_pause_ms",
    "retention_interval_secs",
];

/// The shortest admin token a node accepts (`admin_token`): a generated one has 64.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The node's configuration. Build it with [`Config::load`]. `Debug` shows URLs with their
/// passwords masked ([`redact_url`]) and secrets as `[REDACTED]`.
#[derive(Clone)]
pub struct Config {
    /// This node's id in the cluster (default: `node-1`).
    pub node_id: NodeId,
    /// Where HTTP listens (default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// Where the node keeps its files: the SQLite database, the generated admin token
    /// (default `./salesboy-data`).
    pub data_dir: PathBuf,
    /// `sqlite:…` or `postgres:…`; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Most database connections open at once: PostgreSQL's pool size; on SQLite the read
    /// pool's (writes go through one connection of their own). Default 10.
    pub database_max_connections: u32,
    /// The NATS server; unset means the in-process bus (one node only).
    pub nats_url: Option<String>,
    /// The NATS user the node connects as (with [`Config::nats_password`]); unset: no
    /// credentials. async-nats ignores credentials written in the URL.
    pub nats_user: Option<String>,
    /// The NATS user's password.
    pub nats_password: Option<SecretString>,
    /// A token to connect to NATS with.
    pub nats_token: Option<SecretString>,
    /// A file holding the nkey seed to connect to NATS with.
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// A NATS credentials file (user JWT and nkey seed).
    pub nats_credentials_file: Option<PathBuf>,
    /// CA certificates (PEM) the NATS server's certificate must chain to; any `nats_tls_*`
    /// setting makes TLS required.
    pub nats_tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present to NATS, with [`Config::nats_tls_key_file`].
    pub nats_tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub nats_tls_key_file: Option<PathBuf>,
    /// The key cluster messages are sealed with (32 bytes, base64 or hex), the same on every
    /// node; needed on NATS ([`crate::cluster::ClusterKey`]).
    pub cluster_key: Option<SecretString>,
    /// A file holding [`Config::cluster_key`] (when that is unset).
    pub cluster_key_file: Option<PathBuf>,
    /// A cluster key that only opens: the one before a rotation.
    pub cluster_previous_key: Option<SecretString>,
    /// A file holding [`Config::cluster_previous_key`] (when that is unset).
    pub cluster_previous_key_file: Option<PathBuf>,
    /// Meta app secret: webhook signatures are checked with it.
    pub whatsapp_app_secret: Option<SecretString>,
    /// The token Meta echoes in the webhook verification handshake.
    pub whatsapp_verify_token: Option<SecretString>,
    /// Graph API base URL (tests point it at a local fake).
    pub whatsapp_api_base: String,
    /// WhatsApp Web's websocket endpoint for the Web engine's clients (tests point it at a
    /// local listener).
    pub whatsapp_web_url: String,
    /// Outbound messages per second per WhatsApp number (Meta's default limit: 80).
    pub whatsapp_messages_per_second: u32,
    /// A customer's message sent (Meta's `timestamp`) more than this many seconds ago is
    /// stored but not answered (default 24 h, WhatsApp's customer service window; a larger
    /// value still answers nothing older than 24 h).
    pub whatsapp_max_message_age_secs: u64,
    /// When customers' messages are marked read (blue ticks, typing indicator), for
    /// every tenant: `always`, `when_slow` (default: only before an LLM is
    /// asked) or `never`.
    pub whatsapp_read_receipts: ReadReceipts,
    /// Bearer token of the admin API; unset means one is generated into `data_dir`.
    pub admin_token: Option<SecretString>,
    /// The key that encrypts secrets at rest (32 bytes, base64 or hex); see
    /// [`crate::secrets::keys`] for what unset means.
    pub secrets_key: Option<SecretString>,
    /// A file holding [`Config::secrets_key`] (when that is unset).
    pub secrets_key_file: Option<PathBuf>,
    /// A key that only decrypts: the one before a rotation.
    pub secrets_previous_key: Option<SecretString>,
    /// A file holding [`Config::secrets_previous_key`] (when that is unset).
    pub secrets_previous_key_file: Option<PathBuf>,
    /// How many tenants this node hosts at most.
    pub max_tenants: u64,
    /// How long a conversation waits for the customer to stop typing before answering.
    pub debounce_ms: u64,
    /// An idle conversation is passivated after this many seconds.
    pub conversation_idle_secs: u64,
    /// An idle tenant is stopped after this many seconds.
    pub tenant_idle_secs: u64,
    /// How many past messages of a chat the assistant sees.
    pub history_window: u32,
    /// Live conversations a tenant may have at once (default 10,000); a message for another chat waits, stored, until an idle one stops.
    pub tenant_max_conversations: u64,
    /// Messages one reply answers at most (default 50); the next reply answers the rest.
    pub conversation_max_batch_messages: u64,
    /// Characters of customer text one reply is written for at most (default 4,000; the latest are kept).
    pub conversation_max_question_chars: u64,
    /// Replies a tenant starts per second at most, a second's worth at once (default 20); beyond it the bot slows down.
    pub tenant_replies_per_second: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// A cluster node whose heartbeat has not changed for this long is dead; a node fences
    /// itself (stops its tenants) when it could not renew its own for a bit less.
    pub failure_timeout_ms: u64,
    /// How often a cluster node renews its membership record; `None`: a fifth of the
    /// failure timeout, at most 1 s. Must leave room for the fence margin
    /// ([`Config::membership`]).
    pub heartbeat_ms: Option<u64>,
    /// How long the events stream (`SB_EVENTS`) keeps an event, and the events outbox a
    /// published one (default 7 days).
    pub events_max_age_secs: u64,
    /// The events stream's duplicate window: a re-published event within it is stored once
    /// (default 120 s).
    pub events_duplicate_window_secs: u64,
    /// Copies of every KV bucket and of the events stream on a NATS cluster, 1 to 5; `None`
    /// (unset): [`Config::replicas`] picks 3 when `nats_url` lists three or more servers,
    /// else 1.
    pub nats_replicas: Option<usize>,
    /// How long an event webhook delivery is retried before it is dead-lettered (default
    /// 24 h).
    pub webhook_retry_secs: u64,
    /// How long one event webhook delivery attempt may take (default 10 s).
    pub webhook_timeout_ms: u64,
    /// Where the admin API (`/api/…`) and `/metrics` listen, apart from the public listener
    /// (which then serves only the WhatsApp webhook and `/health`); unset: everything on
    /// [`Config::http_addr`].
    pub admin_http_addr: Option<SocketAddr>,
    /// Failed admin API authentications from one client IP within
    /// [`Config::admin_auth_lockout_secs`] before it is locked out (default 10).
    pub admin_auth_max_failures: u32,
    /// The window that counts failed authentications, and how long a locked-out client IP
    /// gets 429 without its token being checked (default 60 s).
    pub admin_auth_lockout_secs: u64,
    /// How long one HTTP request may take before it is answered 408 (default 30 s).
    pub http_request_timeout_ms: u64,
    /// HTTP requests served at once per listener; beyond it 503 (default 1024).
    pub http_max_concurrent_requests: usize,
    /// The node's default monthly LLM spend cap per tenant, in millionths of a US dollar;
    /// unset: no cap. A tenant's own `llm_monthly_spend_cap_micros` overrides it.
    pub llm_monthly_spend_cap_micros: Option<u64>,
    /// The embedding providers (JSON, [`crate::adapters::embedding::config`]); unset (the
    /// default): no embeddings, knowledge is searched by full text only and no model is
    /// called. Holds API keys: never printed.
    pub embedding_providers: Option<SecretString>,
    /// Quantize the cached vector indexes to int8 (default false).
    pub embedding_int8: bool,
    /// The most memory the cached vector indexes may hold together (default 256 MiB).
    pub embedding_cache_bytes: u64,
    /// The alerts' thresholds and timings (the `alert_*` keys).
    pub alerts: AlertSettings,
    /// Retention's windows and pacing (`retention_days`, the `retention_*` keys; the events
    /// outbox's window is `events_max_age_secs`).
    pub retention: RetentionSettings,
    /// The cluster protocol versions this node announces: always this build's
    /// ([`ProtocolRange::BUILD`]). Not a setting (no file key or variable): tests set it to
    /// play a node of another build beside this one (docs/upgrades.md).
    pub protocol: ProtocolRange,
}

impl Default for Config {
    fn default() -> Self {
        let actors = Settings::default();
        Self {
            node_id: NodeId::new("node-1").expect("a valid literal id"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./salesboy-data"),
            database_url: None,
            database_max_connections: SqlStoreOptions::default().max_connections,
            nats_url: None,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_nkey_seed_file: None,
            nats_credentials_file: None,
            nats_tls_ca_file: None,
            nats_tls_cert_file: None,
            nats_tls_key_file: None,
            cluster_key: None,
            cluster_key_file: None,
            cluster_previous_key: None,
            cluster_previous_key_file: None,
            whatsapp_app_secret: None,
            whatsapp_verify_token: None,
            whatsapp_api_base: DEFAULT_WHATSAPP_API_BASE.to_owned(),
            whatsapp_web_url: DEFAULT_WHATSAPP_WEB_URL.to_owned(),
            whatsapp_messages_per_second: actors.messages_per_second,
            whatsapp_max_message_age_secs: actors.max_message_age.as_secs(),
            whatsapp_read_receipts: actors.read_receipts,
            admin_token: None,
            secrets_key: None,
            secrets_key_file: None,
            secrets_previous_key: None,
            secrets_previous_key_file: None,
            max_tenants: u64::try_from(actors.max_tenants).unwrap_or(u64::MAX),
            debounce_ms: millis(actors.debounce),
            conversation_idle_secs: actors.conversation_idle.as_secs(),
            tenant_idle_secs: actors.tenant_idle.as_secs(),
            history_window: actors.history_window,
            tenant_max_conversations: u64::try_from(actors.max_conversations_per_tenant)
                .unwrap_or(u64::MAX),
            conversation_max_batch_messages: u64::try_from(actors.max_batch_messages)
                .unwrap_or(u64::MAX),
            conversation_max_question_chars: u64::try_from(actors.max_question_chars)
                .unwrap_or(u64::MAX),
            tenant_replies_per_second: actors.replies_per_second_per_tenant,
            log_format: LogFormat::Text,
            failure_timeout_ms: 5_000,
            heartbeat_ms: None,
            events_max_age_secs: 7 * 24 * 3600,
            events_duplicate_window_secs: 120,
            nats_replicas: None,
            webhook_retry_secs: 24 * 3600,
            webhook_timeout_ms: 10_000,
            admin_http_addr: None,
            admin_auth_max_failures: 10,
            admin_auth_lockout_secs: 60,
            http_request_timeout_ms: 30_000,
            http_max_concurrent_requests: 1024,
            llm_monthly_spend_cap_micros: None,
            embedding_providers: None,
            embedding_int8: false,
            embedding_cache_bytes: 256 * 1024 * 1024,
            alerts: AlertSettings::default(),
            retention: RetentionSettings::default(),
            protocol: ProtocolRange::BUILD,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {reason}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A key nobody knows.
    #[error("unknown configuration key {key} (in {source_name}); known keys: {known}")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it came from (file path or "environment").
        source_name: String,
        /// The known keys.
        known: String,
    },
    /// A key an earlier version knew under that name.
    #[error("configuration key {key} (in {source_name}) was renamed: use {new}")]
    RenamedKey {
        /// The old key as written.
        key: String,
        /// Where it came from.
        source_name: String,
        /// Its name now, spelled as the old one was (variable or file key).
        new: String,
    },
    /// A known key with a value that does not parse.
    #[error("bad value for {key} (in {source_name}): {reason}")]
    BadValue {
        /// The key as written.
        key: String,
        /// Where it came from.
        source_name: String,
        /// What is wrong (never the value of a secret).
        reason: String,
    },
}

impl Config {
    /// Loads defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(file_layer(path)?);
        }
        figment = figment.merge(env_layer(env));
        let layers: Layers = figment
            .extract_lossy()
            .map_err(|error| located_error(&figment, error))?;
        Self::default()
            .apply(layers)
            .map_err(|(key, reason)| bad_value(&figment, key, reason))
    }

    /// Overrides the defaults with what the layers say, checking what serde cannot; an
    /// error is the key and what is wrong.
    fn apply(mut self, layers: Layers) -> Result<Self, (&'static str, String)> {
        let Layers {
            node_id,
            http_addr,
            data_dir,
            database_url,
            database_max_connections,
            nats_url,
            nats_user,
            nats_password,
            nats_token,
            nats_nkey_seed_file,
            nats_credentials_file,
            nats_tls_ca_file,
            nats_tls_cert_file,
            nats_tls_key_file,
            cluster_key,
            cluster_key_file,
            cluster_previous_key,
            cluster_previous_key_file,
            whatsapp_app_secret,
            whatsapp_verify_token,
            whatsapp_api_base,
            whatsapp_web_url,
            whatsapp_messages_per_second,
            whatsapp_max_message_age_secs,
            whatsapp_read_receipts,
            admin_token,
            secrets_key,
            secrets_key_file,
            secrets_previous_key,
            secrets_previous_key_file,
            max_tenants,
            debounce_ms,
            conversation_idle_secs,
            tenant_idle_secs,
            history_window,
            tenant_max_conversations,
            conversation_max_batch_messages,
            conversation_max_question_chars,
            tenant_replies_per_second,
            retention_days,
            log_format,
            failure_timeout_ms,
            heartbeat_ms,
            events_max_age_secs,
            events_duplicate_window_secs,
            nats_replicas,
            webhook_retry_secs,
            webhook_timeout_ms,
            admin_http_addr,
            admin_auth_max_failures,
            admin_auth_lockout_secs,
            http_request_timeout_ms,
            http_max_concurrent_requests,
            llm_monthly_spend_cap_micros,
            embedding_providers,
            embedding_int8,
            embedding_cache_bytes,
            alert_interval_ms,
            alert_memory_percent,
            alert_memory_limit_bytes,
            alert_tenant_capacity_percent,
            alert_database_max_bytes,
            alert_knowledge_max_chunks,
            alert_error_rate_percent,
            alert_error_window_secs,
            alert_error_min_calls,
            alert_leader_missing_secs,
            retention_llm_usage_days,
            retention_dead_letter_days,
            retention_membership_grace_secs,
            retention_batch_rows,
            retention_batch_pause_ms,
            retention_interval_secs,
        } = layers;
        set(&mut self.node_id, node_id);
        set(&mut self.http_addr, http_addr);
        if let Some(dir) = data_dir {
            if dir.as_os_str().to_string_lossy().trim().is_empty() {
                return Err(("data_dir", "must not be empty".into()));
            }
            self.data_dir = dir;
        }
        set(
            &mut self.database_max_connections,
            positive("database_max_connections", database_max_connections)?,
        );
        if database_url.is_some() {
            self.database_url = database_url.and_then(optional);
        }
        if nats_url.is_some() {
            self.nats_url = nats_url.and_then(optional);
        }
        if nats_user.is_some() {
            self.nats_user = nats_user.and_then(optional);
        }
        if nats_password.is_some() {
            self.nats_password = nats_password.and_then(optional).map(SecretString::from);
        }
        match (&self.nats_user, &self.nats_password) {
            (Some(_), None) => return Err(("nats_user", "needs nats_password too".into())),
            (None, Some(_)) => return Err(("nats_password", "needs nats_user too".into())),
            _ => {}
        }
        self.apply_nats_and_cluster(NatsLayers {
            nats_token,
            nats_nkey_seed_file,
            nats_credentials_file,
            nats_tls_ca_file,
            nats_tls_cert_file,
            nats_tls_key_file,
            cluster_key,
            cluster_key_file,
            cluster_previous_key,
            cluster_previous_key_file,
        })?;
        if whatsapp_app_secret.is_some() {
            self.whatsapp_app_secret = whatsapp_app_secret
                .and_then(optional)
                .map(SecretString::from);
        }
        if whatsapp_verify_token.is_some() {
            self.whatsapp_verify_token = whatsapp_verify_token
                .and_then(optional)
                .map(SecretString::from);
        }
        if let Some(base) = whatsapp_api_base {
            self.whatsapp_api_base = http_url(&base).map_err(|e| ("whatsapp_api_base", e))?;
        }
        if let Some(url) = whatsapp_web_url {
            self.whatsapp_web_url = ws_url(&url).map_err(|e| ("whatsapp_web_url", e))?;
        }
        set(
            &mut self.whatsapp_messages_per_second,
            positive("whatsapp_messages_per_second", whatsapp_messages_per_second)?,
        );
        set(
            &mut self.whatsapp_max_message_age_secs,
            positive(
                "whatsapp_max_message_age_secs",
                whatsapp_max_message_age_secs,
            )?,
        );
        set(&mut self.whatsapp_read_receipts, whatsapp_read_receipts);
        if admin_token.is_some() {
            self.admin_token = admin_token.and_then(optional).map(SecretString::from);
        }
        self.apply_secrets_keys(
            secrets_key,
            secrets_key_file,
            secrets_previous_key,
            secrets_previous_key_file,
        )?;
        if let Some(token) = &self.admin_token {
            check_admin_token(token.expose_secret()).map_err(|e| ("admin_token", e))?;
        }
        set(&mut self.max_tenants, positive("max_tenants", max_tenants)?);
        set(&mut self.debounce_ms, debounce_ms);
        set(
            &mut self.conversation_idle_secs,
            positive("conversation_idle_secs", conversation_idle_secs)?,
        );
        set(
            &mut self.tenant_idle_secs,
            positive("tenant_idle_secs", tenant_idle_secs)?,
        );
        set(&mut self.history_window, history_window);
        set(
            &mut self.tenant_max_conversations,
            positive("tenant_max_conversations", tenant_max_conversations)?,
        );
        set(
            &mut self.conversation_max_batch_messages,
            positive(
                "conversation_max_batch_messages",
                conversation_max_batch_messages,
            )?,
        );
        set(
            &mut self.conversation_max_question_chars,
            positive(
                "conversation_max_question_chars",
                conversation_max_question_chars,
            )?,
        );
        set(
            &mut self.tenant_replies_per_second,
            positive("tenant_replies_per_second", tenant_replies_per_second)?,
        );
        set(
            &mut self.retention.messages_days,
            positive("retention_days", retention_days)?,
        );
        set(&mut self.log_format, log_format);
        if let Some(timeout) = positive("failure_timeout_ms", failure_timeout_ms)? {
            if timeout < 1_000 {
                return Err((
                    "failure_timeout_ms",
                    "must be at least 1000 (a node must renew its heartbeat and fence itself within it)".into(),
                ));
            }
            self.failure_timeout_ms = timeout;
        }
        if let Some(heartbeat) = positive("heartbeat_ms", heartbeat_ms)? {
            self.heartbeat_ms = Some(heartbeat);
        }
        if self.membership().is_err() {
            let fence_after = crate::cluster::membership::MembershipConfig::for_failure_timeout(
                Duration::from_millis(self.failure_timeout_ms),
            )
            .fence_after;
            return Err((
                "heartbeat_ms",
                format!(
                    "must be shorter than {} ms: a node fences itself when it could not renew its heartbeat for that long (the failure timeout of {} ms less the fence margin)",
                    fence_after.as_millis(),
                    self.failure_timeout_ms
                ),
            ));
        }
        set(
            &mut self.events_max_age_secs,
            positive("events_max_age_secs", events_max_age_secs)?,
        );
        set(
            &mut self.events_duplicate_window_secs,
            positive("events_duplicate_window_secs", events_duplicate_window_secs)?,
        );
        if self.events_duplicate_window_secs > self.events_max_age_secs {
            return Err((
                "events_duplicate_window_secs",
                "must not exceed events_max_age_secs".into(),
            ));
        }
        if let Some(replicas) = nats_replicas {
            if !(1..=5).contains(&replicas) {
                return Err(("nats_replicas", "must be between 1 and 5".into()));
            }
            self.nats_replicas = Some(replicas);
        }
        set(
            &mut self.webhook_retry_secs,
            positive("webhook_retry_secs", webhook_retry_secs)?,
        );
        set(
            &mut self.webhook_timeout_ms,
            positive("webhook_timeout_ms", webhook_timeout_ms)?,
        );
        if let Some(addr) = admin_http_addr {
            self.admin_http_addr = match optional(addr) {
                None => None,
                Some(addr) => Some(addr.trim().parse().map_err(|_| {
                    (
                        "admin_http_addr",
                        format!("expected an address like 127.0.0.1:9090, got {addr:?}"),
                    )
                })?),
            };
        }
        if self
            .admin_http_addr
            .is_some_and(|admin| admin == self.http_addr && admin.port() != 0)
        {
            return Err(("admin_http_addr", "must differ from http_addr".into()));
        }
        set(
            &mut self.admin_auth_max_failures,
            positive("admin_auth_max_failures", admin_auth_max_failures)?,
        );
        set(
            &mut self.admin_auth_lockout_secs,
            positive("admin_auth_lockout_secs", admin_auth_lockout_secs)?,
        );
        set(
            &mut self.http_request_timeout_ms,
            positive("http_request_timeout_ms", http_request_timeout_ms)?,
        );
        set(
            &mut self.http_max_concurrent_requests,
            positive("http_max_concurrent_requests", http_max_concurrent_requests)?,
        );
        if let Some(cap) = positive("llm_monthly_spend_cap_micros", llm_monthly_spend_cap_micros)? {
            self.llm_monthly_spend_cap_micros = Some(cap);
        }
        if embedding_providers.is_some() {
            self.embedding_providers = embedding_providers
                .and_then(optional)
                .map(SecretString::from);
        }
        if let Some(json) = &self.embedding_providers {
            crate::adapters::embedding::parse_embedding_config(json.expose_secret())
                .map_err(|e| ("embedding_providers", e.to_string()))?;
        }
        set(&mut self.embedding_int8, embedding_int8);
        set(
            &mut self.embedding_cache_bytes,
            positive("embedding_cache_bytes", embedding_cache_bytes)?,
        );
        let alerts = &mut self.alerts;
        if let Some(ms) = positive("alert_interval_ms", alert_interval_ms)? {
            alerts.interval = Duration::from_millis(ms);
        }
        set(
            &mut alerts.memory_percent,
            percent("alert_memory_percent", alert_memory_percent)?,
        );
        if let Some(limit) = positive("alert_memory_limit_bytes", alert_memory_limit_bytes)? {
            alerts.memory_limit_bytes = Some(limit);
        }
        set(
            &mut alerts.tenant_capacity_percent,
            percent(
                "alert_tenant_capacity_percent",
                alert_tenant_capacity_percent,
            )?,
        );
        set(
            &mut alerts.database_max_bytes,
            positive("alert_database_max_bytes", alert_database_max_bytes)?,
        );
        set(
            &mut alerts.knowledge_max_chunks,
            positive("alert_knowledge_max_chunks", alert_knowledge_max_chunks)?,
        );
        set(
            &mut alerts.error_rate_percent,
            percent("alert_error_rate_percent", alert_error_rate_percent)?,
        );
        if let Some(secs) = positive("alert_error_window_secs", alert_error_window_secs)? {
            alerts.error_window = Duration::from_secs(secs);
        }
        set(
            &mut alerts.error_min_calls,
            positive("alert_error_min_calls", alert_error_min_calls)?,
        );
        if let Some(secs) = alert_leader_missing_secs {
            alerts.leader_missing_after = Duration::from_secs(secs);
        }
        let retention = &mut self.retention;
        retention.events_max_age = Duration::from_secs(self.events_max_age_secs);
        set(
            &mut retention.llm_usage_days,
            positive("retention_llm_usage_days", retention_llm_usage_days)?,
        );
        set(
            &mut retention.dead_letter_days,
            positive("retention_dead_letter_days", retention_dead_letter_days)?,
        );
        if let Some(secs) = retention_membership_grace_secs {
            retention.membership_grace = Duration::from_secs(secs);
        }
        set(
            &mut retention.batch_rows,
            positive("retention_batch_rows", retention_batch_rows)?,
        );
        if let Some(ms) = retention_batch_pause_ms {
            retention.batch_pause = Duration::from_millis(ms);
        }
        if let Some(secs) = positive("retention_interval_secs", retention_interval_secs)? {
            retention.interval = Duration::from_secs(secs);
        }
        Ok(self)
    }

    /// Sets the secrets keys, checking that an inline key is one and that a key is given
    /// once (inline or as a file).
    fn apply_secrets_keys(
        &mut self,
        key: Option<String>,
        key_file: Option<PathBuf>,
        previous: Option<String>,
        previous_file: Option<PathBuf>,
    ) -> Result<(), (&'static str, String)> {
        set_key("secrets_key", key, &mut self.secrets_key)?;
        set_path(key_file, &mut self.secrets_key_file);
        set_key(
            "secrets_previous_key",
            previous,
            &mut self.secrets_previous_key,
        )?;
        set_path(previous_file, &mut self.secrets_previous_key_file);
        not_both(
            ("secrets_key", &self.secrets_key),
            ("secrets_key_file", &self.secrets_key_file),
        )?;
        not_both(
            ("secrets_previous_key", &self.secrets_previous_key),
            ("secrets_previous_key_file", &self.secrets_previous_key_file),
        )
    }

    /// How to connect to NATS as configured (authentication, TLS), for a connection named
    /// `name`.
    pub fn nats_options(&self, name: String) -> crate::bus::NatsBusOptions {
        crate::bus::NatsBusOptions {
            name,
            credentials: self.nats_credentials(),
            token: self.nats_token.clone(),
            nkey_seed_file: self.nats_nkey_seed_file.clone(),
            credentials_file: self.nats_credentials_file.clone(),
            tls: crate::bus::NatsTls {
                ca_file: self.nats_tls_ca_file.clone(),
                cert_file: self.nats_tls_cert_file.clone(),
                key_file: self.nats_tls_key_file.clone(),
            },
            kv_replicas: self.replicas(),
            ..crate::bus::NatsBusOptions::default()
        }
    }

    /// How many servers `nats_url` lists (0 without NATS).
    pub fn nats_servers(&self) -> usize {
        self.nats_url.as_deref().map_or(0, |url| {
            url.split(',').filter(|u| !u.trim().is_empty()).count()
        })
    }

    /// The replica count of the KV buckets and the events stream this node creates and
    /// expects: `nats_replicas` if set, else 3 when `nats_url` lists three or more servers
    /// (a NATS cluster), else 1.
    pub fn replicas(&self) -> usize {
        self.nats_replicas.unwrap_or(if self.nats_servers() >= 3 {
            DEFAULT_CLUSTER_REPLICAS
        } else {
            1
        })
    }

    /// The NATS user and password to connect with, when configured.
    pub fn nats_credentials(&self) -> Option<crate::bus::NatsCredentials> {
        let user = self.nats_user.clone()?;
        let password = self.nats_password.clone()?;
        Some(crate::bus::NatsCredentials { user, password })
    }

    /// The cluster membership timings: `failure_timeout_ms`, `heartbeat_ms` (default a fifth
    /// of it, at most 1 s) and the fence margin scaled with them
    /// ([`MembershipConfig::for_failure_timeout`]); an error when the heartbeat leaves no
    /// room to fence in time.
    ///
    /// [`MembershipConfig::for_failure_timeout`]: crate::cluster::membership::MembershipConfig::for_failure_timeout
    pub fn membership(
        &self,
    ) -> Result<
        crate::cluster::membership::MembershipConfig,
        crate::cluster::membership::MembershipError,
    > {
        let mut timings = crate::cluster::membership::MembershipConfig::for_failure_timeout(
            Duration::from_millis(self.failure_timeout_ms),
        );
        if let Some(heartbeat) = self.heartbeat_ms {
            timings.heartbeat = Duration::from_millis(heartbeat);
        }
        timings.validate()?;
        Ok(timings)
    }

    /// The database URL in use: `database_url`, or SQLite in `data_dir`.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("salesboy.db").display()
            ),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            node_id,
            http_addr,
            data_dir,
            database_url,
            database_max_connections,
            nats_url,
            nats_user,
            nats_password,
            nats_token,
            nats_nkey_seed_file,
            nats_credentials_file,
            nats_tls_ca_file,
            nats_tls_cert_file,
            nats_tls_key_file,
            cluster_key,
            cluster_key_file,
            cluster_previous_key,
            cluster_previous_key_file,
            whatsapp_app_secret,
            whatsapp_verify_token,
            whatsapp_api_base,
            whatsapp_web_url,
            whatsapp_messages_per_second,
            whatsapp_max_message_age_secs,
            whatsapp_read_receipts,
            admin_token,
            secrets_key,
            secrets_key_file,
            secrets_previous_key,
            secrets_previous_key_file,
            max_tenants,
            debounce_ms,
            conversation_idle_secs,
            tenant_idle_secs,
            history_window,
            tenant_max_conversations,
            conversation_max_batch_messages,
            conversation_max_question_chars,
            tenant_replies_per_second,
            log_format,
            failure_timeout_ms,
            heartbeat_ms,
            events_max_age_secs,
            events_duplicate_window_secs,
            nats_replicas,
            webhook_retry_secs,
            webhook_timeout_ms,
            admin_http_addr,
            admin_auth_max_failures,
            admin_auth_lockout_secs,
            http_request_timeout_ms,
            http_max_concurrent_requests,
            llm_monthly_spend_cap_micros,
            embedding_providers,
            embedding_int8,
            embedding_cache_bytes,
            alerts,
            retention,
            protocol,
        } = self;
        let url = |url: &Option<String>| url.as_deref().map(redact_url);
        f.debug_struct("Config")
            .field("node_id", node_id)
            .field("http_addr", http_addr)
            .field("data_dir", data_dir)
            .field("database_url", &url(database_url))
            .field("database_max_connections", database_max_connections)
            .field("nats_url", &url(nats_url))
            .field("nats_user", nats_user)
            .field("nats_password", nats_password)
            .field("nats_token", nats_token)
            .field("nats_nkey_seed_file", nats_nkey_seed_file)
            .field("nats_credentials_file", nats_credentials_file)
            .field("nats_tls_ca_file", nats_tls_ca_file)
            .field("nats_tls_cert_file", nats_tls_cert_file)
            .field("nats_tls_key_file", nats_tls_key_file)
            .field("cluster_key", cluster_key)
            .field("cluster_key_file", cluster_key_file)
            .field("cluster_previous_key", cluster_previous_key)
            .field("cluster_previous_key_file", cluster_previous_key_file)
            .field("whatsapp_app_secret", whatsapp_app_secret)
            .field("whatsapp_verify_token", whatsapp_verify_token)
            .field("whatsapp_api_base", &redact_url(whatsapp_api_base))
            .field("whatsapp_web_url", &redact_url(whatsapp_web_url))
            .field("whatsapp_messages_per_second", whatsapp_messages_per_second)
            .field(
                "whatsapp_max_message_age_secs",
                whatsapp_max_message_age_secs,
            )
            .field("whatsapp_read_receipts", whatsapp_read_receipts)
            .field("admin_token", admin_token)
            .field("secrets_key", secrets_key)
            .field("secrets_key_file", secrets_key_file)
            .field("secrets_previous_key", secrets_previous_key)
            .field("secrets_previous_key_file", secrets_previous_key_file)
            .field("max_tenants", max_tenants)
            .field("debounce_ms", debounce_ms)
            .field("conversation_idle_secs", conversation_idle_secs)
            .field("tenant_idle_secs", tenant_idle_secs)
            .field("history_window", history_window)
            .field("tenant_max_conversations", tenant_max_conversations)
            .field(
                "conversation_max_batch_messages",
                conversation_max_batch_messages,
            )
            .field(
                "conversation_max_question_chars",
                conversation_max_question_chars,
            )
            .field("tenant_replies_per_second", tenant_replies_per_second)
            .field("log_format", log_format)
            .field("failure_timeout_ms", failure_timeout_ms)
            .field("heartbeat_ms", heartbeat_ms)
            .field("events_max_age_secs", events_max_age_secs)
            .field("events_duplicate_window_secs", events_duplicate_window_secs)
            .field("nats_replicas", nats_replicas)
            .field("webhook_retry_secs", webhook_retry_secs)
            .field("webhook_timeout_ms", webhook_timeout_ms)
            .field("admin_http_addr", admin_http_addr)
            .field("admin_auth_max_failures", admin_auth_max_failures)
            .field("admin_auth_lockout_secs", admin_auth_lockout_secs)
            .field("http_request_timeout_ms", http_request_timeout_ms)
            .field("http_max_concurrent_requests", http_max_concurrent_requests)
            .field("llm_monthly_spend_cap_micros", llm_monthly_spend_cap_micros)
            .field("embedding_providers", embedding_providers)
            .field("embedding_int8", embedding_int8)
            .field("embedding_cache_bytes", embedding_cache_bytes)
            .field("alerts", alerts)
            .field("retention", retention)
            .field("protocol", protocol)
            .finish()
    }
}

/// Whether `token` may be the admin token: at least [`MIN_ADMIN_TOKEN_CHARS`] characters.
/// The error never quotes the token.
pub fn check_admin_token(token: &str) -> Result<(), String> {
    if token.trim().chars().count() < MIN_ADMIN_TOKEN_CHARS {
        return Err(format!(
            "must be at least {MIN_ADMIN_TOKEN_CHARS} characters long (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn positive<T: Default + PartialEq>(
    key: &'static str,
    value: Option<T>,
) -> Result<Option<T>, (&'static str, String)> {
    match value {
        Some(value) if value == T::default() => Err((key, "must be greater than zero".into())),
        value => Ok(value),
    }
}

/// A percentage: 1 to 100.
fn percent(key: &'static str, value: Option<u64>) -> Result<Option<u64>, (&'static str, String)> {
    match value {
        Some(value) if !(1..=100).contains(&value) => {
            Err((key, "must be a percentage from 1 to 100".into()))
        }
        value => Ok(value),
    }
}

fn optional(value: String) -> Option<String> {
    (!value.trim().is_empty()).then_some(value)
}

fn http_url(value: &str) -> Result<String, String> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(format!(
            "expected an http:// or https:// URL, got {value:?}"
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn ws_url(value: &str) -> Result<String, String> {
    if !(value.starts_with("ws://") || value.starts_with("wss://")) {
        return Err(format!(
            "expected a ws:// or wss:// URL, got {:?}",
            redact_url(value)
        ));
    }
    // The websocket client parses it as a URI: refuse here what it would refuse at every
    // connection attempt.
    let uri: axum::http::Uri = value
        .parse()
        .map_err(|e| format!("not a URL ({e}): {:?}", redact_url(value)))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host in {:?}", redact_url(value)));
    }
    Ok(value.to_owned())
}

/// Sets a key given inline: checked as a 32-byte key, the error naming the setting, never
/// the value; an empty value unsets it.
fn set_key(
    name: &'static str,
    value: Option<String>,
    field: &mut Option<SecretString>,
) -> Result<(), (&'static str, String)> {
    let Some(text) = value else {
        return Ok(());
    };
    *field = match optional(text) {
        Some(text) => match crate::secrets::SecretsKey::parse(&text) {
            Ok(_) => Some(SecretString::from(text)),
            Err(error) => return Err((name, error.to_string())),
        },
        None => None,
    };
    Ok(())
}

/// Sets a file path; an empty one unsets it.
fn set_path(value: Option<PathBuf>, field: &mut Option<PathBuf>) {
    if let Some(path) = value {
        *field = Some(path).filter(|p| !p.as_os_str().is_empty());
    }
}

/// A key given inline and in a file: refused, naming the file's setting.
fn not_both<K, F>(
    (key_name, key): (&'static str, &Option<K>),
    (file_name, file): (&'static str, &Option<F>),
) -> Result<(), (&'static str, String)> {
    if key.is_some() && file.is_some() {
        return Err((
            file_name,
            format!("set {key_name} or {file_name}, not both"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
