//! Sealed cluster messages: every inbox and control request between nodes, and every answer,
//! travels encrypted and authenticated under the cluster key (ChaCha20-Poly1305, RustCrypto),
//! so a client that can reach NATS but has no key can neither read a message (a tenant
//! handoff carries customers' history) nor forge one (an owner send, a drain, an adoption).
//!
//! A sealed message reads `SBs1 | nonce (12) | ciphertext(issued-at ms (8, big-endian) |
//! message) | tag (16)`. The associated data binds it to where it goes: a request to its
//! subject (a request for one node does not open at another), an answer to its request's
//! nonce (an answer does not open for another request). A request issued more than
//! [`MAX_AGE`] away from the receiver's clock is refused, so a captured request cannot be
//! replayed later; within that window the inbox's dedup (by envelope id, kept longer) drops
//! a replayed envelope. The node seals with the current key and opens with the current and
//! the previous one (rotation, docs/security.md).
//!
//! The values of the cluster's KV buckets (membership, directory, leader lease) are sealed
//! the same way as records ([`ClusterKey::seal_record`], see `sealed_kv`): bound to their
//! bucket and key, with no age limit (a record lives as long as it is not overwritten).
//!
//! Every refusal is counted: `salesboy_bus_rejected_total{reason}` (`unsigned`, `forged`,
//! `stale`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tracing::warn;

use crate::config::Config;
use crate::secrets::{SecretsError, SecretsKey};

/// The first bytes of every sealed message, with the format's version.
pub const MAGIC: &[u8; 4] = b"SBs1";
/// Bytes of a nonce.
const NONCE_LEN: usize = 12;
/// Bytes a seal adds to a message.
pub const OVERHEAD: usize = MAGIC.len() + NONCE_LEN + 8 + 16;
/// How far a request's issue time may be from the receiver's clock (the nodes' clocks must
/// agree within it).
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// A request's nonce: what its answer is bound to.
pub type RequestNonce = [u8; NONCE_LEN];

/// Why a sealed message was refused. Carries no key and no content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not sealed at all (an old node, or someone without the key).
    #[error("the message is not sealed with the cluster key")]
    Unsigned,
    /// Sealed, but opens under neither key, or not for this place: forged or altered.
    #[error("the message does not open under the cluster key: forged, altered or misdirected")]
    Forged,
    /// Sealed under the key, but issued too long ago (or ahead): a replay, or clocks apart.
    #[error("the message was issued more than {MAX_AGE:?} from this node's clock")]
    Stale,
}

impl SealError {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Forged => "forged",
            Self::Stale => "stale",
        }
    }

    /// Counts the refusal of a message on `subject` and logs it (never its content).
    pub fn record(self, subject: &str) {
        metrics::counter!("salesboy_bus_rejected_total", "reason" => self.reason()).increment(1);
        warn!(
            subject,
            reason = self.reason(),
            "cluster message refused: {self}"
        );
    }
}

/// Why the cluster key could not be had. Never carries a key.
#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    /// A setting or file does not hold a key.
    #[error("{what}: {source}")]
    Bad {
        /// The setting or file.
        what: String,
        /// What is wrong.
        source: SecretsError,
    },
    /// A key file could not be read.
    #[error("cannot read the cluster key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cluster without a key.
    #[error(
        "no cluster key: a node on NATS needs SALESBOY_CLUSTER_KEY or SALESBOY_CLUSTER_KEY_FILE, \
         the same on every node (`salesboy secrets generate-key FILE` makes one)"
    )]
    Missing,
}

/// What part of a round trip a seal is for.
#[derive(Clone, Copy)]
enum Part {
    Request = 1,
    Answer = 2,
    Record = 3,
}

/// The cluster key: the current one seals, the current and the previous open. `Debug` shows
/// the key ids only.
#[derive(Clone)]
pub struct ClusterKey {
    current: ChaCha20Poly1305,
    previous: Option<ChaCha20Poly1305>,
    ids: String,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.ids)
    }
}

/// A request opened: the message and the nonce its answer is bound to.
#[derive(Debug)]
pub struct Opened {
    /// The message.
    pub message: Vec<u8>,
    /// The request's nonce.
    pub nonce: RequestNonce,
}

impl ClusterKey {
    /// The key from 32-byte keys (base64 or hex, as the secrets key).
    pub fn new(current: &SecretsKey, previous: Option<&SecretsKey>) -> Self {
        let mut ids = current.id().to_owned();
        if let Some(previous) = previous {
            ids = format!("{ids}, previous {}", previous.id());
        }
        Self {
            current: cipher(current),
            previous: previous.map(cipher),
            ids,
        }
    }

