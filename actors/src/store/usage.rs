//! LLM usage: [`UsageStore`] and its records.

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
}
