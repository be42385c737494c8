-- The WhatsApp Web engine's protocol state (issue 12, docs/engines.md "Storage"): what the
-- `whatsapp-rust` client keeps through its five storage traits, one row set per tenant (a
-- tenant has at most one linked device). Written only through node/src/store/web_session,
-- every write fenced by the tenant's epoch. Columns holding secret key material are TEXT:
-- base64 of the bytes, sealed under the node's secrets key (`enc:v1:…`, node/src/secrets).
-- Times are the library's: unix seconds, except updated_ms.
-- Keep in step with ../sqlite/0010_web_sessions.sql.

-- The linked device: its keys and registration (the library's `Device`, JSON, sealed whole).
CREATE TABLE web_devices (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    registration_id  BIGINT NOT NULL,
    pn               TEXT,
    lid              TEXT,
    device           TEXT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id)
);

-- Contacts' Signal identity keys (public keys, 32 bytes).
CREATE TABLE web_identities (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address          TEXT NOT NULL,
    identity_key     BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

-- Signal sessions (sealed).
CREATE TABLE web_signal_sessions (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address          TEXT NOT NULL,
    session          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

-- One-time pre-keys (sealed); uploaded: 0 or 1.
CREATE TABLE web_prekeys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               BIGINT NOT NULL,
    record           TEXT NOT NULL,
    uploaded         BIGINT NOT NULL CHECK (uploaded IN (0, 1)),
    PRIMARY KEY (tenant_id, id)
);

-- Signed pre-keys (sealed).
CREATE TABLE web_signed_prekeys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               BIGINT NOT NULL,
    record           TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Group sender keys (sealed).
CREATE TABLE web_sender_keys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address          TEXT NOT NULL,
    record           TEXT NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

-- App-state sync keys (key_data sealed); key_id in hex; seq orders them (the latest is asked for).
CREATE TABLE web_app_state_keys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_id           TEXT NOT NULL,
    key_data         TEXT NOT NULL,
    fingerprint      BYTEA NOT NULL,
    key_timestamp    BIGINT NOT NULL,
    seq              BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key_id)
);

-- App-state collection versions (the library's `HashState`, JSON).
CREATE TABLE web_app_state_versions (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    state            TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- App-state mutation MACs; index_mac in hex.
CREATE TABLE web_app_state_macs (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    index_mac        TEXT NOT NULL,
    version          BIGINT NOT NULL,
    value_mac        BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, name, index_mac)
);

-- Which devices of a group hold our sender key; has_key: 0 or 1.
CREATE TABLE web_sender_key_devices (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_jid        TEXT NOT NULL,
    device_jid       TEXT NOT NULL,
    has_key          BIGINT NOT NULL CHECK (has_key IN (0, 1)),
    PRIMARY KEY (tenant_id, group_jid, device_jid)
);
CREATE INDEX web_sender_key_devices_by_device ON web_sender_key_devices (tenant_id, device_jid);

-- LID to phone number mappings.
CREATE TABLE web_lid_mappings (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lid              TEXT NOT NULL,
    phone_number     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    learning_source  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, lid)
);
CREATE INDEX web_lid_mappings_by_phone ON web_lid_mappings (tenant_id, phone_number);

-- Base keys saved for retry collision detection.
CREATE TABLE web_base_keys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address          TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    base_key         BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, address, message_id)
);

-- Contacts' device lists (the library's `DeviceListRecord`, JSON).
CREATE TABLE web_device_lists (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    record           TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- Serialized group metadata (opaque to us).
CREATE TABLE web_group_metadata (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_jid        TEXT NOT NULL,
    metadata         BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, group_jid)
);

-- Trusted-contact privacy tokens; an empty token is a placeholder.
CREATE TABLE web_tc_tokens (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    jid              TEXT NOT NULL,
    token            BYTEA NOT NULL,
    token_timestamp  BIGINT NOT NULL,
    sender_timestamp BIGINT,
    PRIMARY KEY (tenant_id, jid)
);

-- Sent messages kept for retry receipts (taken once).
CREATE TABLE web_sent_messages (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    chat_jid         TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    payload          BYTEA NOT NULL,
    sent_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, chat_jid, message_id)
);

-- Decrypted inbound messages waiting for the durability hook's commit.
CREATE TABLE web_pending_inbound (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    chat             TEXT NOT NULL,
    sender           TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    message          BYTEA NOT NULL,
    received_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, chat, sender, message_id)
);

-- Message secrets of our messages (for add-ons: reactions, polls, edits); expires_at 0: never.
CREATE TABLE web_msg_secrets (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    chat             TEXT NOT NULL,
    sender           TEXT NOT NULL,
    msg_id           TEXT NOT NULL,
    secret           BYTEA NOT NULL,
    expires_at       BIGINT NOT NULL,
    message_ts       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, chat, sender, msg_id)
);
