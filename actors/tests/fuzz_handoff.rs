//! Property tests (proptest) of what a node decodes from another (docs/security.md,
//! "Fuzzing"): tenant handoffs (snapshots) and tenant commands. Arbitrary bytes and edited
//! valid encodings never make the bincode or JSON decoder panic; generated values
//! round-trip. `PROPTEST_CASES` sets the cases per property (256 by default).

use proptest::prelude::*;
use salesboy_actors::command::TenantCommand;
use salesboy_actors::conversation::InboundItem;
use salesboy_actors::handoff::{ConversationHandoff, QueuedSend, SessionHandoff, TenantHandoff};
use salesboy_actors::ports::Turn;
use salesboy_actors::session::SessionStatus;
use salesboy_protocol::codec::BINCODE_FORMAT_VERSION;
use salesboy_protocol::{ChatId, Codec, TenantId, Wamid};

fn chat() -> impl Strategy<Value = ChatId> {
    "[0-9]{1,20}".prop_map(|chat| ChatId::new(chat).unwrap())
}

fn wamid() -> impl Strategy<Value = Wamid> {
    "wamid\\.[A-Za-z0-9=]{1,40}".prop_map(|wamid| Wamid::new(wamid).unwrap())
}

fn item() -> impl Strategy<Value = InboundItem> {
    (
        any::<i64>(),
        prop::option::of(wamid()),
        prop::option::of("\\PC{0,40}"),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(id, wamid, text, received_ms, sent_ms)| InboundItem {
            id,
            wamid,
            text,
            received_ms,
            sent_ms,
            predecessor: Default::default(),
        })
}

fn command() -> impl Strategy<Value = TenantCommand> {
    prop_oneof![
        (chat(), item()).prop_map(|(chat, item)| TenantCommand::Inbound { chat, item }),
        (chat(), item()).prop_map(|(chat, item)| TenantCommand::InboundNewChat { chat, item }),
        (chat(), any::<i64>())
            .prop_map(|(chat, at_ms)| TenantCommand::OwnerActivity { chat, at_ms }),
        (chat(), prop::option::of(any::<i64>()))
            .prop_map(|(chat, until_ms)| TenantCommand::SetPaused { chat, until_ms }),
        (chat(), "\\PC{0,40}").prop_map(|(chat, body)| TenantCommand::OwnerSend { chat, body }),
        (chat(), "\\PC{0,40}", "[a-z0-9-]{0,16}").prop_map(|(chat, body, client_ref)| {
            TenantCommand::OwnerSendOnce {
                chat,
                body,
                client_ref,
            }
        }),
        Just(TenantCommand::Reload),
        Just(TenantCommand::Start),
    ]
}

fn handoff() -> impl Strategy<Value = TenantHandoff> {
    let turn = (any::<bool>(), "\\PC{0,30}").prop_map(|(customer, text)| {
        if customer {
            Turn::customer(text)
        } else {
            Turn::business(text)
        }
    });
    let conversation = (
        chat(),
        prop::collection::vec(item(), 0..3),
        prop::collection::vec(turn, 0..4),
        prop::option::of(any::<i64>()),
    )
        .prop_map(
            |(chat, pending, history, paused_until_ms)| ConversationHandoff {
                chat,
                pending,
                history,
                paused_until_ms,
            },
        );
    let send = (
        any::<i64>(),
        chat(),
        "\\PC{0,30}",
        prop::option::of(wamid()),
        any::<u32>(),
    )
        .prop_map(|(outbound_id, chat, body, reply_to, attempts)| QueuedSend {
            outbound_id,
            chat,
            body,
            reply_to,
            attempts,
        });
    let status = prop::sample::select(vec![
        SessionStatus::Connected,
        SessionStatus::RateLimited,
        SessionStatus::AuthFailed,
    ]);
    let session = (prop::collection::vec(send, 0..3), any::<u64>(), status).prop_map(
        |(queue, blocked_for_ms, status)| SessionHandoff {
            queue,
            blocked_for_ms,
            status,
        },
    );
    (
        "[A-Za-z0-9_-]{1,64}",
        any::<u64>(),
        prop::collection::vec(conversation, 0..3),
        prop::option::of(session),
        prop::collection::vec(command(), 0..4),
    )
        .prop_map(
            |(tenant, epoch, conversations, session, held)| TenantHandoff {
                tenant: TenantId::new(tenant).unwrap(),
                epoch,
                conversations,
                session,
                held,
            },
        )
}

/// Decoding garbage gives an error or a value that reads back the same; never a panic.
fn decodes_or_errs(bytes: &[u8]) {
    for codec in [Codec::Bincode, Codec::Json] {
        if let Ok(handoff) = codec.decode::<TenantHandoff>(bytes) {
            let again = codec.encode(&handoff).unwrap();
            assert_eq!(codec.decode::<TenantHandoff>(&again).unwrap(), handoff);
        }
        if let Ok(command) = codec.decode::<TenantCommand>(bytes) {
            let again = codec.encode(&command).unwrap();
            assert_eq!(codec.decode::<TenantCommand>(&again).unwrap(), command);
        }
    }
}

/// Overwrites, inserts (runs of 0xFF: varint lengths near `u64::MAX`) and a cut.
fn edit(bytes: &mut Vec<u8>, edits: &[(usize, u8, bool)], cut: Option<usize>) {
    for &(at, byte, huge) in edits {
        let at = at % (bytes.len() + 1);
        if huge {
            bytes.splice(at..at, [0xFF; 9]);
        } else if at < bytes.len() {
            bytes[at] = byte;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        versioned in any::<bool>(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        if versioned {
            bytes.insert(0, BINCODE_FORMAT_VERSION);
        }
        decodes_or_errs(&bytes);
    }

    #[test]
    fn handoffs_and_commands_round_trip(handoff in handoff()) {
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode(&handoff).unwrap();
            prop_assert_eq!(&codec.decode::<TenantHandoff>(&bytes).unwrap(), &handoff);
            for command in &handoff.held {
                let bytes = codec.encode(command).unwrap();
                prop_assert_eq!(&codec.decode::<TenantCommand>(&bytes).unwrap(), command);
            }
        }
    }

    #[test]
    fn edited_handoffs_never_panic(
        handoff in handoff(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6),
        cut in prop::option::of(any::<usize>()),
    ) {
        for codec in [Codec::Bincode, Codec::Json] {
            let mut bytes = codec.encode(&handoff).unwrap();
            edit(&mut bytes, &edits, cut);
            decodes_or_errs(&bytes);
        }
    }
}
