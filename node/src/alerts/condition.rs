//! A condition's state with hysteresis: raised when a measure reaches its threshold, cleared
//! only once it is under [`CLEAR_PERCENT`] of it. Pure: integer comparisons, no IO.

/// The share of a threshold, in percent, a raised condition's measure must fall under to be
/// cleared.
pub const CLEAR_PERCENT: u64 = 90;

/// What an observation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Publish `alert_raised`.
    Raise,
    /// Publish `alert_cleared`.
    Clear,
}

/// Where a measure stands against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// At or over the threshold: raise.
    pub over: bool,
    /// Under [`CLEAR_PERCENT`] of it: clear.
    pub clear: bool,
}

impl Level {
    /// `value` against `threshold`.
    pub fn of(value: u64, threshold: u64) -> Self {
        Self::share(value, 1, threshold.saturating_mul(100))
    }

    /// `part / whole` against `percent` (a `whole` of 0 is nothing to alert on).
    pub fn share(part: u64, whole: u64, percent: u64) -> Self {
        if whole == 0 {
            return Self::NOTHING;
        }
        let part = u128::from(part) * 100;
        let limit = u128::from(percent) * u128::from(whole);
        Self {
            over: part >= limit,
            clear: part * 100 < limit * u128::from(CLEAR_PERCENT),
        }
    }

    /// Nothing to alert on: clears a raised condition.
    pub const NOTHING: Self = Self {
        over: false,
        clear: true,
    };

    /// The condition holds (`true`) or is over (`false`), with no measure in between.
    pub fn holds(holds: bool) -> Self {
        Self {
            over: holds,
            clear: !holds,
        }
    }
}

/// Whether a condition is raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gate {
    raised: bool,
}

impl Gate {
    /// What `level` changes: raised when over unless it is, cleared when under the clear
    /// share if it is.
    pub fn observe(&mut self, level: Level) -> Option<Transition> {
        if !self.raised && level.over {
            self.raised = true;
            Some(Transition::Raise)
        } else if self.raised && level.clear {
            self.raised = false;
            Some(Transition::Clear)
        } else {
            None
        }
    }

    /// Whether the condition is raised.
    pub fn raised(&self) -> bool {
        self.raised
    }

    /// Forgets the condition without clearing it (another node evaluates it from now on).
    pub fn forget(&mut self) {
        self.raised = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_once_at_the_threshold_cleared_once_under_ninety_percent_of_it() {
        let mut gate = Gate::default();
        assert_eq!(gate.observe(Level::of(99, 100)), None);
        assert_eq!(gate.observe(Level::of(100, 100)), Some(Transition::Raise));
        assert_eq!(gate.observe(Level::of(150, 100)), None, "raised once");
        assert_eq!(gate.observe(Level::of(95, 100)), None, "hysteresis");
        assert_eq!(gate.observe(Level::of(90, 100)), None, "90 is not under 90");
        assert_eq!(gate.observe(Level::of(89, 100)), Some(Transition::Clear));
        assert_eq!(gate.observe(Level::of(0, 100)), None, "cleared once");
        assert!(!gate.raised());
    }

    #[test]
    fn shares_compare_exactly() {
        assert_eq!(
            Level::share(9, 10, 90),
            Level {
                over: true,
                clear: false
            }
        );
        assert!(!Level::share(8, 10, 90).over);
        assert!(Level::share(8, 10, 90).clear, "80 % is under 81 %");
        assert!(!Level::share(85, 100, 90).clear, "85 % is not");
        assert_eq!(Level::share(5, 0, 90), Level::NOTHING);
        assert!(Level::share(u64::MAX, u64::MAX, 100).over, "no overflow");
        assert!(Level::share(5, 100, 5).over);
        assert!(Level::share(4, 100, 5).clear, "4 % is under 4.5 %");
        assert!(!Level::share(46, 1000, 5).clear, "4.6 % is not");
    }

    #[test]
    fn a_forgotten_condition_is_raised_again() {
        let mut gate = Gate::default();
        assert_eq!(gate.observe(Level::holds(true)), Some(Transition::Raise));
        gate.forget();
        assert_eq!(gate.observe(Level::holds(true)), Some(Transition::Raise));
        assert_eq!(gate.observe(Level::holds(false)), Some(Transition::Clear));
    }
}
