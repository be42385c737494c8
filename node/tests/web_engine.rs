//! The session actor of a `web` tenant against a scripted WhatsApp Web engine
//! (`ScriptedWeb`), on a real SQLite store: pairing by QR code and by pairing code, connect,
//! inbound → exactly one reply, reconnection, `StreamReplaced`, ban, logout, outdated client,
//! an undecryptable message, the owner writing from the phone, and a move that shuts the old
//! client down before the new host's connects; ban hygiene (answer only, typing before a
//! send, the gap per chat, the daily cap, the ban alert).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::error::EpochError;
use salesboy_actors::error::TenantError;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::{Clock, EpochSource, EventSink, SystemClock};
use salesboy_actors::services::Settings;
use salesboy_actors::session::{SessionSnapshot, SessionStatus, WebHygiene, WebView};
use salesboy_actors::store::{Direction, NewOutbound, NewTenant, OutboundOrigin, Store};
use salesboy_actors::web::{WebError, WebEvent};
use salesboy_node::routing::Router;
use salesboy_node::store::SqlStore;
use salesboy_node::web_hosting::WebHosting;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::whatsapp::DeliveryStatus;
use salesboy_protocol::{ChatId, Engine, TenantId, Wamid};
use salesboy_testkit::eventually;
use salesboy_testkit::fake_web::{PAIR_CODE, ScriptedClient, ScriptedWeb, WebAction};
use salesboy_testkit::ports::{FixedProviders, RecordingWhatsApp, services};
use salesboy_testkit::web_engine::web_tenant;

const WAIT: Duration = Duration::from_secs(10);
const CUSTOMER: &str = "2348012345678";

/// Keeps every event the actors publish.
#[derive(Clone, Default)]
struct RecordedEvents(Arc<Mutex<Vec<Event>>>);

impl EventSink for RecordedEvents {
    fn publish(&self, event: Event) {
        self.0.lock().push(event);
    }
}

