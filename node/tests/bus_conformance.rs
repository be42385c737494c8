//! The bus conformance suite: every test runs against the in-process `LocalBus` and against
//! `NatsBus` on a private nats-server, through `Arc<dyn Bus>` only. Where a test needs two
//! nodes, it takes two handles: clones of one `LocalBus`, or two NATS connections.
//!
//! Followed by a few NATS-only tests (bucket streams as decision 0003 says, connection loss,
//! interoperation with plain NATS clients).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use salesboy_node::bus::{
    ALL_KEYS, Bus, BusError, ConnectionState, Headers, KV_HEADER_ROOM, KvEntry, KvError, KvEvent,
    KvOp, KvWatch, Message, NatsBus, NatsBusOptions, Subscription,
};
use salesboy_protocol::codec::{CODEC_HEADER, Codec};
use salesboy_protocol::subjects;
use salesboy_protocol::{ActorAddress, ChatId, TenantId};
use salesboy_testkit::NatsServer;
use salesboy_testkit::buses::{Cluster, nats_bus};
use tokio::time::timeout;

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

async fn next(subscription: &mut Subscription) -> Message {
    timeout(WAIT, subscription.next())
        .await
        .unwrap_or_else(|_| panic!("no message on {} in time", subscription.subject()))
        .expect("subscription closed")
}

async fn next_event(watch: &mut KvWatch) -> KvEvent {
    timeout(WAIT, watch.next())
        .await
        .expect("no kv event in time")
        .expect("watch ended")
}

