//! Placement: which node should host a tenant that is not active anywhere (architecture §7),
//! and the record of a decision with its inputs ([`PlacementDecision`], shown by the
//! dashboard).
//!
//! A [`PlacementStrategy`] picks one node among the live ones it is given. The default,
//! [`MostHeadroom`], takes the non-draining node with the most room left relative to its
//! capacity and never an overloaded one: when every candidate is full the answer is
//! [`PlacementError::ClusterAtCapacity`], not a node over its limit.
//!
//! The strategy is pure: callers pass the live records (from
//! [`Membership::live_nodes`](super::membership::Membership::live_nodes)) and the nodes to
//! avoid (e.g. the one that just refused the tenant). Load figures are those of the last
//! heartbeat, so two placements made within one heartbeat see the same figures; ties are
//! broken by a hash of (tenant, node) so such concurrent placements of different tenants
//! spread over equally loaded nodes instead of piling onto one.

use std::cmp::Ordering;

use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};

use super::membership::NodeRecord;

/// Why a tenant was placed where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementReason {
    /// It was active nowhere and a message (or a command) came for it.
    Activation,
    /// Its node died; the leader placed it elsewhere.
    Failover,
    /// Its node drained.
    Drain,
    /// The leader moved it to even out the spread.
    Rebalance,
}

impl PlacementReason {
    /// The reason's name, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Activation => "activation",
            Self::Failover => "failover",
            Self::Drain => "drain",
            Self::Rebalance => "rebalance",
        }
    }
}

/// One node's load as a placement decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandidateLoad {
    /// The node.
    pub node: String,
    /// Tenants it hosted (its last heartbeat).
    pub tenants: u64,
    /// The most it may host.
    pub max_tenants: u64,
    /// Its resident memory in bytes.
    pub rss_bytes: u64,
    /// Whether it was draining (it takes no tenants then).
    pub draining: bool,
}

impl CandidateLoad {
    /// The load of `record`.
    pub fn of(record: &NodeRecord) -> Self {
        Self {
            node: record.node.to_string(),
            tenants: record.tenants,
            max_tenants: record.max_tenants,
            rss_bytes: record.rss_bytes,
            draining: record.draining,
        }
    }
}

/// A placement decision with its inputs: why a tenant is on its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlacementDecision {
    /// The tenant.
    pub tenant: String,
    /// The node chosen.
    pub node: String,
    /// The epoch it got there, when known.
    pub epoch: Option<u64>,
    /// Why it was placed.
    pub reason: PlacementReason,
    /// The node it left (failover, drain, rebalance).
    pub from: Option<String>,
    /// The node that decided.
    pub decided_by: String,
    /// When (unix ms).
    pub decided_ms: i64,
    /// The live nodes the decision chose among, with their load at the time; the strategy
    /// takes the one with the most headroom `(max − tenants) / max` that is not draining,
    /// not the node left, and not full.
    pub candidates: Vec<CandidateLoad>,
}

/// Why no node could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// There are live nodes that take tenants, and every one of them is full.
    #[error("cluster at capacity: all {nodes} live nodes are full")]
    ClusterAtCapacity {
        /// How many live, non-draining, non-excluded nodes there are.
        nodes: usize,
    },
    /// No live node takes tenants: none is known, or all are draining or excluded.
    #[error("no live nodes to place the tenant on")]
    NoLiveNodes,
}

/// Chooses the node a tenant is activated on.
pub trait PlacementStrategy: Send + Sync {
    /// The node `tenant` should be activated on, among `nodes` (the live ones), never one in
    /// `exclude`.
    fn place(
        &self,
        tenant: &TenantId,
        nodes: &[NodeRecord],
        exclude: &[NodeId],
    ) -> Result<NodeId, PlacementError>;
}

/// The default strategy: the node with the largest relative headroom
/// `(max_tenants − tenants) / max_tenants` among those that are not draining, not excluded
/// and below their capacity (and, if set, below an RSS limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MostHeadroom {
    /// Nodes whose resident memory is at or above this many bytes count as full.
    pub max_rss_bytes: Option<u64>,
}

impl MostHeadroom {
    /// The strategy without a memory limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// The strategy that also treats nodes at or above `bytes` of RSS as full.
    pub fn with_rss_limit(bytes: u64) -> Self {
        Self {
            max_rss_bytes: Some(bytes),
        }
    }

    fn has_room(&self, node: &NodeRecord) -> bool {
        node.tenants < node.max_tenants
            && self
                .max_rss_bytes
                .is_none_or(|limit| node.rss_bytes < limit)
    }
}

impl PlacementStrategy for MostHeadroom {
    fn place(
        &self,
        tenant: &TenantId,
        nodes: &[NodeRecord],
        exclude: &[NodeId],
    ) -> Result<NodeId, PlacementError> {
        let eligible: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|node| !node.draining && !exclude.contains(&node.node))
            .collect();
        if eligible.is_empty() {
            return Err(PlacementError::NoLiveNodes);
        }
        eligible
            .iter()
            .filter(|node| self.has_room(node))
            .max_by(|a, b| {
                compare_headroom(a, b).then_with(|| {
                    tie_break(tenant, &a.node)
                        .cmp(&tie_break(tenant, &b.node))
                        // Equal hashes (practically never): the smaller id wins.
                        .then_with(|| b.node.cmp(&a.node))
                })
            })
            .map(|node| node.node.clone())
            .ok_or(PlacementError::ClusterAtCapacity {
                nodes: eligible.len(),
            })
    }
}

