//! The pace of a tenant's replies: at most `rate` started per second, a second's worth at
//! once. A reply over the pace waits for its turn (its messages are stored; the bot slows
//! down, nothing is dropped).

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Turns for replies at a steady rate (the generic cell rate algorithm: one theoretical
/// arrival time).
#[derive(Debug)]
pub(super) struct Pace {
    /// The time between two turns.
    interval: Duration,
    /// How far ahead of the steady rate turns may run: one second's worth.
    burst: Duration,
    /// When the next turn would be, at the steady rate.
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// `per_second` turns a second (at least one).
    pub(super) fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            interval: Duration::from_secs(1) / per_second,
            burst: Duration::from_secs(1),
            next: Mutex::new(None),
        }
    }

    /// Takes the next turn; when it may start (`now` or later).
    pub(super) fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock();
        let steady = next.map_or(now, |next| next.max(now));
        *next = Some(steady + self.interval);
        steady
            .checked_sub(self.burst)
            .map_or(now, |earliest| earliest.max(now))
    }

    /// Waits for the next turn.
    pub(super) async fn turn(&self) {
        let at = self.reserve(Instant::now());
        if at > Instant::now() {
            metrics::counter!("salesboy_replies_paced_total").increment(1);
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seconds_worth_goes_at_once_then_the_steady_rate() {
        let pace = Pace::new(4);
        let now = Instant::now();
        let waits: Vec<Duration> = (0..10).map(|_| pace.reserve(now) - now).collect();
        let ms = |ms| Duration::from_millis(ms);
        // Turns at 0, 250, … 2250 ms at the steady rate, a second earlier with the burst.
        assert_eq!(waits, [0, 0, 0, 0, 0, 250, 500, 750, 1000, 1250].map(ms));
        // A quiet spell refills the burst.
        let later = now + Duration::from_secs(10);
        assert_eq!(pace.reserve(later), later);
    }
}
