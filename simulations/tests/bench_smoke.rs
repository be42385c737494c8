//! The bench code path at CI size: tiny runs of each benchmark against the debug `salesboy`
//! binary (built first), asserting that every message was answered exactly once. They check
//! the harness, not performance: no figure is asserted.

use salesboy_sim::bench::{
    self, BenchKind, DbKind, LatencyOptions, MemoryOptions, NodeOptions, ThroughputOptions,
};
use salesboy_testkit::salesboy_binary;

fn node(db: DbKind) -> NodeOptions {
    NodeOptions::new(salesboy_binary(), db)
}

async fn run(kind: BenchKind) -> bench::Report {
    let report = bench::run(&kind).await.expect("the bench runs");
    // The report renders both ways.
    assert!(report.json_line().starts_with('{'));
    assert!(report.markdown().contains("| figure | value |"));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_on_sqlite_with_a_seeded_history_answers_every_message_exactly_once() {
    let report = run(BenchKind::Throughput(ThroughputOptions {
        node: node(DbKind::Sqlite),
        tenants: 3,
        messages: 60,
        concurrency: 4,
        messages_per_chat: 1,
        timeout_secs: 60,
        event_subscribers: false,
        seed_old_messages: 500,
    }))
    .await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.results["seeded_old_messages"], 500);
    assert_eq!(report.results["db_counts"]["inbound"], 500 + 3 + 60);
    assert_eq!(report.results["replies_sent"], 60);
    // Only the seeded history (100 days old, outside the window) is left unanswered.
    assert_eq!(report.results["db_counts"]["unanswered"], 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_on_postgres_with_repeat_customers_and_event_subscribers_answers_every_message()
{
    let report = run(BenchKind::Throughput(ThroughputOptions {
        node: NodeOptions {
            nats: true,
            ..node(DbKind::Postgres)
        },
        tenants: 2,
        messages: 40,
        concurrency: 4,
        messages_per_chat: 4,
        timeout_secs: 60,
        event_subscribers: true,
        seed_old_messages: 0,
    }))
    .await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // A message_received per message and a reply_sent per reply, on the stream and at the
    // webhooks.
    let expected = 40 + report.results["replies_sent"].as_u64().unwrap();
    let events = &report.results["events"];
    assert!(
        events["consumed"].as_u64() >= Some(expected),
        "{expected}: {events}"
    );
    assert!(
        events["delivered"].as_u64() >= Some(expected),
        "{expected}: {events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_measures_every_message() {
    let out = tempfile::tempdir().expect("a temp dir");
    let timeline = out.path().join("timeline.csv");
    let report = run(BenchKind::Latency(LatencyOptions {
        node: node(DbKind::Sqlite),
        rate: 40.0,
        seconds: 1.0,
        tenants: 2,
        messages_per_chat: 1,
        timeout_secs: 60,
        seed_old_messages: 0,
        seed_age_days: 100,
        retention_days: None,
        timeline_csv: Some(timeline.clone()),
    }))
    .await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.results["latency"]["count"], 40);
    // the timeline: a line per message, posted at or after its schedule, answered and
    // replied after it was posted
    let csv = std::fs::read_to_string(&timeline).expect("the timeline is written");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("message,scheduled_ms,post_started_ms,accepted_ms,reply_ms")
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|line| {
            line.split(',')
                .map(|cell| cell.parse().expect("every cell filled"))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 40);
    for row in &rows {
        let [_, scheduled, started, accepted, reply] = row[..] else {
            panic!("five cells: {row:?}");
        };
        assert!(scheduled <= started, "{row:?}");
        assert!(started <= accepted && started <= reply, "{row:?}");
    }
}

/// Old messages seeded for retention (the retention bench) do not disturb the measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_runs_over_seeded_old_messages() {
    let report = run(BenchKind::Latency(LatencyOptions {
        node: node(DbKind::Sqlite),
        rate: 40.0,
        seconds: 1.0,
        tenants: 2,
        messages_per_chat: 1,
        timeout_secs: 60,
        seed_old_messages: 2_500,
        seed_age_days: 100,
        retention_days: Some(100_000),
        timeline_csv: None,
    }))
    .await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.results["latency"]["count"], 40);
    assert_eq!(report.results["seeded_old_messages"], 2_500);
    // kept (retention_days far beyond their age): nothing deleted
    assert_eq!(report.results["retention_deleted_during_run"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_memory_reads_the_rss_with_tenants_passivated() {
    let report = run(BenchKind::TenantMemory(MemoryOptions {
        node: node(DbKind::Sqlite),
        tenants: 4,
        concurrency: 2,
        settle_secs: 0,
        timeout_secs: 60,
        hold_secs: 0,
    }))
    .await;
    let steps = report.results["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["active_tenants"], 4);
    assert!(steps[2]["rss"]["rss"].as_u64().unwrap_or(0) > 0);
}
