//! The library's events as the session sees them ([`WebEvent`]), and decrypted messages as
//! the session stores them: pure functions, tested with the library's event builders.

use salesboy_actors::web::WebEvent;
use salesboy_protocol::Wamid;
use salesboy_protocol::whatsapp::DeliveryStatus;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::waproto::whatsapp as wa;

/// The session's event for one of the library's connection and pairing events, at `now_ms`
/// (unix ms, for a ban's end); `account` is the linked account's phone number, when known.
/// `None` for the events the session has no use for, and for messages (the durability hook
/// hands those over) and undecryptable messages (their chat needs a look-up).
pub fn lifecycle_event(event: &Event, now_ms: i64, account: Option<String>) -> Option<WebEvent> {
    Some(match event {
        Event::PairingQrCode(qr) => WebEvent::Qr {
            code: qr.code.clone(),
            valid_for: qr.timeout,
        },
        Event::PairingQrCodesExhausted(_) => WebEvent::PairingExpired,
        Event::PairSuccess(success) => WebEvent::Paired {
            phone: success.id.user.to_string(),
        },
        Event::Connected(_) => WebEvent::Connected { phone: account },
        Event::Disconnected(disconnected) => WebEvent::Disconnected {
            reason: disconnected.reason.to_string(),
        },
        Event::LoggedOut(_) => WebEvent::LoggedOut,
        Event::TemporaryBan(ban) => WebEvent::TemporarilyBanned {
            code: ban.code.code(),
            expires_ms: Some(now_ms.saturating_add(ban.expire.num_milliseconds())),
        },
        Event::StreamReplaced(_) => WebEvent::Replaced,
        Event::ClientOutdated(_) => WebEvent::Outdated,
        // The library stops on a failure it does not retry (and retries the others on its
        // own): the session's next `connect` starts a fresh client after its backoff.
        Event::ConnectFailure(failure) => WebEvent::Disconnected {
            reason: format!("connect failure: {:?}", failure.reason),
        },
        _ => return None,
    })
}

/// The session's event for a receipt of messages we sent to a customer: delivered, or read
/// (a voice note played counts as read). `None` for other receipts (our own devices', group
/// chats', retries, server errors) and for ids that are not message ids.
pub fn receipt_event(event: &Event) -> Option<WebEvent> {
    let Event::Receipt(receipt) = event else {
        return None;
    };
    if receipt.source.is_from_me || receipt.source.is_group {
        return None;
    }
    let status = match receipt.r#type {
        ReceiptType::Delivered => DeliveryStatus::Delivered,
        ReceiptType::Read | ReceiptType::Played => DeliveryStatus::Read,
        _ => return None,
    };
    let ids: Vec<Wamid> = receipt
        .message_ids
        .iter()
        .filter_map(|id| Wamid::new(id.to_string()).ok())
        .collect();
    (!ids.is_empty()).then(|| WebEvent::Receipt {
        ids,
        status,
        at_ms: receipt.timestamp.timestamp_millis(),
    })
}

