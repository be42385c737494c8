//! The scenario file (`simulations/scenarios/*.toml`): what to start, what traffic to send,
//! which faults to inject and the prices of the capacity section. Unknown keys are errors.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A load scenario, as read from its TOML file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (the report's title).
    pub name: String,
    /// What it shows, one or two sentences.
    #[serde(default)]
    pub description: String,
    /// The seed of every random draw (traffic, fakes).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long messages are sent, in seconds.
    pub duration_secs: f64,
    /// After the traffic, how long to wait at most for the last replies, in seconds.
    #[serde(default = "default_settle")]
    pub settle_secs: f64,
    /// The nodes and their shared services.
    pub cluster: ClusterSpec,
    /// Tenants and customers.
    pub tenants: TenantsSpec,
    /// The messages customers send.
    pub traffic: TrafficSpec,
    /// The fake LLM servers.
    #[serde(default)]
    pub llm: LlmSpec,
    /// The fake WhatsApp Cloud API.
    #[serde(default)]
    pub whatsapp: WhatsAppSpec,
    /// Faults, in time order.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Prices and the seed's figures for the capacity and cost section.
    pub cost: CostSpec,
    /// What the run must show to pass (checked after the report is written).
    #[serde(default)]
    pub expect: ExpectSpec,
}

fn default_seed() -> u64 {
    1
}

fn default_settle() -> f64 {
    60.0
}

/// Which database the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// A fresh PostgreSQL database (any number of nodes).
    Postgres,
    /// A SQLite file (one node).
    Sqlite,
}

/// The nodes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Nodes at the start.
    pub nodes: usize,
    /// The shared database.
    #[serde(default = "default_database")]
    pub database: Database,
    /// `SALESBOY_DEBOUNCE_MS` of every node.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// `SALESBOY_FAILURE_TIMEOUT_MS` of every node.
    #[serde(default = "default_failure_timeout")]
    pub failure_timeout_ms: u64,
    /// NATS servers: 1 (default), or 3 for a JetStream cluster whose URLs every node gets
    /// (replicas 3), whose servers the `kill-nats` and `restart-nats` faults act on.
    #[serde(default = "default_nats_servers")]
    pub nats_servers: usize,
}

fn default_nats_servers() -> usize {
    1
}

fn default_database() -> Database {
    Database::Postgres
}

fn default_debounce() -> u64 {
    300
}

fn default_failure_timeout() -> u64 {
    3000
}

/// Tenants and their customers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsSpec {
    /// How many tenants (each with one WhatsApp number).
    pub count: usize,
    /// Customers (chats) per tenant.
    pub customers_per_tenant: usize,
    /// The knowledge passage of every tenant.
    #[serde(default = "default_knowledge")]
    pub knowledge: String,
}

fn default_knowledge() -> String {
    "We open at 9am every day. Delivery takes 3 days and is free above 50 euros. \
     Returns are accepted within 30 days."
        .to_owned()
}

/// The message arrival process.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Arrivals per second over all customers: each customer's arrivals are a Poisson
    /// process of rate `rate / customers`; an arrival is one message or a typing burst, so
    /// more messages than `rate × duration` are sent when `burst_share` > 0.
    pub rate: f64,
    /// Shortest message, in characters.
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
    /// Longest message, in characters (sizes uniform in between).
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// Typing bursts: the share of arrivals that are several messages in a row.
    #[serde(default)]
    pub burst_share: f64,
    /// Messages in a typing burst (uniform in 2..=this).
    #[serde(default = "default_burst_messages")]
    pub burst_messages: usize,
    /// The pause between the messages of a burst, in ms (below the debounce, so the
    /// node answers the burst once).
    #[serde(default = "default_burst_gap")]
    pub burst_gap_ms: u64,
    /// Campaign reply storms.
    #[serde(default)]
    pub storms: Vec<StormSpec>,
    /// How many webhook posts may be in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_min_chars() -> usize {
    20
}

fn default_max_chars() -> usize {
    160
}

