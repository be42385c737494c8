-- Only owner sends carry a client_ref (issue 9): the unique index keeps their keys alone,
-- so the inbound messages and the bot's replies, every row of the hot path, no longer
-- each add an entry (tenant, NULL) to it. ON CONFLICT DO NOTHING (record_outbound) and
-- the lookup by client_ref (an equality, which implies NOT NULL) use it as before.
-- The previous release runs beside it (docs/upgrades.md): NULL never conflicted, and the
-- keys it enforces are the same.
-- Keep in step with ../postgres/0024_messages_client_ref_partial.sql.
DROP INDEX messages_client_ref_per_tenant;
CREATE UNIQUE INDEX messages_client_ref_per_tenant ON messages (tenant_id, client_ref)
    WHERE client_ref IS NOT NULL;
