-- Passages an embedding provider refused on their own (a request error for that passage
-- while the others of its batch were embedded), per model: no longer pending, so one bad
-- passage cannot hold up every passage behind it. Full text still finds them; the tenant
-- got a `knowledge_embedding_failed` event with `retrying: false`. A chunk's delete
-- cascades; a change of the tenant's model tries them again.
-- Keep in step with ../postgres/0014_knowledge_embedding_refusals.sql.
CREATE TABLE knowledge_embedding_refusals (
    chunk_id   INTEGER NOT NULL REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    model      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, model)
) STRICT;
