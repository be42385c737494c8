//! The node's embedding provider list: JSON text (the `embedding_providers` setting).
//!
//! ```json
//! [
//!   {"kind": "gemini", "model": "gemini-embedding-001", "api_key": "…", "dimensions": 768,
//!    "requests_per_minute": 100, "usd_per_million": 0.15},
//!   {"kind": "gemini", "model": "gemini-embedding-001", "api_key": "…", "name": "second-key"}
//! ]
//! ```
//!
//! | field | | |
//! |---|---|---|
//! | `kind` | required | `"gemini"` (`embedContent` / `batchEmbedContents`) or `"openai"` (any OpenAI-compatible `/embeddings`) |
//! | `model` | required | the model; entries of one model are its fallback chain, the first entry's model is the default, a tenant may choose another (`embedding_model`) |
//! | `api_key` | required | the key; never printed |
//! | `name` | optional | the name in logs, metrics and usage records; default `gemini-embedding` / `openai-embedding` |
//! | `base_url` | optional | as for the chat providers |
//! | `timeout_ms` | optional | per request, default 20000, at most 600000 |
//! | `dimensions` | optional | asks the model for vectors of this length (`outputDimensionality` / `dimensions`); the same for every entry of one model |
//! | `batch_size` | optional | passages per request, default 32, at most 100 |
//! | `requests_per_minute` | optional | the provider's request budget; absent = unlimited |
//! | `tokens_per_minute` | optional | the provider's token budget; absent = unlimited |
//! | `usd_per_million` | optional | price of a million input tokens, default 0 |
//!
//! A model's entries are tried in list order (fallback); vectors of different models are
//! never compared (each tenant's passages and questions are embedded by its one model).
//! Unknown fields are refused; errors name the index and the field (`embedding[1].model: missing`) and never quote a key.

use std::time::Duration;

use salesboy_actors::ports::Budget;
use secrecy::SecretString;

use crate::adapters::llm::config::{LlmConfigError, ProviderKind, list_entries, list_json};

/// Passages per request unless the configuration says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// The largest accepted `batch_size` (Gemini's `batchEmbedContents` takes at most 100).
pub const MAX_BATCH_SIZE: usize = 100;

/// The fields an entry may have.
const FIELDS: [&str; 11] = [
    "kind",
    "name",
    "model",
    "api_key",
    "base_url",
    "timeout_ms",
    "dimensions",
    "batch_size",
    "requests_per_minute",
    "tokens_per_minute",
    "usd_per_million",
];

/// One configured embedding provider, validated, defaults applied. `Debug` shows the key
/// as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    /// The API.
    pub kind: ProviderKind,
    /// The name in logs, metrics and usage records.
    pub name: String,
    /// The model.
    pub model: String,
    /// The API key.
    pub api_key: SecretString,
    /// The API base URL, without a trailing `/`.
    pub base_url: String,
    /// How long one request may take.
    pub timeout: Duration,
    /// The vector length asked for; `None`: the model's own.
    pub dimensions: Option<u32>,
    /// Passages per request.
    pub batch_size: usize,
    /// The requests and tokens per minute the provider allows.
    pub budget: Budget,
    /// US dollars per million input tokens.
    pub usd_per_million: f64,
}

impl EmbeddingConfig {
    /// The cost of `tokens` input tokens in millionths of a US dollar, rounded up.
    pub fn cost_micros(&self, tokens: u64) -> u64 {
        // Token counts are far below 2^53; `as` saturates (prices are validated).
        (tokens as f64 * self.usd_per_million).ceil() as u64
    }
}

