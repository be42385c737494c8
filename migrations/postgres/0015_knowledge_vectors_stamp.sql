-- A tenant's vector stamp (count and newest chunk id of its vectors of a model), read on every
-- semantic search, from the index alone: (tenant_id, model) led to each row, whose ~3 KB
-- vector had to be read for MAX(chunk_id) (tens of ms per search at 20,000 passages). The
-- new index also serves loading a tenant's index in chunk order; it replaces the old one.
-- Keep in step with ../sqlite/0015_knowledge_vectors_stamp.sql.
CREATE INDEX knowledge_vectors_by_tenant_chunk ON knowledge_vectors (tenant_id, model, chunk_id);
DROP INDEX knowledge_vectors_by_tenant;
