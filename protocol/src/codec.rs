//! Codecs: bincode 2 between nodes, JSON for everything external services see.
//!
//! The bincode form is one format-version byte ([`BINCODE_FORMAT_VERSION`], the cluster
//! protocol version this build writes; any version of [`ProtocolRange::BUILD`] is read)
//! followed by the
//! value encoded with bincode's serde API and `config::standard()`, with a size limit so a
//! corrupt length prefix cannot make the decoder allocate without bound. This module is the
//! only place that names bincode, so the binary codec can be swapped (see
//! `docs/decisions/0002-bincode-2.md`).
//!
//! Types that travel in bincode must avoid what bincode's serde support cannot do:
//! internally tagged or untagged enums, `skip_serializing_if`, `flatten`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::version::{PROTOCOL_VERSION, ProtocolRange};

/// The NATS header that names the codec of a message's payload.
pub const CODEC_HEADER: &str = "Sb-Codec";

/// The leading byte of every bincode payload this build writes: the cluster protocol version
/// ([`crate::version`]), bumped when the binary layout changes.
pub const BINCODE_FORMAT_VERSION: u8 = PROTOCOL_VERSION;

/// The largest payload the bincode decoder accepts (16 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

type BincodeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_PAYLOAD_BYTES>,
>;

fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// A payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// bincode 2 with a format-version byte: node-to-node envelopes and snapshots.
    Bincode,
    /// JSON: the external API and events.
    Json,
}

impl Codec {
    /// The value of [`CODEC_HEADER`] for this codec.
    pub const fn header_value(self) -> &'static str {
        match self {
            Self::Bincode => "bincode-v1",
            Self::Json => "json",
        }
    }

    /// The codec named by a [`CODEC_HEADER`] value.
    pub fn from_header_value(value: &str) -> Result<Self, CodecError> {
        match value {
            "bincode-v1" => Ok(Self::Bincode),
            "json" => Ok(Self::Json),
            other => Err(CodecError::UnknownCodec(other.chars().take(64).collect())),
        }
    }

    /// Encodes a value.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Self::Bincode => encode_bincode(value),
            Self::Json => serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string())),
        }
    }

    /// Decodes a value; the whole input must be consumed.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Self::Bincode => decode_bincode(bytes),
            Self::Json => serde_json::from_slice(bytes).map_err(|e| {
                if e.is_eof() {
                    CodecError::Truncated
                } else {
                    CodecError::Malformed(e.to_string())
                }
            }),
        }
    }
}

/// Why a payload could not be encoded or decoded. Plain data (serde): a node tells the
/// sender why it could not read its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CodecError {
    /// The payload ended before the value did (or was empty).
    #[error("payload is truncated")]
    Truncated,
    /// The payload was written in a protocol version this build does not read.
    #[error(
        "payload has protocol version {found}, this build reads versions up to {expected} (docs/upgrades.md)"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The newest version this build reads.
        expected: u8,
    },
    /// The payload is not a valid encoding of the expected type.
    #[error("payload is malformed: {0}")]
    Malformed(String),
    /// Bytes were left over after the value.
    #[error("payload has {0} trailing bytes")]
    TrailingBytes(usize),
    /// The value could not be encoded.
    #[error("value could not be encoded: {0}")]
    Encode(String),
    /// The codec header named no known codec.
    #[error("unknown codec {0:?}")]
    UnknownCodec(String),
}

fn encode_bincode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![BINCODE_FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode_config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

fn decode_bincode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Truncated)?;
    // One layout so far: every version this build reads decodes alike. A new layout adds a
    // branch on `version` here (docs/upgrades.md).
    if !ProtocolRange::BUILD.speaks(version) {
        return Err(CodecError::UnsupportedVersion {
            found: version,
            expected: BINCODE_FORMAT_VERSION,
        });
    }
    let (value, read) =
        bincode::serde::decode_from_slice(body, bincode_config()).map_err(|e| match e {
            bincode::error::DecodeError::UnexpectedEnd { .. } => CodecError::Truncated,
            other => CodecError::Malformed(other.to_string()),
        })?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        text: String,
        count: u64,
        tags: Vec<String>,
        maybe: Option<i32>,
    }

    fn sample() -> Sample {
        Sample {
            text: "héllo".into(),
            count: 42,
            tags: vec!["a".into(), "b".into()],
            maybe: None,
        }
    }

    #[test]
    fn both_codecs_round_trip() {
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode(&sample()).unwrap();
            assert_eq!(
                codec.decode::<Sample>(&bytes).unwrap(),
                sample(),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn bincode_starts_with_the_format_version() {
        let bytes = Codec::Bincode.encode(&sample()).unwrap();
        assert_eq!(bytes[0], BINCODE_FORMAT_VERSION);
    }

    #[test]
    fn another_format_version_is_refused() {
        let mut bytes = Codec::Bincode.encode(&sample()).unwrap();
        bytes[0] = 9;
        assert_eq!(
            Codec::Bincode.decode::<Sample>(&bytes),
            Err(CodecError::UnsupportedVersion {
                found: 9,
                expected: BINCODE_FORMAT_VERSION
            })
        );
    }

    #[test]
    fn truncated_and_empty_payloads_are_refused() {
        let bytes = Codec::Bincode.encode(&sample()).unwrap();
        assert_eq!(
            Codec::Bincode.decode::<Sample>(&[]),
            Err(CodecError::Truncated)
        );
        for cut in 1..bytes.len() {
            assert_eq!(
                Codec::Bincode.decode::<Sample>(&bytes[..cut]),
                Err(CodecError::Truncated),
                "cut at {cut}"
            );
        }
        let json = Codec::Json.encode(&sample()).unwrap();
        assert_eq!(
            Codec::Json.decode::<Sample>(&json[..json.len() - 1]),
            Err(CodecError::Truncated)
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = Codec::Bincode.encode(&sample()).unwrap();
        bytes.push(0);
        assert_eq!(
            Codec::Bincode.decode::<Sample>(&bytes),
            Err(CodecError::TrailingBytes(1))
        );
    }

    #[test]
    fn an_absurd_length_prefix_does_not_allocate() {
        // version byte, then a varint length of u64::MAX for the string.
        let bytes = [
            BINCODE_FORMAT_VERSION,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        assert!(Codec::Bincode.decode::<Sample>(&bytes).is_err());
    }

    #[test]
    fn header_values_round_trip() {
        for codec in [Codec::Bincode, Codec::Json] {
            assert_eq!(
                Codec::from_header_value(codec.header_value()).unwrap(),
                codec
            );
        }
        assert!(matches!(
            Codec::from_header_value("xml"),
            Err(CodecError::UnknownCodec(_))
        ));
    }
}
