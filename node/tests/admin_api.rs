//! The admin API, driven through the node's real router (`tower::ServiceExt::oneshot`) on a
//! real SQLite store and a real actor tree, with fakes only for WhatsApp and the LLMs; the
//! last test drives the CLI's client over a real socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use parking_lot::Mutex;
use salesboy_actors::ports::{Clock, SystemClock};
use salesboy_actors::services::{ReadReceipts, Settings};
use salesboy_actors::store::{LlmUsage, PAUSED_INDEFINITELY, Store};
use salesboy_actors::web::WebEvent;
use salesboy_node::cli::{AdminClient, ChatCommand, KbCommand, TenantCommand};
use salesboy_node::http::AppState;
use salesboy_node::knowledge;
use salesboy_protocol::{ChatId, TenantId};
use salesboy_testkit::admin::AdminApp;
use salesboy_testkit::fake_web::{PAIR_CODE, ScriptedWeb};
use secrecy::SecretString;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Every admin route as (lowercase method, full path): this test's own list, kept by hand,
/// that the served OpenAPI document and the router are checked against.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/openapi.json"),
    ("get", "/api/tenants"),
    ("post", "/api/tenants"),
    ("get", "/api/tenants/{id}"),
    ("patch", "/api/tenants/{id}"),
    ("delete", "/api/tenants/{id}"),
    ("get", "/api/tenants/{id}/session"),
    ("post", "/api/tenants/{id}/session/stop"),
    ("post", "/api/tenants/{id}/session/start"),
    ("get", "/api/tenants/{id}/session/qr"),
    ("post", "/api/tenants/{id}/session/pair_code"),
    ("post", "/api/tenants/{id}/session/logout"),
    ("get", "/api/tenants/{id}/knowledge"),
    ("post", "/api/tenants/{id}/knowledge"),
    ("delete", "/api/tenants/{id}/knowledge/{doc_id}"),
    ("get", "/api/tenants/{id}/conversations"),
    ("get", "/api/tenants/{id}/conversations/{wa_id}/messages"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/pause"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/resume"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/send"),
    ("get", "/api/tenants/{id}/usage"),
    ("get", "/api/tenants/{id}/webhook/rejected"),
    ("get", "/api/tenants/{id}/webhooks"),
    ("post", "/api/tenants/{id}/webhooks"),
    ("delete", "/api/tenants/{id}/webhooks/{webhook_id}"),
    (
        "get",
        "/api/tenants/{id}/webhooks/{webhook_id}/dead-letters",
    ),
    (
        "post",
        "/api/tenants/{id}/webhooks/{webhook_id}/dead-letters/redeliver",
    ),
    ("get", "/api/tenants/{id}/tokens"),
    ("post", "/api/tenants/{id}/tokens"),
    ("delete", "/api/tenants/{id}/tokens/{token_id}"),
    ("get", "/api/tenants/{id}/stream"),
    ("get", "/api/cluster"),
    ("post", "/api/cluster/nodes/{node_id}/drain"),
    ("get", "/api/cluster/stream"),
    ("get", "/api/health"),
    ("get", "/api/me"),
];

const TOKEN: &str = "test-admin-token-0123456789";
const ACCESS_TOKEN: &str = "EAAG-secret-access-token-42";
const API_KEY: &str = "sk-secret-llm-key-77";
const CUSTOMER: &str = "15551234567";

// ----- harness -----

struct Harness {
    app: Router,
    state: AppState,
    store: Arc<dyn Store>,
    sent: Arc<Mutex<Vec<(String, String)>>>,
    web: ScriptedWeb,
    _app: AdminApp,
}

async fn harness() -> Harness {
    let app = AdminApp::start(TOKEN, "node-test").await;
    Harness {
        app: app.router.clone(),
        state: app.state.clone(),
        store: Arc::clone(&app.store),
        sent: Arc::clone(&app.sent),
        web: app.web.clone(),
        _app: app,
    }
}

