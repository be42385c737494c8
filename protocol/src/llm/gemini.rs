//! Gemini `generateContent` formats (`POST /v1beta/models/{model}:generateContent`).
//!
//! A 429 carries its retry delay in the body (`google.rpc.RetryInfo.retryDelay`), not in a
//! header, and says in `google.rpc.QuotaFailure` whether a per-minute or a per-day quota ran
//! out: retry the first after the delay, switch provider on the second.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NANOS_PER_SEC, decimal_duration};

/// A `generateContent` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// The conversation, oldest first, alternating `user` and `model`.
    pub contents: Vec<Content>,
    /// The system prompt (a content without role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    /// Sampling and length settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    /// Safety thresholds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_settings: Vec<SafetySetting>,
}

impl GenerateContentRequest {
    /// A request for `contents` with an optional system prompt and default settings.
    pub fn new(system_instruction: Option<String>, contents: Vec<Content>) -> Self {
        Self {
            contents,
            system_instruction: system_instruction.map(|text| Content {
                role: None,
                parts: vec![Part::text(text)],
            }),
            generation_config: None,
            safety_settings: Vec::new(),
        }
    }
}

/// Who wrote a [`Content`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The customer.
    User,
    /// The assistant.
    Model,
}

/// One turn of the conversation (or the system instruction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The author; absent for the system instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The parts (text only here). A response cut short may have none.
    #[serde(default)]
    pub parts: Vec<Part>,
}

impl Content {
    /// A customer turn.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Some(Role::User),
            parts: vec![Part::text(text)],
        }
    }

    /// An assistant turn.
    pub fn model(text: impl Into<String>) -> Self {
        Self {
            role: Some(Role::Model),
            parts: vec![Part::text(text)],
        }
    }

    /// The text of the non-thought parts, concatenated.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter(|part| part.thought != Some(true))
            .filter_map(|part| part.text.as_deref())
            .collect()
    }
}

/// A part of a [`Content`]; only text parts are used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Whether this part is the model's thinking (not part of the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            thought: None,
        }
    }
}

/// Sampling and length settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The answer's length limit in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// The number of candidates (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Sequences that end the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    /// Thinking settings (2.5 models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// Thinking settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    /// Thinking tokens allowed: 0 off, -1 dynamic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i32>,
}

/// A safety threshold for one harm category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetySetting {
    /// `HARM_CATEGORY_HARASSMENT`, …
    pub category: String,
    /// `BLOCK_ONLY_HIGH`, …
    pub threshold: String,
}

/// Finish reasons that mean the answer was withheld for safety or policy.
const BLOCKING_FINISH_REASONS: [&str; 6] = [
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

/// A `generateContent` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// The answers (one); none when the prompt was blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// Why the prompt was blocked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The response id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

impl GenerateContentResponse {
    /// The answer's text: the first candidate's non-thought text. `None` when the prompt or
    /// the answer was blocked, or the answer is empty.
    pub fn text(&self) -> Option<String> {
        if self.block_reason().is_some() {
            return None;
        }
        let text = self.candidates.first()?.content.as_ref()?.text();
        (!text.trim().is_empty()).then_some(text)
    }

    /// Why the prompt (`promptFeedback.blockReason`) or the answer (a safety finish reason)
    /// was blocked, if it was.
    pub fn block_reason(&self) -> Option<&str> {
        if let Some(reason) = self
            .prompt_feedback
            .as_ref()
            .and_then(|feedback| feedback.block_reason.as_deref())
        {
            return Some(reason);
        }
        let reason = self.candidates.first()?.finish_reason.as_deref()?;
        BLOCKING_FINISH_REASONS.contains(&reason).then_some(reason)
    }

    /// The first candidate's finish reason (`STOP`, `MAX_TOKENS`, …).
    pub fn finish_reason(&self) -> Option<&str> {
        self.candidates.first()?.finish_reason.as_deref()
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The answer; absent when it was blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// Feedback on the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `OTHER`, `BLOCKLIST`, `PROHIBITED_CONTENT`, … when the prompt was blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
}

/// Token counts of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_token_count: u64,
    /// Answer tokens (0 when blocked).
    #[serde(default)]
    pub candidates_token_count: u64,
    /// Thinking tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    /// All tokens.
    #[serde(default)]
    pub total_token_count: u64,
}

/// A Gemini error response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeminiErrorBody {
    /// The error.
    pub error: GeminiError,
}