    /// The key from its text (base64 or hex of 32 bytes) and the previous one's.
    pub fn parse(current: &str, previous: Option<&str>) -> Result<Self, SecretsError> {
        let current = SecretsKey::parse(current)?;
        let previous = previous.map(SecretsKey::parse).transpose()?;
        Ok(Self::new(&current, previous.as_ref()))
    }

    /// The key `config` names (`cluster_key` or `cluster_key_file`, and the previous one);
    /// `None` when none is set.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ClusterKeyError> {
        let read = |inline: &Option<secrecy::SecretString>,
                    file: &Option<std::path::PathBuf>,
                    what: &str|
         -> Result<Option<SecretsKey>, ClusterKeyError> {
            let (text, what) = match (inline, file) {
                (Some(key), _) => (
                    secrecy::SecretString::from(key.expose_secret().to_owned()),
                    what.to_owned(),
                ),
                (None, Some(path)) => (
                    secrecy::SecretString::from(std::fs::read_to_string(path).map_err(
                        |source| ClusterKeyError::Read {
                            path: path.clone(),
                            source,
                        },
                    )?),
                    format!("the cluster key file {}", path.display()),
                ),
                (None, None) => return Ok(None),
            };
            SecretsKey::parse(text.expose_secret())
                .map(Some)
                .map_err(|source| ClusterKeyError::Bad { what, source })
        };
        let Some(current) = read(&config.cluster_key, &config.cluster_key_file, "cluster_key")?
        else {
            return Ok(None);
        };
        let previous = read(
            &config.cluster_previous_key,
            &config.cluster_previous_key_file,
            "cluster_previous_key",
        )?;
        Ok(Some(Self::new(&current, previous.as_ref())))
    }

    /// Seals a request to `subject`; the nonce opens its answer.
    pub fn seal_request(&self, subject: &str, message: &[u8]) -> (Bytes, RequestNonce) {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.seal(&nonce, Part::Request, subject.as_bytes(), message);
        (sealed, nonce.into())
    }

    /// Opens a request received on `subject`.
    pub fn open_request(&self, subject: &str, sealed: &[u8]) -> Result<Opened, SealError> {
        let (nonce, issued, message) = self.open(Part::Request, subject.as_bytes(), sealed)?;
        let now = unix_ms(SystemTime::now());
        if now.abs_diff(issued) > MAX_AGE.as_millis() as u64 {
            return Err(SealError::Stale);
        }
        Ok(Opened { message, nonce })
    }

    /// Seals the answer to the request with `nonce`.
    pub fn seal_answer(&self, request: &RequestNonce, message: &[u8]) -> Bytes {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        self.seal(&nonce, Part::Answer, request, message)
    }

    /// Opens the answer to the request with `nonce`.
    pub fn open_answer(&self, request: &RequestNonce, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open(Part::Answer, request, sealed)
            .map(|(_, _, message)| message)
    }

    /// Seals the value of `key` in the KV `bucket`.
    pub fn seal_record(&self, bucket: &str, key: &str, value: &[u8]) -> Bytes {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        self.seal(&nonce, Part::Record, &record_place(bucket, key), value)
    }

    /// Opens the value of `key` in the KV `bucket` (a value sealed for another key does not
    /// open: it was moved there).
    pub fn open_record(
        &self,
        bucket: &str,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        self.open(Part::Record, &record_place(bucket, key), sealed)
            .map(|(_, _, value)| value)
    }

    fn seal(&self, nonce: &Nonce, part: Part, bound: &[u8], message: &[u8]) -> Bytes {
        let mut plaintext = Vec::with_capacity(8 + message.len());
        plaintext.extend_from_slice(&unix_ms(SystemTime::now()).to_be_bytes());
        plaintext.extend_from_slice(message);
        let aad = associated_data(part, bound);
        let ciphertext = self
            .current
            .encrypt(
                nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(nonce);
        sealed.extend_from_slice(&ciphertext);
        Bytes::from(sealed)
    }

    fn open(
        &self,
        part: Part,
        bound: &[u8],
        sealed: &[u8],
    ) -> Result<(RequestNonce, u64, Vec<u8>), SealError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::Unsigned)?;
        if rest.len() < OVERHEAD - MAGIC.len() {
            return Err(SealError::Forged);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        let aad = associated_data(part, bound);
        let payload = || Payload {
            msg: ciphertext,
            aad: &aad,
        };
        let plaintext = self
            .current
            .decrypt(nonce, payload())
            .or_else(|e| match &self.previous {
                Some(previous) => previous.decrypt(nonce, payload()),
                None => Err(e),
            })
            .map_err(|_| SealError::Forged)?;
        let (issued, message) = plaintext.split_at(8);
        let issued = u64::from_be_bytes(issued.try_into().expect("8 bytes"));
        Ok(((*nonce).into(), issued, message.to_vec()))
    }
}

