//! The gateway on a three-server NATS cluster (JetStream clustering on loopback): a node
//! given several server URLs, replica counts (and the refusal of a stream whose replicas
//! differ), and three `salesboy serve` nodes that keep serving while one NATS server is
//! killed, fence themselves while two are down and serve again when they are back, with
//! every customer message answered exactly once (counted at the fake Cloud API).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use salesboy_node::bus::{Bus, BusError, NatsBus, NatsBusOptions};
use salesboy_node::events::publisher::{StreamSettings, ensure_stream};
use salesboy_protocol::subjects::{
    DIRECTORY_BUCKET, EVENTS_STREAM, LEADER_BUCKET, NODES_BUCKET, kv_stream,
};
use salesboy_protocol::{PhoneNumberId, TenantId};
use salesboy_testkit::{ClusterSandbox, Db, NatsCluster, NatsServer, eventually, webhooks};

/// How long any one phase may take.
const WAIT: Duration = Duration::from_secs(60);

/// Tenants of the multi-process test, one message each per round.
const TENANTS: usize = 24;

async fn connect(url: &str, replicas: usize) -> NatsBus {
    NatsBus::connect(
        url,
        NatsBusOptions {
            name: "nats-cluster-test".into(),
            kv_replicas: replicas,
            ..NatsBusOptions::default()
        },
    )
    .await
    .expect("connects")
}

/// A KV write, bounded, as `Some` when it succeeded.
async fn put(kv: &Arc<dyn salesboy_node::bus::Kv>, key: &str, value: &'static [u8]) -> Option<()> {
    tokio::time::timeout(
        Duration::from_secs(3),
        kv.put(key, Bytes::from_static(value)),
    )
    .await
    .ok()?
    .ok()
    .map(|_| ())
}

