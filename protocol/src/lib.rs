//! Salesboy's wire vocabulary: pure types, no IO, no async runtime.
//!
//! This crate owns everything two parties must agree on:
//!
//! - [`ids`]: validated identifiers (tenants, chats, nodes, messages, WhatsApp ids);
//! - [`address`]: logical actor addresses (`tenant/<tid>/session`, …);
//! - [`subjects`]: the one module that derives NATS subjects, KV buckets and streams;
//! - [`envelope`]: the node-to-node envelope;
//! - [`engine`]: how a tenant's number is reached (Cloud API or WhatsApp Web);
//! - [`events`]: events for external services;
//! - [`codec`]: bincode 2 (node to node) and JSON (external) codecs;
//! - [`whatsapp`]: the WhatsApp Cloud API formats (webhooks and their domain events, sends,
//!   Graph API errors) and webhook signature verification;
//! - [`llm`]: the Gemini and OpenAI-compatible chat formats, their errors and retry hints;
//! - [`version`]: the cluster protocol's version, for rolling upgrades.

pub mod address;
pub mod codec;
pub mod engine;
pub mod envelope;
pub mod events;
pub mod ids;
pub mod llm;
pub mod month;
pub mod subjects;
pub mod version;
pub mod whatsapp;

mod serde_util;

pub use address::ActorAddress;
pub use codec::{Codec, CodecError};
pub use engine::Engine;
pub use envelope::{Envelope, MessageKind};
pub use ids::{ChatId, IdError, MessageId, NodeId, PhoneNumberId, TenantId, Wamid};
pub use version::ProtocolRange;
