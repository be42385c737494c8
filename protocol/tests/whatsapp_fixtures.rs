//! WhatsApp Cloud API fixtures: every webhook body parses into concrete values, the
//! normalised events route per tenant, send bodies serialise to the reference shapes, Graph
//! errors classify, and domain types round-trip through both codecs.

use std::path::PathBuf;

use salesboy_protocol::whatsapp::inbound::{
    DeliveryStatus, Echo, ErrorInfo, IgnoredReason, InboundMessage, MessageContent, StatusUpdate,
    WebhookEvent,
};
use salesboy_protocol::whatsapp::send::{
    MarkReadRequest, MarkReadResponse, MediaUrlResponse, SendMessageResponse, SendTemplateRequest,
    SendTextRequest, TemplateComponent, TemplateParameter,
};
use salesboy_protocol::whatsapp::webhook::{
    ChangeValue, MAX_WEBHOOK_BODY_BYTES, WebhookBody, WebhookError, parse_webhook,
};
use salesboy_protocol::whatsapp::{GraphErrorBody, GraphErrorKind};
use salesboy_protocol::{ChatId, Codec, PhoneNumberId, Wamid};
use serde::Serialize;
use serde::de::DeserializeOwned;

const PHONE_NUMBER_ID: &str = "106540352242922";
const WABA_ID: &str = "102290129340398";
const CUSTOMER: &str = "16505551234";
const OUTBOUND_WAMID: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI4QzFFNUQwQjRBN0YyRTlDM0IA";

/// Webhook bodies copied from the reference (pretty form; the same names exist under `wire/`).
const REFERENCE_WEBHOOKS: [&str; 11] = [
    "inbound_text",
    "inbound_text_reply_context",
    "inbound_image",
    "inbound_audio",
    "inbound_reaction",
    "inbound_button_reply",
    "batch_two_messages",
    "status_sent",
    "status_delivered",
    "status_read",
    "status_failed",
];

/// The project's own webhook bodies.
const PROJECT_WEBHOOKS: [&str; 4] = [
    "project/echo_messages",
    "project/mixed_types",
    "project/multi_tenant",
    "project/unknown_type_batch",
];

fn fixture(path: &str) -> Vec<u8> {
    let full: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "whatsapp",
        path,
    ]
    .iter()
    .collect();
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

