//! WhatsApp Cloud API formats.
//!
//! - [`webhook`]: webhook bodies as Meta posts them, [`parse_webhook_items`] (item by
//!   item, an unreadable item rejected on its own), [`parse_webhook`] (strict) and their
//!   normalisation into [`WebhookEvent`]s;
//! - [`inbound`]: the domain forms that travel between nodes (bincode-safe):
//!   [`InboundMessage`], [`StatusUpdate`], [`Echo`], [`WebhookEvent`];
//! - [`signature`]: `X-Hub-Signature-256` verification and the GET handshake;
//! - [`send`]: Graph API send (text, template, interactive, media), mark-read and media
//!   lookup bodies;
//! - [`error`]: Graph API error bodies and their retry classification.

pub mod error;
pub mod inbound;
pub mod send;
pub mod signature;
pub mod webhook;

pub use error::{GraphError, GraphErrorBody, GraphErrorKind};
pub use inbound::{
    DeliveryStatus, Echo, ErrorInfo, IgnoredReason, InboundMessage, MessageContent, RejectedItem,
    StatusUpdate, WebhookEvent,
};
pub use send::{
    MarkReadRequest, OutboundContent, SendContentRequest, SendMessageResponse, SendTemplateRequest,
    SendTextRequest,
};
pub use signature::{SignatureError, sign, verify_signature};
pub use webhook::{
    MAX_WEBHOOK_BODY_BYTES, WebhookBody, WebhookError, parse_webhook, parse_webhook_items,
};
