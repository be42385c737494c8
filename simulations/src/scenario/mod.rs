//! The load harness: `salesboy-sim run <scenario.toml> [--out DIR]`.
//!
//! A run starts what the scenario names — real `salesboy serve` processes on a private
//! nats-server and a fresh PostgreSQL database (or SQLite for one node), through
//! [`ClusterSandbox`]; a fake WhatsApp Cloud API that posts signed status webhooks back;
//! fake LLM servers (a primary and an optional OpenAI-compatible fallback) — seeds the
//! tenants, then sends the planned traffic while the fault schedule runs and an observer
//! samples the nodes. After the traffic it waits for the last replies, balances what was
//! sent against what the fake Cloud API received, and writes the report.
//!
//! Modules: [`spec`] (the scenario file), [`traffic`] (the plan), [`send`] (the load
//! generator), [`faults`], [`observe`] (samples and the progress bar), [`ledger`] (lost,
//! duplicated, latencies), [`capacity`] (sizing and cost), [`charts`] (SVG), [`report`].
//!
//! Everything started is stopped when the run ends, fails or is dropped (Ctrl-C): the
//! background tasks are aborted and the sandbox kills its nodes and drops its database.

pub mod capacity;
pub mod charts;
pub mod faults;
pub mod ledger;
pub mod observe;
pub mod report;
pub mod send;
pub mod spec;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use salesboy_testkit::{ClusterSandbox, Db, FakeLlm};
use sqlx::{AnyConnection, Connection, Row};

use self::capacity::Measured;
use self::faults::{Faults, llm_options, update_status_targets, whatsapp_options};
use self::observe::{Observed, Observer};
use self::report::{LatencySplit, Report};
use self::send::{Routes, SendCounters, Sender};
use self::spec::{Database, FaultAction, Scenario};
use crate::bench::env::{Machine, git_commit, utc_now};
use crate::bench::progress;
use crate::bench::stats::Distribution;

pub use self::report::Report as ScenarioReport;
pub use self::spec::Scenario as ScenarioSpec;

/// How a run is made.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `salesboy` binary (a release build for figures).
    pub salesboy_bin: PathBuf,
    /// Where the report goes.
    pub out: PathBuf,
    /// Whether to draw the progress bar (it hides itself when stderr is not a terminal).
    pub progress_bar: bool,
}

/// Background tasks aborted when dropped (on Ctrl-C the run's future is dropped).
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// `salesboy-sim run`: loads the scenario, runs it (Ctrl-C stops it and everything it
/// started), prints the summary; an error when an `[expect]` check failed.
pub async fn command(
    scenario: &std::path::Path,
    out: Option<PathBuf>,
    salesboy_bin: PathBuf,
) -> anyhow::Result<()> {
    let spec = Scenario::load(scenario)?;
    let options = RunOptions {
        out: out.unwrap_or_else(|| PathBuf::from("target/sim-runs").join(&spec.name)),
        salesboy_bin,
        progress_bar: true,
    };
    // Ctrl-C drops the run: its tasks are aborted, the nodes killed, the NATS server
    // stopped, the PostgreSQL database dropped, the temp dirs removed.
    let report = tokio::select! {
        report = run(spec, &options) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: everything started was stopped"),
    };
    println!("{}", report.summary());
    println!("report: {}", options.out.join("report.md").display());
    if !report.failed_expectations.is_empty() {
        anyhow::bail!(
            "expectations failed: {}",
            report.failed_expectations.join("; ")
        );
    }
    Ok(())
}

