//! Alerts the nodes evaluate (`docs/operations.md`, "What to watch").
//!
//! An alert is one concept everywhere: an [`Alert`](salesboy_protocol::events::Alert)
//! published as the `detail` of an `alert_raised` event, and, when it is a condition, of an
//! `alert_cleared` event once it is over; both go through the node's event sink to the events
//! outbox and the `SB_EVENTS` stream. The actors raise their tenants' conditions
//! (`llm_quota_exhausted`, `llm_spend_cap_reached`, `session_auth_failed`); the
//! [`evaluator`] raises the node's and the cluster's, measured every
//! [`AlertSettings::interval`]:
//!
//! | alert | scope | raised when |
//! |---|---|---|
//! | `node_memory_high` | node | resident memory ≥ `memory_percent` of the memory limit |
//! | `error_rate_high` | node, per source | failed calls ≥ `error_rate_percent` over the window |
//! | `tenant_capacity_high` | cluster (leader) | tenants ≥ `tenant_capacity_percent` of the live nodes' capacity |
//! | `database_size_high` | cluster (leader) | database size ≥ `database_max_bytes` |
//! | `knowledge_chunks_high` | cluster (leader) | knowledge chunks ≥ `knowledge_max_chunks` |
//! | `node_down` | cluster (leader), per node | a member stopped renewing its membership |
//! | `leader_missing` | cluster (lowest live node id) | no live leader for `leader_missing_after` |
//!
//! A single node (no bus) evaluates the cluster's alerts itself. Raised once on the
//! transition, cleared once ([`condition`]: cleared under 90 % of the threshold, so a value
//! hovering at it does not flap). [`active`] keeps the conditions this node raised and has
//! not cleared, for `/api/health` and the `salesboy_alert_active` gauge.
//!
//! Modules: [`active`] (the conditions raised, fed by the event sink), [`condition`] (the
//! thresholds with hysteresis, pure), [`error_rate`] (failure counts over a sliding window),
//! [`measure`] (memory limit and resident memory), [`evaluator`] (the periodic task).

pub mod active;
pub mod condition;
pub mod error_rate;
pub mod evaluator;
pub mod measure;

use std::time::Duration;

pub use active::{ActiveAlert, ActiveAlerts};
pub use evaluator::AlertEvaluator;

/// The alerts' thresholds and timings (configuration keys `alert_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSettings {
    /// How often the node measures (default 15 s).
    pub interval: Duration,
    /// The share of the memory limit, in percent, that raises `node_memory_high` (80).
    pub memory_percent: u64,
    /// The memory limit; unset: the cgroup's (`memory.max`), else the machine's memory.
    pub memory_limit_bytes: Option<u64>,
    /// The share of the cluster's capacity, in percent, that raises `tenant_capacity_high`
    /// (90).
    pub tenant_capacity_percent: u64,
    /// The database size that raises `database_size_high` (400 MB).
    pub database_max_bytes: u64,
    /// The knowledge chunks that raise `knowledge_chunks_high` (80,000).
    pub knowledge_max_chunks: u64,
    /// The error rate, in percent, that raises `error_rate_high` (5).
    pub error_rate_percent: u64,
    /// The window the error rate is measured over (5 minutes).
    pub error_window: Duration,
    /// The fewest calls in the window for a rate to count (20): two failures of three calls
    /// at night are no alert.
    pub error_min_calls: u64,
    /// How long the cluster may be without a live leader before `leader_missing` is raised
    /// (30 s; a failover takes the lease's 5 s).
    pub leader_missing_after: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            memory_percent: 80,
            memory_limit_bytes: None,
            tenant_capacity_percent: 90,
            database_max_bytes: 400_000_000,
            knowledge_max_chunks: 80_000,
            error_rate_percent: 5,
            error_window: Duration::from_secs(300),
            error_min_calls: 20,
            leader_missing_after: Duration::from_secs(30),
        }
    }
}