fn put(key: &str, value: &str, revision: u64) -> KvEvent {
    KvEvent {
        key: key.into(),
        op: KvOp::Put,
        value: bytes(value),
        revision,
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

// ---------------------------------------------------------------------------------------------
// Publish / subscribe.

async fn publish_reaches_every_exact_subscriber(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let mut first = b.subscribe("sb.test.greet", None).await.unwrap();
    let mut second = a.subscribe("sb.test.greet", None).await.unwrap();
    let mut other = b.subscribe("sb.test.other", None).await.unwrap();
    assert_eq!(first.subject(), "sb.test.greet");

    let headers = Headers::with_codec(Codec::Json).with("Sb-Msg-Id", "m-1");
    a.publish("sb.test.greet", headers.clone(), bytes("hello"))
        .await
        .unwrap();
    a.publish("sb.test.other", Headers::new(), bytes("sentinel"))
        .await
        .unwrap();

    for subscription in [&mut first, &mut second] {
        let message = next(subscription).await;
        assert_eq!(message.subject, "sb.test.greet");
        assert_eq!(message.headers, headers);
        assert_eq!(message.headers.codec(), Ok(Some(Codec::Json)));
        assert_eq!(message.payload, bytes("hello"));
        assert_eq!(message.reply, None);
    }
    // Published after "hello": had `other` matched "greet", that would have come first.
    assert_eq!(next(&mut other).await.payload, bytes("sentinel"));
}

async fn star_matches_exactly_one_token(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let mut sub = b.subscribe("sb.test.t.*.session", None).await.unwrap();
    for subject in [
        "sb.test.t.acme.session",
        "sb.test.t.acme.conv.session",
        "sb.test.t.acme.responder",
        "sb.test.t.acme",
        "sb.test.t.beta.session",
        "sb.test.t.last.session",
    ] {
        a.publish(subject, Headers::new(), bytes(subject))
            .await
            .unwrap();
    }
    for expected in [
        "sb.test.t.acme.session",
        "sb.test.t.beta.session",
        "sb.test.t.last.session",
    ] {
        let message = next(&mut sub).await;
        assert_eq!(message.subject, expected);
        assert_eq!(message.payload, bytes(expected));
    }
}

async fn greater_than_matches_all_remaining_tokens(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let acme = tenant("acme");
    let chat = ChatId::new("16505551234").unwrap();
    let mut sub = b
        .subscribe(&subjects::tenant_wildcard(&acme), None)
        .await
        .unwrap();

    let session = subjects::actor(&ActorAddress::Session(acme.clone()));
    let conversation = subjects::actor(&ActorAddress::Conversation(acme.clone(), chat));
    let responder = subjects::actor(&ActorAddress::Responder(acme));
    let elsewhere = subjects::actor(&ActorAddress::Session(tenant("beta")));
    for subject in [
        session.as_str(),
        "sb.v1.t.acme",
        elsewhere.as_str(),
        conversation.as_str(),
        responder.as_str(),
    ] {
        a.publish(subject, Headers::new(), Bytes::new())
            .await
            .unwrap();
    }
    for expected in [&session, &conversation, &responder] {
        assert_eq!(&next(&mut sub).await.subject, expected);
    }
}

async fn messages_arrive_in_publish_order(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let mut exact = b.subscribe("sb.test.seq.n", None).await.unwrap();
    let mut wildcard = b.subscribe("sb.test.seq.*", None).await.unwrap();
    for i in 0..200 {
        a.publish("sb.test.seq.n", Headers::new(), bytes(&i.to_string()))
            .await
            .unwrap();
    }
    for subscription in [&mut exact, &mut wildcard] {
        for i in 0..200 {
            assert_eq!(next(subscription).await.payload, bytes(&i.to_string()));
        }
    }
}

async fn queue_group_delivers_each_message_to_one_member(cluster: &impl Cluster) {
    const COUNT: usize = 100;
    let (a, b, c) = (
        cluster.bus().await,
        cluster.bus().await,
        cluster.bus().await,
    );
    let mut workers = [
        b.subscribe("sb.test.work", Some("workers")).await.unwrap(),
        c.subscribe("sb.test.work", Some("workers")).await.unwrap(),
    ];
    let mut tap = c.subscribe("sb.test.work", None).await.unwrap();
    for i in 0..COUNT {
        a.publish("sb.test.work", Headers::new(), bytes(&i.to_string()))
            .await
            .unwrap();
    }

    // A plain subscription beside the group still gets everything.
    for i in 0..COUNT {
        assert_eq!(next(&mut tap).await.payload, bytes(&i.to_string()));
    }

    let mut seen = BTreeSet::new();
    let mut per_worker = [0_usize; 2];
    let [first, second] = &mut workers;
    timeout(WAIT, async {
        while per_worker.iter().sum::<usize>() < COUNT {
            let (worker, message) = tokio::select! {
                Some(m) = first.next() => (0, m),
                Some(m) = second.next() => (1, m),
            };
            per_worker[worker] += 1;
            let n: usize = std::str::from_utf8(&message.payload)
                .unwrap()
                .parse()
                .unwrap();
            assert!(seen.insert(n), "message {n} delivered twice");
        }
    })
    .await
    .expect("queue group members did not get every message in time");
    assert_eq!(seen, (0..COUNT).collect::<BTreeSet<_>>());
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both members should share the work: {per_worker:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Request / reply.

async fn request_reply_round_trip_with_headers(cluster: &impl Cluster) {
    let (client, server) = (cluster.bus().await, cluster.bus().await);
    let mut requests = server.subscribe("sb.test.echo", None).await.unwrap();
    let reply_headers = Headers::with_codec(Codec::Json).with("Sb-Answer", "yes");
    let responder = tokio::spawn({
        let reply_headers = reply_headers.clone();
        async move {
            let request = next(&mut requests).await;
            let upper = request.payload.to_ascii_uppercase();
            server
                .respond(&request, reply_headers, Bytes::from(upper))
                .await
                .unwrap();
            // This task holds the responder's last handle: a NATS bus dropped with its
            // reply still buffered would never send it.
            server.flush().await.unwrap();
            request
        }
    });

    let request_headers = Headers::with_codec(Codec::Bincode).with("Sb-Msg-Id", "r-1");
    let reply = client
        .request("sb.test.echo", request_headers.clone(), bytes("ping"), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, bytes("PING"));
    assert_eq!(reply.headers, reply_headers);
    assert_eq!(reply.reply, None);

    let request = timeout(WAIT, responder).await.unwrap().unwrap();
    assert_eq!(request.subject, "sb.test.echo");
    assert_eq!(request.headers, request_headers);
    assert_eq!(
        request.headers.get(CODEC_HEADER),
        Some(Codec::Bincode.header_value())
    );
    assert!(request.reply.is_some(), "a request carries a reply subject");
}

async fn request_without_subscribers_gets_no_responders(cluster: &impl Cluster) {
    let (client, server) = (cluster.bus().await, cluster.bus().await);
    let _unrelated = server.subscribe("sb.test.someone", None).await.unwrap();
    let err = client
        .request("sb.test.nobody", Headers::new(), bytes("hi"), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err, BusError::NoResponders);
}

async fn no_responders_again_once_the_responder_unsubscribes(cluster: &impl Cluster) {
    let (client, server) = (cluster.bus().await, cluster.bus().await);
    let mut requests = server.subscribe("sb.test.svc", None).await.unwrap();
    let responder = tokio::spawn(async move {
        let request = next(&mut requests).await;
        server
            .respond(&request, Headers::new(), bytes("ok"))
            .await
            .unwrap();
        requests
    });
    let reply = client
        .request("sb.test.svc", Headers::new(), Bytes::new(), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, bytes("ok"));

    let requests = timeout(WAIT, responder).await.unwrap().unwrap();
    requests.unsubscribe().await.unwrap();
    let err = client
        .request("sb.test.svc", Headers::new(), Bytes::new(), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err, BusError::NoResponders);

    // Dropping a subscription unsubscribes too (seen at once by the same handle).
    let dropped = client.subscribe("sb.test.svc", None).await.unwrap();
    drop(dropped);
    let err = client
        .request("sb.test.svc", Headers::new(), Bytes::new(), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err, BusError::NoResponders);
}

async fn request_times_out_when_nobody_answers(cluster: &impl Cluster) {
    let (client, server) = (cluster.bus().await, cluster.bus().await);
    let mut requests = server.subscribe("sb.test.silent", None).await.unwrap();
    let err = client
        .request(
            "sb.test.silent",
            Headers::new(),
            bytes("anyone?"),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(err, BusError::Timeout);

    // The request did arrive; answering it late is harmless.
    let request = next(&mut requests).await;
    assert_eq!(request.payload, bytes("anyone?"));
    server
        .respond(&request, Headers::new(), bytes("too late"))
        .await
        .unwrap();
}

async fn respond_needs_a_request(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let mut sub = bus.subscribe("sb.test.plain", None).await.unwrap();
    bus.publish("sb.test.plain", Headers::new(), bytes("no reply wanted"))
        .await
        .unwrap();
    let message = next(&mut sub).await;
    assert_eq!(message.reply, None);
    assert_eq!(
        bus.respond(&message, Headers::new(), Bytes::new()).await,
        Err(BusError::NoReplySubject)
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input.

async fn invalid_input_is_refused(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    for subject in ["", "sb..x", ".sb", "sb.", "sb x", "sb.*", "sb.>", "sb\n"] {
        assert!(
            matches!(
                bus.publish(subject, Headers::new(), Bytes::new()).await,
                Err(BusError::InvalidSubject(_))
            ),
            "publish {subject:?}"
        );
        assert!(
            matches!(
                bus.request(subject, Headers::new(), Bytes::new(), WAIT)
                    .await,
                Err(BusError::InvalidSubject(_))
            ),
            "request {subject:?}"
        );
    }
    for filter in ["", "sb.>.x", "sb.x*", "sb..*", "sb x.>"] {
        assert!(
            matches!(
                bus.subscribe(filter, None).await,
                Err(BusError::InvalidSubject(_))
            ),
            "subscribe {filter:?}"
        );
    }
    for group in ["", "two words", "tab\t"] {
        assert!(
            matches!(
                bus.subscribe("sb.test.q", Some(group)).await,
                Err(BusError::InvalidQueueGroup(_))
            ),
            "queue group {group:?}"
        );
    }
    for headers in [
        Headers::new().with("bad name", "v"),
        Headers::new().with("bad:name", "v"),
        Headers::new().with("Sb-Ok", "two\r\nlines"),
    ] {
        assert!(
            matches!(
                bus.publish("sb.test.h", headers.clone(), Bytes::new())
                    .await,
                Err(BusError::InvalidHeader(_))
            ),
            "{headers:?}"
        );
    }
    for bucket in ["", "has.dot", "has space", "$KV"] {
        assert!(
            matches!(bus.kv(bucket, 1).await, Err(BusError::InvalidBucket(_))),
            "bucket {bucket:?}"
        );
    }
    assert!(matches!(
        bus.kv("sb_test", 0).await,
        Err(BusError::InvalidHistory(0))
    ));
    assert!(matches!(
        bus.kv("sb_test", 65).await,
        Err(BusError::InvalidHistory(65))
    ));

    let kv = bus.kv("sb_test", 1).await.unwrap();
    for key in ["", ".a", "a.", "a..b", "a b", "a*", ">", "ключ"] {
        let invalid = |r: Result<_, KvError>| matches!(r, Err(KvError::InvalidKey(_)));
        assert!(invalid(kv.get(key).await.map(drop)), "get {key:?}");
        assert!(
            invalid(kv.put(key, bytes("v")).await.map(drop)),
            "put {key:?}"
        );
        assert!(
            invalid(kv.create(key, bytes("v")).await.map(drop)),
            "create {key:?}"
        );
        assert!(
            invalid(kv.update(key, bytes("v"), 1).await.map(drop)),
            "update {key:?}"
        );
        assert!(invalid(kv.delete(key).await), "delete {key:?}");
    }
    for pattern in ["", "a.>.b", "a b", "a*"] {
        assert!(
            matches!(kv.watch(pattern).await, Err(KvError::InvalidKey(_))),
            "watch {pattern:?}"
        );
    }
    // Nothing was written by the refused calls.
    assert_eq!(kv.keys().await.unwrap(), Vec::<String>::new());
}

async fn oversized_messages_are_refused(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let max = a.max_payload();
    assert!(max >= 64 * 1024, "max payload {max} is implausibly small");
    let mut sub = b.subscribe("sb.test.big", None).await.unwrap();

    let too_big = Bytes::from(vec![7_u8; max + 1]);
    assert_eq!(
        a.publish("sb.test.big", Headers::new(), too_big.clone())
            .await,
        Err(BusError::PayloadTooLarge { size: max + 1, max })
    );
    assert!(matches!(
        a.request("sb.test.big", Headers::new(), too_big, WAIT)
            .await,
        Err(BusError::PayloadTooLarge { .. })
    ));
    // Headers count: a full-size payload with a header no longer fits.
    let full = Bytes::from(vec![7_u8; max]);
    assert!(matches!(
        a.publish(
            "sb.test.big",
            Headers::with_codec(Codec::Json),
            full.clone()
        )
        .await,
        Err(BusError::PayloadTooLarge { .. })
    ));
    // Exactly the limit goes through, whole.
    a.publish("sb.test.big", Headers::new(), full.clone())
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, full);

    let kv = a.kv("sb_big", 1).await.unwrap();
    let value_max = max - KV_HEADER_ROOM;
    assert!(matches!(
        kv.put("k", Bytes::from(vec![1_u8; value_max + 1])).await,
        Err(KvError::Bus(BusError::PayloadTooLarge { .. }))
    ));
    let revision = kv
        .put("k", Bytes::from(vec![1_u8; value_max]))
        .await
        .unwrap();
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value.len(), entry.revision), (value_max, revision));
}

// ---------------------------------------------------------------------------------------------
// KV.

async fn kv_create_and_compare_and_set(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let kv = bus.kv("sb_directory_test", 1).await.unwrap();
    assert_eq!(kv.bucket(), "sb_directory_test");
    assert_eq!(kv.get("acme").await.unwrap(), None);

    let r1 = kv.create("acme", bytes("node-a")).await.unwrap();
    assert_eq!(
        kv.create("acme", bytes("node-b")).await,
        Err(KvError::AlreadyExists)
    );
    assert_eq!(
        kv.get("acme").await.unwrap(),
        Some(KvEntry {
            key: "acme".into(),
            value: bytes("node-a"),
            revision: r1
        })
    );

    let r2 = kv.update("acme", bytes("node-b"), r1).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(
        kv.update("acme", bytes("node-c"), r1).await,
        Err(KvError::WrongRevision { expected: r1 })
    );
    let entry = kv.get("acme").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (bytes("node-b"), r2));

    kv.delete("acme").await.unwrap();
    assert_eq!(kv.get("acme").await.unwrap(), None);
    // The delete is a write: the revision before it is stale now.
    assert_eq!(
        kv.update("acme", bytes("node-c"), r2).await,
        Err(KvError::WrongRevision { expected: r2 })
    );

    // After a delete, create succeeds again.
    let r3 = kv.create("acme", bytes("node-c")).await.unwrap();
    assert!(
        r3 > r2 + 1,
        "the delete took a revision between {r2} and {r3}"
    );
    let r4 = kv.put("acme", bytes("node-d")).await.unwrap();
    assert!(r4 > r3);
    let entry = kv.get("acme").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (bytes("node-d"), r4));
}

async fn kv_keys_lists_live_keys_sorted(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let kv = bus.kv("sb_keys_test", 1).await.unwrap();
    assert_eq!(kv.keys().await.unwrap(), Vec::<String>::new());
    assert_eq!(kv.entries().await.unwrap(), Vec::new());

    let rb = kv.put("node.b", bytes("b")).await.unwrap();
    let ra = kv.put("node.a", bytes("a")).await.unwrap();
    kv.put("tenant.x", bytes("x")).await.unwrap();
    kv.put("node.b", bytes("b2")).await.unwrap();
    kv.delete("tenant.x").await.unwrap();
    kv.delete("never.written").await.unwrap();

    assert_eq!(kv.keys().await.unwrap(), vec!["node.a", "node.b"]);
    let entries = kv.entries().await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0],
        KvEntry {
            key: "node.a".into(),
            value: bytes("a"),
            revision: ra
        }
    );
    assert_eq!(
        (&entries[1].key, &entries[1].value),
        (&"node.b".to_owned(), &bytes("b2"))
    );
    assert!(entries[1].revision > rb);
}

