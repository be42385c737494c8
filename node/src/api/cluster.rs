//! The cluster view: the nodes and what they host (on a single node, the node itself); a
//! node's drain, asked for.

use super::{Api, ApiError};
use crate::cluster::DrainRequestError;
use crate::cluster::membership::{CallLoad, ReplyLoad};
use crate::cluster::status::{ClusterStatus, NodeStatus};

/// The cluster's nodes and what they host.
pub fn status(api: &Api) -> ClusterStatus {
    if let Some(cluster) = &api.cluster {
        return ClusterStatus::of(cluster);
    }
    let snapshot = api.node.observe();
    let replies = ReplyLoad::of(&api.node.services().counters);
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
            cpu_percent: 0.0,
            replies_sent: replies.sent,
            reply_gateway_ms: replies.gateway_ms,
            reply_llm_ms: replies.llm_ms,
            calls: CallLoad::of(&api.node.services().counters),
        }],
    }
}

/// A drain asked for: the node moves its tenants off, then exits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DrainAccepted {
    /// The node draining.
    pub node_id: String,
}

/// Asks `node` to drain (move every tenant off, then exit) and answers at once; the
/// cluster view shows its progress. 404 for an unknown node, 409 for a node that is not
/// alive, the last live node, or a node alone (not on a cluster).
pub fn drain(api: &Api, node: &str) -> Result<DrainAccepted, ApiError> {
    let id = salesboy_protocol::NodeId::new(node).map_err(|e| ApiError::invalid("node_id", e))?;
    let Some(cluster) = &api.cluster else {
        return Err(ApiError::NotDrainable(format!(
            "node {id} runs alone: its tenants have nowhere to go (stop it instead)"
        )));
    };
    cluster.request_drain(id.clone()).map_err(|e| match e {
        DrainRequestError::UnknownNode(_) => ApiError::UnknownNode(id.to_string()),
        other @ (DrainRequestError::NotAlive(_) | DrainRequestError::LastNode(_)) => {
            ApiError::NotDrainable(other.to_string())
        }
    })?;
    Ok(DrainAccepted {
        node_id: id.to_string(),
    })
}