/// Runs a scenario and writes its report to `options.out`; the report.
pub async fn run(scenario: Scenario, options: &RunOptions) -> anyhow::Result<Report> {
    let plan = Arc::new(traffic::plan(&scenario));
    progress(format!(
        "scenario {}: {} messages planned over {:.0} s, {} tenants × {} customers, {} node(s)",
        scenario.name,
        plan.len(),
        scenario.duration_secs,
        scenario.tenants.count,
        scenario.tenants.customers_per_tenant,
        scenario.cluster.nodes
    ));

    // The fakes the sandbox does not own: the LLMs (each with its own options).
    let primary = Arc::new(
        FakeLlm::try_start(llm_options(&scenario.llm.primary, scenario.seed))
            .await
            .context("starting the primary fake llm")?,
    );
    let fallback = match &scenario.llm.fallback {
        Some(behaviour) => Some(Arc::new(
            FakeLlm::try_start(llm_options(behaviour, scenario.seed ^ 0xfa11))
                .await
                .context("starting the fallback fake llm")?,
        )),
        None => None,
    };

    let sandbox = Arc::new(
        ClusterSandbox::builder()
            .nodes(scenario.cluster.nodes)
            .binary(&options.salesboy_bin)
            .database(match scenario.cluster.database {
                Database::Postgres => Db::Postgres,
                Database::Sqlite => Db::Sqlite,
            })
            .env(
                "SALESBOY_DEBOUNCE_MS",
                scenario.cluster.debounce_ms.to_string(),
            )
            .env(
                "SALESBOY_FAILURE_TIMEOUT_MS",
                scenario.cluster.failure_timeout_ms.to_string(),
            )
            .nats_cluster(scenario.cluster.nats_servers)
            .env("RUST_LOG", "warn")
            .start()
            .await
            .map_err(|e| anyhow!(e))
            .context("starting the nodes")?,
    );
    sandbox.whatsapp().set_options(whatsapp_options(
        &scenario.whatsapp,
        scenario.seed,
        sandbox.app_secret(),
    ));
    let routes = Arc::new(Routes::new(0..scenario.cluster.nodes));
    update_status_targets(&sandbox, &routes);

    let mut providers = vec![match scenario.llm.primary_kind.as_str() {
        "openai" => serde_json::json!({"kind": "openai", "name": "primary", "model": "gpt-4o-mini",
            "api_key": "sk-sim", "base_url": primary.openai_base_url()}),
        _ => serde_json::json!({"kind": "gemini", "name": "primary", "model": "gemini-2.5-flash",
            "api_key": "gemini-sim", "base_url": primary.gemini_base_url()}),
    }];
    if let Some(fallback) = &fallback {
        providers.push(serde_json::json!({"kind": "openai", "name": "fallback",
            "model": "gpt-4o-mini", "api_key": "sk-sim", "base_url": fallback.openai_base_url()}));
    }
    let seeded = Instant::now();
    let tenants = sandbox
        .seed_tenants_with(
            scenario.tenants.count,
            &scenario.tenants.knowledge,
            &serde_json::Value::Array(providers),
        )
        .await
        .map_err(|e| anyhow!(e))?;
    progress(format!(
        "seeded {} tenants in {:.1} s; nodes up, traffic starts",
        tenants.len(),
        seeded.elapsed().as_secs_f64()
    ));

    let counters = Arc::new(SendCounters::default());
    let error_times = Arc::new(Mutex::new(Vec::new()));
    let sender = Arc::new(Sender {
        sandbox: Arc::clone(&sandbox),
        routes: Arc::clone(&routes),
        numbers: tenants.into_iter().map(|(_, number)| number).collect(),
        customers_per_tenant: scenario.tenants.customers_per_tenant,
        concurrency: scenario.traffic.concurrency,
        counters: Arc::clone(&counters),
        error_times: Arc::clone(&error_times),
    });
    let llms: Vec<Arc<FakeLlm>> = std::iter::once(Arc::clone(&primary))
        .chain(fallback.iter().cloned())
        .collect();
    let bar = if options.progress_bar {
        Observer::bar(plan.len())
    } else {
        indicatif::ProgressBar::hidden()
    };
    let observer = Observer {
        sandbox: Arc::clone(&sandbox),
        plan: Arc::clone(&plan),
        counters: Arc::clone(&counters),
        llms: llms.clone(),
        bar: bar.clone(),
    };
    let fault_runner = Faults {
        sandbox: Arc::clone(&sandbox),
        routes: Arc::clone(&routes),
        primary: Arc::clone(&primary),
        seed: scenario.seed,
    };

    let load_at_start = report::load_average();
    let start = Instant::now();
    let (stop_observer, observer_stopped) = tokio::sync::watch::channel(false);
    let observing = tokio::spawn(observer.run(start, observer_stopped));
    let faulting = tokio::spawn(fault_runner.run(scenario.faults.clone(), start));
    let sending = tokio::spawn(Arc::clone(&sender).run(Arc::clone(&plan), start));
    let _tasks = Tasks(vec![
        observing.abort_handle(),
        faulting.abort_handle(),
        sending.abort_handle(),
    ]);

    let outcomes = sending.await.context("the sender failed")?;
    let traffic_secs = start.elapsed().as_secs_f64();
    let load_at_end = report::load_average();
    let fault_events = faulting.await.context("the fault schedule failed")?;
    bar.println(format!(
        "traffic done in {traffic_secs:.1} s; waiting for the last replies"
    ));
    settle(&sandbox, &outcomes, scenario.settle_secs).await;
    let total_secs = start.elapsed().as_secs_f64();
    stop_observer.send_replace(true);
    let observed = observing.await.context("the observer failed")?;
    bar.finish_and_clear();

    // The books.
    let replies = sandbox.whatsapp().sent();
    let calls: Vec<_> = llms.iter().flat_map(|llm| llm.calls()).collect();
    let ledger = ledger::balance(&plan, &outcomes, &replies, &calls, start);
    let refusals = sandbox.whatsapp().failed_attempts();
    let (inbound_persisted, outbound_by_status) = database_counts(sandbox.database_url()).await?;
    let node_deaths = node_deaths(sandbox.database_url()).await?;
    let self_fences = self_fences(&sandbox).await;

    let since = |at: Instant| at.saturating_duration_since(start).as_secs_f64();
    let accepted_times: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.accepted.map(|a| a.as_secs_f64()))
        .collect();
    let reply_times: Vec<f64> = replies.iter().map(|r| since(r.received)).collect();
    let mut errors: Vec<f64> = error_times
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(Duration::as_secs_f64)
        .collect();
    errors.extend(refusals.iter().map(|f| since(f.received)));
    errors.extend(
        calls
            .iter()
            .filter(|c| c.status != 200)
            .map(|c| since(c.arrived)),
    );
    let seconds = report::seconds(
        &accepted_times,
        &reply_times,
        &errors,
        &ledger.latencies,
        total_secs,
    );

    let accepted = ledger.counts.accepted.max(1) as f64;
    let (prompt_tokens, completion_tokens) = llms
        .iter()
        .map(|llm| llm.tokens())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let mut measured = memory(&observed);
    measured.node_cpu_secs_per_message = observed.node_cpu_secs() / accepted;
    let postgres_cpu = (observed.postgres_cpu.1 - observed.postgres_cpu.0).max(0.0);
    if scenario.cluster.database == Database::Postgres {
        measured.database_cpu_secs_per_message = postgres_cpu / accepted;
    }
    measured.prompt_tokens_per_message = prompt_tokens as f64 / accepted;
    measured.completion_tokens_per_message = completion_tokens as f64 / accepted;
    let capacity = capacity::size(&measured, &scenario.cost);

    let mut failed_expectations = Vec::new();
    if scenario.expect.zero_lost && ledger.counts.lost > 0 {
        failed_expectations.push(format!("{} messages lost", ledger.counts.lost));
    }
    if scenario.expect.zero_duplicated && ledger.counts.duplicated > 0 {
        failed_expectations.push(format!("{} messages duplicated", ledger.counts.duplicated));
    }
    if scenario.expect.no_false_deaths {
        // The nodes a fault took down (or restarted) may die; no other may.
        let faulted: Vec<String> = scenario
            .faults
            .iter()
            .filter_map(|fault| match fault.action {
                FaultAction::Kill { node }
                | FaultAction::Restart { node }
                | FaultAction::Drain { node } => Some(format!("node-{node}")),
                _ => None,
            })
            .collect();
        for (node, deaths) in &node_deaths {
            if !faulted.contains(node) {
                failed_expectations.push(format!("{node} declared dead {deaths} time(s)"));
            }
        }
        for (node, fences) in &self_fences {
            if *fences > 0 && !faulted.contains(node) {
                failed_expectations.push(format!("{node} fenced itself {fences} time(s)"));
            }
        }
    }
    for fault in &fault_events {
        if fault.result != "ok" {
            failed_expectations.push(format!("fault `{}` failed: {}", fault.label, fault.result));
        }
    }

    let status = sandbox.whatsapp().status_webhook_counts();
    let pick = |f: fn(&ledger::ReplyLatency) -> f64| {
        Distribution::of(ledger.latencies.iter().map(f).collect())
    };
    let report = Report {
        machine: Machine::detect(),
        date: utc_now(),
        commit: git_commit(&std::env::current_dir().unwrap_or_default()),
        salesboy_bin: options.salesboy_bin.display().to_string(),
        load_average: (load_at_start, load_at_end),
        traffic_secs,
        total_secs,
        counts: ledger.counts.clone(),
        inbound_persisted,
        outbound_by_status,
        status_webhooks: (status.delivered, status.failed),
        cloud_api_refusals: refusals.len(),
        llm_requests: llms
            .iter()
            .zip(["primary", "fallback"])
            .map(|(llm, name)| {
                let requests = llm.requests();
                (name.to_owned(), requests.total(), requests.answered)
            })
            .collect(),
        accepted_rate: ledger.counts.accepted as f64 / traffic_secs.max(0.001),
        reply_rate: ledger.counts.replies as f64 / traffic_secs.max(0.001),
        latency: LatencySplit {
            total: pick(|l| l.total_ms),
            llm: pick(|l| l.llm_ms),
            gateway: pick(|l| l.gateway_ms),
        },
        faults: fault_events,
        seconds,
        samples: observed.samples.clone(),
        lost_examples: ledger.lost_examples,
        duplicated_examples: ledger.duplicated_examples,
        measured,
        cpu_secs: (observed.node_cpu_secs(), postgres_cpu),
        capacity,
        failed_expectations,
        node_deaths,
        self_fences,
        scenario,
    };
    report.write(&options.out)?;
    write_books(&options.out, &plan, &outcomes, &replies, start)?;
    progress(format!("report written to {}", options.out.display()));
    Ok(report)
}

