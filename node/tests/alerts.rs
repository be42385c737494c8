//! The alerts the node evaluates, each provoked for real and watched being raised once and
//! cleared once through the events outbox, `/api/health` and `/metrics`: knowledge chunks
//! and database size (SQLite and PostgreSQL), memory, the error rate of LLM calls, sends
//! and webhooks, and tenant capacity on one node; a node down, a missing leader and the cluster's
//! capacity (the leader's alone) on a cluster of two nodes on a private nats-server.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use reqwest::StatusCode;
use salesboy_actors::store::NewKnowledge;
use salesboy_node::bus::Bus;
use salesboy_node::config::Config;
use salesboy_node::store::SqlStore;
use salesboy_protocol::subjects::EventKind;
use salesboy_testkit::buses::nats_bus;
use salesboy_testkit::gateway::{ADMIN_TOKEN, WAIT};
use salesboy_testkit::{
    Db, FakeLlm, FakeLlmOptions, Gateway, NatsServer, PostgresDatabase, SANDBOX_SECRETS_KEY,
    SplitMix64, eventually, webhooks,
};
use secrecy::SecretString;
use serde_json::{Value, json};

const PHONE: &str = "106540352242923";

/// Fast rounds for tests.
fn fast(config: &mut Config) {
    config.alerts.interval = Duration::from_millis(50);
}

/// The details of the outbox's events of `kind` about `alert`, oldest first.
async fn alert_events(gateway: &Gateway, kind: EventKind, alert: &str) -> Vec<Value> {
    let mut events = gateway.store().recent_events(500).await.expect("events");
    events.retain(|e| e.kind == kind && e.detail["alert"] == alert);
    events.sort_by_key(|e| e.at_ms);
    events.into_iter().map(|e| e.detail).collect()
}

/// Waits until `alert` has been raised `raised` times and cleared `cleared` times; answers
/// the last raise's detail.
async fn wait_for(gateway: &Gateway, alert: &str, raised: usize, cleared: usize) -> Value {
    eventually(WAIT, || async {
        let up = alert_events(gateway, EventKind::AlertRaised, alert).await;
        let down = alert_events(gateway, EventKind::AlertCleared, alert).await;
        (up.len() == raised && down.len() == cleared).then(|| up.last().cloned())
    })
    .await
    .unwrap_or(Value::Null)
}

