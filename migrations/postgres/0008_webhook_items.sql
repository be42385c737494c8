-- Webhook deliveries read item by item (issue 11): an item that cannot be read is kept here
-- and the rest of its delivery processed; a customer's message keeps Meta's timestamp.
-- Keep in step with ../sqlite/0008_webhook_items.sql.

-- An item of a signed delivery that could not be read (a bad id, a missing field, an
-- unknown shape). tenant_id is NULL when the item's phone_number_id could not be read or
-- belongs to no tenant.
CREATE TABLE webhook_rejected_items (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    phone_number_id TEXT,
    waba_id         TEXT,
    -- where the item was in its body: entry[0].changes[1].value.messages[2]
    path            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    -- the item's JSON, at most 4 KiB of it; truncated = 1 when it was cut
    raw             TEXT NOT NULL,
    truncated       BIGINT NOT NULL CHECK (truncated IN (0, 1)),
    received_ms     BIGINT NOT NULL
);
-- a tenant's rejected items, newest first
CREATE INDEX webhook_rejected_items_by_tenant ON webhook_rejected_items (tenant_id, id);
-- retention
CREATE INDEX webhook_rejected_items_by_age ON webhook_rejected_items (received_ms);

-- Meta's timestamp of an inbound message (when the customer sent it, unix ms): the 24-hour
-- customer service window counts from it. NULL for outbound messages and for inbound ones
-- stored before this migration (their created_ms stands in).
ALTER TABLE messages ADD COLUMN sent_ms BIGINT;
