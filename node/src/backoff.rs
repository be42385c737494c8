//! Retries with exponential backoff and jitter, in one place ([`backon`]).
//!
//! Jitter spreads the retries of nodes that failed together (a cluster starting at once and
//! racing to create the same KV bucket), so they do not retry in lockstep. Each delay is the
//! exponential step plus a random part of up to as much again.
//!
//! Retry policies of the node's own code are [`Backoff`] constants beside their use (e.g. the
//! NATS bus's KV bucket creation and KV writes).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// How an operation is retried: up to `retries` times after the first attempt, waiting
/// `first`, then twice as long each time up to `max`, each wait plus up to as much again of
/// random jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry (without jitter).
    pub first: Duration,
    /// The longest wait (without jitter).
    pub max: Duration,
    /// Retries after the first attempt.
    pub retries: usize,
}

impl Backoff {
    /// The delays of one run of retries, jitter included (for callers that loop themselves).
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        self.builder().build()
    }

    /// Runs `operation` until it succeeds, fails with an error `retryable` refuses, or the
    /// retries run out; then returns its last result. Each retry is logged at debug level
    /// with `what` and the error.
    pub async fn retry<T, E, F, Fut>(
        self,
        what: &'static str,
        operation: F,
        retryable: impl FnMut(&E) -> bool,
    ) -> Result<T, E>
    where
        E: fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        operation
            .retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(retryable)
            .notify(|error: &E, delay: Duration| {
                tracing::debug!(what, error = %error, ?delay, "retrying");
            })
            .await
    }

    fn builder(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_max_times(self.retries)
            .with_jitter()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const POLICY: Backoff = Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
        retries: 4,
    };

    #[test]
    fn delays_double_up_to_the_cap_with_at_most_as_much_again_of_jitter() {
        let delays: Vec<Duration> = POLICY.delays().collect();
        assert_eq!(delays.len(), 4);
        for (delay, step) in delays.iter().zip([10, 20, 40, 40]) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step && *delay <= step * 2,
                "{delay:?} for {step:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_is_retryable_and_gives_up_after_the_last_retry() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), String> = POLICY
            .retry(
                "test",
                || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err("busy".to_owned())
                },
                |e: &String| e == "busy",
            )
            .await;
        assert_eq!(result, Err("busy".to_owned()));
        assert_eq!(calls.load(Ordering::Relaxed), 5);

        calls.store(0, Ordering::Relaxed);
        let result: Result<(), String> = POLICY
            .retry(
                "test",
                || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err("final".to_owned())
                },
                |e: &String| e == "busy",
            )
            .await;
        assert_eq!(result, Err("final".to_owned()));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
