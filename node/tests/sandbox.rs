//! The multi-process test harness itself: [`TcpProxy`] forwards, cuts, blackholes and
//! restores; [`ClusterSandbox`] runs real `salesboy serve` processes that answer webhooks,
//! die on SIGKILL, come back on restart and exit cleanly on SIGTERM.

use std::time::Duration;

use salesboy_actors::store::prelude::*;
use salesboy_node::http::health::Health;
use salesboy_protocol::ChatId;
use salesboy_testkit::{
    ClusterSandbox, Db, FAKE_LLM_MARKER, NatsServer, ProxyMode, TcpProxy, webhooks,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(20);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);
/// The knowledge passage of seeded tenants.
const PASSAGE: &str = "We ship worldwide in 3 days.";

/// An upstream that echoes every byte back; its address.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Writes `message` and reads exactly as many bytes back, within [`WAIT`].
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.expect("write");
    read_exactly(stream, message.len(), WAIT)
        .await
        .expect("an answer within the wait")
}

/// Reads exactly `len` bytes; `None` if they do not all arrive within `timeout`.
async fn read_exactly(stream: &mut TcpStream, len: usize, timeout: Duration) -> Option<Vec<u8>> {
    let mut buffer = vec![0_u8; len];
    match tokio::time::timeout(timeout, stream.read_exact(&mut buffer)).await {
        Ok(Ok(_)) => Some(buffer),
        Ok(Err(error)) => panic!("the connection failed: {error}"),
        Err(_) => None,
    }
}

/// A proxy in front of an echo server, and a connection through it that works.
async fn proxy_with_open_connection() -> (TcpProxy, TcpStream) {
    let proxy = TcpProxy::start(echo_server().await).await.expect("proxy");
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut open, b"before").await, b"before");
    (proxy, open)
}

/// A node's detailed health (`/api/health`), at `http_base`.
async fn health(sandbox: &ClusterSandbox, http_base: &str) -> Health {
    sandbox
        .http()
        .get(format!("{http_base}/api/health"))
        .bearer_auth(sandbox.admin_token())
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health body")
}

/// Posts `customer`'s "Do you ship abroad?" (as `wamid`) to `number` through node 0, and
/// waits for the first text the fake Cloud API receives.
async fn ask_node_0(
    sandbox: &ClusterSandbox,
    number: &str,
    customer: &str,
    wamid: &str,
) -> Vec<salesboy_testkit::SentMessage> {
    let body = webhooks::text_message(number, customer, wamid, "Do you ship abroad?");
    assert_eq!(
        sandbox.post_webhook(0, &body).await.expect("post"),
        reqwest::StatusCode::OK
    );
    sandbox
        .whatsapp()
        .wait_for_sent(1, WAIT)
        .await
        .expect("a reply")
}

/// Whether the peer closed `stream` (a read gives 0 bytes or an error) within [`WAIT`].
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Polls `probe` until it holds, panicking with `what` after [`WAIT`].
async fn until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !probe() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_proxy_forwards_both_ways_and_counts_connections() {
    let proxy = TcpProxy::start(echo_server().await).await.expect("proxy");
    assert_eq!(proxy.mode(), ProxyMode::Forwarding);
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(
        round_trip(&mut a, b"hello upstream").await,
        b"hello upstream"
    );
    // More than one buffer's worth, so the copy loops.
    let big: Vec<u8> = (0..100_000_u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut b, &big).await, big);
    assert_eq!(proxy.connections(), 2);

    drop(a);
    until("the closed connection is forgotten", || {
        proxy.connections() == 1
    })
    .await;
    assert_eq!(round_trip(&mut b, b"still here").await, b"still here");
}

#[tokio::test]
async fn a_cut_resets_open_connections_and_new_ones_until_restored() {
    let (proxy, mut open) = proxy_with_open_connection().await;

    proxy.cut();
    assert_eq!(proxy.mode(), ProxyMode::Cut);
    assert!(
        closed_by_peer(&mut open).await,
        "an open connection is closed by the cut"
    );
    // A new connection may complete its handshake, but it is reset at once.
    if let Ok(mut refused) = TcpStream::connect(proxy.addr()).await {
        assert!(
            closed_by_peer(&mut refused).await,
            "a new connection is refused while cut"
        );
    }
    until("no connection is open while cut", || {
        proxy.connections() == 0
    })
    .await;

    proxy.restore();
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut again, b"after").await, b"after");
}

