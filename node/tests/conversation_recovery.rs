//! A conversation's batch against its responder and session, on a real SQL store and a real
//! actor tree, with a scripted LLM provider: the prompt holds the customer's question once, a
//! message handed over twice is asked once, a responder task that panics does not leave the
//! batch in flight for ever, and a reply whose `sent` mark the database refuses for a while
//! is not sent again; the sweep stops a conversation once it is idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use salesboy_actors::command::TenantCommand;
use salesboy_actors::conversation::InboundItem;
use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::{Clock, Completion, LlmError, LlmProvider, Prompt, SystemClock};
use salesboy_actors::services::Settings;
use salesboy_actors::store::{
    AccessToken, InsertOutcome, NewInbound, NewTenant, NewWhatsAppNumber, Predecessor, Store,
};
use salesboy_node::store::SqlStore;
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};
use salesboy_testkit::ports::{FixedProviders, RecordingWhatsApp, services};
use salesboy_testkit::postgres::PostgresDatabase;
use sqlx::PgPool;

const QUESTION: &str = "do you have red shoes in size 42?";
const WAIT: Duration = Duration::from_secs(20);

/// Records the prompts it is asked; panics on the first `panics` of them.
struct ScriptedLlm {
    prompts: Mutex<Vec<Prompt>>,
    calls: AtomicUsize,
    panics: usize,
}

#[async_trait]
impl LlmProvider for ScriptedLlm {
    fn name(&self) -> &str {
        "scripted"
    }

    fn model(&self) -> &str {
        "scripted-1"
    }

    fn cost_micros(&self, _prompt_tokens: u64, _completion_tokens: u64) -> u64 {
        0
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        self.prompts.lock().unwrap().push(prompt.clone());
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.panics {
            panic!("scripted provider panics");
        }
        Ok(Completion {
            text: "Yes, we do.".into(),
            model: "scripted-1".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
        })
    }
}

struct Harness {
    node: NodeHandle,
    store: Arc<dyn Store>,
    llm: Arc<ScriptedLlm>,
    whatsapp: RecordingWhatsApp,
    _db: Database,
}

/// Where a harness keeps its data: a SQLite file, or a fresh PostgreSQL database.
enum Database {
    Sqlite(tempfile::TempDir),
    Postgres(PostgresDatabase),
}

impl Database {
    fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            Self::Postgres(db) => db.url().to_owned(),
        }
    }
}

async fn harness(panics: usize) -> Harness {
    harness_on(Database::Sqlite(tempfile::tempdir().unwrap()), panics).await
}

async fn harness_on(db: Database, panics: usize) -> Harness {
    harness_debounced(db, panics, Duration::from_millis(20)).await
}

async fn harness_debounced(db: Database, panics: usize, debounce: Duration) -> Harness {
    let settings = Settings {
        debounce,
        sweep_interval: Duration::from_millis(100),
        unrouted_grace: Duration::ZERO,
        ..Settings::default()
    };
    harness_with(db, panics, settings).await
}

/// A harness whose sweep does not come round during a test: a message whose hand-off is
/// left out stays unoffered unless the conversation finds it in the store.
async fn harness_without_sweep() -> Harness {
    let settings = Settings {
        debounce: Duration::from_millis(20),
        sweep_interval: Duration::from_secs(3600),
        ..Settings::default()
    };
    harness_with(Database::Sqlite(tempfile::tempdir().unwrap()), 0, settings).await
}

