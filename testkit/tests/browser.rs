//! The browser driver against a real headless Chromium: a small page with a form, a
//! delayed text change, a `confirm()` dialog and a console error. Needs Debian's
//! `chromium` and `chromium-driver`; fails (never skips) without them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use salesboy_testkit::Browser;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

const PAGE: &str = r#"<!doctype html>
<html>
<head><title>smoke</title><link rel="icon" href="data:,"></head>
<body>
<form id="form" onsubmit="return false">
  <input id="name" name="name" value="draft">
  <button id="greet" type="button">Greet</button>
</form>
<p id="greeting">waiting</p>
<button id="delete" type="button">Delete</button>
<p id="status">kept</p>
<p id="hidden" style="display: none">hidden</p>
<script>
  console.error("x");
  document.getElementById("greet").addEventListener("click", () => {
    const name = document.getElementById("name").value;
    setTimeout(() => {
      document.getElementById("greeting").textContent = "Hello, " + name;
    }, 150);
  });
  document.getElementById("delete").addEventListener("click", () => {
    if (confirm("Delete it?")) {
      document.getElementById("status").textContent = "deleted";
    }
  });
</script>
</body>
</html>"#;

/// Serves [`PAGE`] at `/` on a free port: its URL.
async fn serve_page() -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = Router::new().route("/", get(|| async { Html(PAGE) }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn drives_a_page_in_headless_chromium() {
    let url = serve_page().await;
    let browser = Browser::start().await.expect("start the browser");
    browser.set_window_size(1024, 768).await.expect("resize");
    browser.goto(&url).await.expect("goto");
    assert_eq!(browser.current_url().await.expect("url"), url);

    // A form: clear, type, read back what was typed (the markup keeps its attribute).
    let name = browser.wait_for("#name", WAIT).await.expect("the input");
    name.clear().await.expect("clear");
    name.send_keys("Ada").await.expect("type");
    assert_eq!(name.property("value").await.expect("value"), json!("Ada"));
    assert_eq!(
        name.attribute("value").await.expect("value").as_deref(),
        Some("draft")
    );
    assert_eq!(name.attribute("data-none").await.expect("attribute"), None);

    // A click whose effect comes later.
    browser
        .find("#greet")
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let greeting = browser
        .wait_for_text("#greeting", "Ada", WAIT)
        .await
        .expect("the greeting");
    assert_eq!(greeting, "Hello, Ada");

    // A wait that cannot succeed says what it saw.
    let error = browser
        .wait_for_text("#status", "never", Duration::from_millis(200))
        .await
        .expect_err("no such text");
    assert!(error.contains("\"kept\""), "{error}");
    let error = browser
        .wait_for("#hidden", Duration::from_millis(200))
        .await
        .expect_err("hidden");
    assert!(error.contains("not displayed"), "{error}");
    let error = browser.find("#missing").await.expect_err("no such element");
    assert!(error.contains("no such element"), "{error}");

    // A confirm() dialog.
    browser
        .find("#delete")
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let question = browser.accept_alert().await.expect("accept");
    assert_eq!(question, "Delete it?");
    browser
        .wait_for_text("#status", "deleted", WAIT)
        .await
        .expect("deleted");

    // Scripts, element lists, elements as arguments.
    assert_eq!(browser.find_all("button").await.expect("buttons").len(), 2);
    assert!(
        !browser
            .find("#hidden")
            .await
            .expect("hidden")
            .is_displayed()
            .await
            .expect("displayed")
    );
    let sum = browser
        .execute("return arguments[0] + 1;", &[json!(41)])
        .await
        .expect("execute");
    assert_eq!(sum, json!(42));
    let status = browser.find("#status").await.expect("status");
    let id = browser
        .execute("return arguments[0].id;", &[status.to_arg()])
        .await
        .expect("execute");
    assert_eq!(id, json!("status"));
    browser
        .wait_until("document.title === 'smoke'", WAIT)
        .await
        .expect("title");

    // A screenshot is a PNG file.
    let path = browser
        .screenshot("browser-smoke.png")
        .await
        .expect("screenshot");
    let png = std::fs::read(&path).expect("read the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", path.display());

    // The console's errors, each handed out once.
    let errors = browser.console_errors().await.expect("console");
    assert!(
        errors.iter().any(|error| error.ends_with("\"x\"")),
        "{errors:?}"
    );
    assert_eq!(
        browser.console_errors().await.expect("console"),
        Vec::<String>::new()
    );

    browser.quit().await.expect("quit");
}
