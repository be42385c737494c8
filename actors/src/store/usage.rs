//! Usage: [`UsageStore`], LLM usage records and a tenant's usage over a period.

use async_trait::async_trait;
use salesboy_protocol::TenantId;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// One LLM call's usage ([`UsageStore::record_llm_usage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// The tenant billed.
    pub tenant: TenantId,
    /// Provider name (`gemini`, `openai`, …).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in millionths of a US dollar.
    pub cost_micros: i64,
    /// When the call finished.
    pub at_ms: i64,
}

/// Summed LLM usage of a tenant ([`UsageStore::llm_usage_totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmUsageTotals {
    /// Number of calls.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in millionths of a US dollar.
    pub cost_micros: i64,
}

/// A tenant's usage over a period ([`UsageStore::usage_between`]): its LLM calls and the
/// messages in its chat log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// LLM usage of calls that finished in the period.
    pub llm: LlmUsageTotals,
    /// Messages received from customers in the period.
    pub messages_in: i64,
    /// Messages sent in the period: bot replies, owner sends and echoes.
    pub messages_out: i64,
}

/// LLM usage per tenant, for billing and quotas.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Records one LLM call's usage.
    async fn record_llm_usage(&self, usage: &LlmUsage) -> Result<(), StoreError>;

    /// The tenant's LLM usage summed over calls at or after `since_ms`.
    async fn llm_usage_totals(
        &self,
        tenant: &TenantId,
        since_ms: i64,
    ) -> Result<LlmUsageTotals, StoreError>;

    /// The tenant's usage from `from_ms` (inclusive) to `until_ms` (exclusive): LLM calls by
    /// when they finished, messages by when they were recorded. Rows removed by retention
    /// are still counted, by their month, where the store folds them before deleting them
    /// (the SQL store's `usage_monthly`): the bounds are then months' bounds.
    async fn usage_between(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<UsageReport, StoreError>;
}
