//! `salesboy-sim chaos`: runs the seeds, prints failures with the command that replays
//! them, and a summary; fails if any seed fails.

use std::time::Instant;

use anyhow::bail;

use super::{ChaosOptions, InjectedBug, SeedReport, parse_seeds, repro_command, run_seeds};

/// Runs `seeds` (`A..B` or `N`) on `jobs` threads, with `bug` injected if given.
pub fn run(
    seeds: &str,
    jobs: usize,
    verbose: bool,
    bug: Option<InjectedBug>,
) -> anyhow::Result<()> {
    // Logs only when asked (`RUST_LOG=info`): to follow one seed, not thousands.
    if std::env::var_os("RUST_LOG").is_some() {
        salesboy_node::telemetry::init(salesboy_node::config::LogFormat::Text);
    }
    let range = parse_seeds(seeds)?;
    let options = ChaosOptions {
        bug,
        ..ChaosOptions::default()
    };
    let began = Instant::now();
    let progress = |report: &SeedReport| {
        if verbose || !report.passed() {
            eprintln!("{}", describe(report));
        }
        if !report.passed() {
            eprintln!("  reproduce: {}", repro_command(report.seed, &options));
        }
    };
    let summary = run_seeds(range.clone(), &options, jobs, &progress);
    let wall = began.elapsed();
    println!(
        "chaos: {} seeds ({}..{}), {} failed, {} errors; {:.0} s simulated in {:.1} s",
        summary.seeds,
        range.start(),
        range.end(),
        summary.failures.len(),
        summary.errors.len(),
        summary.simulated.as_secs_f64(),
        wall.as_secs_f64(),
    );
    for (seed, error) in &summary.errors {
        println!("seed {seed}: harness error: {error}");
        println!("  reproduce: {}", repro_command(*seed, &options));
    }
    for report in &summary.failures {
        println!("seed {} failed: {}", report.seed, report.violations[0]);
        println!("  reproduce: {}", repro_command(report.seed, &options));
    }
    if !summary.failures.is_empty() || !summary.errors.is_empty() {
        bail!(
            "{} of {} seeds failed",
            summary.failures.len() + summary.errors.len(),
            summary.seeds
        );
    }
    Ok(())
}

/// One seed's report, a few lines.
pub fn describe(report: &SeedReport) -> String {
    let mut text = format!(
        "seed {}: {} — {} messages, {} replies, {} sends ({} duplicate), {:.0} s simulated; \
         requests lost {}, duplicated {}, delayed {}; trace {:016x}",
        report.seed,
        if report.passed() { "ok" } else { "FAILED" },
        report.tally.inbound,
        report.tally.replies,
        report.tally.sends,
        report.tally.duplicate_sends,
        report.simulated.as_secs_f64(),
        report.message_faults.dropped,
        report.message_faults.duplicated,
        report.message_faults.delayed,
        report.trace_hash,
    );
    for event in &report.events {
        text.push_str("\n  ");
        text.push_str(event);
    }
    for violation in &report.violations {
        text.push_str("\n  VIOLATION ");
        text.push_str(violation);
    }
    text
}
