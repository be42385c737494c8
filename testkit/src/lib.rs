//! Salesboy's test kit: the fakes, spawners, proxy and sandboxes that the node's, the
//! simulations' and the cluster's tests share. Real services are started per test and
//! cleaned up on drop. A dev-dependency of `salesboy-node` and a dependency of
//! `salesboy-sim`: none of it is compiled into the `salesboy` binary
//! (docs/decisions/0008-test-kit-crate.md).
//!
//! Modules:
//! - [`nats`]: [`NatsServer`], a nats-server process with JetStream in a temp dir, on a
//!   random port;
//! - [`postgres`]: [`PostgresDatabase`], a fresh PostgreSQL database, dropped afterwards;
//! - [`databases`]: suites run on both databases: [`FreshDatabase`] (SQLite or
//!   PostgreSQL), a store on it for the length of a test ([`run_on_fresh_store`]), and
//!   [`database_suite!`] to instantiate a suite's tests on both;
//! - [`webhooks`]: webhook bodies as Meta sends them;
//! - [`fake_whatsapp`]: [`FakeWhatsApp`], a local WhatsApp Cloud API (messages endpoint)
//!   recording what it is sent;
//! - [`fake_llm`]: [`FakeLlm`], a local Gemini and OpenAI-compatible server with
//!   deterministic answers;
//! - [`fake_web`]: [`fake_web::ScriptedWeb`], a WhatsApp Web engine the test plays
//!   WhatsApp's part of (events in, sends and pairing recorded);
//! - [`web_engine`]: the real WhatsApp Web engine with no WhatsApp: a `web` tenant at a
//!   claimed epoch, a fresh database holding one ([`web_engine::WebFixture`]), transports
//!   that fail ([`web_engine::FlakyTransport`]) or never answer
//!   ([`web_engine::SilentTransport`]);
//! - `fake_server` (private): what both fakes share, and [`SplitMix64`], their seeded draws;
//! - [`proxy`]: [`TcpProxy`], a cuttable TCP forwarder (partitions a node from NATS);
//! - [`cluster`]: [`ClusterSandbox`], real `salesboy serve` processes on one NATS and one
//!   database;
//! - [`gateway`]: [`Gateway`], a whole node in-process (real SQL, real HTTP) in front of a
//!   [`FakeWhatsApp`];
//! - [`buses`]: buses for tests run once in-process and once on NATS, and a bus whose KV
//!   operations can be cut off;
//! - [`ports`]: stand-ins for the actors' ports (a recording WhatsApp, fixed LLM
//!   providers, epoch 1 for every tenant) and the [`ports::services`] they make with a store;
//! - [`binary`]: the debug `salesboy` binary, built on demand;
//! - [`fake_embedder`]: [`FakeEmbedder`], a local Gemini / OpenAI-compatible embedding
//!   server with a deterministic synonym-aware embedding;
//! - [`free_port`](mod@free_port): free ports on 127.0.0.1 for servers started as
//!   processes, outside the kernel's ephemeral range (where outgoing connections could take
//!   them first);
//! - [`browser`]: [`Browser`], a headless Chromium driven through chromedriver (WebDriver),
//!   for end-to-end tests of served pages; screenshots go to [`artifacts_dir`].

pub mod admin;
pub mod binary;
pub mod browser;
pub mod buses;
pub mod cluster;
pub mod databases;
pub mod fake_embedder;
pub mod fake_llm;
mod fake_server;
pub mod fake_web;
pub mod fake_web_endpoint;
pub mod fake_whatsapp;
pub mod free_port;
pub mod gateway;
pub mod nats;
pub mod nats_cluster;
pub mod ports;
pub mod postgres;
pub mod proxy;
pub mod web_engine;
pub mod webhooks;

pub use binary::{salesboy_binary, workspace_root};
pub use browser::{Browser, Element, artifacts_dir};
pub use cluster::{
    ClusterSandbox, ClusterSandboxBuilder, Db, NODE_STARTUP_TIMEOUT, NodeHandleInfo,
    SANDBOX_ADMIN_TOKEN, SANDBOX_APP_SECRET, SANDBOX_CLUSTER_KEY, SANDBOX_SECRETS_KEY,
    sandbox_cluster_key, sandbox_keyring, sandbox_sealed_bus,
};
pub use databases::{Backend, FreshDatabase, run_on_fresh_database, run_on_fresh_store};
pub use fake_embedder::{FakeEmbedder, FakeEmbedderMode, fake_embedding};
pub use fake_llm::{
    FAKE_LLM_EXCERPT_CHARS, FAKE_LLM_MARKER, FakeLlm, FakeLlmOptions, LlmCall, LlmRequestCounts,
    fake_llm_reply,
};
pub use fake_server::SplitMix64;
pub use fake_web_endpoint::FakeWebEndpoint;
pub use fake_whatsapp::{
    FAKE_GRAPH_VERSION, FailedAttempt, FakeOperation, FakeWhatsApp, FakeWhatsAppOptions, MarkRead,
    SentMessage, StatusWebhookCounts, StatusWebhooks,
};
pub use free_port::{free_port, free_ports};
pub use gateway::{Gateway, eventually};
pub use nats::{NatsServer, NatsServerError, nats_server_binary};
pub use nats_cluster::NatsCluster;
pub use postgres::{PostgresDatabase, admin_url as postgres_admin_url};
pub use proxy::{MAX_PROXY_CONNECTIONS, ProxyMode, TcpProxy};