#[tokio::test]
async fn a_blackhole_holds_connections_silently_and_a_restore_resumes_them() {
    let (proxy, mut open) = proxy_with_open_connection().await;

    proxy.blackhole();
    assert_eq!(proxy.mode(), ProxyMode::Blackholed);
    // The open connection goes silent: nothing comes back, nothing is closed.
    open.write_all(b"lost?").await.expect("write");
    assert_eq!(read_exactly(&mut open, 5, QUIET).await, None);
    // A new connection is accepted and held.
    let mut held = TcpStream::connect(proxy.addr())
        .await
        .expect("connect while blackholed");
    held.write_all(b"held").await.expect("write");
    assert_eq!(read_exactly(&mut held, 4, QUIET).await, None);
    until("both connections are held open", || {
        proxy.connections() == 2
    })
    .await;

    proxy.restore();
    // What was written during the blackhole arrives now, as after a healed partition.
    assert_eq!(
        read_exactly(&mut open, 5, WAIT).await.as_deref(),
        Some(&b"lost?"[..])
    );
    assert_eq!(
        read_exactly(&mut held, 4, WAIT).await.as_deref(),
        Some(&b"held"[..])
    );
    let mut new = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut new, b"after").await, b"after");
    assert_eq!(proxy.connections(), 3);
}

#[tokio::test]
async fn a_nats_client_through_the_proxy_stalls_while_blackholed_and_recovers() {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .expect("join")
        .expect("nats-server");
    let upstream = format!("127.0.0.1:{}", nats.port()).parse().expect("addr");
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(QUIET))
        .connect(format!("nats://{}", proxy.addr()))
        .await
        .expect("connect through the proxy");
    let direct = async_nats::connect(nats.url()).await.expect("direct");
    let mut service = direct.subscribe("sandbox.echo").await.expect("subscribe");
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(message) = service.next().await {
            if let Some(reply) = message.reply {
                let _ = direct.publish(reply, message.payload).await;
            }
        }
    });

    // async-nats's flush only writes the socket: until the server has processed the
    // subscription, a request gets "no responders". Ask until it is in place.
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        match client.request("sandbox.echo", "one".into()).await {
            Ok(answer) => break answer,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "a request through the proxy: {error}"
            ),
        }
    };
    assert_eq!(answer.payload.as_ref(), b"one");

    proxy.blackhole();
    let stalled = client.request("sandbox.echo", "two".into()).await;
    assert!(stalled.is_err(), "a partitioned request times out");

    proxy.restore();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.request("sandbox.echo", "three".into()).await {
            Ok(answer) => {
                assert_eq!(answer.payload.as_ref(), b"three");
                break;
            }
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "no answer after the heal: {error}"
            ),
        }
    }
}

#[tokio::test]
async fn the_builder_refuses_what_it_cannot_honour_before_starting_anything() {
    let binary = env!("CARGO_BIN_EXE_salesboy");
    // (the builder, why it must refuse, what the refusal says)
    let refused = [
        (
            ClusterSandbox::builder()
                .nodes(2)
                .database(Db::Sqlite)
                .binary(binary),
            "two nodes cannot share sqlite",
            "sqlite sandbox has one node",
        ),
        (
            ClusterSandbox::builder()
                .binary(binary)
                .env("SALESBOY_TEST_POSTGRES_URL", "postgres://elsewhere"),
            "test variables never reach a node",
            "SALESBOY_TEST_POSTGRES_URL",
        ),
        (
            ClusterSandbox::builder()
                .binary(binary)
                .env("SALESBOY_NODE_ID", "mine"),
            "the sandbox names its nodes",
            "set by the sandbox",
        ),
        (ClusterSandbox::builder(), "no binary", "no salesboy binary"),
    ];
    for (builder, why, says) in refused {
        let error = builder.start().await.expect_err(why);
        assert!(error.contains(says), "{error}");
    }
}

#[tokio::test]
async fn two_nodes_share_the_database_and_a_webhook_gets_exactly_one_reply() {
    let sandbox = ClusterSandbox::builder()
        .nodes(2)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(Db::Postgres)
        .env("SALESBOY_DEBOUNCE_MS", "20")
        .start()
        .await
        .expect("sandbox");
    let nodes = sandbox.nodes();
    assert_eq!(nodes.len(), 2);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.index, i);
        assert_eq!(node.id, format!("node-{i}"));
        assert!(node.alive && node.pid.is_some(), "{node:?}");
        let health = health(&sandbox, &node.http_base).await;
        assert_eq!(health.node_id, node.id);
        assert_eq!(health.database, "ok");
    }
    assert_ne!(nodes[0].http_base, nodes[1].http_base);

    let tenants = sandbox.seed_tenants(50, PASSAGE).await.expect("seed");
    assert_eq!(tenants.len(), 50);
    let listed = sandbox.store().list_tenants().await.expect("tenants");
    assert_eq!(listed.len(), 50);
    let (tenant, number) = &tenants[0];
    let route = sandbox
        .store()
        .tenant_by_phone_number(number)
        .await
        .expect("route")
        .expect("the number routes to its tenant");
    assert_eq!(&route.tenant, tenant);
    assert_eq!(
        sandbox.store().current_epoch(tenant).await.expect("epoch"),
        Some(0)
    );
    assert_eq!(
        sandbox
            .store()
            .knowledge_version(tenant)
            .await
            .expect("version"),
        1
    );
    let hits = sandbox
        .store()
        .search_knowledge(tenant, "do you ship worldwide", 3)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].text, PASSAGE);
    let more = sandbox.seed_tenants(2, PASSAGE).await.expect("seed more");
    assert_eq!(more[0].0.as_str(), "seed-00050", "numbering continues");

    let customer = "16505550100";
    let sent = ask_node_0(&sandbox, number.as_str(), customer, "wamid.sandbox.1").await;
    // Settled: the message is answered and the reply sent, so no second reply can follow.
    let chat = ChatId::new(customer).expect("chat");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let unanswered = sandbox
            .store()
            .unanswered_inbound_in_chat(tenant, &chat)
            .await
            .expect("unanswered");
        let unsent = sandbox
            .store()
            .unsent_replies(tenant)
            .await
            .expect("unsent");
        if unanswered.is_empty() && unsent.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sandbox.whatsapp().sent_count(),
        1,
        "exactly one reply: {sent:?}"
    );
    let reply = &sandbox.whatsapp().sent()[0];
    assert_eq!(reply.to, customer);
    assert_eq!(reply.phone_number_id, number.as_str());
    assert_eq!(reply.token, format!("token-{tenant}"));
    assert!(
        reply.body.starts_with(FAKE_LLM_MARKER) && reply.body.contains(PASSAGE),
        "the fake llm answered from the seeded passage: {}",
        reply.body
    );
    assert_eq!(sandbox.llm().requests().openai, 1);
}

