//! A run's schedule, a pure function of its seed: the customers' messages (who writes what,
//! when, through which node's ingress, which webhooks Meta delivers twice), the node faults
//! (kill and restart, pause, cut off from the bus) and the message faults in force until the
//! faults stop.

use super::bus::MessageFaults;
use super::rng::SimRng;

/// One customer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerMessage {
    /// When the customer sends it (simulated ms since the start).
    pub at_ms: u64,
    /// The tenant (index).
    pub tenant: usize,
    /// The customer (index within the tenant).
    pub chat: usize,
    /// Its position in the customer's messages, from 1.
    pub seq: u32,
    /// The node whose ingress Meta posts it to first.
    pub ingress: usize,
    /// Meta delivers the webhook again this long after the first delivery, if at all.
    pub redeliver_after_ms: Option<u64>,
}

/// What happens to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The process dies (kill -9); it restarts after `restart_after_ms`, or when the faults
    /// stop.
    Kill {
        /// How long it stays dead.
        restart_after_ms: Option<u64>,
    },
    /// The process stops for `for_ms` (every call it makes waits), then carries on.
    Pause {
        /// How long.
        for_ms: u64,
    },
    /// The node is cut off from the bus for `for_ms` (database and WhatsApp reachable).
    Partition {
        /// How long.
        for_ms: u64,
    },
}

/// A fault of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFault {
    /// When it starts.
    pub at_ms: u64,
    /// Which node.
    pub node: usize,
    /// What.
    pub kind: FaultKind,
}

impl NodeFault {
    /// When the node is back (restarted, resumed, reconnected), if the fault ends by itself.
    pub fn ends_at_ms(&self) -> Option<u64> {
        match self.kind {
            FaultKind::Kill { restart_after_ms } => restart_after_ms.map(|d| self.at_ms + d),
            FaultKind::Pause { for_ms } | FaultKind::Partition { for_ms } => {
                Some(self.at_ms + for_ms)
            }
        }
    }
}

/// The shape of the simulated world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Tenants.
    pub tenants: usize,
    /// Customers per tenant.
    pub chats: usize,
    /// Messages per customer, at most.
    pub messages: u32,
    /// When the faults stop (simulated ms since the start).
    pub faults_until_ms: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            nodes: 3,
            tenants: 4,
            chats: 2,
            messages: 4,
            faults_until_ms: 30_000,
        }
    }
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// The world's shape.
    pub shape: Shape,
    /// Customer messages, by time.
    pub messages: Vec<CustomerMessage>,
    /// Node faults, by time; one node at a time is faulty.
    pub faults: Vec<NodeFault>,
    /// Message faults in force until the faults stop.
    pub message_faults: MessageFaults,
    /// Thousandths of WhatsApp sends that fail transiently.
    pub whatsapp_transient_per_mille: u64,
    /// The longest store latency.
    pub max_store_latency_ms: u64,
}

impl Plan {
    /// The plan of `seed`.
    pub fn new(seed: u64, shape: Shape) -> Self {
        let mut rng = SimRng::new(seed);
        let until = shape.faults_until_ms;

        let mut messages = Vec::new();
        for tenant in 0..shape.tenants {
            for chat in 0..shape.chats {
                let count = rng.between(1, u64::from(shape.messages.max(1))) as u32;
                let mut at_ms = rng.between(500, until * 2 / 3);
                for seq in 1..=count {
                    messages.push(CustomerMessage {
                        at_ms,
                        tenant,
                        chat,
                        seq,
                        ingress: rng.below(shape.nodes as u64) as usize,
                        redeliver_after_ms: rng.chance(100).then(|| rng.between(10, 3_000)),
                    });
                    // Sometimes a burst (one batch), sometimes a pause between messages.
                    at_ms += if rng.chance(400) {
                        rng.between(10, 250)
                    } else {
                        rng.between(500, 4_000)
                    };
                }
            }
        }
        messages.sort_by_key(|m| (m.at_ms, m.tenant, m.chat, m.seq));

        let mut faults = Vec::new();
        let mut at_ms = rng.between(1_000, 5_000);
        let wanted = rng.below(5);
        while (faults.len() as u64) < wanted && at_ms < until - 2_000 {
            let node = rng.below(shape.nodes as u64) as usize;
            let kind = match rng.below(3) {
                0 => FaultKind::Kill {
                    restart_after_ms: rng.chance(800).then(|| rng.between(500, 8_000)),
                },
                1 => FaultKind::Pause {
                    for_ms: rng.between(300, 6_000),
                },
                _ => FaultKind::Partition {
                    for_ms: rng.between(300, 6_000),
                },
            };
            let fault = NodeFault { at_ms, node, kind };
            faults.push(fault);
            let end = fault.ends_at_ms().unwrap_or(until).min(until);
            at_ms = end + rng.between(200, 5_000);
            if fault.ends_at_ms().is_none() {
                break;
            }
        }

        let level = rng.below(4);
        let message_faults = MessageFaults {
            drop_per_mille: [0, 10, 30, 80][level as usize],
            duplicate_per_mille: rng.between(0, 50),
            delay_per_mille: rng.between(0, 400),
            max_delay_ms: rng.between(5, 1_500),
            max_kv_latency_ms: rng.between(0, 20),
        };
        Self {
            seed,
            shape,
            messages,
            faults,
            message_faults,
            whatsapp_transient_per_mille: rng.between(0, 50),
            max_store_latency_ms: rng.between(1, 15),
        }
    }

    /// Whether any node is killed, paused or cut off (the only cases in which a reply may be
    /// sent twice: Meta took it, the node was stopped before it could record that).
    pub fn has_node_faults(&self) -> bool {
        !self.faults.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_plans_the_same_run() {
        let a = Plan::new(42, Shape::default());
        assert_eq!(a, Plan::new(42, Shape::default()));
        assert_ne!(a, Plan::new(43, Shape::default()));
        assert!(!a.messages.is_empty());
    }

    #[test]
    fn faults_end_before_the_faults_stop_and_never_overlap() {
        for seed in 0..200 {
            let plan = Plan::new(seed, Shape::default());
            let mut free_from = 0;
            for fault in &plan.faults {
                assert!(fault.at_ms >= free_from, "seed {seed}: {fault:?}");
                assert!(fault.at_ms < plan.shape.faults_until_ms);
                free_from = fault.ends_at_ms().unwrap_or(u64::MAX);
            }
        }
    }
}