/// Waits until every accepted message has a reply and no reply arrived for a quiet
/// period (late duplicates), at most `settle_secs`.
async fn settle(sandbox: &ClusterSandbox, outcomes: &[send::Outcome], settle_secs: f64) {
    const QUIET: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + Duration::from_secs_f64(settle_secs);
    let mut last_count = sandbox.whatsapp().sent_count();
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        let count = sandbox.whatsapp().sent_count();
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        if last_change.elapsed() >= QUIET
            && ledger::unanswered(outcomes, &sandbox.whatsapp().sent()) == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress("settle timeout: some accepted messages still have no reply");
}

/// Memory per hosted tenant: at the last sample, what the live nodes hold beyond their
/// first reading (before any tenant), over the tenants they host.
fn memory(observed: &Observed) -> Measured {
    let mut baselines: BTreeMap<usize, u64> = BTreeMap::new();
    for sample in &observed.samples {
        for node in &sample.nodes {
            if let Some(rss) = node.rss_bytes {
                baselines.entry(node.node).or_insert(rss);
            }
        }
    }
    let (mut grown, mut tenants) = (0.0, 0usize);
    if let Some(last) = observed.samples.last() {
        for node in last.nodes.iter().filter(|n| n.alive) {
            if let (Some(rss), Some(hosted), Some(base)) =
                (node.rss_bytes, node.tenants, baselines.get(&node.node))
            {
                grown += rss.saturating_sub(*base) as f64;
                tenants += hosted;
            }
        }
    }
    let baseline =
        baselines.values().map(|b| *b as f64).sum::<f64>() / baselines.len().max(1) as f64;
    Measured {
        bytes_per_tenant: if tenants > 0 {
            grown / tenants as f64
        } else {
            0.0
        },
        node_baseline_bytes: baseline,
        ..Measured::default()
    }
}

