//! Retention (docs/storage.md, "Retention"), run against SQLite and Postgres: each growing
//! table loses its rows older than the window and keeps the newer ones, usage figures
//! survive the deletion of the rows they were counted from, and a large run goes in bounded
//! batches. The membership records' part is in `cluster_membership.rs`.
//!
//! Every test runs twice (`sqlite::<name>`, `postgres::<name>`) on a fresh database; a
//! Postgres that cannot be reached fails the Postgres tests.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    InsertOutcome, LlmUsage, NewInbound, NewOutbound, NewRejectedItem, NewTenant, OutboundOrigin,
    UsageReport,
};
use salesboy_node::retention::{RetentionSettings, run_once};
use salesboy_node::store::{RetentionTable, SqlStore};
use salesboy_protocol::month::Month;
use salesboy_protocol::whatsapp::RejectedItem;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use salesboy_testkit::{Backend, database_suite, run_on_fresh_store};
use serde_json::json;
use sqlx::{AnyConnection, Connection};

/// The tests' "now": a moment in November 2023 (unix ms).
const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 24 * 3600 * 1000;

/// A fresh store, and its URL for plain SQL.
struct Fixture {
    store: SqlStore,
    url: String,
}

impl Fixture {
    async fn sql(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url).await.expect("plain SQL")
    }

    async fn count(&self, query: &str) -> i64 {
        let mut sql = self.sql().await;
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(&mut sql)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let _ = sql.close().await;
        n
    }

    async fn execute(&self, statement: &str) {
        let mut sql = self.sql().await;
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut sql)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        let _ = sql.close().await;
    }
}

/// Runs `test` on a fresh store of `backend`.
async fn run_on<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_on_fresh_store(backend, |store, url| test(Fixture { store, url })).await;
}

database_suite!(
    run_on =>
    each_tables_old_rows_go_and_newer_rows_stay,
    monthly_usage_figures_survive_retention,
    a_large_run_goes_in_bounded_batches,
);

// ---------------------------------------------------------------------------------------
// Helpers.

/// The settings under test: the defaults, batches of `batch_rows`, no pause.
fn settings(batch_rows: u32) -> RetentionSettings {
    RetentionSettings {
        batch_rows,
        batch_pause: Duration::ZERO,
        ..RetentionSettings::default()
    }
}

async fn tenant(store: &SqlStore, id: &str) -> TenantId {
    let tenant = TenantId::new(id).expect("tenant id");
    store
        .upsert_tenant(&NewTenant::new(
            tenant.clone(),
            format!("{id} shop"),
            T0 - 400 * DAY,
        ))
        .await
        .expect("tenant");
    tenant
}

fn chat(id: &str) -> ChatId {
    ChatId::new(id).expect("chat id")
}

/// An inbound message of `chat` at `at_ms`; its id.
async fn receive(store: &SqlStore, tenant: &TenantId, chat: &ChatId, at_ms: i64) -> i64 {
    let inbound = NewInbound {
        tenant: tenant.clone(),
        chat: chat.clone(),
        wamid: Wamid::new(format!("wamid.{}.{at_ms}", chat.as_str())).expect("wamid"),
        kind: "text".to_owned(),
        body: Some("hello".to_owned()),
        raw: None,
        received_ms: at_ms,
        sent_ms: None,
    };
    match store
        .insert_inbound(&inbound)
        .await
        .expect("insert inbound")
    {
        InsertOutcome::Inserted { id } => id,
        other => panic!("expected a new message, got {other:?}"),
    }
}

/// An echo (a message sent from the business's phone) of `chat` at `at_ms`.
async fn echo(store: &SqlStore, tenant: &TenantId, chat: &ChatId, at_ms: i64) {
    store
        .record_outbound(&NewOutbound {
            tenant: tenant.clone(),
            chat: chat.clone(),
            origin: OutboundOrigin::Echo,
            wamid: Some(Wamid::new(format!("wamid.echo.{at_ms}")).expect("wamid")),
            kind: "text".to_owned(),
            body: Some("sent from the phone".to_owned()),
            created_ms: at_ms,
            epoch: None,
            client_ref: None,
            content: None,
        })
        .await
        .expect("record echo");
}