impl RecordedEvents {
    /// The `status` of every `session_status` event, oldest first.
    fn statuses(&self) -> Vec<String> {
        self.of(EventKind::SessionStatus)
            .iter()
            .map(|event| event.detail["status"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The `alert` of every raised (`AlertRaised`) or cleared (`AlertCleared`) alert.
    /// The details of the alerts named `name` published as `kind` (raised or cleared).
    fn alerts(&self, kind: EventKind, name: &str) -> Vec<serde_json::Value> {
        self.of(kind)
            .into_iter()
            .map(|event| event.detail)
            .filter(|alert| alert["alert"] == name)
            .collect()
    }

    fn of(&self, kind: EventKind) -> Vec<Event> {
        self.0
            .lock()
            .iter()
            .filter(|event| event.kind == kind)
            .cloned()
            .collect()
    }
}

struct Node {
    handle: NodeHandle,
    web: ScriptedWeb,
    events: RecordedEvents,
}

struct Harness {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.expect("store"));
    store
        .upsert_tenant(&web_tenant(&shop()))
        .await
        .expect("tenant");
    Harness { store, _dir: dir }
}

impl Harness {
    /// A node on the shared store with its own scripted engine, its ban hygiene out of the
    /// way ([`no_hygiene`]).
    async fn node(&self, name: &str) -> Node {
        self.node_with(name, no_hygiene()).await
    }

    /// A node whose `web` sessions keep `hygiene`.
    async fn node_with(&self, name: &str, hygiene: WebHygiene) -> Node {
        self.node_at(name, hygiene, 1).await
    }

    /// A node that hosts tenants at `epoch` (a failover: the tenant's previous host had
    /// an older one), its ban hygiene out of the way.
    async fn failover_node(&self, name: &str, epoch: u64) -> Node {
        self.node_at(name, no_hygiene(), epoch).await
    }

    /// A node whose `web` sessions keep `hygiene`, hosting tenants at `epoch`.
    async fn node_at(&self, name: &str, hygiene: WebHygiene, epoch: u64) -> Node {
        let settings = Settings {
            debounce: Duration::from_millis(20),
            web_reconnect_backoff: Duration::from_millis(20),
            web_hygiene: hygiene,
            ..Settings::default()
        };
        let shared = services(
            Arc::clone(&self.store),
            RecordingWhatsApp::default(),
            FixedProviders(vec![]),
            settings,
        );
        let mut services = Arc::into_inner(shared).expect("services not shared yet");
        let web = ScriptedWeb::default();
        let events = RecordedEvents::default();
        services.node = name.parse().expect("node id");
        services.web = Some(Arc::new(web.clone()));
        services.events = Arc::new(events.clone());
        services.epochs = Arc::new(AtEpoch(epoch));
        let (handle, _) = NodeHandle::start(Arc::new(services)).await.expect("node");
        Node {
            handle,
            web,
            events,
        }
    }
}

/// Ban hygiene out of the way: no typing delay, no gap, writing first allowed.
fn no_hygiene() -> WebHygiene {
    WebHygiene {
        answer_only: false,
        typing_ms_per_char: 0,
        typing_min_ms: 0,
        typing_max_ms: 0,
        typing_jitter_ms: 0,
        min_gap_per_chat_ms: 0,
        ..WebHygiene::default()
    }
}

/// Every tenant at one epoch: 1 on a node that hosts first, higher on one that took the
/// tenants over.
struct AtEpoch(u64);

#[async_trait::async_trait]
impl EpochSource for AtEpoch {
    async fn epoch_for(&self, _tenant: &TenantId) -> Result<u64, EpochError> {
        Ok(self.0)
    }
}

fn shop() -> TenantId {
    TenantId::new("corner-shop").expect("tenant id")
}

fn chat(id: &str) -> ChatId {
    ChatId::new(id).expect("chat id")
}

impl Node {
    /// Hosts the tenant; returns its first client, asked to connect.
    async fn host(&self) -> Arc<ScriptedClient> {
        self.handle.activate(&shop()).await.expect("activated");
        let client = self.web.client(0, WAIT).await;
        eventually(WAIT, || async { (client.connects() == 1).then_some(()) }).await;
        client
    }

    /// Hosts the tenant and connects its (linked) client.
    async fn connected(&self) -> Arc<ScriptedClient> {
        let client = self.host().await;
        client.emit(WebEvent::Connected {
            phone: Some("2348000000001".into()),
        });
        self.status_becomes(SessionStatus::Connected).await;
        client
    }

    /// `session.pair_code` on this node.
    async fn pair_code(&self, phone: &str) -> Result<String, TenantError> {
        let command = TenantCommand::WebPairCode {
            phone: phone.into(),
        };
        match self.handle.deliver(&shop(), command).await? {
            CommandReply::PairCode(code) => Ok(code),
            other => panic!("a pairing code, not {other:?}"),
        }
    }

    /// `session.qr` on this node: the session's account, codes and ban.
    async fn pair(&self) -> Result<WebView, TenantError> {
        match self.handle.deliver(&shop(), TenantCommand::WebPair).await? {
            CommandReply::Web(view) => Ok(view),
            other => panic!("a web view, not {other:?}"),
        }
    }

    /// The owner writes `body` to `to`.
    async fn owner_send(&self, to: &str, body: &str) {
        self.handle
            .deliver(
                &shop(),
                TenantCommand::OwnerSend {
                    chat: chat(to),
                    body: body.into(),
                },
            )
            .await
            .expect("owner message taken");
    }

    /// `session.logout` on this node.
    async fn logout(&self) -> Result<(), TenantError> {
        self.handle
            .deliver(&shop(), TenantCommand::WebLogout)
            .await
            .map(drop)
    }

    async fn session(&self) -> SessionSnapshot {
        self.handle
            .observe_tenant(&shop())
            .await
            .and_then(|tenant| tenant.session)
            .expect("the tenant runs a session")
    }

    /// Waits until this node published alert `name` as `kind`; its detail.
    async fn alert(&self, kind: EventKind, name: &str) -> serde_json::Value {
        eventually(WAIT, || async {
            self.events.alerts(kind, name).into_iter().next()
        })
        .await
    }

    async fn status_becomes(&self, status: SessionStatus) -> SessionSnapshot {
        eventually(WAIT, || async {
            let session = self.session().await;
            (session.status == status).then_some(session)
        })
        .await
    }
}

/// Waits until `client` has sent `n` messages and returns them.
async fn sent(client: &ScriptedClient, n: usize) -> Vec<(ChatId, String)> {
    eventually(WAIT, || async {
        let sent = client.sent();
        (sent.len() >= n).then_some(sent)
    })
    .await
}

async fn stored(ack: tokio::sync::oneshot::Receiver<()>) {
    tokio::time::timeout(WAIT, ack)
        .await
        .expect("acknowledged in time")
        .expect("committed to the store before the acknowledgement");
}

#[tokio::test]
async fn pairing_by_qr_then_a_customer_message_gets_exactly_one_reply() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.host().await;
    assert_eq!(client.epoch, 1, "opened at the tenant's epoch");

    client.emit(WebEvent::Qr {
        code: "2@first-ref".into(),
        valid_for: Duration::from_secs(60),
    });
    let session = node.status_becomes(SessionStatus::Pairing).await;
    assert_eq!(session.engine, Engine::Web);
    let pairing = session
        .web
        .and_then(|web| web.pairing)
        .expect("pairing shown");
    assert_eq!(pairing.qr.as_deref(), Some("2@first-ref"));
    assert!(pairing.qr_expires_ms.is_some());
    // a refreshed code is shown and published too
    client.emit(WebEvent::Qr {
        code: "2@second-ref".into(),
        valid_for: Duration::from_secs(20),
    });
    eventually(WAIT, || async {
        let pairing = node.session().await.web?.pairing?;
        (pairing.qr.as_deref() == Some("2@second-ref")).then_some(())
    })
    .await;

    client.emit(WebEvent::Paired {
        phone: "2348000000001".into(),
    });
    client.emit(WebEvent::Connected { phone: None });
    let session = node.status_becomes(SessionStatus::Connected).await;
    let web = session.web.expect("web view");
    assert_eq!(web.account.as_deref(), Some("2348000000001"));
    assert_eq!(web.pairing, None, "nothing to scan once linked");
    let pairing_events = node.events.of(EventKind::SessionStatus);
    let qrs: Vec<&str> = pairing_events
        .iter()
        .filter_map(|event| event.detail["qr"].as_str())
        .collect();
    assert_eq!(qrs, ["2@first-ref", "2@second-ref"]);
    assert_eq!(
        node.events.statuses(),
        ["pairing", "pairing", "connected"],
        "the session's states as events"
    );

    stored(client.message(CUSTOMER, "3EB0A1", "Do you deliver to Ikeja?", false)).await;
    let replies = sent(&client, 1).await;
    assert_eq!(replies[0].0, chat(CUSTOMER), "answered where it came from");

    // The server delivers the same message again (our acknowledgement was lost): stored
    // once, acknowledged again, answered once.
    stored(client.message(CUSTOMER, "3EB0A1", "Do you deliver to Ikeja?", false)).await;
    stored(client.message(CUSTOMER, "3EB0A2", "And to Lekki?", false)).await;
    let replies = sent(&client, 2).await;
    let messages = h
        .store
        .conversation_messages(&shop(), &chat(CUSTOMER), None, 100)
        .await
        .expect("messages");
    let inbound = messages
        .iter()
        .filter(|m| m.direction == salesboy_actors::store::Direction::Inbound)
        .count();
    assert_eq!(inbound, 2, "the redelivered message was stored once");
    assert_eq!(replies.len(), 2, "one reply per message: {replies:?}");
}

#[tokio::test]
async fn pairing_by_code_and_codes_running_out() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.host().await;
    let code = node.pair_code("2348000000001").await;
    assert_eq!(code.as_deref(), Ok(PAIR_CODE));
    assert_eq!(client.paired_phones(), ["2348000000001"]);
    let pairing = node.session().await.web.and_then(|web| web.pairing);
    assert_eq!(pairing.and_then(|p| p.code).as_deref(), Some(PAIR_CODE));
    let refused = node.pair_code("+234 800").await;
    assert!(
        matches!(refused, Err(TenantError::Web(WebError::InvalidPhone(_)))),
        "{refused:?}"
    );

