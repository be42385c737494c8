//! The per-test nats-server works: JetStream is on, the KV workaround for 2.9 works, and
//! dropping the server stops it.

use std::time::Duration;

use salesboy_testkit::NatsServer;

async fn connect(url: &str) -> async_nats::Client {
    tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

#[tokio::test]
async fn per_test_server_has_jetstream_and_requests_without_responders_fail_fast() {
    let server = NatsServer::start().expect("start nats-server");
    let client = connect(&server.url()).await;

    let err = client
        .request("sb.v1.nobody.home", "ping".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);

    // JetStream is on: a KV bucket made through its stream (nats-server 2.9 workaround).
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "KV_sb_test".into(),
        subjects: vec!["$KV.sb_test.>".into()],
        max_messages_per_subject: 1,
        max_message_size: -1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .expect("create kv stream");
    let kv = js.get_key_value("sb_test").await.expect("open kv");
    let revision = kv
        .create("tenant-a", "node-1".into())
        .await
        .expect("create key");
    assert!(
        kv.create("tenant-a", "node-2".into()).await.is_err(),
        "second create must fail"
    );
    kv.update("tenant-a", "node-2".into(), revision)
        .await
        .expect("cas update");
    let entry = kv.get("tenant-a").await.expect("get").expect("present");
    assert_eq!(&entry[..], b"node-2");
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let server = NatsServer::start().expect("start nats-server");
    let port = server.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(server);
    // Drop kills and reaps the process, so the port is closed by now.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open after drop"
    );
}
