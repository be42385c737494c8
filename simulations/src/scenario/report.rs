//! The run's report: `report.json`, `report.md` and the SVG charts, written to the output
//! directory.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::capacity::{Measured, Size};
use super::charts::{self, Marker, Series};
use super::faults::FaultEvent;
use super::ledger::{Counts, ReplyLatency};
use super::observe::Sample;
use super::spec::Scenario;
use crate::bench::env::Machine;
use crate::bench::stats::Distribution;

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Its start, seconds after the traffic started.
    pub t: f64,
    /// Messages accepted by a node in it.
    pub accepted: usize,
    /// Replies the fake Cloud API accepted in it.
    pub replies: usize,
    /// Errors in it: failed webhook posts, refused Cloud API requests, failed LLM calls.
    pub errors: usize,
    /// Median latency of the replies in it, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Latency percentiles, split.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySplit {
    /// From the newest answered message's planned time to the reply.
    pub total: Distribution,
    /// In LLM calls.
    pub llm: Distribution,
    /// The rest: the gateway (including the debounce).
    pub gateway: Distribution,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario as run.
    pub scenario: Scenario,
    /// The machine.
    pub machine: Machine,
    /// When it ran (UTC).
    pub date: String,
    /// The commit of the code.
    pub commit: Option<String>,
    /// The node binary.
    pub salesboy_bin: String,
    /// The machine's 1-minute load average when the traffic started and when it ended
    /// (other work on the machine shows here: figures from a loaded machine are upper
    /// bounds for latency and lower bounds for throughput).
    pub load_average: (f64, f64),
    /// Traffic length as run, seconds (until the last planned message went out).
    pub traffic_secs: f64,
    /// Until the last reply (or the settle timeout), seconds.
    pub total_secs: f64,
    /// Sent, accepted, replies, lost, duplicated.
    pub counts: Counts,
    /// Inbound messages in the database at the end.
    pub inbound_persisted: i64,
    /// Outbound messages in the database by delivery status.
    pub outbound_by_status: Vec<(String, i64)>,
    /// Status webhooks the fake Cloud API posted back: delivered, failed.
    pub status_webhooks: (u64, u64),
    /// Cloud API requests the fake refused (injected or not).
    pub cloud_api_refusals: usize,
    /// LLM requests per fake: (name, requests, answered).
    pub llm_requests: Vec<(String, u64, u64)>,
    /// Accepted messages per second over the traffic.
    pub accepted_rate: f64,
    /// Replies per second over the traffic.
    pub reply_rate: f64,
    /// Latency percentiles.
    pub latency: LatencySplit,
    /// The faults as they happened.
    pub faults: Vec<FaultEvent>,
    /// Per second.
    pub seconds: Vec<Second>,
    /// The observer's samples (tenants and RSS per node).
    pub samples: Vec<Sample>,
    /// The numbers of some lost messages.
    pub lost_examples: Vec<u64>,
    /// The numbers of some duplicated messages.
    pub duplicated_examples: Vec<u64>,
    /// Measured inputs of the sizing.
    pub measured: Measured,
    /// Node CPU seconds, PostgreSQL CPU seconds during the run.
    pub cpu_secs: (f64, f64),
    /// The sizing.
    pub capacity: Vec<Size>,
    /// Checks of `[expect]` that failed.
    pub failed_expectations: Vec<String>,
    /// Nodes declared dead (`node_left` events), by node id, and how often.
    #[serde(default)]
    pub node_deaths: Vec<(String, i64)>,
    /// Self-fences (`salesboy_self_fences_total`) of the nodes alive at the end, by node id.
    #[serde(default)]
    pub self_fences: Vec<(String, u64)>,
}