fn default_burst_messages() -> usize {
    3
}

fn default_burst_gap() -> u64 {
    80
}

fn default_concurrency() -> usize {
    64
}

/// A campaign reply storm: many customers answer a broadcast within a short window.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StormSpec {
    /// When it starts, seconds after the traffic starts.
    pub at_secs: f64,
    /// Its length, in seconds (replies uniform over it).
    pub duration_secs: f64,
    /// The share of all customers that reply, `0..=1`.
    pub share: f64,
}

/// One fake LLM server's behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmBehaviour {
    /// Fixed latency per request, in ms.
    #[serde(default = "default_llm_latency")]
    pub latency_ms: u64,
    /// Mean of the exponential extra latency (the tail), in ms.
    #[serde(default)]
    pub latency_tail_ms: u64,
    /// Share of requests answered 429 (per-minute rate limit).
    #[serde(default)]
    pub rate_limit_rate: f64,
    /// The retry delay a 429 asks for, in ms.
    #[serde(default = "default_retry_after")]
    pub retry_after_ms: u64,
    /// Share of requests answered 503.
    #[serde(default)]
    pub unavailable_rate: f64,
    /// Answers are padded to this many characters (completion tokens ≈ chars / 4).
    #[serde(default = "default_answer_chars")]
    pub answer_chars: usize,
}

impl Default for LlmBehaviour {
    fn default() -> Self {
        Self {
            latency_ms: default_llm_latency(),
            latency_tail_ms: 0,
            rate_limit_rate: 0.0,
            retry_after_ms: default_retry_after(),
            unavailable_rate: 0.0,
            answer_chars: default_answer_chars(),
        }
    }
}

fn default_llm_latency() -> u64 {
    200
}

fn default_retry_after() -> u64 {
    1000
}

fn default_answer_chars() -> usize {
    240
}

/// The LLM providers of every tenant: a primary and, optionally, a fallback.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSpec {
    /// The primary's API: `gemini` or `openai`.
    #[serde(default = "default_primary_kind")]
    pub primary_kind: String,
    /// The primary fake.
    #[serde(default)]
    pub primary: LlmBehaviour,
    /// A fallback provider (OpenAI-compatible, its own fake server), if any.
    #[serde(default)]
    pub fallback: Option<LlmBehaviour>,
}

impl Default for LlmSpec {
    fn default() -> Self {
        Self {
            primary_kind: default_primary_kind(),
            primary: LlmBehaviour::default(),
            fallback: None,
        }
    }
}

fn default_primary_kind() -> String {
    "gemini".to_owned()
}

/// The fake WhatsApp Cloud API's behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSpec {
    /// Share of sends refused with 130429 (throughput).
    #[serde(default)]
    pub throughput_error_rate: f64,
    /// Share of sends refused with 131056 (pair rate).
    #[serde(default)]
    pub pair_rate_error_rate: f64,
    /// Share of requests answered 500.
    #[serde(default)]
    pub server_error_rate: f64,
    /// Latency of every request, in ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// Whether signed status webhooks (sent, delivered, read) are posted back.
    #[serde(default = "default_true")]
    pub status_webhooks: bool,
}