/// An answer: status, parsed JSON body (`Null` when empty) and the raw text.
struct Answer {
    status: StatusCode,
    json: Value,
    raw: String,
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let raw = String::from_utf8(bytes.to_vec()).unwrap();
        let json = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
        };
        Answer { status, json, raw }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(TOKEN), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(TOKEN), Some(body)).await
    }

    async fn create_acme(&self) -> Answer {
        let answer = self
            .post(
                "/api/tenants",
                json!({
                    "id": "acme",
                    "phone_number_id": "106540352242922",
                    "access_token": ACCESS_TOKEN,
                    "name": "Acme Shoes",
                    "system_prompt": "You sell shoes.",
                    "llm": [{"kind": "gemini", "model": "gemini-2.5-flash", "api_key": API_KEY}],
                    "waba_id": "102290129340398",
                }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.raw);
        answer
    }

    /// Creates `corner-shop`, a tenant on the `web` engine.
    async fn create_corner_shop(&self) -> Answer {
        let answer = self
            .post(
                "/api/tenants",
                json!({"id": "corner-shop", "engine": "web"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.raw);
        answer
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn error(answer: &Answer) -> &str {
    answer.json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {}", answer.raw))
}

/// Polls `check` until it gives a value, for at most 5 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- tests -----

#[tokio::test]
async fn requests_without_the_admin_token_are_refused() {
    let h = harness().await;
    for token in [
        None,
        Some("wrong-token"),
        Some(""),
        Some(&TOKEN[..TOKEN.len() - 1]),
    ] {
        let answer = h.call(Method::GET, "/api/tenants", token, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(error(&answer).contains("admin token"), "{}", answer.raw);
        assert!(!answer.raw.contains(TOKEN));
    }
    // Another scheme is no bearer token.
    let request = Request::get("/api/cluster")
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);
    // A refused write changed nothing.
    let answer = h
        .call(
            Method::POST,
            "/api/tenants",
            Some("wrong-token"),
            Some(json!({"id": "acme", "phone_number_id": "1", "access_token": "x"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(h.store.tenant(&acme()).await.unwrap().is_none());
    // The scheme's case does not matter; the document needs no token.
    let request = Request::get("/api/tenants")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(request).await.status, StatusCode::OK);
    let answer = h.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn tenants_are_created_updated_and_shown_without_secrets() {
    let h = harness().await;
    let created = h.create_acme().await;
    for answer in [
        &created,
        &h.get("/api/tenants/acme").await,
        &h.get("/api/tenants").await,
    ] {
        assert_eq!(answer.status.as_u16() / 100, 2, "{}", answer.raw);
        assert!(
            !answer.raw.contains(ACCESS_TOKEN),
            "access token leaked: {}",
            answer.raw
        );
        assert!(
            !answer.raw.contains(API_KEY),
            "api key leaked: {}",
            answer.raw
        );
        assert!(!answer.raw.contains("access_token"), "{}", answer.raw);
    }
    let tenant = &created.json;
    assert_eq!(tenant["id"], "acme");
    assert_eq!(tenant["name"], "Acme Shoes");
    assert_eq!(tenant["system_prompt"], "You sell shoes.");
    assert_eq!(tenant["llm"][0]["kind"], "gemini");
    assert_eq!(tenant["llm"][0]["api_key"], "[redacted]");
    assert_eq!(
        tenant["numbers"],
        json!([{"phone_number_id": "106540352242922", "waba_id": "102290129340398"}])
    );
    assert_eq!(tenant["knowledge_version"], 0);
    assert_eq!(tenant["active"], false);
    assert_eq!(tenant["state"], Value::Null);
    let created_ms = tenant["created_ms"].as_i64().unwrap();
    assert!(created_ms > 1_600_000_000_000);

    // The secrets are stored, only never returned.
    let stored = h.store.tenant(&acme()).await.unwrap().unwrap();
    assert_eq!(stored.numbers[0].access_token.expose(), ACCESS_TOKEN);
    assert!(stored.llm_config.unwrap().contains(API_KEY));

    // The list has the same view, without live state.
    let list = h.get("/api/tenants").await.json;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "Acme Shoes");
    assert!(list[0].get("state").is_none(), "{list}");

    // An update keeps what it does not mention.
    let updated = h
        .post(
            "/api/tenants",
            json!({"id": "acme", "phone_number_id": "106540352242922", "access_token": "EAAG-rotated", "name": "Acme"}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.raw);
    assert_eq!(updated.json["name"], "Acme");
    assert_eq!(updated.json["system_prompt"], "You sell shoes.");
    assert_eq!(updated.json["llm"][0]["api_key"], "[redacted]");
    assert_eq!(updated.json["numbers"][0]["waba_id"], "102290129340398");
    assert_eq!(updated.json["created_ms"], created_ms);
    let stored = h.store.tenant(&acme()).await.unwrap().unwrap();
    assert_eq!(stored.numbers[0].access_token.expose(), "EAAG-rotated");

    // PATCH changes only what it names; the number needs its token; unknown fields and
    // tenants are refused.
    let patched = h
        .call(
            Method::PATCH,
            "/api/tenants/acme",
            Some(TOKEN),
            Some(json!({"system_prompt": "You sell boots.", "llm_monthly_spend_cap_micros": 5000000})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.raw);
    assert_eq!(patched.json["system_prompt"], "You sell boots.");
    assert_eq!(patched.json["name"], "Acme");
    assert_eq!(patched.json["llm_monthly_spend_cap_micros"], 5_000_000);
    assert_eq!(patched.json["llm"][0]["api_key"], "[redacted]");
    assert!(!patched.raw.contains(API_KEY), "{}", patched.raw);
    let stored = h.store.tenant(&acme()).await.unwrap().unwrap();
    assert_eq!(stored.system_prompt.as_deref(), Some("You sell boots."));
    for (body, status, field) in [
        (
            json!({"phone_number_id": "106540352242922"}),
            StatusCode::BAD_REQUEST,
            "access_token",
        ),
        (json!({"nmae": "typo"}), StatusCode::BAD_REQUEST, "nmae"),
    ] {
        let refused = h
            .call(Method::PATCH, "/api/tenants/acme", Some(TOKEN), Some(body))
            .await;
        assert_eq!(refused.status, status, "{}", refused.raw);
        assert!(refused.raw.contains(field), "{}", refused.raw);
    }
    let unknown = h
        .call(
            Method::PATCH,
            "/api/tenants/nobody",
            Some(TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.raw);

    // Activity shows in the view: pausing a chat activates the tenant.
    let paused = h
        .post(
            &format!("/api/tenants/acme/conversations/{CUSTOMER}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.raw);
    let shown = h.get("/api/tenants/acme").await.json;
    assert_eq!(shown["active"], true);
    assert_eq!(shown["state"]["tenant"], "acme");
    assert_eq!(shown["state"]["epoch"], 1);
}

#[tokio::test]
async fn invalid_input_is_a_400_that_names_the_field() {
    let h = harness().await;
    let base =
        json!({"id": "acme", "phone_number_id": "106540352242922", "access_token": ACCESS_TOKEN});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let cases = [
        (
            with("id", json!("a.b")),
            "id: tenant id contains '.' at byte 1",
        ),
        (
            with("phone_number_id", json!("12ab")),
            "phone_number_id: phone number id contains 'a'",
        ),
        (
            with("access_token", json!("  ")),
            "access_token: must not be empty",
        ),
        (with("name", json!("")), "name: must not be empty"),
        (
            with("llm", json!([{"kind": "gemini", "api_key": API_KEY}])),
            "llm[0].model",
        ),
        (
            with("llm", json!({"kind": "gemini"})),
            "llm: expected an array",
        ),
        (
            with(
                "llm",
                json!([{"kind": "openai", "model": "m", "api_key": API_KEY,
                        "base_url": "http://llm.example.com/v1"}]),
            ),
            "llm[0].base_url: must be an https:// url (http:// only to a loopback host)",
        ),
        (
            with("acess_token", json!("typo")),
            "unknown field `acess_token`",
        ),
        (
            json!({"phone_number_id": "1", "access_token": "x"}),
            "missing field `id`",
        ),
        (
            with("id", json!(7)),
            "invalid json body: id: invalid type: integer `7`, expected a string",
        ),
    ];
    for (body, expected) in cases {
        let answer = h.post("/api/tenants", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.raw
        );
        assert!(error(&answer).contains(expected), "{body}: {}", answer.raw);
        assert!(!answer.raw.contains(API_KEY), "{}", answer.raw);
    }
    assert!(h.store.list_tenants().await.unwrap().is_empty());

    // Bodies that are not JSON at all.
    let request = Request::post("/api/tenants")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let answer = h.send(request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&answer).starts_with("invalid json body: key must be a string"),
        "{}",
        answer.raw
    );
    let request = Request::post("/api/tenants")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(base.to_string()))
        .unwrap();
    let answer = h.send(request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&answer), "expected content-type: application/json");

    // Path and query values.
    let answer = h.get("/api/tenants/bad.id").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&answer).starts_with("id: tenant id contains '.'"),
        "{}",
        answer.raw
    );
    h.create_acme().await;
    let answer = h.get("/api/tenants/acme/conversations/12.5/messages").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&answer).starts_with("wa_id: chat id contains '.'"),
        "{}",
        answer.raw
    );
    for limit in ["0", "1001", "ten", "-1"] {
        let answer = h
            .get(&format!(
                "/api/tenants/acme/conversations/{CUSTOMER}/messages?limit={limit}"
            ))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{limit}");
        assert!(
            error(&answer).starts_with("limit: expected a whole number from 1 to 1000"),
            "{}",
            answer.raw
        );
    }
    let answer = h
        .call(
            Method::DELETE,
            "/api/tenants/acme/knowledge/first",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&answer).starts_with("doc_id: expected a number"),
        "{}",
        answer.raw
    );
    let pause = format!("/api/tenants/acme/conversations/{CUSTOMER}/pause");
    let answer = h.post(&pause, json!({"minutes": 0})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&answer), "minutes: must be at least 1");
    let answer = h.post(&pause, json!({"minutes": 525_601})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&answer).starts_with("minutes: must be at most 525600"),
        "{}",
        answer.raw
    );
    let answer = h.post(&pause, json!({"minutes": "ten"})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&answer).starts_with("invalid json body: minutes: invalid type: string \"ten\""),
        "{}",
        answer.raw
    );
    let send = format!("/api/tenants/acme/conversations/{CUSTOMER}/send");
    for text in [String::new(), " \n".into(), "x".repeat(4097)] {
        let answer = h.post(&send, json!({ "text": text })).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(error(&answer).starts_with("text: "), "{}", answer.raw);
    }
    let knowledge = h
        .post(
            "/api/tenants/acme/knowledge",
            json!({"title": "t", "text": " \n "}),
        )
        .await;
    assert_eq!(knowledge.status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&knowledge), "text: must not be empty");
    let huge = "word ".repeat(2 * 1024 * 1024);
    let knowledge = h
        .post(
            "/api/tenants/acme/knowledge",
            json!({"title": "t", "text": huge}),
        )
        .await;
    assert_eq!(knowledge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        error(&knowledge).contains("length limit"),
        "{}",
        knowledge.raw
    );
    assert_eq!(h.store.knowledge_version(&acme()).await.unwrap(), 0);
    assert!(h.sent.lock().is_empty());
}

