//! Secrets never reach the logs (issue 11): a node run through the usual ways of handing it
//! secrets — the admin API with an access token, an LLM key and a webhook secret, signed
//! webhooks, an LLM reply, wrong admin tokens — with every log line of every level kept,
//! holds none of them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use salesboy_testkit::gateway::{ADMIN_TOKEN, APP_SECRET};
use salesboy_testkit::{Db, FakeLlm, FakeLlmOptions, Gateway, webhooks};
use serde_json::{Value, json};

const PHONE: &str = "106540352242922";
const ACCESS_TOKEN: &str = "EAAG-planted-access-token-4f7c9d";
const LLM_KEY: &str = "sk-planted-llm-key-8b2e61";
const WEBHOOK_SECRET: &str = "whsec-planted-webhook-secret-35aa";
const WRONG_TOKEN: &str = "planted-wrong-admin-token-0123456789abcdef";

/// Every byte the process logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_at_any_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let admin = |method: reqwest::Method, path: &str, token: &str| {
        gateway
            .http
            .request(method, format!("{}{path}", gateway.admin_base))
            .bearer_auth(token)
    };
    let created = admin(reqwest::Method::POST, "/api/tenants", ADMIN_TOKEN)
        .json(&json!({
            "id": "acme",
            "phone_number_id": PHONE,
            "access_token": ACCESS_TOKEN,
            "llm": [{"kind": "openai", "model": "gpt-4o-mini", "api_key": LLM_KEY,
                     "base_url": llm.openai_base_url()}],
        }))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(created.status().as_u16(), 201);
    let hook = admin(
        reqwest::Method::POST,
        "/api/tenants/acme/webhooks",
        ADMIN_TOKEN,
    )
    .json(&json!({"url": "https://example.com/hook", "secret": WEBHOOK_SECRET}))
    .send()
    .await
    .expect("add webhook");
    assert_eq!(hook.status().as_u16(), 201);
    let wrong = admin(reqwest::Method::GET, "/api/tenants", WRONG_TOKEN)
        .send()
        .await
        .expect("wrong token");
    assert_eq!(wrong.status().as_u16(), 401);
    let shown: Value = admin(reqwest::Method::GET, "/api/tenants/acme", ADMIN_TOKEN)
        .send()
        .await
        .expect("show tenant")
        .json()
        .await
        .expect("json");
    assert!(!shown.to_string().contains(LLM_KEY), "{shown}");

    let status = gateway
        .post_webhook(&webhooks::text_message(
            PHONE,
            "16505551234",
            "wamid.logs",
            "When do you open?",
        ))
        .await;
    assert!(status.is_success(), "{status}");
    let sent = gateway.wait_for_sent(1, "the llm's reply").await;
    assert_eq!(sent[0].token, ACCESS_TOKEN, "the token was used");
    gateway.node.stop().await;

    let logs = captured.text();
    assert!(
        logs.contains("tenant=acme") && logs.contains("sqlx::query"),
        "the run was logged (the tenant's lines, the database statements): {} bytes",
        logs.len()
    );
    for secret in [
        ACCESS_TOKEN,
        LLM_KEY,
        WEBHOOK_SECRET,
        WRONG_TOKEN,
        ADMIN_TOKEN,
        APP_SECRET,
    ] {
        let found = logs.lines().find(|line| line.contains(secret));
        assert!(found.is_none(), "a secret in the logs: {found:?}");
    }
}