impl Report {
    /// Writes `report.json`, `report.md` and the charts into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text)
                .with_context(|| format!("writing {}", dir.join(name).display()))
        };
        write("report.json", serde_json::to_string_pretty(self)? + "\n")?;
        write("report.md", self.markdown())?;
        for (name, svg) in self.charts() {
            write(&name, svg)?;
        }
        Ok(())
    }

    /// The one-line summary printed at the end.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "{}: {} planned, {} accepted, {} replies, {} lost, {} duplicated; {:.1} msg/s; latency p50 {:.0} ms p99 {:.0} ms (llm p50 {:.0} ms, gateway p50 {:.0} ms)",
            self.scenario.name,
            c.planned,
            c.accepted,
            c.replies,
            c.lost,
            c.duplicated,
            self.accepted_rate,
            self.latency.total.p50_ms,
            self.latency.total.p99_ms,
            self.latency.llm.p50_ms,
            self.latency.gateway.p50_ms,
        )
    }

    fn markers(&self) -> Vec<Marker> {
        self.faults
            .iter()
            .map(|f| Marker {
                x: f.at,
                label: f.label.clone(),
            })
            .collect()
    }

    /// The charts, by file name.
    pub fn charts(&self) -> Vec<(String, String)> {
        let markers = self.markers();
        let per_second = |f: fn(&Second) -> f64| -> Vec<(f64, f64)> {
            self.seconds.iter().map(|s| (s.t, f(s))).collect()
        };
        let mut out = vec![
            (
                "throughput.svg".to_owned(),
                charts::lines(
                    &format!("{}: throughput and errors per second", self.scenario.name),
                    "seconds",
                    "per second",
                    &[
                        series("accepted", per_second(|s| s.accepted as f64)),
                        series("replies", per_second(|s| s.replies as f64)),
                        series("errors", per_second(|s| s.errors as f64)),
                    ],
                    &markers,
                ),
            ),
            (
                "latency.svg".to_owned(),
                charts::lines(
                    &format!("{}: reply latency per second", self.scenario.name),
                    "seconds",
                    "ms",
                    &[
                        series("p50", per_second(|s| s.p50_ms)),
                        series("p99", per_second(|s| s.p99_ms)),
                    ],
                    &markers,
                ),
            ),
        ];
        let split = &self.latency;
        let group = |name: &str, pick: fn(&Distribution) -> f64| {
            (
                name.to_owned(),
                vec![
                    ("total".to_owned(), pick(&split.total)),
                    ("gateway".to_owned(), pick(&split.gateway)),
                    ("llm".to_owned(), pick(&split.llm)),
                ],
            )
        };
        out.push((
            "latency_split.svg".to_owned(),
            charts::bars(
                &format!(
                    "{}: latency percentiles, gateway and LLM",
                    self.scenario.name
                ),
                "ms",
                &[
                    group("p50", |d| d.p50_ms),
                    group("p90", |d| d.p90_ms),
                    group("p99", |d| d.p99_ms),
                    group("max", |d| d.max_ms),
                ],
            ),
        ));
        let nodes = self
            .samples
            .iter()
            .map(|s| s.nodes.len())
            .max()
            .unwrap_or(0);
        let node_series = |f: &dyn Fn(&super::observe::NodeSample) -> Option<f64>| {
            (0..nodes)
                .map(|n| {
                    series(
                        &format!("node-{n}"),
                        self.samples
                            .iter()
                            .filter_map(|s| {
                                let node = s.nodes.get(n)?;
                                Some((s.t, if node.alive { f(node)? } else { 0.0 }))
                            })
                            .collect(),
                    )
                })
                .collect::<Vec<_>>()
        };
        out.push((
            "tenants_per_node.svg".to_owned(),
            charts::lines(
                &format!("{}: tenants per node", self.scenario.name),
                "seconds",
                "tenants",
                &node_series(&|n| n.tenants.map(|t| t as f64)),
                &markers,
            ),
        ));
        out.push((
            "rss_per_node.svg".to_owned(),
            charts::lines(
                &format!("{}: RSS per node", self.scenario.name),
                "seconds",
                "MiB",
                &node_series(&|n| n.rss_bytes.map(|b| b as f64 / 1_048_576.0)),
                &markers,
            ),
        ));
        out.push((
            "rss_per_tenant.svg".to_owned(),
            charts::lines(
                &format!(
                    "{}: RSS per hosted tenant (whole node / tenants)",
                    self.scenario.name
                ),
                "seconds",
                "KiB",
                &node_series(&|n| match (n.rss_bytes, n.tenants) {
                    (Some(rss), Some(tenants)) if tenants > 0 => {
                        Some(rss as f64 / 1024.0 / tenants as f64)
                    }
                    _ => None,
                }),
                &markers,
            ),
        ));
        out
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.scenario;
        let c = &self.counts;
        let _ = writeln!(md, "# Scenario `{}`\n\n{}\n", s.name, s.description.trim());
        let _ = writeln!(
            md,
            "Ran {} on {} ({} cores, {}), commit {}, node binary `{}`.\n",
            self.date,
            self.machine.cpu_model,
            self.machine.nproc,
            self.machine.kernel,
            self.commit.as_deref().unwrap_or("unknown"),
            self.salesboy_bin
        );
        let _ = writeln!(
            md,
            "Load average (1 min) {:.2} when the traffic started, {:.2} when it ended, on {} cores.\n",
            self.load_average.0, self.load_average.1, self.machine.nproc
        );
        let _ = writeln!(
            md,
            "{} node(s) at the start on {:?} and {} NATS server(s), debounce {} ms, failure timeout {} ms; {} tenants × {} customers; {:.1} msg/s planned for {:.0} s (seed {}).\n",
            s.cluster.nodes,
            s.cluster.database,
            s.cluster.nats_servers,
            s.cluster.debounce_ms,
            s.cluster.failure_timeout_ms,
            s.tenants.count,
            s.tenants.customers_per_tenant,
            s.traffic.rate,
            s.duration_secs,
            s.seed
        );
        md.push_str("## Messages\n\nComputed by the harness from what it sent and what the fake Cloud API received.\n\n| count | value |\n|---|---|\n");
        for (name, value) in [
            ("planned", c.planned.to_string()),
            ("accepted by a node (webhook 2xx)", c.accepted.to_string()),
            ("given up (no node accepted)", c.given_up.to_string()),
            (
                "inbound persisted (database)",
                self.inbound_persisted.to_string(),
            ),
            ("replies sent (fake Cloud API)", c.replies.to_string()),
            (
                "**lost** (accepted, never answered)",
                format!("**{}**", c.lost),
            ),
            (
                "**duplicated** (answered twice or more)",
                format!("**{}**", c.duplicated),
            ),
            ("extra replies for those", c.extra_replies.to_string()),
            (
                "replies quoting no message (offline answer)",
                c.untagged_replies.to_string(),
            ),
            ("replies to the wrong chat", c.misrouted_replies.to_string()),
            (
                "status webhooks posted back (delivered / failed)",
                format!("{} / {}", self.status_webhooks.0, self.status_webhooks.1),
            ),
            (
                "Cloud API requests refused",
                self.cloud_api_refusals.to_string(),
            ),
        ] {
            let _ = writeln!(md, "| {name} | {value} |");
        }
        for (name, requests, answered) in &self.llm_requests {
            let _ = writeln!(
                md,
                "| LLM `{name}`: requests / answered | {requests} / {answered} |"
            );
        }
        let outbound: Vec<String> = self
            .outbound_by_status
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        let _ = writeln!(
            md,
            "| outbound in the database by status | {} |",
            outbound.join(", ")
        );
        let _ = writeln!(
            md,
            "\n## Throughput and latency\n\n{:.1} messages accepted/s and {:.1} replies/s over {:.1} s of traffic; the last reply {:.1} s after the start.\n",
            self.accepted_rate, self.reply_rate, self.traffic_secs, self.total_secs
        );
        let _ = writeln!(
            md,
            "Latency of each first reply, from the planned time of the newest message it answers (so it includes the {} ms debounce):\n\n| part | latency |\n|---|---|\n| total | {} |\n| LLM calls | {} |\n| gateway (total − LLM) | {} |\n",
            s.cluster.debounce_ms,
            self.latency.total.cell(),
            self.latency.llm.cell(),
            self.latency.gateway.cell()
        );
        md.push_str("![throughput](throughput.svg)\n![latency](latency.svg)\n![latency split](latency_split.svg)\n\n");
        md.push_str("## Faults\n\n");
        if self.faults.is_empty() {
            md.push_str("None.\n\n");
        } else {
            md.push_str("| at (s) | fault | took (s) | result |\n|---|---|---|---|\n");
            for f in &self.faults {
                let _ = writeln!(
                    md,
                    "| {:.1} | {} | {:.1} | {} |",
                    f.at, f.label, f.took, f.result
                );
            }
            md.push('\n');
        }
        md.push_str("## Nodes\n\n![tenants per node](tenants_per_node.svg)\n![RSS per node](rss_per_node.svg)\n![RSS per tenant](rss_per_tenant.svg)\n\n");
        if let Some(last) = self.samples.last() {
            md.push_str("At the end:\n\n| node | alive | tenants | RSS |\n|---|---|---|---|\n");
            for n in &last.nodes {
                let _ = writeln!(
                    md,
                    "| node-{} | {} | {} | {} |",
                    n.node,
                    n.alive,
                    n.tenants.map_or("—".to_owned(), |t| t.to_string()),
                    n.rss_bytes.map_or("—".to_owned(), |b| format!(
                        "{:.1} MiB",
                        b as f64 / 1_048_576.0
                    ))
                );
            }
            md.push('\n');
        }
        let deaths: Vec<String> = self
            .node_deaths
            .iter()
            .map(|(node, n)| format!("{node} ×{n}"))
            .collect();
        let fences: Vec<String> = self
            .self_fences
            .iter()
            .map(|(node, n)| format!("{node} {n}"))
            .collect();
        let _ = writeln!(
            md,
            "## Membership\n\nNodes declared dead: {}. Self-fences of the nodes alive at the end: {} (failure timeout {} ms).\n",
            if deaths.is_empty() {
                "none".to_owned()
            } else {
                deaths.join(", ")
            },
            if fences.is_empty() {
                "none read".to_owned()
            } else {
                fences.join(", ")
            },
            self.scenario.cluster.failure_timeout_ms,
        );
        self.capacity_markdown(&mut md);
        if !self.failed_expectations.is_empty() {
            md.push_str("## Failed expectations\n\n");
            for failed in &self.failed_expectations {
                let _ = writeln!(md, "- {failed}");
            }
        }
        md
    }

    fn capacity_markdown(&self, md: &mut String) {
        let m = &self.measured;
        let cost = &self.scenario.cost;
        let _ = writeln!(
            md,
            "## Capacity and cost\n\nMeasured in this run: **{:.1} KiB per hosted tenant** beyond a node's baseline of {:.1} MiB (**{:.0} tenants per GiB**); node CPU {:.2} ms per message (**{:.0} messages/s per core**, node work only); PostgreSQL {:.2} ms CPU per message; LLM {:.0} prompt + {:.0} completion tokens per message. Node CPU {:.1} s and PostgreSQL CPU {:.1} s in all.\n",
            m.bytes_per_tenant / 1024.0,
            m.node_baseline_bytes / 1_048_576.0,
            m.tenants_per_gib(),
            m.node_cpu_secs_per_message * 1000.0,
            m.messages_per_core_sec(),
            m.database_cpu_secs_per_message * 1000.0,
            m.prompt_tokens_per_message,
            m.completion_tokens_per_message,
            self.cpu_secs.0,
            self.cpu_secs.1,
        );
        let _ = writeln!(
            md,
            "Prices and sizes (scenario inputs): VPS ${:.2}/month with {} GiB and {} cores, {:.0}% of it planned; database ${:.2}/month; NATS ${:.2}/month; at least {} nodes; {} messages per tenant per month, peak {}× the average; LLM ${}/${} per million prompt/completion tokens. The database's own capacity is not sized here (its price is an input).\n",
            cost.vps_monthly_usd,
            cost.vps_memory_gib,
            cost.vps_cores,
            cost.headroom * 100.0,
            cost.database_monthly_usd,
            cost.nats_monthly_usd,
            cost.min_nodes,
            cost.messages_per_tenant_month,
            cost.peak_factor,
            cost.prompt_usd_per_million,
            cost.completion_usd_per_million,
        );
        md.push_str("| tenants | msg/s average / peak | nodes (memory / CPU) | infrastructure $/month | LLM $/month |\n|---|---|---|---|---|\n");
        for size in &self.capacity {
            let _ = writeln!(
                md,
                "| {} | {:.2} / {:.2} | **{}** ({} / {}) | ${:.0} | ${:.0} |",
                size.tenants,
                size.average_rate,
                size.peak_rate,
                size.nodes,
                size.nodes_for_memory,
                size.nodes_for_cpu,
                size.infrastructure_usd,
                size.llm_usd
            );
        }
        if !cost.seed_figures.is_empty() {
            md.push_str(
                "\nThe seed's figures (the first version: one headless browser per tenant):\n\n",
            );
            for figure in &cost.seed_figures {
                let _ = writeln!(md, "- {figure}");
            }
        }
        md.push('\n');
    }
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_owned(),
        points,
    }
}

