-- Retention of every table that grows (docs/storage.md, "Retention").
-- Keep in step with ../postgres/0012_retention.sql.

-- A tenant's usage folded by month (UTC) as retention deletes the rows it was counted from:
-- LLM calls (llm_usage) and messages (messages). usage.get adds a month's row here to what
-- is still in the raw tables, so its figures stay the same after retention. A row is added
-- to in the transaction that deletes the rows it counts: nothing is counted twice or lost.
CREATE TABLE usage_monthly (
    tenant_id         TEXT NOT NULL,
    -- the month's first millisecond (unix ms, UTC)
    month_start_ms    INTEGER NOT NULL,
    llm_requests      INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros       INTEGER NOT NULL DEFAULT 0,
    messages_in       INTEGER NOT NULL DEFAULT 0,
    messages_out      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month_start_ms)
) STRICT;

-- retention: the oldest LLM calls first
CREATE INDEX llm_usage_by_age ON llm_usage (at_ms);
-- retention: dead letters by when they were given up (small: dead rows only)
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (dead_ms) WHERE state = 'dead';
