//! The cluster: many nodes, one placement per tenant, NATS between them (architecture §7).
//!
//! - [`directory`]: tenant → {node, epoch, state}, cached by a watch;
//! - [`epochs`]: activation under the directory's placement (fencing);
//! - [`membership`]: node records heartbeated into KV, failure detection, self-fencing;
//! - [`leader`]: the rebalancer's leader lease;
//! - [`placement`]: where a tenant should live;
//! - [`rebalance`]: which tenants to move so the spread evens out;
//! - [`runtime`]: routing, the node's inbox and control subject, migration, failover, drain;
//! - [`status`]: the cluster as `GET /api/cluster` and `salesboy status` show it;
//! - [`wire`]: what nodes say to each other.

pub mod directory;
pub mod epochs;
pub mod leader;
pub mod membership;
pub mod placement;
pub mod rebalance;
pub mod runtime;
pub mod status;
pub mod wire;

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