fn llm(tenant: &TenantId, tokens: i64, at_ms: i64) -> LlmUsage {
    LlmUsage {
        tenant: tenant.clone(),
        provider: "openai".to_owned(),
        model: "gpt-4o-mini".to_owned(),
        prompt_tokens: tokens,
        completion_tokens: tokens / 10,
        cost_micros: tokens * 3,
        at_ms,
    }
}

fn rejected(tenant: &TenantId, at_ms: i64) -> NewRejectedItem {
    NewRejectedItem {
        tenant: Some(tenant.clone()),
        phone_number_id: None,
        waba_id: None,
        item: RejectedItem::new("entry[0]".into(), "unreadable", &json!({"id": 1})),
        received_ms: at_ms,
    }
}

/// The chats that still have a conversation row, of every tenant.
async fn conversations(fixture: &Fixture) -> BTreeSet<String> {
    let mut sql = fixture.sql().await;
    let chats: Vec<String> = sqlx::query_scalar("SELECT chat_id FROM conversations")
        .fetch_all(&mut sql)
        .await
        .expect("conversations");
    let _ = sql.close().await;
    chats.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// The tests.

async fn each_tables_old_rows_go_and_newer_rows_stay(fixture: Fixture) {
    let store = &fixture.store;
    let acme = tenant(store, "acme").await;
    let old = T0 - 100 * DAY;
    // Messages (90 days): one chat all old, one new, one mixed; written in time order, as
    // their events are (the outbox's retention relies on it).
    receive(store, &acme, &chat("100"), old).await;
    echo(store, &acme, &chat("100"), old + 1).await;
    receive(store, &acme, &chat("300"), old + 2).await;
    store
        .record_rejected_item(&rejected(&acme, old + 3))
        .await
        .unwrap();
    let mixed = receive(store, &acme, &chat("300"), T0 - 10 * DAY).await;
    let new = receive(store, &acme, &chat("200"), T0 - DAY).await;
    store
        .record_rejected_item(&rejected(&acme, T0 - DAY))
        .await
        .unwrap();
    // Conversations without messages: old, recent, and old but paused until resumed.
    fixture
        .execute(&format!(
            "INSERT INTO conversations (tenant_id, chat_id, last_inbound_ms, \
             bot_paused_until_ms) VALUES ('acme', '400', {old}, NULL), \
             ('acme', '500', {}, NULL), ('acme', '600', {old}, {})",
            T0 - DAY,
            i64::MAX
        ))
        .await;
    // LLM usage (90 days).
    for usage in [
        llm(&acme, 100, old),
        llm(&acme, 200, old + 1),
        llm(&acme, 300, T0 - DAY),
    ] {
        store.record_llm_usage(&usage).await.unwrap();
    }
    // Events (7 days): every message above wrote one. The oldest one a webhook has still to
    // receive stays; dead letters (30 days): an old one goes, a recent one stays.
    let events = store.events_after(0, 100).await.unwrap();
    let first = events.first().expect("events").seq;
    fixture
        .execute(&format!(
            "INSERT INTO webhooks (id, tenant_id, url, kinds, secret, created_ms) \
             VALUES ('wh', 'acme', 'http://127.0.0.1:9/', NULL, 'unused', {T0})"
        ))
        .await;
    fixture
        .execute(&format!(
            "INSERT INTO webhook_deliveries (webhook_id, seq, order_key, state, attempts, \
             next_attempt_ms, since_ms, last_error, dead_ms) VALUES \
             ('wh', {first}, 'acme', 'pending', 0, {old}, {old}, NULL, NULL), \
             ('wh', 900001, 'acme', 'dead', 5, 0, 0, 'timeout', {}), \
             ('wh', 900002, 'acme', 'dead', 5, 0, 0, 'timeout', {})",
            T0 - 40 * DAY,
            T0 - DAY
        ))
        .await;

    let report = run_once(store, &settings(2), T0)
        .await
        .expect("retention run");

    let left: Vec<i64> = {
        let mut sql = fixture.sql().await;
        let ids = sqlx::query_scalar("SELECT id FROM messages ORDER BY id")
            .fetch_all(&mut sql)
            .await
            .unwrap();
        let _ = sql.close().await;
        ids
    };
    assert_eq!(left, [mixed, new]);
    assert_eq!(report.tables[&RetentionTable::Messages].deleted, 3);
    // 100 emptied by retention and 400 go; 200 and 300 have messages, 500 is recent,
    // 600 is paused.
    assert_eq!(
        conversations(&fixture).await,
        ["200", "300", "500", "600"].map(String::from).into()
    );
    assert_eq!(report.tables[&RetentionTable::Conversations].deleted, 2);
    assert_eq!(fixture.count("SELECT COUNT(*) FROM llm_usage").await, 1);
    assert_eq!(report.tables[&RetentionTable::LlmUsage].deleted, 2);
    assert_eq!(
        fixture
            .count("SELECT COUNT(*) FROM webhook_rejected_items")
            .await,
        1
    );
    let dead: Vec<i64> = {
        let mut sql = fixture.sql().await;
        let seqs = sqlx::query_scalar("SELECT seq FROM webhook_deliveries ORDER BY seq")
            .fetch_all(&mut sql)
            .await
            .unwrap();
        let _ = sql.close().await;
        seqs
    };
    assert_eq!(
        dead,
        [first, 900_002],
        "the pending delivery and the recent dead letter"
    );
    // Events older than 7 days went, but the one still owed to the webhook.
    let kept: Vec<i64> = store
        .events_after(0, 100)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event.at_ms < T0 - 7 * DAY)
        .map(|e| e.seq)
        .collect();
    assert_eq!(kept, [first]);
    assert!(report.tables[&RetentionTable::Events].deleted >= 3);
    assert!(
        store
            .events_after(0, 100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event.at_ms == T0 - DAY),
        "recent events stay"
    );

    // A second run finds nothing more.
    let again = run_once(store, &settings(2), T0).await.unwrap();
    assert!(again.tables.values().all(|t| t.deleted == 0), "{again:?}");
}

