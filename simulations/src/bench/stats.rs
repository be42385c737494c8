//! Percentiles of measured durations: the one definition every bench and report uses.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Significant decimal digits the histogram keeps: microseconds are exact up to 262 ms.
const SIGNIFICANT_DIGITS: u8 = 5;

/// A duration in milliseconds as whole microseconds (negative values count as zero).
fn micros(ms: f64) -> u64 {
    (ms * 1_000.0).round().max(0.0) as u64
}

/// The distribution of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// How many values.
    pub count: usize,
    /// Smallest.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Distribution {
    /// The distribution of `values_ms`, all zero when empty. Percentiles are nearest-rank
    /// ([`hdrhistogram`]'s `value_at_quantile`) over the values rounded to the microsecond,
    /// exact below 262 ms and within 0.001 % above: every bench and report uses this one
    /// definition.
    pub fn of(values_ms: Vec<f64>) -> Self {
        if values_ms.is_empty() {
            return Self::default();
        }
        let mut histogram = Histogram::<u64>::new(SIGNIFICANT_DIGITS).expect("a valid precision");
        let (mut min_ms, mut max_ms, mut sum_ms) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for &value in &values_ms {
            // `record` grows the histogram; `saturating_record` would not: it clamped every
            // value past 262 ms to the histogram's initial top, 2 µs (reports showed 0 ms).
            if histogram.record(micros(value)).is_err() {
                histogram.saturating_record(micros(value));
            }
            min_ms = min_ms.min(value);
            max_ms = max_ms.max(value);
            sum_ms += value;
        }
        let rank = |p: f64| histogram.value_at_quantile(p / 100.0) as f64 / 1_000.0;
        let n = values_ms.len();
        Self {
            count: n,
            min_ms,
            p50_ms: rank(50.0),
            p90_ms: rank(90.0),
            p99_ms: rank(99.0),
            p999_ms: rank(99.9),
            max_ms,
            mean_ms: sum_ms / n as f64,
        }
    }

    /// `p50 / p90 / p99 / max` for a table cell.
    pub fn cell(&self) -> String {
        format!(
            "p50 {:.2} / p90 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms (n = {})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Distribution;

    #[test]
    fn nearest_rank_percentiles() {
        let d = Distribution::of((1..=100).map(f64::from).collect());
        assert_eq!(d.p50_ms, 50.0);
        assert_eq!(d.p90_ms, 90.0);
        assert_eq!(d.p99_ms, 99.0);
        assert_eq!(d.max_ms, 100.0);
        assert_eq!(d.min_ms, 1.0);
        assert_eq!(Distribution::of(Vec::new()).count, 0);
    }

    #[test]
    fn latencies_of_seconds_keep_their_size() {
        let d = Distribution::of((1..=100).map(|i| f64::from(i) * 100.0).collect());
        let near = |value: f64, wanted: f64| (value - wanted).abs() <= wanted * 1e-4;
        assert!(near(d.p50_ms, 5_000.0) && near(d.p99_ms, 9_900.0), "{d:?}");
        assert_eq!(d.max_ms, 10_000.0);
        let tail = Distribution::of(vec![1.0, 2.0, 600_000.0]);
        assert!((tail.p99_ms - 600_000.0).abs() < 10.0, "{tail:?}");
    }
}
