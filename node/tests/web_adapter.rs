//! The WhatsApp Web adapter (issue 12, docs/engines.md "The adapter"), exercised offline as
//! far as it goes: the real `whatsapp-rust` client built by `WhatsAppWebConnector` on our
//! storage backend (SQLite in `sqlite::*`, PostgreSQL in `postgres::*` through
//! `SALESBOY_TEST_POSTGRES_URL`, never skipped), with a pinned version and a fake transport
//! that fails or closes every connection. It starts, backs off and tries again, flushes its
//! device on shutdown; a client of a stale epoch has its flush refused and stops instead of
//! reconnecting. Logging in needs WhatsApp's servers: not tested here.
#![cfg(feature = "web-engine")]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use salesboy_actors::store::prelude::*;
use salesboy_actors::web::{WebConnector, WebError, WebEvent, WebEvents};
use salesboy_node::adapters::WhatsAppWebConnector;
use salesboy_testkit::eventually;
// The harness: a fresh database per test, the `web` tenant `acme` at epoch 1.
use salesboy_testkit::Backend as Db;
use salesboy_testkit::web_engine::{FlakyTransport, SilentTransport, WebFixture as Fixture};

/// How long a condition may take to come true (the library's first backoffs are 1 s, 1 s).
const PATIENCE: Duration = Duration::from_secs(30);

/// How long the library waits for WhatsApp's answer to its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = super::Fixture::new(super::Db::Sqlite).await;
                    super::$test(&fixture).await;
                    fixture.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = super::Fixture::new(super::Db::Postgres).await;
                    super::$test(&fixture).await;
                    fixture.close().await;
                }
            )*
        }
    };
}

on_both_databases!(
    the_client_starts_backs_off_and_flushes_on_shutdown,
    a_stale_client_has_its_flush_refused_and_stops,
    a_client_of_an_unclaimed_epoch_is_fenced_at_start,
    a_running_client_is_fenced_at_its_next_attempt,
    a_client_waiting_for_the_handshake_shuts_down_at_once,
);

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

async fn a_client_waiting_for_the_handshake_shuts_down_at_once(fixture: &Fixture) {
    // WhatsApp does not answer: the connection opens, the client says hello and waits for
    // the handshake's answer (the library gives up after 20 s)
    let transport = SilentTransport::new();
    let connector =
        WhatsAppWebConnector::with_transport(fixture.store.clone(), transport.factory());
    let client = connector.open(&fixture.tenant, 1, Recorded::default().sink());
    client.connect().await.expect("starts connecting");
    eventually(PATIENCE, || async {
        (transport.hellos() >= 1).then_some(())
    })
    .await;

    // a move's freeze shuts it down: the waiting connection is hung up, not waited out
    tokio::time::timeout(HANDSHAKE_TIMEOUT / 2, client.shutdown())
        .await
        .expect("shut down without waiting for the handshake's timeout");
    assert_eq!(transport.open(), 0, "no connection left open");
    assert_eq!(transport.connections(), 1, "and none opened again");
    assert!(fixture.device_updated_ms().await.is_some(), "flushed");
}

async fn the_client_starts_backs_off_and_flushes_on_shutdown(fixture: &Fixture) {
    let transport = FlakyTransport::new();
    let connector =
        WhatsAppWebConnector::with_transport(fixture.store.clone(), transport.factory());
    let events = Recorded::default();
    let client = connector.open(&fixture.tenant, 1, events.sink());
    assert_eq!(fixture.device_updated_ms().await, None, "no device before");

    client.connect().await.expect("starts connecting");
    // every attempt fails (the first refused, the next closed after the hello): the library
    // backs off and tries again
    eventually(PATIENCE, || async {
        (transport.attempts() >= 3).then_some(())
    })
    .await;
    // connecting again while the library's loop runs starts no second one
    client.connect().await.expect("still connecting");
    assert!(
        transport.hellos() >= 1,
        "a connection got as far as the hello"
    );

    client.shutdown().await;
    let flushed = fixture
        .device_updated_ms()
        .await
        .expect("the device is in web_devices");
    assert!(flushed > 0);
    // idempotent, and final
    client.shutdown().await;
    assert!(
        client.connect().await.is_err(),
        "a shut-down client stays down"
    );
    assert!(
        events.names().iter().all(|name| name != "Replaced"),
        "not fenced: {:?}",
        events.names()
    );
}

