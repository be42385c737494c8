//! The seeded fault simulation (`salesboy-sim chaos --seeds A..B`).
//!
//! Each seed runs a whole cluster inside one process, on one current-thread tokio runtime
//! with paused time (it jumps ahead whenever every task waits, so a run of two simulated
//! minutes takes a fraction of a second and nothing sleeps on the wall clock):
//!
//! - the real actor tree and cluster runtime of every node (membership, directory, leader
//!   lease, routing, migration, failover, rebalancing), on in-memory ports ([`node`]);
//! - one in-process bus with a seeded fault layer per node ([`bus`]), one in-memory
//!   database with the SQL store's semantics ([`store`]), simulated WhatsApp and LLM
//!   ([`ports`]);
//! - a schedule drawn from the seed ([`plan`]): customers' messages through random
//!   ingresses, webhooks delivered twice, nodes killed and restarted, paused, cut off;
//!   requests and replies lost, delayed (hence reordered) and duplicated;
//! - after the faults stop and the cluster settles, the invariants ([`check`]).
//!
//! A failing seed prints the command that replays it ([`repro_command`]).

pub mod bus;
pub mod check;
pub mod cli;
pub mod gate;
pub mod node;
pub mod plan;
pub mod ports;
pub mod rng;
pub mod store;
pub mod world;

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{Context, bail};

pub use check::Tally;
pub use plan::{Plan, Shape};

/// A bug to inject, to show the checker catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InjectedBug {
    /// The database skips the epoch check: fenced writes from a stale host are accepted.
    AcceptStaleEpochs,
}

/// How to run the seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChaosOptions {
    /// The simulated world's shape.
    pub shape: Shape,
    /// A bug to inject, if any.
    pub bug: Option<InjectedBug>,
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Invariants broken (empty: the seed passes).
    pub violations: Vec<String>,
    /// Figures of the run.
    pub tally: Tally,
    /// Node faults applied, with their simulated times.
    pub events: Vec<String>,
    /// Requests and replies lost, duplicated, delayed.
    pub message_faults: bus::FaultCounts,
    /// Simulated time.
    pub simulated: Duration,
    /// A hash of everything observable: node faults and their times, every send with its
    /// time and node, the database's final contents, the write log. Equal for two runs of
    /// one seed.
    pub trace_hash: u64,
}

impl SeedReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Parses `A..B` (both included) or a single seed `N`.
pub fn parse_seeds(text: &str) -> anyhow::Result<RangeInclusive<u64>> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .with_context(|| format!("not a seed: {s:?}"))
    };
    let range = match text.split_once("..") {
        Some((from, to)) => parse(from)?..=parse(to.trim_start_matches('='))?,
        None => {
            let seed = parse(text)?;
            seed..=seed
        }
    };
    if range.is_empty() {
        bail!("empty seed range {text:?}");
    }
    Ok(range)
}

/// The command that replays `seed` with `options`.
pub fn repro_command(seed: u64, options: &ChaosOptions) -> String {
    let mut command = format!("salesboy-sim chaos --seeds {seed}..{seed}");
    if let Some(bug) = options.bug {
        let name = clap::ValueEnum::to_possible_value(&bug)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let _ = write!(command, " --inject-bug {name}");
    }
    command
}

/// Runs one seed on its own runtime (current thread, paused time) and checks it.
pub fn run_seed(seed: u64, options: &ChaosOptions) -> anyhow::Result<SeedReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("building the simulation runtime")?;
    let plan = Plan::new(seed, options.shape);
    let bug = options.bug == Some(InjectedBug::AcceptStaleEpochs);
    let outcome = runtime.block_on(world::simulate(&plan, bug))?;
    drop(runtime);
    let (violations, tally) = check::check(&plan, &outcome.observed);
    let trace_hash = trace_hash(&outcome);
    Ok(SeedReport {
        seed,
        violations,
        tally,
        events: outcome.events,
        message_faults: outcome.message_faults,
        simulated: outcome.simulated,
        trace_hash,
    })
}

/// FNV-1a over the observable outcome.
fn trace_hash(outcome: &world::Outcome) -> u64 {
    let mut text = String::new();
    for event in &outcome.events {
        let _ = writeln!(text, "{event}");
    }
    for sent in &outcome.observed.outbox {
        let _ = writeln!(
            text,
            "{} {} {} {} {}",
            sent.at_ms, sent.node, sent.tenant, sent.chat, sent.body
        );
    }
    for message in &outcome.observed.messages {
        let _ = writeln!(
            text,
            "{} {:?} {:?} {:?} {:?} {:?}",
            message.id,
            message.direction,
            message.wamid,
            message.body,
            message.status,
            message.created_ms
        );
    }
    let _ = writeln!(text, "{:?}", outcome.observed.links);
    let _ = writeln!(text, "{:?}", outcome.observed.log);
    let _ = writeln!(text, "{}", outcome.simulated.as_millis());
    if let Ok(dir) = std::env::var("ZZ_TRACE") {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::write(format!("{dir}/{n:03}.txt"), &text);
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a range of seeds did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// The failing seeds' reports, by seed.
    pub failures: Vec<SeedReport>,
    /// Seeds whose run could not complete (harness errors), with the error.
    pub errors: Vec<(u64, String)>,
    /// Simulated time over all seeds.
    pub simulated: Duration,
}

/// Runs every seed of `seeds` on `jobs` threads; `progress` sees each report as it comes.
pub fn run_seeds(
    seeds: RangeInclusive<u64>,
    options: &ChaosOptions,
    jobs: usize,
    progress: &(dyn Fn(&SeedReport) + Sync),
) -> Summary {
    let next = std::sync::atomic::AtomicU64::new(*seeds.start());
    let last = *seeds.end();
    let summary = parking_lot::Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed > last || seed < *seeds.start() {
                        return;
                    }
                    let result = run_seed(seed, options);
                    let mut summary = summary.lock();
                    summary.seeds += 1;
                    match result {
                        Ok(report) => {
                            progress(&report);
                            summary.simulated += report.simulated;
                            if !report.passed() {
                                summary.failures.push(report);
                            }
                        }
                        Err(e) => summary.errors.push((seed, format!("{e:#}"))),
                    }
                }
            });
        }
    });
    let mut summary = summary.into_inner();
    summary.failures.sort_by_key(|r| r.seed);
    summary.errors.sort_by_key(|(seed, _)| *seed);
    summary
}
