//! Node configuration: defaults, then a TOML file (`--config`), then `SALESBOY_*`
//! environment variables, each layer overriding the one before.
//!
//! Every key has the same name in the file (`debounce_ms = 500`) and, upper-cased with the
//! `SALESBOY_` prefix, in the environment (`SALESBOY_DEBOUNCE_MS=500`). An unknown key or a
//! bad value is an error that names the key. `SALESBOY_TEST_*` variables belong to the test
//! suite and are ignored here. Secrets are [`SecretString`]s: they never print.
//! `docs/configuration.md` documents every key in [`KEYS`]; a test keeps the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use salesboy_protocol::NodeId;
use secrecy::SecretString;

/// Meta's Graph API base, the default of `whatsapp_api_base`.
pub const DEFAULT_WHATSAPP_API_BASE: &str = "https://graph.facebook.com/v21.0";

/// The environment prefix of every configuration key.
pub const ENV_PREFIX: &str = "SALESBOY_";

/// Environment variables with this prefix belong to the test suite, not to the node.
const TEST_ENV_PREFIX: &str = "SALESBOY_TEST_";

/// Every configuration key, as written in a TOML file.
pub const KEYS: &[&str] = &[
    "node_id",
    "http_addr",
    "data_dir",
    "database_url",
    "nats_url",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "whatsapp_api_base",
    "whatsapp_messages_per_second",
    "admin_token",
    "max_tenants",
    "debounce_ms",
    "conversation_idle_secs",
    "tenant_idle_secs",
    "history_window",
    "retention_days",
    "log_format",
    "failure_timeout_ms",
];

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The node's configuration. Build it with [`Config::load`].
#[derive(Debug, Clone)]
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
    /// The NATS server; unset means the in-process bus (one node only).
    pub nats_url: Option<String>,
    /// Meta app secret: webhook signatures are checked with it.
    pub whatsapp_app_secret: Option<SecretString>,
    /// The token Meta echoes in the webhook verification handshake.
    pub whatsapp_verify_token: Option<SecretString>,
    /// Graph API base URL (tests point it at a local fake).
    pub whatsapp_api_base: String,
    /// Outbound messages per second per WhatsApp number (Meta's default limit: 80).
    pub whatsapp_messages_per_second: u32,
    /// Bearer token of the admin API; unset means one is generated into `data_dir`.
    pub admin_token: Option<SecretString>,
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
    /// Chat logs older than this many days are deleted.
    pub retention_days: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// A cluster node whose heartbeat has not changed for this long is dead; a node fences
    /// itself (stops its tenants) when it could not renew its own for a bit less.
    pub failure_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: NodeId::new("node-1").expect("a valid literal id"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./salesboy-data"),
            database_url: None,
            nats_url: None,
            whatsapp_app_secret: None,
            whatsapp_verify_token: None,
            whatsapp_api_base: DEFAULT_WHATSAPP_API_BASE.to_owned(),
            whatsapp_messages_per_second: 80,
            admin_token: None,
            max_tenants: 100_000,
            debounce_ms: 1_500,
            conversation_idle_secs: 300,
            tenant_idle_secs: 86_400,
            history_window: 20,
            retention_days: 90,
            log_format: LogFormat::Text,
            failure_timeout_ms: 5_000,
        }
    }
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
        let mut config = Self::default();
        if let Some(path) = file {
            config.apply_file(path)?;
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !name.starts_with(TEST_ENV_PREFIX))
            .collect();
        env.sort();
        for (name, value) in env {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            config
                .set(&key, &value)
                .map_err(|e| e.located(&name, "environment"))?;
        }
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml {
                path: path.to_owned(),
                reason: e.message().to_owned(),
            })?;
        let source_name = path.display().to_string();
        for (key, value) in table {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::BadValue {
                        key,
                        source_name,
                        reason: format!(
                            "expected a string or number, found a {}",
                            other.type_str()
                        ),
                    });
                }
            };
            self.set(&key, &text)
                .map_err(|e| e.located(&key, &source_name))?;
        }
        Ok(())
    }

    /// Sets one key from its text form.
    fn set(&mut self, key: &str, value: &str) -> Result<(), KeyError> {
        match key {
            "node_id" => {
                self.node_id = NodeId::new(value).map_err(|e| KeyError::Bad(e.to_string()))?
            }
            "http_addr" => {
                self.http_addr = parse(value, "a socket address such as 127.0.0.1:8080")?
            }
            "data_dir" => self.data_dir = PathBuf::from(non_empty(value)?),
            "database_url" => self.database_url = optional(value),
            "nats_url" => self.nats_url = optional(value),
            "whatsapp_app_secret" => {
                self.whatsapp_app_secret = optional(value).map(SecretString::from)
            }
            "whatsapp_verify_token" => {
                self.whatsapp_verify_token = optional(value).map(SecretString::from)
            }
            "whatsapp_api_base" => self.whatsapp_api_base = http_url(value)?,
            "whatsapp_messages_per_second" => self.whatsapp_messages_per_second = positive(value)?,
            "admin_token" => self.admin_token = optional(value).map(SecretString::from),
            "max_tenants" => self.max_tenants = positive(value)?,
            "debounce_ms" => self.debounce_ms = parse(value, "a whole number of milliseconds")?,
            "conversation_idle_secs" => self.conversation_idle_secs = positive(value)?,
            "tenant_idle_secs" => self.tenant_idle_secs = positive(value)?,
            "history_window" => self.history_window = parse(value, "a whole number")?,
            "retention_days" => self.retention_days = positive(value)?,
            "failure_timeout_ms" => {
                let timeout: u64 = positive(value)?;
                if timeout < 2_000 {
                    return Err(KeyError::Bad(
                        "must be at least 2000 (the fence margin is 1500 ms)".into(),
                    ));
                }
                self.failure_timeout_ms = timeout;
            }
            "log_format" => {
                self.log_format = match value {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(KeyError::Bad("expected \"text\" or \"json\"".into())),
                }
            }
            _ => return Err(KeyError::Unknown),
        }
        Ok(())
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

/// A key's problem before we know where it came from.
enum KeyError {
    Unknown,
    Bad(String),
}

impl KeyError {
    fn located(self, key: &str, source_name: &str) -> ConfigError {
        let (key, source_name) = (key.to_owned(), source_name.to_owned());
        match self {
            KeyError::Unknown => ConfigError::UnknownKey {
                key,
                source_name,
                known: KEYS.join(", "),
            },
            KeyError::Bad(reason) => ConfigError::BadValue {
                key,
                source_name,
                reason,
            },
        }
    }
}

fn parse<T: std::str::FromStr>(value: &str, expected: &str) -> Result<T, KeyError> {
    value
        .trim()
        .parse()
        .map_err(|_| KeyError::Bad(format!("expected {expected}, got {value:?}")))
}

fn positive<T: std::str::FromStr + Default + PartialEq>(value: &str) -> Result<T, KeyError> {
    let parsed: T = parse(value, "a whole number greater than zero")?;
    if parsed == T::default() {
        return Err(KeyError::Bad("must be greater than zero".into()));
    }
    Ok(parsed)
}

fn non_empty(value: &str) -> Result<&str, KeyError> {
    if value.trim().is_empty() {
        return Err(KeyError::Bad("must not be empty".into()));
    }
    Ok(value)
}

fn optional(value: &str) -> Option<String> {
    (!value.trim().is_empty()).then(|| value.to_owned())
}

fn http_url(value: &str) -> Result<String, KeyError> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(KeyError::Bad(format!(
            "expected an http:// or https:// URL, got {value:?}"
        )));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let config = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert!(config.nats_url.is_none());
        assert_eq!(
            config.effective_database_url(),
            "sqlite://./salesboy-data/salesboy.db?mode=rwc"
        );
        assert_eq!(config.tenant_idle_secs, 86_400);
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("salesboy.toml");
        std::fs::write(
            &file,
            "debounce_ms = 250\nmax_tenants = 7\nnode_id = \"file-node\"\n",
        )
        .unwrap();
        let config = Config::load_from(
            Some(&file),
            env(&[
                ("SALESBOY_MAX_TENANTS", "9"),
                ("SALESBOY_ADMIN_TOKEN", "s3cret"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.debounce_ms, 250);
        assert_eq!(config.max_tenants, 9);
        assert_eq!(config.node_id.as_str(), "file-node");
        assert_eq!(
            config.admin_token.as_ref().unwrap().expose_secret(),
            "s3cret"
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::load_from(None, env(&[("SALESBOY_DEBOUNCE", "5")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown configuration key SALESBOY_DEBOUNCE (in environment)"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "http_adr = \"x\"\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown configuration key http_adr"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_that_name_the_key() {
        for (name, value, expected) in [
            (
                "SALESBOY_MAX_TENANTS",
                "lots",
                "bad value for SALESBOY_MAX_TENANTS",
            ),
            ("SALESBOY_MAX_TENANTS", "0", "must be greater than zero"),
            (
                "SALESBOY_HTTP_ADDR",
                "localhost",
                "bad value for SALESBOY_HTTP_ADDR",
            ),
            ("SALESBOY_NODE_ID", "a.b", "node id contains '.'"),
            (
                "SALESBOY_WHATSAPP_API_BASE",
                "ftp://x",
                "http:// or https://",
            ),
        ] {
            let err = Config::load_from(None, env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{name}={value}: {err}");
        }
    }

    #[test]
    fn test_suite_variables_are_not_configuration() {
        assert!(
            Config::load_from(None, env(&[("SALESBOY_TEST_POSTGRES_URL", "postgres://x")])).is_ok()
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::load_from(
            None,
            env(&[("SALESBOY_WHATSAPP_APP_SECRET", "topsecretvalue")]),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("topsecretvalue"));
    }

    #[test]
    fn every_key_is_settable_and_documented() {
        let docs = include_str!("../../docs/configuration.md");
        for key in KEYS {
            let mut config = Config::default();
            assert!(
                !matches!(config.set(key, "x"), Err(KeyError::Unknown)),
                "{key} is not handled"
            );
            let env_name = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
            assert!(
                docs.contains(&env_name),
                "docs/configuration.md does not document {env_name}"
            );
        }
    }
}