#[tokio::test]
async fn nodes_die_on_sigkill_come_back_on_restart_and_exit_cleanly_on_sigterm() {
    let sandbox = ClusterSandbox::builder()
        .nodes(2)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .start()
        .await
        .expect("sandbox");
    let before = sandbox.nodes();
    let old_pid = before[1].pid.expect("node-1 runs");

    sandbox.kill(1).await.expect("kill");
    let killed = &sandbox.nodes()[1];
    assert!(!killed.alive && killed.pid.is_none(), "{killed:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{old_pid}")).exists(),
        "the process is gone"
    );
    let failed = tokio::time::timeout(
        Duration::from_secs(2),
        sandbox.wait_healthy(1, Duration::from_secs(30)),
    )
    .await
    .expect("a dead node fails at once, not after the timeout");
    let error = failed.expect_err("a killed node is not healthy");
    assert!(error.contains("node-1 is not running"), "{error}");
    sandbox
        .wait_healthy(0, WAIT)
        .await
        .expect("node-0 is unaffected");

    sandbox.restart(1).await.expect("restart");
    sandbox.wait_healthy(1, WAIT).await.expect("healthy again");
    let restarted = &sandbox.nodes()[1];
    assert!(restarted.alive);
    assert_ne!(restarted.pid, Some(old_pid));
    assert_eq!(restarted.http_base, before[1].http_base, "same port");
    let health = health(&sandbox, &restarted.http_base).await;
    assert_eq!(health.node_id, "node-1", "same id");
    let log = std::fs::read_to_string(sandbox.log_path(1).expect("log")).expect("read log");
    assert!(log.contains("--- sandbox: start 1 of node-1 ---"), "{log}");
    assert!(log.contains("--- sandbox: start 2 of node-1 ---"), "{log}");
    assert!(
        sandbox.node_log_tail(1, 50).contains("node ready"),
        "the tail shows the restarted node's log"
    );

    sandbox.terminate(0).expect("sigterm");
    let status = sandbox
        .wait_exit(0, WAIT)
        .await
        .expect("node-0 exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "a graceful exit: {status}");
    let stopped = &sandbox.nodes()[0];
    assert!(!stopped.alive);
    assert_eq!(stopped.exit, Some(status));
    assert!(sandbox.node_log_tail(0, 20).contains("stopped"));
    sandbox
        .wait_healthy(1, WAIT)
        .await
        .expect("node-1 still up");
}

#[tokio::test]
async fn a_single_node_on_sqlite_answers_seeded_tenants() {
    let sandbox = ClusterSandbox::builder()
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(Db::Sqlite)
        .env("SALESBOY_DEBOUNCE_MS", "20")
        .start()
        .await
        .expect("sandbox");
    assert!(sandbox.database_url().starts_with("sqlite://"));
    assert_eq!(sandbox.node_count(), 1);
    let error = sandbox.add_node().await.expect_err("sqlite: one node");
    assert!(error.contains("one node"), "{error}");

    let tenants = sandbox.seed_tenants(3, PASSAGE).await.expect("seed");
    let hits = sandbox
        .store()
        .search_knowledge(&tenants[2].0, "worldwide shipping", 3)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1, "the sqlite full-text index has the passage");
    let number = tenants[2].1.as_str();
    let sent = ask_node_0(&sandbox, number, "16505550111", "wamid.sandbox.sqlite").await;
    assert_eq!(sent[0].phone_number_id, tenants[2].1.as_str());
    assert!(sent[0].body.contains(PASSAGE), "{}", sent[0].body);
}
