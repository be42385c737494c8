//! The configuration's layers as figment sees them: the TOML file and the `SALESBOY_*`
//! variables, what each key may hold ([`Layers`], read by serde with unknown keys denied),
//! and figment's errors turned into [`ConfigError`]s that name the key as its layer spells it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use salesboy_actors::services::ReadReceipts;
use salesboy_protocol::NodeId;
use serde::Deserialize;

use super::{ConfigError, ENV_PREFIX, KEYS, LogFormat};

/// Environment variables with this prefix belong to the test suite, not to the node.
const TEST_ENV_PREFIX: &str = "SALESBOY_TEST_";

/// The keys whose values are secrets: their errors never quote the value.
/// Keys of earlier versions and what they are called now (file spelling): refused with the
/// new name, never ignored (docs/upgrades.md, rule 6).
const RENAMED_KEYS: &[(&str, &str)] = &[("events_replicas", "nats_replicas")];

const SECRET_KEYS: &[&str] = &[
    "nats_password",
    "nats_token",
    "cluster_key",
    "cluster_previous_key",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "admin_token",
    "secrets_key",
    "secrets_previous_key",
    "embedding_providers",
];

/// What the layers say, key by key; `None` keeps the default. The field names are [`KEYS`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Layers {
    pub(super) node_id: Option<NodeId>,
    pub(super) http_addr: Option<SocketAddr>,
    pub(super) data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "text")]
    pub(super) database_url: Option<String>,
    pub(super) database_max_connections: Option<u32>,
    #[serde(default, deserialize_with = "text")]
    pub(super) nats_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) nats_user: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) nats_password: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) nats_token: Option<String>,
    pub(super) nats_nkey_seed_file: Option<PathBuf>,
    pub(super) nats_credentials_file: Option<PathBuf>,
    pub(super) nats_tls_ca_file: Option<PathBuf>,
    pub(super) nats_tls_cert_file: Option<PathBuf>,
    pub(super) nats_tls_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "text")]
    pub(super) cluster_key: Option<String>,
    pub(super) cluster_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "text")]
    pub(super) cluster_previous_key: Option<String>,
    pub(super) cluster_previous_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "text")]
    pub(super) whatsapp_app_secret: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) whatsapp_verify_token: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) whatsapp_api_base: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) whatsapp_web_url: Option<String>,
    pub(super) whatsapp_messages_per_second: Option<u32>,
    pub(super) whatsapp_max_message_age_secs: Option<u64>,
    pub(super) whatsapp_read_receipts: Option<ReadReceipts>,
    #[serde(default, deserialize_with = "text")]
    pub(super) admin_token: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub(super) secrets_key: Option<String>,
    pub(super) secrets_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "text")]
    pub(super) secrets_previous_key: Option<String>,
    pub(super) secrets_previous_key_file: Option<PathBuf>,
    pub(super) max_tenants: Option<u64>,
    pub(super) debounce_ms: Option<u64>,
    pub(super) conversation_idle_secs: Option<u64>,
    pub(super) tenant_idle_secs: Option<u64>,
    pub(super) history_window: Option<u32>,
    pub(super) tenant_max_conversations: Option<u64>,
    pub(super) conversation_max_batch_messages: Option<u64>,
    pub(super) conversation_max_question_chars: Option<u64>,
    pub(super) tenant_replies_per_second: Option<u32>,
    pub(super) retention_days: Option<u32>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) failure_timeout_ms: Option<u64>,
    pub(super) heartbeat_ms: Option<u64>,
    pub(super) events_max_age_secs: Option<u64>,
    pub(super) events_duplicate_window_secs: Option<u64>,
    pub(super) nats_replicas: Option<usize>,
    pub(super) webhook_retry_secs: Option<u64>,
    pub(super) webhook_timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "text")]
    pub(super) admin_http_addr: Option<String>,
    pub(super) admin_auth_max_failures: Option<u32>,
    pub(super) admin_auth_lockout_secs: Option<u64>,
    pub(super) http_request_timeout_ms: Option<u64>,
    pub(super) http_max_concurrent_requests: Option<usize>,
    pub(super) llm_monthly_spend_cap_micros: Option<u64>,
    #[serde(default, deserialize_with = "text")]
    pub(super) embedding_providers: Option<String>,
    pub(super) embedding_int8: Option<bool>,
    pub(super) embedding_cache_bytes: Option<u64>,
    pub(super) alert_interval_ms: Option<u64>,
    pub(super) alert_memory_percent: Option<u64>,
    pub(super) alert_memory_limit_bytes: Option<u64>,
    pub(super) alert_tenant_capacity_percent: Option<u64>,
    pub(super) alert_database_max_bytes: Option<u64>,
    pub(super) alert_knowledge_max_chunks: Option<u64>,
    pub(super) alert_error_rate_percent: Option<u64>,
    pub(super) alert_error_window_secs: Option<u64>,
    pub(super) alert_error_min_calls: Option<u64>,
    pub(super) alert_leader_missing_secs: Option<u64>,
    pub(super) retention_llm_usage_days: Option<u32>,
    pub(super) retention_dead_letter_days: Option<u32>,
    pub(super) retention_membership_grace_secs: Option<u64>,
    pub(super) retention_batch_rows: Option<u32>,
    pub(super) retention_batch_pause_ms: Option<u64>,
    pub(super) retention_interval_secs: Option<u64>,
}