async fn a_stale_client_has_its_flush_refused_and_stops(fixture: &Fixture) {
    // the tenant's device, made at epoch 1
    let transport = FlakyTransport::new();
    let connector =
        WhatsAppWebConnector::with_transport(fixture.store.clone(), transport.factory());
    let first = connector.open(&fixture.tenant, 1, Recorded::default().sink());
    first.connect().await.expect("starts connecting");
    eventually(PATIENCE, || async {
        (transport.attempts() >= 1).then_some(())
    })
    .await;
    first.shutdown().await;
    let flushed = fixture.device_updated_ms().await.expect("a device");

    // another node claims epoch 2; a client of epoch 1 is opened late
    fixture.store.claim_epoch(&fixture.tenant, 2).await.unwrap();
    let late_transport = FlakyTransport::new();
    let connector =
        WhatsAppWebConnector::with_transport(fixture.store.clone(), late_transport.factory());
    let events = Recorded::default();
    let stale = connector.open(&fixture.tenant, 1, events.sink());
    // refused at once (building the client writes: the library probes the durability
    // buffer) or, were it to start, at its first connection attempt
    let _ = stale.connect().await;
    eventually(PATIENCE, || async {
        events
            .names()
            .iter()
            .any(|name| name == "Replaced")
            .then_some(())
    })
    .await;
    // the fence check comes before every connection: none was opened, none will be
    assert_eq!(late_transport.attempts(), 0);
    assert_eq!(stale.connect().await, Err(WebError::Fenced));

    stale.shutdown().await;
    stale.shutdown().await;
    assert_eq!(
        fixture.device_updated_ms().await,
        Some(flushed),
        "the stale flush was refused"
    );
    assert_eq!(
        events
            .names()
            .iter()
            .filter(|name| *name == "Replaced")
            .count(),
        1,
        "reported once: {:?}",
        events.names()
    );
}

async fn a_client_of_an_unclaimed_epoch_is_fenced_at_start(fixture: &Fixture) {
    // epoch 5 was never claimed: creating the device is refused when the client is built
    let transport = FlakyTransport::new();
    let connector =
        WhatsAppWebConnector::with_transport(fixture.store.clone(), transport.factory());
    let events = Recorded::default();
    let client = connector.open(&fixture.tenant, 5, events.sink());
    assert_eq!(client.connect().await, Err(WebError::Fenced));
    assert_eq!(events.names(), vec!["Replaced".to_owned()]);
    assert_eq!(transport.attempts(), 0);
    assert_eq!(fixture.device_updated_ms().await, None);
    client.shutdown().await;
}

async fn a_running_client_is_fenced_at_its_next_attempt(fixture: &Fixture) {
    let transport = FlakyTransport::new();
    let connector =
        WhatsAppWebConnector::with_transport(fixture.store.clone(), transport.factory());
    let events = Recorded::default();
    let client = connector.open(&fixture.tenant, 1, events.sink());
    client.connect().await.expect("starts connecting");
    eventually(PATIENCE, || async {
        (transport.attempts() >= 1).then_some(())
    })
    .await;

    // another node claims the tenant while the library backs off between attempts: no
    // write of epoch 1 succeeds from now on
    fixture.store.claim_epoch(&fixture.tenant, 2).await.unwrap();
    let written = fixture.device_updated_ms().await.expect("a device");
    eventually(PATIENCE, || async {
        events
            .names()
            .iter()
            .any(|name| name == "Replaced")
            .then_some(())
    })
    .await;
    // the library's loop was told to stop; connecting again is refused
    assert_eq!(client.connect().await, Err(WebError::Fenced));
    // shutting down a client whose loop ended on its own: returns, its flush is refused
    client.shutdown().await;
    client.shutdown().await;
    assert_eq!(fixture.device_updated_ms().await, Some(written));
}

// ---------------------------------------------------------------------------------------
// The recorded events
// ---------------------------------------------------------------------------------------

/// The events a client reported, by name.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<String>>>);

impl Recorded {
    fn sink(&self) -> WebEvents {
        let recorded = Arc::clone(&self.0);
        WebEvents::new(move |event| {
            let name = match &event {
                WebEvent::Replaced => "Replaced".to_owned(),
                other => format!("{other:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            };
            recorded.lock().push(name);
        })
    }

    fn names(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}