    client.emit(WebEvent::PairingExpired);
    let session = node.status_becomes(SessionStatus::Disconnected).await;
    let pairing = session
        .web
        .and_then(|web| web.pairing)
        .expect("pairing shown");
    assert!(pairing.expired, "a clear state when the codes ran out");
    let last = node
        .events
        .of(EventKind::SessionStatus)
        .pop()
        .expect("event");
    assert_eq!(last.detail["reason"], "pairing_expired");

    // Asking again opens a fresh client, which offers new codes.
    node.pair().await.expect("pairing again");
    let fresh = node.web.client(1, WAIT).await;
    eventually(WAIT, || async { (fresh.connects() == 1).then_some(()) }).await;
    assert_eq!(client.shutdowns(), 1, "the old client was shut down");
    fresh.emit(WebEvent::Qr {
        code: "2@again".into(),
        valid_for: Duration::from_secs(60),
    });
    node.status_becomes(SessionStatus::Pairing).await;
    // the old client's late events are ignored
    client.emit(WebEvent::Connected { phone: None });
    fresh.emit(WebEvent::Outdated);
    node.status_becomes(SessionStatus::Outdated).await;
    assert!(
        !node.events.statuses().contains(&"connected".to_owned()),
        "the replaced client's event moved the session: {:?}",
        node.events.statuses()
    );
}

