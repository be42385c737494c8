-- How the tenant's WhatsApp number is reached (issue 12, docs/engines.md): 'cloud_api'
-- (Meta's Cloud API, every tenant before this migration) or 'web' (the WhatsApp Web
-- multi-device protocol). Chosen at creation, never changed.
-- Keep in step with ../sqlite/0020_tenant_engine.sql.
ALTER TABLE tenants ADD COLUMN engine TEXT NOT NULL DEFAULT 'cloud_api';
