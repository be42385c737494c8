//! Secrets at rest: the values the gateway stores that open doors elsewhere (WhatsApp access
//! tokens, the LLM configurations with their API keys, event webhooks' signing secrets) are
//! written encrypted, with XChaCha20-Poly1305 (RustCrypto) under a key the database never
//! holds.
//!
//! A stored value reads `enc:v1:<key id>:<base64url(nonce | ciphertext)>`: a random 24-byte
//! nonce per value, the key id (8 hex digits of a SHA-256 of the key) naming the key that
//! sealed it. The associated data is the value's place (table, column, tenant and row id,
//! [`SecretContext`]), so a value copied into another row or column does not open. A value
//! without the `enc:` prefix is a plaintext row of a database from before encryption: it
//! reads as it is and is sealed at the next start ([`crate::store::SqlStore::seal_plaintext_secrets`]).
//!
//! A [`Keyring`] seals with its current key and opens with the current and any previous
//! key, so nodes keep reading during a rotation (`salesboy secrets rotate`, docs/security.md).
//!
//! - `keys`: where the keys come from (configuration, key files, the generated key beside
//!   an SQLite database);
//! - `files`: files and directories only the node's user may read (0600, 0700).

pub mod files;
pub mod keys;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

pub use keys::{KEY_FILE_NAME, KeySource, keyring_for};

/// The prefix of every sealed value, with the format's version.
const SEALED_PREFIX: &str = "enc:v1:";
/// Bytes of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;
/// Bytes of a key.
const KEY_LEN: usize = 32;

/// Why a key or a sealed value could not be used. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// A key's text is not 32 bytes in base64 or hex.
    #[error("a secrets key must be 32 bytes, written as base64 (44 characters) or hex (64)")]
    BadKey,
    /// The value was sealed under a key this node does not have.
    #[error(
        "{context} is encrypted under key {key_id}, which is not configured \
         (secrets_key, secrets_previous_key); known keys: {known}"
    )]
    UnknownKey {
        /// Where the value is stored.
        context: String,
        /// The key id the value names.
        key_id: String,
        /// The ids of the keys this node has.
        known: String,
    },
    /// The value does not open under the key it names: altered, or copied from another row.
    #[error("{context} does not decrypt under key {key_id}: altered or copied from another row")]
    Undecryptable {
        /// Where the value is stored.
        context: String,
        /// The key id the value names.
        key_id: String,
    },
    /// The value has the `enc:` prefix but not the format.
    #[error("{context} is not a valid encrypted value")]
    Malformed {
        /// Where the value is stored.
        context: String,
    },
}

/// A 32-byte secrets key, zeroed when dropped; `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretsKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl SecretsKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        Self::from_bytes(bytes)
    }

    /// Reads a key written as base64 (standard or URL-safe, padded or not) or hex.
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let decoded = Zeroizing::new(if text.len() == 2 * KEY_LEN {
            hex::decode(text).map_err(|_| SecretsError::BadKey)?
        } else {
            let url_safe = base64::engine::general_purpose::URL_SAFE;
            STANDARD
                .decode(text)
                .or_else(|_| url_safe.decode(text))
                .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| SecretsError::BadKey)?
        });
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return Err(SecretsError::BadKey);
        }
        bytes.copy_from_slice(&decoded);
        Ok(Self::from_bytes(bytes))
    }

    /// The key as a key file holds it: standard base64.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.bytes))
    }

    /// The key's id: 8 hex digits of a SHA-256 of the key, stored with each value it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's bytes (to derive the cluster key's cipher from).
    pub(crate) fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let digest = Sha256::new()
            .chain_update(b"salesboy secrets key id\0")
            .chain_update(*bytes)
            .finalize();
        let id = hex::encode(&digest[..4]);
        Self { bytes, id }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_ref().into())
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

/// Where a secret is stored: its associated data, and how errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretContext {
    /// `table.column`.
    pub column: &'static str,
    /// The owning tenant.
    pub tenant: String,
    /// The row's own id within the tenant (a phone number id, a webhook id), or empty.
    pub row: String,
}

impl SecretContext {
    /// The associated data sealed with the value.
    fn associated_data(&self) -> String {
        format!("salesboy/{}/{}/{}", self.column, self.tenant, self.row)
    }
}

impl fmt::Display for SecretContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of tenant {}", self.column, self.tenant)?;
        if !self.row.is_empty() {
            write!(f, " ({})", self.row)?;
        }
        Ok(())
    }
}

/// What a stored value was, as [`Keyring::open`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Sealed under the current key.
    Current,
    /// Sealed under a previous key: to seal again.
    Previous,
    /// Plaintext from before encryption: to seal.
    Plaintext,
}

/// The current key (seals and opens) and previous keys (open only).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: SecretsKey,
    previous: Vec<SecretsKey>,
}