#[tokio::test]
async fn a_dropped_connection_reconnects_and_replies_wait_for_it() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    client.emit(WebEvent::Disconnected {
        reason: "stream error 515".into(),
    });
    node.status_becomes(SessionStatus::Disconnected).await;
    eventually(WAIT, || async { (client.connects() >= 2).then_some(()) }).await;

    node.handle
        .deliver(
            &shop(),
            TenantCommand::OwnerSend {
                chat: chat(CUSTOMER),
                body: "We open at nine".into(),
            },
        )
        .await
        .expect("owner message taken");
    let session = node.session().await;
    assert_eq!(session.queued, 1, "waits for the connection: {session:?}");
    assert!(client.sent().is_empty());

    client.emit(WebEvent::Connected { phone: None });
    let sent = sent(&client, 1).await;
    assert_eq!(sent, [(chat(CUSTOMER), "We open at nine".to_owned())]);
    let statuses = node.events.statuses();
    assert_eq!(statuses, ["connected", "disconnected", "connected"]);
    let disconnected = &node.events.of(EventKind::SessionStatus)[1];
    assert_eq!(disconnected.detail["reason"], "stream error 515");
}

#[tokio::test]
async fn stream_replaced_stops_the_client_for_good() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    client.emit(WebEvent::Replaced);
    node.status_becomes(SessionStatus::Replaced).await;
    assert_eq!(client.shutdowns(), 1, "stopped at once");
    assert_eq!(client.logouts(), 0, "never logged out");
    // A late disconnection of the stopped client, then a request to pair: neither brings a
    // connection back.
    client.emit(WebEvent::Disconnected {
        reason: "closed".into(),
    });
    node.pair().await.expect("answered");
    let session = node.session().await;
    assert_eq!(session.status, SessionStatus::Replaced);
    assert_eq!(node.web.clients().len(), 1, "no new client");
    assert_eq!(client.connects(), 1, "never reconnected");
}

#[tokio::test]
async fn a_ban_a_logout_and_an_outdated_client_are_states_not_retries() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    let until = 1_900_000_000_000;
    client.emit(WebEvent::TemporarilyBanned {
        code: 101,
        expires_ms: Some(until),
    });
    let session = node.status_becomes(SessionStatus::TemporarilyBanned).await;
    assert_eq!(session.web.and_then(|web| web.banned_until_ms), Some(until));
    let banned = node
        .events
        .of(EventKind::SessionStatus)
        .pop()
        .expect("event");
    assert_eq!(banned.detail["expires_ms"], until);

    client.emit(WebEvent::Connected { phone: None });
    node.status_becomes(SessionStatus::Connected).await;
    node.logout().await.expect("logged out");
    let session = node.session().await;
    assert_eq!(session.status, SessionStatus::LoggedOut);
    assert_eq!(client.logouts(), 1);
    assert_eq!(session.web.and_then(|web| web.account), None);

    node.pair().await.expect("pairing again");
    let fresh = node.web.client(1, WAIT).await;
    fresh.emit(WebEvent::Outdated);
    node.status_becomes(SessionStatus::Outdated).await;
    assert_eq!(
        node.events.statuses(),
        [
            "connected",
            "temporarily_banned",
            "connected",
            "logged_out",
            "outdated"
        ]
    );
    assert_eq!(client.connects() + fresh.connects(), 2, "no retries");
}