async fn harness_with(db: Database, panics: usize, settings: Settings) -> Harness {
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&db.url()).await.unwrap());
    let llm = Arc::new(ScriptedLlm {
        prompts: Mutex::default(),
        calls: AtomicUsize::new(0),
        panics,
    });
    let whatsapp = RecordingWhatsApp::default();
    let providers = FixedProviders(vec![Arc::clone(&llm) as Arc<dyn LlmProvider>]);
    let services = services(Arc::clone(&store), whatsapp.clone(), providers, settings);
    store
        .upsert_tenant(&NewTenant {
            id: acme(),
            name: "acme shop".into(),
            system_prompt: Some("You sell shoes.".into()),
            llm_config: None,
            llm_monthly_spend_cap_micros: None,
            embedding_model: None,
            engine: Default::default(),
            web_hygiene: None,
            read_receipts: None,
            created_ms: 1,
        })
        .await
        .unwrap();
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: acme(),
            phone_number_id: PhoneNumberId::new("106540352242922").unwrap(),
            waba_id: None,
            access_token: AccessToken::new("token-acme"),
        })
        .await
        .unwrap();
    let (node, _) = NodeHandle::start(services).await.unwrap();
    Harness {
        node,
        store,
        llm,
        whatsapp,
        _db: db,
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn customer() -> ChatId {
    ChatId::new("16505551234").unwrap()
}

impl Harness {
    /// Persists the customer's question, as the ingress does, and hands it over.
    async fn customer_asks(&self) {
        let item = self.store_question().await;
        self.hand_over(item).await;
    }

    /// Persists the customer's question, as the ingress does.
    async fn store_question(&self) -> InboundItem {
        self.store_message("wamid.in1", QUESTION).await
    }

    /// Persists a message of the customer's as the ingress does, with the message the store
    /// saw before it in the chat.
    async fn store_message(&self, wamid: &str, text: &str) -> InboundItem {
        let wamid = Wamid::new(wamid).unwrap();
        let received_ms = SystemClock.now_ms();
        let stored = self
            .store
            .insert_inbound_batch(&[NewInbound {
                tenant: acme(),
                chat: customer(),
                wamid: wamid.clone(),
                received_ms,
                sent_ms: Some(received_ms),
                kind: "text".into(),
                body: Some(text.into()),
                raw: None,
            }])
            .await
            .pop()
            .unwrap()
            .unwrap();
        let InsertOutcome::Inserted { id } = stored.outcome else {
            panic!("not inserted: {stored:?}");
        };
        InboundItem {
            id,
            wamid: Some(wamid),
            text: Some(text.into()),
            received_ms,
            sent_ms: received_ms,
            predecessor: stored.predecessor,
        }
    }

    /// The questions the LLM was asked, in order.
    fn questions(&self) -> Vec<String> {
        let prompts = self.llm.prompts.lock().unwrap();
        prompts
            .iter()
            .map(|prompt| prompt.question.clone())
            .collect()
    }

    /// Polls until `count` replies are sent.
    async fn wait_for_replies(&self, count: usize) {
        until(&format!("{count} replies sent"), || async {
            self.whatsapp.sent.lock().len() >= count
        })
        .await;
    }

    /// Hands a stored message to its conversation, as the ingress or the sweep does.
    async fn hand_over(&self, item: InboundItem) {
        self.node
            .deliver(
                &acme(),
                TenantCommand::Inbound {
                    chat: customer(),
                    item,
                },
            )
            .await
            .unwrap();
    }

    async fn wait_for_reply(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.whatsapp.sent.lock().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no reply within {WAIT:?}; llm calls: {}",
                self.llm.calls.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_new_conversations_prompt_holds_the_question_once() {
    let h = harness(0).await;
    h.customer_asks().await;
    h.wait_for_reply().await;
    let prompts = h.llm.prompts.lock().unwrap().clone();
    let prompt = prompts.first().expect("the llm was asked");
    assert_eq!(prompt.question, QUESTION);
    let in_history = prompt
        .history
        .iter()
        .filter(|turn| turn.text.contains(QUESTION))
        .count();
    assert_eq!(in_history, 0, "history repeats the question: {prompt:?}");
}

#[tokio::test]
async fn a_message_handed_over_twice_while_waiting_is_asked_once() {
    let db = Database::Sqlite(tempfile::tempdir().unwrap());
    let h = harness_debounced(db, 0, Duration::from_millis(500)).await;
    let item = h.store_question().await;
    h.hand_over(item.clone()).await;
    // The sweep, or a repeated hand-off, offers it again before the debounce ends.
    h.hand_over(item).await;
    h.wait_for_reply().await;
    let prompts = h.llm.prompts.lock().unwrap().clone();
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert_eq!(prompts[0].question, QUESTION);
    assert_eq!(h.whatsapp.bodies(), ["Yes, we do."]);
}

#[tokio::test]
async fn a_responder_task_that_panics_leaves_the_batch_for_a_retry() {
    let h = harness(1).await;
    h.customer_asks().await;
    // The first attempt panics; the sweep offers the unanswered message again.
    h.wait_for_reply().await;
    assert_eq!(h.whatsapp.bodies(), ["Yes, we do."]);
    assert_eq!(h.llm.calls.load(Ordering::SeqCst), 2);
}

/// A message whose hand-off was lost is found by the next one handed over, which names it
/// as its predecessor: the conversation checks the store and answers both together, the
/// earlier first.
#[tokio::test]
async fn a_message_whose_hand_off_was_lost_is_answered_with_the_next() {
    let h = harness_without_sweep().await;
    let first = h.store_message("wamid.q1", "hello").await;
    assert_eq!(first.predecessor, Predecessor::FirstInChat);
    h.hand_over(first).await;
    h.wait_for_replies(1).await;

    let lost = h.store_message("wamid.q2", "red shoes?").await;
    let next = h.store_message("wamid.q3", "size 42").await;
    assert_eq!(next.predecessor, Predecessor::Message(lost.id));
    h.hand_over(next).await;
    h.wait_for_replies(2).await;

    assert_eq!(h.questions(), ["hello", "red shoes?\nsize 42"]);
}

/// A message handed over right after the one the conversation answered is taken without a
/// check against the store; should it have been handled behind the conversation's back,
/// recording the reply refuses a second answer, nothing is sent, and the next message is
/// checked again.
#[tokio::test]
async fn an_in_order_hand_off_skips_the_store_and_recording_still_refuses_a_second_answer() {
    let h = harness_without_sweep().await;
    let first = h.store_message("wamid.q1", "hello").await;
    let first_id = first.id;
    h.hand_over(first).await;
    h.wait_for_replies(1).await;

    let second = h.store_message("wamid.q2", "and in blue?").await;
    assert_eq!(second.predecessor, Predecessor::Message(first_id));
    // Dismissed behind the conversation's back: a check against the store would drop it.
    let epoch = h.store.current_epoch(&acme()).await.unwrap().unwrap_or(0);
    h.store
        .dismiss_inbound(
            &acme(),
            &customer(),
            &[second.id],
            SystemClock.now_ms(),
            epoch,
        )
        .await
        .unwrap();
    h.hand_over(second).await;
    until("the llm asked about the second message", || async {
        h.llm.calls.load(Ordering::SeqCst) >= 2
    })
    .await;
    until("the second batch done with no reply recorded", || async {
        h.node
            .observe_conversation(&acme(), customer())
            .await
            .is_some_and(|c| !c.replying && c.replies == 1)
    })
    .await;
    assert_eq!(
        h.whatsapp.bodies().len(),
        1,
        "the dismissed message was answered"
    );

    // Its batch was refused: the next message is checked against the store, and answered.
    let third = h.store_message("wamid.q3", "thanks").await;
    h.hand_over(third).await;
    h.wait_for_replies(2).await;
    assert_eq!(h.questions(), ["hello", "and in blue?", "thanks"]);
}

/// The database refuses every `sent` mark (a trigger raises, and counts the attempts in a
/// sequence, which no rollback undoes) until the test lifts it.
const REFUSE_SENT_MARKS: &str = "
    CREATE SEQUENCE sent_mark_attempts;
    CREATE FUNCTION refuse_sent_mark() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM nextval('sent_mark_attempts');
        RAISE EXCEPTION 'injected: the database refuses to record sends';
    END $$;
    CREATE TRIGGER refuse_sent_mark BEFORE UPDATE ON messages FOR EACH ROW
        WHEN (NEW.status = 'sent') EXECUTE FUNCTION refuse_sent_mark();";

/// Polls `probe` every 20 ms until it holds, failing after [`WAIT`].
async fn until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reply_whose_sent_mark_fails_is_marked_later_and_not_sent_again() {
    let db = PostgresDatabase::create().await.expect("test database");
    let url = db.url().to_owned();
    let h = harness_on(Database::Postgres(db), 0).await;
    let sql = PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(REFUSE_SENT_MARKS)
        .execute(&sql)
        .await
        .unwrap();

    h.customer_asks().await;
    h.wait_for_reply().await;
    // Meta took the reply; the database refuses to record it three times over.
    until("three refused sent marks", || {
        let sql = sql.clone();
        async move {
            let (last, called): (i64, bool) =
                sqlx::query_as("SELECT last_value, is_called FROM sent_mark_attempts")
                    .fetch_one(&sql)
                    .await
                    .unwrap();
            called && last >= 3
        }
    })
    .await;
    sqlx::raw_sql("DROP TRIGGER refuse_sent_mark ON messages")
        .execute(&sql)
        .await
        .unwrap();
    until("the reply recorded as sent", || {
        let sql = sql.clone();
        async move {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE direction = 'outbound' AND status <> 'sent'",
            )
            .fetch_one(&sql)
            .await
            .unwrap();
            pending == 0
        }
    })
    .await;
    assert_eq!(h.whatsapp.bodies(), ["Yes, we do."], "sent once");
}

#[tokio::test]
async fn the_sweep_stops_a_conversation_once_idle_and_the_next_message_starts_it_again() {
    let settings = Settings {
        debounce: Duration::from_millis(20),
        sweep_interval: Duration::from_millis(50),
        conversation_idle: Duration::from_millis(300),
        tenant_idle: Duration::from_secs(3600),
        ..Settings::default()
    };
    let h = harness_with(Database::Sqlite(tempfile::tempdir().unwrap()), 0, settings).await;
    h.customer_asks().await;
    h.wait_for_replies(1).await;
    let live = || async {
        h.node
            .observe_tenant(&acme())
            .await
            .expect("the tenant is hosted")
            .conversations
    };
    until("the idle conversation stopped", || async {
        live().await == 0
    })
    .await;

    let next = h.store_message("wamid.in2", "and in blue?").await;
    h.hand_over(next).await;
    h.wait_for_replies(2).await;
    assert_eq!(h.questions(), [QUESTION, "and in blue?"]);
}
