//! The examples work: each runs as a user would run it, against a real node on its own
//! nats-server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use salesboy_node::bus::{Bus, NatsBus, NatsBusOptions};
use salesboy_testkit::gateway::ADMIN_TOKEN;
use salesboy_testkit::{Db, Gateway, NatsServer, webhooks};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const PHONE: &str = "106540352242922";

async fn node() -> (Gateway, NatsServer) {
    let server = NatsServer::start().expect("nats-server");
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&server.url(), NatsBusOptions::default())
            .await
            .expect("connect the node"),
    );
    let gateway = Gateway::start_on(Db::Sqlite, Some(bus), |c| c.failure_timeout_ms = 2_000).await;
    gateway.add_tenant("acme", PHONE, None).await;
    (gateway, server)
}

/// Runs the commander to its end (off the runtime's worker: the node answers meanwhile).
fn commander(nats: &str, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_commander"))
            .args(args)
            .env("NATS_URL", nats)
            .output()
            .expect("run commander")
    })
}

/// A running example whose stdout lines arrive on a channel; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for a line containing `needle` (off the runtime's worker).
    fn wait_for(&self, needle: &str) -> String {
        tokio::task::block_in_place(|| self.wait_blocking(needle))
    }

    fn wait_blocking(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commander_sends_commands_and_reports_errors() {
    let (gateway, server) = node().await;
    let listed = commander(&server.url(), &["tenant.list"]);
    assert!(listed.status.success(), "{listed:?}");
    let tenants: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(tenants[0]["id"], "acme", "{tenants}");
    let missing = commander(&server.url(), &["t", "nobody", "tenant.get"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("404 unknown_tenant"), "{stderr}");
    gateway.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_and_the_webhook_receiver_see_a_message_arrive() {
    let (gateway, server) = node().await;
    let mut consumer = Command::new(env!("CARGO_BIN_EXE_consumer"));
    consumer
        .args(["acme", "example"])
        .env("NATS_URL", server.url());
    let consumer = Running::start(consumer);

    let port = salesboy_testkit::free_port().unwrap();
    let secret = "whsec_example_secret_0123456789";
    let mut receiver = Command::new(env!("CARGO_BIN_EXE_webhook_receiver"));
    receiver
        .arg(format!("127.0.0.1:{port}"))
        .env("WEBHOOK_SECRET", secret);
    let receiver = Running::start(receiver);
    let response = gateway
        .http
        .post(format!("{}/api/tenants/acme/webhooks", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/events"), "secret": secret}))
        .send()
        .await
        .expect("add webhook");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);

    let body = webhooks::text_message(PHONE, "16505550100", "wamid.example.1", "hello");
    assert_eq!(gateway.post_webhook(&body).await, reqwest::StatusCode::OK);
    let line = consumer.wait_for("message_received");
    assert!(line.contains("chat=16505550100"), "{line}");
    let line = receiver.wait_for("message_received");
    assert!(line.contains("wamid.example.1"), "{line}");
    gateway.node.stop().await;
}
