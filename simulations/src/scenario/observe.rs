//! The observer: once a second, each node's `/api/health` (tenants hosted, RSS) and CPU time,
//! the live counts, and the progress bar.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use salesboy_testkit::{ClusterSandbox, FakeLlm};
use serde::Serialize;

use super::send::SendCounters;
use super::traffic::{Planned, tags_in};
use crate::bench::env::{postgres_cpu_secs, process_cpu_secs};
use crate::bench::stats::Distribution;

/// One node at one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSample {
    /// Its index.
    pub node: usize,
    /// Whether its process ran.
    pub alive: bool,
    /// Tenants hosted (from `/api/health`), when it answered.
    pub tenants: Option<usize>,
    /// Resident memory in bytes (from `/api/health`), when it answered.
    pub rss_bytes: Option<u64>,
}

/// One sample of the whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the traffic started.
    pub t: f64,
    /// Every node.
    pub nodes: Vec<NodeSample>,
}

/// What the observer collected.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// A sample a second.
    pub samples: Vec<Sample>,
    /// CPU seconds per node process (pid → (first reading, last reading)).
    pub cpu_by_pid: BTreeMap<u32, (f64, f64)>,
    /// PostgreSQL's CPU seconds at the first and last sample (every `postgres` process).
    pub postgres_cpu: (f64, f64),
}

impl Observed {
    /// CPU seconds the node processes used while observed.
    pub fn node_cpu_secs(&self) -> f64 {
        self.cpu_by_pid
            .values()
            .map(|(a, b)| (b - a).max(0.0))
            .sum()
    }
}

/// Samples the nodes and drives the progress bar.
pub struct Observer {
    /// The nodes.
    pub sandbox: Arc<ClusterSandbox>,
    /// The planned messages (for live latencies).
    pub plan: Arc<Vec<Planned>>,
    /// The sender's counts.
    pub counters: Arc<SendCounters>,
    /// The LLM fakes (for the error count).
    pub llms: Vec<Arc<FakeLlm>>,
    /// The bar (hidden when stderr is not a terminal).
    pub bar: ProgressBar,
}

impl Observer {
    /// A progress bar over `total` messages.
    pub fn bar(total: usize) -> ProgressBar {
        let bar = ProgressBar::new(total as u64);
        let style =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} sent  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar
    }

    /// Samples once a second until `stop` resolves; what it saw.
    pub async fn run(self, start: Instant, stop: tokio::sync::watch::Receiver<bool>) -> Observed {
        let mut observed = Observed {
            postgres_cpu: (postgres_cpu_secs(), 0.0),
            ..Observed::default()
        };
        let mut stop = stop;
        let mut seen_replies = 0;
        let mut last_replies_tick = (0_usize, start.elapsed());
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            let t = start.elapsed();
            observed
                .samples
                .push(self.sample(t, &mut observed.cpu_by_pid).await);

            // Live figures for the bar: latencies of the replies that arrived since the
            // last tick, from the planned time of the newest message each answers.
            let sent = self.sandbox.whatsapp().sent();
            let mut latencies = Vec::new();
            for reply in &sent[seen_replies.min(sent.len())..] {
                if let Some(newest) = tags_in(&reply.body).max()
                    && let Some(message) =
                        usize::try_from(newest).ok().and_then(|i| self.plan.get(i))
                {
                    let at = reply.received.saturating_duration_since(start);
                    latencies.push(at.saturating_sub(message.at).as_secs_f64() * 1000.0);
                }
            }
            seen_replies = sent.len();
            let (replies_before, t_before) = last_replies_tick;
            let reply_rate =
                (sent.len() - replies_before) as f64 / (t - t_before).as_secs_f64().max(0.001);
            last_replies_tick = (sent.len(), t);
            let latency = Distribution::of(latencies);
            let errors = self.counters.post_errors.load(Ordering::Relaxed)
                + self.sandbox.whatsapp().failed_attempts().len() as u64
                + self
                    .llms
                    .iter()
                    .map(|llm| {
                        let requests = llm.requests();
                        requests.total() - requests.answered
                    })
                    .sum::<u64>();
            let alive = observed
                .samples
                .last()
                .map(|s| s.nodes.iter().filter(|n| n.alive).count())
                .unwrap_or(0);
            self.bar
                .set_position(self.counters.sent.load(Ordering::Relaxed));
            self.bar.set_message(format!(
                "accepted {}  replies {} ({reply_rate:.0}/s)  p50 {:.0} ms p99 {:.0} ms  errors {errors}  nodes {alive}",
                self.counters.accepted.load(Ordering::Relaxed),
                sent.len(),
                latency.p50_ms,
                latency.p99_ms,
            ));
        }
        observed.postgres_cpu.1 = postgres_cpu_secs();
        observed
    }

    /// One sample: every node's health and CPU reading.
    async fn sample(&self, t: Duration, cpu: &mut BTreeMap<u32, (f64, f64)>) -> Sample {
        let mut nodes = Vec::new();
        for info in self.sandbox.nodes() {
            if let Some(pid) = info.pid
                && let Some(secs) = process_cpu_secs(pid)
            {
                cpu.entry(pid).or_insert((secs, secs)).1 = secs;
            }
            let health = if info.alive {
                self.health(&info.http_base).await
            } else {
                None
            };
            nodes.push(NodeSample {
                node: info.index,
                alive: info.alive,
                tenants: health
                    .as_ref()
                    .and_then(|h| h.get("tenants"))
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok()),
                rss_bytes: health
                    .as_ref()
                    .and_then(|h| h.get("rss_bytes"))
                    .and_then(serde_json::Value::as_u64),
            });
        }
        Sample {
            t: t.as_secs_f64(),
            nodes,
        }
    }

    async fn health(&self, base: &str) -> Option<serde_json::Value> {
        let response = self
            .sandbox
            .http()
            .get(format!("{base}/api/health"))
            .bearer_auth(self.sandbox.admin_token())
            .timeout(Duration::from_millis(800))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }
}
