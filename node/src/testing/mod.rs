//! Test support shared by the node's, the simulations' and the cluster's tests: real
//! services started per test and cleaned up on drop.
//!
//! - [`NatsServer`]: a nats-server process with JetStream in a temp dir, on a random port;
//! - [`PostgresDatabase`]: a fresh PostgreSQL database, dropped afterwards;
//! - [`webhooks`]: webhook bodies as Meta sends them;
//! - [`FakeWhatsApp`]: a local WhatsApp Cloud API (messages endpoint) recording what it is sent;
//! - [`FakeLlm`]: a local Gemini and OpenAI-compatible server with deterministic answers;
//! - [`TcpProxy`]: a cuttable TCP forwarder (partitions a node from NATS);
//! - [`ClusterSandbox`]: real `salesboy serve` processes on one NATS and one database.

mod cluster;
mod fake_llm;
mod fake_whatsapp;
mod nats;
mod postgres;
mod proxy;
pub mod webhooks;

pub use cluster::{
    ClusterSandbox, ClusterSandboxBuilder, Db, NODE_STARTUP_TIMEOUT, NodeHandleInfo,
    SANDBOX_ADMIN_TOKEN, SANDBOX_APP_SECRET,
};
pub use fake_llm::{
    FAKE_LLM_EXCERPT_CHARS, FAKE_LLM_MARKER, FakeLlm, FakeLlmOptions, LlmCall, LlmRequestCounts,
    fake_llm_reply,
};
pub use fake_whatsapp::{
    FAKE_GRAPH_VERSION, FailedAttempt, FakeOperation, FakeWhatsApp, FakeWhatsAppOptions, MarkRead,
    SentMessage, SplitMix64, StatusWebhookCounts, StatusWebhooks,
};
pub use nats::{NatsServer, NatsServerError, nats_server_binary};
pub use postgres::{PostgresDatabase, admin_url as postgres_admin_url};
pub use proxy::{MAX_PROXY_CONNECTIONS, ProxyMode, TcpProxy};
