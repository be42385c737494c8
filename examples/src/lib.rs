//! External clients of a Salesboy gateway (`docs/protocol.md`), as the services around it
//! write them: plain NATS and HTTP, raw JSON, none of the gateway's own types.
//!
//! - `commander`: sends service API commands (`sb.v1.api…`) and prints the answers;
//! - `consumer`: a durable JetStream consumer of one tenant's events that resumes where it
//!   stopped;
//! - `webhook_receiver`: an HTTP endpoint for event webhooks that checks each signature.
//!
//! Run one with `cargo run -p salesboy-examples --bin <name> -- --help`.

/// The `NATS_URL` environment variable, or the local default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}
