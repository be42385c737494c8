//! Webhook bodies as Meta sends them, for tests, benchmarks and the simulation harness.

use serde_json::{Value, json};

/// The WhatsApp Business Account id the builders use.
pub const TEST_WABA_ID: &str = "102290129340398";

/// One inbound text message (`from` = the customer's wa_id), sent now.
pub fn text_message(phone_number_id: &str, from: &str, wamid: &str, text: &str) -> Value {
    text_message_at(phone_number_id, from, wamid, text, now_secs())
}

/// One inbound text message the customer sent at `sent_secs` (Meta's `timestamp`, unix
/// seconds): an old or replayed delivery when that is long ago.
pub fn text_message_at(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    text: &str,
    sent_secs: u64,
) -> Value {
    message(
        phone_number_id,
        from,
        json!({"from": from, "id": wamid, "timestamp": sent_secs.to_string(), "type": "text", "text": {"body": text}}),
    )
}

/// One inbound message of a type the gateway does not support.
pub fn unsupported_message(phone_number_id: &str, from: &str, wamid: &str) -> Value {
    message(
        phone_number_id,
        from,
        json!({"from": from, "id": wamid, "timestamp": now(), "type": "unsupported",
               "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown"}]}),
    )
}

/// A delivery-status update of an outbound message.
pub fn status(phone_number_id: &str, recipient: &str, wamid: &str, status: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": TEST_WABA_ID, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "statuses": [{"id": wamid, "status": status, "timestamp": now(), "recipient_id": recipient}]
        }}]}]
    })
}

/// A message the business sent from the WhatsApp Business app (coexistence echo).
pub fn echo(phone_number_id: &str, to: &str, wamid: &str, text: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": TEST_WABA_ID, "changes": [{"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "message_echoes": [{"from": "15550001111", "to": to, "id": wamid, "timestamp": now(), "type": "text", "text": {"body": text}}]
        }}]}]
    })
}

/// Several bodies' entries merged into one body (Meta batches deliveries).
pub fn batch(bodies: &[Value]) -> Value {
    let entries: Vec<Value> = bodies
        .iter()
        .filter_map(|b| b.get("entry").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
    json!({"object": "whatsapp_business_account", "entry": entries})
}

/// Now, in Unix seconds, as Meta writes timestamps (a string).
fn now() -> String {
    now_secs().to_string()
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn message(phone_number_id: &str, from: &str, message: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": TEST_WABA_ID, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Test Customer"}, "wa_id": from}],
            "messages": [message]
        }}]}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesboy_protocol::whatsapp::inbound::WebhookEvent;
    use salesboy_protocol::whatsapp::webhook::parse_webhook;

    #[test]
    fn built_bodies_parse_into_the_expected_events() {
        let body = batch(&[
            text_message("106540352242922", "16505551234", "wamid.A", "hello"),
            unsupported_message("106540352242922", "16505551234", "wamid.B"),
            status("106540352242922", "16505551234", "wamid.C", "delivered"),
            echo("106540352242922", "16505551234", "wamid.D", "owner here"),
        ]);
        let events = parse_webhook(body.to_string().as_bytes()).unwrap().events();
        assert_eq!(events.len(), 4);
        assert!(
            matches!(&events[0], WebhookEvent::Inbound { message, .. } if message.text_for_assistant().as_deref() == Some("hello"))
        );
        assert!(
            matches!(&events[1], WebhookEvent::Inbound { message, .. } if message.content.kind() == "unsupported")
        );
        assert!(matches!(&events[2], WebhookEvent::Status { .. }));
        assert!(matches!(&events[3], WebhookEvent::Echo { .. }));
    }
}
