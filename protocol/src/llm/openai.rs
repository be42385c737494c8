//! OpenAI-compatible chat completions formats (`POST /v1/chat/completions`), and the rate
//! limit headers.
//!
//! A 429 is either `rate_limit_exceeded` (retry after the delay the headers give) or
//! `insufficient_quota` (the account is out of credit: do not retry, switch provider and
//! raise an alert).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NANOS_PER_SEC, decimal_duration};
use crate::serde_util::opt_string_or_number;

/// A chat completions request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model (`gpt-4o-mini`, …).
    pub model: String,
    /// The conversation, the system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The answer's length limit in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// An end-user id for the provider's abuse monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ChatCompletionRequest {
    /// A request for `messages` to `model` with default settings.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            temperature: None,
            max_tokens: None,
            user: None,
        }
    }
}

/// Who wrote a [`ChatMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// The system prompt.
    System,
    /// The system prompt, in newer models' terms.
    Developer,
    /// The customer.
    User,
    /// The assistant.
    Assistant,
    /// A tool result.
    Tool,
}

/// One message of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The author.
    pub role: ChatRole,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A system prompt.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::System,
            content: content.into(),
        }
    }

    /// A customer message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::Assistant,
            content: content.into(),
        }
    }
}

/// A chat completions response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// The completion id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// The answers (one).
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletionResponse {
    /// The first choice's text, unless it is empty or a refusal.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()?
            .message
            .content
            .as_deref()
            .filter(|text| !text.trim().is_empty())
    }

    /// The first choice's finish reason (`stop`, `length`, `content_filter`, …).
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.first()?.finish_reason.as_deref()
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Its position.
    #[serde(default)]
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// `stop`, `length`, `content_filter`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// The answer of a [`Choice`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: ChatRole,
    /// The text; `null` on a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The refusal, if the model refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// Token counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Answer tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// All tokens.
    #[serde(default)]
    pub total_tokens: u64,
}

/// An OpenAI error response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiError,
}

/// An OpenAI error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("openai error {code}: {message}", code = self.code.as_deref().unwrap_or("-"))]
pub struct OpenAiError {
    /// The message.
    #[serde(default)]
    pub message: String,
    /// The error type (`insufficient_quota`, `requests`, `invalid_request_error`, …).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The offending parameter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The error code (`rate_limit_exceeded`, `insufficient_quota`, …); some compatible
    /// providers send a number.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_string_or_number"
    )]
    pub code: Option<String>,
}

/// What an OpenAI error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpenAiErrorKind {
    /// `rate_limit_exceeded`: retry after the delay of [`RateLimitHeaders::retry_delay`].
    RateLimit,
    /// `insufficient_quota`: out of credit; do not retry, switch provider and alert.
    InsufficientQuota,
    /// Anything else (judge by the HTTP status).
    Other,
}

impl OpenAiErrorKind {
    /// Whether the same request may succeed later with this provider.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimit)
    }
}

impl OpenAiError {
    /// The class of this error, by `code`, else by `type`.
    pub fn kind(&self) -> OpenAiErrorKind {
        let classify = |value: &str| match value {
            "rate_limit_exceeded" => Some(OpenAiErrorKind::RateLimit),
            "insufficient_quota" => Some(OpenAiErrorKind::InsufficientQuota),
            _ => None,
        };
        self.code
            .as_deref()
            .and_then(classify)
            .or_else(|| self.error_type.as_deref().and_then(classify))
            .unwrap_or(OpenAiErrorKind::Other)
    }

    /// Whether the same request may succeed later with this provider.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// The rate-limit headers of a response (success or 429), parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `retry-after-ms`.
    pub retry_after_ms: Option<Duration>,
    /// `retry-after`, in seconds (the HTTP-date form is not read).
    pub retry_after: Option<Duration>,
    /// `x-ratelimit-reset-requests`: until the request budget is full again.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`: until the token budget is full again.
    pub reset_tokens: Option<Duration>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
}

impl RateLimitHeaders {
    /// Reads the headers from `(name, value)` pairs; names are case-insensitive, unknown
    /// headers and unparsable values are skipped.
    pub fn from_pairs<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut parsed = Self::default();
        for (name, value) in headers {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "retry-after-ms" => parsed.retry_after_ms = decimal_duration(value, 1_000_000),
                "retry-after" => parsed.retry_after = decimal_duration(value, NANOS_PER_SEC),
                "x-ratelimit-reset-requests" => parsed.reset_requests = parse_go_duration(value),
                "x-ratelimit-reset-tokens" => parsed.reset_tokens = parse_go_duration(value),
                "x-ratelimit-remaining-requests" => parsed.remaining_requests = value.parse().ok(),
                "x-ratelimit-remaining-tokens" => parsed.remaining_tokens = value.parse().ok(),
                _ => {}
            }
        }
        parsed
    }

    /// How long to wait before retrying, as the official SDKs do: `retry-after-ms`, else
    /// `retry-after`, else the later of the two `x-ratelimit-reset-*` values.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after_ms
            .or(self.retry_after)
            .or_else(|| self.reset_requests.max(self.reset_tokens))
    }
}

/// Parses a Go duration as in `x-ratelimit-reset-*` (`"6m0s"`, `"1s"`, `"20ms"`,
/// `"1h2m3.5s"`; units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`). Signs are refused.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    match value {
        "" => return None,
        "0" => return Some(Duration::ZERO),
        _ => {}
    }
    let mut rest = value;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "h" => 3_600 * NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "s" => NANOS_PER_SEC,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total = total.checked_add(decimal_duration(number, unit_nanos)?)?;
        rest = tail;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_go_duration("20ms"), Some(ms(20)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(parse_go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "-1s", "1d", "s", "1.2.3s", "ms20"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }
}
