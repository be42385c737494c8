//! The dashboard in a real browser: Debian's headless Chromium, driven through ChromeDriver,
//! against three real nodes (`salesboy serve`) on NATS and PostgreSQL with the fake Cloud API
//! and LLM. Screenshots go to `target/test-artifacts/dashboard/`.

use std::time::{Duration, Instant};

use salesboy_protocol::{PhoneNumberId, TenantId};
use salesboy_testkit::browser::Browser;
use salesboy_testkit::{ClusterSandbox, Db, eventually, webhooks};
use serde_json::{Value, json};

/// How long anything the page shows may take to appear.
const WAIT: Duration = Duration::from_secs(30);
/// The nodes' failure timeout: a killed node is dead after it.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(3);
const CUSTOMER: &str = "16505550111";

async fn sandbox() -> (ClusterSandbox, Vec<(TenantId, PhoneNumberId)>) {
    salesboy_node::run::install_crypto_provider();
    let sandbox = ClusterSandbox::builder()
        .nodes(3)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(Db::Postgres)
        .env("SALESBOY_DEBOUNCE_MS", "0")
        .env(
            "SALESBOY_FAILURE_TIMEOUT_MS",
            FAILURE_TIMEOUT.as_millis().to_string(),
        )
        .start()
        .await
        .expect("cluster starts");
    let tenants = sandbox
        .seed_tenants(2, "We open at 9am every day.")
        .await
        .expect("seed");
    (sandbox, tenants)
}

