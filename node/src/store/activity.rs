//! LLM usage accounting and a tenant's usage over a period.

use salesboy_actors::store::{LlmUsage, LlmUsageTotals, UsageReport};
use salesboy_protocol::TenantId;

use super::Db;
use super::decode::get;
use super::error::Failure;
use super::retention;

/// Records one LLM call.
pub(crate) async fn record_llm_usage(db: &Db, usage: &LlmUsage) -> Result<(), Failure> {
    sqlx::query(
        "INSERT INTO llm_usage (tenant_id, provider, model, prompt_tokens, completion_tokens, \
         cost_micros, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(usage.tenant.as_str())
    .bind(usage.provider.as_str())
    .bind(usage.model.as_str())
    .bind(usage.prompt_tokens)
    .bind(usage.completion_tokens)
    .bind(usage.cost_micros)
    .bind(usage.at_ms)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The tenant's usage since `since_ms` (a month's start: calls deleted by retention count
/// by their month, from `usage_monthly`).
pub(crate) async fn llm_usage_totals(
    db: &Db,
    tenant: &TenantId,
    since_ms: i64,
) -> Result<LlmUsageTotals, Failure> {
    let raw = llm_totals(db, tenant, since_ms, i64::MAX).await?;
    let folded = retention::monthly_usage(db, tenant, since_ms, i64::MAX).await?;
    Ok(add_llm(raw, folded.llm))
}

/// The sum of two LLM usage totals.
fn add_llm(a: LlmUsageTotals, b: LlmUsageTotals) -> LlmUsageTotals {
    LlmUsageTotals {
        requests: a.requests + b.requests,
        prompt_tokens: a.prompt_tokens + b.prompt_tokens,
        completion_tokens: a.completion_tokens + b.completion_tokens,
        cost_micros: a.cost_micros + b.cost_micros,
    }
}

/// The tenant's LLM calls in `[from_ms, until_ms)`, by `at_ms`. Sums are cast to `BIGINT`:
/// Postgres sums `BIGINT` into `NUMERIC`, which the `Any` driver cannot read.
async fn llm_totals(
    db: &Db,
    tenant: &TenantId,
    from_ms: i64,
    until_ms: i64,
) -> Result<LlmUsageTotals, Failure> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS requests, \
         CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
         CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros \
         FROM llm_usage WHERE tenant_id = $1 AND at_ms >= $2 AND at_ms < $3",
    )
    .bind(tenant.as_str())
    .bind(from_ms)
    .bind(until_ms)
    .fetch_one(&db.pool)
    .await?;
    Ok(LlmUsageTotals {
        requests: get(&row, "requests")?,
        prompt_tokens: get(&row, "prompt_tokens")?,
        completion_tokens: get(&row, "completion_tokens")?,
        cost_micros: get(&row, "cost_micros")?,
    })
}

/// The tenant's usage in `[from_ms, until_ms)`: LLM calls by `at_ms`, messages by
/// `created_ms` (the `messages_chat_log` index), plus what retention folded into
/// `usage_monthly` for the months starting in the period (the bounds are months' for
/// `usage.get`). Sums cast to `BIGINT` as above.
pub(crate) async fn usage_between(
    db: &Db,
    tenant: &TenantId,
    from_ms: i64,
    until_ms: i64,
) -> Result<UsageReport, Failure> {
    let llm = llm_totals(db, tenant, from_ms, until_ms).await?;
    let messages = sqlx::query(
        "SELECT \
         CAST(COALESCE(SUM(CASE WHEN direction = 'inbound' THEN 1 ELSE 0 END), 0) AS BIGINT) \
           AS messages_in, \
         CAST(COALESCE(SUM(CASE WHEN direction = 'outbound' THEN 1 ELSE 0 END), 0) AS BIGINT) \
           AS messages_out \
         FROM messages WHERE tenant_id = $1 AND created_ms >= $2 AND created_ms < $3",
    )
    .bind(tenant.as_str())
    .bind(from_ms)
    .bind(until_ms)
    .fetch_one(&db.pool)
    .await?;
    let folded = retention::monthly_usage(db, tenant, from_ms, until_ms).await?;
    Ok(UsageReport {
        llm: add_llm(llm, folded.llm),
        messages_in: get::<i64>(&messages, "messages_in")? + folded.messages_in,
        messages_out: get::<i64>(&messages, "messages_out")? + folded.messages_out,
    })
}
