//! A tenant's LLM provider list: the JSON text stored on the tenant (the admin API's `llm`
//! field) or the node's default.
//!
//! ```json
//! [
//!   {"kind": "gemini", "model": "gemini-2.5-flash", "api_key": "…",
//!    "requests_per_minute": 10, "prompt_usd_per_million": 0.3, "completion_usd_per_million": 2.5},
//!   {"kind": "openai", "model": "gpt-4o-mini", "api_key": "…", "timeout_ms": 15000}
//! ]
//! ```
//!
//! | field | | |
//! |---|---|---|
//! | `kind` | required | `"gemini"` or `"openai"` (any OpenAI-compatible chat completions server) |
//! | `model` | required | the model name |
//! | `api_key` | required | the key; never printed |
//! | `name` | optional | the name in logs, metrics and usage records; default the `kind` |
//! | `base_url` | optional | default [`GEMINI_DEFAULT_BASE_URL`] / [`OPENAI_DEFAULT_BASE_URL`] |
//! | `timeout_ms` | optional | per request, default 20000, at most 600000 |
//! | `requests_per_minute` | optional | the chain's request budget; absent = unlimited |
//! | `tokens_per_minute` | optional | the chain's token budget; absent = unlimited |
//! | `prompt_usd_per_million` | optional | price of a million prompt tokens, default 0 |
//! | `completion_usd_per_million` | optional | price of a million completion tokens, default 0 |
//!
//! Providers are tried in list order. Unknown fields are refused; an empty list means no
//! provider (the offline responder answers). Errors name the index and the field
//! (`llm[1].model: missing`) and never quote a key.

use std::time::Duration;

use salesboy_actors::ports::Budget;
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::adapters::excerpt;

/// Gemini's API base URL.
pub const GEMINI_DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// OpenAI's API base URL.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A provider request's timeout unless the configuration says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20_000);

/// The longest accepted `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// What `api_key` reads as in [`redacted_llm_config`].
pub const REDACTED: &str = "[redacted]";

/// The fields a provider object may have.
const FIELDS: [&str; 10] = [
    "kind",
    "name",
    "model",
    "api_key",
    "base_url",
    "timeout_ms",
    "requests_per_minute",
    "tokens_per_minute",
    "prompt_usd_per_million",
    "completion_usd_per_million",
];

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Gemini `generateContent`.
    Gemini,
    /// OpenAI-compatible chat completions.
    OpenAi,
}

impl ProviderKind {
    /// The configuration's spelling (`gemini`, `openai`), also the default provider name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::OpenAi => "openai",
        }
    }

    /// The public API's base URL.
    pub const fn default_base_url(self) -> &'static str {
        match self {
            Self::Gemini => GEMINI_DEFAULT_BASE_URL,
            Self::OpenAi => OPENAI_DEFAULT_BASE_URL,
        }
    }
}

/// One configured provider, validated, defaults applied. `Debug` shows the key as
/// `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The API.
    pub kind: ProviderKind,
    /// The name in logs, metrics and usage records (the configured `name`, else the kind).
    pub name: String,
    /// The model.
    pub model: String,
    /// The API key.
    pub api_key: SecretString,
    /// The API base URL, without a trailing `/`.
    pub base_url: String,
    /// How long one request may take.
    pub timeout: Duration,
    /// The requests and tokens per minute the chain allows.
    pub budget: Budget,
    /// US dollars per million prompt tokens.
    pub prompt_usd_per_million: f64,
    /// US dollars per million completion tokens.
    pub completion_usd_per_million: f64,
}

impl ProviderConfig {
    /// The cost of a call in millionths of a US dollar, rounded up. A price per million
    /// tokens in dollars is exactly a price per token in micro-dollars.
    pub fn cost_micros(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        // Token counts are far below 2^53, so the conversions are exact.
        let micros = prompt_tokens as f64 * self.prompt_usd_per_million
            + completion_tokens as f64 * self.completion_usd_per_million;
        // `as` saturates: negative or NaN cannot occur (prices are validated) and would be 0.
        micros.ceil() as u64
    }
}

