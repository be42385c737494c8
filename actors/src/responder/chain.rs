//! The provider chain: try each LLM provider in order, skip the ones whose circuit is open
//! or whose budget is spent, fall through on failure.
//!
//! - rate limited (429 per minute): the provider rests for the server's delay (default 10 s);
//! - quota exhausted (daily quota, `insufficient_quota`): it rests for an hour and the outcome
//!   asks for an alert;
//! - timeouts, 5xx and other failures: after [`FAILURES_TO_OPEN`] in a row it rests for
//!   [`FAILURE_REST`];
//! - a request that would exceed the provider's requests/tokens per minute is not sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{Completion, LlmError, LlmProvider, Prompt};

/// Consecutive failures that open a provider's circuit.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open circuit rests after repeated failures.
pub const FAILURE_REST: Duration = Duration::from_secs(30);
/// How long a rate-limited provider rests when the server gave no delay.
pub const DEFAULT_RATE_LIMIT_REST: Duration = Duration::from_secs(10);
/// How long a provider whose quota is exhausted rests.
pub const QUOTA_REST: Duration = Duration::from_secs(3600);

/// One provider's attempt that did not produce the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The provider's name.
    pub provider: String,
    /// Why it did not answer; `None` means it was skipped (circuit open or budget spent).
    pub error: Option<LlmError>,
}

/// What the chain produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    /// A provider answered.
    Answered {
        /// The answer.
        completion: Completion,
        /// The provider's name.
        provider: String,
        /// Estimated cost in millionths of a dollar.
        cost_micros: u64,
        /// Providers tried before it.
        failed: Vec<Attempt>,
    },
    /// No provider answered.
    Exhausted {
        /// Every provider's attempt.
        failed: Vec<Attempt>,
    },
}

impl ChainOutcome {
    /// Whether some provider ran out of quota (an operator should know).
    pub fn quota_exhausted(&self) -> bool {
        let failed = match self {
            Self::Answered { failed, .. } | Self::Exhausted { failed } => failed,
        };
        failed
            .iter()
            .any(|a| matches!(a.error, Some(LlmError::QuotaExhausted(_))))
    }
}

#[derive(Debug)]
struct SlotState {
    open_until: Option<Instant>,
    consecutive_failures: u32,
    window_start: Instant,
    requests_in_window: u32,
    tokens_in_window: u64,
}

struct Slot {
    provider: Arc<dyn LlmProvider>,
    state: Mutex<SlotState>,
}

/// A provider's circuit as shown by `Observe`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProviderStatus {
    /// The provider's name.
    pub name: String,
    /// The model.
    pub model: String,
    /// Whether the circuit is open (the provider is resting).
    pub open: bool,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// A tenant's providers in fallback order, with their circuits and budgets.
pub struct ProviderChain {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for ProviderChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| s.provider.name()))
            .finish()
    }
}

impl ProviderChain {
    /// A chain over these providers (tried in this order).
    pub fn new(providers: Vec<Arc<dyn LlmProvider>>) -> Self {
        let now = Instant::now();
        let slots = providers
            .into_iter()
            .map(|provider| Slot {
                provider,
                state: Mutex::new(SlotState {
                    open_until: None,
                    consecutive_failures: 0,
                    window_start: now,
                    requests_in_window: 0,
                    tokens_in_window: 0,
                }),
            })
            .collect();
        Self { slots }
    }

    /// Whether there is no provider at all (the offline responder answers).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Each provider's circuit.
    pub fn status(&self) -> Vec<ProviderStatus> {
        let now = Instant::now();
        self.slots
            .iter()
            .map(|slot| {
                let state = lock(&slot.state);
                ProviderStatus {
                    name: slot.provider.name().to_owned(),
                    model: slot.provider.model().to_owned(),
                    open: state.open_until.is_some_and(|until| until > now),
                    consecutive_failures: state.consecutive_failures,
                }
            })
            .collect()
    }

    /// Asks the providers in order until one answers.
    pub async fn complete(&self, prompt: &Prompt) -> ChainOutcome {
        let estimated_tokens = estimate_tokens(prompt);
        let mut failed = Vec::new();
        for slot in &self.slots {
            let name = slot.provider.name().to_owned();
            if !admit(slot, estimated_tokens) {
                failed.push(Attempt {
                    provider: name,
                    error: None,
                });
                continue;
            }
            match slot.provider.complete(prompt).await {
                Ok(completion) => {
                    let mut state = lock(&slot.state);
                    state.consecutive_failures = 0;
                    let used = completion.prompt_tokens + completion.completion_tokens;
                    state.tokens_in_window =
                        state.tokens_in_window.saturating_sub(estimated_tokens) + used;
                    drop(state);
                    let cost_micros = slot
                        .provider
                        .cost_micros(completion.prompt_tokens, completion.completion_tokens);
                    return ChainOutcome::Answered {
                        completion,
                        provider: name,
                        cost_micros,
                        failed,
                    };
                }
                Err(error) => {
                    rest_after(slot, &error);
                    failed.push(Attempt {
                        provider: name,
                        error: Some(error),
                    });
                }
            }
        }
        ChainOutcome::Exhausted { failed }
    }
}

