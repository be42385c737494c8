//! The tenant's monthly LLM spend cap, and its `llm_spend_cap_reached` alert as a condition.
//!
//! [`SpendCap`] knows what the tenant spent on LLM calls this calendar month (UTC): read
//! from the store ([`UsageStore::llm_usage_totals`](crate::store::UsageStore::llm_usage_totals))
//! when the responder first asks in a month, then kept up to date with the calls this
//! responder makes (a tenant is hosted by one node at a time, and a new host reads the store
//! again). Once the spend reaches the cap, no provider is called: the offline responder
//! answers. Replies already under way may still finish, so the spend can pass the cap by
//! their cost. The alert is raised once when the cap is reached, cleared once the tenant is
//! under its cap again (the month turned, or the cap was raised).

use std::sync::atomic::{AtomicBool, Ordering};

use salesboy_protocol::TenantId;
use salesboy_protocol::month::Month;
use tokio::sync::Mutex;

use super::quota::QuotaAlertChange;
use crate::store::{Store, StoreError};

/// What the tenant spent in one month.
#[derive(Debug, Clone, Copy)]
struct MonthSpend {
    /// The month's first millisecond.
    start_ms: i64,
    /// Millionths of a US dollar.
    spent_micros: i64,
}

/// The cap was reached: the cap and the month's spend, in millionths of a US dollar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCap {
    /// The cap.
    pub cap_micros: i64,
    /// Spent this month.
    pub spent_micros: i64,
}

/// A tenant's monthly spend against its cap.
#[derive(Debug)]
pub struct SpendCap {
    cap_micros: Option<i64>,
    month: Mutex<Option<MonthSpend>>,
    raised: AtomicBool,
}

impl SpendCap {
    /// A cap of `cap_micros` (`None`: no cap).
    pub fn new(cap_micros: Option<i64>) -> Self {
        Self {
            cap_micros,
            month: Mutex::new(None),
            raised: AtomicBool::new(false),
        }
    }

    /// `Some` when the tenant has reached its cap in the month of `now_ms`; the store is
    /// read once per month.
    pub async fn check(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Option<OverCap>, StoreError> {
        let Some(cap_micros) = self.cap_micros else {
            return Ok(None);
        };
        let start_ms = Month::containing(now_ms).start_ms();
        let mut month = self.month.lock().await;
        let spent_micros = match *month {
            Some(spend) if spend.start_ms == start_ms => spend.spent_micros,
            _ => {
                let spent_micros = store.llm_usage_totals(tenant, start_ms).await?.cost_micros;
                *month = Some(MonthSpend {
                    start_ms,
                    spent_micros,
                });
                spent_micros
            }
        };
        Ok((spent_micros >= cap_micros).then_some(OverCap {
            cap_micros,
            spent_micros,
        }))
    }

    /// Counts a call of `cost_micros` that finished at `at_ms`.
    pub async fn spent(&self, cost_micros: i64, at_ms: i64) {
        let start_ms = Month::containing(at_ms).start_ms();
        if let Some(spend) = self.month.lock().await.as_mut()
            && spend.start_ms == start_ms
        {
            spend.spent_micros = spend.spent_micros.saturating_add(cost_micros);
        }
    }

    /// Whether the alert is raised and not yet cleared.
    pub fn raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// This cap with the alert raised if `raised` (a reconfigured responder keeps the
    /// alert of the one it replaces, so the alert is cleared once the new cap lets it
    /// answer).
    pub fn with_alert_raised(self, raised: bool) -> Self {
        self.raised.store(raised, Ordering::Relaxed);
        self
    }

    /// What a check's outcome changes about the alert: raised when over the cap unless it
    /// is, cleared when under it if it is.
    pub fn observe(&self, over: bool) -> Option<QuotaAlertChange> {
        if over {
            (!self.raised.swap(true, Ordering::Relaxed)).then_some(QuotaAlertChange::Raise)
        } else {
            self.raised
                .swap(false, Ordering::Relaxed)
                .then_some(QuotaAlertChange::Clear)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alert_is_raised_once_and_cleared_once() {
        let cap = SpendCap::new(Some(10));
        assert_eq!(cap.observe(false), None, "nothing to clear");
        assert_eq!(cap.observe(true), Some(QuotaAlertChange::Raise));
        assert_eq!(cap.observe(true), None, "raised once");
        assert!(cap.raised());
        assert_eq!(cap.observe(false), Some(QuotaAlertChange::Clear));
        assert_eq!(cap.observe(false), None, "cleared once");
        // A reconfigured responder carries the alert over, and clears it when under.
        let replaced = SpendCap::new(Some(20)).with_alert_raised(true);
        assert_eq!(replaced.observe(true), None);
        assert_eq!(replaced.observe(false), Some(QuotaAlertChange::Clear));
    }
}