/// Posts a customer's text to `tenant`'s number through node `node` until a node accepts it.
async fn customer_says(
    sandbox: &ClusterSandbox,
    node: usize,
    phone: &PhoneNumberId,
    wamid: &str,
    text: &str,
) {
    let body = webhooks::text_message(phone.as_str(), CUSTOMER, wamid, text);
    let deadline = Instant::now() + WAIT;
    loop {
        match sandbox.post_webhook(node, &body).await {
            Ok(status) if status.is_success() => return,
            other => assert!(Instant::now() < deadline, "webhook not accepted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bot replies (not the owner's messages) sent to the customer from `phone`.
fn bot_replies(sandbox: &ClusterSandbox, phone: &PhoneNumberId, owner_text: &str) -> usize {
    sandbox
        .whatsapp()
        .sent_to(CUSTOMER)
        .iter()
        .filter(|m| m.phone_number_id == phone.as_str() && m.body != owner_text)
        .count()
}

/// Logs in with `token`, from the keyboard, and waits for the view its role opens.
async fn log_in(browser: &Browser, token: &str, opens: &str) {
    let field = browser
        .wait_for("#token", WAIT)
        .await
        .expect("the login form");
    // From the keyboard: the token, then Enter (WebDriver's key U+E007) submits the form.
    field
        .send_keys(&format!("{token}\u{E007}"))
        .await
        .expect("token typed");
    browser.wait_for(opens, WAIT).await.expect("logged in");
}

/// Clicks the element `css` selects once it is shown. The live view draws its rows again
/// every second: an element found just before a redraw is gone (stale), so it is found
/// again, until [`WAIT`] is over.
async fn click(browser: &Browser, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let element = browser
            .wait_for(css, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match element.click().await {
            Ok(()) => return,
            Err(e) if e.contains("stale element") && tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// What the page holds (its view, tenant, chat, whether the chat is shown, the transcript's
/// markup), for a failure's message.
async fn page_state(browser: &Browser) -> String {
    let state = browser
        .execute(
            "return JSON.stringify({ view: app.view, tenant: app.tenant, chat: app.chat, \
             gen: app.gen, transcript_seq: app.transcriptSeq, \
             chat_hidden: document.getElementById('chat').hidden, \
             conversations: document.getElementById('conversations').outerHTML, \
             transcript: document.getElementById('transcript').outerHTML });",
            &[],
        )
        .await;
    match state {
        Ok(state) => state.as_str().unwrap_or_default().to_owned(),
        Err(error) => format!("unreadable: {error}"),
    }
}

/// What the page shows as text, and its markup, for the secrets check.
async fn page_text(browser: &Browser) -> String {
    let shown = browser
        .execute(
            "return document.documentElement.outerHTML + document.body.innerText;",
            &[],
        )
        .await
        .expect("page read");
    shown.as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_and_steers_the_cluster_from_the_page() {
    let (sandbox, tenants) = sandbox().await;
    let (tenant, phone) = &tenants[0];
    let (other_tenant, other_phone) = &tenants[1];
    let base = sandbox.http_base(0).unwrap();
    let shots = salesboy_testkit::browser::artifacts_dir().join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();

    // A first customer message, answered by the bot.
    customer_says(&sandbox, 0, phone, "wamid.dash.1", "When do you open?").await;
    // The bot's first reply.
    eventually(WAIT, || async {
        (bot_replies(&sandbox, phone, "") == 1).then_some(())
    })
    .await;

    let browser = Browser::start().await.expect("chromium starts");
    browser.set_window_size(1280, 900).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    log_in(&browser, sandbox.admin_token(), "#nodes tbody tr").await;

    // Three nodes, alive.
    browser
        .wait_until(
            "document.querySelectorAll('#nodes td.state-alive').length === 3",
            WAIT,
        )
        .await
        .expect("three live nodes shown");
    // The answering node's monitoring figures: CPU over the last reading, its database.
    browser
        .wait_until(
            "document.querySelector('#node-figures [data-figure=\"cpu\"] dd')?.textContent.endsWith(' %') \
             && document.querySelector('#node-figures [data-figure=\"database\"] dd')?.textContent.endsWith('B')",
            WAIT,
        )
        .await
        .expect("the node's CPU and database size shown");

    // A reply while the page watches: the cluster's traffic, and its gateway and LLM time.
    customer_says(&sandbox, 1, other_phone, "wamid.dash.0", "Do you deliver?").await;
    browser
        .wait_until(
            "/^\\d+ \\/ \\d+ ms$/.test(document.querySelector('#figures [data-figure=\"split\"] dd')?.textContent ?? '')",
            WAIT,
        )
        .await
        .expect("the reply's gateway and LLM time shown");
    // The nodes that handled it show their error rate over the last minute: none failed.
    browser
        .wait_until(
            "[...document.querySelectorAll('#nodes td.errors')].some(cell => cell.textContent === '0.0 %')",
            WAIT,
        )
        .await
        .expect("the nodes' error rates shown");
    browser
        .screenshot(&shots.join("1-cluster.png"))
        .await
        .unwrap();

    // A node dies: the page says so within the failure timeout and a few seconds.
    sandbox.kill(2).await.unwrap();
    let killed = Instant::now();
    browser
        .wait_until(
            "document.querySelector('#nodes tr[data-node=\"node-2\"] td.state')?.textContent === 'dead'",
            FAILURE_TIMEOUT + Duration::from_secs(10),
        )
        .await
        .expect("the killed node shown dead");
    eprintln!("node-2 shown dead {:?} after the kill", killed.elapsed());
    browser
        .screenshot(&shots.join("2-node-dead.png"))
        .await
        .unwrap();

    // The tenant's chat: pause the bot from the page.
    click(&browser, "#nav-tenants").await;
    let selector = format!("#tenant-list button[data-tenant=\"{tenant}\"]");
    click(&browser, &selector).await;
    let selector = format!("#conversations button[data-chat=\"{CUSTOMER}\"]");
    click(&browser, &selector).await;
    if let Err(error) = browser
        .wait_for_text("#transcript", "When do you open?", WAIT)
        .await
    {
        panic!(
            "the transcript shows the customer's message: {error}\npage state: {}",
            page_state(&browser).await
        );
    }
    browser
        .wait_for_text("#tenant-placement", "node-", WAIT)
        .await
        .expect("where the tenant runs");
    // Why it is there: the decision that put it on its node, among the live nodes (three, or
    // two when it was placed after the kill).
    let why = browser
        .wait_for_text("#tenant-why", "Placed on node-", WAIT)
        .await
        .expect("why the tenant is where it is");
    assert!(
        why.contains("because it was active nowhere") || why.contains("because its node died"),
        "{why}"
    );
    browser
        .wait_until(
            "document.querySelectorAll('#why-candidates tbody tr').length >= 2 \
             && document.querySelectorAll('#why-candidates tr.chosen').length === 1",
            WAIT,
        )
        .await
        .expect("the candidates the decision chose among");
    // Its LLM provider's circuit and budget (the fake LLM's), or where to see them.
    let providers = browser
        .wait_for_text("#tenant-providers", " ", WAIT)
        .await
        .expect("the providers' budgets or where they are shown");
    assert!(
        providers.contains("openai (gpt-4o-mini): ready; requests ")
            || providers.contains("Shown by the node that runs it (node-"),
        "{providers}"
    );
    // What moving it would change: the one other live node.
    browser
        .wait_for_text("#tenant-moves", "to node-1: node-1 ", WAIT)
        .await
        .expect("the move to the other live node explained");
    click(&browser, "#pause").await;
    browser
        .wait_for_text("#chat-state", "Bot paused", WAIT)
        .await
        .expect("the chat shown paused");

    // The next customer message reaches the page (live) but gets no bot reply.
    customer_says(&sandbox, 1, phone, "wamid.dash.2", "Are you there?").await;
    browser
        .wait_for_text("#transcript", "Are you there?", WAIT)
        .await
        .expect("the paused chat's new message shown live");

    // The owner answers from the page: it reaches the fake Cloud API.
    let owner_text = "Hi, this is the owner: we open at 9.";
    browser
        .find("#reply-text")
        .await
        .unwrap()
        .send_keys(owner_text)
        .await
        .unwrap();
    click(&browser, "#reply-send").await;
    // The owner's reply at the Cloud API.
    eventually(WAIT, || async {
        sandbox
            .whatsapp()
            .sent_to(CUSTOMER)
            .iter()
            .any(|m| m.body == owner_text && m.phone_number_id == phone.as_str())
            .then_some(())
    })
    .await;
    browser
        .wait_for_text("#transcript", owner_text, WAIT)
        .await
        .expect("the owner's reply in the transcript");
    assert_eq!(
        bot_replies(&sandbox, phone, owner_text),
        1,
        "the bot answered in a paused chat: {:?}",
        sandbox.whatsapp().sent_to(CUSTOMER)
    );
    let text = browser
        .execute("return document.body.innerText;", &[])
        .await
        .unwrap();
    let text = text.as_str().unwrap_or_default();
    assert!(
        !text.contains("undefined") && !text.contains("NaN"),
        "the page shows a value it could not read: {text}"
    );
    // Every field has a label and every button a name (what a screen reader announces).
    let labelled = browser
        .execute(
            "return [...document.querySelectorAll('input, textarea, select')] \
                    .every(field => field.labels && field.labels.length > 0) \
                && [...document.querySelectorAll('button')] \
                    .every(button => (button.getAttribute('aria-label') || button.textContent).trim().length > 0);",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        labelled,
        Value::Bool(true),
        "a field without a label or a button without a name"
    );
    browser.screenshot(&shots.join("3-chat.png")).await.unwrap();

    // A phone-sized screen: nothing wider than the screen but the tables' own scroll.
    browser.set_window_size(390, 844).await.unwrap();
    let fits = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        fits,
        Value::Bool(true),
        "the page scrolls sideways on a phone"
    );
    browser
        .screenshot(&shots.join("4-phone.png"))
        .await
        .unwrap();

    // Drain node-1 from the page (after confirming): it hands its tenants over and leaves.
    browser.set_window_size(1280, 900).await.unwrap();
    click(&browser, "#nav-cluster").await;
    click(
        &browser,
        "#nodes button.drain[data-node=\"node-1\"]:not([disabled])",
    )
    .await;
    browser
        .accept_alert()
        .await
        .expect("the drain asks for confirmation");
    browser
        .wait_until(
            "(document.querySelector('#nodes tr[data-node=\"node-1\"] td.state')?.textContent ?? 'dead') === 'dead'",
            WAIT,
        )
        .await
        .expect("the drained node gone from the cluster");
    browser
        .wait_until(
            "[...document.querySelectorAll('#timeline li')].some(li => li.textContent.includes('drain of node-1 requested'))",
            WAIT,
        )
        .await
        .expect("the drain on the timeline");
    browser
        .screenshot(&shots.join("5-drained.png"))
        .await
        .unwrap();

    // No secret on the page: the admin token, the tenants' access tokens, the LLM key.
    let shown = page_text(&browser).await;
    for secret in [
        sandbox.admin_token(),
        "token-seed-00000",
        "token-seed-00001",
        "sk-sandbox",
    ] {
        assert!(!shown.contains(secret), "the page shows a secret");
    }

    // A tenant's token: its own tenant only.
    let made: Value = sandbox
        .http()
        .post(format!("{base}/api/tenants/{other_tenant}/tokens"))
        .bearer_auth(sandbox.admin_token())
        .json(&json!({"name": "dashboard"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant_token = made["token"].as_str().expect("a tenant token").to_owned();
    click(&browser, "#logout").await;
    log_in(&browser, &tenant_token, "#tenant-placement dd").await;
    browser
        .wait_for_text("#tenant-title", other_tenant.as_str(), WAIT)
        .await
        .expect("the tenant's own view");
    browser
        .wait_for_text("#tenant-why", "Placed on node-", WAIT)
        .await
        .expect("why it is where it is, without the other nodes' load");
    let hidden = browser
        .execute(
            "return document.getElementById('nav-tenants').hidden \
                && document.getElementById('nav-cluster').hidden \
                && document.getElementById('cluster-view').hidden \
                && document.getElementById('moves').hidden \
                && document.getElementById('why-candidates').hidden;",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(hidden, Value::Bool(true), "a tenant sees the cluster");
    let shown = page_text(&browser).await;
    assert!(
        !shown.contains(tenant.as_str()),
        "a tenant sees another tenant"
    );
    assert!(
        !shown.contains(&tenant_token),
        "the page shows the tenant's token"
    );
    browser
        .screenshot(&shots.join("6-tenant.png"))
        .await
        .unwrap();

    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