/// The alerts `/api/health` lists, by name.
async fn health_alerts(gateway: &Gateway) -> Vec<String> {
    let health = gateway.health().await;
    health["alerts"]
        .as_array()
        .expect("alerts listed")
        .iter()
        .map(|a| a["alert"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Text that neither compresses nor shares index terms much: random words.
fn random_text(rng: &mut SplitMix64, chars: usize) -> String {
    let mut text = String::with_capacity(chars + 16);
    while text.len() < chars {
        let word = rng.next_u64();
        for i in 0..(4 + word % 8) {
            text.push(char::from(b'a' + ((word >> (i * 5)) % 26) as u8));
        }
        text.push(' ');
    }
    text
}

async fn knowledge_and_database_size(db: Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let postgres = match db {
        Db::Postgres => Some(PostgresDatabase::create().await.expect("test postgres")),
        Db::Sqlite => None,
    };
    let url = postgres.as_ref().map_or_else(
        || {
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("alerts.db").display()
            )
        },
        |pg| pg.url().to_owned(),
    );
    // The fresh database's size, for a threshold 4 MB above it.
    let baseline = {
        let sql = SqlStore::connect(&url).await.expect("database");
        let size = sql.database_size_bytes().await.expect("size");
        sql.close().await;
        size
    };
    assert!(baseline > 0);
    let threshold = baseline + 4_000_000;
    let gateway = Gateway::start(Db::Sqlite, |c| {
        fast(c);
        c.database_url = Some(url.clone());
        c.secrets_key = Some(SecretString::from(SANDBOX_SECRETS_KEY));
        c.alerts.database_max_bytes = threshold;
        c.alerts.knowledge_max_chunks = 2_000;
    })
    .await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    assert!(health_alerts(&gateway).await.is_empty());

    // 3,000 chunks of 2 KB: past both thresholds.
    let mut rng = SplitMix64::new(13);
    let mut documents = Vec::new();
    for d in 0..30 {
        let chunks = (0..100).map(|_| random_text(&mut rng, 2_000)).collect();
        let id = gateway
            .store()
            .add_knowledge(&NewKnowledge {
                tenant: tenant.clone(),
                title: format!("doc {d}"),
                chunks,
                created_ms: 1,
            })
            .await
            .expect("knowledge");
        documents.push(id);
    }
    let chunks = wait_for(&gateway, "knowledge_chunks_high", 1, 0).await;
    assert!(chunks["chunks"].as_u64().unwrap() >= 2_000, "{chunks}");
    assert_eq!(chunks["threshold_chunks"], 2_000);
    assert_eq!(chunks["node"], "node-1");
    let size = wait_for(&gateway, "database_size_high", 1, 0).await;
    assert!(size["size_bytes"].as_u64().unwrap() >= threshold, "{size}");
    assert_eq!(size["threshold_bytes"], threshold);
    let listed = health_alerts(&gateway).await;
    assert!(
        listed.contains(&"knowledge_chunks_high".to_owned()),
        "{listed:?}"
    );
    assert!(
        listed.contains(&"database_size_high".to_owned()),
        "{listed:?}"
    );

    // Deleting the documents clears the chunks at once; the file shrinks once vacuumed.
    for id in documents {
        assert!(
            gateway
                .store()
                .delete_knowledge(&tenant, id, 2)
                .await
                .expect("delete")
        );
    }
    wait_for(&gateway, "knowledge_chunks_high", 1, 1).await;
    let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("a connection of the test's own");
    // SQLite's full-text index keeps deleted entries until it is merged.
    let vacuum: &[&'static str] = match db {
        Db::Sqlite => &[
            "INSERT INTO knowledge_fts(knowledge_fts) VALUES('optimize')",
            "VACUUM",
        ],
        Db::Postgres => &["VACUUM FULL"],
    };
    for statement in vacuum {
        sqlx::query(*statement)
            .execute(&mut connection)
            .await
            .expect("vacuum");
    }
    drop(connection);
    wait_for(&gateway, "database_size_high", 1, 1).await;
    let cleared = alert_events(&gateway, EventKind::AlertCleared, "database_size_high").await;
    assert_eq!(
        cleared[0],
        json!({"alert": "database_size_high", "node": "node-1"})
    );
    assert!(health_alerts(&gateway).await.is_empty());
    gateway.node.stop().await;
}

#[tokio::test]
async fn knowledge_chunks_and_database_size_alerts_on_sqlite() {
    knowledge_and_database_size(Db::Sqlite).await;
}

#[tokio::test]
async fn knowledge_chunks_and_database_size_alerts_on_postgres() {
    knowledge_and_database_size(Db::Postgres).await;
}

#[tokio::test]
async fn memory_over_its_share_of_the_limit_raises_an_alert_until_freed() {
    let rss = || salesboy_node::process::rss_bytes().expect("linux");
    // A limit that puts the threshold (50 %) 100 MB above what the process holds now.
    let raise_at = rss() + 100_000_000;
    let gateway = Gateway::start(Db::Sqlite, |c| {
        fast(c);
        c.alerts.memory_percent = 50;
        c.alerts.memory_limit_bytes = Some(raise_at * 2);
    })
    .await;
    let mut ballast = vec![1_u8; 200_000_000];
    // Touch every page so it is resident.
    for page in ballast.chunks_mut(4096) {
        page[0] = 2;
    }
    let raised = wait_for(&gateway, "node_memory_high", 1, 0).await;
    assert_eq!(raised["limit_bytes"], raise_at * 2);
    assert_eq!(raised["threshold_percent"], 50);
    assert!(
        raised["rss_bytes"].as_u64().unwrap() >= raise_at,
        "{raised}"
    );
    assert_eq!(health_alerts(&gateway).await, ["node_memory_high"]);
    assert_eq!(
        ballast
            .iter()
            .step_by(4096)
            .map(|b| u64::from(*b))
            .sum::<u64>()
            % 2,
        0
    );
    drop(ballast);
    wait_for(&gateway, "node_memory_high", 1, 1).await;
    gateway.node.stop().await;
}

/// Saves acme with the fake LLM as its provider, through the admin API.
async fn use_llm(gateway: &Gateway, llm: &FakeLlm) {
    let response = gateway
        .http
        .post(format!("{}/api/tenants", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "id": "acme", "phone_number_id": PHONE, "access_token": "token-acme",
            "llm": [{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test",
                     "base_url": llm.openai_base_url()}],
        }))
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn ask(gateway: &Gateway, n: usize) {
    let body = webhooks::text_message(
        PHONE,
        &format!("1655500{n:04}"),
        &format!("wamid.err{n}"),
        &format!("question {n}: when do you open?"),
    );
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    gateway.wait_for_sent(n, "every question answered").await;
}

#[tokio::test]
async fn failing_llm_calls_raise_the_error_rate_alert_until_they_age_out() {
    let llm = FakeLlm::start(FakeLlmOptions {
        unavailable_rate: 1.0,
        ..FakeLlmOptions::default()
    })
    .await;
    let gateway = Gateway::start(Db::Sqlite, |c| {
        fast(c);
        c.alerts.error_min_calls = 1;
        c.alerts.error_window = Duration::from_secs(2);
    })
    .await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    gateway
        .add_knowledge(&tenant, "faq", &["We open at 9am."])
        .await;
    use_llm(&gateway, &llm).await;
    // The provider answers 503: the customer is answered offline, the call failed.
    ask(&gateway, 1).await;
    let raised = wait_for(&gateway, "error_rate_high", 1, 0).await;
    assert_eq!(raised["source"], "llm_calls");
    assert!(raised["failed"].as_u64().unwrap() >= 1, "{raised}");
    assert_eq!(raised["failed"], raised["total"]);
    assert_eq!(raised["window_secs"], 2);
    assert_eq!(raised["threshold_percent"], 5);
    // The provider recovers; the failures leave the window and the alert clears, once.
    llm.set_options(FakeLlmOptions::default());
    ask(&gateway, 2).await;
    wait_for(&gateway, "error_rate_high", 1, 1).await;
    let cleared = alert_events(&gateway, EventKind::AlertCleared, "error_rate_high").await;
    assert_eq!(
        cleared[0],
        json!({"alert": "error_rate_high", "source": "llm_calls", "node": "node-1"})
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn failed_sends_raise_the_error_rate_alert_of_their_source() {
    let gateway = Gateway::start(Db::Sqlite, |c| {
        fast(c);
        c.alerts.error_min_calls = 1;
        c.alerts.error_window = Duration::from_secs(2);
    })
    .await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    gateway
        .add_knowledge(&tenant, "faq", &["We open at 9am."])
        .await;
    // WhatsApp refuses the tenant's token: the reply fails for good.
    gateway
        .whatsapp
        .set_options(salesboy_testkit::FakeWhatsAppOptions {
            reject_tokens: vec!["token-acme".into()],
            ..Default::default()
        });
    let body = webhooks::text_message(PHONE, "16505550001", "wamid.send1", "open?");
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    let raised = wait_for(&gateway, "error_rate_high", 1, 0).await;
    assert_eq!(raised["source"], "sends");
    assert_eq!(raised["failed"], 1);
    assert_eq!(raised["total"], 1);
    // Nothing fails any more; the failure leaves the window.
    wait_for(&gateway, "error_rate_high", 1, 1).await;
    let cleared = alert_events(&gateway, EventKind::AlertCleared, "error_rate_high").await;
    assert_eq!(cleared[0]["source"], "sends");
    gateway.node.stop().await;
}

#[tokio::test]
async fn webhooks_the_database_cannot_take_raise_the_error_rate_alert() {
    let gateway = Gateway::start(Db::Postgres, |c| {
        fast(c);
        c.alerts.error_min_calls = 1;
        c.alerts.error_window = Duration::from_secs(2);
    })
    .await;
    gateway.add_tenant("acme", PHONE, None).await;
    let url = gateway.config.database_url.clone().expect("postgres");
    let database = url.rsplit('/').next().expect("database name").to_owned();
    let mut admin =
        <sqlx::AnyConnection as sqlx::Connection>::connect(&salesboy_testkit::postgres_admin_url())
            .await
            .expect("admin connection");
    let set_connections = |allow: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allow}"
        ))
    };
    // The database goes away: no new connection, the open ones cut.
    sqlx::query(set_connections(false))
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    )))
    .execute(&mut admin)
    .await
    .expect("terminate");
    let body = webhooks::text_message(PHONE, "16505550002", "wamid.db1", "open?");
    assert_eq!(
        gateway.post_webhook(&body).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The alert's event cannot reach the outbox of a database that is down: the node
    // shows it (and its metric) meanwhile.
    let raised = eventually(WAIT, || async {
        let health = gateway.health().await;
        let alerts = health["alerts"].as_array()?.clone();
        alerts
            .into_iter()
            .find(|a| a["alert"] == "error_rate_high")
            .map(|a| a["detail"].clone())
    })
    .await;
    assert_eq!(raised["source"], "webhooks");
    assert_eq!(raised["failed"], 1);
    assert_eq!(raised["total"], 1);
    // It is back: the delivery Meta retries is taken, the failure leaves the window, and
    // the clearing is recorded.
    sqlx::query(set_connections(true))
        .execute(&mut admin)
        .await
        .expect("allow connections");
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    let cleared = eventually(WAIT, || async {
        let cleared = alert_events(&gateway, EventKind::AlertCleared, "error_rate_high").await;
        (!cleared.is_empty()).then_some(cleared)
    })
    .await;
    assert_eq!(
        cleared,
        [json!({"alert": "error_rate_high", "source": "webhooks", "node": "node-1"})]
    );
    assert!(health_alerts(&gateway).await.is_empty());
    gateway.node.stop().await;
}

