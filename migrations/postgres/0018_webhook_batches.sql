-- Webhook deliveries are no longer written for a first attempt that succeeds (decision 0015):
-- the transaction that marks events published writes one row here naming them, instead of
-- one webhook_deliveries row per webhook and event. The delivery worker deletes the row once
-- each of the batch's deliveries is delivered or written to webhook_deliveries (a failed
-- attempt, or one queued behind a failed one). A row left behind (a node killed mid-batch,
-- a lost lead) is recovered by the next worker: its events are queued in webhook_deliveries
-- for every matching webhook (delivered again at least once). Keep in step with ../sqlite.
CREATE TABLE webhook_batches (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the events' event_outbox.seq, comma-separated
    seqs       TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
