//! A benchmark's result: what was run, where, when, on which commit, the figures and the
//! verdicts against the targets. Printed as one JSON line and as a markdown table.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::env::{CpuUsage, Machine, git_commit, utc_now};
use super::node::workspace_root;

/// One figure against its target.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The target, e.g. `≥ 5,000 msg/s end to end`.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether the target was met.
    pub met: bool,
    /// `met`, or by how much it was missed.
    pub verdict: String,
}

impl Verdict {
    /// A "higher is better" figure: met when `measured >= target`.
    pub fn at_least(target: &str, measured: f64, goal: f64, unit: &str) -> Self {
        let met = measured >= goal;
        Self {
            target: target.to_owned(),
            measured: format!("{measured:.1} {unit}"),
            met,
            verdict: if met {
                "met".to_owned()
            } else {
                format!(
                    "missed by {:.1} {unit} ({:.0}% of target)",
                    goal - measured,
                    100.0 * measured / goal
                )
            },
        }
    }

    /// A "lower is better" figure: met when `measured <= target`.
    pub fn at_most(target: &str, measured: f64, goal: f64, unit: &str) -> Self {
        let met = measured <= goal;
        Self {
            target: target.to_owned(),
            measured: format!("{measured:.2} {unit}"),
            met,
            verdict: if met {
                "met".to_owned()
            } else {
                format!(
                    "missed by {:.2} {unit} ({:.1}× the target)",
                    measured - goal,
                    measured / goal
                )
            },
        }
    }
}

/// A benchmark's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `throughput`, `latency` or `tenant-memory`.
    pub bench: String,
    /// The command line that produced it.
    pub command: String,
    /// When it finished (UTC).
    pub date_utc: String,
    /// The git commit of the working tree (`-dirty` with uncommitted changes).
    pub git_commit: Option<String>,
    /// Where it ran.
    pub machine: Machine,
    /// The node's database.
    pub db: String,
    /// The node's settings that matter for the figures.
    pub node_settings: BTreeMap<String, String>,
    /// The figures (bench-specific).
    pub results: Value,
    /// Where CPU time went during the measured phase.
    pub cpu: Option<CpuUsage>,
    /// The figures against their targets.
    pub verdicts: Vec<Verdict>,
    /// Lost or duplicated messages, refused deliveries: anything that makes the figures
    /// suspect. Empty when the run was clean.
    pub problems: Vec<String>,
    /// Rows of the markdown table (`figure`, `value`), in order.
    #[serde(skip)]
    pub rows: Vec<(String, String)>,
}

impl Report {
    /// A report for `bench` on `db`, stamped with the command line, machine, date and commit.
    pub fn new(bench: &str, db: &str, node_settings: BTreeMap<String, String>) -> Self {
        Self {
            bench: bench.to_owned(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            date_utc: utc_now(),
            git_commit: git_commit(&workspace_root()),
            machine: Machine::detect(),
            db: db.to_owned(),
            node_settings,
            results: Value::Null,
            cpu: None,
            verdicts: Vec::new(),
            problems: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Adds a table row.
    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push((figure.into(), value.into()));
    }

    /// Adds the CPU used per message (node, bench, PostgreSQL) over `messages` and keeps
    /// `cpu` for the markdown's CPU line.
    pub fn cpu_per_message(&mut self, cpu: CpuUsage, messages: usize) {
        self.row(
            "CPU per message (node / bench / postgres)",
            format!(
                "{:.0} / {:.0} / {:.0} µs",
                1e6 * cpu.node_secs / messages as f64,
                1e6 * cpu.bench_secs / messages as f64,
                1e6 * cpu.postgres_secs / messages as f64
            ),
        );
        self.cpu = Some(cpu);
    }

    /// Adds how busy the machine was before the run (`load`, 0–1).
    pub fn machine_busy_before(&mut self, load: f64) {
        self.row(
            "machine busy in the 2 s before the run (/proc/stat, approximate)",
            format!("{:.0}%", 100.0 * load),
        );
    }

    /// The report as one JSON line.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a markdown section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let gib = self.machine.total_ram_bytes as f64 / f64::from(1u32 << 30);
        out.push_str(&format!(
            "#### `{}` on {} — {} (commit {})\n\n",
            self.bench,
            self.db,
            self.date_utc,
            self.git_commit.as_deref().unwrap_or("unknown")
        ));
        out.push_str(&format!("Command: `{}`  \n", self.command));
        out.push_str(&format!(
            "Machine: {} × {}, {gib:.1} GiB RAM, Linux {}\n\n",
            self.machine.nproc, self.machine.cpu_model, self.machine.kernel
        ));
        out.push_str("| figure | value |\n|---|---|\n");
        for (figure, value) in &self.rows {
            out.push_str(&format!("| {figure} | {value} |\n"));
        }
        if let Some(cpu) = &self.cpu {
            let machine = if cpu.machine_consistent(self.machine.nproc) {
                format!(
                    "other processes ≈ {:.1}, machine busy ≈ {:.0}%",
                    cpu.other_secs(),
                    100.0 * cpu.machine_busy_secs / cpu.machine_total_secs.max(1e-9)
                )
            } else {
                "machine-wide use n/a (/proc/stat inconsistent for this window)".to_owned()
            };
            out.push_str(&format!(
                "| CPU seconds in the measured phase ({:.1} s wall × {} CPUs) | node {:.1} ({:.0}% in the kernel), bench (load + fake Cloud API) {:.1}, postgres (all backends) {:.1}; {machine} |\n",
                cpu.wall_secs,
                self.machine.nproc,
                cpu.node_secs,
                100.0 * cpu.node_system_secs / cpu.node_secs.max(1e-9),
                cpu.bench_secs,
                cpu.postgres_secs,
            ));
        }
        if !self.verdicts.is_empty() {
            out.push_str("\n| target | measured | verdict |\n|---|---|---|\n");
            for verdict in &self.verdicts {
                out.push_str(&format!(
                    "| {} | {} | {} |\n",
                    verdict.target, verdict.measured, verdict.verdict
                ));
            }
        }
        if self.problems.is_empty() {
            out.push_str("\nNo problems: every message accounted for.\n");
        } else {
            out.push_str("\n**Problems:**\n\n");
            for problem in &self.problems {
                out.push_str(&format!("- {problem}\n"));
            }
        }
        out
    }
}

/// Bytes as `12.3 MiB`.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1_048_576.0)
}

/// Bytes as `12.3 KiB`.
pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}
