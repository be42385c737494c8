-- A web tenant's own ban hygiene (issue 12, docs/engines.md "Ban hygiene"): JSON of the
-- WebHygiene settings (answer_only, typing_ms_per_char, typing_min_ms, typing_max_ms,
-- typing_jitter_ms, min_gap_per_chat_ms, daily_cap); NULL uses the node's defaults.
-- Keep in step with ../sqlite/0021_tenant_web_hygiene.sql.
ALTER TABLE tenants ADD COLUMN web_hygiene TEXT;