/// `messages.tsv` (every planned message and what became of it) and `replies.tsv` (every
/// reply and the messages it quotes), to investigate a lost or duplicated message.
fn write_books(
    dir: &std::path::Path,
    plan: &[traffic::Planned],
    outcomes: &[send::Outcome],
    replies: &[salesboy_testkit::SentMessage],
    start: Instant,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut messages = String::from("id\tchat\tplanned_s\taccepted_s\tattempts\n");
    for (planned, outcome) in plan.iter().zip(outcomes) {
        let _ = writeln!(
            messages,
            "{}\t{}\t{:.3}\t{}\t{}",
            planned.id,
            traffic::customer_wa_id(planned.customer),
            planned.at.as_secs_f64(),
            outcome
                .accepted
                .map_or("-".to_owned(), |a| format!("{:.3}", a.as_secs_f64())),
            outcome.attempts
        );
    }
    let mut lines = String::from("received_s\tchat\twamid\tmessages\n");
    for reply in replies {
        let ids: Vec<String> = ledger::reply_tags(reply)
            .iter()
            .map(u64::to_string)
            .collect();
        let _ = writeln!(
            lines,
            "{:.3}\t{}\t{}\t{}",
            reply
                .received
                .saturating_duration_since(start)
                .as_secs_f64(),
            reply.to,
            reply.wamid,
            ids.join(",")
        );
    }
    std::fs::write(dir.join("messages.tsv"), messages).context("writing messages.tsv")?;
    std::fs::write(dir.join("replies.tsv"), lines).context("writing replies.tsv")?;
    Ok(())
}

