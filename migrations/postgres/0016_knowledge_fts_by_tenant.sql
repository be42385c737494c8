-- Nothing to change on PostgreSQL: its full-text search already filters by tenant first
-- (the knowledge_chunks_by_tenant index, then the tsvector match). The SQLite migration of
-- this number puts the tenant into its FTS5 index (../sqlite/0016_knowledge_fts_by_tenant.sql).
SELECT 1;
