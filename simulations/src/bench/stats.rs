//! Percentiles of measured durations.

use serde::Serialize;

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
    /// The distribution of `values_ms` (nearest-rank percentiles); all zero when empty.
    pub fn of(mut values_ms: Vec<f64>) -> Self {
        if values_ms.is_empty() {
            return Self::default();
        }
        values_ms.sort_by(f64::total_cmp);
        let n = values_ms.len();
        let rank = |p: f64| {
            let index = ((p / 100.0) * n as f64).ceil() as usize;
            values_ms[index.clamp(1, n) - 1]
        };
        Self {
            count: n,
            min_ms: values_ms[0],
            p50_ms: rank(50.0),
            p90_ms: rank(90.0),
            p99_ms: rank(99.0),
            p999_ms: rank(99.9),
            max_ms: values_ms[n - 1],
            mean_ms: values_ms.iter().sum::<f64>() / n as f64,
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
}
