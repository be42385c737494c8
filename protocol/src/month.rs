//! [`Month`]: a calendar month in UTC and its bounds in unix milliseconds.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A calendar month in UTC (`Display`: `YYYY-MM`), years 1970 to 9999: the period of a
/// tenant's usage and of its LLM spend cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    year: i64,
    /// 1 to 12.
    month: i64,
}

impl Month {
    /// The month `month` (1 to 12) of `year` (1970 to 9999), if there is one.
    pub fn new(year: i64, month: i64) -> Option<Self> {
        ((1970..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Self { year, month })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds_are_utc_calendar_months() {
        let january_1970 = Month::new(1970, 1).unwrap();
        assert_eq!(january_1970.start_ms(), 0);
        assert_eq!(january_1970.end_ms(), 31 * DAY_MS);
        // 2024 is a leap year; 2023-11-14T22:13:20Z is 1_700_000_000_000.
        let february = Month::new(2024, 2).unwrap();
        assert_eq!(february.end_ms() - february.start_ms(), 29 * DAY_MS);
        assert_eq!(february.start_ms(), 1_706_745_600_000);
        let december = Month::new(2023, 12).unwrap();
        assert_eq!(december.end_ms(), 1_704_067_200_000);
        assert_eq!(Month::containing(1_700_000_000_000).to_string(), "2023-11");
        assert_eq!(Month::containing(1_704_067_200_000).to_string(), "2024-01");
        assert_eq!(Month::containing(1_704_067_199_999).to_string(), "2023-12");
        assert_eq!(Month::containing(0).to_string(), "1970-01");
        assert_eq!(Month::new(9999, 12).unwrap().to_string(), "9999-12");
    }
}
