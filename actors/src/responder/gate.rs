//! A provider's gate: whether a request may go to it now (its circuit is closed and the
//! request fits its requests and tokens per minute), and what its answers do to it.
//!
//! One gate per provider, shared by the chat chain ([`super::chain`]) and the node's
//! embedding chain:
//! - rate limited (429 per minute): the provider rests for the server's delay (default
//!   [`DEFAULT_RATE_LIMIT_REST`]);
//! - quota exhausted (daily quota, `insufficient_quota`): it rests [`QUOTA_REST`];
//! - any other failure: after [`FAILURES_TO_OPEN`] in a row it rests for the gate's failure
//!   rest (the chat chain's is [`FAILURE_REST`]);
//! - a request that would exceed the provider's requests/tokens per minute is not admitted;
//!   the budgets count in windows of a minute from the first request.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{Budget, LlmError};

/// Consecutive failures that open a provider's circuit.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open circuit rests after repeated failures (the chat chain's rest).
pub const FAILURE_REST: Duration = Duration::from_secs(30);
/// How long a rate-limited provider rests when the server gave no delay.
pub const DEFAULT_RATE_LIMIT_REST: Duration = Duration::from_secs(10);
/// How long a provider whose quota is exhausted rests.
pub const QUOTA_REST: Duration = Duration::from_secs(3600);

/// The length of a budget window.
const BUDGET_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct GateState {
    open_until: Option<Instant>,
    consecutive_failures: u32,
    window_start: Instant,
    requests_in_window: u32,
    tokens_in_window: u64,
}

/// One provider's circuit and per-minute budget window, on tokio's clock (tests may pause
/// it).
#[derive(Debug)]
pub struct ProviderGate {
    failure_rest: Duration,
    state: Mutex<GateState>,
}

impl ProviderGate {
    /// A closed gate with a fresh budget window; the circuit rests `failure_rest` after
    /// [`FAILURES_TO_OPEN`] failures in a row.
    pub fn new(failure_rest: Duration) -> Self {
        Self {
            failure_rest,
            state: Mutex::new(GateState {
                open_until: None,
                consecutive_failures: 0,
                window_start: Instant::now(),
                requests_in_window: 0,
                tokens_in_window: 0,
            }),
        }
    }

    /// Whether the circuit is open (the provider is resting).
    pub fn is_open(&self) -> bool {
        let now = Instant::now();
        self.lock().open_until.is_some_and(|until| until > now)
    }

    /// Failures in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }

    /// The requests and tokens charged to the current minute window (none once it is over).
    pub fn window_usage(&self) -> (u32, u64) {
        let now = Instant::now();
        let state = self.lock();
        if now.duration_since(state.window_start) >= BUDGET_WINDOW {
            (0, 0)
        } else {
            (state.requests_in_window, state.tokens_in_window)
        }
    }

