//! The conditions this node raised and has not cleared, read from the alert events it
//! publishes (so every alert, the actors' and the evaluator's, goes through one path).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use salesboy_protocol::TenantId;
use salesboy_protocol::events::{AlertKind, Event};
use salesboy_protocol::subjects::EventKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A condition raised and not cleared, as `/api/health` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActiveAlert {
    /// The alert's name (`node_memory_high`, `llm_quota_exhausted`, …).
    pub alert: String,
    /// The tenant, for a tenant's alert.
    pub tenant: Option<String>,
    /// When it was raised, milliseconds since the Unix epoch.
    pub raised_ms: i64,
    /// The `alert_raised` event's detail.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// What tells one condition from another: its kind, tenant and scope.
type AlertKey = (AlertKind, Option<String>, Option<String>);

/// The conditions raised on this node and not cleared.
#[derive(Debug, Default)]
pub struct ActiveAlerts {
    raised: Mutex<BTreeMap<AlertKey, ActiveAlert>>,
}

impl ActiveAlerts {
    /// Notes a published event: an `alert_raised` condition is added, an `alert_cleared`
    /// removes it; anything else (and an alert that is an occurrence) is ignored.
    pub fn observe(&self, event: &Event) {
        let raised = match event.kind {
            EventKind::AlertRaised => true,
            EventKind::AlertCleared => false,
            _ => return,
        };
        let Some(kind) = event.detail["alert"]
            .as_str()
            .and_then(AlertKind::from_name)
        else {
            return;
        };
        if !kind.is_condition() {
            return;
        }
        let scope = kind
            .scope_field()
            .and_then(|field| event.detail[field].as_str())
            .map(str::to_owned);
        let tenant = event.tenant.as_ref().map(ToString::to_string);
        let key = (kind, tenant.clone(), scope);
        let mut alerts = self.lock();
        if raised {
            alerts.entry(key).or_insert_with(|| ActiveAlert {
                alert: kind.as_str().to_owned(),
                tenant,
                raised_ms: event.at_ms,
                detail: event.detail.clone(),
            });
        } else {
            alerts.remove(&key);
        }
    }

    /// Removes the tenant-less conditions of `kind` without an event (another node
    /// evaluates them from now on).
    pub fn forget(&self, kind: AlertKind) {
        self.lock()
            .retain(|(k, tenant, _), _| *k != kind || tenant.is_some());
    }

    /// Forgets, without an event, the tenant conditions of tenants not in `hosted` (stopped,
    /// or moved to another node, which raises them again if they still hold).
    pub fn keep_tenants(&self, hosted: &[TenantId]) {
        self.lock().retain(|(_, tenant, _), _| {
            tenant
                .as_deref()
                .is_none_or(|t| hosted.iter().any(|h| h.as_str() == t))
        });
    }

    /// Every condition raised, by kind, tenant and scope.
    pub fn list(&self) -> Vec<ActiveAlert> {
        self.lock().values().cloned().collect()
    }

    /// How many conditions of `kind` are raised.
    pub fn count(&self, kind: AlertKind) -> usize {
        self.lock().keys().filter(|(k, _, _)| *k == kind).count()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<AlertKey, ActiveAlert>> {
        self.raised.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_are_kept_from_raise_to_clear_by_tenant_and_scope() {
        let alerts = ActiveAlerts::default();
        let acme = TenantId::new("acme").unwrap();
        let sends = json!({"alert": "error_rate_high", "source": "sends", "node": "n1"});
        let llm = json!({"alert": "error_rate_high", "source": "llm_calls", "node": "n1"});
        alerts.observe(&Event::cluster(EventKind::AlertRaised, 1, sends.clone()));
        alerts.observe(&Event::cluster(EventKind::AlertRaised, 2, llm));
        alerts.observe(&Event::tenant(
            EventKind::AlertRaised,
            acme.clone(),
            3,
            json!({"alert": "llm_quota_exhausted", "node": "n1"}),
        ));
        // Occurrences and other events are not conditions.
        alerts.observe(&Event::tenant(
            EventKind::AlertRaised,
            acme.clone(),
            4,
            json!({"alert": "node_at_capacity", "max_tenants": 1}),
        ));
        alerts.observe(&Event::cluster(EventKind::NodeJoined, 5, json!({})));
        assert_eq!(alerts.count(AlertKind::ErrorRateHigh), 2);
        assert_eq!(alerts.list().len(), 3);

        alerts.observe(&Event::cluster(
            EventKind::AlertCleared,
            6,
            json!({"alert": "error_rate_high", "source": "llm_calls", "node": "n1"}),
        ));
        let left = alerts.list();
        assert_eq!(alerts.count(AlertKind::ErrorRateHigh), 1);
        assert!(left.iter().any(|a| a.detail == sends && a.raised_ms == 1));
        alerts.observe(&Event::tenant(
            EventKind::AlertCleared,
            acme,
            7,
            json!({"alert": "llm_quota_exhausted", "node": "n1"}),
        ));
        assert_eq!(alerts.count(AlertKind::LlmQuotaExhausted), 0);
        let other = TenantId::new("other").unwrap();
        alerts.observe(&Event::tenant(
            EventKind::AlertRaised,
            other.clone(),
            8,
            json!({"alert": "session_auth_failed", "phone_number_id": "1", "node": "n1"}),
        ));
        alerts.keep_tenants(std::slice::from_ref(&other));
        assert_eq!(
            alerts.count(AlertKind::SessionAuthFailed),
            1,
            "hosted: kept"
        );
        alerts.keep_tenants(&[]);
        assert_eq!(
            alerts.count(AlertKind::SessionAuthFailed),
            0,
            "gone: forgotten"
        );
        assert_eq!(alerts.count(AlertKind::ErrorRateHigh), 1, "not a tenant's");
        alerts.forget(AlertKind::ErrorRateHigh);
        assert!(alerts.list().is_empty());
    }
}