/// Why a provider list (the chat providers' or the embedding providers') was refused:
/// where (`llm`, `llm[1]`, `embedding[1].model`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct LlmConfigError {
    /// The offending value's path.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl LlmConfigError {
    /// The error `problem` at `path`.
    pub(crate) fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// Parses and validates a provider list (JSON text).
pub fn parse_llm_config(json: &str) -> Result<Vec<ProviderConfig>, LlmConfigError> {
    providers_from_value(&list_json("llm", json)?)
}

/// Validates a provider list given as JSON (the admin API checks the `llm` field with it
/// before storing the text). The error is [`LlmConfigError`]'s text.
pub fn validate_llm_config(value: &Value) -> Result<(), String> {
    providers_from_value(value)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// The stored provider list with every `api_key` replaced by `"[redacted]"`, for responses.
/// Text that is not JSON gives `null` (it might hold a key).
pub fn redacted_llm_config(json: &str) -> Value {
    let mut value = serde_json::from_str(json).unwrap_or(Value::Null);
    redact_keys(&mut value);
    value
}

fn redact_keys(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(redact_keys),
        Value::Object(map) => {
            for (field, inner) in map.iter_mut() {
                if field == "api_key" {
                    *inner = Value::String(REDACTED.to_owned());
                } else {
                    redact_keys(inner);
                }
            }
        }
        _ => {}
    }
}

fn providers_from_value(value: &Value) -> Result<Vec<ProviderConfig>, LlmConfigError> {
    list_entries("llm", &FIELDS, value, |fields| {
        let endpoint = fields.endpoint()?;
        Ok(ProviderConfig {
            kind: endpoint.kind,
            name: endpoint.name.unwrap_or(endpoint.kind.as_str()).to_owned(),
            model: endpoint.model,
            api_key: endpoint.api_key,
            base_url: endpoint.base_url,
            timeout: endpoint.timeout,
            budget: fields.budget()?,
            prompt_usd_per_million: fields.optional_price("prompt_usd_per_million")?,
            completion_usd_per_million: fields.optional_price("completion_usd_per_million")?,
        })
    })
}

// ---------------------------------------------------------------------------------------
// What this list (`llm`) and the embedding providers' (`embedding`, in
// `adapters/embedding/config.rs`) share: the list's shape, the fields every entry has, and
// typed reads with errors that name the list, the index and the field.

/// A provider list's JSON text, read; `list` (`llm`, `embedding`) names it in errors.
pub(crate) fn list_json(list: &'static str, json: &str) -> Result<Value, LlmConfigError> {
    // serde_json's syntax errors give a position, never the input.
    serde_json::from_str(json)
        .map_err(|error| LlmConfigError::new(list, format!("not valid json ({error})")))
}

/// Each entry of the provider list `value`, read in order by `entry`. Every entry must be an
/// object whose fields are all `allowed`.
pub(crate) fn list_entries<'a, T>(
    list: &'static str,
    allowed: &[&str],
    value: &'a Value,
    mut entry: impl FnMut(&Fields<'a>) -> Result<T, LlmConfigError>,
) -> Result<Vec<T>, LlmConfigError> {
    let Value::Array(items) = value else {
        return Err(LlmConfigError::new(list, "expected an array of providers"));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(map) = item else {
                return Err(LlmConfigError::new(
                    format!("{list}[{index}]"),
                    "expected an object",
                ));
            };
            let fields = Fields { list, index, map };
            if let Some(unknown) = map.keys().find(|field| !allowed.contains(&field.as_str())) {
                return Err(fields.error(
                    &excerpt(unknown, 64),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                ));
            }
            entry(&fields)
        })
        .collect()
}

/// The fields every provider entry has, validated, defaults applied (but the name's,
/// which differs by list).
pub(crate) struct Endpoint<'a> {
    pub(crate) kind: ProviderKind,
    /// The configured `name`, if any.
    pub(crate) name: Option<&'a str>,
    pub(crate) model: String,
    pub(crate) api_key: SecretString,
    pub(crate) base_url: String,
    pub(crate) timeout: Duration,
}