/// Parses and validates an embedding provider list (JSON text). An empty list is refused:
/// leave the setting unset for no embeddings. Errors are the chat providers' list's
/// ([`LlmConfigError`]), with paths under `embedding`.
pub fn parse_embedding_config(json: &str) -> Result<Vec<EmbeddingConfig>, LlmConfigError> {
    let value = list_json("embedding", json)?;
    let configs = list_entries("embedding", &FIELDS, &value, |f| {
        let endpoint = f.endpoint()?;
        let dimensions = match f.optional_positive("dimensions")? {
            None => None,
            Some(d) if d <= 65_536 => Some(d as u32),
            Some(_) => return Err(f.error("dimensions", "must be at most 65536")),
        };
        let batch_size = match f.optional_positive("batch_size")? {
            None => DEFAULT_BATCH_SIZE,
            Some(n) if n as usize <= MAX_BATCH_SIZE => n as usize,
            Some(_) => {
                return Err(f.error("batch_size", format!("must be at most {MAX_BATCH_SIZE}")));
            }
        };
        Ok(EmbeddingConfig {
            kind: endpoint.kind,
            name: match endpoint.name {
                Some(name) => name.to_owned(),
                None => format!("{}-embedding", endpoint.kind.as_str()),
            },
            model: endpoint.model,
            api_key: endpoint.api_key,
            base_url: endpoint.base_url,
            timeout: endpoint.timeout,
            dimensions,
            batch_size,
            budget: f.budget()?,
            usd_per_million: f.optional_price("usd_per_million")?,
        })
    })?;
    if configs.is_empty() {
        return Err(LlmConfigError::new("embedding", "must not be empty"));
    }
    // Entries of one model are that model's fallback chain: their vectors must be alike.
    for (index, config) in configs.iter().enumerate() {
        if let Some(first) = configs[..index].iter().find(|c| c.model == config.model)
            && first.dimensions != config.dimensions
        {
            return Err(LlmConfigError::new(
                format!("embedding[{index}].dimensions"),
                "must be the same as the first entry's of its model (vectors of different lengths cannot be compared)",
            ));
        }
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn defaults_apply_and_keys_stay_hidden() {
        let configs = parse_embedding_config(
            r#"[{"kind":"gemini","model":"gemini-embedding-001","api_key":"k1"},
                {"kind":"openai","model":"text-embedding-3-small","api_key":"k2",
                 "base_url":"http://127.0.0.1:9/v1/","dimensions":256,"batch_size":8,
                 "requests_per_minute":5,"tokens_per_minute":1000,"usd_per_million":0.15}]"#,
        )
        .expect("valid");
        assert_eq!(configs[0].name, "gemini-embedding");
        assert_eq!(configs[0].batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(configs[0].dimensions, None);
        assert_eq!(configs[0].api_key.expose_secret(), "k1");
        assert_eq!(configs[1].name, "openai-embedding");
        assert_eq!(configs[1].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(configs[1].dimensions, Some(256));
        assert_eq!(configs[1].budget.requests_per_minute, Some(5));
        // 1000 × 0.15 = 150.
        assert_eq!(configs[1].cost_micros(1000), 150);
        assert!(!format!("{configs:?}").contains("k2"));
    }

    #[test]
    fn errors_name_the_field_and_never_the_key() {
        let cases = [
            ("[]", "embedding: must not be empty"),
            (
                r#"[{"kind":"x","model":"m","api_key":"sk-secret"}]"#,
                r#"embedding[0].kind: expected "gemini" or "openai""#,
            ),
            (
                r#"[{"kind":"gemini","api_key":"sk-secret"}]"#,
                "embedding[0].model: missing",
            ),
            (
                r#"[{"kind":"gemini","model":"a","api_key":"k","dimensions":8},{"kind":"openai","model":"b","api_key":"k"},{"kind":"openai","model":"a","api_key":"k"}]"#,
                "embedding[2].dimensions: must be the same as the first entry's of its model (vectors of different lengths cannot be compared)",
            ),
            (
                r#"[{"kind":"gemini","model":"a","api_key":"k","batch_size":101}]"#,
                "embedding[0].batch_size: must be at most 100",
            ),
            (
                r#"[{"kind":"gemini","model":"a","api_key":"k","usd_per_million":-1}]"#,
                "embedding[0].usd_per_million: expected a non-negative number",
            ),
            (
                r#"[{"kind":"gemini","model":"a","api_key":"k","base_url":"http://embed.example.com"}]"#,
                "embedding[0].base_url: must be an https:// url (http:// only to a loopback host)",
            ),
            (
                r#"[{"kind":"openai","model":"a","api_key":"k","timeout_ms":600001}]"#,
                "embedding[0].timeout_ms: must be at most 600000",
            ),
            (
                r#"[{"kind":"openai","model":"a","api_key":"k","temperature":1}]"#,
                "embedding[0].temperature: unknown field (expected one of: kind, name, model, api_key, base_url, timeout_ms, dimensions, batch_size, requests_per_minute, tokens_per_minute, usd_per_million)",
            ),
        ];
        for (json, expected) in cases {
            let e = parse_embedding_config(json).expect_err(json);
            assert_eq!(e.to_string(), expected);
            assert!(!e.to_string().contains("sk-secret"));
        }
    }
}
