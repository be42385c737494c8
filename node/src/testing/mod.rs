//! Test support shared by the node's, the simulations' and the cluster's tests: real
//! services started per test and cleaned up on drop.
//!
//! - [`NatsServer`]: a nats-server process with JetStream in a temp dir, on a random port;
//! - [`PostgresDatabase`]: a fresh PostgreSQL database, dropped afterwards;
//! - [`webhooks`]: webhook bodies as Meta sends them;
//! - [`FakeWhatsApp`]: a local WhatsApp Cloud API (messages endpoint) recording what it is sent;
//! - [`FakeLlm`]: a local Gemini and OpenAI-compatible server with deterministic answers.

mod fake_llm;
mod fake_whatsapp;
mod nats;
mod postgres;
pub mod webhooks;

pub use fake_llm::{
    FAKE_LLM_EXCERPT_CHARS, FAKE_LLM_MARKER, FakeLlm, FakeLlmOptions, LlmRequestCounts,
    fake_llm_reply,
};
pub use fake_whatsapp::{
    FAKE_GRAPH_VERSION, FailedAttempt, FakeOperation, FakeWhatsApp, FakeWhatsAppOptions, MarkRead,
    SentMessage,
};
pub use nats::{NatsServer, NatsServerError, nats_server_binary};
pub use postgres::{PostgresDatabase, admin_url as postgres_admin_url};