/// Typed reads of one provider entry's fields, with errors that name them
/// (`llm[1].model: missing`). `null` reads as absent.
pub(crate) struct Fields<'a> {
    list: &'static str,
    index: usize,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// An error about `field` of this entry.
    pub(crate) fn error(&self, field: &str, problem: impl Into<String>) -> LlmConfigError {
        LlmConfigError::new(format!("{}[{}].{field}", self.list, self.index), problem)
    }

    /// `kind`, `name`, `model`, `api_key`, `base_url` and `timeout_ms`, read in this order.
    pub(crate) fn endpoint(&self) -> Result<Endpoint<'a>, LlmConfigError> {
        let kind = match self.required_str("kind")? {
            "gemini" => ProviderKind::Gemini,
            "openai" => ProviderKind::OpenAi,
            _ => return Err(self.error("kind", r#"expected "gemini" or "openai""#)),
        };
        let name = self.optional_str("name")?;
        let model = self.required_str("model")?.to_owned();
        let api_key = SecretString::from(self.required_str("api_key")?.to_owned());
        let base_url = match self.optional_str("base_url")? {
            None => kind.default_base_url().to_owned(),
            Some(url) => match crate::adapters::secure_url(url) {
                Ok(_) => url.trim_end_matches('/').to_owned(),
                Err(problem) => return Err(self.error("base_url", problem)),
            },
        };
        let timeout = match self.optional_positive("timeout_ms")? {
            None => DEFAULT_TIMEOUT,
            Some(ms) if ms <= MAX_TIMEOUT_MS => Duration::from_millis(ms),
            Some(_) => {
                return Err(self.error("timeout_ms", format!("must be at most {MAX_TIMEOUT_MS}")));
            }
        };
        Ok(Endpoint {
            kind,
            name,
            model,
            api_key,
            base_url,
            timeout,
        })
    }

    /// `requests_per_minute` and `tokens_per_minute`; absent = unlimited.
    pub(crate) fn budget(&self) -> Result<Budget, LlmConfigError> {
        let requests_per_minute = self
            .optional_positive("requests_per_minute")?
            .map(|rpm| {
                u32::try_from(rpm).map_err(|_| self.error("requests_per_minute", "too large"))
            })
            .transpose()?;
        let tokens_per_minute = self.optional_positive("tokens_per_minute")?;
        Ok(Budget {
            requests_per_minute,
            tokens_per_minute,
        })
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|value| !value.is_null())
    }

    fn required_str(&self, field: &str) -> Result<&'a str, LlmConfigError> {
        self.optional_str(field)?
            .ok_or_else(|| self.error(field, "missing"))
    }

    fn optional_str(&self, field: &str) -> Result<Option<&'a str>, LlmConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => {
                Err(self.error(field, "must not be empty"))
            }
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(self.error(field, "expected a string")),
        }
    }

    /// A positive integer, if present.
    pub(crate) fn optional_positive(&self, field: &str) -> Result<Option<u64>, LlmConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => match value.as_u64() {
                Some(number) if number > 0 => Ok(Some(number)),
                _ => Err(self.error(field, "expected a positive integer")),
            },
        }
    }

    /// A price in US dollars per million tokens; absent = 0.
    pub(crate) fn optional_price(&self, field: &str) -> Result<f64, LlmConfigError> {
        match self.get(field) {
            None => Ok(0.0),
            Some(value) => match value.as_f64() {
                Some(price) if price.is_finite() && price >= 0.0 => Ok(price),
                _ => Err(self.error(field, "expected a non-negative number")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn defaults_apply() {
        let configs = parse_llm_config(
            r#"[{"kind":"gemini","model":"gemini-2.5-flash","api_key":"k1"},
                {"kind":"openai","model":"gpt-4o-mini","api_key":"k2","name":"backup",
                 "base_url":"http://127.0.0.1:9/v1/","timeout_ms":500,"requests_per_minute":10,
                 "tokens_per_minute":1000,"prompt_usd_per_million":0.15,
                 "completion_usd_per_million":0.6}]"#,
        )
        .expect("valid");
        let [gemini, openai] = configs.as_slice() else {
            panic!("two providers expected");
        };
        assert_eq!(gemini.kind, ProviderKind::Gemini);
        assert_eq!(gemini.name, "gemini");
        assert_eq!(gemini.base_url, GEMINI_DEFAULT_BASE_URL);
        assert_eq!(gemini.timeout, DEFAULT_TIMEOUT);
        assert_eq!(gemini.budget, Budget::default());
        assert_eq!(gemini.cost_micros(1000, 1000), 0);
        assert_eq!(gemini.api_key.expose_secret(), "k1");
        assert_eq!(openai.name, "backup");
        assert_eq!(openai.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(openai.timeout, Duration::from_millis(500));
        assert_eq!(openai.budget.requests_per_minute, Some(10));
        assert_eq!(openai.budget.tokens_per_minute, Some(1000));
        // 1000 × 0.15 + 7 × 0.6 = 154.2 → 155.
        assert_eq!(openai.cost_micros(1000, 7), 155);
        assert!(!format!("{openai:?}").contains("k2"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{}", "llm: expected an array of providers"),
            ("[1]", "llm[0]: expected an object"),
            (
                r#"[{"kind":"gemini","api_key":"k"}]"#,
                "llm[0].model: missing",
            ),
            (
                r#"[{"kind":"gemini","model":"m","api_key":"k"},{"kind":"x","model":"m","api_key":"k"}]"#,
                r#"llm[1].kind: expected "gemini" or "openai""#,
            ),
            (
                r#"[{"kind":"openai","model":"m"}]"#,
                "llm[0].api_key: missing",
            ),
            (
                r#"[{"kind":"openai","model":"m","api_key":""}]"#,
                "llm[0].api_key: must not be empty",
            ),
            (
                r#"[{"kind":"openai","model":"m","api_key":"k","timeout_ms":0}]"#,
                "llm[0].timeout_ms: expected a positive integer",
            ),
            (
                r#"[{"kind":"openai","model":"m","api_key":"k","base_url":"ftp://x"}]"#,
                "llm[0].base_url: must be an https:// url",
            ),
            (
                r#"[{"kind":"openai","model":"m","api_key":"k","base_url":"http://llm.example.com/v1"}]"#,
                "llm[0].base_url: must be an https:// url (http:// only to a loopback host)",
            ),
            (
                r#"[{"kind":"gemini","model":"m","api_key":"k","base_url":"http://169.254.169.254"}]"#,
                "llm[0].base_url: must be an https:// url (http:// only to a loopback host)",
            ),
            (
                r#"[{"kind":"openai","model":"m","api_key":"k","prompt_usd_per_million":-1}]"#,
                "llm[0].prompt_usd_per_million: expected a non-negative number",
            ),
        ];
        for (json, expected) in cases {
            let error = parse_llm_config(json).expect_err(json);
            assert_eq!(error.to_string(), expected, "{json}");
        }
        let unknown = parse_llm_config(r#"[{"kind":"openai","model":"m","api_key":"k","temp":1}]"#)
            .expect_err("unknown field");
        assert_eq!(unknown.path, "llm[0].temp");
        assert!(unknown.problem.starts_with("unknown field"));
    }

    #[test]
    fn keys_never_appear_in_errors() {
        let error = parse_llm_config(r#"[{"kind":"openai","model":"m","api_key":12345678}]"#)
            .expect_err("numeric key");
        assert_eq!(error.to_string(), "llm[0].api_key: expected a string");
        assert_eq!(parse_llm_config("[]").expect("empty").len(), 0);
    }

    #[test]
    fn redaction_replaces_keys() {
        let redacted = redacted_llm_config(r#"[{"kind":"openai","model":"m","api_key":"sk-1"}]"#);
        assert_eq!(
            redacted,
            serde_json::json!([{"kind":"openai","model":"m","api_key":"[redacted]"}])
        );
        assert_eq!(redacted_llm_config("sk-1 not json"), Value::Null);
    }
}