async fn monthly_usage_figures_survive_retention(fixture: Fixture) {
    let store = &fixture.store;
    let acme = tenant(store, "acme").await;
    let beta = tenant(store, "beta").await;
    // Three months: all old, cut in the middle by the cutoff, recent.
    let now = T0;
    let cutoff = now - 90 * DAY;
    let cut = Month::containing(cutoff);
    let before = Month::containing(cut.start_ms() - 1);
    let recent = Month::containing(now);
    let mut at = vec![
        before.start_ms(),
        before.start_ms() + 3 * DAY,
        before.end_ms() - 1,
        cut.start_ms(),
        cutoff - 1,
        cutoff,
        cut.end_ms() - 1,
        recent.start_ms(),
        now - 1,
    ];
    at.sort_unstable();
    for (n, &at_ms) in at.iter().enumerate() {
        let n = i64::try_from(n).unwrap();
        store
            .record_llm_usage(&llm(&acme, 1_000 + n, at_ms))
            .await
            .unwrap();
        store.record_llm_usage(&llm(&beta, 7, at_ms)).await.unwrap();
        receive(store, &acme, &chat(&format!("{}", 1_000 + n)), at_ms).await;
        echo(store, &acme, &chat(&format!("{}", 1_000 + n)), at_ms).await;
    }
    let months = [before, cut, recent];
    let mut figures = Vec::new();
    for month in months {
        for tenant in [&acme, &beta] {
            figures.push(
                store
                    .usage_between(tenant, month.start_ms(), month.end_ms())
                    .await
                    .unwrap(),
            );
        }
    }
    assert!(figures.iter().all(|f| *f != UsageReport::default()));
    let spent = store.llm_usage_totals(&acme, cut.start_ms()).await.unwrap();

    run_once(store, &settings(3), now)
        .await
        .expect("retention run");
    // The raw rows before the cutoff are gone…
    let old_llm = fixture
        .count(&format!(
            "SELECT COUNT(*) FROM llm_usage WHERE at_ms < {cutoff}"
        ))
        .await;
    let old_messages = fixture
        .count(&format!(
            "SELECT COUNT(*) FROM messages WHERE created_ms < {cutoff}"
        ))
        .await;
    assert_eq!((old_llm, old_messages), (0, 0));
    assert!(fixture.count("SELECT COUNT(*) FROM usage_monthly").await > 0);
    // …and every month answers the same figures.
    let mut after = Vec::new();
    for month in months {
        for tenant in [&acme, &beta] {
            after.push(
                store
                    .usage_between(tenant, month.start_ms(), month.end_ms())
                    .await
                    .unwrap(),
            );
        }
    }
    assert_eq!(after, figures);
    // So does the spend cap's reading of the month so far.
    assert_eq!(
        store.llm_usage_totals(&acme, cut.start_ms()).await.unwrap(),
        spent
    );
    // Running again (another node, the next hour) counts nothing twice.
    run_once(store, &settings(3), now).await.unwrap();
    for (n, month) in months.iter().enumerate() {
        let report = store
            .usage_between(&acme, month.start_ms(), month.end_ms())
            .await
            .unwrap();
        assert_eq!(report, figures[2 * n]);
    }
    // Erasing the tenant erases its folded usage too.
    store
        .delete_tenant(&acme, salesboy_actors::store::Deletion::EraseData, now)
        .await
        .unwrap();
    assert_eq!(
        fixture
            .count("SELECT COUNT(*) FROM usage_monthly WHERE tenant_id = 'acme'")
            .await,
        0
    );
}