#[tokio::test]
async fn an_undecryptable_message_is_an_event_and_gets_no_reply() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    client.emit(WebEvent::Undecryptable {
        chat: chat(CUSTOMER),
        id: Wamid::new("3EB0BAD").expect("id"),
        sent_ms: 1_700_000_000_000,
    });
    let event = eventually(WAIT, || async {
        node.events.of(EventKind::MessageUndecryptable).pop()
    })
    .await;
    assert_eq!(event.chat, Some(chat(CUSTOMER)));
    assert_eq!(event.detail["wamid"], "3EB0BAD");
    stored(client.message(CUSTOMER, "3EB0GOOD", "hello?", false)).await;
    let replies = sent(&client, 1).await;
    assert_eq!(replies.len(), 1, "only the readable message is answered");
}

#[tokio::test]
async fn the_owner_writing_from_the_phone_takes_over_the_chat() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    stored(client.message(CUSTOMER, "3EB0OWN1", "Hi, it's Ada from the shop", true)).await;
    stored(client.message(CUSTOMER, "3EB0C1", "Great, is the blue one left?", false)).await;
    let conversation = eventually(WAIT, || async {
        let snapshot = node
            .handle
            .observe_conversation(&shop(), chat(CUSTOMER))
            .await?;
        (snapshot.dismissed == 1).then_some(snapshot)
    })
    .await;
    assert!(
        conversation.bot_paused_until_ms.is_some(),
        "{conversation:?}"
    );
    assert!(client.sent().is_empty(), "the bot stepped back");
    let messages = h
        .store
        .conversation_messages(&shop(), &chat(CUSTOMER), None, 100)
        .await
        .expect("messages");
    assert!(
        messages
            .iter()
            .any(|m| m.body.as_deref() == Some("Hi, it's Ada from the shop")
                && m.direction == salesboy_actors::store::Direction::Outbound),
        "the owner's message is in the history"
    );
}

#[tokio::test]
async fn a_move_shuts_the_old_client_down_before_the_new_host_connects() {
    let h = harness().await;
    let a = h.node("node-a").await;
    let b = h.node("node-b").await;
    let old = a.connected().await;
    stored(old.message(CUSTOMER, "3EB0M1", "first", false)).await;
    sent(&old, 1).await;

    let handoff = a.handle.freeze(&shop()).await.expect("frozen");
    assert_eq!(old.shutdowns(), 1, "shut down (flushed) before the handoff");
    assert_eq!(old.logouts(), 0, "never logged out on a move");
    a.handle.release(&shop()).await;
    b.handle.adopt(handoff, 2).await.expect("adopted");
    let new = b.web.client(0, WAIT).await;
    assert_eq!(new.epoch, 2, "opened at the new epoch");
    eventually(WAIT, || async { (new.connects() == 1).then_some(()) }).await;
    new.emit(WebEvent::Connected { phone: None });
    b.status_becomes(SessionStatus::Connected).await;
    stored(new.message(CUSTOMER, "3EB0M2", "second", false)).await;
    sent(&new, 1).await;
    assert_eq!(old.sent().len(), 1, "nothing more through the old client");
}