/// A string, or a number or boolean in its text form (`admin_token = 1234` is the token
/// "1234"), as every text key accepted before the layers were merged by figment.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(Some(match Scalar::deserialize(deserializer)? {
        Scalar::Text(text) => text,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }))
}

/// One layer of configuration for figment: the file's table or the `SALESBOY_*` variables.
pub(super) struct Layer {
    /// How errors name the layer: the file's path, or "environment".
    name: String,
    /// Whether keys are spelled as environment variables (`SALESBOY_DEBOUNCE_MS`).
    environment: bool,
    values: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let metadata = Metadata::named(self.name.clone());
        if self.environment {
            metadata.interpolater(|_: &Profile, keys: &[&str]| {
                format!("{ENV_PREFIX}{}", keys.join("_").to_ascii_uppercase())
            })
        } else {
            metadata.interpolater(|_: &Profile, keys: &[&str]| keys.join("."))
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// The TOML file as a layer.
pub(super) fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let values: Dict = toml::from_str(&text).map_err(|e: toml::de::Error| ConfigError::Toml {
        path: path.to_owned(),
        reason: e.message().to_owned(),
    })?;
    Ok(Layer {
        name: path.display().to_string(),
        environment: false,
        values,
    })
}

/// The `SALESBOY_*` variables (not `SALESBOY_TEST_*`) as a layer, values as written.
pub(super) fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Layer {
    let values = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !name.starts_with(TEST_ENV_PREFIX))
        .map(|(name, value)| {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            (key, figment::value::Value::from(value))
        })
        .collect();
    Layer {
        name: "environment".to_owned(),
        environment: true,
        values,
    }
}

/// A figment error as a [`ConfigError`] naming the key as its layer spells it.
pub(super) fn located_error(figment: &Figment, error: figment::Error) -> ConfigError {
    let (path, kind) = (error.path.join("."), error.kind);
    match kind {
        figment::error::Kind::UnknownField(field, _) => {
            // The path ends with the unknown field.
            let key = if path.is_empty() { field } else { path };
            let (key, source_name) = if key.is_empty() {
                // The variable `SALESBOY_` (or `"" = …` in the file): no name to spell.
                let key = format!("\"\" (an empty name, e.g. the variable {ENV_PREFIX})");
                (key, "configuration".to_owned())
            } else {
                spelled(figment, &key)
            };
            let renamed = RENAMED_KEYS.iter().find(|(old, _)| {
                key.eq_ignore_ascii_case(&format!("{ENV_PREFIX}{old}")) || key == *old
            });
            match renamed {
                Some((_, new)) => {
                    let new = if key.starts_with(ENV_PREFIX) {
                        format!("{ENV_PREFIX}{}", new.to_ascii_uppercase())
                    } else {
                        (*new).to_owned()
                    };
                    ConfigError::RenamedKey {
                        key,
                        source_name,
                        new,
                    }
                }
                None => ConfigError::UnknownKey {
                    key,
                    source_name,
                    known: KEYS.join(", "),
                },
            }
        }
        _ if SECRET_KEYS.contains(&path.as_str()) => {
            bad_value(figment, &path, "expected a string".into())
        }
        kind => bad_value(figment, &path, kind.to_string()),
    }
}

pub(super) fn bad_value(figment: &Figment, key: &str, reason: String) -> ConfigError {
    let (key, source_name) = spelled(figment, key);
    ConfigError::BadValue {
        key,
        source_name,
        reason,
    }
}

/// The key as the layer that supplied it spells it, and that layer's name.
fn spelled(figment: &Figment, key: &str) -> (String, String) {
    match figment.find_metadata(key) {
        Some(metadata) => {
            let keys: Vec<&str> = key.split('.').collect();
            (
                metadata.interpolate(&Profile::Default, &keys),
                metadata.name.to_string(),
            )
        }
        None => (key.to_owned(), "configuration".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_keys_are_the_fields_serde_reads() {
        let figment = Figment::new().merge(env_layer(env(&[("SALESBOY_NO_SUCH_KEY", "1")])));
        let error = figment
            .extract_lossy::<Layers>()
            .err()
            .expect("an unknown key");
        match error.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                assert_eq!(field, "no_such_key");
                assert_eq!(expected, KEYS);
            }
            other => panic!("expected an unknown field, got {other}"),
        }
    }
}
