//! Property test (proptest) of the admin API's JSON bodies (docs/security.md, "Fuzzing"):
//! arbitrary JSON — biased towards the request bodies' field names — and arbitrary bytes
//! posted to every route that takes a body (tenant create, knowledge, webhooks and their
//! redelivery, tokens, pause, sends) get a 2xx or a 4xx whose body is `{"error": "…"}`;
//! never a 5xx, never a panic. The node's router runs in-process on SQLite (one node for
//! all cases, with a tenant, so the routes under `/api/tenants/acme` reach their checks).
//! `PROPTEST_CASES` sets the number of cases (256 by default).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use salesboy_testkit::admin::AdminApp;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-admin-token-0123456789abcdef";

/// The routes that read a JSON body, under the tenant `acme` and its customer.
const ROUTES: [&str; 8] = [
    "/api/tenants",
    "/api/tenants/acme/knowledge",
    "/api/tenants/acme/webhooks",
    "/api/tenants/acme/webhooks/0/dead-letters/redeliver",
    "/api/tenants/acme/tokens",
    "/api/tenants/acme/conversations/15551234567/pause",
    "/api/tenants/acme/conversations/15551234567/send",
    "/api/tenants/nobody/knowledge",
];

/// The request bodies' field names (and a few inside them).
const KEYS: [&str; 28] = [
    "id",
    "phone_number_id",
    "access_token",
    "name",
    "system_prompt",
    "llm",
    "llm_monthly_spend_cap_micros",
    "waba_id",
    "title",
    "text",
    "url",
    "kinds",
    "secret",
    "event_id",
    "minutes",
    "template",
    "interactive",
    "image",
    "document",
    "client_ref",
    "language",
    "kind",
    "model",
    "api_key",
    "base_url",
    "buttons",
    "link",
    "body",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "\\PC{0,20}",
            "[a-z0-9]{16,40}",
            "[0-9]{1,40}",
            Just("https://example.com/hook".to_owned()),
            Just("gemini".to_owned()),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
                        1 => "[a-z_]{0,8}",
                    ],
                    inner,
                ),
                0..6,
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: JSON (an object most of the time), or bytes, with or without a JSON content type.
fn any_body() -> impl Strategy<Value = (Vec<u8>, bool)> {
    prop_oneof![
        6 => (any_json(), any::<bool>()).prop_map(|(value, wrap)| {
            let value = match value {
                Value::Object(_) => value,
                other if wrap => json!({ "text": other }),
                other => other,
            };
            (value.to_string().into_bytes(), true)
        }),
        1 => (prop::collection::vec(any::<u8>(), 0..64), any::<bool>()),
    ]
}

async fn app() -> (Router, AdminApp) {
    let app = AdminApp::start(TOKEN, "node-fuzz").await;
    (app.router.clone(), app)
}

/// Posts `body` to `path`: the status and the body's text.
async fn post(app: &Router, path: &str, body: Vec<u8>, json_type: bool) -> (u16, String) {
    let mut request = Request::post(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if json_type {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn arbitrary_bodies_get_a_clear_4xx_never_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, _dir) = runtime.block_on(app());
    let acme = json!({
        "id": "acme",
        "phone_number_id": "106540352242922",
        "access_token": "EAAG-fuzz-token",
        "llm": [],
    });
    let (status, text) = runtime.block_on(post(
        &app,
        "/api/tenants",
        acme.to_string().into_bytes(),
        true,
    ));
    assert_eq!(status, 201, "{text}");
    // Found by schemathesis: an optional body may be `null`, but not an array that serde's
    // derived structs would read as one.
    let tokens = "/api/tenants/acme/tokens";
    let (status, text) = runtime.block_on(post(&app, tokens, b"null".to_vec(), true));
    assert_eq!(status, 201, "{text}");
    let (status, text) = runtime.block_on(post(&app, tokens, b"[null]".to_vec(), true));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("expected a JSON object"), "{text}");

    let strategy = (prop::sample::select(&ROUTES[..]), any_body());
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |(path, (body, json_type))| {
        let (status, text) = runtime.block_on(post(&app, path, body, json_type));
        prop_assert!(status < 500, "{path}: {status} {text}");
        if status >= 400 {
            let answer: Value = serde_json::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!("{path}: {status}, not JSON ({e}): {text}"))
            })?;
            let error = answer["error"].as_str().unwrap_or_default();
            prop_assert!(
                !error.is_empty(),
                "{path}: {status} without an error: {text}"
            );
            prop_assert!(
                !error.contains("EAAG-fuzz-token"),
                "{path}: a secret in {text}"
            );
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
