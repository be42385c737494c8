//! A whole gateway node in-process (real SQL, real HTTP) in front of a fake Cloud API.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::{Db, FakeWhatsApp, FakeWhatsAppOptions, PostgresDatabase};
use reqwest::StatusCode;
use salesboy_actors::store::{AccessToken, NewKnowledge, NewTenant, NewWhatsAppNumber, Store};
use salesboy_node::bus::Bus;
use salesboy_node::config::Config;
use salesboy_node::run::{self, RunningNode};
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId};
use secrecy::SecretString;
use serde_json::Value;

/// The app secret test nodes check signatures with.
pub const APP_SECRET: &str = "test-app-secret";
/// The admin token of test nodes.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// How long a test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running node and its fakes.
pub struct Gateway {
    /// The node.
    pub node: RunningNode,
    /// The fake Cloud API the node sends to.
    pub whatsapp: FakeWhatsApp,
    /// A client for the node's HTTP endpoints.
    pub http: reqwest::Client,
    /// The node's HTTP base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin API's base URL: [`Gateway::base`], or the admin listener's when the node
    /// has one (`admin_http_addr`).
    pub admin_base: String,
    /// The configuration the node was started with.
    pub config: Config,
    _dir: tempfile::TempDir,
    _postgres: Option<PostgresDatabase>,
}

impl Gateway {
    /// Starts a node on `db`; `tweak` adjusts the configuration.
    pub async fn start(db: Db, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(db, None, tweak).await
    }

    /// Starts a node on `db` and, when given, a cluster bus.
    pub async fn start_on(
        db: Db,
        bus: Option<Arc<dyn Bus>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        run::install_crypto_provider();
        let whatsapp = FakeWhatsApp::start(FakeWhatsAppOptions::default()).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let postgres = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PostgresDatabase::create().await.expect("test postgres")),
        };
        let mut config = Config {
            http_addr: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_owned(),
            database_url: postgres.as_ref().map(|p| p.url().to_owned()),
            whatsapp_app_secret: Some(SecretString::from(APP_SECRET)),
            whatsapp_verify_token: Some(SecretString::from("verify-me")),
            whatsapp_api_base: whatsapp.base_url(),
            admin_token: Some(SecretString::from(ADMIN_TOKEN)),
            secrets_key: postgres
                .as_ref()
                // PostgreSQL needs a key configured; on SQLite the node makes its own
                .map(|_| SecretString::from(crate::SANDBOX_SECRETS_KEY)),
            // Nodes on one bus seal their messages with it (a single node ignores it).
            cluster_key: Some(SecretString::from(crate::SANDBOX_CLUSTER_KEY)),
            debounce_ms: 50,
            ..Config::default()
        };
        tweak(&mut config);
        let node = run::start_with_bus(config.clone(), bus)
            .await
            .expect("node starts");
        let base = format!("http://{}", node.http_addr);
        let admin_base = node
            .admin_http_addr
            .map_or_else(|| base.clone(), |addr| format!("http://{addr}"));
        Self {
            node,
            whatsapp,
            http: reqwest::Client::new(),
            base,
            admin_base,
            config,
            _dir: dir,
            _postgres: postgres,
        }
    }

    /// The node's store.
    pub fn store(&self) -> &dyn Store {
        self.node.store.as_ref()
    }

    /// Creates a tenant with one number; `llm` is its provider list (None: offline).
    pub async fn add_tenant(
        &self,
        id: &str,
        phone_number_id: &str,
        llm: Option<Value>,
    ) -> TenantId {
        let tenant = TenantId::new(id).expect("tenant id");
        self.store()
            .upsert_tenant(&NewTenant {
                id: tenant.clone(),
                name: format!("{id} shop"),
                system_prompt: Some("You sell shoes.".into()),
                llm_config: llm.map(|l| l.to_string()),
                llm_monthly_spend_cap_micros: None,
                embedding_model: None,
                engine: Default::default(),
                web_hygiene: None,
                read_receipts: None,
                created_ms: 1,
            })
            .await
            .expect("tenant");
        self.store()
            .upsert_whatsapp_number(&NewWhatsAppNumber {
                tenant: tenant.clone(),
                phone_number_id: PhoneNumberId::new(phone_number_id).expect("number"),
                waba_id: None,
                access_token: AccessToken::new(format!("token-{id}")),
            })
            .await
            .expect("number");
        tenant
    }

    /// Adds a knowledge document of `passages` to `tenant`.
    pub async fn add_knowledge(&self, tenant: &TenantId, title: &str, passages: &[&str]) {
        self.store()
            .add_knowledge(&NewKnowledge {
                tenant: tenant.clone(),
                title: title.into(),
                chunks: passages.iter().map(|p| p.to_string()).collect(),
                created_ms: 1,
            })
            .await
            .expect("knowledge");
    }

    /// Posts a correctly signed webhook body.
    pub async fn post_webhook(&self, body: &Value) -> StatusCode {
        let raw = body.to_string().into_bytes();
        let signature = sign(APP_SECRET.as_bytes(), &raw);
        self.post_raw(raw, Some(signature)).await
    }

    /// Posts raw bytes with the given signature header.
    pub async fn post_raw(&self, raw: Vec<u8>, signature: Option<String>) -> StatusCode {
        let mut request = self
            .http
            .post(format!("{}/webhooks/whatsapp", self.base))
            .header("content-type", "application/json")
            .body(raw);
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        request.send().await.expect("webhook request").status()
    }

    /// Waits (up to [`WAIT`]) until the fake Cloud API has received `count` texts; panics
    /// with `what` if it does not.
    pub async fn wait_for_sent(&self, count: usize, what: &str) -> Vec<crate::SentMessage> {
        self.whatsapp
            .wait_for_sent(count, WAIT)
            .await
            .unwrap_or_else(|error| panic!("{what}: {error}"))
    }

    /// The node's detailed health (`/api/health`, with the admin token), as JSON.
    pub async fn health(&self) -> Value {
        self.http
            .get(format!("{}/api/health", self.admin_base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json")
    }

    /// Waits until every inbound message of the chat is handled (answered and sent, or
    /// dismissed) and no outbound message is pending; returns the chat's messages.
    pub async fn settled(
        &self,
        tenant: &TenantId,
        chat: &str,
    ) -> Vec<salesboy_actors::store::StoredMessage> {
        let chat = ChatId::new(chat).expect("chat");
        eventually(WAIT, || async {
            let unanswered = self
                .store()
                .unanswered_inbound_in_chat(tenant, &chat)
                .await
                .ok()?;
            let unsent = self.store().unsent_replies(tenant).await.ok()?;
            (unanswered.is_empty() && unsent.iter().all(|m| m.chat != chat)).then_some(())
        })
        .await;
        self.store()
            .conversation_messages(tenant, &chat, None, 1000)
            .await
            .expect("messages")
    }
}

/// Polls `probe` until it returns `Some`, panicking after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
