-- A tenant's own read-receipt policy (issue 9): when its conversations mark the customer's
-- messages read and show the typing indicator: 'always', 'when_slow' or 'never'; NULL uses
-- the node's (SALESBOY_WHATSAPP_READ_RECEIPTS).
-- Keep in step with ../sqlite/0022_tenant_read_receipts.sql.
ALTER TABLE tenants ADD COLUMN read_receipts TEXT CHECK (read_receipts IN ('always', 'when_slow', 'never'));