fn lock(state: &Mutex<SlotState>) -> std::sync::MutexGuard<'_, SlotState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the provider may be called now; if so, its budget is charged.
fn admit(slot: &Slot, estimated_tokens: u64) -> bool {
    let now = Instant::now();
    let budget = slot.provider.budget();
    let mut state = lock(&slot.state);
    if state.open_until.is_some_and(|until| until > now) {
        return false;
    }
    if now.duration_since(state.window_start) >= Duration::from_secs(60) {
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

fn rest_after(slot: &Slot, error: &LlmError) {
    let now = Instant::now();
    let mut state = lock(&slot.state);
    state.consecutive_failures += 1;
    let rest = match error {
        LlmError::RateLimited { retry_after } => {
            Some(retry_after.unwrap_or(DEFAULT_RATE_LIMIT_REST))
        }
        LlmError::QuotaExhausted(_) => Some(QUOTA_REST),
        LlmError::Blocked(_) => {
            // About this prompt, not the provider.
            state.consecutive_failures -= 1;
            None
        }
        LlmError::Timeout
        | LlmError::Unavailable(_)
        | LlmError::Failed(_)
        | LlmError::TooLarge { .. } => {
            (state.consecutive_failures >= FAILURES_TO_OPEN).then_some(FAILURE_REST)
        }
    };
    if let Some(rest) = rest {
        state.open_until = Some(now + rest);
    }
}

/// A rough token count (4 characters a token), for budgets only.
pub fn estimate_tokens(prompt: &Prompt) -> u64 {
    let chars = prompt.system.len()
        + prompt.question.len()
        + prompt.passages.iter().map(String::len).sum::<usize>()
        + prompt.history.iter().map(|t| t.text.len()).sum::<usize>();
    (chars as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Budget;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Scripted {
        name: &'static str,
        calls: AtomicU32,
        answer: Result<&'static str, LlmError>,
        budget: Budget,
    }

    impl Scripted {
        fn new(name: &'static str, answer: Result<&'static str, LlmError>) -> Arc<Self> {
            Arc::new(Self {
                name,
                calls: AtomicU32::new(0),
                answer,
                budget: Budget::default(),
            })
        }
    }

    #[async_trait]
    impl LlmProvider for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn model(&self) -> &str {
            "m"
        }
        fn budget(&self) -> Budget {
            self.budget
        }
        fn cost_micros(&self, p: u64, c: u64) -> u64 {
            p + 2 * c
        }
        async fn complete(&self, _prompt: &Prompt) -> Result<Completion, LlmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer.clone().map(|text| Completion {
                text: text.to_owned(),
                model: "m".into(),
                prompt_tokens: 10,
                completion_tokens: 5,
            })
        }
    }

    fn prompt() -> Prompt {
        Prompt {
            system: "s".into(),
            passages: vec![],
            history: vec![],
            question: "q".into(),
        }
    }

    #[tokio::test]
    async fn falls_through_on_rate_limit_and_rests_the_limited_provider() {
        let limited = Scripted::new(
            "gemini",
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(13)),
            }),
        );
        let fallback = Scripted::new("openai", Ok("hello"));
        let chain = ProviderChain::new(vec![limited.clone(), fallback.clone()]);

        let ChainOutcome::Answered {
            completion,
            provider,
            cost_micros,
            failed,
        } = chain.complete(&prompt()).await
        else {
            panic!("expected an answer");
        };
        assert_eq!(
            (completion.text.as_str(), provider.as_str(), cost_micros),
            ("hello", "openai", 20)
        );
        assert_eq!(failed.len(), 1);
        assert!(chain.status()[0].open);

        // While it rests, the limited provider is skipped without a call.
        chain.complete(&prompt()).await;
        assert_eq!(limited.calls.load(Ordering::SeqCst), 1);
        assert_eq!(fallback.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn circuit_closes_after_its_rest() {
        let limited = Scripted::new(
            "gemini",
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            }),
        );
        let chain = ProviderChain::new(vec![limited.clone()]);
        assert!(matches!(
            chain.complete(&prompt()).await,
            ChainOutcome::Exhausted { .. }
        ));
        assert!(chain.status()[0].open);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!chain.status()[0].open);
        chain.complete(&prompt()).await;
        assert_eq!(limited.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn quota_exhaustion_is_reported_for_an_alert() {
        let broke = Scripted::new(
            "openai",
            Err(LlmError::QuotaExhausted("insufficient_quota".into())),
        );
        let chain = ProviderChain::new(vec![broke]);
        let outcome = chain.complete(&prompt()).await;
        assert!(matches!(outcome, ChainOutcome::Exhausted { .. }));
        assert!(outcome.quota_exhausted());
    }

    #[tokio::test]
    async fn repeated_failures_open_the_circuit() {
        let flaky = Scripted::new("x", Err(LlmError::Unavailable("503".into())));
        let chain = ProviderChain::new(vec![flaky.clone()]);
        for _ in 0..FAILURES_TO_OPEN {
            assert!(!chain.status()[0].open);
            chain.complete(&prompt()).await;
        }
        assert!(chain.status()[0].open);
        chain.complete(&prompt()).await;
        assert_eq!(flaky.calls.load(Ordering::SeqCst), FAILURES_TO_OPEN);
    }

    #[tokio::test]
    async fn requests_per_minute_budget_is_enforced() {
        let limited = Arc::new(Scripted {
            name: "x",
            calls: AtomicU32::new(0),
            answer: Ok("a"),
            budget: Budget {
                requests_per_minute: Some(2),
                tokens_per_minute: None,
            },
        });
        let chain = ProviderChain::new(vec![limited.clone()]);
        for _ in 0..3 {
            chain.complete(&prompt()).await;
        }
        assert_eq!(limited.calls.load(Ordering::SeqCst), 2);
    }
}
