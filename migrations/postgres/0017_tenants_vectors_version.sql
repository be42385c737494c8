-- Bumped whenever the embedder stores vectors for one of the tenant's passages. With the
-- tenant's knowledge version (every add and delete) and creation time, it is what a cached
-- vector index is checked against on every semantic search: one row read, where counting
-- the tenant's vectors cost about 3 ms at 20,000 passages (docs/benchmarks.md). A column
-- with a default: an older build runs beside it (docs/upgrades.md, rule 4).
-- Keep in step with ../sqlite/0017_tenants_vectors_version.sql.
ALTER TABLE tenants ADD COLUMN vectors_version BIGINT NOT NULL DEFAULT 0;
