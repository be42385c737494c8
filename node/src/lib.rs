//! The Salesboy gateway node: the process that hosts tenants' actors.
//!
//! This crate owns everything that touches the world: configuration and CLI, the bus (NATS
//! and in-process), cluster membership and placement, the sqlx stores, HTTP (webhooks,
//! admin API, health, metrics) and the real adapters (WhatsApp Cloud API, LLM providers).
//!
//! Modules:
//! - [`alerts`]: the alerts the node evaluates (memory, capacity, database, knowledge, error
//!   rate, nodes down, leader missing) and the conditions raised, for health and metrics;
//! - [`adapters`]: the WhatsApp Cloud API client and the LLM providers (Gemini, OpenAI);
//! - [`api`]: the operations of the admin API and the NATS service API, written once, and
//!   the NATS micro service `salesboy`;
//! - [`assembly`]: building a node from its ports, bus and cluster settings (production and
//!   the fault simulation);
//! - [`background`]: background tasks, tracked and stopped by a cancellation token;
//! - [`backoff`]: retries with exponential backoff and jitter (backon);
//! - [`bus`]: the bus interface (publish, request/reply, subscribe, KV) and its NATS and
//!   in-process implementations;
//! - [`cli`]: the admin commands of the `salesboy` binary (a client of the admin API);
//! - [`cluster`]: membership, directory, placement, rebalancing, migration;
//! - [`config`]: layered configuration (defaults → TOML file → `SALESBOY_*` environment);
//! - [`events`]: the node's event sink (broadcast, log, alerts in the store);
//! - [`http`]: webhook, health, metrics, admin API;
//! - [`ingress`]: persisting webhook deliveries and handing them to the tenants;
//! - [`knowledge`]: knowledge documents split into passages;
//! - [`local`]: single-node epochs;
//! - [`notify`]: systemd's readiness notification (`READY=1`, `STOPPING=1`);
//! - [`process`]: process facts (RSS);
//! - [`retention`]: the periodic deletion of what every growing table holds past its
//!   window, batched and paced, and of dead nodes' membership records;
//! - [`retrieval`]: semantic retrieval: passage vectors, the tenant index cache, hybrid
//!   ranking, the background embedder;
//! - [`routing`]: tenant commands to this node or through the cluster;
//! - [`run`]: wiring a node together, graceful shutdown;
//! - [`secrets`]: secrets at rest (the AEAD, its keys, private files and modes);
//! - [`store`]: the SQL implementation of the actors' `Store` (Postgres and SQLite);
//! - [`telemetry`]: logging set-up;
//! - [`web_hosting`]: `web` tenants stay hosted (their messages come in on their own
//!   connection, not by webhook).
//!
//! The fakes and spawners the tests use are in the `salesboy-testkit` crate.

pub mod adapters;
pub mod alerts;
pub mod api;
pub mod assembly;
pub mod background;
pub mod backoff;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod http;
pub mod ingress;
pub mod knowledge;
pub mod local;
pub mod notify;
pub mod process;
pub mod retention;
pub mod retrieval;
pub mod routing;
pub mod run;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod web_hosting;