#[tokio::test]
async fn tenants_at_ninety_percent_of_capacity_raise_an_alert_until_one_goes() {
    let gateway = Gateway::start(Db::Sqlite, |c| {
        fast(c);
        c.max_tenants = 2;
    })
    .await;
    let phones = ["100000001", "100000002"];
    for (i, phone) in phones.iter().enumerate() {
        let tenant = gateway.add_tenant(&format!("t{i}"), phone, None).await;
        gateway
            .add_knowledge(&tenant, "faq", &["We open at 9am."])
            .await;
        let body = webhooks::text_message(phone, "16505550000", &format!("wamid.cap{i}"), "open?");
        assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    }
    let raised = wait_for(&gateway, "tenant_capacity_high", 1, 0).await;
    assert_eq!(raised["active_tenants"], 2);
    assert_eq!(raised["capacity"], 2);
    assert_eq!(raised["threshold_percent"], 90);
    let metrics = gateway
        .http
        .get(format!("{}/metrics", gateway.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("salesboy_alert_active{alert=\"tenant_capacity_high\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("salesboy_cluster_tenant_capacity"),
        "{metrics}"
    );
    // One tenant is deleted: one of two is under 81 %.
    let response = gateway
        .http
        .delete(format!("{}/api/tenants/t1", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::OK);
    let cleared = wait_for(&gateway, "tenant_capacity_high", 1, 1).await;
    assert_eq!(cleared["active_tenants"], 2, "the raise's detail");
    assert!(health_alerts(&gateway).await.is_empty());
    gateway.node.stop().await;
}

/// Two nodes on a private nats-server sharing one SQLite database.
async fn cluster_node(bus: Arc<dyn Bus>, i: usize, database: Option<String>) -> Gateway {
    cluster_node_with(bus, i, database, |_| {}).await
}

async fn cluster_node_with(
    bus: Arc<dyn Bus>,
    i: usize,
    database: Option<String>,
    tweak: impl FnOnce(&mut Config),
) -> Gateway {
    Gateway::start_on(Db::Sqlite, Some(bus), move |c| {
        tweak(c);
        fast(c);
        c.node_id = salesboy_protocol::NodeId::new(format!("node-{i}")).expect("node id");
        c.failure_timeout_ms = 2_000;
        // Longer than an election at start, so only the ghost's lease below raises it.
        c.alerts.leader_missing_after = Duration::from_secs(2);
        if let Some(database) = database {
            c.database_url = Some(database);
        }
    })
    .await
}

#[tokio::test]
async fn the_leader_raises_node_down_and_the_lowest_node_a_missing_leader() {
    let server = NatsServer::start().expect("nats-server");
    let connections = AtomicUsize::new(0);
    let (server_ref, connections) = (&server, &connections);
    let bus =
        move || async move { Arc::new(nats_bus(server_ref, connections).await) as Arc<dyn Bus> };
    let first = cluster_node(bus().await, 0, None).await;
    let shared = first.config.effective_database_url();
    let second = cluster_node(bus().await, 1, Some(shared.clone())).await;
    let cluster = |g: &Gateway| Arc::clone(g.node.cluster.as_ref().expect("cluster"));
    // node-0 started first and leads.
    eventually(WAIT, || async {
        (cluster(&first)
            .leader()
            .is_some_and(|l| l.as_str() == "node-0")
            && cluster(&first).membership().live_nodes().len() == 2)
            .then_some(())
    })
    .await;
    assert!(cluster(&first).is_leader());

    // node-1 stops without leaving (as a crash does): the leader says it is down.
    second.node.stop().await;
    let down = wait_for(&first, "node_down", 1, 0).await;
    assert_eq!(down["down_node"], "node-1");
    assert_eq!(down["node"], "node-0");
    assert!(
        health_alerts(&first)
            .await
            .contains(&"node_down".to_owned())
    );
    // It comes back: cleared.
    let second = cluster_node(bus().await, 1, Some(shared)).await;
    wait_for(&first, "node_down", 1, 1).await;
    let cleared = alert_events(&first, EventKind::AlertCleared, "node_down").await;
    assert_eq!(
        cleared[0],
        json!({"alert": "node_down", "down_node": "node-1", "node": "node-0"})
    );

    // A client that is not a member holds the lease: no live node leads. node-0, the
    // lowest live id, raises `leader_missing` once; the lease expires, a member takes it
    // over, and node-0 clears it.
    // (It holds the cluster key: a lease without it counts as none.)
    let kv = salesboy_testkit::sandbox_sealed_bus(bus().await)
        .kv(salesboy_protocol::subjects::LEADER_BUCKET, 1)
        .await
        .expect("leader bucket");
    let ghost = json!({"node": "ghost", "acquired_ms": 0}).to_string();
    // The ghost renews its lease as a leader would, until the alert is seen.
    let hold = async {
        loop {
            let _ = kv
                .put(
                    salesboy_protocol::subjects::LEADER_KEY,
                    bytes::Bytes::from(ghost.clone()),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = hold => unreachable!(),
        raised = wait_for(&first, "leader_missing", 1, 0) => {
            assert_eq!(raised["node"], "node-0");
        }
    }
    wait_for(&first, "leader_missing", 1, 1).await;
    assert_eq!(
        alert_events(&second, EventKind::AlertRaised, "leader_missing")
            .await
            .len(),
        1,
        "raised by one node only (the outbox is shared)"
    );
    second.node.stop().await;
    first.node.stop().await;
}

#[tokio::test]
async fn only_the_leader_raises_the_clusters_capacity_alert() {
    let server = NatsServer::start().expect("nats-server");
    let connections = AtomicUsize::new(0);
    let (server_ref, connections) = (&server, &connections);
    let bus =
        move || async move { Arc::new(nats_bus(server_ref, connections).await) as Arc<dyn Bus> };
    let one_tenant = |c: &mut Config| c.max_tenants = 1;
    let first = cluster_node_with(bus().await, 0, None, one_tenant).await;
    let shared = first.config.effective_database_url();
    let second = cluster_node_with(bus().await, 1, Some(shared), one_tenant).await;
    let cluster = Arc::clone(first.node.cluster.as_ref().expect("cluster"));
    eventually(WAIT, || async {
        (cluster.is_leader() && cluster.membership().live_nodes().len() == 2).then_some(())
    })
    .await;
    // Two tenants on two nodes of one tenant each: the cluster is full.
    let phones = ["100000011", "100000012"];
    for (i, phone) in phones.iter().enumerate() {
        let tenant = first.add_tenant(&format!("c{i}"), phone, None).await;
        first
            .add_knowledge(&tenant, "faq", &["We open at 9am."])
            .await;
        let body = webhooks::text_message(phone, "16505550000", &format!("wamid.cc{i}"), "open?");
        assert_eq!(first.post_webhook(&body).await, StatusCode::OK);
    }
    let raised = wait_for(&first, "tenant_capacity_high", 1, 0).await;
    assert_eq!(raised["node"], "node-0", "the leader's: {raised}");
    assert_eq!(raised["capacity"], 2);
    assert_eq!(raised["active_tenants"], 2);
    assert!(
        health_alerts(&first)
            .await
            .contains(&"tenant_capacity_high".to_owned())
    );
    assert!(
        !health_alerts(&second)
            .await
            .contains(&"tenant_capacity_high".to_owned()),
        "not raised by the other node"
    );
    // One tenant goes: cleared, by the leader.
    let response = first
        .http
        .delete(format!("{}/api/tenants/c1", first.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::OK);
    wait_for(&first, "tenant_capacity_high", 1, 1).await;
    let cleared = alert_events(&first, EventKind::AlertCleared, "tenant_capacity_high").await;
    assert_eq!(cleared[0]["node"], "node-0");
    second.node.stop().await;
    first.node.stop().await;
}
