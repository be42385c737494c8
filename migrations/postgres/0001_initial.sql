-- Salesboy schema, Postgres. Keep in step with ../sqlite/0001_initial.sql: same tables,
-- columns and meaning; only types and full-text search differ.
-- Times are unix milliseconds (BIGINT); ids of the outside world are TEXT.

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    system_prompt     TEXT,
    llm_config        TEXT,
    -- bumped by every knowledge change: the responder's cache key
    knowledge_version BIGINT NOT NULL DEFAULT 0,
    created_ms        BIGINT NOT NULL
);

-- Fencing (architecture §7): the epoch of the node that owns the tenant. Fenced writes lock
-- this row FOR SHARE, so a claim waits for writes in flight and refuses later stale ones.
-- No foreign key: a claim may precede the tenant row.
CREATE TABLE tenant_epochs (
    tenant_id TEXT PRIMARY KEY,
    epoch     BIGINT NOT NULL CHECK (epoch >= 0)
);

CREATE TABLE whatsapp_numbers (
    phone_number_id TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    waba_id         TEXT,
    access_token    TEXT NOT NULL
);
CREATE INDEX whatsapp_numbers_by_tenant ON whatsapp_numbers (tenant_id);

CREATE TABLE conversations (
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    chat_id             TEXT NOT NULL,
    last_inbound_ms     BIGINT,
    -- the bot stays quiet until then; 9223372036854775807 (i64::MAX) = until resumed
    bot_paused_until_ms BIGINT,
    PRIMARY KEY (tenant_id, chat_id)
);

-- Inbound and outbound messages. wamid is unique per tenant (NULLs are distinct: outbound
-- messages not yet sent have none); inbound rows have no origin and no status.
CREATE TABLE messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    direction   TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    origin      TEXT CHECK (origin IN ('bot', 'owner', 'echo')),
    wamid       TEXT,
    kind        TEXT NOT NULL,
    body        TEXT,
    raw         TEXT,
    status      TEXT CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed')),
    status_ms   BIGINT,
    error_code  BIGINT,
    error_title TEXT,
    created_ms  BIGINT NOT NULL,
    FOREIGN KEY (tenant_id, chat_id) REFERENCES conversations (tenant_id, chat_id) ON DELETE CASCADE,
    CONSTRAINT messages_wamid_per_tenant UNIQUE (tenant_id, wamid),
    CHECK ((direction = 'inbound') = (origin IS NULL)),
    CHECK ((direction = 'inbound') = (status IS NULL))
);
-- the chat log: a tenant's messages, newest first; also serves the unanswered sweep
CREATE INDEX messages_chat_log ON messages (tenant_id, created_ms DESC);
-- one conversation's history
CREATE INDEX messages_by_chat ON messages (tenant_id, chat_id, created_ms);
-- outbound messages still to send (small: pending rows only)
CREATE INDEX messages_pending ON messages (tenant_id, created_ms) WHERE status = 'pending';
-- retention
CREATE INDEX messages_by_age ON messages (created_ms);

-- One reply per inbound message: the primary key makes a second reply impossible.
-- reply_id NULL = handled without a reply (dismissed), or the reply was deleted by retention.
CREATE TABLE reply_links (
    inbound_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    reply_id   BIGINT REFERENCES messages (id) ON DELETE SET NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX reply_links_by_reply ON reply_links (reply_id);

CREATE TABLE knowledge_documents (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (id, tenant_id)
);
CREATE INDEX knowledge_documents_by_tenant ON knowledge_documents (tenant_id);

-- Passages: the retrieval unit. tenant_id is repeated (and tied to the document's by the
-- composite key) so searches filter by tenant without a join.
CREATE TABLE knowledge_chunks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id BIGINT NOT NULL,
    tenant_id   TEXT NOT NULL,
    ordinal     BIGINT NOT NULL,
    text        TEXT NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    FOREIGN KEY (document_id, tenant_id) REFERENCES knowledge_documents (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX knowledge_chunks_by_tenant ON knowledge_chunks (tenant_id);
CREATE INDEX knowledge_chunks_by_document ON knowledge_chunks (document_id);
CREATE INDEX knowledge_chunks_fts ON knowledge_chunks USING GIN (tsv);

CREATE TABLE llm_usage (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL CHECK (completion_tokens >= 0),
    cost_micros       BIGINT NOT NULL CHECK (cost_micros >= 0),
    at_ms             BIGINT NOT NULL
);
CREATE INDEX llm_usage_by_tenant ON llm_usage (tenant_id, at_ms);

CREATE TABLE events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL,
    at_ms     BIGINT NOT NULL
);
CREATE INDEX events_by_tenant ON events (tenant_id, at_ms);
