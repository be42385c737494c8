-- Tenant API tokens: a bearer token that reads and changes only its tenant. Only the token's
-- SHA-256 digest (lowercase hex) is kept; the token itself is shown once, when it is made.
-- A deleted tenant's tokens go with it.
CREATE TABLE tenant_tokens (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT,
    digest     TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX tenant_tokens_by_tenant ON tenant_tokens (tenant_id, created_ms);