/// Compares `free_a / max_a` with `free_b / max_b` exactly (cross-multiplied, no floats).
/// Only called for nodes with room, so both capacities are positive.
fn compare_headroom(a: &NodeRecord, b: &NodeRecord) -> Ordering {
    let free = |n: &NodeRecord| u128::from(n.max_tenants.saturating_sub(n.tenants));
    (free(a) * u128::from(b.max_tenants)).cmp(&(free(b) * u128::from(a.max_tenants)))
}

/// The deterministic tie-breaker of (tenant, node).
fn tie_break(tenant: &TenantId, node: &NodeId) -> u64 {
    fnv1a(&[tenant.as_str().as_bytes(), node.as_str().as_bytes()])
}

/// 64-bit FNV-1a over `parts`, with a `0xff` byte (never in an id) between them, so
/// `("ab", "c")` and `("a", "bc")` differ. Stable across processes and releases, unlike
/// `std`'s `DefaultHasher`.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        let separator: &[u8] = if i == 0 { &[] } else { &[0xff] };
        for &byte in separator.iter().chain(part.iter()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn id(node: &str) -> NodeId {
        NodeId::new(node).unwrap()
    }

    fn tenant(t: &str) -> TenantId {
        TenantId::new(t).unwrap()
    }

    fn node(name: &str, tenants: u64, max_tenants: u64) -> NodeRecord {
        NodeRecord {
            node: id(name),
            http_addr: format!("{name}:8080"),
            version: "test".into(),
            protocol: salesboy_protocol::ProtocolRange::BUILD,
            max_tenants,
            tenants,
            conversations: 0,
            rss_bytes: 0,
            cpu_percent: 0.0,
            replies: Default::default(),
            calls: Default::default(),
            draining: false,
            started_ms: 0,
            heartbeat_ms: 0,
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn picks_the_largest_relative_headroom() {
        // a: 50 % free, b: 80 % free (fewer slots, but relatively emptier), c: 10 % free.
        let nodes = [node("a", 50, 100), node("b", 2, 10), node("c", 90, 100)];
        assert_eq!(
            MostHeadroom::new().place(&tenant("t"), &nodes, &[]),
            Ok(id("b"))
        );
    }

    #[test]
    fn skips_draining_excluded_and_full_nodes() {
        let mut draining = node("a", 0, 100);
        draining.draining = true;
        let nodes = [
            draining,
            node("b", 10, 10),
            node("c", 0, 100),
            node("d", 99, 100),
        ];
        let strategy = MostHeadroom::new();
        assert_eq!(strategy.place(&tenant("t"), &nodes, &[]), Ok(id("c")));
        assert_eq!(
            strategy.place(&tenant("t"), &nodes, &[id("c")]),
            Ok(id("d"))
        );
    }

    #[test]
    fn all_full_is_cluster_at_capacity_never_an_overloaded_node() {
        let nodes = [node("a", 10, 10), node("b", 12, 10), node("c", 0, 0)];
        let err = MostHeadroom::new()
            .place(&tenant("t"), &nodes, &[])
            .unwrap_err();
        assert_eq!(err, PlacementError::ClusterAtCapacity { nodes: 3 });
        assert_eq!(
            err.to_string(),
            "cluster at capacity: all 3 live nodes are full"
        );
    }

    #[test]
    fn nothing_eligible_is_no_live_nodes() {
        let strategy = MostHeadroom::new();
        assert_eq!(
            strategy.place(&tenant("t"), &[], &[]),
            Err(PlacementError::NoLiveNodes)
        );
        let mut draining = node("a", 0, 10);
        draining.draining = true;
        let nodes = [draining, node("b", 0, 10)];
        assert_eq!(
            strategy.place(&tenant("t"), &nodes, &[id("b")]),
            Err(PlacementError::NoLiveNodes)
        );
    }

    #[test]
    fn rss_limit_counts_as_full_when_set() {
        let mut heavy = node("a", 0, 100);
        heavy.rss_bytes = 2_000;
        let nodes = [heavy, node("b", 50, 100)];
        assert_eq!(
            MostHeadroom::new().place(&tenant("t"), &nodes, &[]),
            Ok(id("a"))
        );
        assert_eq!(
            MostHeadroom::with_rss_limit(1_000).place(&tenant("t"), &nodes, &[]),
            Ok(id("b"))
        );
    }

    #[test]
    fn ties_are_deterministic_and_spread_tenants_out() {
        let nodes = [node("a", 5, 10), node("b", 5, 10), node("c", 5, 10)];
        let strategy = MostHeadroom::new();
        let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for i in 0..300 {
            let t = tenant(&format!("tenant-{i}"));
            let chosen = strategy.place(&t, &nodes, &[]).unwrap();
            // Same input, same answer, whatever the order of the nodes.
            let mut reversed = nodes.clone();
            reversed.reverse();
            assert_eq!(strategy.place(&t, &reversed, &[]).unwrap(), chosen);
            *counts.entry(chosen).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&n| n >= 60), "{counts:?}");
    }
}