impl Keyring {
    /// A keyring sealing with `current` and also opening what `previous` sealed.
    pub fn new(current: SecretsKey, previous: impl IntoIterator<Item = SecretsKey>) -> Self {
        let previous = previous
            .into_iter()
            .filter(|key| key.id() != current.id())
            .collect();
        Self { current, previous }
    }

    /// This keyring sealing with `new`, its keys kept to open.
    pub fn rotated_to(self, new: SecretsKey) -> Self {
        let Self { current, previous } = self;
        Self::new(new, std::iter::once(current).chain(previous))
    }

    /// The key that seals.
    pub fn current(&self) -> &SecretsKey {
        &self.current
    }

    /// Seals `value` for its place.
    pub fn seal(&self, value: &str, context: &SecretContext) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = context.associated_data();
        let sealed = self
            .current
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a String can have");
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}{}:{}",
            self.current.id(),
            URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Opens a stored value (plaintext reads as it is) and says how it was stored.
    pub fn open(
        &self,
        stored: &str,
        context: &SecretContext,
    ) -> Result<(String, Sealing), SecretsError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok((stored.to_owned(), Sealing::Plaintext));
        };
        let malformed = || SecretsError::Malformed {
            context: context.to_string(),
        };
        let (key_id, body) = rest.split_once(':').ok_or_else(malformed)?;
        let (key, sealing) = if key_id == self.current.id() {
            (&self.current, Sealing::Current)
        } else {
            let key = self
                .previous
                .iter()
                .find(|key| key.id() == key_id)
                .ok_or_else(|| SecretsError::UnknownKey {
                    context: context.to_string(),
                    key_id: key_id.to_owned(),
                    known: self.key_ids(),
                })?;
            (key, Sealing::Previous)
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| malformed())?;
        if bytes.len() < NONCE_LEN {
            return Err(malformed());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = context.associated_data();
        let opened = key
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Undecryptable {
                context: context.to_string(),
                key_id: key_id.to_owned(),
            })?;
        let text = String::from_utf8(opened).map_err(|_| malformed())?;
        Ok((text, sealing))
    }

    /// The ids of every key, current first.
    fn key_ids(&self) -> String {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(SecretsKey::id)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether a stored value is sealed (rather than legacy plaintext).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(tenant: &str, row: &str) -> SecretContext {
        SecretContext {
            column: "whatsapp_numbers.access_token",
            tenant: tenant.into(),
            row: row.into(),
        }
    }

    #[test]
    fn sealed_values_open_only_in_their_place_and_under_their_key() {
        let keys = Keyring::new(SecretsKey::generate(), []);
        let sealed = keys.seal("EAAG-secret", &place("acme", "100"));
        assert!(
            is_sealed(&sealed) && !sealed.contains("EAAG-secret"),
            "{sealed}"
        );
        assert_ne!(sealed, keys.seal("EAAG-secret", &place("acme", "100")));
        assert_eq!(
            keys.open(&sealed, &place("acme", "100")).unwrap(),
            ("EAAG-secret".to_owned(), Sealing::Current)
        );
        let moved = keys.open(&sealed, &place("other", "100")).unwrap_err();
        assert!(
            matches!(moved, SecretsError::Undecryptable { .. }),
            "{moved}"
        );
        let stranger = Keyring::new(SecretsKey::generate(), []);
        let error = stranger.open(&sealed, &place("acme", "100")).unwrap_err();
        assert!(matches!(error, SecretsError::UnknownKey { .. }), "{error}");
        assert!(!error.to_string().contains("EAAG"), "{error}");
        // Another character well inside the ciphertext (all six of its bits count),
        // whatever it was.
        let at = sealed.len() - 8;
        let other = if &sealed[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{other}{}", &sealed[..at], &sealed[at + 1..]);
        assert!(keys.open(&tampered, &place("acme", "100")).is_err());
    }

    #[test]
    fn previous_keys_open_and_plaintext_reads_as_it_is() {
        let old = SecretsKey::generate();
        let sealed = Keyring::new(old.clone(), []).seal("k", &place("a", ""));
        let rotated = Keyring::new(SecretsKey::generate(), [old]);
        assert_eq!(
            rotated.open(&sealed, &place("a", "")).unwrap().1,
            Sealing::Previous
        );
        assert_eq!(
            rotated.open("legacy", &place("a", "")).unwrap(),
            ("legacy".to_owned(), Sealing::Plaintext)
        );
        assert!(matches!(
            rotated.open("enc:v1:nope", &place("a", "")),
            Err(SecretsError::Malformed { .. })
        ));
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_print_only_their_id() {
        let key = SecretsKey::generate();
        let again = SecretsKey::parse(&key.to_base64()).unwrap();
        assert_eq!(again.id(), key.id());
        let hex_key = SecretsKey::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(hex_key.id().len(), 8);
        assert!(matches!(
            SecretsKey::parse("short"),
            Err(SecretsError::BadKey)
        ));
        assert_eq!(format!("{key:?}"), format!("SecretsKey({})", key.id()));
    }
}