/// What the session stores of a message: its kind (named as the Cloud API names them) and
/// its text. `None` for messages that are not a customer's (protocol messages, key
/// distribution, receipts of polls…): acknowledged, not stored.
pub fn content(message: &wa::Message) -> Option<(&'static str, Option<String>)> {
    let base = message.get_base_message();
    let text = base.text_content().map(str::to_owned);
    let caption = base.get_caption().map(str::to_owned);
    let kind = if base.conversation.is_some() || base.extended_text_message.is_set() {
        return Some(("text", text));
    } else if base.image_message.is_set() {
        "image"
    } else if base.video_message.is_set() || base.ptv_message.is_set() {
        "video"
    } else if base.audio_message.is_set() {
        "audio"
    } else if base.document_message.is_set() {
        "document"
    } else if base.sticker_message.is_set() {
        "sticker"
    } else if base.location_message.is_set() || base.live_location_message.is_set() {
        "location"
    } else if base.contact_message.is_set() || base.contacts_array_message.is_set() {
        "contacts"
    } else if base.reaction_message.is_set() {
        "reaction"
    } else if base.buttons_response_message.is_set()
        || base.list_response_message.is_set()
        || base.interactive_response_message.is_set()
        || base.template_button_reply_message.is_set()
    {
        "interactive"
    } else {
        return None;
    };
    Some((kind, caption.or(text)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use whatsapp_rust::Jid;
    use whatsapp_rust::types::events::{
        ClientOutdated, Connected, Disconnected, LoggedOut, PairSuccess, PairingQrCode,
        PairingQrCodesExhausted, Receipt, StreamReplaced, TempBanReason, TemporaryBan,
    };
    use whatsapp_rust::wacore::net::DisconnectReason;
    use whatsapp_rust::wacore::types::events::ConnectFailureReason;

    use whatsapp_rust::types::message::MessageSource;

    use super::*;

    #[test]
    fn connection_and_pairing_events_map_to_the_sessions() {
        let now = 1_700_000_000_000;
        let qr = Event::PairingQrCode(
            PairingQrCode::builder()
                .code("2@abc".to_owned())
                .timeout(Duration::from_secs(60))
                .build(),
        );
        assert!(matches!(
            lifecycle_event(&qr, now, None),
            Some(WebEvent::Qr { code, valid_for }) if code == "2@abc" && valid_for == Duration::from_secs(60)
        ));
        let exhausted = Event::PairingQrCodesExhausted(
            PairingQrCodesExhausted::builder()
                .disconnected(true)
                .build(),
        );
        assert!(matches!(
            lifecycle_event(&exhausted, now, None),
            Some(WebEvent::PairingExpired)
        ));
        let paired = Event::PairSuccess(
            PairSuccess::builder()
                .id("5511900000001:7@s.whatsapp.net".parse::<Jid>().unwrap())
                .lid("123456789012345:7@lid".parse::<Jid>().unwrap())
                .business_name(String::new())
                .platform("android".to_owned())
                .build(),
        );
        assert!(matches!(
            lifecycle_event(&paired, now, None),
            Some(WebEvent::Paired { phone }) if phone == "5511900000001"
        ));
        let connected = Event::Connected(Connected::builder().build());
        assert!(matches!(
            lifecycle_event(&connected, now, Some("5511900000001".into())),
            Some(WebEvent::Connected { phone: Some(phone) }) if phone == "5511900000001"
        ));
        let dropped = Event::Disconnected(
            Disconnected::builder()
                .reason(DisconnectReason::StreamEnded)
                .build(),
        );
        assert!(matches!(
            lifecycle_event(&dropped, now, None),
            Some(WebEvent::Disconnected { reason }) if reason.contains("stream ended")
        ));
        let out = Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(false)
                .reason(ConnectFailureReason::LoggedOut)
                .build(),
        );
        assert!(matches!(
            lifecycle_event(&out, now, None),
            Some(WebEvent::LoggedOut)
        ));
        let ban = Event::TemporaryBan(
            TemporaryBan::builder()
                .code(TempBanReason::BlockedByUsers)
                .expire(whatsapp_rust::wacore::chrono::Duration::seconds(3600))
                .build(),
        );
        assert!(matches!(
            lifecycle_event(&ban, now, None),
            Some(WebEvent::TemporarilyBanned { code: 102, expires_ms: Some(ends) }) if ends == now + 3_600_000
        ));
        let replaced = Event::StreamReplaced(StreamReplaced::builder().build());
        assert!(matches!(
            lifecycle_event(&replaced, now, None),
            Some(WebEvent::Replaced)
        ));
        let outdated = Event::ClientOutdated(ClientOutdated::builder().build());
        assert!(matches!(
            lifecycle_event(&outdated, now, None),
            Some(WebEvent::Outdated)
        ));
    }

    #[test]
    fn delivery_and_read_receipts_map_to_statuses() {
        let receipt = |kind: ReceiptType, ids: &[&str]| {
            Event::Receipt(
                Receipt::builder()
                    .message_ids(ids.iter().map(|id| (*id).to_owned()).collect())
                    .source(MessageSource {
                        chat: "5511900000001@s.whatsapp.net".parse::<Jid>().unwrap(),
                        ..Default::default()
                    })
                    .timestamp(
                        whatsapp_rust::chrono::DateTime::from_timestamp_millis(1_700_000_000_000)
                            .unwrap(),
                    )
                    .r#type(kind)
                    .offline(false)
                    .build(),
            )
        };
        let status = |event: &Event| match receipt_event(event) {
            Some(WebEvent::Receipt { ids, status, at_ms }) => {
                assert_eq!(at_ms, 1_700_000_000_000);
                Some((ids.len(), status))
            }
            _ => None,
        };
        let ids = ["3EB0A1", "3EB0A2"];
        assert_eq!(
            status(&receipt(ReceiptType::Delivered, &ids)),
            Some((2, DeliveryStatus::Delivered))
        );
        assert_eq!(
            status(&receipt(ReceiptType::Read, &ids)),
            Some((2, DeliveryStatus::Read))
        );
        assert_eq!(
            status(&receipt(ReceiptType::Played, &ids)),
            Some((2, DeliveryStatus::Read))
        );
        // our own devices' reads, retries, server errors, and receipts naming nothing
        assert_eq!(status(&receipt(ReceiptType::ReadSelf, &ids)), None);
        assert_eq!(status(&receipt(ReceiptType::Retry, &ids)), None);
        assert_eq!(status(&receipt(ReceiptType::ServerError, &ids)), None);
        assert_eq!(status(&receipt(ReceiptType::Delivered, &[])), None);
    }

    #[test]
    fn messages_are_stored_by_kind() {
        let text = wa::Message {
            conversation: Some("hello".into()),
            ..Default::default()
        };
        assert_eq!(content(&text), Some(("text", Some("hello".to_owned()))));
        let image = wa::Message {
            image_message: whatsapp_rust::buffa::MessageField::some(wa::message::ImageMessage {
                caption: Some("look".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(content(&image), Some(("image", Some("look".to_owned()))));
        // a protocol message (a revoke, a key share…) is nobody's message
        let protocol = wa::Message {
            protocol_message: whatsapp_rust::buffa::MessageField::some(
                wa::message::ProtocolMessage::default(),
            ),
            ..Default::default()
        };
        assert_eq!(content(&protocol), None);
        assert_eq!(content(&wa::Message::default()), None);
    }
}