#[tokio::test]
async fn a_bus_given_every_server_moves_to_another_when_its_server_dies() {
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap()
        .expect("three nats-servers");
    cluster.wait_jetstream(WAIT).await.expect("jetstream");
    // A dead address first: the client tries the others.
    let bus = connect(&format!("nats://127.0.0.1:1,{}", cluster.urls()), 3).await;
    let client = bus.nats_client().expect("a nats bus");
    let kv = bus.kv("sb_test_urls", 1).await.expect("bucket");
    put(&kv, "k", b"one").await.expect("first write");

    let port = client.server_info().port;
    let used = (0..3)
        .find(|&i| cluster.url(i).ends_with(&format!(":{port}")))
        .expect("connected to one of the servers");
    cluster.kill(used);
    eventually(WAIT, || put(&kv, "k", b"two")).await;
    assert_ne!(client.server_info().port, port, "moved to another server");
    // Buckets allow direct gets, which any replica answers: one that has not applied the
    // write yet answers `one` for a moment. Wait (bounded) until a read sees the write.
    eventually(WAIT, || async {
        let entry = tokio::time::timeout(Duration::from_secs(3), kv.get("k"))
            .await
            .ok()?
            .ok()??;
        (entry.value == Bytes::from_static(b"two")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_bucket_or_the_events_stream_with_other_replicas_is_refused() {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server");
    let one = connect(&server.url(), 1).await;
    one.kv("sb_test_replicas", 1)
        .await
        .expect("bucket, 1 replica");

    let three = connect(&server.url(), 3).await;
    let Err(error) = three.kv("sb_test_replicas", 1).await else {
        panic!("a bucket of 1 replica opened as 3");
    };
    assert!(
        matches!(
            &error,
            BusError::ReplicasMismatch { stream, existing: 1, configured: 3 }
                if stream == "KV_sb_test_replicas"
        ),
        "{error:?}"
    );
    let message = error.to_string();
    for part in [
        "KV_sb_test_replicas",
        "1 replica",
        "configured for 3",
        "SALESBOY_NATS_REPLICAS",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    let js = async_nats::jetstream::new(one.nats_client().expect("nats"));
    let mut settings = StreamSettings {
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(60),
        replicas: 1,
    };
    ensure_stream(&js, &settings).await.expect("events stream");
    settings.replicas = 3;
    let message = ensure_stream(&js, &settings)
        .await
        .expect_err("an events stream of 1 replica used as 3")
        .to_string();
    for part in [
        EVENTS_STREAM,
        "1 replica",
        "configured for 3",
        "SALESBOY_NATS_REPLICAS",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[tokio::test]
async fn a_node_refuses_to_start_on_buckets_of_other_replicas() {
    salesboy_node::run::install_crypto_provider();
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server");
    // The buckets as a single-server cluster made them: 1 replica.
    let bus = connect(&server.url(), 1).await;
    for bucket in [NODES_BUCKET, DIRECTORY_BUCKET, LEADER_BUCKET] {
        bus.kv(bucket, 1).await.expect("bucket");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = salesboy_node::config::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        nats_url: Some(server.url()),
        nats_replicas: Some(3),
        cluster_key: Some(salesboy_testkit::SANDBOX_CLUSTER_KEY.into()),
        whatsapp_app_secret: Some("secret".into()),
        whatsapp_verify_token: Some("verify".into()),
        admin_token: Some("admin-token-0123456789abcdef0123456789".into()),
        ..salesboy_node::config::Config::default()
    };
    let Err(error) = salesboy_node::run::start(config).await else {
        panic!("a node configured for 3 replicas started on buckets of 1");
    };
    let message = format!("{error:#}");
    for part in [
        "KV_sb_",
        "1 replica",
        "configured for 3",
        "SALESBOY_NATS_REPLICAS",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

/// The chat of tenant `i`'s customer in round `round`.
fn chat(round: usize, i: usize) -> String {
    format!("1651{round:03}{i:06}")
}

/// Posts round `round` (one message per tenant, each from its own chat) to the nodes in
/// turn until one accepts each, as Meta retries a webhook until it is accepted.
async fn send_round(sandbox: &ClusterSandbox, tenants: &[(TenantId, PhoneNumberId)], round: usize) {
    let nodes = sandbox.node_count();
    futures::stream::iter(tenants.iter().enumerate())
        .for_each_concurrent(8, |(i, (_, phone))| async move {
            let body = webhooks::text_message(
                phone.as_str(),
                &chat(round, i),
                &format!("wamid.nc{round}.{i}"),
                &format!("round {round}: when do you open?"),
            );
            let mut attempt = i;
            eventually(WAIT, || {
                attempt += 1;
                let node = attempt % nodes;
                let body = &body;
                async move {
                    let status = sandbox.post_webhook(node, body).await.ok()?;
                    if status.is_success() {
                        Some(())
                    } else {
                        // Meta waits before it retries.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        None
                    }
                }
            })
            .await;
        })
        .await;
}

/// Every message of `rounds` rounds answered exactly once, nothing left unanswered.
async fn assert_exactly_once(
    sandbox: &ClusterSandbox,
    tenants: &[(TenantId, PhoneNumberId)],
    rounds: usize,
) {
    sandbox
        .assert_each_message_answered_once(tenants, rounds, chat, WAIT)
        .await;
}

/// The index of the server that leads stream `stream` (`n<i>`), if the cluster knows one.
async fn stream_leader(js: &async_nats::jetstream::Context, stream: &str) -> Option<usize> {
    let mut stream = js.get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    let leader = info.cluster.as_ref()?.leader.as_ref()?;
    leader.strip_prefix('n')?.parse().ok()
}

/// Whether server `n<i>` is a current member of stream `stream`'s group (its leader, or a
/// follower that has caught up).
async fn is_current_member(js: &async_nats::jetstream::Context, stream: &str, i: usize) -> bool {
    let name = format!("n{i}");
    let Ok(mut stream) = js.get_stream(stream).await else {
        return false;
    };
    let Ok(info) = stream.info().await else {
        return false;
    };
    info.cluster.as_ref().is_some_and(|cluster| {
        cluster.leader.as_deref() == Some(name.as_str())
            || cluster
                .replicas
                .iter()
                .any(|peer| peer.name == name && peer.current && !peer.offline)
    })
}

/// Whether every node answers `/health` with `status` (200 serving, 503 fenced).
async fn every_node_answers(sandbox: &ClusterSandbox, status: u16) -> bool {
    for i in 0..sandbox.node_count() {
        let Ok(base) = sandbox.http_base(i) else {
            return false;
        };
        let answer = sandbox
            .http()
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if !answer.is_ok_and(|response| response.status().as_u16() == status) {
            return false;
        }
    }
    true
}

/// How many times the nodes fenced themselves, as their logs say.
fn fences(sandbox: &ClusterSandbox) -> usize {
    (0..sandbox.node_count())
        .map(|i| {
            let log = sandbox.log_path(i).expect("a node");
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("fenced: membership not renewed")
                .count()
        })
        .sum()
}

/// Three nodes on three clustered NATS servers, replicas 3 (the default with three URLs):
/// one server killed -9 under traffic, then brought back (it rejoins: with another server
/// killed it carries the quorum), then two down at once (the nodes fence themselves) and
/// back. Every message is answered exactly once throughout.
#[tokio::test]
async fn nodes_on_a_nats_cluster_survive_servers_dying_without_losing_or_doubling_replies() {
    salesboy_node::run::install_crypto_provider();
    let sandbox = ClusterSandbox::builder()
        .nodes(3)
        .nats_cluster(3)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(Db::Postgres)
        .env("SALESBOY_DEBOUNCE_MS", "0")
        // Longer than a Raft election after a server dies (4-9 s on nats-server 2.9-2.11),
        // as docs/operations.md advises on a NATS cluster: one server down fences no node.
        .env("SALESBOY_FAILURE_TIMEOUT_MS", "12000")
        .env("RUST_LOG", "warn,salesboy_node::cluster=info")
        .start()
        .await
        .expect("cluster starts");
    let nats = sandbox.nats_cluster().expect("a nats cluster");
    let tenants = sandbox
        .seed_tenants(TENANTS, "We open at 9am every day.")
        .await
        .expect("seed");
    let test_bus = connect(&sandbox.nats_url(), 3).await;
    let js = async_nats::jetstream::new(test_bus.nats_client().expect("nats"));
    let streams = [
        kv_stream(NODES_BUCKET),
        kv_stream(DIRECTORY_BUCKET),
        kv_stream(LEADER_BUCKET),
        EVENTS_STREAM.to_owned(),
    ];
    for stream in &streams {
        let mut handle = js.get_stream(stream).await.expect("the nodes made it");
        let replicas = handle.info().await.expect("info").config.num_replicas;
        assert_eq!(replicas, 3, "{stream} has 3 replicas");
    }

    send_round(&sandbox, &tenants, 0).await;
    assert_exactly_once(&sandbox, &tenants, 1).await;

    // One server killed under traffic: the one that leads the membership bucket.
    let first = stream_leader(&js, &streams[0]).await.unwrap_or(0);
    let already = sandbox.whatsapp().sent_count();
    tokio::join!(send_round(&sandbox, &tenants, 1), async {
        eventually(WAIT, || async {
            (sandbox.whatsapp().sent_count() >= already + TENANTS / 3).then_some(())
        })
        .await;
        nats.kill(first);
    });
    assert_exactly_once(&sandbox, &tenants, 2).await;
    assert!(every_node_answers(&sandbox, 200).await, "the nodes serve");
    assert_eq!(
        fences(&sandbox),
        0,
        "no node fenced itself for one server down"
    );

    // Back: it rejoins every stream's group and catches up.
    nats.restart(first).expect("restarts");
    for stream in &streams {
        eventually(WAIT, || async {
            is_current_member(&js, stream, first).await.then_some(())
        })
        .await;
    }
    // It carries the quorum with one other: kill another server under traffic.
    let second = (first + 1) % 3;
    let third = (first + 2) % 3;
    nats.kill(second);
    send_round(&sandbox, &tenants, 2).await;
    assert_exactly_once(&sandbox, &tenants, 3).await;

    // Two of three down: no quorum, every node fences itself.
    nats.kill(third);
    eventually(WAIT, || async {
        every_node_answers(&sandbox, 503).await.then_some(())
    })
    .await;
    assert!(fences(&sandbox) >= 3, "every node fenced itself");
    // Webhooks need only the database: round 3 is accepted (stored) meanwhile.
    send_round(&sandbox, &tenants, 3).await;
    // Quorum back: the nodes serve again by themselves and answer round 3, once.
    nats.restart(second).expect("restarts");
    nats.restart(third).expect("restarts");
    assert_exactly_once(&sandbox, &tenants, 4).await;
    eventually(WAIT, || async {
        every_node_answers(&sandbox, 200).await.then_some(())
    })
    .await;
}

/// nats-server processes a test started, killed (SIGKILL) and reaped on drop.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `deploy/nats/`'s three configs, with loopback addresses, free ports and temporary stores
/// in place of the VPSes', form a JetStream cluster the nodes' user can use: a bucket of 3
/// replicas is created and written through all three URLs, as a node does.
#[tokio::test]
async fn the_deploy_nats_configs_form_a_cluster_for_the_nodes_user() {
    let deploy = salesboy_testkit::workspace_root().join("deploy/nats");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        deploy.join("accounts.conf"),
        dir.path().join("accounts.conf"),
    )
    .unwrap();
    // Free ports: client and route ports of each server.
    let ports = salesboy_testkit::free_ports(6).unwrap();
    let mut servers = Servers(Vec::new());
    for i in 1..=3 {
        let mut config = std::fs::read_to_string(deploy.join(format!("nats-{i}.conf"))).unwrap();
        for j in 1..=3 {
            config = config
                .replace(
                    &format!("10.0.0.{j}:4222"),
                    &format!("127.0.0.1:{}", ports[2 * (j - 1)]),
                )
                .replace(
                    &format!("10.0.0.{j}:6222"),
                    &format!("127.0.0.1:{}", ports[2 * (j - 1) + 1]),
                );
        }
        let store = dir.path().join(format!("store-{i}"));
        config = config
            // No monitoring port: three servers on one machine would share it.
            .replace("http: 127.0.0.1:8222", "")
            .replace("\"/var/lib/nats\"", &format!("\"{}\"", store.display()));
        assert!(
            config
                .lines()
                .all(|line| line.trim_start().starts_with('#') || !line.contains("10.0.0.")),
            "every address replaced"
        );
        let path = dir.path().join(format!("nats-{i}.conf"));
        std::fs::write(&path, config).unwrap();
        servers.0.push(
            std::process::Command::new(salesboy_testkit::nats_server_binary())
                .arg("-c")
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server runs"),
        );
    }
    let urls = (0..3)
        .map(|i| format!("nats://127.0.0.1:{}", ports[2 * i]))
        .collect::<Vec<_>>()
        .join(",");
    let options = || NatsBusOptions {
        name: "deploy-config-test".into(),
        kv_replicas: 3,
        credentials: Some(salesboy_node::bus::NatsCredentials {
            user: "salesboy-node".into(),
            password: "CHANGE-ME-node".into(),
        }),
        ..NatsBusOptions::default()
    };
    let bus = eventually(WAIT, || async {
        NatsBus::connect(&urls, options()).await.ok()
    })
    .await;
    eventually(WAIT, || async {
        let kv = bus.kv("sb_test_deploy", 1).await.ok()?;
        put(&kv, "k", b"v").await
    })
    .await;
    let js = async_nats::jetstream::new(bus.nats_client().expect("nats"));
    let mut stream = js.get_stream("KV_sb_test_deploy").await.expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.num_replicas, 3);
    let cluster = info.cluster.as_ref().expect("clustered");
    assert_eq!(cluster.name.as_deref(), Some("salesboy"));
    drop(servers);
}
