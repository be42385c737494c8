-- HTTP event webhooks (docs/protocol.md, "HTTP event webhooks"): where a tenant's events are
-- POSTed, and what each webhook has still to receive. Keep in step with the other dialect.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    -- the kinds delivered as ",kind,kind,"; NULL: every kind
    kinds      TEXT,
    -- the HMAC key of the signatures (issue 11 encrypts secrets at rest)
    secret     TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id);

-- One row per event a webhook has still to receive (pending) or gave up on (dead, kept until
-- redelivered or old); a delivered event's row is deleted. Rows are written when the event
-- is published (event_outbox.seq). Events with the same order_key (tenant/chat) go out one
-- at a time, in seq order.
CREATE TABLE webhook_deliveries (
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    order_key       TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    -- the start of the retry window
    since_ms        BIGINT NOT NULL,
    last_error      TEXT,
    dead_ms         BIGINT,
    PRIMARY KEY (webhook_id, seq)
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, order_key, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_seq ON webhook_deliveries (seq);