#[tokio::test]
async fn a_failover_host_connects_at_a_newer_epoch_and_the_old_client_stops() {
    let h = harness().await;
    let a = h.node("node-a").await;
    let b = h.failover_node("node-b", 2).await;
    let old = a.connected().await;
    stored(old.message(CUSTOMER, "3EB0F1", "first", false)).await;
    sent(&old, 1).await;

    // node-a is cut off (no freeze, no handoff): node-b takes the tenant over, loading the
    // session from the store at a newer epoch; no new pairing is asked for
    let new = b.host().await;
    assert!(new.epoch > old.epoch, "{} after {}", new.epoch, old.epoch);
    new.emit(WebEvent::Connected {
        phone: Some("2348000000001".into()),
    });
    b.status_becomes(SessionStatus::Connected).await;
    // WhatsApp lets the newest connection win and tells the old one
    old.emit(WebEvent::Replaced);
    a.status_becomes(SessionStatus::Replaced).await;
    assert_eq!(old.shutdowns(), 1, "the old client stopped");
    assert_eq!(old.logouts(), 0, "never logged out");

    stored(new.message(CUSTOMER, "3EB0F2", "second", false)).await;
    sent(&new, 1).await;
    assert_eq!(old.sent().len(), 1, "nothing more through the old client");
    assert_eq!(old.connects(), 1, "the old client never reconnected");
}

#[tokio::test]
async fn web_tenants_hosted_nowhere_are_started_and_stopped_ones_are_left_alone() {
    let h = harness().await;
    let node = h.node("node-a").await;
    for (id, engine) in [("kiosk", Engine::Web), ("acme", Engine::CloudApi)] {
        h.store
            .upsert_tenant(&NewTenant {
                id: TenantId::new(id).expect("id"),
                name: id.into(),
                system_prompt: None,
                llm_config: None,
                llm_monthly_spend_cap_micros: None,
                embedding_model: None,
                engine,
                web_hygiene: None,
                read_receipts: None,
                created_ms: 1,
            })
            .await
            .expect("tenant");
    }
    let kiosk = TenantId::new("kiosk").expect("id");
    h.store
        .set_session_stopped(&kiosk, true, 5)
        .await
        .expect("stopped");
    let hosting = WebHosting {
        store: Arc::clone(&h.store),
        node: node.handle.clone(),
        router: Router::Local(node.handle.clone()),
        cluster: None,
    };
    assert_eq!(hosting.check().await, 1, "the running web tenant only");
    assert_eq!(node.handle.hosted_tenants(), [shop()]);
    let client = node.web.client(0, WAIT).await;
    assert_eq!(client.tenant, shop());
    eventually(WAIT, || async { (client.connects() == 1).then_some(()) }).await;
    assert_eq!(hosting.check().await, 0, "hosted already");
    assert_eq!(node.web.clients().len(), 1);
}

#[tokio::test]
async fn a_move_called_off_connects_a_new_client_here() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let old = node.connected().await;
    node.handle.freeze(&shop()).await.expect("frozen");
    assert_eq!(old.shutdowns(), 1);
    node.handle.thaw(&shop());
    let new = node.web.client(1, WAIT).await;
    eventually(WAIT, || async { (new.connects() == 1).then_some(()) }).await;
    assert_eq!(new.epoch, 1, "same host, same epoch");
    new.emit(WebEvent::Connected { phone: None });
    node.status_becomes(SessionStatus::Connected).await;
}

/// A harness and one node whose sessions keep `hygiene`, the tenant hosted and connected.
async fn connected_with(hygiene: WebHygiene) -> (Harness, Node, Arc<ScriptedClient>) {
    let h = harness().await;
    let node = h.node_with("node-a", hygiene).await;
    let client = node.connected().await;
    (h, node, client)
}

/// Hygiene without waits, for the rule under test to be set.
fn quick_hygiene() -> WebHygiene {
    WebHygiene {
        typing_ms_per_char: 0,
        typing_min_ms: 0,
        typing_max_ms: 0,
        typing_jitter_ms: 0,
        min_gap_per_chat_ms: 0,
        ..WebHygiene::default()
    }
}

const STRANGER: &str = "2348099999999";
const OTHER: &str = "2348011111111";