fn webhook(name: &str) -> WebhookBody {
    parse_webhook(&fixture(&format!("{name}.json"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn events(name: &str) -> Vec<WebhookEvent> {
    webhook(name).events()
}

fn wamid(s: &str) -> Wamid {
    Wamid::new(s).unwrap()
}

fn chat(s: &str) -> ChatId {
    ChatId::new(s).unwrap()
}

/// The only event of a body, which must be an inbound message for the reference tenant.
fn single_inbound(name: &str) -> InboundMessage {
    let mut events = events(name);
    assert_eq!(events.len(), 1, "{name}: {events:?}");
    match events.remove(0) {
        WebhookEvent::Inbound {
            phone_number_id,
            waba_id,
            message,
        } => {
            assert_eq!(phone_number_id.as_str(), PHONE_NUMBER_ID);
            assert_eq!(waba_id, WABA_ID);
            message
        }
        other => panic!("{name}: expected an inbound message, got {other:?}"),
    }
}

fn single_status(name: &str) -> StatusUpdate {
    let mut events = events(name);
    assert_eq!(events.len(), 1, "{name}: {events:?}");
    match events.remove(0) {
        WebhookEvent::Status {
            phone_number_id,
            waba_id,
            status,
        } => {
            assert_eq!(phone_number_id.as_str(), PHONE_NUMBER_ID);
            assert_eq!(waba_id, WABA_ID);
            status
        }
        other => panic!("{name}: expected a status, got {other:?}"),
    }
}

fn json_value(path: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn assert_both_codecs_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for codec in [Codec::Bincode, Codec::Json] {
        let bytes = codec
            .encode(value)
            .unwrap_or_else(|e| panic!("{codec:?} encode {value:?}: {e}"));
        let back: T = codec
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("{codec:?} decode {value:?}: {e}"));
        assert_eq!(&back, value, "{codec:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound messages

#[test]
fn inbound_text_parses_to_concrete_values() {
    let body = webhook("inbound_text");
    assert_eq!(body.object, "whatsapp_business_account");
    assert_eq!(body.entry.len(), 1);
    assert_eq!(body.entry[0].id, WABA_ID);
    let change = &body.entry[0].changes[0];
    assert_eq!(change.field, "messages");
    let ChangeValue::Messages(value) = &change.value else {
        panic!("{change:?}")
    };
    assert_eq!(value.messaging_product, "whatsapp");
    assert_eq!(value.metadata.display_phone_number, "15550783881");
    assert_eq!(
        value.contacts[0].profile.as_ref().unwrap().name,
        "Kerry Fisher"
    );
    assert_eq!(value.messages.len(), 1);
    assert!(value.statuses.is_empty());

    let message = single_inbound("inbound_text");
    assert_eq!(
        message,
        InboundMessage {
            wamid: wamid("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRGMUMyQjlEOEU3QTZCNUM0RAA="),
            from: chat(CUSTOMER),
            timestamp: 1_739_321_024,
            profile_name: Some("Kerry Fisher".into()),
            reply_to: None,
            content: MessageContent::Text {
                body: "Hi! Do you have the blue sneakers in size 42?".into()
            },
        }
    );
    assert_eq!(
        message.text_for_assistant().as_deref(),
        Some("Hi! Do you have the blue sneakers in size 42?")
    );
}

#[test]
fn a_reply_carries_the_quoted_wamid() {
    let message = single_inbound("inbound_text_reply_context");
    assert_eq!(message.reply_to, Some(wamid(OUTBOUND_WAMID)));
    assert_eq!(message.timestamp, 1_739_321_190);
    assert_eq!(
        message.content,
        MessageContent::Text {
            body: "Yes please, reserve one for me".into()
        }
    );
}

#[test]
fn an_image_keeps_its_media_id_and_caption() {
    let message = single_inbound("inbound_image");
    assert_eq!(
        message.content,
        MessageContent::Image {
            media_id: "2754859441498128".into(),
            mime_type: "image/jpeg".into(),
            caption: Some("Like this one".into()),
        }
    );
    assert_eq!(
        message.text_for_assistant().as_deref(),
        Some("Like this one")
    );
}

#[test]
fn an_audio_has_no_text_for_the_assistant() {
    let message = single_inbound("inbound_audio");
    assert_eq!(
        message.content,
        MessageContent::Audio {
            media_id: "1003383421387256".into(),
            mime_type: "audio/ogg; codecs=opus".into(),
            voice: false,
        }
    );
    assert_eq!(message.text_for_assistant(), None);
}

#[test]
fn a_reaction_names_the_message_and_the_emoji() {
    let message = single_inbound("inbound_reaction");
    assert_eq!(
        message.content,
        MessageContent::Reaction {
            emoji: Some("\u{1F44D}".into()),
            message_id: wamid(OUTBOUND_WAMID)
        }
    );
    assert_eq!(message.text_for_assistant(), None);
}

#[test]
fn a_button_reply_answers_with_its_title() {
    let message = single_inbound("inbound_button_reply");
    assert_eq!(
        message.content,
        MessageContent::ButtonReply {
            id: "reserve-yes".into(),
            title: "Reserve".into()
        }
    );
    assert_eq!(message.reply_to, Some(wamid(OUTBOUND_WAMID)));
    assert_eq!(message.text_for_assistant().as_deref(), Some("Reserve"));
}

#[test]
fn a_batch_yields_its_messages_in_order() {
    let events = events("batch_two_messages");
    let texts: Vec<(String, u64, String)> = events
        .iter()
        .map(|event| match event {
            WebhookEvent::Inbound { message, .. } => (
                message.wamid.to_string(),
                message.timestamp,
                message.text_for_assistant().unwrap(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            (
                "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUExQTJBM0E0QTVBNkE3QThBOQA=".to_owned(),
                1_739_321_500,
                "hello".to_owned()
            ),
            (
                "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUIxQjJCM0I0QjVCNkI3QjhCOQA=".to_owned(),
                1_739_321_502,
                "what time do you close today?".to_owned()
            ),
        ]
    );
}

#[test]
fn every_other_message_type_parses_to_its_variant() {
    let contents: Vec<(String, Option<String>, Option<Wamid>, MessageContent)> =
        events("project/mixed_types")
            .into_iter()
            .map(|event| match event {
                WebhookEvent::Inbound { message, .. } => (
                    message.wamid.to_string(),
                    message.profile_name,
                    message.reply_to,
                    message.content,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
    let kerry = Some("Kerry Fisher".to_owned());
    let joao = Some("Jo\u{e3}o Silva".to_owned());
    let expected = vec![
        (
            "wamid.MIXED.document".to_owned(),
            kerry.clone(),
            None,
            MessageContent::Document {
                media_id: "4000000000000001".into(),
                mime_type: "application/pdf".into(),
                caption: Some("my order".into()),
                filename: Some("order-1042.pdf".into()),
            },
        ),
        (
            "wamid.MIXED.video".to_owned(),
            kerry.clone(),
            None,
            MessageContent::Video {
                media_id: "4000000000000002".into(),
                mime_type: "video/mp4".into(),
                caption: None,
            },
        ),
        (
            "wamid.MIXED.sticker".to_owned(),
            kerry.clone(),
            None,
            MessageContent::Sticker {
                media_id: "4000000000000003".into(),
                mime_type: "image/webp".into(),
                animated: true,
            },
        ),
        (
            "wamid.MIXED.voice".to_owned(),
            kerry,
            None,
            MessageContent::Audio {
                media_id: "4000000000000004".into(),
                mime_type: "audio/ogg; codecs=opus".into(),
                voice: true,
            },
        ),
        (
            "wamid.MIXED.location".to_owned(),
            joao.clone(),
            None,
            MessageContent::Location {
                latitude: -23.5613,
                longitude: -46.6565,
                name: Some("Loja Azul Paulista".into()),
                address: Some("Av. Paulista, 1000, S\u{e3}o Paulo".into()),
            },
        ),
        (
            "wamid.MIXED.list_reply".to_owned(),
            joao.clone(),
            Some(wamid("wamid.MIXED.list_message")),
            MessageContent::ListReply {
                id: "size-42".into(),
                title: "Size 42".into(),
                description: Some("2 pairs left".into()),
            },
        ),
        (
            "wamid.MIXED.quick_reply".to_owned(),
            joao.clone(),
            Some(wamid("wamid.MIXED.template")),
            MessageContent::QuickReply {
                payload: Some("STOP_PROMOS".into()),
                text: "Stop promotions".into(),
            },
        ),
        (
            "wamid.MIXED.unreact".to_owned(),
            joao.clone(),
            None,
            MessageContent::Reaction {
                emoji: None,
                message_id: wamid("wamid.MIXED.template"),
            },
        ),
        (
            "wamid.MIXED.unsupported".to_owned(),
            joao.clone(),
            None,
            MessageContent::Unsupported {
                kind: "unsupported".into(),
            },
        ),
        (
            "wamid.MIXED.flow".to_owned(),
            joao,
            None,
            MessageContent::Unsupported {
                kind: "interactive.nfm_reply".into(),
            },
        ),
    ];
    assert_eq!(contents, expected);

    let assistant_texts: Vec<Option<String>> = expected
        .iter()
        .map(|(_, _, _, content)| content.text_for_assistant())
        .collect();
    assert_eq!(
        assistant_texts,
        [
            Some("my order".into()),
            None,
            None,
            None,
            None,
            Some("Size 42".into()),
            Some("Stop promotions".into()),
            None,
            None,
            None
        ]
    );
}

#[test]
fn an_unsupported_message_keeps_meta_errors_in_the_raw_form() {
    let body = webhook("project/mixed_types");
    let ChangeValue::Messages(value) = &body.entry[0].changes[0].value else {
        panic!()
    };
    let unsupported = value
        .messages
        .iter()
        .find(|m| m.payload.kind == "unsupported")
        .unwrap();
    assert_eq!(unsupported.payload.errors.len(), 1);
    let info = unsupported.payload.errors[0].to_info();
    assert_eq!(
        info,
        ErrorInfo {
            code: 131_051,
            title: "Message type unknown".into(),
            message: Some("Message type unknown".into()),
            details: Some("Message type is currently not supported.".into()),
        }
    );
    let forwarded = value
        .messages
        .iter()
        .find(|m| m.id.as_str() == "wamid.MIXED.flow")
        .unwrap();
    assert_eq!(forwarded.context.as_ref().unwrap().forwarded, Some(true));
}

#[test]
fn an_unknown_type_in_a_batch_is_unsupported_next_to_the_text() {
    let events = events("project/unknown_type_batch");
    assert_eq!(events.len(), 2);
    let contents: Vec<&MessageContent> = events
        .iter()
        .map(|event| match event {
            WebhookEvent::Inbound { message, .. } => &message.content,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        contents,
        [
            &MessageContent::Unsupported {
                kind: "hologram".into()
            },
            &MessageContent::Text {
                body: "did you get my hologram?".into()
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Statuses

#[test]
fn sent_delivered_and_read_statuses_parse() {
    for (name, status, timestamp) in [
        ("status_sent", DeliveryStatus::Sent, 1_739_321_100),
        ("status_delivered", DeliveryStatus::Delivered, 1_739_321_101),
        ("status_read", DeliveryStatus::Read, 1_739_321_150),
    ] {
        let update = single_status(name);
        assert_eq!(
            update,
            StatusUpdate {
                wamid: wamid(OUTBOUND_WAMID),
                recipient: chat(CUSTOMER),
                status,
                timestamp,
                errors: vec![]
            },
            "{name}"
        );
    }
    let body = webhook("status_sent");
    let ChangeValue::Messages(value) = &body.entry[0].changes[0].value else {
        panic!()
    };
    let pricing = value.statuses[0].pricing.as_ref().unwrap();
    assert_eq!(pricing.billable, Some(false));
    assert_eq!(pricing.pricing_model.as_deref(), Some("PMP"));
    assert_eq!(pricing.kind.as_deref(), Some("free_customer_service"));
    assert_eq!(pricing.category.as_deref(), Some("service"));
    assert!(value.statuses[0].conversation.is_none());
}

#[test]
fn a_failed_status_carries_its_errors() {
    let update = single_status("status_failed");
    assert_eq!(update.status, DeliveryStatus::Failed);
    assert_eq!(
        update.wamid,
        wamid("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI4Q0ZBMTFFRTIyREQzM0NDNDQA")
    );
    assert_eq!(update.timestamp, 1_739_407_500);
    assert_eq!(
        update.errors,
        [ErrorInfo {
            code: 131_047,
            title: "Re-engagement message".into(),
            message: Some("Re-engagement message".into()),
            details: Some(
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number."
                    .into()
            ),
        }]
    );
    assert_eq!(update.errors[0].kind(), GraphErrorKind::OutsideWindow);
}

#[test]
fn status_order_in_the_reference_is_monotonic() {
    let sent = single_status("status_sent").status;
    let delivered = single_status("status_delivered").status;
    let read = single_status("status_read").status;
    assert!(delivered.may_follow(sent) && read.may_follow(delivered) && read.may_follow(sent));
    assert!(!sent.may_follow(read) && !delivered.may_follow(read));
    assert!(!read.may_follow(DeliveryStatus::Failed));
}

// ---------------------------------------------------------------------------------------------
// Echoes, several tenants, ignored items

#[test]
fn message_echoes_parse_and_unusable_ones_are_ignored() {
    let events = events("project/echo_messages");
    assert_eq!(events.len(), 3);
    let echoes: Vec<&Echo> = events
        .iter()
        .filter_map(|event| match event {
            WebhookEvent::Echo {
                phone_number_id,
                waba_id,
                echo,
            } => {
                assert_eq!(
                    (phone_number_id.as_str(), waba_id.as_str()),
                    (PHONE_NUMBER_ID, WABA_ID)
                );
                Some(echo)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        echoes,
        [
            &Echo {
                wamid: wamid("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJFQ0hPMDAwMDAwMDAwMDAwMQA="),
                to: chat(CUSTOMER),
                timestamp: 1_739_321_600,
                content: MessageContent::Text {
                    body: "Hi Kerry, Ana here from Loja Azul. I'll take it from here.".into()
                },
            },
            &Echo {
                wamid: wamid("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJFQ0hPMDAwMDAwMDAwMDAwMgA="),
                to: chat(CUSTOMER),
                timestamp: 1_739_321_610,
                content: MessageContent::Image {
                    media_id: "3754859441498128".into(),
                    mime_type: "image/jpeg".into(),
                    caption: Some("The blue ones".into()),
                },
            },
        ]
    );
    assert_eq!(
        events[2],
        WebhookEvent::Ignored {
            phone_number_id: Some(PhoneNumberId::new(PHONE_NUMBER_ID).unwrap()),
            waba_id: WABA_ID.into(),
            reason: IgnoredReason::InvalidEchoRecipient {
                wamid: wamid("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJFQ0hPMDAwMDAwMDAwMDAwMwA="),
                to: "not a number!".into(),
            },
        }
    );
}

#[test]
fn one_body_routes_to_several_tenants_and_ignores_what_it_does_not_know() {
    let events = events("project/multi_tenant");
    let tenant_a = PhoneNumberId::new(PHONE_NUMBER_ID).unwrap();
    let tenant_b = PhoneNumberId::new("207650352242933").unwrap();
    let routes: Vec<(Option<&PhoneNumberId>, &str)> = events
        .iter()
        .map(|event| {
            let kind = match event {
                WebhookEvent::Inbound { .. } => "inbound",
                WebhookEvent::Status { .. } => "status",
                WebhookEvent::Echo { .. } => "echo",
                WebhookEvent::Ignored { .. } => "ignored",
                WebhookEvent::Rejected { .. } => "rejected",
            };
            (event.phone_number_id(), kind)
        })
        .collect();
    assert_eq!(
        routes,
        [
            (Some(&tenant_a), "inbound"),
            (Some(&tenant_a), "status"),
            (None, "ignored"),
            (Some(&tenant_b), "status"),
            (Some(&tenant_b), "ignored"),
            (Some(&tenant_b), "ignored"),
            (Some(&tenant_b), "inbound"),
        ]
    );

    let WebhookEvent::Ignored {
        waba_id, reason, ..
    } = &events[2]
    else {
        panic!()
    };
    assert_eq!(waba_id, WABA_ID);
    assert_eq!(
        reason,
        &IgnoredReason::UnknownField {
            field: "account_update".into()
        }
    );
    assert_eq!(
        reason.to_string(),
        "unknown webhook field \"account_update\""
    );

    let WebhookEvent::Status {
        waba_id, status, ..
    } = &events[3]
    else {
        panic!()
    };
    assert_eq!(waba_id, "203390129340399");
    assert_eq!(
        (status.status, status.timestamp),
        (DeliveryStatus::Delivered, 1_739_323_002)
    );
    assert_eq!(status.recipient, chat("447700900123"));

    let WebhookEvent::Ignored { reason, .. } = &events[4] else {
        panic!()
    };
    assert_eq!(
        reason,
        &IgnoredReason::UnknownStatus {
            wamid: wamid("wamid.TENANT_B.out2"),
            status: "deleted".into()
        }
    );
    let WebhookEvent::Ignored {
        reason: IgnoredReason::Errors { errors },
        ..
    } = &events[5]
    else {
        panic!()
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].code, errors[0].kind().is_retryable()),
        (131_000, true)
    );

    let WebhookEvent::Inbound { message, .. } = &events[6] else {
        panic!()
    };
    assert_eq!(message.from, chat("447700900123"));
    assert_eq!(message.profile_name, None, "no contacts in that change");

    let body = webhook("project/multi_tenant");
    let ChangeValue::Messages(value) = &body.entry[0].changes[0].value else {
        panic!()
    };
    let conversation = value.statuses[0].conversation.as_ref().unwrap();
    assert_eq!(conversation.id, "CONVERSATION_ID_A");
    assert_eq!(conversation.expiration_timestamp, Some(1_739_409_401));
    assert_eq!(conversation.origin.as_ref().unwrap().kind, "service");
    let ChangeValue::Other(other) = &body.entry[0].changes[1].value else {
        panic!()
    };
    assert_eq!(other["event"], "VERIFIED_ACCOUNT");
}

// ---------------------------------------------------------------------------------------------
// Refused bodies

#[test]
fn wire_bodies_parse_to_the_same_values_as_the_pretty_ones() {
    for name in REFERENCE_WEBHOOKS {
        let wire = parse_webhook(&fixture(&format!("wire/{name}.json"))).unwrap();
        assert_eq!(wire, webhook(name), "{name}");
    }
}

#[test]
fn malformed_json_is_a_typed_error_naming_the_position() {
    let raw = fixture("wire/inbound_text.json");
    for (label, bytes) in [
        ("truncated", raw[..raw.len() / 2].to_vec()),
        ("not json", b"hello".to_vec()),
        ("empty", Vec::new()),
        ("trailing garbage", [raw.as_slice(), b"}"].concat()),
        (
            "invalid utf-8",
            [b"{\"object\":\"".as_slice(), &[0xff, 0xfe], b"\"}"].concat(),
        ),
    ] {
        match parse_webhook(&bytes) {
            Err(WebhookError::Malformed { reason }) => {
                assert!(
                    reason.contains("line") && reason.contains("column"),
                    "{label}: {reason}"
                )
            }
            other => panic!("{label}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_required_field_is_named() {
    let text = String::from_utf8(fixture("wire/inbound_text.json")).unwrap();
    for (field, mutated) in [
        ("phone_number_id", text.replace(r#","phone_number_id":"106540352242922""#, "")),
        ("metadata", text.replace(r#""metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"#, "")),
        ("from", text.replace(r#""from":"16505551234","id""#, r#""id""#)),
        ("entry", r#"{"object":"whatsapp_business_account"}"#.to_owned()),
        ("field", text.replace(r#","field":"messages""#, "")),
    ] {
        assert_ne!(mutated, text, "{field}: the mutation did not apply");
        match parse_webhook(mutated.as_bytes()) {
            Err(WebhookError::Invalid { reason }) => {
                assert!(reason.contains(&format!("missing field `{field}`")), "{field}: {reason}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn invalid_ids_are_refused() {
    let text = String::from_utf8(fixture("wire/inbound_text.json")).unwrap();
    for (label, mutated, needle) in [
        (
            "phone number id",
            text.replace("106540352242922", "1065x"),
            "phone number id",
        ),
        (
            "wamid",
            text.replace(
                "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRGMUMyQjlEOEU3QTZCNUM0RAA=",
                "wamid with spaces",
            ),
            "wamid",
        ),
        (
            "sender",
            text.replace(r#""from":"16505551234""#, r#""from":"1650.555""#),
            "chat id",
        ),
        (
            "timestamp",
            text.replace("1739321024", "yesterday"),
            "yesterday",
        ),
    ] {
        match parse_webhook(mutated.as_bytes()) {
            Err(WebhookError::Invalid { reason }) => {
                assert!(reason.contains(needle), "{label}: {reason}")
            }
            other => panic!("{label}: {other:?}"),
        }
    }
}

#[test]
fn an_oversized_body_is_refused_before_parsing() {
    let big = vec![b' '; MAX_WEBHOOK_BODY_BYTES + 1];
    assert_eq!(
        parse_webhook(&big),
        Err(WebhookError::TooLarge {
            len: MAX_WEBHOOK_BODY_BYTES + 1,
            max: 3 * 1024 * 1024
        })
    );
    // A body of exactly the limit is parsed (trailing whitespace is valid JSON).
    let mut at_limit = fixture("wire/inbound_text.json");
    at_limit.resize(MAX_WEBHOOK_BODY_BYTES, b' ');
    assert!(parse_webhook(&at_limit).is_ok());
}

#[test]
fn another_products_body_is_an_unexpected_object() {
    let text = String::from_utf8(fixture("wire/inbound_text.json")).unwrap();
    let same_shape = text.replace("whatsapp_business_account", "instagram");
    assert_eq!(
        parse_webhook(same_shape.as_bytes()),
        Err(WebhookError::UnexpectedObject {
            object: "instagram".into()
        })
    );
    let other_shape =
        r#"{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"2"}}]}]}"#;
    assert_eq!(
        parse_webhook(other_shape.as_bytes()),
        Err(WebhookError::UnexpectedObject {
            object: "page".into()
        })
    );
    let err = parse_webhook(other_shape.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook object is \"page\", expected \"whatsapp_business_account\""
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn raw_webhook_bodies_round_trip_through_json() {
    let names = REFERENCE_WEBHOOKS.iter().chain(PROJECT_WEBHOOKS.iter());
    for name in names {
        let body = webhook(name);
        let json = serde_json::to_vec(&body).unwrap();
        let again = parse_webhook(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, body, "{name}");
        assert_eq!(again.events(), body.events(), "{name}");
    }
}

#[test]
fn every_domain_event_round_trips_through_both_codecs() {
    let mut variants = std::collections::BTreeSet::new();
    for name in REFERENCE_WEBHOOKS.iter().chain(PROJECT_WEBHOOKS.iter()) {
        for event in events(name) {
            assert_both_codecs_round_trip(&event);
            match &event {
                WebhookEvent::Inbound { message, .. } => {
                    assert_both_codecs_round_trip(message);
                    assert_both_codecs_round_trip(&message.content);
                    variants.insert(message.content.kind().to_owned());
                }
                WebhookEvent::Status { status, .. } => {
                    assert_both_codecs_round_trip(status);
                    assert_both_codecs_round_trip(&status.status);
                }
                WebhookEvent::Echo { echo, .. } => assert_both_codecs_round_trip(echo),
                WebhookEvent::Ignored { reason, .. } => assert_both_codecs_round_trip(reason),
                WebhookEvent::Rejected { item, .. } => assert_both_codecs_round_trip(item),
            }
        }
    }
    // No fixture has an unreadable item: a rejected one, as the tolerant parser makes it.
    assert_both_codecs_round_trip(&WebhookEvent::Rejected {
        phone_number_id: Some(PhoneNumberId::new(PHONE_NUMBER_ID).unwrap()),
        waba_id: None,
        item: salesboy_protocol::whatsapp::RejectedItem::new(
            "entry[0].changes[0].value.messages[0]".into(),
            "wamid contains ' ' at byte 5",
            &serde_json::json!({"id": "wamid with spaces"}),
        ),
    });
    let expected = [
        "audio",
        "button_reply",
        "document",
        "hologram",
        "image",
        "interactive.nfm_reply",
        "list_reply",
        "location",
        "quick_reply",
        "reaction",
        "sticker",
        "text",
        "unsupported",
        "video",
    ];
    assert_eq!(variants.into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn every_content_variant_round_trips_through_both_codecs() {
    let contents = [
        MessageContent::Text {
            body: "héllo \u{1F44D}".into(),
        },
        MessageContent::Image {
            media_id: "1".into(),
            mime_type: "image/jpeg".into(),
            caption: None,
        },
        MessageContent::Audio {
            media_id: "2".into(),
            mime_type: "audio/ogg".into(),
            voice: true,
        },
        MessageContent::Video {
            media_id: "3".into(),
            mime_type: "video/mp4".into(),
            caption: Some("c".into()),
        },
        MessageContent::Document {
            media_id: "4".into(),
            mime_type: "application/pdf".into(),
            caption: None,
            filename: Some("a.pdf".into()),
        },
        MessageContent::Sticker {
            media_id: "5".into(),
            mime_type: "image/webp".into(),
            animated: false,
        },
        MessageContent::Location {
            latitude: 1.5,
            longitude: -2.25,
            name: None,
            address: Some("x".into()),
        },
        MessageContent::ButtonReply {
            id: "b".into(),
            title: "B".into(),
        },
        MessageContent::ListReply {
            id: "l".into(),
            title: "L".into(),
            description: None,
        },
        MessageContent::QuickReply {
            payload: None,
            text: "Q".into(),
        },
        MessageContent::Reaction {
            emoji: None,
            message_id: wamid("wamid.X"),
        },
        MessageContent::Unsupported {
            kind: "order".into(),
        },
    ];
    for content in contents {
        let message = InboundMessage {
            wamid: wamid("wamid.RT"),
            from: chat(CUSTOMER),
            timestamp: u64::MAX,
            profile_name: None,
            reply_to: Some(wamid("wamid.Q")),
            content,
        };
        assert_both_codecs_round_trip(&message);
    }
    for status in [
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
    ] {
        assert_both_codecs_round_trip(&status);
        assert_both_codecs_round_trip(&StatusUpdate {
            wamid: wamid("wamid.S"),
            recipient: chat(CUSTOMER),
            status,
            timestamp: 0,
            errors: vec![ErrorInfo {
                code: -1,
                title: String::new(),
                message: None,
                details: Some("d".into()),
            }],
        });
    }
}

#[test]
fn a_domain_payload_with_an_invalid_id_does_not_decode() {
    let mut json = serde_json::to_value(single_inbound("inbound_text")).unwrap();
    json["from"] = "1650.555".into();
    let bytes = serde_json::to_vec(&json).unwrap();
    assert!(Codec::Json.decode::<InboundMessage>(&bytes).is_err());
}

// ---------------------------------------------------------------------------------------------
// Send bodies

#[test]
fn the_text_request_serialises_to_the_reference_shape() {
    let request = SendTextRequest::new(
        &chat(CUSTOMER),
        "Yes! The blue sneakers are in stock in size 42. Want me to reserve a pair?",
        Some(&wamid(
            "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRGMUMyQjlEOEU3QTZCNUM0RAA=",
        )),
    );
    let mut expected = json_value("send_text_request.json");
    // The reference addresses the customer by phone number ("+1650…"); the constructor sends
    // to the wa_id, which Meta accepts and recommends. Everything else must match exactly.
    assert_eq!(expected["to"], "+16505551234");
    expected["to"] = CUSTOMER.into();
    assert_eq!(serde_json::to_value(&request).unwrap(), expected);

    let without_reply = SendTextRequest::new(&chat(CUSTOMER), "hi", None).with_preview_url(true);
    let json = serde_json::to_value(&without_reply).unwrap();
    assert!(json.get("context").is_none());
    assert_eq!(
        json["text"],
        serde_json::json!({"preview_url": true, "body": "hi"})
    );

    let parsed: SendTextRequest =
        serde_json::from_value(json_value("send_text_request.json")).unwrap();
    assert_eq!(parsed.to, "+16505551234");
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        json_value("send_text_request.json")
    );
}

#[test]
fn the_template_request_serialises_to_the_reference_shape() {
    let request = SendTemplateRequest::new(
        &chat(CUSTOMER),
        "order_follow_up",
        "en_US",
        vec![TemplateComponent::body(vec![TemplateParameter::text(
            "Kerry",
        )])],
    );
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json_value("send_template_request.json")
    );
    let parsed: SendTemplateRequest =
        serde_json::from_value(json_value("send_template_request.json")).unwrap();
    assert_eq!(parsed, request);

    let button = serde_json::to_value(TemplateComponent::quick_reply_button(0, "STOP")).unwrap();
    assert_eq!(
        button,
        serde_json::json!({"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"STOP"}]})
    );
}

#[test]
fn the_mark_read_request_serialises_to_the_reference_shape() {
    let message = wamid("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRGMUMyQjlEOEU3QTZCNUM0RAA=");
    let request = MarkReadRequest::read_with_typing(&message);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json_value("mark_read_typing_request.json")
    );
    assert_eq!(
        serde_json::to_value(MarkReadRequest::read(&message)).unwrap(),
        serde_json::json!({"messaging_product":"whatsapp","status":"read","message_id":message.as_str()})
    );
    let response: MarkReadResponse =
        serde_json::from_value(json_value("mark_read_response.json")).unwrap();
    assert!(response.success);
}

#[test]
fn send_responses_give_the_new_wamid() {
    let text: SendMessageResponse =
        serde_json::from_value(json_value("send_text_response.json")).unwrap();
    assert_eq!(text.wamid(), Some(&wamid(OUTBOUND_WAMID)));
    assert_eq!(text.contacts[0].input, "+16505551234");
    assert_eq!(text.contacts[0].wa_id, CUSTOMER);
    assert_eq!(text.messages[0].message_status, None);

    let template: SendMessageResponse =
        serde_json::from_value(json_value("send_template_response.json")).unwrap();
    assert_eq!(
        template.wamid(),
        Some(&wamid(
            "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI4QzAwMTEyMjMzNDQ1NTY2NzcA"
        ))
    );
    assert_eq!(
        template.messages[0].message_status.as_deref(),
        Some("accepted")
    );

    for (name, value) in [
        ("send_text_response.json", &text),
        ("send_template_response.json", &template),
    ] {
        assert_eq!(
            serde_json::to_value(value).unwrap(),
            json_value(name),
            "{name}"
        );
    }
    let empty: SendMessageResponse = serde_json::from_str("{}").unwrap();
    assert_eq!(empty.wamid(), None);
}

#[test]
fn the_media_url_response_parses() {
    let media: MediaUrlResponse =
        serde_json::from_value(json_value("media_url_response.json")).unwrap();
    assert_eq!(media.id, "2754859441498128");
    assert_eq!(media.file_size, Some(303_833));
    assert_eq!(media.mime_type.as_deref(), Some("image/jpeg"));
    assert!(media.url.starts_with(
        "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=2754859441498128"
    ));
    assert_eq!(
        serde_json::to_value(&media).unwrap(),
        json_value("media_url_response.json")
    );
    let numeric: MediaUrlResponse =
        serde_json::from_str(r#"{"url":"u","id":"1","file_size":12}"#).unwrap();
    assert_eq!(numeric.file_size, Some(12));
}

// ---------------------------------------------------------------------------------------------
// Graph errors

#[test]
fn graph_errors_classify() {
    for (name, code, kind, retryable) in [
        (
            "send_error_130429_throughput.json",
            130_429,
            GraphErrorKind::Throughput,
            true,
        ),
        (
            "send_error_131056_pair_rate.json",
            131_056,
            GraphErrorKind::PairRate,
            true,
        ),
        (
            "send_error_131047.json",
            131_047,
            GraphErrorKind::OutsideWindow,
            false,
        ),
    ] {
        let body: GraphErrorBody = serde_json::from_value(json_value(name)).unwrap();
        let error = &body.error;
        assert_eq!(
            (error.code, error.kind(), error.is_retryable()),
            (code, kind, retryable),
            "{name}"
        );
        assert_eq!(error.error_type.as_deref(), Some("OAuthException"));
        assert!(
            error
                .details()
                .unwrap()
                .starts_with("Message failed to send because"),
            "{name}"
        );
        assert_eq!(
            error
                .error_data
                .as_ref()
                .unwrap()
                .messaging_product
                .as_deref(),
            Some("whatsapp")
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("graph api error {code}: (#{code})")),
            "{error}"
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json_value(name),
            "{name}"
        );
    }

    let throughput: GraphErrorBody =
        serde_json::from_value(json_value("send_error_130429_throughput.json")).unwrap();
    assert_eq!(
        throughput.error.fbtrace_id.as_deref(),
        Some("AzYxWvUtSrQpOnMlKjIhGfE")
    );

    let generic: GraphErrorBody = serde_json::from_str(
        r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"error_subcode":2494010,"fbtrace_id":"Ab1"}}"#,
    )
    .unwrap();
    assert_eq!(generic.error.kind(), GraphErrorKind::Other(100));
    assert_eq!(generic.error.error_subcode, Some(2_494_010));
    assert!(!generic.error.is_retryable());
    assert_eq!(generic.error.details(), None);

    let auth: GraphErrorBody = serde_json::from_str(
        r#"{"error":{"message":"Error validating access token: Session has expired","type":"OAuthException","code":190,"error_subcode":463}}"#,
    )
    .unwrap();
    assert_eq!(auth.error.kind(), GraphErrorKind::Auth);
    assert!(!auth.error.is_retryable());
}
