//! Durability across a crash (architecture §5): a real `salesboy serve` process is killed
//! with SIGKILL while replies are being written (the LLM holds every answer); after a restart
//! every persisted inbound message is answered exactly once.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{AccessToken, NewKnowledge, NewTenant, NewWhatsAppNumber};
use salesboy_node::store::SqlStore;
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};
use salesboy_protocol::{PhoneNumberId, TenantId};
use salesboy_testkit::eventually;
use salesboy_testkit::gateway::{ADMIN_TOKEN, APP_SECRET, WAIT};
use salesboy_testkit::{FakeLlm, FakeLlmOptions, FakeWhatsApp, FakeWhatsAppOptions, webhooks};

const PHONE: &str = "106540352242922";
const CHATS: usize = 5;

struct Node {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    salesboy_testkit::free_port().expect("a free port")
}

fn spawn_node(dir: &Path, port: u16, whatsapp: &FakeWhatsApp, attempt: u32) -> Node {
    let log = std::fs::File::create(dir.join(format!("node-{attempt}.log"))).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_salesboy"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("SALESBOY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SALESBOY_DATA_DIR", dir)
        .env("SALESBOY_WHATSAPP_APP_SECRET", APP_SECRET)
        .env("SALESBOY_WHATSAPP_API_BASE", whatsapp.base_url())
        .env("SALESBOY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SALESBOY_DEBOUNCE_MS", "20")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("salesboy starts");
    Node {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(http: &reqwest::Client, node: &Node) {
    eventually(WAIT, || async {
        let response = http
            .get(format!("{}/health", node.base))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_node_killed_mid_reply_answers_every_message_exactly_once_after_restart() {
    salesboy_node::run::install_crypto_provider();
    let whatsapp = FakeWhatsApp::start(FakeWhatsAppOptions::default()).await;
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    llm.hold();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let http = reqwest::Client::new();

    let mut node = spawn_node(dir.path(), port, &whatsapp, 1);
    wait_ready(&http, &node).await;

    // The test shares the node's SQLite database (WAL) to set up the tenant and to check.
    let store = SqlStore::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("salesboy.db").display()
    ))
    .await
    .expect("store");
    let tenant = TenantId::new("acme").expect("tenant");
    let providers = serde_json::json!([{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()}]);
    store
        .upsert_tenant(&NewTenant {
            id: tenant.clone(),
            name: "Acme".into(),
            system_prompt: None,
            llm_config: Some(providers.to_string()),
            llm_monthly_spend_cap_micros: None,
            embedding_model: None,
            engine: Default::default(),
            web_hygiene: None,
            read_receipts: None,
            created_ms: 1,
        })
        .await
        .expect("tenant");
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: tenant.clone(),
            phone_number_id: PhoneNumberId::new(PHONE).expect("number"),
            waba_id: None,
            access_token: AccessToken::new("token-acme"),
        })
        .await
        .expect("number");
    store
        .add_knowledge(&NewKnowledge {
            tenant: tenant.clone(),
            title: "faq".into(),
            chunks: vec!["We ship worldwide in 3 days.".into()],
            created_ms: 1,
        })
        .await
        .expect("knowledge");

    for i in 0..CHATS {
        let body = webhooks::text_message(
            PHONE,
            &format!("1650555000{i}"),
            &format!("wamid.crash{i}"),
            "Do you ship abroad?",
        )
        .to_string()
        .into_bytes();
        let response = http
            .post(format!("{}/webhooks/whatsapp", node.base))
            .header(SIGNATURE_HEADER, sign(APP_SECRET.as_bytes(), &body))
            .body(body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }
    // Every message is persisted and its reply is being written (held at the LLM).
    eventually(WAIT, || async {
        (llm.requests().openai >= CHATS as u64).then_some(())
    })
    .await;
    assert_eq!(
        store
            .unanswered_inbound(&tenant, 0)
            .await
            .expect("unanswered")
            .len(),
        CHATS
    );

    node.child.kill().expect("SIGKILL");
    node.child.wait().expect("reaped");
    assert_eq!(
        whatsapp.sent_count(),
        0,
        "nothing was sent before the crash"
    );

    llm.release();
    let mut node = spawn_node(dir.path(), port, &whatsapp, 2);
    wait_ready(&http, &node).await;

    let sent = whatsapp
        .wait_for_sent(CHATS, WAIT)
        .await
        .expect("every message answered after the restart");
    eventually(WAIT, || async {
        let unanswered = store.unanswered_inbound(&tenant, 0).await.ok()?;
        let unsent = store.unsent_replies(&tenant).await.ok()?;
        (unanswered.is_empty() && unsent.is_empty()).then_some(())
    })
    .await;
    let mut recipients: Vec<String> = whatsapp.sent().into_iter().map(|s| s.to).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), CHATS, "one reply per chat: {sent:?}");
    assert_eq!(
        whatsapp.sent_count(),
        CHATS,
        "exactly once: {:?}",
        whatsapp.sent()
    );

    node.child.kill().expect("stop");
    let _ = node.child.wait();
    store.close().await;
}
