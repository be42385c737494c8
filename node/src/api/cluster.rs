//! The cluster view: the nodes and what they host (on a single node, the node itself).

use super::Api;
use crate::cluster::status::{ClusterStatus, NodeStatus};

/// The cluster's nodes and what they host.
pub fn status(api: &Api) -> ClusterStatus {
    if let Some(cluster) = &api.cluster {
        return ClusterStatus::of(cluster);
    }
    let snapshot = api.node.observe();
    ClusterStatus {
        tenants: snapshot.tenants,
        leader: None,
        nodes: vec![NodeStatus {
            node_id: api.node_id.clone(),
            http_addr: String::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: salesboy_protocol::ProtocolRange::BUILD.to_string(),
            compatible: true,
            alive: true,
            draining: false,
            placed: snapshot.tenants,
            tenants: snapshot.tenants as u64,
            conversations: snapshot.conversations,
            max_tenants: snapshot.max_tenants as u64,
            rss_bytes: crate::process::rss_bytes().unwrap_or(0),
        }],
    }
}
