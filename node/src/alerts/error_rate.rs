//! Failures over a sliding window, from the node's running totals
//! ([`OutcomeTally`](salesboy_actors::services::OutcomeTally)) read at each evaluation.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Readings of one source's `(ok, failed)` totals over the last window.
#[derive(Debug)]
pub struct ErrorWindow {
    window: Duration,
    readings: VecDeque<(Instant, (u64, u64))>,
}

/// Calls in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls that failed.
    pub failed: u64,
    /// Calls.
    pub total: u64,
}

impl ErrorWindow {
    /// An empty window of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            readings: VecDeque::new(),
        }
    }

    /// Records the totals read at `now`; answers the calls since the oldest reading still
    /// covering the window (the first window counts from the first reading).
    pub fn observe(&mut self, now: Instant, totals: (u64, u64)) -> WindowCounts {
        self.readings.push_back((now, totals));
        if let Some(start) = now.checked_sub(self.window) {
            while self.readings.get(1).is_some_and(|(at, _)| *at <= start) {
                self.readings.pop_front();
            }
        }
        let (_, (ok_before, failed_before)) = self.readings[0];
        let failed = totals.1.saturating_sub(failed_before);
        let ok = totals.0.saturating_sub(ok_before);
        WindowCounts {
            failed,
            total: ok + failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_age_out_of_the_window() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut window = ErrorWindow::new(Duration::from_secs(10));
        assert_eq!(
            window.observe(at(0), (0, 0)),
            WindowCounts {
                failed: 0,
                total: 0
            }
        );
        assert_eq!(
            window.observe(at(5), (10, 5)),
            WindowCounts {
                failed: 5,
                total: 15
            }
        );
        // At 15 s the window starts at 5 s: the reading of 5 s is the baseline.
        assert_eq!(
            window.observe(at(15), (20, 5)),
            WindowCounts {
                failed: 0,
                total: 10
            }
        );
        assert_eq!(
            window.observe(at(40), (20, 5)),
            WindowCounts {
                failed: 0,
                total: 0
            }
        );
    }
}
