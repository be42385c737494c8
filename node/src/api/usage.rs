//! A tenant's usage for one calendar month (UTC): LLM tokens and cost, messages in and out.

use salesboy_actors::store::UsageReport;
use salesboy_protocol::TenantId;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Api, ApiError};

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A calendar month in UTC, as the API names it: `YYYY-MM`, years 1970 to 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    year: i64,
    /// 1 to 12.
    month: i64,
}

impl Month {
    /// Reads `YYYY-MM` (the request's `month`), or 400 saying what is expected.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
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
        if year < 1970 || !(1..=12).contains(&month) {
            return Err(invalid());
        }
        Ok(Self { year, month })
    }

    /// The month (UTC) that contains `unix_ms`.
    pub fn containing(unix_ms: i64) -> Self {
        let (year, month) = civil_from_days(unix_ms.div_euclid(DAY_MS));
        Self { year, month }
    }

    /// Its first millisecond (unix ms).
    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month) * DAY_MS
    }

    /// The first millisecond of the next month (unix ms).
    pub fn end_ms(self) -> i64 {
        let next = if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        };
        next.start_ms()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days from 1970-01-01 to the first of `month` of `year` (proleptic Gregorian; Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5; // of the first of the month
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year and month (1 to 12) of the day `days` after 1970-01-01 (Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month)
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
        Some(text) => Month::parse(text)?,
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
        assert_eq!(Month::parse("2026-01").unwrap().to_string(), "2026-01");
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
            let error = Month::parse(bad).unwrap_err();
            assert_eq!(error.status(), 400, "{bad}");
            assert!(error.to_string().starts_with("month: "), "{error}");
        }
    }

    #[test]
    fn month_bounds_are_utc_calendar_months() {
        let january_1970 = Month::parse("1970-01").unwrap();
        assert_eq!(january_1970.start_ms(), 0);
        assert_eq!(january_1970.end_ms(), 31 * DAY_MS);
        // 2024 is a leap year; 2023-11-14T22:13:20Z is 1_700_000_000_000.
        let february = Month::parse("2024-02").unwrap();
        assert_eq!(february.end_ms() - february.start_ms(), 29 * DAY_MS);
        assert_eq!(february.start_ms(), 1_706_745_600_000);
        let december = Month::parse("2023-12").unwrap();
        assert_eq!(december.end_ms(), 1_704_067_200_000);
        assert_eq!(Month::containing(1_700_000_000_000).to_string(), "2023-11");
        assert_eq!(Month::containing(1_704_067_200_000).to_string(), "2024-01");
        assert_eq!(Month::containing(1_704_067_199_999).to_string(), "2023-12");
        assert_eq!(Month::containing(0).to_string(), "1970-01");
        assert_eq!(Month::parse("9999-12").unwrap().to_string(), "9999-12");
    }
}
