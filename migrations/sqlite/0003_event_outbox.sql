-- The events outbox (docs/protocol.md, "Events"): every event is written here in the same
-- transaction as the change it reports, then published to the events stream (SB_EVENTS) and
-- delivered to webhooks from here. seq orders the events (AUTOINCREMENT: never reused, even
-- after retention empties the table); published_ms is set once the stream has acknowledged
-- the event. Replaces the alerts-only `events` table. Keep in step with ../postgres.
CREATE TABLE event_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL,
    tenant_id    TEXT,
    chat_id      TEXT,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    published_ms INTEGER
) STRICT;
-- the publisher's queue: small, since rows leave it once published
CREATE INDEX event_outbox_unpublished ON event_outbox (seq) WHERE published_ms IS NULL;
-- retention
CREATE INDEX event_outbox_by_time ON event_outbox (at_ms);

-- the alerts kept so far, as published alert_raised events
INSERT INTO event_outbox (event_id, tenant_id, kind, detail, at_ms, published_ms)
SELECT 'legacy' || id, tenant_id, 'alert_raised', detail, at_ms, at_ms FROM events ORDER BY id;
DROP TABLE events;