/// The cipher of a key: a key of its own, derived (HMAC-SHA256), so the same 32 bytes used
/// as a secrets key too would not seal both.
fn cipher(key: &SecretsKey) -> ChaCha20Poly1305 {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"salesboy cluster seal v1");
    let mut derived = secrecy::zeroize::Zeroizing::new([0u8; 32]);
    derived.copy_from_slice(&mac.finalize().into_bytes());
    ChaCha20Poly1305::new(derived.as_ref().into())
}

fn associated_data(part: Part, bound: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + bound.len());
    aad.extend_from_slice(b"salesboy cluster v1\0");
    aad.push(part as u8);
    aad.extend_from_slice(bound);
    aad
}

/// What a record is bound to: its bucket and key (a NUL cannot occur in either).
fn record_place(bucket: &str, key: &str) -> Vec<u8> {
    [bucket.as_bytes(), b"\0", key.as_bytes()].concat()
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn a_request_opens_only_under_the_key_and_at_its_subject_and_its_answer_only_for_it() {
        let key = ClusterKey::parse(A, None).unwrap();
        let (sealed, nonce) = key.seal_request("sb.v1.node.n1.in", b"drain");
        assert!(
            !sealed.windows(5).any(|w| w == b"drain"),
            "not in the clear"
        );
        let opened = key.open_request("sb.v1.node.n1.in", &sealed).unwrap();
        assert_eq!(opened.message, b"drain");
        assert_eq!(opened.nonce, nonce);
        assert_eq!(
            key.open_request("sb.v1.node.n2.in", &sealed).unwrap_err(),
            SealError::Forged
        );
        let other = ClusterKey::parse(B, None).unwrap();
        assert_eq!(
            other.open_request("sb.v1.node.n1.in", &sealed).unwrap_err(),
            SealError::Forged
        );
        assert_eq!(
            key.open_request("sb.v1.node.n1.in", b"drain").unwrap_err(),
            SealError::Unsigned
        );
        let mut altered = sealed.to_vec();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            key.open_request("sb.v1.node.n1.in", &altered).unwrap_err(),
            SealError::Forged
        );
        let answer = key.seal_answer(&nonce, b"ok");
        assert_eq!(key.open_answer(&nonce, &answer).unwrap(), b"ok");
        let (_, another) = key.seal_request("sb.v1.node.n1.in", b"x");
        assert_eq!(
            key.open_answer(&another, &answer).unwrap_err(),
            SealError::Forged
        );
    }

    #[test]
    fn a_record_opens_only_under_the_key_and_at_its_bucket_and_key() {
        let key = ClusterKey::parse(A, None).unwrap();
        let sealed = key.seal_record("sb_directory", "acme", b"{\"node\":\"n1\"}");
        assert!(!sealed.windows(4).any(|w| w == b"node"), "not in the clear");
        assert_eq!(
            key.open_record("sb_directory", "acme", &sealed).unwrap(),
            b"{\"node\":\"n1\"}"
        );
        for (bucket, other) in [("sb_directory", "globex"), ("sb_nodes", "acme")] {
            assert_eq!(
                key.open_record(bucket, other, &sealed).unwrap_err(),
                SealError::Forged
            );
        }
        let (request, _) = key.seal_request("sb_directory\0acme", b"x");
        assert_eq!(
            key.open_record("sb_directory", "acme", &request)
                .unwrap_err(),
            SealError::Forged,
            "a request is not a record"
        );
        assert_eq!(
            key.open_record("sb_directory", "acme", b"{}").unwrap_err(),
            SealError::Unsigned
        );
        let other = ClusterKey::parse(B, None).unwrap();
        assert_eq!(
            other
                .open_record("sb_directory", "acme", &sealed)
                .unwrap_err(),
            SealError::Forged
        );
    }

    #[test]
    fn during_a_rotation_both_keys_open_and_the_new_one_seals() {
        let old = ClusterKey::parse(A, None).unwrap();
        let rotating = ClusterKey::parse(B, Some(A)).unwrap();
        let (from_old, _) = old.seal_request("s", b"m");
        assert_eq!(rotating.open_request("s", &from_old).unwrap().message, b"m");
        let (from_new, _) = rotating.seal_request("s", b"m");
        assert!(old.open_request("s", &from_new).is_err());
        assert!(!format!("{rotating:?}").contains(A));
    }

    #[test]
    fn an_old_request_is_refused() {
        let key = ClusterKey::parse(A, None).unwrap();
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut plaintext = (unix_ms(SystemTime::now()) - 61_000).to_be_bytes().to_vec();
        plaintext.extend_from_slice(b"drain");
        let aad = associated_data(Part::Request, b"s");
        let ciphertext = key
            .current
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        let sealed = [MAGIC.as_slice(), nonce.as_slice(), &ciphertext].concat();
        assert_eq!(
            key.open_request("s", &sealed).unwrap_err(),
            SealError::Stale
        );
    }
}
