//! Restart policy for supervisors: restart a failed child with exponential backoff, give up
//! after too many failures in a window. ractor has no restart strategy of its own and its
//! default supervisor handler stops the parent when any child exits, so every supervisor
//! here overrides `handle_supervisor_evt` and asks a [`RestartTracker`] what to do.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// When to restart and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures tolerated within `window`; one more and the supervisor gives up.
    pub max_failures: usize,
    /// The window failures are counted in.
    pub window: Duration,
    /// Delay before the first restart; doubled for each failure in the window.
    pub base_backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(60),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What a supervisor does about a failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this delay.
    Restart {
        /// The backoff delay.
        after: Duration,
    },
    /// Too many failures in the window: stop trying and report.
    GiveUp,
}

/// Counts one child's failures.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    recent: VecDeque<Instant>,
    restarts: u64,
}

impl RestartTracker {
    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> RestartDecision {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() > policy.max_failures {
            return RestartDecision::GiveUp;
        }
        self.restarts += 1;
        let exponent = u32::try_from(self.recent.len() - 1)
            .unwrap_or(u32::MAX)
            .min(16);
        let after = policy
            .base_backoff
            .saturating_mul(1 << exponent)
            .min(policy.max_backoff);
        RestartDecision::Restart { after }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_then_gives_up() {
        let policy = RestartPolicy {
            max_failures: 3,
            window: Duration::from_secs(10),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let mut tracker = RestartTracker::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            tracker.on_failure(&policy, t0),
            RestartDecision::Restart { after: ms(100) }
        );
        assert_eq!(
            tracker.on_failure(&policy, t0 + ms(1)),
            RestartDecision::Restart { after: ms(200) }
        );
        assert_eq!(
            tracker.on_failure(&policy, t0 + ms(2)),
            RestartDecision::Restart { after: ms(300) }
        );
        assert_eq!(
            tracker.on_failure(&policy, t0 + ms(3)),
            RestartDecision::GiveUp
        );
        assert_eq!(tracker.restarts(), 3);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let policy = RestartPolicy {
            max_failures: 1,
            window: Duration::from_secs(1),
            ..Default::default()
        };
        let mut tracker = RestartTracker::default();
        let t0 = Instant::now();
        assert!(matches!(
            tracker.on_failure(&policy, t0),
            RestartDecision::Restart { .. }
        ));
        assert!(matches!(
            tracker.on_failure(&policy, t0 + Duration::from_secs(5)),
            RestartDecision::Restart { .. }
        ));
        assert_eq!(
            tracker.on_failure(&policy, t0 + Duration::from_secs(5)),
            RestartDecision::GiveUp
        );
    }
}
