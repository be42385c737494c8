-- Issue 10's remaining commands.
-- message.send with a template, an interactive message or a media message: what is sent, the
-- Cloud API object as JSON (`{"template": {...}}`), kept so a pending message can be sent
-- again after a restart; `body` holds its readable rendition. NULL for text and inbound.
ALTER TABLE messages ADD COLUMN content TEXT;
-- session.stop / session.start: since when the tenant's WhatsApp session is stopped (the
-- tenant is hosted nowhere: it neither sends nor answers; inbound messages are still
-- persisted, and answered once it starts again if still within 24 hours); NULL = running.
ALTER TABLE tenants ADD COLUMN session_stopped_ms INTEGER;
-- tenant.delete keeping the data: since when the tenant is deleted (hosted nowhere, its
-- numbers removed, unknown to the API; tenant.create of the same id takes it back with its
-- conversations and knowledge); NULL = live.
ALTER TABLE tenants ADD COLUMN deleted_ms INTEGER;