#[tokio::test]
async fn answer_only_refuses_writing_first_and_allows_answering() {
    let (h, node, client) = connected_with(quick_hygiene()).await;

    node.owner_send(STRANGER, "Big sale today!").await;
    eventually(WAIT, || async {
        (node.session().await.failed == 1).then_some(())
    })
    .await;
    assert!(client.sent().is_empty(), "never written first");
    let refused = h
        .store
        .conversation_messages(&shop(), &chat(STRANGER), None, 10)
        .await
        .expect("messages");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let failure = refused[0].failure.as_ref().expect("failed");
    assert_eq!(failure.title, "not_a_contact", "{refused:?}");

    stored(client.message(CUSTOMER, "3EB0AO1", "Is the shop open?", false)).await;
    let replies = sent(&client, 1).await;
    assert_eq!(replies[0].0, chat(CUSTOMER), "a customer is answered");
    node.owner_send(CUSTOMER, "Yes, until six").await;
    let sent = sent(&client, 2).await;
    assert_eq!(sent[1], (chat(CUSTOMER), "Yes, until six".to_owned()));
}

#[tokio::test]
async fn typing_is_shown_on_the_customers_message_before_the_reply() {
    let hygiene = WebHygiene {
        typing_ms_per_char: 1,
        typing_min_ms: 20,
        typing_max_ms: 50,
        typing_jitter_ms: 20,
        ..quick_hygiene()
    };
    let (_h, _node, client) = connected_with(hygiene).await;
    stored(client.message(CUSTOMER, "3EB0TY1", "How much is the blue one?", false)).await;
    sent(&client, 1).await;
    let actions = client.actions();
    let typing = actions.iter().position(|action| {
        *action
            == WebAction::Read {
                wamid: Wamid::new("3EB0TY1").expect("wamid"),
                typing: true,
            }
    });
    let reply = actions
        .iter()
        .position(|action| matches!(action, WebAction::Sent { .. }));
    assert!(
        typing.is_some() && typing < reply,
        "read with typing, then the reply: {actions:?}"
    );
}

#[tokio::test]
async fn the_gap_per_chat_holds_the_next_message_but_not_other_chats() {
    let hygiene = WebHygiene {
        min_gap_per_chat_ms: 3_600_000,
        ..quick_hygiene()
    };
    let (_h, node, client) = connected_with(hygiene).await;
    stored(client.message(CUSTOMER, "3EB0G1", "Hello", false)).await;
    sent(&client, 1).await;

    node.owner_send(CUSTOMER, "One more thing").await;
    eventually(WAIT, || async {
        (node.session().await.queued == 1).then_some(())
    })
    .await;
    stored(client.message(OTHER, "3EB0G2", "Hi there", false)).await;
    let sent = sent(&client, 2).await;
    assert_eq!(sent[1].0, chat(OTHER), "another chat is not held: {sent:?}");
    assert_eq!(
        client.sent().len(),
        2,
        "the second message to the first chat waits for its gap"
    );
    assert_eq!(node.session().await.queued, 1);
}

#[tokio::test]
async fn the_daily_cap_holds_sends_over_it_and_raises_an_alert() {
    let hygiene = WebHygiene {
        daily_cap: 1,
        ..quick_hygiene()
    };
    let (_h, node, client) = connected_with(hygiene).await;
    stored(client.message(CUSTOMER, "3EB0C1", "Hello", false)).await;
    sent(&client, 1).await;

    node.owner_send(CUSTOMER, "Over the cap").await;
    let alert = node
        .alert(EventKind::AlertRaised, "web_daily_cap_reached")
        .await;
    assert_eq!(alert["cap"], 1);
    let session = node.session().await;
    assert_eq!(session.queued, 1, "pending, not lost: {session:?}");
    assert_eq!(session.failed, 0);
    assert_eq!(client.sent().len(), 1);
    let raised = node
        .events
        .alerts(EventKind::AlertRaised, "web_daily_cap_reached")
        .len();
    assert_eq!(raised, 1, "raised once");
}

