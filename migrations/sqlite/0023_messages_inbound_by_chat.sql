-- A chat's inbound messages by id (issue 9): the ingress reads each new message's
-- predecessor in its chat under the conversation's row lock, so a conversation handed
-- messages in order skips its check against the store. Partial: outbound rows stay out.
-- Keep in step with ../postgres/0023_messages_inbound_by_chat.sql.
CREATE INDEX messages_inbound_by_chat ON messages (tenant_id, chat_id, id) WHERE direction = 'inbound';
