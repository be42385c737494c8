//! A tenant's usage for one calendar month (UTC): LLM tokens and cost, messages in and out.

use salesboy_actors::store::UsageReport;
use salesboy_protocol::TenantId;
pub use salesboy_protocol::month::Month;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Api, ApiError};

/// Reads `YYYY-MM` (the request's `month`), or 400 saying what is expected.
pub fn parse_month(text: &str) -> Result<Month, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "month",
            format!("expected a month as YYYY-MM (e.g. 2026-01), got {text:?}"),
        )
    };
    let (year, month) = text.split_once('-').ok_or_else(invalid)?;
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(month, 2) {
        return Err(invalid());
    }
    let year: i64 = year.parse().map_err(|_| invalid())?;
    let month: i64 = month.parse().map_err(|_| invalid())?;
    Month::new(year, month).ok_or_else(invalid)
}

/// Tokens of the month's LLM calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCounts {
    /// Prompt (input) tokens.
    pub prompt: i64,
    /// Completion (output) tokens.
    pub completion: i64,
}

/// Messages of the month.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageCounts {
    /// Received from customers.
    #[serde(rename = "in")]
    #[schema(rename = "in")]
    pub received: i64,
    /// Sent: bot replies, owner sends and echoes of messages sent from the business's phone.
    #[serde(rename = "out")]
    #[schema(rename = "out")]
    pub sent: i64,
}

/// A tenant's usage for one month (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// The month, `YYYY-MM`.
    #[schema(example = "2026-01")]
    pub month: String,
    /// Its first millisecond (unix ms).
    pub from_ms: i64,
    /// The first millisecond of the next month (unix ms): the period is `[from_ms, until_ms)`.
    pub until_ms: i64,
    /// LLM tokens.
    pub tokens: TokenCounts,
    /// Number of LLM calls.
    pub llm_requests: i64,
    /// LLM cost in millionths of a US dollar.
    pub llm_cost_micros: i64,
    /// Messages in and out.
    pub messages: MessageCounts,
}

/// The tenant's usage for `month` (`YYYY-MM`; absent = the current month, UTC).
pub async fn get(api: &Api, id: &TenantId, month: Option<&str>) -> Result<UsageView, ApiError> {
    let month = match month {
        Some(text) => parse_month(text)?,
        None => Month::containing(api.now_ms()),
    };
    api.existing_tenant(id).await?;
    let (from_ms, until_ms) = (month.start_ms(), month.end_ms());
    let report: UsageReport = api.store.usage_between(id, from_ms, until_ms).await?;
    Ok(UsageView {
        month: month.to_string(),
        from_ms,
        until_ms,
        tokens: TokenCounts {
            prompt: report.llm.prompt_tokens,
            completion: report.llm.completion_tokens,
        },
        llm_requests: report.llm.requests,
        llm_cost_micros: report.llm.cost_micros,
        messages: MessageCounts {
            received: report.messages_in,
            sent: report.messages_out,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_read_strictly() {
        assert_eq!(parse_month("2026-01").unwrap().to_string(), "2026-01");
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026/01",
            "2026-01-01",
            "",
            "1969-12",
            "+026-01",
            "2026-0a",
        ] {
            let error = parse_month(bad).unwrap_err();
            assert_eq!(error.status(), 400, "{bad}");
            assert!(error.to_string().starts_with("month: "), "{error}");
        }
    }
}