#[tokio::test]
async fn the_daily_cap_counts_the_days_sends_from_before_the_session_started() {
    let h = harness().await;
    // Sent today by the tenant's session before (on another node, or before a restart).
    let now_ms = SystemClock.now_ms();
    h.store
        .record_outbound(&NewOutbound {
            tenant: shop(),
            chat: chat(CUSTOMER),
            origin: OutboundOrigin::Bot,
            wamid: Some(Wamid::new("3EB0EARLIER").expect("wamid")),
            kind: "text".into(),
            body: Some("Good morning".into()),
            created_ms: now_ms,
            epoch: None,
            client_ref: None,
            content: None,
        })
        .await
        .expect("recorded");
    let hygiene = WebHygiene {
        daily_cap: 1,
        ..quick_hygiene()
    };
    let node = h.node_with("node-a", hygiene).await;
    let client = node.connected().await;

    stored(client.message(CUSTOMER, "3EB0D1", "Hello again", false)).await;
    node.alert(EventKind::AlertRaised, "web_daily_cap_reached")
        .await;
    let session = node.session().await;
    assert_eq!(
        session.queued, 1,
        "the reply waits for tomorrow: {session:?}"
    );
    assert!(client.sent().is_empty(), "{:?}", client.sent());
}

#[tokio::test]
async fn receipts_move_a_replys_status_to_delivered_then_read() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    stored(client.message(CUSTOMER, "3EB0RC1", "Do you deliver?", false)).await;
    sent(&client, 1).await;
    let reply = || async {
        h.store
            .conversation_messages(&shop(), &chat(CUSTOMER), None, 10)
            .await
            .expect("messages")
            .into_iter()
            .find(|message| message.direction == Direction::Outbound && message.wamid.is_some())
    };
    let sent_reply = eventually(WAIT, reply).await;
    let wamid = sent_reply.wamid.clone().expect("sent");

    for status in [DeliveryStatus::Delivered, DeliveryStatus::Read] {
        client.emit(WebEvent::Receipt {
            ids: vec![wamid.clone(), Wamid::new("3EB0NOTOURS").expect("wamid")],
            status,
            at_ms: SystemClock.now_ms(),
        });
        eventually(WAIT, || async {
            let message = reply().await?;
            (message.status == Some(status)).then_some(())
        })
        .await;
    }
    // A late delivery receipt does not move it back.
    client.emit(WebEvent::Receipt {
        ids: vec![wamid.clone()],
        status: DeliveryStatus::Delivered,
        at_ms: SystemClock.now_ms(),
    });
    // The session handles its events in order: once it answers, the receipt was applied.
    node.session().await;
    assert_eq!(
        reply().await.and_then(|message| message.status),
        Some(DeliveryStatus::Read)
    );

    // A receipt that comes before its message is recorded is applied once it is.
    let early = Wamid::new("3EB0EARLY").expect("wamid");
    client.emit(WebEvent::Receipt {
        ids: vec![early.clone()],
        status: DeliveryStatus::Delivered,
        at_ms: SystemClock.now_ms(),
    });
    node.session().await;
    h.store
        .record_outbound(&NewOutbound {
            tenant: shop(),
            chat: chat(CUSTOMER),
            origin: OutboundOrigin::Echo,
            wamid: Some(early.clone()),
            kind: "text".into(),
            body: Some("Sent from the phone".into()),
            created_ms: SystemClock.now_ms(),
            epoch: None,
            client_ref: None,
            content: None,
        })
        .await
        .expect("recorded");
    eventually(WAIT, || async {
        h.store
            .conversation_messages(&shop(), &chat(CUSTOMER), None, 10)
            .await
            .expect("messages")
            .into_iter()
            .find(|message| message.wamid.as_ref() == Some(&early))
            .filter(|message| message.status == Some(DeliveryStatus::Delivered))
    })
    .await;
}

#[tokio::test]
async fn a_ban_raises_an_alert_and_the_next_connection_clears_it() {
    let h = harness().await;
    let node = h.node("node-a").await;
    let client = node.connected().await;
    let until = 1_900_000_000_000_i64;
    client.emit(WebEvent::TemporarilyBanned {
        code: 402,
        expires_ms: Some(until),
    });
    let alert = node.alert(EventKind::AlertRaised, "session_banned").await;
    assert_eq!(alert["expires_ms"], until);
    assert!(node.events.of(EventKind::AlertCleared).is_empty());

    client.emit(WebEvent::Connected { phone: None });
    node.alert(EventKind::AlertCleared, "session_banned").await;
}
