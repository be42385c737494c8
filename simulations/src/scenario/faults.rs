//! The fault schedule: kill -9, restart, add and drain nodes, change the fake LLM and Cloud
//! API, each at its time; the routes and the status-webhook targets follow the nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use salesboy_testkit::{
    ClusterSandbox, FakeLlm, FakeLlmOptions, FakeWhatsAppOptions, NODE_STARTUP_TIMEOUT,
};
use serde::Serialize;

use super::send::Routes;
use super::spec::{FaultAction, FaultSpec, LlmBehaviour, WhatsAppSpec};
use super::traffic::TAG_PREFIX;

/// How long a drained node may take to exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A fault as it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultEvent {
    /// When it started, seconds after the traffic started.
    pub at: f64,
    /// What it was, e.g. `kill node-1`.
    pub label: String,
    /// How long it took (a drain: until the node exited), seconds.
    pub took: f64,
    /// `ok`, or what went wrong.
    pub result: String,
}

/// The fake LLM options of a behaviour (tags echoed, seeded).
pub fn llm_options(behaviour: &LlmBehaviour, seed: u64) -> FakeLlmOptions {
    FakeLlmOptions {
        latency: Duration::from_millis(behaviour.latency_ms),
        latency_tail_mean: Duration::from_millis(behaviour.latency_tail_ms),
        rate_limit_rate: behaviour.rate_limit_rate,
        retry_after: Duration::from_millis(behaviour.retry_after_ms),
        unavailable_rate: behaviour.unavailable_rate,
        echo_tags: Some(TAG_PREFIX.to_owned()),
        answer_chars: behaviour.answer_chars,
        seed,
        ..FakeLlmOptions::default()
    }
}

/// The fake Cloud API options of a behaviour (status webhooks signed with `app_secret`).
pub fn whatsapp_options(spec: &WhatsAppSpec, seed: u64, app_secret: &str) -> FakeWhatsAppOptions {
    FakeWhatsAppOptions {
        throughput_error_rate: spec.throughput_error_rate,
        pair_rate_error_rate: spec.pair_rate_error_rate,
        server_error_rate: spec.server_error_rate,
        latency: Duration::from_millis(spec.latency_ms),
        status_webhooks: spec
            .status_webhooks
            .then(|| salesboy_testkit::StatusWebhooks {
                app_secret: app_secret.to_owned(),
                statuses: vec!["sent".into(), "delivered".into(), "read".into()],
                delay: Duration::from_millis(50),
            }),
        seed,
        ..FakeWhatsAppOptions::default()
    }
}

/// Points the fake Cloud API's status webhooks at the routable nodes.
pub fn update_status_targets(sandbox: &ClusterSandbox, routes: &Routes) {
    let nodes = sandbox.nodes();
    let targets = routes
        .nodes()
        .into_iter()
        .filter_map(|i| nodes.get(i))
        .map(|node| format!("{}/webhooks/whatsapp", node.http_base))
        .collect();
    sandbox.whatsapp().set_status_targets(targets);
}

/// Runs the faults.
pub struct Faults {
    /// The nodes.
    pub sandbox: Arc<ClusterSandbox>,
    /// Where webhooks go.
    pub routes: Arc<Routes>,
    /// The primary LLM fake.
    pub primary: Arc<FakeLlm>,
    /// The run's seed.
    pub seed: u64,
}

impl Faults {
    /// Runs `faults` at their times from `start`, one after the other; what happened.
    pub async fn run(self, faults: Vec<FaultSpec>, start: Instant) -> Vec<FaultEvent> {
        let mut events = Vec::new();
        for (i, fault) in faults.into_iter().enumerate() {
            tokio::time::sleep_until((start + Duration::from_secs_f64(fault.at_secs)).into()).await;
            let at = start.elapsed();
            let (label, result) = self.apply(&fault.action, i as u64).await;
            let took = start.elapsed() - at;
            crate::bench::progress(format!(
                "fault: {label} ({:.1} s): {}",
                took.as_secs_f64(),
                result.as_ref().err().map_or("ok", String::as_str)
            ));
            events.push(FaultEvent {
                at: at.as_secs_f64(),
                label,
                took: took.as_secs_f64(),
                result: result.err().unwrap_or_else(|| "ok".to_owned()),
            });
        }
        events
    }

    async fn apply(&self, action: &FaultAction, index: u64) -> (String, Result<(), String>) {
        let sandbox = &self.sandbox;
        match action {
            FaultAction::Kill { node } => {
                self.routes.remove(*node);
                update_status_targets(sandbox, &self.routes);
                (format!("kill -9 node-{node}"), sandbox.kill(*node).await)
            }
            FaultAction::Restart { node } => {
                let result = async {
                    sandbox.restart(*node).await?;
                    sandbox.wait_healthy(*node, NODE_STARTUP_TIMEOUT).await
                }
                .await;
                if result.is_ok() {
                    self.routes.add(*node);
                    update_status_targets(sandbox, &self.routes);
                }
                (format!("restart node-{node}"), result)
            }
            FaultAction::KillNats { server } => {
                let result = match sandbox.nats_cluster() {
                    Some(nats) => {
                        nats.kill(*server);
                        Ok(())
                    }
                    None => Err("no NATS cluster (cluster.nats_servers)".to_owned()),
                };
                (format!("kill -9 nats-server {server}"), result)
            }
            FaultAction::RestartNats { server } => {
                let result = match sandbox.nats_cluster() {
                    Some(nats) => nats.restart(*server).map_err(|e| e.to_string()),
                    None => Err("no NATS cluster (cluster.nats_servers)".to_owned()),
                };
                (format!("restart nats-server {server}"), result)
            }
            FaultAction::Add => match sandbox.add_node().await {
                Ok(node) => {
                    self.routes.add(node);
                    update_status_targets(sandbox, &self.routes);
                    (format!("add node-{node}"), Ok(()))
                }
                Err(error) => ("add a node".to_owned(), Err(error)),
            },
            FaultAction::Drain { node } => {
                self.routes.remove(*node);
                update_status_targets(sandbox, &self.routes);
                let result = match sandbox.terminate(*node) {
                    Ok(()) => match sandbox.wait_exit(*node, DRAIN_TIMEOUT).await {
                        Some(status) if status.success() => Ok(()),
                        Some(status) => Err(format!("node-{node} exited with {status}")),
                        None => Err(format!("node-{node} still runs after {DRAIN_TIMEOUT:?}")),
                    },
                    Err(error) => Err(error),
                };
                (format!("drain node-{node}"), result)
            }
            FaultAction::Llm(behaviour) => {
                self.primary
                    .set_options(llm_options(behaviour, self.seed.wrapping_add(index)));
                (
                    format!(
                        "llm: {} ms + tail {} ms, 429 {:.0}%, 503 {:.0}%",
                        behaviour.latency_ms,
                        behaviour.latency_tail_ms,
                        behaviour.rate_limit_rate * 100.0,
                        behaviour.unavailable_rate * 100.0
                    ),
                    Ok(()),
                )
            }
            FaultAction::Whatsapp(spec) => {
                sandbox.whatsapp().set_options(whatsapp_options(
                    spec,
                    self.seed.wrapping_add(index),
                    sandbox.app_secret(),
                ));
                (
                    format!(
                        "cloud api: 130429 {:.0}%, 131056 {:.0}%, 5xx {:.0}%",
                        spec.throughput_error_rate * 100.0,
                        spec.pair_rate_error_rate * 100.0,
                        spec.server_error_rate * 100.0
                    ),
                    Ok(()),
                )
            }
        }
    }
}
