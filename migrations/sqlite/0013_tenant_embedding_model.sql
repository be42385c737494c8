-- The embedding model a tenant's passages are embedded and searched with (issue 15): one of
-- the models of SALESBOY_EMBEDDING_PROVIDERS. NULL: the node's default (the first entry's).
-- A change leaves the tenant's passages pending until they have vectors of the new model.
-- Keep in step with ../postgres/0013_tenant_embedding_model.sql.
ALTER TABLE tenants ADD COLUMN embedding_model TEXT;