    /// Whether a request of about `estimated_tokens` may be sent now under `budget`; if so,
    /// the request and its tokens are charged to the current window.
    pub fn admit(&self, budget: Budget, estimated_tokens: u64) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        if state.open_until.is_some_and(|until| until > now) {
            return false;
        }
        if now.duration_since(state.window_start) >= BUDGET_WINDOW {
            state.window_start = now;
            state.requests_in_window = 0;
            state.tokens_in_window = 0;
        }
        if budget
            .requests_per_minute
            .is_some_and(|max| state.requests_in_window >= max)
        {
            return false;
        }
        if budget
            .tokens_per_minute
            .is_some_and(|max| state.tokens_in_window + estimated_tokens > max)
        {
            return false;
        }
        state.requests_in_window += 1;
        state.tokens_in_window += estimated_tokens;
        true
    }

    /// An admitted request answered: the failures in a row are forgotten, and the window is
    /// charged the `used_tokens` the provider counted instead of the `estimated_tokens`.
    pub fn succeeded(&self, estimated_tokens: u64, used_tokens: u64) {
        let mut state = self.lock();
        state.consecutive_failures = 0;
        state.tokens_in_window =
            state.tokens_in_window.saturating_sub(estimated_tokens) + used_tokens;
    }

    /// An admitted request failed with `error`: it counts as a failure in a row, and the
    /// circuit opens for the rest the error calls for, if any.
    pub fn failed(&self, error: &LlmError) {
        let now = Instant::now();
        let mut state = self.lock();
        state.consecutive_failures += 1;
        let rest = match error {
            LlmError::RateLimited { retry_after } => {
                Some(retry_after.unwrap_or(DEFAULT_RATE_LIMIT_REST))
            }
            LlmError::QuotaExhausted(_) => Some(QUOTA_REST),
            LlmError::Blocked(_)
            | LlmError::Timeout
            | LlmError::Unavailable(_)
            | LlmError::Failed(_)
            | LlmError::TooLarge { .. } => {
                (state.consecutive_failures >= FAILURES_TO_OPEN).then_some(self.failure_rest)
            }
        };
        if let Some(rest) = rest {
            state.open_until = Some(now + rest);
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNLIMITED: Budget = Budget {
        requests_per_minute: None,
        tokens_per_minute: None,
    };

    fn rate_limited(seconds: u64) -> LlmError {
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(seconds)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_rests_for_the_servers_delay_then_the_circuit_closes() {
        let gate = ProviderGate::new(FAILURE_REST);
        assert!(gate.admit(UNLIMITED, 1));
        gate.failed(&rate_limited(2));
        assert!(gate.is_open());
        assert!(!gate.admit(UNLIMITED, 1));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!gate.is_open());
        assert!(gate.admit(UNLIMITED, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_without_a_delay_and_an_exhausted_quota_rest_their_defaults() {
        let cases = [
            (
                LlmError::RateLimited { retry_after: None },
                DEFAULT_RATE_LIMIT_REST,
            ),
            (
                LlmError::QuotaExhausted("insufficient_quota".into()),
                QUOTA_REST,
            ),
        ];
        for (error, rest) in cases {
            let gate = ProviderGate::new(FAILURE_REST);
            gate.failed(&error);
            tokio::time::advance(rest - Duration::from_millis(1)).await;
            assert!(gate.is_open(), "{error:?}");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(!gate.is_open(), "{error:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_open_the_circuit_for_the_failure_rest() {
        let rest = Duration::from_secs(60);
        let gate = ProviderGate::new(rest);
        for failures in 1..=FAILURES_TO_OPEN {
            assert!(!gate.is_open());
            assert!(gate.admit(UNLIMITED, 1));
            gate.failed(&LlmError::Unavailable("503".into()));
            assert_eq!(gate.consecutive_failures(), failures);
        }
        assert!(gate.is_open());
        assert!(!gate.admit(UNLIMITED, 1));
        tokio::time::advance(rest).await;
        assert!(gate.admit(UNLIMITED, 1));
    }

    #[tokio::test]
    async fn an_answer_forgets_the_failures_in_a_row() {
        let gate = ProviderGate::new(FAILURE_REST);
        for _ in 1..FAILURES_TO_OPEN {
            gate.failed(&LlmError::Timeout);
        }
        gate.succeeded(1, 1);
        assert_eq!(gate.consecutive_failures(), 0);
        gate.failed(&LlmError::Timeout);
        assert!(!gate.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_budget_is_enforced_per_window() {
        let gate = ProviderGate::new(FAILURE_REST);
        let budget = Budget {
            requests_per_minute: Some(2),
            tokens_per_minute: None,
        };
        assert!(gate.admit(budget, 1));
        assert!(gate.admit(budget, 1));
        assert!(!gate.admit(budget, 1));
        // A refusal is not a failure: the circuit stays closed.
        assert!(!gate.is_open());
        tokio::time::advance(BUDGET_WINDOW).await;
        assert!(gate.admit(budget, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_usage_is_what_the_current_minute_charged() {
        let gate = ProviderGate::new(FAILURE_REST);
        assert_eq!(gate.window_usage(), (0, 0));
        assert!(gate.admit(UNLIMITED, 50));
        assert!(gate.admit(UNLIMITED, 30));
        gate.succeeded(30, 10);
        assert_eq!(gate.window_usage(), (2, 60));
        tokio::time::advance(BUDGET_WINDOW).await;
        assert_eq!(gate.window_usage(), (0, 0));
    }

    #[tokio::test]
    async fn tokens_per_minute_count_what_the_provider_used() {
        let gate = ProviderGate::new(FAILURE_REST);
        let budget = Budget {
            requests_per_minute: None,
            tokens_per_minute: Some(100),
        };
        assert!(gate.admit(budget, 60));
        // The estimate was high: 20 tokens were used, 80 remain.
        gate.succeeded(60, 20);
        assert!(gate.admit(budget, 80));
        assert!(!gate.admit(budget, 1));
    }
}
