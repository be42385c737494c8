//! LLM provider formats.
//!
//! - [`gemini`]: Gemini `generateContent` request, response and error bodies (retry delay
//!   and per-minute vs per-day quota from the error body);
//! - [`openai`]: OpenAI-compatible chat completions request, response and error bodies, and
//!   the retry headers (`retry-after`, `retry-after-ms`, `x-ratelimit-reset-*`).

use std::time::Duration;

pub mod gemini;
pub mod openai;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a non-negative decimal number (`"38"`, `"1.5"`, `".25"`) of units of `unit_nanos`
/// nanoseconds exactly (digits beyond nanosecond precision are dropped). `None` on anything
/// else, including signs, exponents and overflow.
fn decimal_duration(number: &str, unit_nanos: u128) -> Option<Duration> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(digit - b'0') * scale)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    // The remainder is below 1e9, so it fits a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(
            decimal_duration("38", NANOS_PER_SEC),
            Some(Duration::from_secs(38))
        );
        assert_eq!(
            decimal_duration("1.5", NANOS_PER_SEC),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            decimal_duration(".25", NANOS_PER_SEC),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            decimal_duration("38.922534355", NANOS_PER_SEC),
            Some(Duration::new(38, 922_534_355))
        );
        assert_eq!(
            decimal_duration("0.0000000019", NANOS_PER_SEC),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(
            decimal_duration("120", 1_000_000),
            Some(Duration::from_millis(120))
        );
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "1.2.3",
            " 1",
            "abc",
            "99999999999999999999999999999999999999",
        ] {
            assert_eq!(decimal_duration(bad, NANOS_PER_SEC), None, "{bad:?}");
        }
    }
}
