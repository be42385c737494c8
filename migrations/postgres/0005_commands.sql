-- Issue 10's remaining commands.
-- message.send with a template, an interactive message or a media message: what is sent, the
-- Cloud API object as JSON (`{"template": {...}}`), kept so a pending message can be sent
-- again after a restart; `body` holds its readable rendition. NULL for text and inbound.
ALTER TABLE messages ADD COLUMN content TEXT;
