//! The cluster: many nodes, one placement per tenant, NATS between them (architecture §7).
//!
//! - [`directory`]: tenant → {node, epoch, state}, cached by a watch;
//! - [`epochs`]: activation under the directory's placement (fencing);
//! - [`membership`]: node records heartbeated into KV, failure detection, self-fencing;
//! - [`leader`]: the rebalancer's leader lease;
//! - [`placement`]: where a tenant should live;
//! - [`rebalance`]: which tenants to move so the spread evens out;
//! - [`seal`] and [`sealed_kv`]: cluster messages and KV values sealed under the cluster key;
//! - [`status`]: the cluster as `GET /api/cluster` and `salesboy status` show it;
//! - [`wire`]: what nodes say to each other.
//!
//! This node's member ([`ClusterMember`]), one concern a file:
//! - `member`: the member's state, joining, what it tells the rest of the node;
//! - `router`: delivering a command wherever its tenant lives ([`RouteError`]);
//! - `inbox`: commands from other nodes, answered once per message id;
//! - `control`: control requests between nodes ([`control_request`]);
//! - `migration`: moving a tenant out, adopting one, rolling back moves cut short
//!   ([`MigrationError`]);
//! - `drain`: moving everything off before the node exits ([`DRAIN_TIMEOUT`], [`DrainError`]);
//! - `duties`: failover and rebalancing on the leader, membership events, self-fencing.

pub mod directory;
pub mod epochs;
pub mod leader;
pub mod membership;
pub mod placement;
pub mod placement_log;
pub mod rebalance;
pub mod seal;
pub mod sealed_kv;
pub mod status;
pub mod wire;

mod control;
mod drain;
mod duties;
mod inbox;
mod member;
mod migration;
mod router;

pub use control::control_request;
pub use drain::{DRAIN_TIMEOUT, DrainError, DrainRequestError};
pub use member::{ClusterMember, ClusterParts, ClusterSettings};
pub use migration::MigrationError;
pub use router::RouteError;
pub use seal::{ClusterKey, ClusterKeyError, SealError};
pub use sealed_kv::SealedKvBus;

use salesboy_protocol::NodeId;

/// Whether `node` is known to membership and declared dead. A node membership has not seen
/// yet (its record not yet delivered by the watch) is *not* dead: treating it so would let
/// two nodes host one tenant while views converge.
pub fn is_known_dead(membership: &membership::Membership, node: &NodeId) -> bool {
    membership
        .view()
        .iter()
        .any(|view| &view.record.node == node && !view.alive)
}
