//! What deployment relies on, run as a process: `salesboy serve` tells systemd
//! (`Type=notify`, `deploy/systemd/salesboy.service`) when it is ready and when it stops
//! (the binary); `salesboy backup` (its function, in-process) copies a running node's SQLite
//! database, and a node started on the copy (with the secrets key) serves its tenants as
//! before.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use salesboy_node::config::Config;
use salesboy_testkit::gateway::WAIT;
use salesboy_testkit::{Db, Gateway, salesboy_binary, webhooks};

/// Environment variables of this process that would configure the child.
fn clean(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("SALESBOY_") && !key.starts_with("SALESBOY_TEST_") {
            command.env_remove(key);
        }
    }
    command.env_remove("NOTIFY_SOCKET")
}

/// The next datagram on `socket`, as text (the socket's read timeout bounds the wait).
fn next_state(socket: &UnixDatagram) -> String {
    let mut buffer = [0_u8; 512];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let binary = salesboy_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut node = clean(&mut Command::new(binary))
        .arg("serve")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("SALESBOY_DATA_DIR", dir.path().join("data"))
        .env("SALESBOY_HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("salesboy serve");
    let ready = next_state(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stopping = next_state(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let exit = node.wait().expect("exit");
    assert!(exit.success(), "a clean stop: {exit:?}");
}

const PHONE: &str = "106540352242923";

/// `salesboy backup PATH` on the database at `database_url` (in-process: the command's own
/// function, as `main` calls it); its error's text.
async fn backup(database_url: &str, path: &std::path::Path) -> Result<(), String> {
    let config = Config {
        database_url: Some(database_url.to_owned()),
        ..Config::default()
    };
    salesboy_node::cli::backup::backup(&config, path)
        .await
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn backup_copies_a_running_nodes_database_and_a_node_restores_from_it() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    gateway
        .add_knowledge(&tenant, "faq", &["We open at 9am every day."])
        .await;
    let body = webhooks::text_message(PHONE, "16505550100", "wamid.backup1", "when do you open?");
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    gateway.wait_for_sent(1, "answered before the backup").await;
    // The answer recorded as sent, so the copy holds it so.
    gateway.settled(&tenant, "16505550100").await;

    // Backed up while the node runs.
    let kept = tempfile::tempdir().expect("temp dir");
    let copy = kept.path().join("salesboy-backup.db");
    let database_url = gateway.config.effective_database_url();
    backup(&database_url, &copy).await.expect("backed up");
    let mode = std::fs::metadata(&copy).expect("copy").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the copy is private");
    // Never over an existing file; never of PostgreSQL.
    let again = backup(&database_url, &copy).await.expect_err("exists");
    assert!(again.contains("exists"), "{again}");
    let postgres = backup(
        "postgres://u:secret@127.0.0.1:1/db",
        &kept.path().join("pg.db"),
    )
    .await
    .expect_err("postgres");
    assert!(
        postgres.contains("pg_dump") && !postgres.contains("secret"),
        "{postgres}"
    );

    // Restore: a node on the copy, with the original's secrets key, reads the tenant's
    // access token (decrypted) and has the chat, its answer recorded as sent.
    let key = kept.path().join("secrets.key");
    std::fs::copy(gateway.config.data_dir.join("secrets.key"), &key).expect("key");
    gateway.node.stop().await;
    let restored = Gateway::start(Db::Sqlite, |c| {
        c.database_url = Some(format!("sqlite://{}", copy.display()));
        c.secrets_key_file = Some(key.clone());
    })
    .await;
    // (Asking again would have the new fake Cloud API hand out a wamid the copy already
    // holds: fakes number their wamids from 1.)
    let saved = restored
        .store()
        .tenant(&tenant)
        .await
        .expect("tenant")
        .expect("restored");
    assert_eq!(saved.numbers[0].access_token.expose(), "token-acme");
    let messages = restored.settled(&tenant, "16505550100").await;
    assert_eq!(
        messages.len(),
        2,
        "the question and its answer: {messages:?}"
    );
    assert!(
        messages
            .iter()
            .all(|m| m.status.is_none() || m.wamid.is_some())
    );
    restored.node.stop().await;
}

#[test]
fn the_environment_template_lists_every_setting() {
    let template = std::fs::read_to_string(
        salesboy_testkit::workspace_root().join("deploy/systemd/salesboy.env.example"),
    )
    .expect("deploy/systemd/salesboy.env.example");
    for key in salesboy_node::config::KEYS {
        let variable = format!("SALESBOY_{}=", key.to_uppercase());
        assert!(
            template
                .lines()
                .any(|line| line.trim_start_matches('#').starts_with(&variable)),
            "{variable} missing from the template"
        );
    }
}
