//! Identifiers, validated at construction.
//!
//! Every id that can end up in a NATS subject (tenant, chat, node) is restricted to
//! `[A-Za-z0-9_-]`, so it is always a single safe subject token: no `.`, `*`, `>` or
//! whitespace can reach the subject module. Invalid input is an [`IdError`], never a panic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier was being built.
        kind: &'static str,
    },
    /// The input was longer than the identifier allows.
    #[error("{kind} is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Which identifier was being built.
        kind: &'static str,
        /// The input's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input held a character the identifier does not allow.
    #[error("{kind} contains {found:?} at byte {at}; allowed: {allowed}")]
    InvalidChar {
        /// Which identifier was being built.
        kind: &'static str,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
        /// A description of the allowed characters.
        allowed: &'static str,
    },
}

const TOKEN_CHARS: &str = "ASCII letters, digits, '_' and '-'";
const DIGITS: &str = "ASCII digits";

fn validate(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max,
        });
    }
    match value.char_indices().find(|(_, c)| !ok(*c)) {
        Some((at, found)) => Err(IdError::InvalidChar {
            kind,
            found,
            at,
            allowed,
        }),
        None => Ok(()),
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

/// Declares a validated string identifier with `new`, `as_str`, `Display`, `FromStr`,
/// `AsRef<str>` and serde that validates on deserialisation.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, kind = $kind:literal, max = $max:expr, allowed = $allowed:expr, ok = $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value, Self::MAX_LEN, $allowed, $ok)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A business using Salesboy. Safe as one NATS subject token.
    TenantId, kind = "tenant id", max = 64, allowed = TOKEN_CHARS, ok = is_token_char
);

string_id!(
    /// A customer's chat with a tenant: the customer's WhatsApp id (`wa_id`). Safe as one
    /// NATS subject token.
    ChatId, kind = "chat id", max = 64, allowed = TOKEN_CHARS, ok = is_token_char
);

string_id!(
    /// A gateway node of the cluster. Safe as one NATS subject token and KV key.
    NodeId, kind = "node id", max = 64, allowed = TOKEN_CHARS, ok = is_token_char
);

string_id!(
    /// Meta's id of a WhatsApp business phone number (`metadata.phone_number_id`); tenants
    /// are routed on it.
    PhoneNumberId, kind = "phone number id", max = 32, allowed = DIGITS, ok = is_digit
);

string_id!(
    /// Meta's id of one WhatsApp message (`wamid.…`). Unique per tenant; the dedup key of
    /// inbound messages and the key of outbound status updates.
    Wamid, kind = "wamid", max = 256, allowed = "printable ASCII without whitespace",
    ok = |c: char| c.is_ascii_graphic()
);

/// A cluster message id: 128 bits, unique per message, the receivers' dedup key.
///
/// The protocol crate does no IO and has no randomness: the node generates ids
/// (UUID v7) and hands them in through [`MessageId::from_u128`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(u128);

impl MessageId {
    /// Wraps a 128-bit value.
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// The raw 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        const KIND: &str = "message id";
        validate(KIND, s, 32, "hexadecimal digits", |c| c.is_ascii_hexdigit())?;
        u128::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| IdError::Empty { kind: KIND })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_accept_subject_safe_tokens() {
        for ok in ["acme", "acme-shop_2", "A", &"x".repeat(64)] {
            assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn tenant_ids_refuse_subject_metacharacters_and_whitespace() {
        for bad in ["a.b", "a*", ">", "a b", "tab\t", "new\nline", "ünï", "a/b"] {
            let err = TenantId::new(bad).unwrap_err();
            assert!(
                matches!(err, IdError::InvalidChar { .. }),
                "{bad:?} gave {err:?}"
            );
        }
        assert_eq!(TenantId::new(""), Err(IdError::Empty { kind: "tenant id" }));
        assert!(matches!(
            TenantId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
    }

    #[test]
    fn errors_say_what_and_where() {
        let err = ChatId::new("12.5").unwrap_err().to_string();
        assert_eq!(
            err,
            "chat id contains '.' at byte 2; allowed: ASCII letters, digits, '_' and '-'"
        );
    }

    #[test]
    fn phone_number_ids_are_digits() {
        assert!(PhoneNumberId::new("106540352242922").is_ok());
        assert!(PhoneNumberId::new("10654a").is_err());
    }

    #[test]
    fn wamids_are_printable_without_whitespace() {
        assert!(
            Wamid::new("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=").is_ok()
        );
        assert!(Wamid::new("wamid with space").is_err());
    }

    #[test]
    fn deserialisation_validates() {
        let err = serde_json::from_str::<TenantId>("\"bad.tenant\"").unwrap_err();
        assert!(err.to_string().contains("tenant id contains '.'"), "{err}");
        let ok: TenantId = serde_json::from_str("\"good\"").unwrap();
        assert_eq!(ok.as_str(), "good");
    }

    #[test]
    fn message_ids_print_and_parse_as_hex() {
        let id = MessageId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<MessageId>().unwrap(), id);
        assert!("xyz".parse::<MessageId>().is_err());
    }
}