impl Default for WhatsAppSpec {
    fn default() -> Self {
        Self {
            throughput_error_rate: 0.0,
            pair_rate_error_rate: 0.0,
            server_error_rate: 0.0,
            latency_ms: 0,
            status_webhooks: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A fault at a given time (unknown keys are refused by the action's own fields).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FaultSpec {
    /// When, in seconds after the traffic starts.
    pub at_secs: f64,
    /// What happens.
    #[serde(flatten)]
    pub action: FaultAction,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultAction {
    /// SIGKILL node `node`.
    Kill {
        /// The node's index.
        node: usize,
    },
    /// Start a killed (or running: killed first) node again with the same id and data.
    Restart {
        /// The node's index.
        node: usize,
    },
    /// Add a node to the cluster.
    Add,
    /// Drain node `node` (SIGTERM: its tenants move off, then it exits).
    Drain {
        /// The node's index.
        node: usize,
    },
    /// SIGKILL NATS server `server` of the scenario's NATS cluster (`cluster.nats_servers`).
    KillNats {
        /// The server's index.
        server: usize,
    },
    /// Start NATS server `server` again on its ports and store (it rejoins the cluster).
    RestartNats {
        /// The server's index.
        server: usize,
    },
    /// Change the primary LLM fake's behaviour.
    Llm(LlmBehaviour),
    /// Change the fake Cloud API's behaviour (throttling, server errors).
    Whatsapp(WhatsAppSpec),
}

/// Prices and sizes for the capacity and cost section: inputs, never constants in code.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CostSpec {
    /// Monthly price of one VPS, USD.
    pub vps_monthly_usd: f64,
    /// Its memory, GiB (what a node may use is `vps_memory_gib × memory_headroom`).
    pub vps_memory_gib: f64,
    /// Its cores.
    pub vps_cores: f64,
    /// The share of a VPS's memory and CPU a node may plan on (the rest: OS, peaks).
    #[serde(default = "default_headroom")]
    pub headroom: f64,
    /// Fewest nodes, for availability.
    #[serde(default = "default_min_nodes")]
    pub min_nodes: usize,
    /// Monthly price of the managed database, USD.
    pub database_monthly_usd: f64,
    /// Monthly price of NATS (a small VPS or a managed plan), USD.
    pub nats_monthly_usd: f64,
    /// Messages per tenant per month at the sizes below.
    pub messages_per_tenant_month: f64,
    /// Peak-to-average ratio of the message rate (busy hours).
    #[serde(default = "default_peak")]
    pub peak_factor: f64,
    /// LLM price per million prompt tokens, USD.
    #[serde(default)]
    pub prompt_usd_per_million: f64,
    /// LLM price per million completion tokens, USD.
    #[serde(default)]
    pub completion_usd_per_million: f64,
    /// Tenant counts to size for.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<u64>,
    /// The seed's figures, quoted next to ours.
    #[serde(default)]
    pub seed_figures: Vec<String>,
}

fn default_headroom() -> f64 {
    0.7
}

fn default_min_nodes() -> usize {
    2
}

fn default_peak() -> f64 {
    10.0
}

fn default_sizes() -> Vec<u64> {
    vec![100, 1_000, 10_000, 100_000]
}

/// What a run must show; checked after the report is written (a failed check makes the
/// command exit non-zero).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// No accepted message without a reply.
    #[serde(default)]
    pub zero_lost: bool,
    /// No message answered twice.
    #[serde(default)]
    pub zero_duplicated: bool,
    /// No node declared dead, nor fenced, that no fault killed, drained or restarted (a
    /// failure timeout too short for the machine shows here).
    #[serde(default)]
    pub no_false_deaths: bool,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the scenario {}", path.display()))
    }

    /// Parses and checks a scenario's TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scenario: Self = toml::from_str(text).context("parsing the scenario")?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Refuses scenarios that cannot run.
    fn check(&self) -> anyhow::Result<()> {
        if self.cluster.nodes == 0 {
            bail!("cluster.nodes: at least one node");
        }
        if self.cluster.database == Database::Sqlite {
            let adds = self
                .faults
                .iter()
                .any(|fault| fault.action == FaultAction::Add);
            if self.cluster.nodes > 1 || adds {
                bail!("cluster.database = \"sqlite\" runs one node: use postgres");
            }
        }
        if self.tenants.count == 0 || self.tenants.customers_per_tenant == 0 {
            bail!("tenants: at least one tenant and one customer per tenant");
        }
        let positive = self.duration_secs.is_finite() && self.duration_secs > 0.0;
        let rate = self.traffic.rate.is_finite() && self.traffic.rate >= 0.0;
        if !positive || !rate {
            bail!("duration_secs must be positive and traffic.rate not negative");
        }
        if self.traffic.min_chars > self.traffic.max_chars {
            bail!("traffic.min_chars is above traffic.max_chars");
        }
        if !matches!(self.llm.primary_kind.as_str(), "gemini" | "openai") {
            bail!("llm.primary_kind: \"gemini\" or \"openai\"");
        }
        if !matches!(self.cluster.nats_servers, 1 | 3) {
            bail!("cluster.nats_servers: 1, or 3 for a NATS cluster");
        }
        let mut nodes = self.cluster.nodes;
        for (i, fault) in self.faults.iter().enumerate() {
            match fault.action {
                FaultAction::KillNats { server } | FaultAction::RestartNats { server }
                    if self.cluster.nats_servers < 3 || server >= self.cluster.nats_servers =>
                {
                    bail!(
                        "faults[{i}]: no NATS server {server} ({} server(s); a NATS fault needs cluster.nats_servers = 3)",
                        self.cluster.nats_servers
                    )
                }
                FaultAction::Add => nodes += 1,
                FaultAction::Kill { node }
                | FaultAction::Restart { node }
                | FaultAction::Drain { node }
                    if node >= nodes =>
                {
                    bail!("faults[{i}]: no node {node} at that time ({nodes} nodes)")
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A scenario for tests: `body` (every section but `[cost]`), then a `[cost]` section.
#[cfg(test)]
pub(crate) fn test_scenario(body: &str) -> anyhow::Result<Scenario> {
    const COST: &str = r#"
        [cost]
        vps_monthly_usd = 24
        vps_memory_gib = 4
        vps_cores = 2
        database_monthly_usd = 25
        nats_monthly_usd = 0
        messages_per_tenant_month = 50
    "#;
    Scenario::parse(&format!("{body}{COST}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "t"
        duration_secs = 5
        [cluster]
        nodes = 2
        [tenants]
        count = 3
        customers_per_tenant = 2
        [traffic]
        rate = 10
        [[faults]]
        at_secs = 2
        action = "kill"
        node = 1
        [[faults]]
        at_secs = 3
        action = "llm"
        rate_limit_rate = 0.5
    "#;

    #[test]
    fn parses_faults_and_defaults() {
        let scenario = test_scenario(MINIMAL).expect("parses");
        assert_eq!(scenario.faults[0].action, FaultAction::Kill { node: 1 });
        let FaultAction::Llm(llm) = &scenario.faults[1].action else {
            panic!("an llm fault: {:?}", scenario.faults[1]);
        };
        assert_eq!(llm.rate_limit_rate, 0.5);
        assert_eq!(llm.latency_ms, 200);
        assert_eq!(scenario.cluster.database, Database::Postgres);
        assert!(scenario.whatsapp.status_webhooks);
    }

    #[test]
    fn refuses_unknown_keys_and_missing_nodes() {
        let unknown = MINIMAL.replace("rate = 10", "rate = 10\nrat = 3");
        assert!(test_scenario(&unknown).is_err());
        let missing = MINIMAL.replace("node = 1", "node = 2");
        let error = format!("{:#}", test_scenario(&missing).expect_err("no node 2"));
        assert!(error.contains("no node 2"), "{error}");
    }

    #[test]
    fn nats_faults_need_a_nats_cluster() {
        let fault = "[[faults]]\nat_secs = 4\naction = \"kill-nats\"\nserver = 2\n";
        let single = format!("{MINIMAL}{fault}");
        let error = format!("{:#}", test_scenario(&single).expect_err("one nats server"));
        assert!(error.contains("no NATS server 2"), "{error}");
        let cluster = single.replace("nodes = 2", "nodes = 2\nnats_servers = 3");
        let scenario = test_scenario(&cluster).expect("parses");
        assert_eq!(scenario.cluster.nats_servers, 3);
        assert_eq!(
            scenario.faults[2].action,
            FaultAction::KillNats { server: 2 }
        );
        let two = cluster.replace("nats_servers = 3", "nats_servers = 2");
        assert!(test_scenario(&two).is_err(), "1 or 3 servers");
    }
}
