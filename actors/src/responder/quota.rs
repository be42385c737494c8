//! The `llm_quota_exhausted` alert of one responder, as a condition: raised once when a
//! provider's quota runs out, cleared when the first provider answers again.

use std::sync::atomic::{AtomicBool, Ordering};

use super::chain::ChainOutcome;

/// What an outcome changes about the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaAlertChange {
    /// Publish `alert_raised`.
    Raise,
    /// Publish `alert_cleared`.
    Clear,
}

/// Whether the alert is raised and not yet cleared.
#[derive(Debug, Default)]
pub struct QuotaAlert {
    raised: AtomicBool,
}

impl QuotaAlert {
    /// What `outcome` changes: a quota refusal raises the alert unless it is raised; an
    /// answer from the first provider (nothing failed or skipped before it) clears it if it
    /// is. An answer from a fallback clears nothing: the first provider may still be out.
    pub fn observe(&self, outcome: &ChainOutcome) -> Option<QuotaAlertChange> {
        if outcome.quota_exhausted() {
            (!self.raised.swap(true, Ordering::Relaxed)).then_some(QuotaAlertChange::Raise)
        } else if matches!(outcome, ChainOutcome::Answered { failed, .. } if failed.is_empty()) {
            self.raised
                .swap(false, Ordering::Relaxed)
                .then_some(QuotaAlertChange::Clear)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{Completion, LlmError};
    use crate::responder::chain::Attempt;

    fn answered(failed: Vec<Attempt>) -> ChainOutcome {
        ChainOutcome::Answered {
            completion: Completion {
                text: "hi".into(),
                model: "m".into(),
                prompt_tokens: 1,
                completion_tokens: 1,
            },
            provider: "openai".into(),
            cost_micros: 0,
            failed,
        }
    }

    fn attempt(error: Option<LlmError>) -> Attempt {
        Attempt {
            provider: "gemini".into(),
            error,
        }
    }

    fn out_of_quota() -> Attempt {
        attempt(Some(LlmError::QuotaExhausted("insufficient_quota".into())))
    }

    #[test]
    fn raised_once_cleared_once_when_the_first_provider_answers() {
        let alert = QuotaAlert::default();
        assert_eq!(alert.observe(&answered(vec![])), None, "nothing to clear");
        assert_eq!(
            alert.observe(&ChainOutcome::Exhausted {
                failed: vec![out_of_quota()]
            }),
            Some(QuotaAlertChange::Raise)
        );
        // Still out (refused again, or answered by a fallback after it): no new alert.
        assert_eq!(alert.observe(&answered(vec![out_of_quota()])), None);
        // Skipped while it rests, a fallback answers: the condition may hold still.
        assert_eq!(alert.observe(&answered(vec![attempt(None)])), None);
        assert_eq!(
            alert.observe(&ChainOutcome::Exhausted {
                failed: vec![attempt(None)]
            }),
            None
        );
        assert_eq!(
            alert.observe(&answered(vec![])),
            Some(QuotaAlertChange::Clear)
        );
        assert_eq!(alert.observe(&answered(vec![])), None, "cleared once");
        assert_eq!(
            alert.observe(&ChainOutcome::Exhausted {
                failed: vec![out_of_quota()]
            }),
            Some(QuotaAlertChange::Raise),
            "raised again when it runs out again"
        );
    }
}