/// A Gemini (`google.rpc.Status`) error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("gemini error {code} {status}: {message}", status = self.status.as_deref().unwrap_or("-"))]
pub struct GeminiError {
    /// The HTTP status code.
    pub code: u16,
    /// The message.
    #[serde(default)]
    pub message: String,
    /// The status name (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Typed details (`RetryInfo`, `QuotaFailure`, `Help`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
const QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";

/// Which quota a 429 ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuotaWindow {
    /// A per-minute quota: retry after the delay.
    PerMinute,
    /// A per-day quota: switch provider until it resets.
    PerDay,
    /// The body does not say.
    Unknown,
}

impl GeminiError {
    /// Whether this is a quota / rate-limit error (429 `RESOURCE_EXHAUSTED`).
    pub fn is_quota_exceeded(&self) -> bool {
        self.code == 429 || self.status.as_deref() == Some("RESOURCE_EXHAUSTED")
    }

    /// The delay the server asks for (`RetryInfo.retryDelay`, e.g. `"38s"`, `"1.5s"`).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details
            .iter()
            .filter(|detail| detail.type_url == RETRY_INFO)
            .find_map(|detail| parse_proto_duration(detail.retry_delay.as_deref()?))
    }

    /// For a quota error, which quota ran out (a `QuotaFailure` violation's `quotaId`
    /// containing `PerDay` or `PerMinute`); `None` for other errors.
    pub fn quota_window(&self) -> Option<QuotaWindow> {
        if !self.is_quota_exceeded() {
            return None;
        }
        let quota_ids = || {
            self.details
                .iter()
                .filter(|detail| detail.type_url == QUOTA_FAILURE)
                .flat_map(|detail| &detail.violations)
                .filter_map(|violation| violation.quota_id.as_deref())
        };
        Some(if quota_ids().any(|id| id.contains("PerDay")) {
            QuotaWindow::PerDay
        } else if quota_ids().any(|id| id.contains("PerMinute")) {
            QuotaWindow::PerMinute
        } else {
            QuotaWindow::Unknown
        })
    }

    /// Whether the same request may succeed later with this provider: quota errors except
    /// per-day ones, and 500 / 503 / 504.
    pub fn is_retryable(&self) -> bool {
        match self.quota_window() {
            Some(QuotaWindow::PerDay) => false,
            Some(_) => true,
            None => matches!(self.code, 500 | 503 | 504),
        }
    }
}

/// One entry of [`GeminiError::details`]; fields of the detail types used here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// The detail type (`type.googleapis.com/google.rpc.RetryInfo`, …).
    #[serde(rename = "@type")]
    pub type_url: String,
    /// `RetryInfo`: the delay, a protobuf duration (`"38s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    /// `QuotaFailure`: the quotas exceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<QuotaViolation>,
    /// `ErrorInfo`: the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A quota exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaViolation {
    /// The metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_metric: Option<String>,
    /// The quota (`GenerateRequestsPerMinutePerProjectPerModel-FreeTier`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_id: Option<String>,
    /// The limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_value: Option<String>,
}

/// Parses a protobuf JSON duration: decimal seconds followed by `s` (`"38s"`, `"1.5s"`).
pub fn parse_proto_duration(value: &str) -> Option<Duration> {
    decimal_duration(value.trim().strip_suffix('s')?, NANOS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_durations_parse() {
        assert_eq!(parse_proto_duration("13s"), Some(Duration::from_secs(13)));
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_proto_duration("0s"), Some(Duration::ZERO));
        for bad in ["13", "s", "-1s", "1m", "1.5ms"] {
            assert_eq!(parse_proto_duration(bad), None, "{bad}");
        }
    }
}
