//! Salesboy's simulation harness.
//!
//! This crate will own:
//! - the load harness (`salesboy-sim run <scenario.toml>`): real `salesboy serve` processes
//!   against real NATS and SQL, with fake WhatsApp Cloud API and LLM servers, reports with
//!   throughput, latency, losses and duplicates computed from what was sent and received;
//! - the seeded fault simulation (`salesboy-sim chaos --seeds A..B`): the cluster on the
//!   in-process bus with a seeded scheduler and invariant checks;
//! - benchmarks of one node (`salesboy-sim bench …`, [`bench`]).
//!
//! The load harness is [`scenario`]; the shipped scenarios are in `simulations/scenarios/`.
//! The seeded fault simulation is [`chaos`]. [`fake_cloud_api`] is the quickstart's stand-in
//! for Meta (`salesboy-sim fake-cloud-api`). [`retrieval_eval`] scores knowledge retrieval,
//! full text vs hybrid (`salesboy-sim retrieval-eval`); [`retrieval_bench`] times semantic
//! search (`salesboy-sim retrieval-bench`). [`web_memory`] measures the resident memory of
//! idle WhatsApp Web sessions (`salesboy-sim web-memory`). [`statement_bench`] times one
//! PostgreSQL round trip by statement size (`salesboy-sim statement-bench`).

pub mod bench;
pub mod chaos;
pub mod cluster_bench;
pub mod fake_cloud_api;
pub mod retrieval_bench;
pub mod retrieval_eval;
pub mod scenario;
pub mod statement_bench;
pub mod web_memory;
