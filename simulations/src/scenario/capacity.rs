//! The capacity and cost section: from the measured memory per tenant and CPU per message,
//! the nodes and the monthly cost for 100 … 100k tenants, at the scenario's prices.

use serde::Serialize;

use super::spec::CostSpec;

/// Seconds in a 30-day month.
const MONTH_SECS: f64 = 30.0 * 86_400.0;

/// What the run measured that sizing needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Measured {
    /// Memory per hosted tenant beyond a node's baseline, bytes.
    pub bytes_per_tenant: f64,
    /// A node's resident memory before it hosted anything, bytes.
    pub node_baseline_bytes: f64,
    /// Node CPU per accepted message (all nodes' CPU time / messages), seconds.
    pub node_cpu_secs_per_message: f64,
    /// PostgreSQL CPU per accepted message, seconds (0 on SQLite).
    pub database_cpu_secs_per_message: f64,
    /// LLM prompt tokens per accepted message.
    pub prompt_tokens_per_message: f64,
    /// LLM completion tokens per accepted message.
    pub completion_tokens_per_message: f64,
}

impl Measured {
    /// Tenants one GiB holds.
    pub fn tenants_per_gib(&self) -> f64 {
        if self.bytes_per_tenant > 0.0 {
            f64::from(1u32 << 30) / self.bytes_per_tenant
        } else {
            0.0
        }
    }

    /// Messages per second one fully busy core handles (node work only).
    pub fn messages_per_core_sec(&self) -> f64 {
        if self.node_cpu_secs_per_message > 0.0 {
            1.0 / self.node_cpu_secs_per_message
        } else {
            0.0
        }
    }
}

/// Sizing for one tenant count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Size {
    /// Tenants.
    pub tenants: u64,
    /// Average messages per second.
    pub average_rate: f64,
    /// Peak messages per second (average × peak factor).
    pub peak_rate: f64,
    /// Nodes the memory needs.
    pub nodes_for_memory: usize,
    /// Nodes the peak CPU needs.
    pub nodes_for_cpu: usize,
    /// Nodes: the larger of the two and the minimum.
    pub nodes: usize,
    /// VPSes, database and NATS per month, USD.
    pub infrastructure_usd: f64,
    /// LLM tokens per month, USD.
    pub llm_usd: f64,
}

/// Sizes the cluster for each of the scenario's tenant counts.
pub fn size(measured: &Measured, cost: &CostSpec) -> Vec<Size> {
    let usable_memory = (cost.vps_memory_gib * f64::from(1u32 << 30) * cost.headroom
        - measured.node_baseline_bytes)
        .max(1.0);
    let usable_cores = (cost.vps_cores * cost.headroom).max(0.01);
    cost.sizes
        .iter()
        .map(|&tenants| {
            let messages = tenants as f64 * cost.messages_per_tenant_month;
            let average_rate = messages / MONTH_SECS;
            let peak_rate = average_rate * cost.peak_factor;
            let nodes_for_memory =
                (tenants as f64 * measured.bytes_per_tenant / usable_memory).ceil() as usize;
            let nodes_for_cpu =
                (peak_rate * measured.node_cpu_secs_per_message / usable_cores).ceil() as usize;
            let nodes = nodes_for_memory.max(nodes_for_cpu).max(cost.min_nodes);
            let infrastructure_usd = nodes as f64 * cost.vps_monthly_usd
                + cost.database_monthly_usd
                + cost.nats_monthly_usd;
            let llm_usd = messages
                * (measured.prompt_tokens_per_message * cost.prompt_usd_per_million
                    + measured.completion_tokens_per_message * cost.completion_usd_per_million)
                / 1e6;
            Size {
                tenants,
                average_rate,
                peak_rate,
                nodes_for_memory,
                nodes_for_cpu,
                nodes,
                infrastructure_usd,
                llm_usd,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_by_the_tighter_of_memory_and_cpu() {
        let cost = CostSpec {
            vps_monthly_usd: 20.0,
            vps_memory_gib: 4.0,
            vps_cores: 2.0,
            headroom: 0.5,
            min_nodes: 2,
            database_monthly_usd: 25.0,
            nats_monthly_usd: 5.0,
            messages_per_tenant_month: 2_592.0,
            peak_factor: 10.0,
            prompt_usd_per_million: 1.0,
            completion_usd_per_million: 2.0,
            sizes: vec![100, 1_000_000],
            seed_figures: Vec::new(),
        };
        let measured = Measured {
            bytes_per_tenant: 32_768.0,
            node_baseline_bytes: 0.0,
            node_cpu_secs_per_message: 0.002,
            prompt_tokens_per_message: 100.0,
            completion_tokens_per_message: 50.0,
            ..Measured::default()
        };
        assert_eq!(measured.tenants_per_gib(), 32_768.0);
        assert_eq!(measured.messages_per_core_sec(), 500.0);
        let sizes = size(&measured, &cost);
        // 100 tenants: 0.1 msg/s on average, 1 at peak: the minimum of two nodes.
        assert_eq!(sizes[0].nodes, 2);
        assert!((sizes[0].peak_rate - 1.0).abs() < 1e-9);
        assert_eq!(sizes[0].infrastructure_usd, 70.0);
        // 259,200 messages × (100 × $1 + 50 × $2) / 1M tokens.
        assert!((sizes[0].llm_usd - 51.84).abs() < 1e-9);
        // 1M tenants: 32 GB over 2 GiB usable → 16 nodes; 10k msg/s × 2 ms / 1 core → 20.
        assert_eq!(sizes[1].nodes_for_memory, 16);
        assert_eq!(sizes[1].nodes_for_cpu, 20);
        assert_eq!(sizes[1].nodes, 20);
    }
}
