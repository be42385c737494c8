-- message.send's client_ref: the client's idempotency key of an owner send, unique per tenant,
-- so the same client_ref sent twice (also concurrently, also to two nodes) records one message
ALTER TABLE messages ADD COLUMN client_ref TEXT;
CREATE UNIQUE INDEX messages_client_ref_per_tenant ON messages (tenant_id, client_ref);