/// The `node_left` events in the outbox, by node: each a node the cluster declared dead or
/// that left.
async fn node_deaths(url: &str) -> anyhow::Result<Vec<(String, i64)>> {
    sqlx::any::install_default_drivers();
    let mut connection = AnyConnection::connect(url)
        .await
        .context("connecting to the database for the membership events")?;
    let rows = sqlx::query("SELECT detail FROM event_outbox WHERE kind = 'node_left'")
        .fetch_all(&mut connection)
        .await?;
    let _ = connection.close().await;
    let mut deaths: BTreeMap<String, i64> = BTreeMap::new();
    for row in rows {
        let detail: String = row.try_get(0)?;
        let node = serde_json::from_str::<serde_json::Value>(&detail)
            .ok()
            .and_then(|d| d.get("node").and_then(|n| n.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        *deaths.entry(node).or_default() += 1;
    }
    Ok(deaths.into_iter().collect())
}

/// `salesboy_self_fences_total` of each node alive now (a node that never fenced has no
/// such line: 0).
async fn self_fences(sandbox: &ClusterSandbox) -> Vec<(String, u64)> {
    let mut fences = Vec::new();
    for info in sandbox.nodes() {
        if !info.alive {
            continue;
        }
        let Ok(response) = sandbox
            .http()
            .get(format!("{}/metrics", info.http_base))
            .bearer_auth(sandbox.admin_token())
            .timeout(Duration::from_secs(5))
            .send()
            .await
        else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        let count = text
            .lines()
            .filter(|line| line.starts_with("salesboy_self_fences_total"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
        fences.push((format!("node-{}", info.index), count as u64));
    }
    fences
}

/// Inbound messages in the database, and outbound ones by status.
async fn database_counts(url: &str) -> anyhow::Result<(i64, Vec<(String, i64)>)> {
    sqlx::any::install_default_drivers();
    let mut connection = AnyConnection::connect(url)
        .await
        .context("connecting to the database for the counts")?;
    let inbound: i64 = sqlx::query("SELECT COUNT(*) FROM messages WHERE direction = 'inbound'")
        .fetch_one(&mut connection)
        .await?
        .try_get(0)?;
    let rows = sqlx::query(
        "SELECT COALESCE(status, 'none'), COUNT(*) FROM messages WHERE direction = 'outbound' \
         GROUP BY status ORDER BY status",
    )
    .fetch_all(&mut connection)
    .await?;
    let mut outbound = Vec::new();
    for row in rows {
        outbound.push((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?));
    }
    let _ = connection.close().await;
    Ok((inbound, outbound))
}
