//! The load harness at CI size: a seconds-long scenario against the debug `salesboy`
//! binary (built first), and every shipped scenario file parses. It checks the harness's
//! books, not performance: no figure is asserted.

use salesboy_sim::scenario::{self, RunOptions, ScenarioSpec};
use salesboy_testkit::{salesboy_binary, workspace_root};

#[test]
fn every_shipped_scenario_parses() {
    let dir = workspace_root().join("simulations/scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the scenarios folder") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = ScenarioSpec::load(&path).expect("the scenario parses");
            assert_eq!(
                path.file_stem().and_then(|s| s.to_str()),
                Some(spec.name.as_str()),
                "a scenario's file is named after it"
            );
            names.push(spec.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "campaign-storm",
            "drain",
            "failover-fast",
            "llm-degraded",
            "nats-server-kill",
            "node-kill",
            "scale-out",
            "seed-100-tenants",
            "steady-10k-tenants"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_scenario_answers_every_message_exactly_once() {
    let spec = ScenarioSpec::load(&workspace_root().join("simulations/tests/ci-smoke.toml"))
        .expect("the CI scenario parses");
    let out = tempfile::tempdir().expect("a temp dir");
    let options = RunOptions {
        salesboy_bin: salesboy_binary(),
        out: out.path().to_owned(),
        progress_bar: false,
    };
    let report = scenario::run(spec, &options)
        .await
        .expect("the scenario runs");

    let counts = &report.counts;
    assert!(counts.planned > 10, "{counts:?}");
    assert_eq!(counts.accepted, counts.planned, "{counts:?}");
    assert_eq!((counts.lost, counts.duplicated), (0, 0), "{counts:?}");
    assert_eq!(
        counts.untagged_replies, 0,
        "every reply came from an LLM: {counts:?}"
    );
    assert_eq!(counts.misrouted_replies, 0, "{counts:?}");
    // Typing bursts are answered once: fewer replies than messages.
    assert!(
        counts.replies > 0 && counts.replies < counts.accepted,
        "{counts:?}"
    );
    assert_eq!(report.inbound_persisted, counts.accepted as i64);
    // The primary's 429s sent some turns to the fallback.
    let fallback = report
        .llm_requests
        .iter()
        .find(|(name, ..)| name == "fallback");
    assert!(
        fallback.is_some_and(|(_, _, answered)| *answered > 0),
        "{:?}",
        report.llm_requests
    );
    // Status webhooks came back signed and were applied: every reply ends `read`.
    assert_eq!(report.status_webhooks.1, 0);
    assert_eq!(report.status_webhooks.0, 3 * counts.replies as u64);
    assert_eq!(
        report.outbound_by_status,
        vec![("read".to_owned(), counts.replies as i64)]
    );
    assert_eq!(report.latency.total.count, counts.replies);
    assert!(
        report.failed_expectations.is_empty(),
        "{:?}",
        report.failed_expectations
    );

    for file in [
        "report.json",
        "report.md",
        "messages.tsv",
        "replies.tsv",
        "throughput.svg",
        "latency.svg",
        "latency_split.svg",
        "tenants_per_node.svg",
        "rss_per_node.svg",
        "rss_per_tenant.svg",
    ] {
        let text = std::fs::read_to_string(out.path().join(file)).expect(file);
        assert!(!text.is_empty(), "{file} is empty");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .expect("report.json is JSON");
    assert_eq!(json["counts"]["lost"], 0);
    assert!(report.markdown().contains("## Capacity and cost"));
}
