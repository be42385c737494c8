-- Passage vectors for semantic retrieval (issue 15): one row per chunk and embedding model,
-- the vector as little-endian f32 bytes. tenant_id is repeated so a tenant's index loads
-- without a join; a chunk's delete (and so its document's) cascades to its vectors. A chunk
-- without a vector for the node's current model is pending: the background embedder finds
-- it by that absence, so a change of model re-embeds everything and nothing is lost while
-- the provider is down.
-- Keep in step with ../postgres/0011_knowledge_vectors.sql.
CREATE TABLE knowledge_vectors (
    chunk_id   INTEGER NOT NULL REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    model      TEXT NOT NULL,
    dimensions INTEGER NOT NULL CHECK (dimensions > 0),
    vector     BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, model)
) STRICT;
CREATE INDEX knowledge_vectors_by_tenant ON knowledge_vectors (tenant_id, model);

-- Why a bot reply said what it said: the knowledge passages it was written from, best first,
-- with their full-text rank, vector rank and fused score (JSON array); NULL for other
-- messages and for replies written from no passage.
ALTER TABLE messages ADD COLUMN passages TEXT;