async fn a_large_run_goes_in_bounded_batches(fixture: Fixture) {
    let handle = salesboy_node::http::metrics::recorder();
    let store = &fixture.store;
    tenant(store, "acme").await;
    let old = T0 - 100 * DAY;
    fixture
        .execute(&format!(
            "INSERT INTO conversations (tenant_id, chat_id, last_inbound_ms) \
             VALUES ('acme', '100', {old})"
        ))
        .await;
    // 2,500 old messages, one statement.
    fixture
        .execute(&format!(
            "INSERT INTO messages (tenant_id, chat_id, direction, wamid, kind, body, created_ms) \
             WITH RECURSIVE s(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM s WHERE g < 2499) \
             SELECT 'acme', '100', 'inbound', 'wamid.' || CAST(g AS TEXT), 'text', 'old', \
             {old} + g FROM s"
        ))
        .await;
    let recent = receive(store, &TenantId::new("acme").unwrap(), &chat("100"), T0).await;

    let report = run_once(store, &settings(1_000), T0).await.expect("run");

    let messages = report.tables[&RetentionTable::Messages];
    assert_eq!(messages.deleted, 2_500);
    // 1,000 + 1,000 + 500: the short batch is the last.
    assert_eq!(messages.batches, 3);
    assert_eq!(
        fixture.count("SELECT COUNT(*) FROM messages").await,
        1,
        "the recent message {recent} stays"
    );
    // The batches are counted in the metrics too (other tests of this binary add theirs).
    let page = handle.render();
    let counted: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("salesboy_retention_batches_total{table=\"messages\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the batches metric");
    assert!(counted >= 3.0, "{counted}");
    // The folded usage holds all 2,500 inbound messages of that month.
    let month = Month::containing(old);
    let usage = store
        .usage_between(
            &TenantId::new("acme").unwrap(),
            month.start_ms(),
            month.end_ms(),
        )
        .await
        .unwrap();
    assert_eq!(usage.messages_in, 2_500);
}