/// The 1-minute load average (`/proc/loadavg`), 0 when unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Buckets the run into seconds.
pub fn seconds(
    accepted: &[f64],
    replies: &[f64],
    errors: &[f64],
    latencies: &[ReplyLatency],
    until: f64,
) -> Vec<Second> {
    let count = (until.ceil() as usize).max(1);
    let mut out: Vec<Second> = (0..count)
        .map(|i| Second {
            t: i as f64,
            ..Second::default()
        })
        .collect();
    let bucket = |t: f64| (t.max(0.0) as usize).min(count - 1);
    for &t in accepted {
        out[bucket(t)].accepted += 1;
    }
    for &t in replies {
        out[bucket(t)].replies += 1;
    }
    for &t in errors {
        out[bucket(t)].errors += 1;
    }
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); count];
    for l in latencies {
        per[bucket(l.at)].push(l.total_ms);
    }
    for (second, values) in out.iter_mut().zip(per) {
        let d = Distribution::of(values);
        second.p50_ms = d.p50_ms;
        second.p99_ms = d.p99_ms;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_events_by_second() {
        let latency = |at, total_ms| ReplyLatency {
            at,
            total_ms,
            llm_ms: 0.0,
            gateway_ms: total_ms,
        };
        let s = seconds(
            &[0.1, 0.9, 1.5],
            &[1.2],
            &[2.5, 9.0],
            &[latency(1.2, 40.0), latency(1.3, 60.0)],
            3.0,
        );
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().map(|s| s.accepted).collect::<Vec<_>>(),
            vec![2, 1, 0]
        );
        assert_eq!(s[1].replies, 1);
        // 9.0 is past the end: counted in the last second.
        assert_eq!(s[2].errors, 2);
        assert_eq!((s[1].p50_ms, s[1].p99_ms), (40.0, 60.0));
    }
}
