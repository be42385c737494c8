-- Salesboy schema, SQLite. Keep in step with ../postgres/0001_initial.sql: same tables,
-- columns and meaning; only types and full-text search differ.
-- STRICT tables, so column types are enforced as on Postgres. Times are unix milliseconds.
-- AUTOINCREMENT keeps ids increasing even after the newest rows are deleted.

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    system_prompt     TEXT,
    llm_config        TEXT,
    -- bumped by every knowledge change: the responder's cache key
    knowledge_version INTEGER NOT NULL DEFAULT 0,
    created_ms        INTEGER NOT NULL
) STRICT;

-- Fencing (architecture §7): the epoch of the node that owns the tenant. Fenced writes run
-- in BEGIN IMMEDIATE transactions, which SQLite serialises with every claim.
-- No foreign key: a claim may precede the tenant row.
CREATE TABLE tenant_epochs (
    tenant_id TEXT PRIMARY KEY,
    epoch     INTEGER NOT NULL CHECK (epoch >= 0)
) STRICT;

CREATE TABLE whatsapp_numbers (
    phone_number_id TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    waba_id         TEXT,
    access_token    TEXT NOT NULL
) STRICT;
CREATE INDEX whatsapp_numbers_by_tenant ON whatsapp_numbers (tenant_id);

CREATE TABLE conversations (
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    chat_id             TEXT NOT NULL,
    last_inbound_ms     INTEGER,
    -- the bot stays quiet until then; 9223372036854775807 (i64::MAX) = until resumed
    bot_paused_until_ms INTEGER,
    PRIMARY KEY (tenant_id, chat_id)
) STRICT;

-- Inbound and outbound messages. wamid is unique per tenant (NULLs are distinct: outbound
-- messages not yet sent have none); inbound rows have no origin and no status.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    direction   TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    origin      TEXT CHECK (origin IN ('bot', 'owner', 'echo')),
    wamid       TEXT,
    kind        TEXT NOT NULL,
    body        TEXT,
    raw         TEXT,
    status      TEXT CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed')),
    status_ms   INTEGER,
    error_code  INTEGER,
    error_title TEXT,
    created_ms  INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, chat_id) REFERENCES conversations (tenant_id, chat_id) ON DELETE CASCADE,
    CONSTRAINT messages_wamid_per_tenant UNIQUE (tenant_id, wamid),
    CHECK ((direction = 'inbound') = (origin IS NULL)),
    CHECK ((direction = 'inbound') = (status IS NULL))
) STRICT;
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
    inbound_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    reply_id   INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX reply_links_by_reply ON reply_links (reply_id);

CREATE TABLE knowledge_documents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (id, tenant_id)
) STRICT;
CREATE INDEX knowledge_documents_by_tenant ON knowledge_documents (tenant_id);

-- Passages: the retrieval unit. tenant_id is repeated (and tied to the document's by the
-- composite key) so searches filter by tenant without a join.
CREATE TABLE knowledge_chunks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL,
    tenant_id   TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,
    text        TEXT NOT NULL,
    FOREIGN KEY (document_id, tenant_id) REFERENCES knowledge_documents (id, tenant_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX knowledge_chunks_by_tenant ON knowledge_chunks (tenant_id);
CREATE INDEX knowledge_chunks_by_document ON knowledge_chunks (document_id);

-- Full-text index over the passages: an external-content FTS5 table kept in step by
-- triggers (which also fire for the cascade when a document is deleted).
CREATE VIRTUAL TABLE knowledge_fts USING fts5(text, content = 'knowledge_chunks', content_rowid = 'id');

CREATE TRIGGER knowledge_chunks_fts_insert AFTER INSERT ON knowledge_chunks BEGIN
    INSERT INTO knowledge_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER knowledge_chunks_fts_delete AFTER DELETE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

CREATE TRIGGER knowledge_chunks_fts_update AFTER UPDATE OF text ON knowledge_chunks BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO knowledge_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TABLE llm_usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id         TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL CHECK (completion_tokens >= 0),
    cost_micros       INTEGER NOT NULL CHECK (cost_micros >= 0),
    at_ms             INTEGER NOT NULL
) STRICT;
CREATE INDEX llm_usage_by_tenant ON llm_usage (tenant_id, at_ms);

CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
) STRICT;
CREATE INDEX events_by_tenant ON events (tenant_id, at_ms);