/// A key that holds a value throughout a listing is in it, however busy the bucket is with
/// other writes meanwhile (a status read while the rebalancer moves tenants).
async fn kv_keys_lists_every_key_while_others_are_rewritten(cluster: &impl Cluster) {
    const KEYS: usize = 300;
    let bus = cluster.bus().await;
    let kv = bus.kv("sb_keys_busy", 1).await.unwrap();
    let names: Vec<String> = (0..KEYS).map(|i| format!("tenant-{i:04}")).collect();
    for name in &names {
        kv.put(name, bytes("node-a")).await.unwrap();
    }
    let writer_bus = cluster.bus().await;
    let writer_kv = writer_bus.kv("sb_keys_busy", 1).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rewrites = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (names, stop, rewrites) = (names.clone(), Arc::clone(&stop), Arc::clone(&rewrites));
        async move {
            let mut round = 0_usize;
            while !stop.load(Ordering::Relaxed) {
                // Rewrites the keys in a stride that does not follow the listing's order.
                let name = &names[(round * 7919) % KEYS];
                writer_kv.put(name, bytes("node-b")).await.unwrap();
                rewrites.fetch_add(1, Ordering::Relaxed);
                round += 1;
                tokio::task::yield_now().await;
            }
        }
    });
    timeout(WAIT, async {
        while rewrites.load(Ordering::Relaxed) < 10 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the writer is rewriting keys");
    for listing in 0..20 {
        let keys = kv.keys().await.unwrap();
        assert_eq!(keys, names, "listing {listing} missed keys");
        assert_eq!(kv.entries().await.unwrap().len(), KEYS, "listing {listing}");
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
}

async fn kv_revisions_increase_across_the_bucket(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let kv = bus.kv("sb_revisions_test", 1).await.unwrap();
    let mut revisions = vec![
        kv.put("a", bytes("1")).await.unwrap(),
        kv.create("b", bytes("1")).await.unwrap(),
        kv.put("c", bytes("1")).await.unwrap(),
    ];
    let last = *revisions.last().unwrap();
    revisions.push(kv.update("a", bytes("2"), revisions[0]).await.unwrap());
    assert!(revisions[3] > last);
    kv.delete("b").await.unwrap();
    revisions.push(kv.create("b", bytes("2")).await.unwrap());
    revisions.push(kv.put("c", bytes("2")).await.unwrap());
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions must strictly increase: {revisions:?}"
    );
    // A fresh bucket starts at revision 1 (the stream's first sequence on NATS).
    assert_eq!(revisions[0], 1);
    // Each key's entry carries the revision its last write returned.
    assert_eq!(kv.get("a").await.unwrap().unwrap().revision, revisions[3]);
    assert_eq!(kv.get("b").await.unwrap().unwrap().revision, revisions[4]);
    assert_eq!(kv.get("c").await.unwrap().unwrap().revision, revisions[5]);
}

async fn kv_watch_sees_current_values_then_changes_in_order(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let kv = bus.kv("sb_watch_test", 1).await.unwrap();
    kv.put("a", bytes("a1")).await.unwrap();
    let rb = kv.put("b", bytes("b1")).await.unwrap();
    kv.put("c", bytes("c1")).await.unwrap();
    kv.delete("c").await.unwrap();
    let ra = kv.put("a", bytes("a2")).await.unwrap();

    let mut watch = kv.watch(ALL_KEYS).await.unwrap();
    // Current values, in revision order; the deleted key is left out.
    assert_eq!(next_event(&mut watch).await, put("b", "b1", rb));
    assert_eq!(next_event(&mut watch).await, put("a", "a2", ra));

    // Then live changes, in revision order.
    let rc = kv.put("c", bytes("c3")).await.unwrap();
    kv.delete("b").await.unwrap();
    let rd = kv.create("d", bytes("d1")).await.unwrap();
    assert_eq!(next_event(&mut watch).await, put("c", "c3", rc));
    let deleted = next_event(&mut watch).await;
    assert_eq!(
        (deleted.key.as_str(), deleted.op, deleted.value.len()),
        ("b", KvOp::Delete, 0)
    );
    assert!(rc < deleted.revision && deleted.revision < rd);
    assert_eq!(next_event(&mut watch).await, put("d", "d1", rd));

    // A second watch starts from the state now.
    let mut again = kv.watch(ALL_KEYS).await.unwrap();
    let mut current = Vec::new();
    for _ in 0..3 {
        current.push(next_event(&mut again).await);
    }
    assert_eq!(
        current,
        vec![put("a", "a2", ra), put("c", "c3", rc), put("d", "d1", rd)]
    );
}

async fn kv_watch_filters_by_key_pattern(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let kv = bus.kv("sb_watch_filter_test", 1).await.unwrap();
    let ra = kv.put("node.a", bytes("a")).await.unwrap();
    kv.put("tenant.x", bytes("x")).await.unwrap();
    let rb = kv.put("node.b", bytes("b")).await.unwrap();

    let mut nodes = kv.watch("node.>").await.unwrap();
    let mut one = kv.watch("tenant.y").await.unwrap();
    assert_eq!(next_event(&mut nodes).await, put("node.a", "a", ra));
    assert_eq!(next_event(&mut nodes).await, put("node.b", "b", rb));

    let ry = kv.put("tenant.y", bytes("y")).await.unwrap();
    let rc = kv.put("node.c", bytes("c")).await.unwrap();
    kv.delete("tenant.x").await.unwrap();
    kv.delete("node.a").await.unwrap();
    assert_eq!(next_event(&mut nodes).await, put("node.c", "c", rc));
    let deleted = next_event(&mut nodes).await;
    assert_eq!((deleted.key.as_str(), deleted.op), ("node.a", KvOp::Delete));
    assert_eq!(next_event(&mut one).await, put("tenant.y", "y", ry));

    let mut star = kv.watch("*.c").await.unwrap();
    assert_eq!(next_event(&mut star).await, put("node.c", "c", rc));
}

async fn kv_buckets_are_independent(cluster: &impl Cluster) {
    let bus = cluster.bus().await;
    let one = bus.kv("sb_one", 1).await.unwrap();
    let two = bus.kv("sb_two", 1).await.unwrap();
    assert_eq!(one.put("k", bytes("1")).await.unwrap(), 1);
    one.put("k", bytes("2")).await.unwrap();

    assert_eq!(two.get("k").await.unwrap(), None);
    assert_eq!(two.keys().await.unwrap(), Vec::<String>::new());
    let mut watch = two.watch(ALL_KEYS).await.unwrap();
    one.put("other", bytes("3")).await.unwrap();
    // Each bucket numbers its own revisions.
    assert_eq!(two.put("k", bytes("x")).await.unwrap(), 1);
    assert_eq!(next_event(&mut watch).await, put("k", "x", 1));
    assert_eq!(one.get("k").await.unwrap().unwrap().value, bytes("2"));
}

async fn kv_bucket_opened_again_shares_its_state(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let first = a.kv("sb_shared", 1).await.unwrap();
    let r1 = first.create("leader", bytes("a")).await.unwrap();

    let again = a.kv("sb_shared", 1).await.unwrap();
    assert_eq!(again.get("leader").await.unwrap().unwrap().revision, r1);

    // Another node, another history setting: the existing bucket is opened as it is.
    let elsewhere = b.kv("sb_shared", 5).await.unwrap();
    assert_eq!(
        elsewhere.create("leader", bytes("b")).await,
        Err(KvError::AlreadyExists)
    );
    let mut watch = elsewhere.watch("leader").await.unwrap();
    assert_eq!(next_event(&mut watch).await, put("leader", "a", r1));
    let r2 = first.update("leader", bytes("a2"), r1).await.unwrap();
    assert_eq!(next_event(&mut watch).await, put("leader", "a2", r2));
}

async fn only_one_concurrent_create_wins(cluster: &impl Cluster) {
    let (a, b) = (cluster.bus().await, cluster.bus().await);
    let kvs = [
        a.kv("sb_race", 1).await.unwrap(),
        b.kv("sb_race", 1).await.unwrap(),
    ];
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let kv = Arc::clone(&kvs[i % 2]);
            tokio::spawn(async move {
                let node = format!("node-{i}");
                (
                    node.clone(),
                    kv.create("tenant.acme", Bytes::from(node)).await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        let (node, result) = timeout(WAIT, attempt).await.unwrap().unwrap();
        match result {
            Ok(revision) => winners.push((node, revision)),
            Err(e) => assert_eq!(e, KvError::AlreadyExists),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    let entry = kvs[0].get("tenant.acme").await.unwrap().unwrap();
    assert_eq!(
        (entry.value, entry.revision),
        (Bytes::from(winners[0].0.clone()), winners[0].1)
    );
}

// ---------------------------------------------------------------------------------------------
// The suite, once per implementation.

salesboy_testkit::bus_suite!([
    publish_reaches_every_exact_subscriber,
    star_matches_exactly_one_token,
    greater_than_matches_all_remaining_tokens,
    messages_arrive_in_publish_order,
    queue_group_delivers_each_message_to_one_member,
    request_reply_round_trip_with_headers,
    request_without_subscribers_gets_no_responders,
    no_responders_again_once_the_responder_unsubscribes,
    request_times_out_when_nobody_answers,
    respond_needs_a_request,
    invalid_input_is_refused,
    oversized_messages_are_refused,
    kv_create_and_compare_and_set,
    kv_keys_lists_live_keys_sorted,
    kv_keys_lists_every_key_while_others_are_rewritten,
    kv_revisions_increase_across_the_bucket,
    kv_watch_sees_current_values_then_changes_in_order,
    kv_watch_filters_by_key_pattern,
    kv_buckets_are_independent,
    kv_bucket_opened_again_shares_its_state,
    only_one_concurrent_create_wins,
]);

// ---------------------------------------------------------------------------------------------
// NATS only.

/// The bucket's stream is made exactly as decision 0003 says, and opening it again (as every
/// node does at start) reuses it.
#[tokio::test]
async fn nats_kv_bucket_stream_follows_decision_0003() {
    let server = NatsServer::start().expect("start nats-server");
    let bus = nats_bus(&server, &AtomicUsize::new(0)).await;
    let kv = bus.kv("sb_config", 5).await.unwrap();
    kv.put("k", bytes("v")).await.unwrap();
    let _again = bus.kv("sb_config", 5).await.unwrap();

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(subjects::kv_stream("sb_config"))
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    let config = &info.config;
    assert_eq!(config.subjects, vec!["$KV.sb_config.>".to_owned()]);
    assert_eq!(config.max_messages_per_subject, 5);
    assert_eq!(config.max_message_size, -1);
    assert!(config.allow_rollup && config.deny_delete && !config.deny_purge);
    assert!(config.allow_direct);
    assert_eq!(
        config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    assert_eq!(
        info.state.messages, 1,
        "one stream for the bucket, one value"
    );

    // A plain async-nats client reads our bucket as an ordinary KV bucket.
    let store = js.get_key_value("sb_config").await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("v")));
}

#[tokio::test]
async fn nats_connect_fails_without_a_server() {
    let port = salesboy_testkit::free_port().unwrap();
    let result = timeout(
        WAIT,
        NatsBus::connect(
            &format!("nats://127.0.0.1:{port}"),
            NatsBusOptions::default(),
        ),
    )
    .await
    .expect("a failed first connection must not retry forever");
    assert!(matches!(result, Err(BusError::Other(_))), "{result:?}");
}

#[tokio::test]
async fn nats_losing_the_server_shows_as_disconnected() {
    let server = NatsServer::start().expect("start nats-server");
    let bus = nats_bus(&server, &AtomicUsize::new(0)).await;
    let mut state = bus.watch_connection();
    assert!(bus.is_connected());
    assert_eq!(bus.connection_state(), ConnectionState::Connected);
    assert_eq!(*state.borrow(), ConnectionState::Connected);

    drop(server);
    timeout(
        WAIT,
        state.wait_for(|s| *s == ConnectionState::Disconnected),
    )
    .await
    .expect("disconnection not reported in time")
    .unwrap();
    assert!(!bus.is_connected());
    assert_ne!(bus.connection_state(), ConnectionState::Connected);
    let err = bus
        .request(
            "sb.test.gone",
            Headers::new(),
            Bytes::new(),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(err, BusError::Disconnected);
}

/// External services use plain NATS clients: headers and replies cross over both ways.
#[tokio::test]
async fn nats_interoperates_with_plain_clients() {
    let server = NatsServer::start().expect("start nats-server");
    let bus = nats_bus(&server, &AtomicUsize::new(0)).await;
    let mut requests = bus
        .subscribe("sb.v1.api.cluster.status", None)
        .await
        .unwrap();

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(CODEC_HEADER, Codec::Json.header_value());
    let request = tokio::spawn(async move {
        client
            .request_with_headers("sb.v1.api.cluster.status", headers, bytes("{}"))
            .await
    });

    let message = next(&mut requests).await;
    assert_eq!(message.headers.codec(), Ok(Some(Codec::Json)));
    bus.respond(
        &message,
        Headers::with_codec(Codec::Json),
        bytes(r#"{"nodes":1}"#),
    )
    .await
    .unwrap();
    let reply = timeout(WAIT, request).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.payload, bytes(r#"{"nodes":1}"#));
    let codec = reply.headers.as_ref().and_then(|h| h.get(CODEC_HEADER));
    assert_eq!(codec.map(|v| v.as_str()), Some("json"));
}

/// Nodes starting together all open the same buckets at once; none may fail.
#[tokio::test]
async fn nats_many_nodes_opening_one_bucket_at_once_all_succeed() {
    let server = NatsServer::start().expect("start nats-server");
    let connections = AtomicUsize::new(0);
    let mut buses = Vec::new();
    for _ in 0..8 {
        buses.push(nats_bus(&server, &connections).await);
    }
    // Each opens the bucket and writes its own key at once, as nodes starting together do
    // with their membership records.
    let opened = futures::future::join_all(buses.iter().enumerate().map(|(i, bus)| async move {
        let kv = bus.kv("sb_race", 1).await.map_err(|e| e.to_string())?;
        kv.put(&format!("node-{i}"), bytes::Bytes::from_static(b"up"))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(kv)
    }))
    .await;
    for (i, result) in opened.iter().enumerate() {
        assert!(
            result.is_ok(),
            "connection {i}: {:?}",
            result.as_ref().err()
        );
    }
    let kv = opened[0].as_ref().expect("opened");
    kv.put("k", bytes::Bytes::from_static(b"v"))
        .await
        .expect("usable");
    let seen = opened[7]
        .as_ref()
        .expect("opened")
        .get("k")
        .await
        .expect("get");
    assert_eq!(seen.map(|e| e.value), Some(bytes::Bytes::from_static(b"v")));
}