#[tokio::test]
async fn a_number_owned_by_another_tenant_is_a_conflict() {
    let h = harness().await;
    h.create_acme().await;
    let answer = h
        .post(
            "/api/tenants",
            json!({"id": "globex", "phone_number_id": "106540352242922", "access_token": "other"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.raw);
    assert_eq!(
        error(&answer),
        "phone_number_id: 106540352242922 already belongs to tenant acme"
    );
    let globex = TenantId::new("globex").unwrap();
    assert!(h.store.tenant(&globex).await.unwrap().is_none());
}

#[tokio::test]
async fn the_engine_is_chosen_at_creation_and_shown() {
    let h = harness().await;
    let created = h.create_corner_shop().await;
    assert_eq!(created.json["engine"], "web");
    assert_eq!(created.json["numbers"], json!([]));
    let shop = TenantId::new("corner-shop").unwrap();
    assert_eq!(
        h.store.tenant(&shop).await.unwrap().unwrap().engine,
        salesboy_protocol::Engine::Web
    );
    h.create_acme().await;
    assert_eq!(h.get("/api/tenants/acme").await.json["engine"], "cloud_api");

    // A web tenant has no Cloud API number; a Cloud API tenant needs one; an engine stays.
    for (body, field) in [
        (
            json!({"id": "kiosk", "engine": "web", "phone_number_id": "106540352242999", "access_token": "t"}),
            "phone_number_id",
        ),
        (json!({"id": "kiosk"}), "phone_number_id"),
        (
            json!({"id": "kiosk", "phone_number_id": "106540352242999"}),
            "access_token",
        ),
        (json!({"id": "kiosk", "engine": "baileys"}), ""),
    ] {
        let refused = h.post("/api/tenants", body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            refused.raw
        );
        assert!(
            error(&refused).starts_with(field),
            "{body}: {}",
            refused.raw
        );
    }
    assert!(
        h.store
            .tenant(&TenantId::new("kiosk").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let moved = h
        .post("/api/tenants", json!({"id": "acme", "engine": "web"}))
        .await;
    assert_eq!(moved.status, StatusCode::BAD_REQUEST, "{}", moved.raw);
    assert_eq!(
        error(&moved),
        "engine: chosen at creation: this tenant's engine is cloud_api"
    );
    let numbered = h
        .call(
            Method::PATCH,
            "/api/tenants/corner-shop",
            Some(TOKEN),
            Some(json!({"phone_number_id": "106540352242999", "access_token": "t"})),
        )
        .await;
    assert_eq!(numbered.status, StatusCode::BAD_REQUEST, "{}", numbered.raw);
    assert!(error(&numbered).starts_with("phone_number_id: a web tenant has no Cloud API number"));
}

#[tokio::test]
async fn a_tenant_has_its_own_read_receipt_policy_or_the_node_s() {
    let h = harness().await;
    h.create_acme().await;
    let path = "/api/tenants/acme";
    let patch = |body: Value| h.call(Method::PATCH, path, Some(TOKEN), Some(body));
    let shown = h.call(Method::GET, path, Some(TOKEN), None).await;
    assert_eq!(
        shown.json["read_receipts"],
        Value::Null,
        "the node's: {}",
        shown.raw
    );

    let set = patch(json!({"read_receipts": "never"})).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.raw);
    assert_eq!(set.json["read_receipts"], "never", "{}", set.raw);
    let stored_policy = || async {
        h.store
            .tenant(&acme())
            .await
            .unwrap()
            .unwrap()
            .read_receipts
    };
    assert_eq!(stored_policy().await, Some(ReadReceipts::Never));

    let renamed = patch(json!({"name": "Acme Shoes"})).await;
    assert_eq!(renamed.json["read_receipts"], "never", "absent: unchanged");
    let refused = patch(json!({"read_receipts": "sometimes"})).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.raw);
    assert!(
        error(&refused).starts_with("read_receipts"),
        "{}",
        refused.raw
    );
    assert_eq!(
        stored_policy().await,
        Some(ReadReceipts::Never),
        "a refused change changes nothing"
    );
    let reset = patch(json!({"read_receipts": null})).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.raw);
    assert_eq!(reset.json["read_receipts"], Value::Null, "null: the node's");
    assert_eq!(stored_policy().await, None);
}

#[tokio::test]
async fn a_web_tenant_has_its_own_ban_hygiene_and_a_cloud_tenant_none() {
    let h = harness().await;
    let created = h
        .post(
            "/api/tenants",
            json!({"id": "corner-shop", "engine": "web",
                   "web_hygiene": {"daily_cap": 200, "min_gap_per_chat_ms": 5000}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    let hygiene = &created.json["web_hygiene"];
    assert_eq!(hygiene["daily_cap"], 200, "{}", created.raw);
    assert_eq!(hygiene["min_gap_per_chat_ms"], 5000);
    assert_eq!(
        hygiene["answer_only"], true,
        "absent keys take the defaults"
    );
    let shop = TenantId::new("corner-shop").unwrap();
    let stored = h.store.tenant(&shop).await.unwrap().unwrap();
    assert_eq!(stored.web_hygiene.map(|w| w.daily_cap), Some(200));

    let path = "/api/tenants/corner-shop";
    let patch = |body: Value| h.call(Method::PATCH, path, Some(TOKEN), Some(body));
    let renamed = patch(json!({"name": "Corner Shop"})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.raw);
    assert_eq!(
        renamed.json["web_hygiene"]["daily_cap"], 200,
        "absent: unchanged"
    );
    let refused =
        patch(json!({"web_hygiene": {"typing_min_ms": 9000, "typing_max_ms": 1000}})).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.raw);
    assert!(
        error(&refused).starts_with("web_hygiene"),
        "{}",
        refused.raw
    );
    let unknown = patch(json!({"web_hygiene": {"daily_kap": 5}})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.raw);
    assert!(
        error(&unknown).starts_with("web_hygiene"),
        "{}",
        unknown.raw
    );
    let reset = patch(json!({"web_hygiene": null})).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.raw);
    assert_eq!(reset.json["web_hygiene"], Value::Null, "null: the node's");

    h.create_acme().await;
    let cloud = h
        .call(
            Method::PATCH,
            "/api/tenants/acme",
            Some(TOKEN),
            Some(json!({"web_hygiene": {"daily_cap": 10}})),
        )
        .await;
    assert_eq!(cloud.status, StatusCode::BAD_REQUEST, "{}", cloud.raw);
    assert!(error(&cloud).starts_with("web_hygiene"), "{}", cloud.raw);
    assert_eq!(
        h.store.tenant(&acme()).await.unwrap().unwrap().web_hygiene,
        None
    );
}

#[tokio::test]
async fn a_web_tenant_is_paired_by_qr_code_or_pairing_code_and_unlinked() {
    let h = harness().await;
    h.create_acme().await;
    let not_web = h.get("/api/tenants/acme/session/qr").await;
    assert_eq!(not_web.status, StatusCode::CONFLICT, "{}", not_web.raw);
    assert_eq!(
        error(&not_web),
        "tenant acme uses the cloud_api engine: only a web tenant is paired"
    );
    h.create_corner_shop().await;
    let wait = Duration::from_secs(10);

    // The first QR code: the request activates the tenant and waits for WhatsApp's code.
    let (qr, ()) = tokio::join!(h.get("/api/tenants/corner-shop/session/qr"), async {
        h.web.client(0, wait).await.emit(WebEvent::Qr {
            code: "2@first,ref".into(),
            valid_for: Duration::from_secs(60),
        });
    });
    assert_eq!(qr.status, StatusCode::OK, "{}", qr.raw);
    assert_eq!(qr.json["tenant"], "corner-shop");
    assert_eq!(qr.json["qr"], "2@first,ref");
    assert!(qr.json["qr_expires_ms"].as_i64().is_some(), "{}", qr.raw);
    let svg = qr.json["svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.ends_with("</svg>"), "{svg}");
    let client = h.web.client(0, wait).await;

    // Or a pairing code for the owner's number.
    let code = h
        .post(
            "/api/tenants/corner-shop/session/pair_code",
            json!({"phone": "+234 801 234 5678"}),
        )
        .await;
    assert_eq!(code.status, StatusCode::OK, "{}", code.raw);
    assert_eq!(code.json["code"], PAIR_CODE);
    assert_eq!(client.paired_phones(), ["2348012345678"]);
    let bad = h
        .post(
            "/api/tenants/corner-shop/session/pair_code",
            json!({"phone": "12"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.raw);
    assert!(error(&bad).starts_with("phone: "), "{}", bad.raw);
    let status = h.get("/api/tenants/corner-shop/session").await;
    let session = &status.json["session"];
    assert_eq!(session["engine"], "web", "{}", status.raw);
    assert_eq!(session["status"], "pairing");
    assert_eq!(session["web"]["pairing"]["code"], PAIR_CODE);

    // Linked: nothing to pair.
    client.emit(WebEvent::Paired {
        phone: "2348012345678".into(),
    });
    client.emit(WebEvent::Connected { phone: None });
    eventually("connected", || async {
        let status = h.get("/api/tenants/corner-shop/session").await;
        (status.json["session"]["status"] == "connected").then_some(())
    })
    .await;
    let linked = h.get("/api/tenants/corner-shop/session/qr").await;
    assert_eq!(linked.status, StatusCode::CONFLICT, "{}", linked.raw);
    assert!(
        error(&linked).contains("linked to 2348012345678"),
        "{}",
        linked.raw
    );

    // Unlinked: the next QR code comes from a fresh client.
    let out = h
        .post("/api/tenants/corner-shop/session/logout", json!({}))
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.raw);
    assert_eq!(out.json["session"]["status"], "logged_out");
    assert_eq!(client.logouts(), 1);
    let (again, ()) = tokio::join!(h.get("/api/tenants/corner-shop/session/qr"), async {
        h.web.client(1, wait).await.emit(WebEvent::Qr {
            code: "2@second,ref".into(),
            valid_for: Duration::from_secs(60),
        });
    });
    assert_eq!(again.status, StatusCode::OK, "{}", again.raw);
    assert_eq!(again.json["qr"], "2@second,ref");
}

#[tokio::test]
async fn deleting_a_web_tenant_unlinks_its_device_first() {
    let h = harness().await;
    h.create_corner_shop().await;
    let started = h
        .post("/api/tenants/corner-shop/session/start", json!({}))
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.raw);
    let client = h.web.client(0, Duration::from_secs(10)).await;
    client.emit(WebEvent::Connected {
        phone: Some("2348012345678".into()),
    });
    eventually("connected", || async {
        let status = h.get("/api/tenants/corner-shop/session").await;
        (status.json["session"]["status"] == "connected").then_some(())
    })
    .await;

    let deleted = h
        .call(
            Method::DELETE,
            "/api/tenants/corner-shop",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.raw);
    assert_eq!(client.logouts(), 1, "the phone's list forgets the device");
    assert!(
        h.store
            .tenant(&TenantId::new("corner-shop").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn knowledge_is_chunked_stored_and_searchable() {
    let h = harness().await;
    h.create_acme().await;
    let text = (0..30)
        .map(|i| format!("Paragraph {i}: orders over fifty dollars ship free, and every refund is paid within five days."))
        .collect::<Vec<_>>()
        .join("\n\n")
        + "\n\nOur flagship store in Lyon sells handmade boots.";
    let added = h
        .post(
            "/api/tenants/acme/knowledge",
            json!({"title": "Shipping and refunds", "text": text}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.raw);
    let expected_chunks = knowledge::passages(&text).len();
    assert!(expected_chunks > 1);
    assert_eq!(added.json["chunks"], expected_chunks);
    let document_id = added.json["document_id"].as_i64().unwrap();
    let version = added.json["knowledge_version"].as_i64().unwrap();
    assert_eq!(version, h.store.knowledge_version(&acme()).await.unwrap());
    assert!(version > 0);

    let hits = h
        .store
        .search_knowledge(&acme(), "handmade boots in Lyon?", 3)
        .await
        .unwrap();
    assert!(!hits.is_empty());
    assert_eq!(hits[0].document_id, document_id);
    assert_eq!(hits[0].document_title, "Shipping and refunds");
    assert!(hits[0].text.contains("handmade boots"), "{}", hits[0].text);

    let listed = h.get("/api/tenants/acme/knowledge").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json.as_array().unwrap().len(), 1);
    assert_eq!(listed.json[0]["id"], document_id);
    assert_eq!(listed.json[0]["title"], "Shipping and refunds");
    assert_eq!(listed.json[0]["chunk_count"], expected_chunks);
    // The tenant view follows the version.
    assert_eq!(
        h.get("/api/tenants/acme").await.json["knowledge_version"],
        version
    );

    let path = format!("/api/tenants/acme/knowledge/{document_id}");
    let deleted = h.call(Method::DELETE, &path, Some(TOKEN), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.raw);
    assert_eq!(deleted.json["document_id"], document_id);
    assert!(deleted.json["knowledge_version"].as_i64().unwrap() > version);
    assert!(
        h.store
            .search_knowledge(&acme(), "handmade boots", 3)
            .await
            .unwrap()
            .is_empty()
    );
    let again = h.call(Method::DELETE, &path, Some(TOKEN), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        error(&again),
        format!("unknown knowledge document {document_id} of tenant acme")
    );
}

#[tokio::test]
async fn owner_sends_are_recorded_sent_and_listed() {
    let h = harness().await;
    h.create_acme().await;
    let started_ms = SystemClock.now_ms();
    let path = format!("/api/tenants/acme/conversations/{CUSTOMER}");
    let accepted = h
        .post(
            &format!("{path}/send"),
            json!({"text": "Hi, this is Anna from Acme."}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.raw);
    let outbound_id = accepted.json["outbound_id"].as_i64().unwrap();

    let listed = h.get(&format!("{path}/messages")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.raw);
    assert_eq!(listed.json["chat"], CUSTOMER);
    let message = &listed.json["messages"][0];
    assert_eq!(listed.json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(message["id"], outbound_id);
    assert_eq!(message["direction"], "outbound");
    assert_eq!(message["origin"], "owner");
    assert_eq!(message["kind"], "text");
    assert_eq!(message["body"], "Hi, this is Anna from Acme.");
    assert!(
        matches!(message["status"].as_str(), Some("pending" | "sent")),
        "{message}"
    );
    assert_eq!(message["failure"], Value::Null);
    assert!(message["created_ms"].as_i64().unwrap() >= started_ms);

    // The session sends it and records Meta's id; the bot steps back in that chat.
    let (harness, messages) = (&h, format!("{path}/messages"));
    let messages = &messages;
    let sent = eventually("the send to be recorded as sent", move || async move {
        let answer = harness.get(messages).await;
        let message = answer.json["messages"][0].clone();
        let paused = !answer.json["bot_paused_until_ms"].is_null();
        (message["status"] == "sent" && paused).then_some(answer.json)
    })
    .await;
    assert_eq!(sent["messages"][0]["wamid"], "wamid.test1");
    assert!(sent["bot_paused_until_ms"].as_i64().unwrap() > started_ms);
    assert_eq!(
        *h.sent.lock(),
        [(
            CUSTOMER.to_owned(),
            "Hi, this is Anna from Acme.".to_owned()
        )]
    );

    let conversations = h.get("/api/tenants/acme/conversations").await;
    assert_eq!(
        conversations.status,
        StatusCode::OK,
        "{}",
        conversations.raw
    );
    assert_eq!(conversations.json.as_array().map(Vec::len), Some(1));
    assert_eq!(conversations.json[0]["chat"], CUSTOMER);
    assert_eq!(conversations.json[0]["last_inbound_ms"], Value::Null);
    let after = h
        .get(&format!(
            "/api/tenants/acme/conversations?after={CUSTOMER}&limit=5"
        ))
        .await;
    assert_eq!(after.json, json!([]), "{}", after.raw);
    let bad = h.get("/api/tenants/acme/conversations?limit=0").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(error(&bad).starts_with("limit: "), "{}", bad.raw);
    let unknown = h.get("/api/tenants/nope/conversations").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let limited = h.get(&format!("{path}/messages?limit=1")).await;
    assert_eq!(limited.json["messages"].as_array().unwrap().len(), 1);
    let id = &limited.json["messages"][0]["id"];
    let earlier = h.get(&format!("{path}/messages?before={id}")).await;
    assert_eq!(earlier.status, StatusCode::OK, "{}", earlier.raw);
    assert_eq!(
        earlier.json["messages"],
        json!([]),
        "nothing before the only message"
    );
    let bad = h.get(&format!("{path}/messages?before=last")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        error(&bad).starts_with("before: expected a message id"),
        "{}",
        bad.raw
    );
}

#[tokio::test]
async fn pausing_and_resuming_the_bot_shows_in_the_conversation() {
    let h = harness().await;
    h.create_acme().await;
    let path = format!("/api/tenants/acme/conversations/{CUSTOMER}");
    let chat = ChatId::new(CUSTOMER).unwrap();

    let before = SystemClock.now_ms();
    let paused = h
        .post(&format!("{path}/pause"), json!({"minutes": 30}))
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.raw);
    assert_eq!(paused.json["chat"], CUSTOMER);
    let until = paused.json["bot_paused_until_ms"].as_i64().unwrap();
    assert!(
        (before + 30 * 60_000..=SystemClock.now_ms() + 30 * 60_000).contains(&until),
        "{until}"
    );
    let listed = h.get(&format!("{path}/messages")).await;
    assert_eq!(listed.json["bot_paused_until_ms"], until);
    assert_eq!(listed.json["messages"], json!([]));
    let stored = h.store.conversation(&acme(), &chat).await.unwrap().unwrap();
    assert_eq!(stored.bot_paused_until_ms, Some(until));

    // Without a body: until resumed.
    let request = Request::post(format!("{path}/pause"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let paused = h.send(request).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.raw);
    assert_eq!(paused.json["bot_paused_until_ms"], PAUSED_INDEFINITELY);
    assert_eq!(
        h.get(&format!("{path}/messages")).await.json["bot_paused_until_ms"],
        PAUSED_INDEFINITELY
    );

    let resumed = h
        .call(Method::POST, &format!("{path}/resume"), Some(TOKEN), None)
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.raw);
    assert_eq!(
        resumed.json,
        json!({"chat": CUSTOMER, "bot_paused_until_ms": null})
    );
    assert_eq!(
        h.get(&format!("{path}/messages")).await.json["bot_paused_until_ms"],
        Value::Null
    );
    let stored = h.store.conversation(&acme(), &chat).await.unwrap().unwrap();
    assert_eq!(stored.bot_paused_until_ms, None);
}

#[tokio::test]
async fn unknown_tenants_and_routes_are_404() {
    let h = harness().await;
    let chat = format!("/api/tenants/nope/conversations/{CUSTOMER}");
    let requests = [
        (Method::GET, "/api/tenants/nope".to_owned(), None),
        (Method::GET, "/api/tenants/nope/knowledge".to_owned(), None),
        (
            Method::POST,
            "/api/tenants/nope/knowledge".to_owned(),
            Some(json!({"title": "t", "text": "some text"})),
        ),
        (
            Method::DELETE,
            "/api/tenants/nope/knowledge/1".to_owned(),
            None,
        ),
        (Method::GET, format!("{chat}/messages"), None),
        (Method::GET, "/api/tenants/nope/usage".to_owned(), None),
        (
            Method::POST,
            format!("{chat}/pause"),
            Some(json!({"minutes": 5})),
        ),
        (Method::POST, format!("{chat}/resume"), None),
        (
            Method::POST,
            format!("{chat}/send"),
            Some(json!({"text": "hello"})),
        ),
    ];
    for (method, path, body) in requests {
        let answer = h.call(method.clone(), &path, Some(TOKEN), body).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            answer.raw
        );
        assert_eq!(error(&answer), "unknown tenant nope", "{method} {path}");
    }
    let answer = h.get("/api/nothing-here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error(&answer), "no such admin route");
    assert!(h.sent.lock().is_empty());
}

#[tokio::test]
async fn an_owner_send_with_a_client_ref_is_recorded_once() {
    let h = harness().await;
    h.create_acme().await;
    let path = format!("/api/tenants/acme/conversations/{CUSTOMER}");
    let body = json!({"text": "Hi from Acme.", "client_ref": "welcome-1"});
    let first = h.post(&format!("{path}/send"), body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.raw);
    let again = h.post(&format!("{path}/send"), body).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.raw);
    assert_eq!(again.json, first.json);
    let listed = h.get(&format!("{path}/messages")).await;
    assert_eq!(listed.json["messages"].as_array().unwrap().len(), 1);
    let empty = h
        .post(
            &format!("{path}/send"),
            json!({"text": "x", "client_ref": ""}),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.raw);
    assert!(error(&empty).starts_with("client_ref: "), "{}", empty.raw);
}

/// The send route takes the same kinds as `message.send`: here reply buttons, sent, listed
/// with their readable text; and refused beyond the Cloud API's limits, nothing recorded.
#[tokio::test]
async fn an_owner_send_takes_every_kind_and_refuses_beyond_the_limits() {
    let h = harness().await;
    h.create_acme().await;
    let path = format!("/api/tenants/acme/conversations/{CUSTOMER}");
    let too_many = json!({"interactive": {"body": "Which size?", "buttons": [
        {"id": "a", "title": "40"}, {"id": "b", "title": "41"},
        {"id": "c", "title": "42"}, {"id": "d", "title": "43"},
    ]}});
    let refused = h.post(&format!("{path}/send"), too_many).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.raw);
    assert_eq!(
        error(&refused),
        "interactive.buttons: 4 buttons, 1 to 3 are allowed"
    );
    let refused = h.post(&format!("{path}/send"), json!({})).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.raw);
    let buttons = json!({"interactive": {"body": "Which size?", "buttons": [
        {"id": "a", "title": "41"}, {"id": "b", "title": "42"},
    ]}});
    let accepted = h.post(&format!("{path}/send"), buttons).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.raw);
    let listed = h.get(&format!("{path}/messages")).await;
    assert_eq!(listed.json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(listed.json["messages"][0]["kind"], "interactive");
    assert_eq!(listed.json["messages"][0]["body"], "Which size?");
    let sent = eventually("the buttons to be sent", || async {
        let sent = h.sent.lock().clone();
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(sent, [(CUSTOMER.to_owned(), "Which size?".to_owned())]);
}

#[tokio::test]
async fn deleting_a_tenant_stops_it_and_keeps_or_erases_its_data() {
    let h = harness().await;
    h.create_acme().await;
    let path = format!("/api/tenants/acme/conversations/{CUSTOMER}");
    let sent = h.post(&format!("{path}/send"), json!({"text": "Hi"})).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.raw);
    let delete = |query: &str| {
        let path = format!("/api/tenants/acme{query}");
        let h = &h;
        async move { h.call(Method::DELETE, &path, Some(TOKEN), None).await }
    };
    let refused = delete("?erase_data=yes").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.raw);
    assert_eq!(
        error(&refused),
        "erase_data: expected true or false, got \"yes\""
    );
    let deleted = delete("").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.raw);
    assert_eq!(
        deleted.json,
        json!({"tenant": "acme", "data_erased": false})
    );
    assert_eq!(
        h.get("/api/tenants/acme").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete("").await.status, StatusCode::NOT_FOUND);
    let (harness, tenant) = (&h, acme());
    let tenant = &tenant;
    eventually("the tenant to stop", move || async move {
        harness
            .state
            .node
            .observe_tenant(tenant)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // created again, its messages are back; erased, they are not
    h.create_acme().await;
    let listed = h.get(&format!("{path}/messages")).await;
    assert_eq!(listed.json["messages"].as_array().unwrap().len(), 1);
    let erased = delete("?erase_data=true").await;
    assert_eq!(erased.json, json!({"tenant": "acme", "data_erased": true}));
    h.create_acme().await;
    let listed = h.get(&format!("{path}/messages")).await;
    assert_eq!(listed.json["messages"], json!([]));
}

#[tokio::test]
async fn a_months_usage_counts_tokens_cost_and_messages() {
    let h = harness().await;
    h.create_acme().await;
    let acme = TenantId::new("acme").unwrap();
    for (tokens, at_ms) in [(1_000, SystemClock.now_ms()), (7_000, 1_700_000_000_000)] {
        let usage = LlmUsage {
            tenant: acme.clone(),
            provider: "gemini".to_owned(),
            model: "gemini-2.0-flash".to_owned(),
            prompt_tokens: tokens,
            completion_tokens: tokens / 10,
            cost_micros: tokens * 3,
            at_ms,
        };
        h.store.record_llm_usage(&usage).await.unwrap();
    }
    let path = format!("/api/tenants/acme/conversations/{CUSTOMER}/send");
    let sent = h.post(&path, json!({"text": "Hi from Acme."})).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.raw);

    let usage = h.get("/api/tenants/acme/usage").await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.raw);
    assert_eq!(
        usage.json["tokens"],
        json!({"prompt": 1_000, "completion": 100})
    );
    assert_eq!(usage.json["llm_requests"], 1);
    assert_eq!(usage.json["llm_cost_micros"], 3_000);
    assert_eq!(usage.json["messages"], json!({"in": 0, "out": 1}));
    let november = h.get("/api/tenants/acme/usage?month=2023-11").await;
    assert_eq!(november.status, StatusCode::OK, "{}", november.raw);
    assert_eq!(november.json["month"], "2023-11");
    assert_eq!(november.json["from_ms"], 1_698_796_800_000_i64);
    assert_eq!(november.json["until_ms"], 1_701_388_800_000_i64);
    assert_eq!(november.json["tokens"]["prompt"], 7_000);
    assert_eq!(november.json["messages"], json!({"in": 0, "out": 0}));

    for month in ["2023-13", "2023-1", "november", ""] {
        let answer = h
            .get(&format!("/api/tenants/acme/usage?month={month}"))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{month}: {}",
            answer.raw
        );
        assert!(
            error(&answer).starts_with("month: expected a month as YYYY-MM"),
            "{month}: {}",
            answer.raw
        );
    }
}

#[tokio::test]
async fn the_session_status_says_where_the_tenant_runs() {
    let h = harness().await;
    let unknown = h.get("/api/tenants/nope/session").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(error(&unknown), "unknown tenant nope");
    h.create_acme().await;
    let idle = h.get("/api/tenants/acme/session").await;
    assert_eq!(idle.status, StatusCode::OK, "{}", idle.raw);
    assert_eq!(
        idle.json,
        json!({"tenant": "acme", "state": "idle", "stopped_ms": null, "node": null,
               "epoch": null, "moving_to": null, "session": null})
    );
    let resumed = h
        .post(
            &format!("/api/tenants/acme/conversations/{CUSTOMER}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    let active = h.get("/api/tenants/acme/session").await.json;
    assert_eq!(active["state"], "active");
    assert_eq!(active["node"], "node-test");
    let epoch = h.state.node.observe_tenant(&acme()).await.map(|t| t.epoch);
    assert_eq!(active["epoch"].as_u64(), epoch);
    assert_eq!(active["session"]["status"], "connected");

    let stopped = h.post("/api/tenants/acme/session/stop", json!({})).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.raw);
    assert_eq!(stopped.json["state"], "stopped");
    assert!(
        stopped.json["stopped_ms"].as_i64().is_some(),
        "{}",
        stopped.raw
    );
    let (harness, tenant) = (&h, acme());
    let tenant = &tenant;
    eventually("the tenant to stop", move || async move {
        harness
            .state
            .node
            .observe_tenant(tenant)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let send = h
        .post(
            &format!("/api/tenants/acme/conversations/{CUSTOMER}/send"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(send.status, StatusCode::CONFLICT, "{}", send.raw);
    let started = h.post("/api/tenants/acme/session/start", json!({})).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.raw);
    assert_eq!(started.json["state"], "active", "{}", started.raw);
    assert_eq!(started.json["stopped_ms"], Value::Null);
    let unknown = h.post("/api/tenants/nope/session/stop", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_cluster_view_counts_hosted_tenants() {
    let h = harness().await;
    let empty = h.get("/api/cluster").await;
    assert_eq!(empty.status, StatusCode::OK);
    let node = &empty.json["nodes"][0];
    assert_eq!(empty.json["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(empty.json["tenants"], 0);
    assert_eq!(
        empty.json["leader"],
        serde_json::Value::Null,
        "a single node has no leader"
    );
    assert_eq!(node["node_id"], "node-test");
    assert_eq!(node["alive"], true);
    assert_eq!(node["draining"], false);
    assert_eq!(
        (
            node["tenants"].clone(),
            node["placed"].clone(),
            node["conversations"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    assert_eq!(node["max_tenants"], Settings::default().max_tenants);
    assert!(node["rss_bytes"].as_u64().unwrap_or(0) > 0);
    h.create_acme().await;
    let resumed = h
        .post(
            &format!("/api/tenants/acme/conversations/{CUSTOMER}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    let cluster = h.get("/api/cluster").await.json;
    assert_eq!(cluster["tenants"], 1);
    assert_eq!(cluster["nodes"][0]["tenants"], 1);
    assert_eq!(cluster["nodes"][0]["conversations"], 1);
    assert_eq!(h.state.node.observe().tenants, 1);
}

/// The OpenAPI document lists exactly [`ROUTES`], every listed route is served, and no
/// other method is served on those paths.
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let h = harness().await;
    let doc = h.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"admin_token": []}]));
    // Field rules the handlers check are in the document: a webhook's kinds are the tenant
    // event kinds, a pause lasts at most a year.
    let schemas = &doc["components"]["schemas"];
    let kinds = schemas["WebhookRequest"]["properties"]["kinds"]["items"]["enum"]
        .as_array()
        .expect("the kinds are an enum");
    assert!(kinds.contains(&json!("message_received")), "{kinds:?}");
    assert!(
        !kinds.contains(&json!("node_joined")),
        "cluster kinds are not a tenant's"
    );
    assert_eq!(
        schemas["PauseRequest"]["properties"]["minutes"]["maximum"],
        json!(525_600)
    );
    let send = &schemas["SendRequest"]["allOf"];
    assert!(send[0]["properties"]["client_ref"].is_object(), "{send}");
    let contents: Vec<&Value> = send[1]["oneOf"]
        .as_array()
        .expect("exactly one content")
        .iter()
        .map(|branch| &branch["required"][0])
        .collect();
    assert_eq!(
        contents,
        [
            &json!("text"),
            &json!("template"),
            &json!("interactive"),
            &json!("image"),
            &json!("document")
        ]
    );

    let methods = ["get", "post", "put", "patch", "delete"];
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in methods {
            if item.get(method).is_some() {
                documented.push((method.to_owned(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut listed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    listed.sort();
    assert_eq!(documented, listed);

    let mut paths: Vec<&str> = ROUTES.iter().map(|(_, path)| *path).collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let concrete = path
            .replace("{id}", "nope")
            .replace("{wa_id}", CUSTOMER)
            .replace("{doc_id}", "1")
            .replace("{token_id}", "1");
        for method in methods {
            let routed = ROUTES.contains(&(method, path));
            if routed && path == "/api/cluster/stream" {
                // A stream never ends: `live_streams_…` reads its first events.
                continue;
            }
            let answer = h
                .call(
                    method.to_uppercase().parse().unwrap(),
                    &concrete,
                    Some(TOKEN),
                    None,
                )
                .await;
            if routed {
                assert_ne!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                assert_ne!(
                    answer.json["error"], "no such admin route",
                    "{method} {path}"
                );
            } else {
                assert_eq!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {}",
                    answer.raw
                );
                assert_eq!(error(&answer), "method not allowed on this route");
            }
        }
    }
}

/// Every listed route but the OpenAPI document refuses a request without the admin token.
/// Items of Meta's deliveries that could not be read, newest first, paged with `before`.
#[tokio::test]
async fn rejected_webhook_items_are_listed_newest_first() {
    let h = harness().await;
    h.create_acme().await;
    let acme = TenantId::new("acme").unwrap();
    let mut ids = Vec::new();
    for index in 0..3 {
        let item = salesboy_actors::store::NewRejectedItem {
            tenant: Some(acme.clone()),
            phone_number_id: Some(
                salesboy_protocol::PhoneNumberId::new("106540352242922").unwrap(),
            ),
            waba_id: None,
            item: salesboy_protocol::whatsapp::RejectedItem::new(
                format!("entry[0].changes[0].value.messages[{index}]"),
                "missing field `from`",
                &json!({"id": format!("wamid.{index}")}),
            ),
            received_ms: 1_700_000_000_000 + index,
        };
        ids.push(h.store.record_rejected_item(&item).await.unwrap());
    }
    let all = h.get("/api/tenants/acme/webhook/rejected").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.raw);
    let listed: Vec<i64> = all
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [ids[2], ids[1], ids[0]]);
    assert_eq!(all.json[0]["path"], "entry[0].changes[0].value.messages[2]");
    assert_eq!(all.json[0]["reason"], "missing field `from`");
    assert_eq!(all.json[0]["raw"], r#"{"id":"wamid.2"}"#);
    assert_eq!(all.json[0]["truncated"], false);
    assert_eq!(all.json[0]["phone_number_id"], "106540352242922");
    let page = h
        .get(&format!(
            "/api/tenants/acme/webhook/rejected?before={}&limit=1",
            ids[2]
        ))
        .await;
    assert_eq!(page.json.as_array().unwrap().len(), 1, "{}", page.raw);
    assert_eq!(page.json[0]["id"], ids[1]);
    for query in ["limit=0", "limit=1001", "limit=x", "before=x"] {
        let answer = h
            .get(&format!("/api/tenants/acme/webhook/rejected?{query}"))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            answer.raw
        );
    }
    let unknown = h.get("/api/tenants/nobody/webhook/rejected").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.raw);
}

#[tokio::test]
async fn every_route_but_the_document_needs_the_token() {
    let h = harness().await;
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{id}", "acme")
            .replace("{wa_id}", CUSTOMER)
            .replace("{doc_id}", "1")
            .replace("{token_id}", "1");
        let answer = h
            .call(
                method.to_uppercase().parse().unwrap(),
                &concrete,
                None,
                None,
            )
            .await;
        if *path == "/api/openapi.json" {
            assert_eq!(answer.status, StatusCode::OK, "{method} {path}");
        } else {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert!(error(&answer).contains("admin token"), "{}", answer.raw);
        }
    }
}

/// A tenant's API token reads and changes its tenant, gets 403 on anything else (another
/// tenant, the operator's routes, the token routes) and 401 once revoked.
#[tokio::test]
async fn a_tenant_token_reaches_its_own_tenant_only() {
    let h = harness().await;
    h.create_acme().await;
    let bolt = h
        .post(
            "/api/tenants",
            json!({"id": "bolt", "phone_number_id": "200", "access_token": "EAAG-bolt"}),
        )
        .await;
    assert_eq!(bolt.status, StatusCode::CREATED, "{}", bolt.raw);

    let made = h
        .post("/api/tenants/acme/tokens", json!({"name": "crm"}))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.raw);
    let token = made.json["token"].as_str().unwrap().to_owned();
    let token_id = made.json["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sbt_") && token.len() == 68, "{token}");
    assert_eq!(made.json["tenant"], "acme");
    assert_eq!(made.json["name"], "crm");
    // No body makes an unnamed token.
    let unnamed = h
        .call(Method::POST, "/api/tenants/bolt/tokens", Some(TOKEN), None)
        .await;
    assert_eq!(unnamed.status, StatusCode::CREATED, "{}", unnamed.raw);
    assert_eq!(unnamed.json["name"], Value::Null);
    // Listed without the secret.
    let listed = h.get("/api/tenants/acme/tokens").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.raw);
    assert_eq!(listed.json.as_array().unwrap().len(), 1, "{}", listed.raw);
    assert_eq!(listed.json[0]["id"], token_id.as_str());
    assert_eq!(listed.json[0]["name"], "crm");
    assert!(!listed.raw.contains(&token), "{}", listed.raw);

    // Its own tenant: reads and writes.
    for path in [
        "/api/tenants/acme",
        "/api/tenants/acme/session",
        "/api/tenants/acme/knowledge",
        "/api/tenants/acme/conversations",
        "/api/tenants/acme/usage",
    ] {
        let answer = h.call(Method::GET, path, Some(&token), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.raw);
    }
    let shown = h
        .call(Method::GET, "/api/tenants/acme", Some(&token), None)
        .await;
    assert_eq!(shown.json["id"], "acme");
    let paused = h
        .call(
            Method::POST,
            &format!("/api/tenants/acme/conversations/{CUSTOMER}/pause"),
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.raw);

    // Anything else: 403, and nothing changes.
    let forbidden: [(Method, &str, Option<Value>); 10] = [
        (Method::GET, "/api/tenants/bolt", None),
        (Method::GET, "/api/tenants/bolt/usage", None),
        (Method::GET, "/api/tenants/ghost", None),
        (
            Method::POST,
            "/api/tenants/bolt/knowledge",
            Some(json!({"title": "x", "text": "y"})),
        ),
        (Method::GET, "/api/tenants", None),
        (
            Method::POST,
            "/api/tenants",
            Some(
                json!({"id": "acme", "phone_number_id": "106540352242922", "access_token": "stolen"}),
            ),
        ),
        (Method::GET, "/api/cluster", None),
        (Method::GET, "/api/tenants/acme/tokens", None),
        (Method::POST, "/api/tenants/acme/tokens", Some(json!({}))),
        (Method::DELETE, "/api/tenants/acme/tokens/whatever", None),
    ];
    for (method, path, body) in forbidden {
        let answer = h.call(method.clone(), path, Some(&token), body).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            answer.raw
        );
        assert!(error(&answer).contains("tenant acme"), "{}", answer.raw);
    }
    assert!(
        h.store
            .list_knowledge(&TenantId::new("bolt").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let acme_now = h.store.tenant(&acme()).await.unwrap().unwrap();
    assert_eq!(acme_now.numbers[0].access_token.expose(), ACCESS_TOKEN);
    assert_eq!(
        h.get("/api/tenants/acme/tokens")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Revoked: 401 like any unknown token; revoking twice is 404.
    let revoked = h
        .call(
            Method::DELETE,
            &format!("/api/tenants/acme/tokens/{token_id}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.raw);
    let refused = h
        .call(Method::GET, "/api/tenants/acme", Some(&token), None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.raw);
    let again = h
        .call(
            Method::DELETE,
            &format!("/api/tenants/acme/tokens/{token_id}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.raw);
    // Tokens of an unknown tenant: 404.
    let ghost = h.get("/api/tenants/ghost/tokens").await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND, "{}", ghost.raw);
}

/// The CLI's client against the router served on a real socket.
#[tokio::test]
async fn the_cli_client_talks_to_a_served_node() {
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = h.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = AdminClient::new(&url, SecretString::from(TOKEN)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let llm = dir.path().join("llm.json");
    std::fs::write(
        &llm,
        json!([{"kind": "openai", "model": "gpt-4o-mini", "api_key": API_KEY}]).to_string(),
    )
    .unwrap();
    let added = TenantCommand::Add {
        id: "acme".into(),
        engine: None,
        phone_number_id: Some("106540352242922".into()),
        access_token: Some(ACCESS_TOKEN.into()),
        name: None,
        system_prompt: None,
        llm: Some(llm),
        waba_id: None,
        read_receipts: Some("always".into()),
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(added["name"], "acme");
    assert_eq!(added["read_receipts"], "always");
    assert_eq!(added["llm"][0]["api_key"], "[redacted]");
    let shown = TenantCommand::Show { id: "acme".into() }
        .execute(&client)
        .await
        .unwrap();
    assert_eq!(shown["numbers"][0]["phone_number_id"], "106540352242922");
    let listed = TenantCommand::List.execute(&client).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // A web tenant, linked by pairing code.
    let shop = TenantCommand::Add {
        id: "corner-shop".into(),
        engine: Some(salesboy_protocol::Engine::Web),
        phone_number_id: None,
        access_token: None,
        name: None,
        system_prompt: None,
        llm: None,
        waba_id: None,
        read_receipts: None,
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(shop["engine"], "web");
    assert_eq!(shop["read_receipts"], Value::Null, "the node's policy");
    let code = TenantCommand::PairCode {
        id: "corner-shop".into(),
        phone: "+234 801 234 5678".into(),
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(code["code"], PAIR_CODE);
    let refused = TenantCommand::Logout { id: "acme".into() }
        .execute(&client)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("only a web tenant is paired"),
        "{refused:#}"
    );
    let drawn = salesboy_node::cli::terminal_qr("2@first,ref").unwrap();
    assert!(drawn.lines().count() > 10 && drawn.contains('█'), "{drawn}");

    let faq = dir.path().join("faq.md");
    std::fs::write(&faq, "# FAQ\n\nWe deliver across France in two days.").unwrap();
    let added = KbCommand::Add {
        tenant: "acme".into(),
        file: faq,
        title: None,
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(added["chunks"], 1);
    let documents = KbCommand::List {
        tenant: "acme".into(),
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(documents[0]["title"], "faq.md");

    let paused = ChatCommand::Pause {
        tenant: "acme".into(),
        wa_id: CUSTOMER.into(),
        minutes: None,
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(paused["bot_paused_until_ms"], PAUSED_INDEFINITELY);
    let resumed = ChatCommand::Resume {
        tenant: "acme".into(),
        wa_id: CUSTOMER.into(),
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(resumed["bot_paused_until_ms"], Value::Null);
    let sent = ChatCommand::Send {
        tenant: "acme".into(),
        wa_id: CUSTOMER.into(),
        text: "On its way!".into(),
    }
    .execute(&client)
    .await
    .unwrap();
    let outbound_id = sent["outbound_id"].as_i64().unwrap();
    let messages = ChatCommand::Messages {
        tenant: "acme".into(),
        wa_id: CUSTOMER.into(),
        limit: 10,
    }
    .execute(&client)
    .await
    .unwrap();
    assert_eq!(messages["messages"][0]["id"], outbound_id);

    // Error answers become errors carrying the API's status and message.
    let err = TenantCommand::Show { id: "nope".into() }
        .execute(&client)
        .await
        .unwrap_err();
    let api = err
        .downcast_ref::<salesboy_node::cli::client::ApiError>()
        .unwrap();
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.message, "unknown tenant nope");
    let wrong = AdminClient::new(&url, SecretString::from("wrong")).unwrap();
    let err = TenantCommand::List.execute(&wrong).await.unwrap_err();
    let api = err
        .downcast_ref::<salesboy_node::cli::client::ApiError>()
        .unwrap();
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.message, "invalid admin token");
    server.abort();
}

/// The first frame of a server-sent event stream at `path`, read with `token`.
async fn first_frame(h: &Harness, path: &str, token: &str) -> (StatusCode, String) {
    use futures::StreamExt;
    let request = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let mut body = response.into_body().into_data_stream();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("a first frame within 10 s")
        .expect("the stream sends a frame")
        .unwrap();
    (status, String::from_utf8(frame.to_vec()).unwrap())
}

#[tokio::test]
async fn live_streams_send_snapshots_to_whom_they_concern_and_me_says_who_calls() {
    let h = harness().await;
    h.create_acme().await;
    let made = h
        .post("/api/tenants/acme/tokens", json!({"name": "dashboard"}))
        .await;
    let token = made.json["token"].as_str().unwrap().to_owned();

    let me = h.get("/api/me").await;
    assert_eq!(me.json, json!({"role": "operator"}));
    let me = h.call(Method::GET, "/api/me", Some(&token), None).await;
    assert_eq!(me.json, json!({"role": "tenant", "tenant": "acme"}));
    let nobody = h
        .call(Method::GET, "/api/me", Some("wrong-token"), None)
        .await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);

    let (status, frame) = first_frame(&h, "/api/cluster/stream", TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let data = frame
        .strip_prefix("event: snapshot\ndata: ")
        .unwrap_or_else(|| panic!("a snapshot first: {frame}"));
    let snapshot: Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(snapshot["cluster"]["nodes"][0]["node_id"], "node-test");
    assert_eq!(snapshot["node"]["database"], "ok");
    assert_eq!(snapshot["pulse"]["received"], 0);

    let (status, frame) = first_frame(&h, "/api/tenants/acme/stream", &token).await;
    assert_eq!(status, StatusCode::OK);
    let data = frame
        .strip_prefix("event: snapshot\ndata: ")
        .unwrap_or_else(|| panic!("a snapshot first: {frame}"));
    let snapshot: Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(snapshot["session"]["tenant"], "acme");
    assert!(!frame.contains(ACCESS_TOKEN), "{frame}");

    // A tenant's token: not the cluster's stream, not another tenant's.
    let refused = h
        .call(Method::GET, "/api/cluster/stream", Some(&token), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.raw);
    let refused = h
        .call(Method::GET, "/api/tenants/bolt/stream", Some(&token), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.raw);
    let unknown = h.get("/api/tenants/ghost/stream").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.raw);
}

#[tokio::test]
async fn a_node_alone_cannot_be_drained_from_the_api() {
    let h = harness().await;
    let refused = h
        .call(
            Method::POST,
            "/api/cluster/nodes/node-test/drain",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.raw);
    assert!(error(&refused).contains("runs alone"), "{}", refused.raw);
    let invalid = h
        .call(
            Method::POST,
            "/api/cluster/nodes/a%20b/drain",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST, "{}", invalid.raw);
}

/// The response to a GET of `path` with `token`, its body unread.
async fn open_stream(h: &Harness, path: &str, token: &str) -> axum::response::Response {
    let request = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    h.app.clone().oneshot(request).await.unwrap()
}

#[tokio::test]
async fn a_tenant_stream_ends_when_its_token_is_revoked_and_streams_are_bounded() {
    use futures::StreamExt;
    let h = harness().await;
    h.create_acme().await;
    let made = h
        .post("/api/tenants/acme/tokens", json!({"name": "dashboard"}))
        .await;
    let token = made.json["token"].as_str().unwrap().to_owned();
    let token_id = made.json["id"].as_str().unwrap().to_owned();

    // At most 8 streams for one caller: the ninth is refused, one more for another caller is not.
    let mut open = Vec::new();
    for _ in 0..8 {
        let response = open_stream(&h, "/api/tenants/acme/stream", &token).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = h
        .call(Method::GET, "/api/tenants/acme/stream", Some(&token), None)
        .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.raw
    );
    assert!(
        refused.raw.contains("too many live streams"),
        "{}",
        refused.raw
    );
    let operator = open_stream(&h, "/api/tenants/acme/stream", TOKEN).await;
    assert_eq!(operator.status(), StatusCode::OK);
    drop(operator);
    // A closed stream gives its slot back.
    drop(open.pop());
    let again = open_stream(&h, "/api/tenants/acme/stream", &token).await;
    assert_eq!(again.status(), StatusCode::OK);
    drop(open);

    // Revoked: the open stream ends (within the 10 s between checks).
    let revoked = h
        .call(
            Method::DELETE,
            &format!("/api/tenants/acme/tokens/{token_id}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.raw);
    let mut body = again.into_body().into_data_stream();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = body.next().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream of a revoked token still runs after 30 s"
    );
}
