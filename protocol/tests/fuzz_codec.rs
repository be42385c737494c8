//! Property tests (proptest) of the node-to-node codec and envelope (docs/security.md,
//! "Fuzzing"): arbitrary bytes, and valid encodings with bytes flipped, cut, spliced or
//! overwritten with huge varint length prefixes, never make the decoders panic — they answer
//! a [`CodecError`] — and generated envelopes round-trip in both codecs.
//!
//! Unbounded allocation is ruled out by construction (the bincode decoder's 16 MiB limit is
//! charged for every length it reads); the "huge length" edits check that such inputs fail
//! at once. `PROPTEST_CASES` sets the cases per property (256 by default).

use proptest::prelude::*;
use salesboy_protocol::codec::{BINCODE_FORMAT_VERSION, Codec, CodecError};
use salesboy_protocol::envelope::{Envelope, MessageKind};
use salesboy_protocol::{ActorAddress, ChatId, MessageId, NodeId, TenantId};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn address() -> impl Strategy<Value = ActorAddress> {
    let tenant = || token().prop_map(|t| TenantId::new(t).unwrap());
    prop_oneof![
        tenant().prop_map(ActorAddress::Session),
        tenant().prop_map(ActorAddress::Responder),
        (tenant(), token())
            .prop_map(|(t, c)| ActorAddress::Conversation(t, ChatId::new(c).unwrap())),
    ]
}

fn kind() -> impl Strategy<Value = MessageKind> {
    prop::sample::select(vec![
        MessageKind::Inbound,
        MessageKind::Status,
        MessageKind::ConversationCommand,
        MessageKind::SessionCommand,
        MessageKind::ResponderRequest,
        MessageKind::Snapshot,
        MessageKind::Control,
        MessageKind::Ack,
    ])
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u128>(),
        token(),
        address(),
        any::<u64>(),
        kind(),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(id, sender, target, epoch, kind, payload)| Envelope {
            id: MessageId::from_u128(id),
            sender: NodeId::new(sender).unwrap(),
            target,
            epoch,
            kind,
            payload,
        })
}

/// Byte edits of an encoding: overwrite, insert, cut, or a run of 0xFF (a varint length
/// near `u64::MAX`).
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Cut(usize),
    HugeLength(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
            any::<usize>().prop_map(Edit::Cut),
            any::<usize>().prop_map(Edit::HugeLength),
        ],
        1..6,
    )
}

fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for edit in edits {
        let at = |at: usize| at % (bytes.len() + 1);
        match *edit {
            Edit::Set(i, byte) => {
                let i = at(i);
                if i < bytes.len() {
                    bytes[i] = byte;
                }
            }
            Edit::Insert(i, byte) => {
                let i = at(i);
                bytes.insert(i, byte);
            }
            Edit::Cut(i) => {
                let i = at(i);
                bytes.truncate(i);
            }
            Edit::HugeLength(i) => {
                let i = at(i);
                bytes.splice(i..i, [0xFF; 9]);
            }
        }
    }
}

/// A decode of garbage answers an error (or, rarely, some value), never panics.
fn decodes_or_errs(bytes: &[u8]) {
    for codec in [Codec::Bincode, Codec::Json] {
        match codec.decode::<Envelope>(bytes) {
            Ok(envelope) => {
                // Whatever decoded is a valid envelope: it encodes and reads back the same.
                let again = codec.encode(&envelope).unwrap();
                assert_eq!(codec.decode::<Envelope>(&again).unwrap(), envelope);
            }
            Err(
                CodecError::Truncated
                | CodecError::UnsupportedVersion { .. }
                | CodecError::Malformed(_)
                | CodecError::TrailingBytes(_),
            ) => {}
            Err(other) => panic!("{codec:?}: unexpected decode error {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes, with or without the right version byte.
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

    /// Envelopes round-trip in both codecs.
    #[test]
    fn envelopes_round_trip(envelope in envelope()) {
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode(&envelope).unwrap();
            prop_assert_eq!(codec.decode::<Envelope>(&bytes).unwrap(), envelope.clone());
        }
    }

    /// A valid encoding edited: an error or a valid envelope, never a panic.
    #[test]
    fn edited_envelopes_never_panic(envelope in envelope(), edits in edits()) {
        for codec in [Codec::Bincode, Codec::Json] {
            let mut bytes = codec.encode(&envelope).unwrap();
            apply(&mut bytes, &edits);
            decodes_or_errs(&bytes);
        }
    }
}
