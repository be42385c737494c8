//! The Prometheus side: `promtool check rules` accepts `deploy/prometheus/salesboy-rules.yml`
//! and `promtool check metrics` a running node's `/metrics`, with every alert gauge in it.
//! Needs `promtool` (Debian's `prometheus` package; `scripts/test` installs it when missing,
//! `SALESBOY_TEST_PROMTOOL_BIN` overrides the path).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use salesboy_protocol::events::AlertKind;
use salesboy_testkit::{Db, Gateway, eventually, workspace_root};

fn promtool() -> String {
    std::env::var("SALESBOY_TEST_PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_owned())
}

/// Runs promtool with `args`, `stdin` on its input; panics with its output unless it succeeds.
fn check(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install Debian's prometheus package (scripts/test does) or set SALESBOY_TEST_PROMTOOL_BIN",
                promtool()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_rules_file() {
    let rules = workspace_root().join("deploy/prometheus/salesboy-rules.yml");
    let output = check(&["check", "rules", rules.to_str().expect("utf-8 path")], "");
    assert!(output.contains("SUCCESS"), "{output}");
    // Every alert the nodes raise as a condition has a rule.
    let text = std::fs::read_to_string(&rules).expect("rules file");
    for kind in AlertKind::CONDITIONS {
        assert!(
            text.contains(&format!("alert=\"{}\"", kind.as_str())),
            "no rule for {kind}"
        );
    }
}

#[tokio::test]
async fn promtool_accepts_a_running_nodes_metrics() {
    let gateway = Gateway::start(Db::Sqlite, |c| {
        c.alerts.interval = Duration::from_millis(50);
    })
    .await;
    let url = format!("{}/metrics", gateway.base);
    // Once the evaluator has measured, the page holds the alerts' gauges too.
    let metrics = eventually(Duration::from_secs(20), || async {
        let text = gateway
            .http
            .get(&url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        // …and retention's counters, after its first run at start.
        (text.contains("salesboy_knowledge_chunks")
            && text.contains("salesboy_retention_runs_total"))
        .then_some(text)
    })
    .await;
    for kind in AlertKind::CONDITIONS {
        let gauge = format!("salesboy_alert_active{{alert=\"{}\"}} 0", kind.as_str());
        assert!(metrics.contains(&gauge), "{gauge} missing:\n{metrics}");
    }
    for measure in [
        "salesboy_memory_limit_bytes",
        "salesboy_database_size_bytes",
        "salesboy_error_rate_ratio{source=\"llm_calls\"}",
        "salesboy_cluster_tenant_capacity",
    ] {
        assert!(metrics.contains(measure), "{measure} missing:\n{metrics}");
    }
    check(&["check", "metrics"], &metrics);
    gateway.node.stop().await;
}
