//! The provider chain: try each LLM provider in order, skip the ones whose circuit is open
//! or whose budget is spent, fall through on failure.
//!
//! Each provider has a [`ProviderGate`] (its circuit and per-minute budgets, with the
//! rules in [`super::gate`]), resting [`FAILURE_REST`] after [`FAILURES_TO_OPEN`] failures
//! in a row. A blocked prompt (`LlmError::Blocked`) is about the prompt, not the provider:
//! it does not count against the provider.

use std::sync::Arc;

use super::gate::{FAILURE_REST, ProviderGate};
use crate::ports::{Completion, LlmError, LlmProvider, Prompt};

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

struct Slot {
    provider: Arc<dyn LlmProvider>,
    gate: ProviderGate,
}

/// A provider's circuit and per-minute budget as shown by `Observe`.
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
    /// Its budget: requests a minute (`None`: unlimited).
    pub requests_per_minute: Option<u32>,
    /// Its budget: tokens a minute, prompt and completion (`None`: unlimited).
    pub tokens_per_minute: Option<u64>,
    /// Requests sent in the current minute window.
    pub requests_this_minute: u32,
    /// Tokens charged to the current minute window.
    pub tokens_this_minute: u64,
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
        let slots = providers
            .into_iter()
            .map(|provider| Slot {
                provider,
                gate: ProviderGate::new(FAILURE_REST),
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
        self.slots
            .iter()
            .map(|slot| {
                let budget = slot.provider.budget();
                let (requests, tokens) = slot.gate.window_usage();
                ProviderStatus {
                    name: slot.provider.name().to_owned(),
                    model: slot.provider.model().to_owned(),
                    open: slot.gate.is_open(),
                    consecutive_failures: slot.gate.consecutive_failures(),
                    requests_per_minute: budget.requests_per_minute,
                    tokens_per_minute: budget.tokens_per_minute,
                    requests_this_minute: requests,
                    tokens_this_minute: tokens,
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
            if !slot.gate.admit(slot.provider.budget(), estimated_tokens) {
                failed.push(Attempt {
                    provider: name,
                    error: None,
                });
                continue;
            }
            match slot.provider.complete(prompt).await {
                Ok(completion) => {
                    let used = completion.prompt_tokens + completion.completion_tokens;
                    slot.gate.succeeded(estimated_tokens, used);
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
                    if !matches!(error, LlmError::Blocked(_)) {
                        slot.gate.failed(&error);
                    }
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
    use crate::responder::gate::FAILURES_TO_OPEN;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

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
    async fn a_blocked_prompt_does_not_count_against_the_provider() {
        let strict = Scripted::new("x", Err(LlmError::Blocked("safety".into())));
        let chain = ProviderChain::new(vec![strict.clone()]);
        for _ in 0..FAILURES_TO_OPEN + 1 {
            chain.complete(&prompt()).await;
        }
        assert_eq!(
            (
                chain.status()[0].open,
                chain.status()[0].consecutive_failures
            ),
            (false, 0)
        );
        assert_eq!(strict.calls.load(Ordering::SeqCst), FAILURES_TO_OPEN + 1);
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
