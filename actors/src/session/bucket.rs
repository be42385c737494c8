//! The session's send rate: a token bucket of `messages_per_second` tokens a second, on
//! tokio's clock so tests can run it on paused time.

use std::time::Duration;

use tokio::time::Instant;

/// Token bucket: `rate` tokens a second, bursts up to `rate`.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_paces() {
        let mut bucket = TokenBucket::new(2);
        let now = Instant::now();
        assert!(bucket.take(now).is_ok());
        assert!(bucket.take(now).is_ok());
        let wait = bucket.take(now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(now + Duration::from_millis(500)).is_ok());
    }
}
