//! [`AuthThrottle`]: a client that keeps presenting wrong tokens is locked out for a while.
//!
//! Failed authentications (a bearer token that is neither the admin token nor a tenant's
//! API token) are counted per client IP (an IPv6 client by its /64, which one host usually
//! holds whole) within a window; the `max_failures`-th locks the IP out for the window
//! from then on: its requests are answered 429 with `Retry-After` before their token is
//! looked at, so a guess made meanwhile is never checked. A right token does not reset the
//! count (a tenant's valid token would otherwise make room for more admin guesses). The
//! clients are kept in a bounded cache, each forgotten a window after its last failure.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Clients remembered at most; beyond it the least useful entries are evicted.
const MAX_CLIENTS: u64 = 100_000;

/// How many wrong tokens lock a client out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottleSettings {
    /// Failures within `window` that lock the client out.
    pub max_failures: u32,
    /// The window failures are counted in, and how long a lockout lasts.
    pub window: Duration,
}

impl Default for AuthThrottleSettings {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// One client's recent failures.
#[derive(Debug)]
struct Failures {
    /// When the counted failures began.
    since: Instant,
    /// Failures since then.
    count: u32,
    /// Until when the client is locked out.
    locked_until: Option<Instant>,
}

/// Failed admin authentications per client, and the lockouts they earned.
pub struct AuthThrottle {
    settings: AuthThrottleSettings,
    clients: moka::sync::Cache<IpAddr, Arc<Mutex<Failures>>>,
}

impl AuthThrottle {
    /// A throttle with nobody locked out.
    pub fn new(settings: AuthThrottleSettings) -> Self {
        Self {
            settings,
            clients: moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(settings.window)
                .build(),
        }
    }

    /// `Err(how long still)` while `client` is locked out.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(entry) = self.clients.get(&key(client)) else {
            return Ok(());
        };
        let failures = entry.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.locked_until {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Err(left),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Counts a failed authentication of `client`; the one that reaches the limit locks it
    /// out.
    pub fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        let entry = self.clients.get_with(key(client), || {
            Arc::new(Mutex::new(Failures {
                since: now,
                count: 0,
                locked_until: None,
            }))
        });
        let mut failures = entry.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(failures.since) >= self.settings.window {
            failures.since = now;
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        if failures.count >= self.settings.max_failures {
            failures.locked_until = Some(now + self.settings.window);
            failures.since = now;
            failures.count = 0;
            tracing::warn!(
                %client,
                lockout_secs = self.settings.window.as_secs(),
                "admin api: too many wrong tokens, client locked out"
            );
            metrics::counter!("salesboy_admin_auth_lockouts_total").increment(1);
        }
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn locked_out_after_max_failures_then_recovers() {
        let throttle = AuthThrottle::new(AuthThrottleSettings {
            max_failures: 3,
            window: Duration::from_secs(60),
        });
        let (client, other) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for _ in 0..2 {
            throttle.failed(client);
            assert_eq!(throttle.check(client), Ok(()));
        }
        throttle.failed(client);
        assert_eq!(throttle.check(client), Err(Duration::from_secs(60)));
        assert_eq!(throttle.check(other), Ok(()), "others are not locked out");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(throttle.check(client), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(throttle.check(client), Ok(()), "recovers after the window");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_beyond_the_window_never_lock_out() {
        let throttle = AuthThrottle::new(AuthThrottleSettings {
            max_failures: 2,
            window: Duration::from_secs(10),
        });
        let client = ip("10.0.0.1");
        for _ in 0..5 {
            throttle.failed(client);
            assert_eq!(throttle.check(client), Ok(()));
            tokio::time::advance(Duration::from_secs(11)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_client_is_counted_by_its_64() {
        let throttle = AuthThrottle::new(AuthThrottleSettings {
            max_failures: 2,
            window: Duration::from_secs(10),
        });
        throttle.failed(ip("2001:db8:1:2::1"));
        throttle.failed(ip("2001:db8:1:2::ffff"));
        assert!(throttle.check(ip("2001:db8:1:2::42")).is_err());
        assert_eq!(throttle.check(ip("2001:db8:1:3::1")), Ok(()));
        throttle.failed(ip("::ffff:10.0.0.9"));
        throttle.failed(ip("10.0.0.9"));
        assert!(throttle.check(ip("10.0.0.9")).is_err(), "mapped is the v4");
    }
}
