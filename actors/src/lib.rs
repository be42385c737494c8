//! Salesboy's actor tree (ractor) and the small traits through which it reaches the world.
//!
//! ```text
//! NodeSupervisor (one per node)            node/
//!  └ TenantSupervisor (per hosted tenant)   tenant/
//!     ├ SessionActor      (WhatsApp number) session.rs
//!     ├ ResponderActor    (LLM replies)     responder/
//!     └ ConversationActor × chats           conversation.rs
//! ```
//!
//! Modules:
//! - [`ports`]: the traits actors use to reach WhatsApp, LLMs, the clock, events, epochs;
//! - [`web`]: the WhatsApp Web engine's client, as the session actor drives it;
//! - [`store`]: the durable-state role traits (tenants, fencing, messages, knowledge, usage,
//!   events, retention), [`store::Store`] that unites them, and their records;
//! - [`services`]: what every actor of a node shares (ports, settings, cache, gauges);
//! - [`supervision`]: restart policy (backoff, give up after N failures in a window);
//! - [`stop`]: why actors stop ([`stop::StopReason`]) and how supervisors read an exit;
//! - [`node`], [`tenant`], [`session`], [`responder`], [`conversation`]: the actors;
//! - [`command`]: what the rest of the gateway asks of a tenant ([`command::TenantCommand`]),
//!   the one type from the webhook hand-off through the node inbox to the tenant actor;
//! - [`error`]: why an activation or a tenant command failed;
//! - [`ledger`]: the node's record of reply sends under way and lately finished;
//! - [`handoff`]: the state a tenant subtree carries when it moves between nodes;
//! - [`links`], [`rpc`]: small plumbing.
//!
//! This crate never imports HTTP, SQL or NATS: the node crate implements the ports.

pub mod command;
pub mod conversation;
pub mod error;
pub mod handoff;
pub mod ledger;
pub mod links;
pub mod node;
pub mod ports;
pub mod responder;
pub mod rpc;
pub mod services;
pub mod session;
pub mod stop;
pub mod store;
pub mod supervision;
pub mod tenant;
pub mod web;
