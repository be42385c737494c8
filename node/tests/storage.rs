//! The storage suite: written once, run against SQLite and Postgres.
//!
//! The test kit's `database_suite!` turns every `async fn(Arc<dyn Store>)` (or
//! `async fn(SqlStore)` or `async fn(Fixture)`, for what only the SQL store offers: the
//! events outbox, tenant tokens, plain SQL) below into two tests, `sqlite::<name>` and
//! `postgres::<name>`, each on a fresh database ([`FreshDatabase`]): SQLite in a temp dir,
//! Postgres in a uniquely named database created through `SALESBOY_TEST_POSTGRES_URL`
//! (default `postgres://postgres:postgres@127.0.0.1:5432/postgres`) and dropped afterwards.
//! A Postgres that cannot be reached fails the Postgres tests; they are never skipped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::store::NewRejectedItem;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    AccessToken, Deletion, DeliveryStatus, Direction, DismissOutcome, InsertOutcome,
    KnownKnowledge, LlmUsage, LlmUsageTotals, NewInbound, NewKnowledge, NewOutbound, NewReply,
    NewStatus, NewTenant, NewTenantToken, NewWhatsAppNumber, OutboundOrigin, PAUSED_INDEFINITELY,
    Predecessor, ReplyOutcome, SendFailure, StatusOutcome, Store, StoreError, StoredInbound,
    StoredMessage, UsageReport,
};
use salesboy_node::cluster::placement::{CandidateLoad, PlacementDecision, PlacementReason};
use salesboy_node::store::{AttemptOutcome, AttemptRecord, Dialect, QueueKey, SqlStore, Webhook};
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::whatsapp::RejectedItem;
use salesboy_protocol::whatsapp::send::{
    Interactive, InteractiveAction, InteractiveText, ReplyButton,
};
use salesboy_protocol::{ChatId, Engine, PhoneNumberId, TenantId, Wamid};
use salesboy_testkit::{Backend, FreshDatabase, database_suite, run_on_fresh_store};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

// ---------------------------------------------------------------------------------------
// Fixtures: one fresh database per test.
// ---------------------------------------------------------------------------------------

/// A moment in November 2023, as unix milliseconds: the suite's "now".
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

/// A fresh database: the store on it, and its URL (for tests that also need plain SQL).
struct Fixture {
    store: SqlStore,
    url: String,
}

/// What a suite test takes: the store through the actors' trait, the SQL store itself, or
/// a [`Fixture`].
trait Subject {
    fn from_sql(store: SqlStore, url: &str) -> Self;
}

impl Subject for Arc<dyn Store> {
    fn from_sql(store: SqlStore, _url: &str) -> Self {
        Arc::new(store)
    }
}

impl Subject for SqlStore {
    fn from_sql(store: SqlStore, _url: &str) -> Self {
        store
    }
}

impl Subject for Fixture {
    fn from_sql(store: SqlStore, url: &str) -> Self {
        Self {
            store,
            url: url.to_owned(),
        }
    }
}

/// Runs `test` against a fresh store of `backend`, then removes the database, also when
/// the test fails.
async fn run_on<S, F, Fut>(backend: Backend, test: F)
where
    S: Subject,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_on_fresh_store(backend, |store, url| test(S::from_sql(store, &url))).await;
}

database_suite!(
    run_on =>
    health_answers,
    tenants_round_trip_and_route_by_phone_number,
    whatsapp_numbers_belong_to_one_tenant,
    duplicate_inbound_is_a_noop,
    concurrent_duplicate_deliveries_insert_once,
    inbound_bumps_the_conversation,
    statuses_only_move_forward,
    failed_is_terminal_and_keeps_its_error,
    status_of_an_unknown_wamid_is_reported,
    stale_epoch_writes_are_refused,
    claims_never_go_backwards,
    a_reply_answers_each_inbound_once,
    concurrent_replies_to_one_message_record_one,
    replies_must_answer_inbound_messages_of_their_chat,
    reconciliation_reads_reflect_state,
    dismissed_messages_are_no_longer_unanswered,
    sent_and_failed_replies_are_final,
    echoes_and_owner_messages,
    a_client_ref_records_one_owner_message_per_tenant,
    owner_content_is_kept_to_send_again,
    session_stops_are_stored_and_leave_the_sweep,
    deleting_a_tenant_keeps_or_erases_its_data,
    erasing_a_tenant_deletes_many_batches_of_each_table,
    bot_pause_round_trip,
    conversations_are_listed_most_recent_first,
    history_windows_and_chat_log,
    retention_deletes_old_messages_only,
    knowledge_search_stays_within_the_tenant,
    knowledge_ranking_puts_the_better_match_first,
    questions_without_words_find_nothing,
    knowledge_versions_and_deletion,
    a_knowledge_change_by_another_node_is_seen_on_the_next_search,
    a_search_told_the_knowledge_version_answers_from_the_cache_until_told_a_newer_one,
    llm_usage_totals_sum_per_tenant,
    usage_between_counts_one_tenant_in_one_period,
    events_are_listed_newest_first,
    changes_write_their_events_in_their_transactions,
    the_outbox_is_published_in_order_and_kept_for_a_while,
    published_events_queue_for_webhooks_one_per_chat_at_a_time,
    webhook_batches_left_behind_are_recovered_once,
    tenant_tokens_are_found_by_digest_listed_and_revoked,
    tenant_tokens_go_with_their_tenant,
    placement_decisions_keep_the_last_per_tenant_and_go_with_it,
    inbound_messages_keep_metas_timestamp,
    rejected_items_are_kept_with_their_event,
    one_bad_message_of_a_delivery_fails_alone,
    each_new_message_knows_its_predecessor_in_its_chat,
    a_committed_delivery_sent_again_is_all_duplicates,
    a_stale_tenant_among_concurrent_replies_is_refused_alone,
    a_send_result_given_many_times_at_once_counts_once,
    stale_send_results_among_current_ones_are_refused_alone,
    a_database_a_newer_build_migrated_still_opens,
);

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

fn tenant_id(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

fn chat_id(id: &str) -> ChatId {
    ChatId::new(id).expect("valid chat id")
}

fn wamid(id: &str) -> Wamid {
    Wamid::new(id).expect("valid wamid")
}

async fn given_tenant(store: &dyn Store, id: &str) -> TenantId {
    let tenant = tenant_id(id);
    store
        .upsert_tenant(&new_tenant(&tenant, T0))
        .await
        .expect("upsert tenant");
    tenant
}

/// A plain tenant `tenant` created at `created_ms`.
fn new_tenant(tenant: &TenantId, created_ms: i64) -> NewTenant {
    NewTenant::new(tenant.clone(), format!("{tenant} shop"), created_ms)
}

fn inbound(tenant: &TenantId, chat: &ChatId, id: &str, at_ms: i64) -> NewInbound {
    NewInbound {
        tenant: tenant.clone(),
        chat: chat.clone(),
        wamid: wamid(id),
        received_ms: at_ms,
        sent_ms: Some(at_ms - 1_000),
        kind: "text".to_owned(),
        body: Some(format!("message {id}")),
        raw: Some(format!(r#"{{"id":"{id}"}}"#)),
    }
}

async fn receive(store: &dyn Store, tenant: &TenantId, chat: &ChatId, id: &str, at_ms: i64) -> i64 {
    match store
        .insert_inbound(&inbound(tenant, chat, id, at_ms))
        .await
    {
        Ok(InsertOutcome::Inserted { id }) => id,
        other => panic!("expected a new inbound message, got {other:?}"),
    }
}

fn reply(tenant: &TenantId, chat: &ChatId, answers: &[i64], epoch: u64, at_ms: i64) -> NewReply {
    NewReply {
        passages: Vec::new(),
        tenant: tenant.clone(),
        chat: chat.clone(),
        answers: answers.to_vec(),
        body: format!("answer to {answers:?}"),
        epoch,
        created_ms: at_ms,
    }
}

async fn record(store: &dyn Store, reply: &NewReply) -> i64 {
    match store.record_reply(reply).await {
        Ok(ReplyOutcome::Recorded { outbound_id }) => outbound_id,
        other => panic!("expected the reply to be recorded, got {other:?}"),
    }
}

/// A reply recorded and sent as `sent_wamid`.
async fn sent_reply(
    store: &dyn Store,
    tenant: &TenantId,
    chat: &ChatId,
    inbound_wamid: &str,
    sent_wamid: &str,
) -> i64 {
    let inbound_id = receive(store, tenant, chat, inbound_wamid, T0).await;
    let reply_id = record(store, &reply(tenant, chat, &[inbound_id], 0, T0 + 1)).await;
    store
        .mark_reply_sent(tenant, reply_id, &wamid(sent_wamid), T0 + 2, 0)
        .await
        .expect("mark sent");
    reply_id
}

fn status(tenant: &TenantId, id: &str, status: DeliveryStatus, at_ms: i64) -> NewStatus {
    NewStatus {
        tenant: tenant.clone(),
        wamid: wamid(id),
        status,
        at_ms,
        error: None,
    }
}

async fn message(store: &dyn Store, tenant: &TenantId, chat: &ChatId, id: i64) -> StoredMessage {
    store
        .conversation_messages(tenant, chat, None, 1_000)
        .await
        .expect("conversation messages")
        .into_iter()
        .find(|message| message.id == id)
        .unwrap_or_else(|| panic!("message {id} not found"))
}

/// How many messages the chat holds, counting up to `limit`.
async fn chat_size(store: &dyn Store, tenant: &TenantId, chat: &ChatId, limit: u32) -> usize {
    store
        .conversation_messages(tenant, chat, None, limit)
        .await
        .expect("conversation messages")
        .len()
}

fn ids(messages: &[StoredMessage]) -> Vec<i64> {
    messages.iter().map(|message| message.id).collect()
}

fn texts(hits: &[salesboy_actors::store::KnowledgeHit]) -> Vec<&str> {
    hits.iter().map(|hit| hit.text.as_str()).collect()
}

fn assert_stale(
    result: Result<impl std::fmt::Debug, StoreError>,
    tenant: &TenantId,
    given: u64,
    current: u64,
) {
    match result {
        Err(StoreError::StaleEpoch {
            tenant: refused,
            given: g,
            current: c,
        }) => {
            assert_eq!((&refused, g, c), (tenant, given, current));
        }
        other => panic!("expected a stale epoch refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------------------

async fn health_answers(store: Arc<dyn Store>) {
    store.health().await.expect("healthy");
}

async fn tenants_round_trip_and_route_by_phone_number(store: Arc<dyn Store>) {
    let acme = tenant_id("acme");
    store
        .upsert_tenant(&NewTenant {
            id: acme.clone(),
            name: "Acme".to_owned(),
            system_prompt: Some("be brief".to_owned()),
            llm_config: Some(r#"{"providers":[]}"#.to_owned()),
            llm_monthly_spend_cap_micros: Some(5_000_000),
            embedding_model: None,
            engine: Engine::Web,
            web_hygiene: None,
            read_receipts: None,
            created_ms: T0,
        })
        .await
        .unwrap();
    // an update keeps created_ms and the engine, and replaces the rest
    store
        .upsert_tenant(&NewTenant {
            id: acme.clone(),
            name: "Acme Ltd".to_owned(),
            system_prompt: None,
            llm_config: Some(r#"{"providers":["gemini"]}"#.to_owned()),
            llm_monthly_spend_cap_micros: Some(7_000_000_000_000),
            embedding_model: None,
            engine: Default::default(),
            web_hygiene: None,
            read_receipts: None,
            created_ms: T0 + DAY,
        })
        .await
        .unwrap();
    let phone = PhoneNumberId::new("106540352242922").unwrap();
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: acme.clone(),
            phone_number_id: phone.clone(),
            waba_id: Some("102290129340398".to_owned()),
            access_token: AccessToken::new("EAAG-first-token"),
        })
        .await
        .unwrap();
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: acme.clone(),
            phone_number_id: phone.clone(),
            waba_id: None,
            access_token: AccessToken::new("EAAG-rotated-token"),
        })
        .await
        .unwrap();
    let beta = given_tenant(&*store, "beta").await;
    let beta = store.tenant(&beta).await.unwrap().expect("beta exists");
    assert_eq!(
        beta.llm_monthly_spend_cap_micros, None,
        "null: the node's cap"
    );

    let tenant = store.tenant(&acme).await.unwrap().expect("acme exists");
    assert_eq!(tenant.name, "Acme Ltd");
    assert_eq!(tenant.system_prompt, None);
    assert_eq!(
        tenant.llm_config.as_deref(),
        Some(r#"{"providers":["gemini"]}"#)
    );
    assert_eq!(tenant.llm_monthly_spend_cap_micros, Some(7_000_000_000_000));
    assert_eq!(tenant.created_ms, T0);
    assert_eq!(tenant.engine, Engine::Web, "chosen at creation, kept");
    assert_eq!(beta.engine, Engine::CloudApi, "the default");
    assert_eq!(tenant.knowledge_version, 0);
    assert_eq!(tenant.numbers.len(), 1);
    assert_eq!(tenant.numbers[0].phone_number_id, phone);
    assert_eq!(tenant.numbers[0].waba_id, None);
    assert_eq!(
        tenant.numbers[0].access_token.expose(),
        "EAAG-rotated-token"
    );
    let shown = format!("{tenant:?}");
    assert!(
        !shown.contains("EAAG"),
        "the token leaked into Debug: {shown}"
    );

    let route = store
        .tenant_by_phone_number(&phone)
        .await
        .unwrap()
        .expect("routed");
    assert_eq!(route.tenant, acme);
    assert_eq!(route.phone_number_id, phone);
    let unknown = PhoneNumberId::new("999").unwrap();
    assert_eq!(store.tenant_by_phone_number(&unknown).await.unwrap(), None);

    let all = store.list_tenants().await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|t| (t.id.as_str(), t.numbers.len()))
        .collect();
    assert_eq!(names, [("acme", 1), ("beta", 0)]);
    assert_eq!(store.tenant(&tenant_id("nobody")).await.unwrap(), None);
    // a new tenant starts at epoch 0
    assert_eq!(store.current_epoch(&acme).await.unwrap(), Some(0));
}

async fn whatsapp_numbers_belong_to_one_tenant(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    let phone = PhoneNumberId::new("1065").unwrap();
    let number = |tenant: &TenantId, token: &str| NewWhatsAppNumber {
        tenant: tenant.clone(),
        phone_number_id: phone.clone(),
        waba_id: None,
        access_token: AccessToken::new(token),
    };
    store
        .upsert_whatsapp_number(&number(&acme, "a"))
        .await
        .unwrap();
    let taken = store.upsert_whatsapp_number(&number(&beta, "b")).await;
    assert!(
        matches!(taken, Err(StoreError::Conflict { .. })),
        "{taken:?}"
    );
    let route = store.tenant_by_phone_number(&phone).await.unwrap().unwrap();
    assert_eq!(route.tenant, acme);
    let tenant = store.tenant(&acme).await.unwrap().unwrap();
    assert_eq!(tenant.numbers[0].access_token.expose(), "a");

    let orphan = store
        .upsert_whatsapp_number(&number(&tenant_id("ghost"), "g"))
        .await;
    assert_eq!(
        orphan,
        Err(StoreError::NotFound {
            what: "tenant ghost".to_owned()
        })
    );
}

async fn duplicate_inbound_is_a_noop(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let first = store
        .insert_inbound(&inbound(&acme, &chat, "wamid.A", T0))
        .await
        .unwrap();
    let InsertOutcome::Inserted { id } = first else {
        panic!("first insert: {first:?}");
    };
    // Meta's retry arrives later, maybe with another body: nothing changes
    let mut retry = inbound(&acme, &chat, "wamid.A", T0 + MINUTE);
    retry.body = Some("changed".to_owned());
    let second = store.insert_inbound(&retry).await.unwrap();
    assert_eq!(second, InsertOutcome::Duplicate { id });
    assert_eq!(second.id(), first.id());

    let messages = store
        .conversation_messages(&acme, &chat, None, 10)
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body.as_deref(), Some("message wamid.A"));
    assert_eq!(messages[0].created_ms, T0);
    let conversation = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(
        conversation.last_inbound_ms,
        Some(T0),
        "a duplicate must not bump the conversation"
    );

    // the same wamid under another tenant is another message
    let beta = given_tenant(&*store, "beta").await;
    let other = store
        .insert_inbound(&inbound(&beta, &chat, "wamid.A", T0))
        .await
        .unwrap();
    assert!(matches!(other, InsertOutcome::Inserted { id: other_id } if other_id != id));
}

async fn concurrent_duplicate_deliveries_insert_once(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let deliveries: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let message = inbound(&acme, &chat, "wamid.RACE", T0 + i);
            tokio::spawn(async move { store.insert_inbound(&message).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.expect("task").expect("insert"));
    }
    let inserted: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, InsertOutcome::Inserted { .. }))
        .collect();
    assert_eq!(inserted.len(), 1, "{outcomes:?}");
    let id = inserted[0].id();
    assert!(outcomes.iter().all(|o| o.id() == id), "{outcomes:?}");
    assert_eq!(chat_size(&*store, &acme, &chat, 10).await, 1);
}

/// A delivery's messages commit together; a message that fails in the database (here: its
/// tenant does not exist) fails alone and the others are stored.
async fn one_bad_message_of_a_delivery_fails_alone(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let ghost = tenant_id("ghost");
    let delivery = [
        inbound(&acme, &chat_id("1001"), "wamid.1", T0),
        inbound(&ghost, &chat_id("1002"), "wamid.2", T0),
        inbound(&acme, &chat_id("1003"), "wamid.3", T0),
        inbound(&acme, &chat_id("1001"), "wamid.4", T0 + 1),
    ];
    let results = store.insert_inbound_batch(&delivery).await;
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(results[1].is_err(), "{results:?}");
    assert!(
        !matches!(results[1], Err(StoreError::Unavailable { .. })),
        "a bad row is not an outage: {results:?}"
    );
    let stored: Vec<(bool, bool)> = [0, 2, 3]
        .iter()
        .map(|&i| match &results[i] {
            Ok(stored) => (
                matches!(stored.outcome, InsertOutcome::Inserted { .. }),
                stored.new_chat,
            ),
            Err(error) => panic!("message {i} failed: {error}"),
        })
        .collect();
    // All stored; the first two started their chats, the third's chat existed (the first).
    assert_eq!(stored, [(true, true), (true, true), (true, false)]);
    assert_eq!(chat_size(&*store, &acme, &chat_id("1001"), 10).await, 2);
    assert_eq!(chat_size(&*store, &acme, &chat_id("1003"), 10).await, 1);
}

/// Each message inserted learns the inbound message stored before it in its chat (the
/// conversation's check against the store is skipped when it holds them in that order):
/// its chat's first, the one stored earlier, or one earlier in the same delivery. Owner
/// messages, other chats and other tenants do not count; a duplicate learns nothing.
async fn each_new_message_knows_its_predecessor_in_its_chat(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    let (a, b) = (chat_id("3001"), chat_id("3002"));
    let predecessors =
        |results: Vec<Result<StoredInbound, StoreError>>| -> Vec<(i64, Predecessor)> {
            results
                .into_iter()
                .map(|result| {
                    let stored = result.expect("stored");
                    (stored.outcome.id(), stored.predecessor)
                })
                .collect()
        };
    let first = predecessors(
        store
            .insert_inbound_batch(&[
                inbound(&acme, &a, "wamid.1", T0),
                inbound(&acme, &b, "wamid.2", T0),
                inbound(&beta, &a, "wamid.3", T0),
                inbound(&acme, &a, "wamid.4", T0 + 1),
            ])
            .await,
    );
    let (a1, a2) = (first[0].0, first[3].0);
    assert_eq!(
        first.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        [
            Predecessor::FirstInChat,
            Predecessor::FirstInChat,
            Predecessor::FirstInChat,
            Predecessor::Message(a1),
        ]
    );
    store
        .record_outbound(&NewOutbound {
            tenant: acme.clone(),
            chat: a.clone(),
            origin: OutboundOrigin::Owner,
            wamid: None,
            kind: "text".to_owned(),
            body: Some("hello from the owner".to_owned()),
            created_ms: T0 + 2,
            epoch: None,
            client_ref: None,
            content: None,
        })
        .await
        .unwrap();
    let beta_later = receive(&*store, &beta, &a, "wamid.5", T0 + 3).await;
    let second = predecessors(
        store
            .insert_inbound_batch(&[
                inbound(&acme, &a, "wamid.6", T0 + 4),
                inbound(&acme, &a, "wamid.4", T0 + 1),
                inbound(&acme, &a, "wamid.7", T0 + 5),
                inbound(&beta, &a, "wamid.8", T0 + 5),
            ])
            .await,
    );
    let a3 = second[0].0;
    assert_eq!(
        second,
        [
            (a3, Predecessor::Message(a2)),
            (a2, Predecessor::Unknown),
            (second[2].0, Predecessor::Message(a3)),
            (second[3].0, Predecessor::Message(beta_later)),
        ]
    );
}

/// A node that committed a delivery and died before answering it gets Meta's retry: every
/// message is a duplicate (nothing new, no new chat), and the stored ones wait, unanswered,
/// for the sweep.
async fn a_committed_delivery_sent_again_is_all_duplicates(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let delivery: Vec<NewInbound> = (0..5)
        .map(|i| {
            inbound(
                &acme,
                &chat_id(&format!("200{i}")),
                &format!("wamid.{i}"),
                T0,
            )
        })
        .collect();
    let first: Vec<InsertOutcome> = store
        .insert_inbound_batch(&delivery)
        .await
        .into_iter()
        .map(|result| result.expect("stored").outcome)
        .collect();
    let retry = store.insert_inbound_batch(&delivery).await;
    for (first, retried) in first.iter().zip(&retry) {
        let retried = retried.as_ref().expect("the retry is answered");
        assert_eq!(retried.outcome, InsertOutcome::Duplicate { id: first.id() });
        assert!(!retried.new_chat);
    }
    assert_eq!(
        store
            .tenants_with_pending_work(T0 - MINUTE, T0 + MINUTE)
            .await
            .unwrap(),
        std::slice::from_ref(&acme)
    );
    let unanswered = store.unanswered_inbound(&acme, T0 - MINUTE).await.unwrap();
    assert_eq!(unanswered.len(), 5);
}

/// Replies of many conversations commit together; the writes of a tenant that moved away
/// (a newer epoch) are refused, and only those.
async fn a_stale_tenant_among_concurrent_replies_is_refused_alone(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    store.claim_epoch(&acme, 2).await.unwrap();
    store.claim_epoch(&beta, 1).await.unwrap();
    let mut replies = Vec::new();
    for i in 0..16 {
        let (tenant, epoch) = if i % 2 == 0 { (&acme, 1) } else { (&beta, 1) };
        let chat = chat_id(&format!("300{i}"));
        let id = receive(&*store, tenant, &chat, &format!("wamid.{i}"), T0).await;
        replies.push(reply(tenant, &chat, &[id], epoch, T0 + 1));
    }
    let recorded = replies.iter().map(|reply| {
        let store = store.clone();
        let reply = reply.clone();
        tokio::spawn(async move { store.record_reply(&reply).await })
    });
    let mut outcomes = Vec::new();
    for task in recorded.collect::<Vec<_>>() {
        outcomes.push(task.await.expect("task"));
    }
    for (reply, outcome) in replies.iter().zip(outcomes) {
        if reply.tenant == acme {
            assert_stale(outcome, &acme, 1, 2);
        } else {
            assert!(
                matches!(outcome, Ok(ReplyOutcome::Recorded { .. })),
                "{outcome:?}"
            );
        }
    }
    // acme's messages are still unanswered; beta's are answered
    assert_eq!(store.unanswered_inbound(&acme, 0).await.unwrap().len(), 8);
    assert!(store.unanswered_inbound(&beta, 0).await.unwrap().is_empty());
}

/// A reply recorded at `epoch` to a message received in `chat`: its outbound id.
async fn recorded_reply(store: &dyn Store, tenant: &TenantId, chat: &ChatId, epoch: u64) -> i64 {
    let inbound = receive(store, tenant, chat, "wamid.in", T0).await;
    let Ok(ReplyOutcome::Recorded { outbound_id }) = store
        .record_reply(&reply(tenant, chat, &[inbound], epoch, T0 + 1))
        .await
    else {
        panic!("the reply is recorded");
    };
    outbound_id
}

/// Send results for `outbound_id` handed in at once, the `i`th as `wamid.out{i}` at
/// `epochs[i]` (they may share a group commit): each one's outcome, in that order.
async fn send_results_at_once(
    store: &Arc<dyn Store>,
    tenant: &TenantId,
    outbound_id: i64,
    epochs: &[u64],
) -> Vec<Result<(), StoreError>> {
    let marks: Vec<_> = epochs
        .iter()
        .enumerate()
        .map(|(i, &epoch)| {
            let store = store.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                store
                    .mark_reply_sent(
                        &tenant,
                        outbound_id,
                        &wamid(&format!("wamid.out{i}")),
                        T0 + 2,
                        epoch,
                    )
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(marks.len());
    for task in marks {
        outcomes.push(task.await.expect("task"));
    }
    outcomes
}

/// The `reply_sent` events in the outbox.
async fn reply_sent_events(store: &dyn Store) -> Vec<Event> {
    store
        .recent_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == EventKind::ReplySent)
        .collect()
}

/// Send results for one reply handed in together (they may share a group commit) count
/// once: the first stands, with one `reply_sent` event that names the stored wamid.
async fn a_send_result_given_many_times_at_once_counts_once(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let outbound_id = recorded_reply(&*store, &acme, &chat, 0).await;
    for outcome in send_results_at_once(&store, &acme, outbound_id, &[0; 8]).await {
        outcome.expect("every send result is taken");
    }
    let stored = message(&*store, &acme, &chat, outbound_id).await;
    assert_eq!(stored.status, Some(DeliveryStatus::Sent));
    let sent_events = reply_sent_events(&*store).await;
    assert_eq!(sent_events.len(), 1, "{sent_events:?}");
    assert_eq!(
        sent_events[0].detail["wamid"].as_str(),
        stored.wamid.as_ref().map(|w| w.as_str()),
        "the event names the wamid stored"
    );
}

/// Send results for one reply handed in together at two epochs (they may share a group
/// commit, the stale ones first): those at the stale epoch are refused, one at the current
/// epoch stands, with one `reply_sent` event.
async fn stale_send_results_among_current_ones_are_refused_alone(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    store.claim_epoch(&acme, 1).await.unwrap();
    let chat = chat_id("15550001111");
    let outbound_id = recorded_reply(&*store, &acme, &chat, 1).await;
    store.claim_epoch(&acme, 2).await.unwrap();
    let epochs = [1, 2, 1, 2, 1, 2, 1, 2];
    let outcomes = send_results_at_once(&store, &acme, outbound_id, &epochs).await;
    for (epoch, outcome) in epochs.iter().zip(outcomes) {
        if *epoch == 1 {
            assert_stale(outcome, &acme, 1, 2);
        } else {
            outcome.expect("a send result at the current epoch is taken");
        }
    }
    let stored = message(&*store, &acme, &chat, outbound_id).await;
    assert_eq!(stored.status, Some(DeliveryStatus::Sent));
    let current: Vec<Wamid> = [1, 3, 5, 7]
        .iter()
        .map(|i| wamid(&format!("wamid.out{i}")))
        .collect();
    assert!(
        stored.wamid.as_ref().is_some_and(|w| current.contains(w)),
        "the wamid stored is one given at the current epoch: {:?}",
        stored.wamid
    );
    assert_eq!(reply_sent_events(&*store).await.len(), 1);
}

async fn inbound_bumps_the_conversation(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    assert_eq!(store.conversation(&acme, &chat).await.unwrap(), None);
    receive(&*store, &acme, &chat, "wamid.1", T0).await;
    receive(&*store, &acme, &chat, "wamid.2", T0 + MINUTE).await;
    // a late, older delivery does not move the window back
    receive(&*store, &acme, &chat, "wamid.0", T0 - MINUTE).await;
    let conversation = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(conversation.tenant, acme);
    assert_eq!(conversation.chat, chat);
    assert_eq!(conversation.last_inbound_ms, Some(T0 + MINUTE));
    assert_eq!(conversation.bot_paused_until_ms, None);
}

async fn statuses_only_move_forward(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let reply_id = sent_reply(&*store, &acme, &chat, "wamid.in", "wamid.out").await;
    let sent = message(&*store, &acme, &chat, reply_id).await;
    assert_eq!(sent.status, Some(DeliveryStatus::Sent));
    assert_eq!(sent.status_ms, Some(T0 + 2));
    assert_eq!(sent.wamid, Some(wamid("wamid.out")));

    let apply = |s, at| {
        let store = store.clone();
        let update = status(&acme, "wamid.out", s, at);
        async move { store.update_status(&update).await.unwrap() }
    };
    for (update, at, outcome) in [
        (DeliveryStatus::Sent, T0 + 3, StatusOutcome::Ignored),
        (DeliveryStatus::Delivered, T0 + 4, StatusOutcome::Advanced),
        (DeliveryStatus::Read, T0 + 5, StatusOutcome::Advanced),
        // webhooks out of order: delivered and sent after read are regressions
        (DeliveryStatus::Delivered, T0 + 6, StatusOutcome::Ignored),
        (DeliveryStatus::Sent, T0 + 7, StatusOutcome::Ignored),
        (DeliveryStatus::Pending, T0 + 8, StatusOutcome::Ignored),
        // a read message cannot fail any more
        (DeliveryStatus::Failed, T0 + 9, StatusOutcome::Ignored),
    ] {
        assert_eq!(apply(update, at).await, outcome, "{update:?} at {at}");
    }

    let read = message(&*store, &acme, &chat, reply_id).await;
    assert_eq!(read.status, Some(DeliveryStatus::Read));
    assert_eq!(read.status_ms, Some(T0 + 5));
    assert_eq!(read.failure, None);
}

async fn failed_is_terminal_and_keeps_its_error(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let reply_id = sent_reply(&*store, &acme, &chat, "wamid.in", "wamid.out").await;
    let failure = SendFailure {
        code: Some(131_047),
        title: "Re-engagement message".to_owned(),
    };
    let outcome = store
        .update_status(&NewStatus {
            error: Some(failure.clone()),
            ..status(&acme, "wamid.out", DeliveryStatus::Failed, T0 + 10)
        })
        .await
        .unwrap();
    assert_eq!(outcome, StatusOutcome::Advanced);
    for late in [
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
    ] {
        let outcome = store
            .update_status(&status(&acme, "wamid.out", late, T0 + 20))
            .await
            .unwrap();
        assert_eq!(outcome, StatusOutcome::Ignored, "{late:?} after failed");
    }
    let failed = message(&*store, &acme, &chat, reply_id).await;
    assert_eq!(failed.status, Some(DeliveryStatus::Failed));
    assert_eq!(failed.status_ms, Some(T0 + 10));
    assert_eq!(failed.failure, Some(failure));
}

async fn status_of_an_unknown_wamid_is_reported(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    let chat = chat_id("15550001111");
    sent_reply(&*store, &acme, &chat, "wamid.in", "wamid.out").await;
    let unknown = store
        .update_status(&status(&acme, "wamid.nope", DeliveryStatus::Read, T0))
        .await
        .unwrap();
    assert_eq!(unknown, StatusOutcome::UnknownMessage);
    // another tenant's wamid is unknown to this one
    let foreign = store
        .update_status(&status(&beta, "wamid.out", DeliveryStatus::Read, T0))
        .await
        .unwrap();
    assert_eq!(foreign, StatusOutcome::UnknownMessage);
    // inbound messages have no delivery status
    let inbound_status = store
        .update_status(&status(&acme, "wamid.in", DeliveryStatus::Read, T0))
        .await
        .unwrap();
    assert_eq!(inbound_status, StatusOutcome::UnknownMessage);
}

async fn stale_epoch_writes_are_refused(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let inbound_id = receive(&*store, &acme, &chat, "wamid.in", T0).await;
    // the old owner (epoch 1) recorded a reply before the tenant moved
    store.claim_epoch(&acme, 1).await.unwrap();
    let pending = record(&*store, &reply(&acme, &chat, &[inbound_id], 1, T0 + 1)).await;
    let second_inbound = receive(&*store, &acme, &chat, "wamid.in2", T0 + 2).await;

    // the tenant moves: epoch 2
    store.claim_epoch(&acme, 2).await.unwrap();
    assert_eq!(store.current_epoch(&acme).await.unwrap(), Some(2));

    // every fenced write of the old owner is refused, and writes nothing
    assert_stale(
        store
            .record_reply(&reply(&acme, &chat, &[second_inbound], 1, T0 + 3))
            .await,
        &acme,
        1,
        2,
    );
    assert_stale(
        store
            .set_bot_paused(&acme, &chat, Some(PAUSED_INDEFINITELY), T0, 1)
            .await,
        &acme,
        1,
        2,
    );
    assert_stale(
        store
            .mark_reply_sent(&acme, pending, &wamid("wamid.out"), T0 + 4, 1)
            .await,
        &acme,
        1,
        2,
    );
    let failure = SendFailure {
        code: None,
        title: "network".to_owned(),
    };
    assert_stale(
        store
            .mark_reply_failed(&acme, pending, &failure, T0 + 4, 1)
            .await,
        &acme,
        1,
        2,
    );
    assert_stale(
        store
            .dismiss_inbound(&acme, &chat, &[second_inbound], T0 + 4, 1)
            .await,
        &acme,
        1,
        2,
    );
    let owner_message = NewOutbound {
        tenant: acme.clone(),
        chat: chat.clone(),
        origin: OutboundOrigin::Owner,
        wamid: None,
        kind: "text".to_owned(),
        body: Some("hello from the owner".to_owned()),
        created_ms: T0 + 5,
        epoch: Some(1),
        client_ref: None,
        content: None,
    };
    assert_stale(store.record_outbound(&owner_message).await, &acme, 1, 2);

    let conversation = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(conversation.bot_paused_until_ms, None);
    let unanswered = store.unanswered_inbound(&acme, 0).await.unwrap();
    assert_eq!(ids(&unanswered), [second_inbound]);
    let unsent = store.unsent_replies(&acme).await.unwrap();
    assert_eq!(ids(&unsent), [pending]);
    assert_eq!(unsent[0].status, Some(DeliveryStatus::Pending));
    assert_eq!(unsent[0].wamid, None);
    assert_eq!(chat_size(&*store, &acme, &chat, 100).await, 3);

    // the new owner's writes go through
    store
        .mark_reply_sent(&acme, pending, &wamid("wamid.out"), T0 + 6, 2)
        .await
        .unwrap();
    record(&*store, &reply(&acme, &chat, &[second_inbound], 2, T0 + 7)).await;
    store
        .set_bot_paused(&acme, &chat, Some(T0 + DAY), T0, 2)
        .await
        .unwrap();
    assert_eq!(
        store
            .record_outbound(&NewOutbound {
                epoch: Some(2),
                ..owner_message
            })
            .await
            .map(|o| matches!(o, InsertOutcome::Inserted { .. })),
        Ok(true)
    );
}

async fn claims_never_go_backwards(store: Arc<dyn Store>) {
    let acme = tenant_id("acme");
    // a claim may precede the tenant row
    assert_eq!(store.current_epoch(&acme).await.unwrap(), None);
    store.claim_epoch(&acme, 3).await.unwrap();
    store
        .claim_epoch(&acme, 3)
        .await
        .expect("re-claiming the current epoch is fine");
    assert_stale(store.claim_epoch(&acme, 2).await, &acme, 2, 3);
    store.claim_epoch(&acme, 7).await.unwrap();
    assert_eq!(store.current_epoch(&acme).await.unwrap(), Some(7));
    // creating the tenant afterwards keeps the claimed epoch
    given_tenant(&*store, "acme").await;
    assert_eq!(store.current_epoch(&acme).await.unwrap(), Some(7));
    let too_big = store.claim_epoch(&acme, u64::MAX).await;
    assert!(
        matches!(too_big, Err(StoreError::Invalid { .. })),
        "{too_big:?}"
    );
}

async fn a_reply_answers_each_inbound_once(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let first = receive(&*store, &acme, &chat, "wamid.1", T0).await;
    let second = receive(&*store, &acme, &chat, "wamid.2", T0 + 1).await;
    let reply_id = record(
        &*store,
        &reply(&acme, &chat, &[first, second, first], 0, T0 + 2),
    )
    .await;

    // the same batch again (a retried turn, a second node): refused, nothing written
    let again = store
        .record_reply(&reply(&acme, &chat, &[first, second], 0, T0 + 3))
        .await;
    assert_eq!(
        again,
        Ok(ReplyOutcome::AlreadyAnswered { inbound_id: first })
    );
    // a batch that overlaps an answered one is refused whole
    let third = receive(&*store, &acme, &chat, "wamid.3", T0 + 4).await;
    let overlap = store
        .record_reply(&reply(&acme, &chat, &[third, second], 0, T0 + 5))
        .await;
    assert_eq!(
        overlap,
        Ok(ReplyOutcome::AlreadyAnswered { inbound_id: second })
    );

    assert_eq!(ids(&store.unsent_replies(&acme).await.unwrap()), [reply_id]);
    assert_eq!(
        ids(&store.unanswered_inbound(&acme, 0).await.unwrap()),
        [third]
    );
    let stored = message(&*store, &acme, &chat, reply_id).await;
    assert_eq!(stored.direction, Direction::Outbound);
    assert_eq!(stored.origin, Some(OutboundOrigin::Bot));
    assert_eq!(stored.status, Some(DeliveryStatus::Pending));
    assert_eq!(
        stored.body.as_deref(),
        Some(format!("answer to {:?}", [first, second, first]).as_str())
    );
    assert_eq!(stored.created_ms, T0 + 2);
    assert_eq!(chat_size(&*store, &acme, &chat, 100).await, 4);
}

async fn concurrent_replies_to_one_message_record_one(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let inbound_id = receive(&*store, &acme, &chat, "wamid.1", T0).await;
    let attempts: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            let reply = reply(&acme, &chat, &[inbound_id], 0, T0 + i);
            tokio::spawn(async move { store.record_reply(&reply).await })
        })
        .collect();
    let mut recorded = 0;
    for attempt in attempts {
        match attempt.await.expect("task").expect("record reply") {
            ReplyOutcome::Recorded { .. } => recorded += 1,
            ReplyOutcome::AlreadyAnswered {
                inbound_id: answered,
            } => {
                assert_eq!(answered, inbound_id);
            }
        }
    }
    assert_eq!(recorded, 1);
    assert_eq!(store.unsent_replies(&acme).await.unwrap().len(), 1);
}

async fn replies_must_answer_inbound_messages_of_their_chat(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let other_chat = chat_id("15550002222");
    receive(&*store, &acme, &chat, "wamid.1", T0).await;
    let elsewhere = receive(&*store, &acme, &other_chat, "wamid.2", T0).await;

    let wrong_chat = store
        .record_reply(&reply(&acme, &chat, &[elsewhere], 0, T0 + 1))
        .await;
    assert!(
        matches!(wrong_chat, Err(StoreError::NotFound { .. })),
        "{wrong_chat:?}"
    );
    let missing = store
        .record_reply(&reply(&acme, &chat, &[999_999], 0, T0 + 1))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let empty = store
        .record_reply(&reply(&acme, &chat, &[], 0, T0 + 1))
        .await;
    assert!(
        matches!(empty, Err(StoreError::Invalid { .. })),
        "{empty:?}"
    );
    // a reply is not an inbound message
    let reply_id = record(&*store, &reply(&acme, &other_chat, &[elsewhere], 0, T0 + 2)).await;
    let to_a_reply = store
        .record_reply(&reply(&acme, &other_chat, &[reply_id], 0, T0 + 3))
        .await;
    assert!(
        matches!(to_a_reply, Err(StoreError::NotFound { .. })),
        "{to_a_reply:?}"
    );
    // nothing of the refused attempts was written
    assert_eq!(ids(&store.unsent_replies(&acme).await.unwrap()), [reply_id]);
}

async fn reconciliation_reads_reflect_state(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    let alice = chat_id("15550001111");
    let bob = chat_id("15550002222");
    let a1 = receive(&*store, &acme, &alice, "wamid.a1", T0).await;
    let b1 = receive(&*store, &acme, &bob, "wamid.b1", T0 + 1).await;
    let a2 = receive(&*store, &acme, &alice, "wamid.a2", T0 + 2).await;
    receive(&*store, &beta, &alice, "wamid.x", T0).await;
    assert!(store.unsent_replies(&acme).await.unwrap().is_empty());

    let unanswered = store.unanswered_inbound(&acme, 0).await.unwrap();
    assert_eq!(ids(&unanswered), [a1, b1, a2]);
    assert!(
        unanswered
            .iter()
            .all(|m| m.tenant == acme && m.direction == Direction::Inbound)
    );
    assert_eq!(unanswered[0].wamid, Some(wamid("wamid.a1")));
    assert_eq!(unanswered[0].kind, "text");
    assert_eq!(unanswered[0].status, None);
    assert_eq!(unanswered[0].origin, None);
    assert_eq!(
        ids(&store.unanswered_inbound(&acme, T0 + 1).await.unwrap()),
        [b1, a2]
    );
    assert_eq!(
        ids(&store
            .unanswered_inbound_in_chat(&acme, &alice)
            .await
            .unwrap()),
        [a1, a2]
    );

    let to_alice = record(&*store, &reply(&acme, &alice, &[a1, a2], 0, T0 + 3)).await;
    assert_eq!(
        ids(&store.unanswered_inbound(&acme, 0).await.unwrap()),
        [b1]
    );
    assert!(
        store
            .unanswered_inbound_in_chat(&acme, &alice)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ids(&store.unsent_replies(&acme).await.unwrap()), [to_alice]);

    let to_bob = record(&*store, &reply(&acme, &bob, &[b1], 0, T0 + 4)).await;
    assert!(store.unanswered_inbound(&acme, 0).await.unwrap().is_empty());
    assert_eq!(
        ids(&store.unsent_replies(&acme).await.unwrap()),
        [to_alice, to_bob]
    );

    store
        .mark_reply_sent(&acme, to_alice, &wamid("wamid.r1"), T0 + 5, 0)
        .await
        .unwrap();
    assert_eq!(ids(&store.unsent_replies(&acme).await.unwrap()), [to_bob]);
    let failure = SendFailure {
        code: Some(131_026),
        title: "Message undeliverable".to_owned(),
    };
    store
        .mark_reply_failed(&acme, to_bob, &failure, T0 + 6, 0)
        .await
        .unwrap();
    assert!(store.unsent_replies(&acme).await.unwrap().is_empty());
    let failed = message(&*store, &acme, &bob, to_bob).await;
    assert_eq!(failed.status, Some(DeliveryStatus::Failed));
    assert_eq!(failed.failure, Some(failure));
    // the other tenant is untouched
    assert_eq!(store.unanswered_inbound(&beta, 0).await.unwrap().len(), 1);
}

async fn dismissed_messages_are_no_longer_unanswered(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let first = receive(&*store, &acme, &chat, "wamid.1", T0).await;
    let second = receive(&*store, &acme, &chat, "wamid.2", T0 + 1).await;
    assert_eq!(
        store
            .dismiss_inbound(&acme, &chat, &[first], T0 + 2, 0)
            .await,
        Ok(DismissOutcome::Dismissed)
    );
    assert_eq!(
        ids(&store.unanswered_inbound(&acme, 0).await.unwrap()),
        [second]
    );
    assert_eq!(
        store
            .dismiss_inbound(&acme, &chat, &[second, first], T0 + 3, 0)
            .await,
        Ok(DismissOutcome::AlreadyAnswered { inbound_id: first })
    );
    // a dismissed message cannot be answered later
    assert_eq!(
        store
            .record_reply(&reply(&acme, &chat, &[first], 0, T0 + 4))
            .await,
        Ok(ReplyOutcome::AlreadyAnswered { inbound_id: first })
    );
    assert_eq!(
        ids(&store.unanswered_inbound(&acme, 0).await.unwrap()),
        [second]
    );
    assert!(store.unsent_replies(&acme).await.unwrap().is_empty());
}

async fn sent_and_failed_replies_are_final(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let reply_id = sent_reply(&*store, &acme, &chat, "wamid.in", "wamid.out").await;
    // repeating the sent mark, or a failure after it, changes nothing
    store
        .mark_reply_sent(&acme, reply_id, &wamid("wamid.other"), T0 + 9, 0)
        .await
        .unwrap();
    let failure = SendFailure {
        code: None,
        title: "timeout".to_owned(),
    };
    store
        .mark_reply_failed(&acme, reply_id, &failure, T0 + 9, 0)
        .await
        .unwrap();
    let stored = message(&*store, &acme, &chat, reply_id).await;
    assert_eq!(stored.status, Some(DeliveryStatus::Sent));
    assert_eq!(stored.wamid, Some(wamid("wamid.out")));
    assert_eq!(stored.status_ms, Some(T0 + 2));
    assert_eq!(stored.failure, None);

    let missing = store
        .mark_reply_sent(&acme, 424_242, &wamid("wamid.x"), T0, 0)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let beta = given_tenant(&*store, "beta").await;
    let foreign = store
        .mark_reply_failed(&beta, reply_id, &failure, T0, 0)
        .await;
    assert!(
        matches!(foreign, Err(StoreError::NotFound { .. })),
        "{foreign:?}"
    );
}

async fn echoes_and_owner_messages(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    store.claim_epoch(&acme, 4).await.unwrap();
    // an echo of a message the owner typed on their phone: any ingress may persist it
    let echo = NewOutbound {
        tenant: acme.clone(),
        chat: chat.clone(),
        origin: OutboundOrigin::Echo,
        wamid: Some(wamid("wamid.echo")),
        kind: "text".to_owned(),
        body: Some("owner here".to_owned()),
        created_ms: T0,
        epoch: None,
        client_ref: None,
        content: None,
    };
    let InsertOutcome::Inserted { id: echo_id } = store.record_outbound(&echo).await.unwrap()
    else {
        panic!("echo not inserted");
    };
    assert_eq!(
        store.record_outbound(&echo).await,
        Ok(InsertOutcome::Duplicate { id: echo_id })
    );
    let stored = message(&*store, &acme, &chat, echo_id).await;
    assert_eq!(stored.origin, Some(OutboundOrigin::Echo));
    assert_eq!(stored.status, Some(DeliveryStatus::Sent));
    assert_eq!(stored.status_ms, Some(T0));
    // echoes are not waiting to be sent, and their statuses advance like replies'
    assert!(store.unsent_replies(&acme).await.unwrap().is_empty());
    assert_eq!(
        store
            .update_status(&status(
                &acme,
                "wamid.echo",
                DeliveryStatus::Delivered,
                T0 + 1
            ))
            .await,
        Ok(StatusOutcome::Advanced)
    );

    // an owner message sent through our API waits for the session
    let owner = NewOutbound {
        origin: OutboundOrigin::Owner,
        wamid: None,
        body: Some("we open at nine".to_owned()),
        created_ms: T0 + 2,
        epoch: Some(4),
        ..echo
    };
    let owner_id = store.record_outbound(&owner).await.unwrap().id();
    let unsent = store.unsent_replies(&acme).await.unwrap();
    assert_eq!(ids(&unsent), [owner_id]);
    assert_eq!(unsent[0].origin, Some(OutboundOrigin::Owner));
    store
        .mark_reply_sent(&acme, owner_id, &wamid("wamid.owner"), T0 + 3, 4)
        .await
        .unwrap();
    assert!(store.unsent_replies(&acme).await.unwrap().is_empty());
    // the conversation exists, but no customer has written
    let conversation = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(conversation.last_inbound_ms, None);
}

async fn a_client_ref_records_one_owner_message_per_tenant(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    store.claim_epoch(&acme, 1).await.unwrap();
    store.claim_epoch(&beta, 1).await.unwrap();
    let chat = chat_id("15550001111");
    let send = |tenant: &TenantId, client_ref: Option<&str>, body: &str| NewOutbound {
        tenant: tenant.clone(),
        chat: chat.clone(),
        origin: OutboundOrigin::Owner,
        wamid: None,
        kind: "text".to_owned(),
        body: Some(body.to_owned()),
        created_ms: T0,
        epoch: Some(1),
        client_ref: client_ref.map(str::to_owned),
        content: None,
    };
    let first = store
        .record_outbound(&send(&acme, Some("order-42"), "shipped"))
        .await
        .unwrap();
    let InsertOutcome::Inserted { id } = first else {
        panic!("expected a new message, got {first:?}");
    };
    // the same key again, even with another text: the first message, nothing recorded
    assert_eq!(
        store
            .record_outbound(&send(&acme, Some("order-42"), "shipped!"))
            .await,
        Ok(InsertOutcome::Duplicate { id })
    );
    // another key, no key, or another tenant's same key: new messages
    for message in [
        send(&acme, Some("order-43"), "shipped"),
        send(&acme, None, "hello"),
        send(&acme, None, "hello"),
        send(&beta, Some("order-42"), "shipped"),
    ] {
        let outcome = store.record_outbound(&message).await.unwrap();
        assert!(
            matches!(outcome, InsertOutcome::Inserted { .. }),
            "{outcome:?}"
        );
    }
    let messages = store
        .conversation_messages(&acme, &chat, None, 100)
        .await
        .unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0].body.as_deref(), Some("shipped"));
}

async fn conversations_are_listed_most_recent_first(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let other = given_tenant(&*store, "other").await;
    let [a, b, c, d] = ["15550000001", "15550000002", "15550000003", "15550000004"].map(chat_id);
    receive(&*store, &acme, &a, "wamid.a", T0).await;
    receive(&*store, &acme, &c, "wamid.c", T0 + 2).await;
    receive(&*store, &acme, &b, "wamid.b", T0 + 2).await;
    // a chat the customer never wrote in comes last
    store
        .set_bot_paused(&acme, &d, Some(PAUSED_INDEFINITELY), T0, 0)
        .await
        .unwrap();
    receive(&*store, &other, &a, "wamid.o", T0 + 9).await;

    let list = |after: Option<ChatId>, limit: u32| {
        let (store, acme) = (Arc::clone(&store), acme.clone());
        async move {
            let found = store.conversations(&acme, after.as_ref(), limit).await;
            let found = found.unwrap();
            assert!(found.iter().all(|c| c.tenant == acme), "only the tenant's");
            found
        }
    };
    let chats = |found: &[salesboy_actors::store::Conversation]| {
        found.iter().map(|c| c.chat.to_string()).collect::<Vec<_>>()
    };
    let all = list(None, 100).await;
    assert_eq!(
        chats(&all),
        [b.as_str(), c.as_str(), a.as_str(), d.as_str()]
    );
    assert_eq!(all[0].last_inbound_ms, Some(T0 + 2));
    assert_eq!(all[3].last_inbound_ms, None);
    assert_eq!(all[3].bot_paused_until_ms, Some(PAUSED_INDEFINITELY));
    // pages: each after the last of the one before
    assert_eq!(chats(&list(None, 2).await), [b.as_str(), c.as_str()]);
    assert_eq!(
        chats(&list(Some(c.clone()), 2).await),
        [a.as_str(), d.as_str()]
    );
    assert!(list(Some(d.clone()), 2).await.is_empty());
    assert!(
        list(Some(chat_id("15559999999")), 2).await.is_empty(),
        "after a chat that is not the tenant's"
    );
}

/// A template, interactive or media message is stored with its content, so a node that
/// finds it pending (after a crash, on another host) sends the same thing; its body is the
/// readable rendition.
async fn owner_content_is_kept_to_send_again(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    store.claim_epoch(&acme, 1).await.unwrap();
    let chat = chat_id("15550001111");
    let content = OutboundContent::Interactive(Interactive {
        kind: "button".to_owned(),
        header: None,
        body: InteractiveText {
            text: "Which size?".to_owned(),
        },
        footer: None,
        action: InteractiveAction {
            button: None,
            buttons: vec![ReplyButton::new("s42", "42"), ReplyButton::new("s43", "43")],
            sections: Vec::new(),
        },
    });
    let outbound = NewOutbound {
        tenant: acme.clone(),
        chat: chat.clone(),
        origin: OutboundOrigin::Owner,
        wamid: None,
        kind: content.kind().to_owned(),
        body: Some(content.text()),
        created_ms: T0,
        epoch: Some(1),
        client_ref: Some("sizes-1".to_owned()),
        content: Some(content.clone()),
    };
    let id = store.record_outbound(&outbound).await.unwrap().id();
    let unsent = store.unsent_replies(&acme).await.unwrap();
    assert_eq!(ids(&unsent), [id]);
    assert_eq!(unsent[0].content.as_ref(), Some(&content));
    assert_eq!(unsent[0].kind, "interactive");
    assert_eq!(unsent[0].body.as_deref(), Some("Which size?"));
    let again = store.record_outbound(&outbound).await.unwrap();
    assert_eq!(again, InsertOutcome::Duplicate { id });
    let logged = store
        .conversation_messages(&acme, &chat, None, 10)
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].content.as_ref(), Some(&content));

    // a text keeps no content
    let text = NewOutbound {
        kind: "text".to_owned(),
        body: Some("hi".to_owned()),
        client_ref: None,
        content: None,
        ..outbound
    };
    let text_id = store.record_outbound(&text).await.unwrap().id();
    assert_eq!(message(&*store, &acme, &chat, text_id).await.content, None);
}

/// A stopped session is a stored fact: the tenant shows it, a second stop keeps the first
/// time, and the sweep's pending work leaves the tenant out until it runs again.
async fn session_stops_are_stored_and_leave_the_sweep(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    receive(&*store, &acme, &chat, "wamid.waiting", T0).await;
    let pending = || store.tenants_with_pending_work(T0 - 1, T0 + 1);
    assert_eq!(pending().await.unwrap(), std::slice::from_ref(&acme));

    store
        .set_session_stopped(&acme, true, T0 + 5)
        .await
        .unwrap();
    store
        .set_session_stopped(&acme, true, T0 + 9)
        .await
        .unwrap();
    let tenant = store.tenant(&acme).await.unwrap().unwrap();
    assert_eq!(tenant.session_stopped_ms, Some(T0 + 5));
    assert!(pending().await.unwrap().is_empty());
    // the stop is kept when the tenant's record is saved again
    given_tenant(&*store, "acme").await;
    assert_eq!(
        store
            .tenant(&acme)
            .await
            .unwrap()
            .unwrap()
            .session_stopped_ms,
        Some(T0 + 5)
    );

    store
        .set_session_stopped(&acme, false, T0 + 20)
        .await
        .unwrap();
    assert_eq!(
        store
            .tenant(&acme)
            .await
            .unwrap()
            .unwrap()
            .session_stopped_ms,
        None
    );
    assert_eq!(pending().await.unwrap(), std::slice::from_ref(&acme));
    assert!(matches!(
        store
            .set_session_stopped(&tenant_id("nobody"), true, T0)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

/// A tenant with a number, a chat (one inbound message, one pending owner message),
/// knowledge, usage and an event; the pending message's id.
async fn furnished_tenant(store: &dyn Store, id: &str, phone: &str) -> (TenantId, i64) {
    let tenant = given_tenant(store, id).await;
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: tenant.clone(),
            phone_number_id: PhoneNumberId::new(phone).unwrap(),
            waba_id: None,
            access_token: AccessToken::new("EAAG-token"),
        })
        .await
        .unwrap();
    store.claim_epoch(&tenant, 1).await.unwrap();
    let chat = chat_id("15550001111");
    receive(store, &tenant, &chat, &format!("wamid.{id}.in"), T0).await;
    let pending = NewOutbound {
        tenant: tenant.clone(),
        chat: chat.clone(),
        origin: OutboundOrigin::Owner,
        wamid: None,
        kind: "text".to_owned(),
        body: Some("on its way".to_owned()),
        created_ms: T0 + 1,
        epoch: Some(1),
        client_ref: None,
        content: None,
    };
    let pending = store.record_outbound(&pending).await.unwrap().id();
    store
        .add_knowledge(&NewKnowledge {
            tenant: tenant.clone(),
            title: "faq".to_owned(),
            chunks: vec!["Returns are free.".to_owned()],
            created_ms: T0,
        })
        .await
        .unwrap();
    store
        .record_llm_usage(&LlmUsage {
            tenant: tenant.clone(),
            provider: "gemini".to_owned(),
            model: "gemini-2.0-flash".to_owned(),
            prompt_tokens: 10,
            completion_tokens: 1,
            cost_micros: 3,
            at_ms: T0,
        })
        .await
        .unwrap();
    store
        .record_events(&[Event::tenant(
            EventKind::AlertRaised,
            tenant.clone(),
            T0,
            serde_json::json!({"alert": "llm_quota_exhausted"}),
        )])
        .await
        .unwrap();
    (tenant, pending)
}

/// A deleted tenant is gone for every read, its number is free, its pending message failed
/// and its epoch bumped; kept data comes back with the same id, erased data does not; the
/// epoch record stays either way, and other tenants are untouched.
async fn deleting_a_tenant_keeps_or_erases_its_data(store: Arc<dyn Store>) {
    let chat = chat_id("15550001111");
    let (other, _) = furnished_tenant(&*store, "other", "300").await;
    for (id, phone, deletion) in [
        ("keep", "100", Deletion::KeepData),
        ("erase", "200", Deletion::EraseData),
    ] {
        let (tenant, pending) = furnished_tenant(&*store, id, phone).await;
        store.set_session_stopped(&tenant, true, T0).await.unwrap();
        assert!(
            store
                .delete_tenant(&tenant, deletion, T0 + 5)
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_tenant(&tenant, deletion, T0 + 6)
                .await
                .unwrap()
        );
        assert_eq!(store.tenant(&tenant).await.unwrap(), None, "{id}");
        assert!(
            store
                .list_tenants()
                .await
                .unwrap()
                .iter()
                .all(|t| t.id != tenant)
        );
        let number = PhoneNumberId::new(phone).unwrap();
        assert_eq!(store.tenant_by_phone_number(&number).await.unwrap(), None);
        assert_eq!(store.current_epoch(&tenant).await.unwrap(), Some(2), "{id}");
        assert!(
            store
                .tenants_with_pending_work(0, i64::MAX)
                .await
                .unwrap()
                .iter()
                .all(|t| *t != tenant)
        );
        assert!(matches!(
            store.set_session_stopped(&tenant, false, T0 + 20).await,
            Err(StoreError::NotFound { .. })
        ));

        // the same id again: kept data comes back, erased data does not
        given_tenant(&*store, id).await;
        let back = store.tenant(&tenant).await.unwrap().expect("created again");
        assert!(back.numbers.is_empty(), "{id}");
        assert_eq!(back.session_stopped_ms, None, "{id}: a new start");
        let messages = store
            .conversation_messages(&tenant, &chat, None, 100)
            .await
            .unwrap();
        let knowledge = store.list_knowledge(&tenant).await.unwrap();
        let usage = store.llm_usage_totals(&tenant, 0).await.unwrap();
        match deletion {
            Deletion::KeepData => {
                assert_eq!(messages.len(), 2);
                let failed = messages.iter().find(|m| m.id == pending).unwrap();
                assert_eq!(failed.status, Some(DeliveryStatus::Failed));
                assert_eq!(
                    failed.failure.as_ref().map(|f| f.title.as_str()),
                    Some("tenant_deleted")
                );
                assert_eq!(knowledge.len(), 1);
                assert_eq!(usage.requests, 1);
            }
            Deletion::EraseData => {
                assert!(messages.is_empty());
                assert!(knowledge.is_empty());
                assert_eq!(usage, LlmUsageTotals::default());
                let events = store.recent_events(100).await.unwrap();
                assert!(events.iter().all(|e| e.tenant.as_ref() != Some(&tenant)));
            }
        }
        // the freed number may go to another tenant
        store
            .upsert_whatsapp_number(&NewWhatsAppNumber {
                tenant: other.clone(),
                phone_number_id: number,
                waba_id: None,
                access_token: AccessToken::new("EAAG-other"),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .conversation_messages(&other, &chat, None, 100)
            .await
            .unwrap()
            .len(),
        2,
        "another tenant keeps its messages"
    );
    assert_eq!(store.list_knowledge(&other).await.unwrap().len(), 1);
    assert_eq!(store.llm_usage_totals(&other, 0).await.unwrap().requests, 1);
}

/// Rows of `tenant` in each table an erasure deletes a batch at a time, counted in SQL.
async fn rows_of(url: &str, tenant: &TenantId) -> Vec<(&'static str, i64)> {
    sqlx::any::install_default_drivers();
    let mut sql = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut counts = Vec::new();
    for (table, query) in [
        (
            "messages",
            "SELECT COUNT(*) FROM messages WHERE tenant_id = $1",
        ),
        (
            "conversations",
            "SELECT COUNT(*) FROM conversations WHERE tenant_id = $1",
        ),
        (
            "llm_usage",
            "SELECT COUNT(*) FROM llm_usage WHERE tenant_id = $1",
        ),
        (
            "event_outbox",
            "SELECT COUNT(*) FROM event_outbox WHERE tenant_id = $1",
        ),
        (
            "knowledge_chunks",
            "SELECT COUNT(*) FROM knowledge_chunks WHERE tenant_id = $1",
        ),
        (
            "knowledge_documents",
            "SELECT COUNT(*) FROM knowledge_documents WHERE tenant_id = $1",
        ),
    ] {
        let count: i64 = sqlx::query_scalar(query)
            .bind(tenant.as_str())
            .fetch_one(&mut sql)
            .await
            .unwrap();
        counts.push((table, count));
    }
    sql.close().await.unwrap();
    counts
}

/// A tenant with more rows in each table than one statement of an erasure deletes (they go
/// a batch per statement, in one transaction) is erased whole; another tenant's rows, its
/// events between the erased tenant's, stay.
async fn erasing_a_tenant_deletes_many_batches_of_each_table(fixture: Fixture) {
    const MANY: usize = 1_201;
    let store = &fixture.store;
    let erased = given_tenant(store, "erased").await;
    let other = given_tenant(store, "other").await;
    for tenant in [&erased, &other] {
        let count = if *tenant == erased { MANY } else { 3 };
        let messages: Vec<NewInbound> = (0..count)
            .map(|i| {
                let chat = chat_id(&format!("1555{i:07}"));
                inbound(tenant, &chat, &format!("wamid.{tenant}.{i}"), T0)
            })
            .collect();
        for stored in store.insert_inbound_batch(&messages).await {
            stored.unwrap();
        }
        for _ in 0..count {
            store
                .record_llm_usage(&LlmUsage {
                    tenant: tenant.clone(),
                    provider: "gemini".to_owned(),
                    model: "gemini-2.0-flash".to_owned(),
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    cost_micros: 1,
                    at_ms: T0,
                })
                .await
                .unwrap();
        }
        store
            .add_knowledge(&NewKnowledge {
                tenant: tenant.clone(),
                title: "catalogue".to_owned(),
                chunks: (0..count)
                    .map(|i| format!("Item {i} is in stock."))
                    .collect(),
                created_ms: T0,
            })
            .await
            .unwrap();
    }
    // the other tenant's events sit between the erased tenant's along the outbox
    let events: Vec<Event> = (0..MANY)
        .flat_map(|i| {
            let mut both = vec![(erased.clone(), i)];
            if i % 400 == 0 {
                both.push((other.clone(), i));
            }
            both
        })
        .map(|(tenant, i)| {
            Event::tenant(
                EventKind::AlertRaised,
                tenant,
                T0,
                serde_json::json!({ "alert": format!("number {i}") }),
            )
        })
        .collect();
    store.record_events(&events).await.unwrap();
    let before = rows_of(&fixture.url, &erased).await;
    assert!(
        before
            .iter()
            .all(|(_, count)| *count >= i64::try_from(MANY).unwrap() || *count == 1),
        "{before:?}"
    );
    let others = rows_of(&fixture.url, &other).await;

    assert!(
        store
            .delete_tenant(&erased, Deletion::EraseData, T0 + 5)
            .await
            .unwrap()
    );

    let after = rows_of(&fixture.url, &erased).await;
    assert!(after.iter().all(|(_, count)| *count == 0), "{after:?}");
    assert_eq!(rows_of(&fixture.url, &other).await, others);
    assert!(others.iter().all(|(_, count)| *count > 0), "{others:?}");
    assert_eq!(store.tenant(&erased).await.unwrap(), None);
}

async fn bot_pause_round_trip(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    // pausing a chat nobody wrote in yet creates it
    store
        .set_bot_paused(&acme, &chat, Some(T0 + DAY), T0, 0)
        .await
        .unwrap();
    let paused = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(paused.bot_paused_until_ms, Some(T0 + DAY));
    assert!(paused.bot_paused_at(T0));
    assert!(!paused.bot_paused_at(T0 + DAY));

    receive(&*store, &acme, &chat, "wamid.1", T0).await;
    store
        .set_bot_paused(&acme, &chat, Some(PAUSED_INDEFINITELY), T0, 0)
        .await
        .unwrap();
    let forever = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(forever.bot_paused_until_ms, Some(i64::MAX));
    assert_eq!(
        forever.last_inbound_ms,
        Some(T0),
        "pausing keeps the rest of the row"
    );

    store
        .set_bot_paused(&acme, &chat, None, T0, 0)
        .await
        .unwrap();
    let resumed = store.conversation(&acme, &chat).await.unwrap().unwrap();
    assert_eq!(resumed.bot_paused_until_ms, None);
}

async fn history_windows_and_chat_log(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let alice = chat_id("15550001111");
    let bob = chat_id("15550002222");
    let m1 = receive(&*store, &acme, &alice, "wamid.1", T0).await;
    let r1 = record(&*store, &reply(&acme, &alice, &[m1], 0, T0 + 1)).await;
    let b1 = receive(&*store, &acme, &bob, "wamid.b", T0 + 2).await;
    let m2 = receive(&*store, &acme, &alice, "wamid.2", T0 + 3).await;
    let r2 = record(&*store, &reply(&acme, &alice, &[m2], 0, T0 + 4)).await;
    let failure = SendFailure {
        code: Some(131_047),
        title: "Re-engagement message".to_owned(),
    };
    store
        .mark_reply_failed(&acme, r2, &failure, T0 + 5, 0)
        .await
        .unwrap();
    let mut sticker = inbound(&acme, &alice, "wamid.3", T0 + 6);
    sticker.kind = "sticker".to_owned();
    sticker.body = None;
    let m3 = store.insert_inbound(&sticker).await.unwrap().id();

    let all = store
        .conversation_messages(&acme, &alice, None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&all), [m1, r1, m2, r2, m3]);
    assert_eq!(
        all.iter().map(|m| m.direction).collect::<Vec<_>>(),
        [
            Direction::Inbound,
            Direction::Outbound,
            Direction::Inbound,
            Direction::Outbound,
            Direction::Inbound
        ]
    );
    assert_eq!(
        ids(&store
            .conversation_messages(&acme, &alice, None, 2)
            .await
            .unwrap()),
        [r2, m3]
    );
    // paging back from a message: the ones before it, in the same order
    let page = |before: i64, limit: u32| {
        let store = Arc::clone(&store);
        let (acme, alice) = (acme.clone(), alice.clone());
        async move {
            let page = store.conversation_messages(&acme, &alice, Some(before), limit);
            ids(&page.await.unwrap())
        }
    };
    assert_eq!(page(m3, 2).await, [m2, r2]);
    assert_eq!(page(m2, 100).await, [m1, r1]);
    assert_eq!(page(m1, 100).await, Vec::<i64>::new());
    assert_eq!(
        page(b1, 100).await,
        Vec::<i64>::new(),
        "another chat's message"
    );
    assert_eq!(
        page(i64::MAX, 100).await,
        Vec::<i64>::new(),
        "no such message"
    );
    // the LLM's window: text the customer saw, oldest first
    assert_eq!(
        ids(&store.recent_history(&acme, &alice, 100).await.unwrap()),
        [m1, r1, m2]
    );
    assert_eq!(
        ids(&store.recent_history(&acme, &alice, 2).await.unwrap()),
        [r1, m2]
    );

    // the chat log: every chat, newest first, paged by time
    let log = store.chat_log(&acme, None, 3).await.unwrap();
    assert_eq!(ids(&log), [m3, r2, m2]);
    let page = store.chat_log(&acme, Some(T0 + 3), 10).await.unwrap();
    assert_eq!(ids(&page), [b1, r1, m1]);
}

async fn retention_deletes_old_messages_only(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let old = T0 - 100 * DAY;
    let cutoff = T0 - 90 * DAY;
    let old_in = receive(&*store, &acme, &chat, "wamid.old", old).await;
    let old_reply = record(&*store, &reply(&acme, &chat, &[old_in], 0, old + 1)).await;
    // answered just before the cutoff, by a reply just after it
    let edge_in = receive(&*store, &acme, &chat, "wamid.edge", cutoff - 1).await;
    let edge_reply = record(&*store, &reply(&acme, &chat, &[edge_in], 0, cutoff)).await;
    let new_in = receive(&*store, &acme, &chat, "wamid.new", T0).await;

    assert_eq!(store.delete_messages_before(cutoff).await.unwrap(), 3);
    let left = store
        .conversation_messages(&acme, &chat, None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&left), [edge_reply, new_in]);
    assert!(!ids(&left).contains(&old_reply));
    // the new message is still waiting for its answer; nothing else reappears
    assert_eq!(
        ids(&store.unanswered_inbound(&acme, 0).await.unwrap()),
        [new_in]
    );
    assert_eq!(
        ids(&store.unsent_replies(&acme).await.unwrap()),
        [edge_reply]
    );
    // a second run finds nothing more to delete
    assert_eq!(store.delete_messages_before(cutoff).await.unwrap(), 0);
    assert!(
        store.conversation(&acme, &chat).await.unwrap().is_some(),
        "conversations stay"
    );
}

async fn add_document(store: &dyn Store, tenant: &TenantId, title: &str, chunks: &[&str]) -> i64 {
    store
        .add_knowledge(&NewKnowledge {
            tenant: tenant.clone(),
            title: title.to_owned(),
            chunks: chunks.iter().map(|chunk| (*chunk).to_owned()).collect(),
            created_ms: T0,
        })
        .await
        .expect("add knowledge")
}

async fn knowledge_search_stays_within_the_tenant(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    add_document(
        &*store,
        &acme,
        "Shipping",
        &[
            "Delivery to Jakarta takes two days.",
            "Our shop opens at nine.",
        ],
    )
    .await;
    add_document(
        &*store,
        &beta,
        "Beta shipping",
        &[
            "Delivery price for Jakarta is a secret of beta.",
            "Delivery delivery delivery.",
        ],
    )
    .await;

    let hits = store
        .search_knowledge(&acme, "How long is delivery to Jakarta?", 10)
        .await
        .unwrap();
    assert_eq!(texts(&hits), ["Delivery to Jakarta takes two days."]);
    assert_eq!(hits[0].document_title, "Shipping");
    let hits = store.search_knowledge(&beta, "delivery", 10).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter().all(|hit| hit.document_title == "Beta shipping"),
        "{hits:?}"
    );
    // words only the other tenant has find nothing
    assert!(
        store
            .search_knowledge(&acme, "secret price", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .search_knowledge(&tenant_id("nobody"), "delivery", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn knowledge_ranking_puts_the_better_match_first(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    add_document(
        &*store,
        &acme,
        "Prices",
        &[
            "Our price list hangs in our shop window.",
            "Delivery price: five dollars, delivery within two days.",
            "We are closed on Sundays.",
        ],
    )
    .await;
    let hits = store
        .search_knowledge(&acme, "What is the delivery price?", 10)
        .await
        .unwrap();
    assert_eq!(
        texts(&hits),
        [
            "Delivery price: five dollars, delivery within two days.",
            "Our price list hangs in our shop window.",
        ]
    );
    assert!(hits[0].score > hits[1].score, "{hits:?}");
    let top = store
        .search_knowledge(&acme, "delivery price", 1)
        .await
        .unwrap();
    assert_eq!(
        texts(&top),
        ["Delivery price: five dollars, delivery within two days."]
    );
    // matching ignores case and punctuation
    let sundays = store.search_knowledge(&acme, "SUNDAYS!!", 5).await.unwrap();
    assert_eq!(texts(&sundays), ["We are closed on Sundays."]);
}

async fn questions_without_words_find_nothing(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    add_document(&*store, &acme, "Doc", &["a b c ? ! * quoted \"text\" here"]).await;
    for question in [
        "",
        "   ",
        "?!",
        "a b c",
        "\"",
        "* OR *",
        "'); DROP TABLE knowledge_chunks; --",
    ] {
        let hits = store.search_knowledge(&acme, question, 5).await;
        match question {
            // the SQL-looking one has real words; it must search, not break anything
            q if q.contains("DROP") => assert!(hits.is_ok(), "{question:?}: {hits:?}"),
            _ => assert_eq!(hits, Ok(Vec::new()), "{question:?}"),
        }
    }
    assert_eq!(
        store.search_knowledge(&acme, "quoted text", 0).await,
        Ok(Vec::new())
    );
    assert_eq!(
        store
            .search_knowledge(&acme, "quoted text", 5)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Searches rank from a full-text index the store caches per tenant (decision 0021): a
/// change made through another store on the same database (another node) must be seen by
/// the next search, never hidden behind the cached index.
async fn a_knowledge_change_by_another_node_is_seen_on_the_next_search(fixture: Fixture) {
    async fn found(store: &SqlStore, tenant: &TenantId, question: &str) -> Vec<String> {
        let hits = store.search_knowledge(tenant, question, 5).await.unwrap();
        texts(&hits).into_iter().map(str::to_owned).collect()
    }
    let node_a = fixture.store;
    let node_b = SqlStore::connect(&fixture.url).await.expect("second store");
    let acme = given_tenant(&node_a, "acme").await;
    add_document(&node_a, &acme, "Hours", &["Open from nine to five."]).await;
    // Node A's cache now holds acme's passages.
    assert_eq!(
        found(&node_a, &acme, "open").await,
        ["Open from nine to five."]
    );
    assert!(found(&node_a, &acme, "noodles").await.is_empty());

    let menu = add_document(&node_b, &acme, "Menu", &["Noodles with satay."]).await;
    assert_eq!(
        found(&node_a, &acme, "noodles").await,
        ["Noodles with satay."]
    );
    assert!(node_b.delete_knowledge(&acme, menu, T0).await.unwrap());
    assert!(found(&node_a, &acme, "noodles").await.is_empty());
    node_b.close().await;
    node_a.close().await;
}

/// The responder's search (decision 0022) is told the tenant's knowledge version and reads
/// nothing while the cache holds it: a change made by another node shows once the caller
/// knows its version; one made through the same store shows at once; a tenant created
/// again is another.
async fn a_search_told_the_knowledge_version_answers_from_the_cache_until_told_a_newer_one(
    fixture: Fixture,
) {
    async fn found(
        store: &SqlStore,
        tenant: &TenantId,
        question: &str,
        (tenant_created_ms, version): (i64, i64),
    ) -> Vec<String> {
        let known = KnownKnowledge {
            tenant_created_ms,
            version,
        };
        let hits = store
            .search_knowledge_known(tenant, question, 5, known)
            .await
            .unwrap();
        texts(&hits).into_iter().map(str::to_owned).collect()
    }
    let node_a = fixture.store;
    let node_b = SqlStore::connect(&fixture.url).await.expect("second store");
    let acme = given_tenant(&node_a, "acme").await;
    assert!(found(&node_a, &acme, "open", (T0, 0)).await.is_empty());
    add_document(&node_a, &acme, "Hours", &["Open from nine to five."]).await;
    assert_eq!(
        found(&node_a, &acme, "open", (T0, 0)).await,
        ["Open from nine to five."],
        "a change through the same store is seen by a caller that does not know it yet"
    );

    let menu = add_document(&node_b, &acme, "Menu", &["Noodles with satay."]).await;
    assert!(
        found(&node_a, &acme, "noodles", (T0, 1)).await.is_empty(),
        "the passages cached at the version the caller knows are searched, nothing read"
    );
    assert_eq!(
        found(&node_a, &acme, "noodles", (T0, 2)).await,
        ["Noodles with satay."],
        "told the newer version, the search reads the tenant's passages again"
    );
    assert_eq!(
        found(&node_a, &acme, "noodles", (T0, 1)).await,
        ["Noodles with satay."],
        "a caller still at the older version gets the newer passages"
    );
    assert!(node_a.delete_knowledge(&acme, menu, T0).await.unwrap());
    assert!(
        found(&node_a, &acme, "noodles", (T0, 2)).await.is_empty(),
        "a deletion through the same store is seen by a caller that does not know it yet"
    );

    // Deleted and created again through the other node: node A's cached passages are
    // another tenant's, whatever the versions.
    assert!(
        node_b
            .delete_tenant(&acme, Deletion::EraseData, T0)
            .await
            .unwrap()
    );
    assert!(node_b.tenant(&acme).await.unwrap().is_none());
    node_b
        .upsert_tenant(&new_tenant(&acme, T0 + 1))
        .await
        .unwrap();
    add_document(&node_b, &acme, "Hours", &["Closed on Sundays."]).await;
    let again = node_b.tenant(&acme).await.unwrap().expect("created again");
    assert_eq!(again.knowledge_version, 1);
    assert!(
        found(&node_a, &acme, "noodles", (T0 + 1, 1))
            .await
            .is_empty(),
        "the earlier tenant's passages are not searched"
    );
    assert_eq!(
        found(&node_a, &acme, "sundays", (T0 + 1, 1)).await,
        ["Closed on Sundays."]
    );
    node_b.close().await;
    node_a.close().await;
}

async fn knowledge_versions_and_deletion(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    assert_eq!(store.knowledge_version(&acme).await.unwrap(), 0);
    let hours = add_document(&*store, &acme, "Hours", &["Open from nine to five."]).await;
    let menu = add_document(
        &*store,
        &acme,
        "Menu",
        &["Fried rice.", "Noodles.", "Satay."],
    )
    .await;
    assert_eq!(store.knowledge_version(&acme).await.unwrap(), 2);
    assert_eq!(store.knowledge_version(&beta).await.unwrap(), 0);
    let listed: Vec<_> = store
        .list_knowledge(&acme)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.title, d.chunk_count, d.created_ms))
        .collect();
    assert_eq!(
        listed,
        [
            (hours, "Hours".to_owned(), 1, T0),
            (menu, "Menu".to_owned(), 3, T0)
        ]
    );

    // another tenant cannot delete it
    assert_eq!(store.delete_knowledge(&beta, menu, T0).await, Ok(false));
    assert_eq!(store.knowledge_version(&beta).await.unwrap(), 0);
    assert_eq!(
        store
            .search_knowledge(&acme, "noodles", 5)
            .await
            .unwrap()
            .len(),
        1
    );

    assert_eq!(store.delete_knowledge(&acme, menu, T0).await, Ok(true));
    assert_eq!(store.knowledge_version(&acme).await.unwrap(), 3);
    assert!(
        store
            .search_knowledge(&acme, "noodles satay", 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list_knowledge(&acme).await.unwrap().len(), 1);
    assert_eq!(store.delete_knowledge(&acme, menu, T0).await, Ok(false));
    assert_eq!(
        store
            .tenant(&acme)
            .await
            .unwrap()
            .unwrap()
            .knowledge_version,
        3
    );

    let orphan = store
        .add_knowledge(&NewKnowledge {
            tenant: tenant_id("ghost"),
            title: "x".to_owned(),
            chunks: vec!["x".to_owned()],
            created_ms: T0,
        })
        .await;
    assert_eq!(
        orphan,
        Err(StoreError::NotFound {
            what: "tenant ghost".to_owned()
        })
    );
}

async fn llm_usage_totals_sum_per_tenant(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    assert_eq!(
        store.llm_usage_totals(&acme, 0).await.unwrap(),
        LlmUsageTotals::default()
    );
    let usage = |tenant: &TenantId, tokens: i64, at_ms: i64| LlmUsage {
        tenant: tenant.clone(),
        provider: "gemini".to_owned(),
        model: "gemini-2.0-flash".to_owned(),
        prompt_tokens: tokens,
        completion_tokens: tokens / 10,
        cost_micros: tokens * 3,
        at_ms,
    };
    for entry in [
        usage(&acme, 1_000, T0 - DAY),
        usage(&acme, 2_000, T0),
        usage(&acme, 500, T0 + 1),
        usage(&beta, 7, T0),
    ] {
        store.record_llm_usage(&entry).await.unwrap();
    }
    assert_eq!(
        store.llm_usage_totals(&acme, 0).await.unwrap(),
        LlmUsageTotals {
            requests: 3,
            prompt_tokens: 3_500,
            completion_tokens: 350,
            cost_micros: 10_500,
        }
    );
    assert_eq!(
        store.llm_usage_totals(&acme, T0).await.unwrap(),
        LlmUsageTotals {
            requests: 2,
            prompt_tokens: 2_500,
            completion_tokens: 250,
            cost_micros: 7_500,
        }
    );
    assert_eq!(store.llm_usage_totals(&beta, 0).await.unwrap().requests, 1);
}

async fn usage_between_counts_one_tenant_in_one_period(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let beta = given_tenant(&*store, "beta").await;
    let (from, until) = (T0, T0 + DAY);
    assert_eq!(
        store.usage_between(&acme, from, until).await.unwrap(),
        UsageReport::default()
    );
    let usage = |tenant: &TenantId, tokens: i64, at_ms: i64| LlmUsage {
        tenant: tenant.clone(),
        provider: "openai".to_owned(),
        model: "gpt-4o-mini".to_owned(),
        prompt_tokens: tokens,
        completion_tokens: tokens / 10,
        cost_micros: tokens * 2,
        at_ms,
    };
    // in the period: the first and the last millisecond; outside: just before and at `until`
    for entry in [
        usage(&acme, 1_000, from),
        usage(&acme, 300, until - 1),
        usage(&acme, 50_000, from - 1),
        usage(&acme, 70_000, until),
        usage(&beta, 9_000, from),
    ] {
        store.record_llm_usage(&entry).await.unwrap();
    }
    let chat = chat_id("15550001111");
    receive(&*store, &acme, &chat, "wamid.before", from - 1).await;
    receive(&*store, &acme, &chat, "wamid.in1", from).await;
    receive(&*store, &acme, &chat, "wamid.in2", from + MINUTE).await;
    receive(&*store, &acme, &chat, "wamid.after", until).await;
    receive(&*store, &beta, &chat, "wamid.beta", from).await;
    let outbound = |origin: OutboundOrigin, id: &str, at_ms: i64| NewOutbound {
        tenant: acme.clone(),
        chat: chat.clone(),
        origin,
        wamid: Some(wamid(id)),
        kind: "text".to_owned(),
        body: Some(format!("message {id}")),
        created_ms: at_ms,
        epoch: None,
        client_ref: None,
        content: None,
    };
    for message in [
        outbound(OutboundOrigin::Echo, "wamid.echo", from + 2 * MINUTE),
        outbound(OutboundOrigin::Echo, "wamid.late", until + MINUTE),
    ] {
        store.record_outbound(&message).await.unwrap();
    }
    store.claim_epoch(&acme, 1).await.unwrap();
    let owner = NewOutbound {
        wamid: None,
        epoch: Some(1),
        ..outbound(OutboundOrigin::Owner, "unused", until - 1)
    };
    store.record_outbound(&owner).await.unwrap();

    assert_eq!(
        store.usage_between(&acme, from, until).await.unwrap(),
        UsageReport {
            llm: LlmUsageTotals {
                requests: 2,
                prompt_tokens: 1_300,
                completion_tokens: 130,
                cost_micros: 2_600,
            },
            messages_in: 2,
            messages_out: 2,
        }
    );
    let beta_usage = store.usage_between(&beta, from, until).await.unwrap();
    assert_eq!(
        (beta_usage.llm.prompt_tokens, beta_usage.messages_in),
        (9_000, 1)
    );
    assert_eq!(beta_usage.messages_out, 0);
    assert_eq!(
        store
            .usage_between(&acme, until + DAY, until + 2 * DAY)
            .await
            .unwrap(),
        UsageReport::default()
    );
}

async fn events_are_listed_newest_first(store: Arc<dyn Store>) {
    let acme = tenant_id("acme");
    let first = Event::tenant(
        EventKind::AlertRaised,
        acme.clone(),
        T0,
        json!({"alert": "llm_quota_exhausted"}),
    );
    let second = Event::cluster(EventKind::NodeJoined, T0 + 1, json!({"node": "n2"}));
    store
        .record_events(std::slice::from_ref(&first))
        .await
        .unwrap();
    store
        .record_events(std::slice::from_ref(&second))
        .await
        .unwrap();
    store.record_events(&[]).await.unwrap();
    let events = store.recent_events(10).await.unwrap();
    assert_eq!(events, [second, first]);
    assert_eq!(store.recent_events(1).await.unwrap().len(), 1);
}

/// The kinds and chats of the outbox's unpublished events, in order.
async fn unpublished(store: &SqlStore) -> Vec<(EventKind, Option<String>)> {
    store
        .unpublished_events(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event.kind, e.event.chat.map(|c| c.to_string())))
        .collect()
}

async fn changes_write_their_events_in_their_transactions(store: SqlStore) {
    let acme = given_tenant(&store, "acme").await;
    let chat = chat_id("15550001111");
    let c = Some(chat.to_string());

    let inbound_id = receive(&store, &acme, &chat, "wamid.in1", T0).await;
    assert!(matches!(
        store
            .insert_inbound(&inbound(&acme, &chat, "wamid.in1", T0))
            .await,
        Ok(InsertOutcome::Duplicate { .. })
    ));
    let events = store.unpublished_events(10).await.unwrap();
    assert_eq!(events.len(), 1, "a duplicate writes no event: {events:?}");
    let received = &events[0].event;
    assert_eq!(received.kind, EventKind::MessageReceived);
    assert_eq!(received.tenant.as_ref(), Some(&acme));
    assert_eq!(received.chat.as_ref(), Some(&chat));
    assert_eq!(received.at_ms, T0);
    assert_eq!(received.detail["message_id"], inbound_id);
    assert_eq!(received.detail["wamid"], "wamid.in1");
    assert_eq!(received.id.len(), 32);

    // A fenced write refused for its stale epoch writes no event either.
    let reply_id = record(&store, &reply(&acme, &chat, &[inbound_id], 1, T0 + 1)).await;
    store.claim_epoch(&acme, 2).await.unwrap();
    assert_stale(
        store
            .mark_reply_sent(&acme, reply_id, &wamid("wamid.out1"), T0 + 2, 1)
            .await,
        &acme,
        1,
        2,
    );
    assert_eq!(unpublished(&store).await.len(), 1);
    store
        .mark_reply_sent(&acme, reply_id, &wamid("wamid.out1"), T0 + 2, 2)
        .await
        .unwrap();
    // Marking again (a retry) changes nothing and writes nothing.
    store
        .mark_reply_sent(&acme, reply_id, &wamid("wamid.out1"), T0 + 3, 2)
        .await
        .unwrap();
    store
        .update_status(&status(
            &acme,
            "wamid.out1",
            DeliveryStatus::Delivered,
            T0 + 4,
        ))
        .await
        .unwrap();
    store
        .update_status(&status(&acme, "wamid.out1", DeliveryStatus::Sent, T0 + 5))
        .await
        .unwrap();
    store
        .record_outbound(&NewOutbound {
            tenant: acme.clone(),
            chat: chat.clone(),
            origin: OutboundOrigin::Echo,
            wamid: Some(wamid("wamid.echo1")),
            kind: "text".into(),
            body: Some("from the phone".into()),
            created_ms: T0 + 6,
            epoch: None,
            client_ref: None,
            content: None,
        })
        .await
        .unwrap();
    store
        .set_bot_paused(&acme, &chat, Some(PAUSED_INDEFINITELY), T0 + 7, 2)
        .await
        .unwrap();
    store
        .set_bot_paused(&acme, &chat, None, T0 + 8, 2)
        .await
        .unwrap();
    let document = store
        .add_knowledge(&NewKnowledge {
            tenant: acme.clone(),
            title: "hours".into(),
            chunks: vec!["open 9 to 5".into()],
            created_ms: T0 + 9,
        })
        .await
        .unwrap();
    assert!(
        store
            .delete_knowledge(&acme, document, T0 + 10)
            .await
            .unwrap()
    );
    // a session stop and start are reported once each, asking twice changes nothing
    for (stopped, at) in [
        (true, T0 + 11),
        (true, T0 + 12),
        (false, T0 + 13),
        (false, T0 + 14),
    ] {
        store.set_session_stopped(&acme, stopped, at).await.unwrap();
    }
    assert_eq!(
        unpublished(&store).await,
        [
            (EventKind::MessageReceived, c.clone()),
            (EventKind::ReplySent, c.clone()),
            (EventKind::StatusChanged, c.clone()),
            (EventKind::OwnerMessageSent, c.clone()),
            (EventKind::BotPaused, c.clone()),
            (EventKind::BotResumed, c.clone()),
            (EventKind::KnowledgeChanged, None),
            (EventKind::KnowledgeChanged, None),
            (EventKind::SessionStatus, None),
            (EventKind::SessionStatus, None),
        ]
    );
    let events = store.unpublished_events(100).await.unwrap();
    assert_eq!(events[1].event.detail["wamid"], "wamid.out1");
    assert_eq!(events[1].event.detail["message_id"], reply_id);
    assert_eq!(events[2].event.detail["status"], "delivered");
    assert_eq!(events[4].event.detail["until_ms"], serde_json::Value::Null);
    assert_eq!(events[6].event.detail["change"], "added");
    assert_eq!(events[7].event.detail["change"], "deleted");
    assert_eq!(events[8].event.detail["status"], "stopped");
    assert_eq!(events[8].event.at_ms, T0 + 11);
    assert_eq!(events[9].event.detail["status"], "started");
    assert_eq!(events[9].event.at_ms, T0 + 13);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

async fn the_outbox_is_published_in_order_and_kept_for_a_while(store: SqlStore) {
    let acme = given_tenant(&store, "acme").await;
    for (n, chat) in ["1", "2", "3", "4"].iter().enumerate() {
        let at = T0 + i64::try_from(n).unwrap() * DAY;
        receive(&store, &acme, &chat_id(chat), &format!("wamid.{chat}"), at).await;
    }
    let all = store.unpublished_events(100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(store.unpublished_events(2).await.unwrap(), all[..2]);
    store
        .mark_events_published(&[all[0].clone(), all[2].clone()], T0 + 5 * DAY)
        .await
        .unwrap();
    let left: Vec<i64> = store
        .unpublished_events(100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, [all[1].seq, all[3].seq]);
    let after = store.events_after(all[1].seq, 100).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].event, all[2].event);
    assert_eq!(after[0].published_ms, Some(T0 + 5 * DAY));
    assert_eq!(after[1].published_ms, None);
    // Retention: the first two days go, one of them never published.
    assert_eq!(
        store.delete_events_before(T0 + 2 * DAY).await.unwrap(),
        (2, 1)
    );
    let kept = store.events_after(0, 100).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].seq, all[2].seq);
    // Nothing recent: what is there goes (up to the last event), then nothing is left.
    assert_eq!(
        store.delete_events_before(T0 + 10 * DAY).await.unwrap(),
        (2, 1)
    );
    assert!(store.events_after(0, 100).await.unwrap().is_empty());
    assert_eq!(
        store.delete_events_before(T0 + 10 * DAY).await.unwrap(),
        (0, 0)
    );
    // An event written after the cutoff stays.
    receive(&store, &acme, &chat_id("5"), "wamid.5", T0 + 11 * DAY).await;
    assert_eq!(
        store.delete_events_before(T0 + 10 * DAY).await.unwrap(),
        (0, 0)
    );
    assert_eq!(store.events_after(0, 100).await.unwrap().len(), 1);
}

async fn published_events_queue_for_webhooks_one_per_chat_at_a_time(store: SqlStore) {
    let acme = given_tenant(&store, "acme").await;
    let beta = given_tenant(&store, "beta").await;
    let webhook = |id: &str, tenant: &TenantId, kinds: Option<Vec<String>>| Webhook {
        id: id.into(),
        tenant: tenant.clone(),
        url: "https://example.com/hook".into(),
        kinds,
        secret: "0123456789abcdef".into(),
        created_ms: T0,
    };
    store
        .add_webhook(&webhook("wh_all", &acme, None))
        .await
        .unwrap();
    store
        .add_webhook(&webhook("wh_sent", &acme, Some(vec!["reply_sent".into()])))
        .await
        .unwrap();
    store
        .add_webhook(&webhook("wh_beta", &beta, None))
        .await
        .unwrap();
    let (a, b) = (chat_id("1"), chat_id("2"));
    for (chat, id) in [(&a, "a1"), (&a, "a2"), (&b, "b1")] {
        receive(&store, &acme, chat, id, T0).await;
    }
    assert!(
        store.due_deliveries(T0, 100).await.unwrap().is_empty(),
        "nothing before publishing"
    );
    let published = store.unpublished_events(100).await.unwrap();
    store.mark_events_published(&published, T0).await.unwrap();
    // Marked again by an overlapping publisher: handed over once all the same.
    store
        .mark_events_published(&published, T0 + 1)
        .await
        .unwrap();
    assert!(
        store.due_deliveries(T0, 100).await.unwrap().is_empty(),
        "handed over, not in the queue"
    );
    // The store hands the deliveries over to the worker whole, once, in outbox order, all
    // standing for by one batch row; the kinds filter holds.
    let queued = store.take_queued().expect("deliveries kept");
    assert!(queued.keys.is_empty(), "nothing to read back");
    let fresh: Vec<(&str, &str, i64, i64)> = queued
        .fresh
        .iter()
        .map(|d| {
            (
                d.webhook.id.as_str(),
                d.event.event.detail["wamid"].as_str().unwrap(),
                d.attempts,
                d.next_attempt_ms,
            )
        })
        .collect();
    assert_eq!(
        fresh,
        [
            ("wh_all", "a1", 0, T0),
            ("wh_all", "a2", 0, T0),
            ("wh_all", "b1", 0, T0)
        ],
        "marked again, handed over once"
    );
    let batch = queued.fresh[0].batch.expect("handed over with its batch");
    assert!(queued.fresh.iter().all(|d| d.batch == Some(batch)));
    // The worker queues them (as when it cannot hold them): the queue holds them in order.
    let queue_them: Vec<AttemptRecord> = queued
        .fresh
        .iter()
        .map(|d| AttemptRecord {
            key: d.key.clone(),
            seq: d.event.seq,
            batch: d.batch,
            since_ms: d.since_ms,
            outcome: AttemptOutcome::Queued { at_ms: T0 },
        })
        .collect();
    store.record_attempts(&queue_them, &[batch]).await.unwrap();
    store.record_attempts(&queue_them, &[]).await.unwrap();
    let due = store.due_deliveries(T0, 100).await.unwrap();
    let heads: Vec<(&str, &str)> = due
        .iter()
        .map(|d| {
            (
                d.webhook.id.as_str(),
                d.event.event.detail["wamid"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        heads,
        [("wh_all", "a1"), ("wh_all", "b1")],
        "the head of each chat, each once"
    );
    assert!(due.iter().all(|d| d.batch.is_none()));
    assert_eq!(queued.fresh[0].event, due[0].event);
    assert_eq!(queued.fresh[0].webhook, due[0].webhook);
    assert!(
        store
            .recover_webhook_batches(&Default::default(), i64::MAX, T0)
            .await
            .unwrap()
            .is_empty(),
        "the settled batch's row is gone"
    );
    let keys: Vec<QueueKey> = due.iter().map(|d| d.key.clone()).collect();
    let again = store.take_queued().expect("nothing piled up");
    assert!(again.keys.is_empty() && again.fresh.is_empty());
    let by_key: Vec<i64> = store
        .queue_heads(&keys)
        .await
        .unwrap()
        .iter()
        .map(|d| d.event.seq)
        .collect();
    assert_eq!(by_key, [due[0].event.seq, due[1].event.seq]);
    let summaries = store.webhooks(&acme).await.unwrap();
    assert_eq!(
        summaries
            .iter()
            .map(|s| (s.pending, s.dead))
            .collect::<Vec<_>>(),
        [(3, 0), (0, 0)]
    );
    assert!(!format!("{:?}", summaries[0].webhook).contains("0123456789abcdef"));

    // a1 fails and is retried later: a2 waits behind it; b1 is delivered (one record).
    store
        .record_attempts(
            &[
                AttemptRecord {
                    key: due[0].key.clone(),
                    seq: due[0].event.seq,
                    batch: None,
                    since_ms: due[0].since_ms,
                    outcome: AttemptOutcome::Retry {
                        at_ms: T0 + 1_000,
                        error: "answered 500".into(),
                    },
                },
                AttemptRecord {
                    key: due[1].key.clone(),
                    seq: due[1].event.seq,
                    batch: None,
                    since_ms: due[1].since_ms,
                    outcome: AttemptOutcome::Delivered,
                },
            ],
            &[],
        )
        .await
        .unwrap();
    assert!(
        store
            .due_deliveries(T0 + 999, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.due_deliveries(T0 + 1_000, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    let retried = store.queue_heads(&keys).await.unwrap();
    assert_eq!(retried.len(), 1, "b's queue is empty");
    assert_eq!(
        (
            retried[0].event.seq,
            retried[0].attempts,
            retried[0].next_attempt_ms
        ),
        (due[0].event.seq, 1, T0 + 1_000)
    );
    // Given up: dead-lettered, and a2 comes up.
    store
        .record_attempts(
            &[AttemptRecord {
                key: again[0].key.clone(),
                seq: again[0].event.seq,
                batch: None,
                since_ms: again[0].since_ms,
                outcome: AttemptOutcome::Dead {
                    at_ms: T0 + 2_000,
                    error: "timed out".into(),
                },
            }],
            &[],
        )
        .await
        .unwrap();
    let next = store.due_deliveries(T0 + 2_000, 100).await.unwrap();
    assert_eq!(next[0].event.event.detail["wamid"], "a2");
    let dead = store
        .dead_letters(&acme, "wh_all", 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("timed out"));
    assert_eq!(dead[0].dead_ms, T0 + 2_000);
    assert_eq!(
        store.dead_letters(&beta, "wh_all", 10).await.unwrap(),
        None,
        "another tenant's"
    );
    // Retention keeps an event a webhook still holds.
    store.delete_events_before(T0 + 1).await.unwrap();
    assert_eq!(
        store
            .dead_letters(&acme, "wh_all", 10)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .redeliver(&acme, "wh_all", None, T0 + 3_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store.redeliver(&acme, "wh_nope", None, T0).await.unwrap(),
        None
    );
    assert!(store.remove_webhook(&acme, "wh_all").await.unwrap());
    assert!(!store.remove_webhook(&acme, "wh_all").await.unwrap());
    assert!(
        store
            .due_deliveries(T0 + 10_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A node killed while it held deliveries in memory: the batch rows it left are recovered
/// into the queue by the next worker, once; a failed first attempt is in the queue already
/// and keeps its count; a batch a worker holds is left to it.
async fn webhook_batches_left_behind_are_recovered_once(store: SqlStore) {
    let acme = given_tenant(&store, "acme").await;
    store
        .add_webhook(&Webhook {
            id: "wh_1".into(),
            tenant: acme.clone(),
            url: "https://example.com/hook".into(),
            kinds: None,
            secret: "0123456789abcdef".into(),
            created_ms: T0,
        })
        .await
        .unwrap();
    let (a, b) = (chat_id("1"), chat_id("2"));
    receive(&store, &acme, &a, "a1", T0).await;
    receive(&store, &acme, &b, "b1", T0).await;
    let published = store.unpublished_events(100).await.unwrap();
    store.mark_events_published(&published, T0).await.unwrap();
    let handed = store.take_queued().expect("kept").fresh;
    assert_eq!(handed.len(), 2);
    let batch = handed[0].batch.unwrap();
    // a1's first attempt failed and was recorded; then the node died.
    store
        .record_attempts(
            &[AttemptRecord {
                key: handed[0].key.clone(),
                seq: handed[0].event.seq,
                batch: Some(batch),
                since_ms: T0,
                outcome: AttemptOutcome::Retry {
                    at_ms: T0 + 1_000,
                    error: "answered 503".into(),
                },
            }],
            &[],
        )
        .await
        .unwrap();
    let held = std::collections::HashSet::from([batch]);
    assert!(
        store
            .recover_webhook_batches(&held, i64::MAX, T0 + 5)
            .await
            .unwrap()
            .is_empty(),
        "a batch a worker holds is its own"
    );
    assert!(
        store
            .recover_webhook_batches(&Default::default(), T0 - 1, T0 + 5)
            .await
            .unwrap()
            .is_empty(),
        "written later than asked"
    );
    assert_eq!(
        store
            .recover_webhook_batches(&Default::default(), T0, T0 + 5)
            .await
            .unwrap(),
        [batch]
    );
    let mut due: Vec<(String, i64, i64)> = store
        .due_deliveries(i64::MAX, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.event.event.detail["wamid"].as_str().unwrap().to_owned(),
                d.attempts,
                d.next_attempt_ms,
            )
        })
        .collect();
    due.sort();
    assert_eq!(
        due,
        [("a1".into(), 1, T0 + 1_000), ("b1".into(), 0, T0 + 5)],
        "b1 queued by the recovery; a1 as its failed attempt left it"
    );
    assert!(
        store
            .recover_webhook_batches(&Default::default(), i64::MAX, T0 + 6)
            .await
            .unwrap()
            .is_empty(),
        "recovered once"
    );
    let summary = store.webhooks(&acme).await.unwrap();
    assert_eq!((summary[0].pending, summary[0].dead), (2, 0));
}

// ---------------------------------------------------------------------------------------
// Connecting: errors, SQLite settings, concurrent migrations.
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Tenant API tokens (TenantTokenStore, not part of Store).
// ---------------------------------------------------------------------------------------

fn new_token(tenant: &TenantId, id: &str, digest: &str, at_ms: i64) -> NewTenantToken {
    NewTenantToken {
        id: id.to_owned(),
        tenant: tenant.clone(),
        name: Some(format!("{id} label")),
        digest: digest.to_owned(),
        created_ms: at_ms,
    }
}

async fn tenant_tokens_are_found_by_digest_listed_and_revoked(fixture: Fixture) {
    let store = fixture.store;
    let acme = given_tenant(&store, "acme").await;
    let bolt = given_tenant(&store, "bolt").await;
    store
        .insert_tenant_token(&new_token(&acme, "t2", "d2", T0 + MINUTE))
        .await
        .unwrap();
    store
        .insert_tenant_token(&new_token(&acme, "t1", "d1", T0))
        .await
        .unwrap();
    store
        .insert_tenant_token(&new_token(&bolt, "t3", "d3", T0))
        .await
        .unwrap();

    let found = store.tenant_token_by_digest("d2").await.unwrap().unwrap();
    assert_eq!(found.id, "t2");
    assert_eq!(found.tenant, acme);
    assert_eq!(found.name.as_deref(), Some("t2 label"));
    assert_eq!(found.created_ms, T0 + MINUTE);
    assert!(
        store
            .tenant_token_by_digest("nope")
            .await
            .unwrap()
            .is_none()
    );

    let listed = store.tenant_tokens(&acme).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2"], "oldest first, one tenant only");

    // a digest or an id taken twice is a conflict; an unknown tenant is not found
    let taken = store
        .insert_tenant_token(&new_token(&bolt, "t4", "d1", T0))
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { .. }), "{taken:?}");
    let taken = store
        .insert_tenant_token(&new_token(&bolt, "t1", "d9", T0))
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { .. }), "{taken:?}");
    let missing = store
        .insert_tenant_token(&new_token(&tenant_id("ghost"), "t5", "d5", T0))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { .. }),
        "{missing:?}"
    );

    // another tenant cannot revoke acme's token; acme can, once
    assert!(!store.delete_tenant_token(&bolt, "t1").await.unwrap());
    assert!(store.delete_tenant_token(&acme, "t1").await.unwrap());
    assert!(!store.delete_tenant_token(&acme, "t1").await.unwrap());
    assert!(store.tenant_token_by_digest("d1").await.unwrap().is_none());
    assert_eq!(store.tenant_tokens(&acme).await.unwrap().len(), 1);
    assert_eq!(store.tenant_tokens(&bolt).await.unwrap().len(), 1);
}

/// A rolling upgrade runs the older build against a database the newer build migrated: it
/// opens it and keeps working, where sqlx alone refuses a migration it does not know.
async fn a_database_a_newer_build_migrated_still_opens(fixture: Fixture) {
    let acme = given_tenant(&fixture.store, "acme").await;
    receive(&fixture.store, &acme, &chat_id("1555"), "wamid.1", T0).await;
    fixture.store.close().await;

    sqlx::any::install_default_drivers();
    let mut sql = sqlx::AnyConnection::connect(&fixture.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(99_990_101_000_000_i64)
    .bind("a newer build's migration")
    .bind(true)
    .bind(vec![0_u8; 48])
    .bind(0_i64)
    .execute(&mut sql)
    .await
    .unwrap();
    sql.close().await.unwrap();

    let reopened = SqlStore::connect(&fixture.url)
        .await
        .expect("the older build opens the newer build's database");
    assert_eq!(
        reopened.unanswered_inbound(&acme, 0).await.unwrap().len(),
        1
    );
    receive(&reopened, &acme, &chat_id("1555"), "wamid.2", T0 + MINUTE).await;
    assert_eq!(
        reopened.unanswered_inbound(&acme, 0).await.unwrap().len(),
        2
    );
    reopened.close().await;
}

async fn tenant_tokens_go_with_their_tenant(fixture: Fixture) {
    let store = &fixture.store;
    let acme = given_tenant(store, "acme").await;
    let bolt = given_tenant(store, "bolt").await;
    store
        .insert_tenant_token(&new_token(&acme, "t1", "d1", T0))
        .await
        .unwrap();
    store
        .insert_tenant_token(&new_token(&bolt, "t2", "d2", T0))
        .await
        .unwrap();

    // no operation deletes a tenant yet: the operator does it in SQL
    sqlx::any::install_default_drivers();
    let mut sql = sqlx::AnyConnection::connect(&fixture.url).await.unwrap();
    if store.dialect() == Dialect::Sqlite {
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut sql)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind("acme")
        .execute(&mut sql)
        .await
        .unwrap();
    sql.close().await.unwrap();

    assert!(store.tenant_token_by_digest("d1").await.unwrap().is_none());
    assert!(store.tenant_tokens(&acme).await.unwrap().is_empty());
    assert!(store.tenant_token_by_digest("d2").await.unwrap().is_some());
}

fn decision(tenant: &str, node: &str, reason: PlacementReason, at_ms: i64) -> PlacementDecision {
    PlacementDecision {
        tenant: tenant.into(),
        node: node.into(),
        epoch: Some(3),
        reason,
        from: (reason != PlacementReason::Activation).then(|| "node-9".into()),
        decided_by: "node-1".into(),
        decided_ms: at_ms,
        candidates: vec![CandidateLoad {
            node: node.into(),
            tenants: 4,
            max_tenants: 100,
            rss_bytes: 1 << 20,
            draining: false,
        }],
    }
}

async fn placement_decisions_keep_the_last_per_tenant_and_go_with_it(store: SqlStore) {
    let acme = given_tenant(&store, "acme").await;
    let bolt = given_tenant(&store, "bolt").await;
    assert_eq!(store.placement_decision(&acme).await.unwrap(), None);
    let first = decision("acme", "node-1", PlacementReason::Activation, T0);
    let other = decision("bolt", "node-2", PlacementReason::Activation, T0);
    let last = decision("acme", "node-2", PlacementReason::Failover, T0 + 1);
    // A batch may hold two decisions about one tenant: the later one stays.
    store
        .record_placements(&[first, other.clone(), last.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.placement_decision(&acme).await.unwrap(),
        Some(last.clone())
    );
    assert_eq!(
        store.placement_decision(&bolt).await.unwrap(),
        Some(other.clone())
    );
    // An older decision written late (another node's batch) does not replace a newer one.
    let late = decision("acme", "node-3", PlacementReason::Drain, T0);
    store.record_placements(&[late]).await.unwrap();
    assert_eq!(store.placement_decision(&acme).await.unwrap(), Some(last));

    store.set_session_stopped(&acme, true, T0).await.unwrap();
    assert!(
        store
            .delete_tenant(&acme, Deletion::KeepData, T0 + 2)
            .await
            .unwrap()
    );
    assert_eq!(store.placement_decision(&acme).await.unwrap(), None);
    assert_eq!(store.placement_decision(&bolt).await.unwrap(), Some(other));
}

#[tokio::test]
async fn a_down_database_is_unavailable_and_the_password_stays_hidden() {
    let started = std::time::Instant::now();
    let error = SqlStore::connect("postgres://postgres:secretpw@127.0.0.1:1/x")
        .await
        .expect_err("nothing listens on port 1");
    let shown = error.to_string();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(
        shown.contains("postgres://postgres:***@127.0.0.1:1/x"),
        "{shown}"
    );
    assert!(!shown.contains("secretpw"), "{shown}");
    assert!(!format!("{error:?}").contains("secretpw"), "{error:?}");
    // the real reason, at once: not a pool timeout after retrying for seconds
    assert!(shown.contains("refused"), "{shown}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_schemes_are_refused() {
    let error = SqlStore::connect("mysql://root:hunter2@127.0.0.1/salesboy")
        .await
        .expect_err("mysql is not supported");
    let shown = error.to_string();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
    assert!(
        shown.contains("mysql://root:***@127.0.0.1/salesboy"),
        "{shown}"
    );
    assert!(
        shown.contains("sqlite:, postgres: or postgresql:"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn a_missing_sqlite_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("no/such/dir/salesboy.db").display()
    );
    let error = SqlStore::connect(&url)
        .await
        .expect_err("the directory does not exist");
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("salesboy.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqlStore::connect(&url).await.unwrap();
    let acme = given_tenant(&store, "acme").await;
    receive(&store, &acme, &chat_id("1555"), "wamid.1", T0).await;
    store.close().await;

    // reopening applies no migration twice and keeps the data
    let store = SqlStore::connect(&url).await.unwrap();
    assert_eq!(store.unanswered_inbound(&acme, 0).await.unwrap().len(), 1);
    store.close().await;

    let mut raw = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(
        migrations,
        i64::try_from(files).unwrap(),
        "every migration, once"
    );
    raw.close().await.unwrap();
}

/// Below its backstop the writer's commits do not copy the write-ahead log into the
/// database file: the checkpointer does, in the background, so the file catches up with
/// what was written.
#[tokio::test]
async fn sqlite_s_log_reaches_the_database_file_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("salesboy.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqlStore::connect(&url).await.unwrap();
    let acme = given_tenant(&store, "acme").await;
    for i in 0..200 {
        receive(&store, &acme, &chat_id("1555"), &format!("wamid.{i}"), T0).await;
    }
    // The database file's size is what was written (pages × page size, the log included).
    salesboy_testkit::eventually(Duration::from_secs(10), || async {
        let mut raw = sqlx::sqlite::SqliteConnection::connect(&url).await.ok()?;
        let written: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&mut raw)
        .await
        .ok()?;
        raw.close().await.ok()?;
        (u64::try_from(written).ok()? == std::fs::metadata(&path).ok()?.len()).then_some(())
    })
    .await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_keeps_one_database() {
    let store = SqlStore::connect("sqlite::memory:").await.unwrap();
    let acme = given_tenant(&store, "acme").await;
    // several operations in a row must all see the same database
    receive(&store, &acme, &chat_id("1555"), "wamid.1", T0).await;
    assert_eq!(store.unanswered_inbound(&acme, 0).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn concurrent_postgres_migrations_all_succeed() {
    let database = FreshDatabase::create(Backend::Postgres).await;
    let url = database.url().to_owned();
    let outcome = tokio::spawn(async move {
        let nodes: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { SqlStore::connect(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for node in nodes {
            stores.push(
                node.await
                    .expect("task")
                    .expect("every node connects and migrates"),
            );
        }
        // every node sees the one schema, applied once
        let acme = given_tenant(&stores[0], "acme").await;
        for store in &stores {
            assert!(store.tenant(&acme).await.unwrap().is_some());
        }
        let mut raw = PgConnection::connect(&url).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&mut raw)
            .await
            .unwrap();
        let files = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../migrations/postgres"
        ))
        .unwrap()
        .count();
        assert_eq!(
            applied,
            i64::try_from(files).unwrap(),
            "every migration, once"
        );
        let _ = raw.close().await;
        for store in stores {
            store.close().await;
        }
    })
    .await;
    drop(database);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

// ---------------------------------------------------------------------------------------
// Webhook items: Meta's timestamps and rejected items (issue 11).
// ---------------------------------------------------------------------------------------

async fn inbound_messages_keep_metas_timestamp(store: Arc<dyn Store>) {
    let acme = given_tenant(&*store, "acme").await;
    let chat = chat_id("15550001111");
    let id = receive(&*store, &acme, &chat, "wamid.1", T0).await;
    let stored = message(&*store, &acme, &chat, id).await;
    assert_eq!((stored.created_ms, stored.sent_ms), (T0, Some(T0 - 1_000)));
    let unanswered = store.unanswered_inbound(&acme, T0 - MINUTE).await.unwrap();
    assert_eq!(unanswered[0].sent_ms, Some(T0 - 1_000));
    // Outbound messages have none.
    let reply_id = record(&*store, &reply(&acme, &chat, &[id], 1, T0 + 1)).await;
    assert_eq!(message(&*store, &acme, &chat, reply_id).await.sent_ms, None);
}

fn rejected(tenant: Option<&TenantId>, path: &str, at_ms: i64) -> NewRejectedItem {
    NewRejectedItem {
        tenant: tenant.cloned(),
        phone_number_id: tenant.map(|_| PhoneNumberId::new("106540352242922").unwrap()),
        waba_id: Some("102290129340398".into()),
        item: RejectedItem::new(
            path.into(),
            "wamid contains ' ' at byte 5",
            &json!({"id": "wamid with spaces", "from": "16505551234"}),
        ),
        received_ms: at_ms,
    }
}

async fn rejected_items_are_kept_with_their_event(store: SqlStore) {
    let acme = given_tenant(&store, "acme").await;
    let bravo = given_tenant(&store, "bravo").await;
    let first = rejected(Some(&acme), "entry[0].changes[0].value.messages[0]", T0);
    let first_id = store.record_rejected_item(&first).await.unwrap();
    let unknown = rejected(None, "entry[1].changes[0]", T0 + 1);
    store.record_rejected_item(&unknown).await.unwrap();
    let second = rejected(Some(&acme), "entry[0].changes[0].value.statuses[0]", T0 + 2);
    let second_id = store.record_rejected_item(&second).await.unwrap();
    assert!(second_id > first_id);

    // Newest first, only the tenant's own, paged with `before`.
    let listed = store.rejected_items(&acme, None, 10).await.unwrap();
    let ids: Vec<i64> = listed.iter().map(|r| r.id).collect();
    assert_eq!(ids, [second_id, first_id]);
    assert_eq!(listed[1].new, first);
    let raw: serde_json::Value = serde_json::from_str(&listed[1].new.item.raw).unwrap();
    assert_eq!(raw["id"], "wamid with spaces");
    let page = store
        .rejected_items(&acme, Some(second_id), 10)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [first_id]);
    assert_eq!(store.rejected_items(&acme, None, 1).await.unwrap().len(), 1);
    assert!(
        store
            .rejected_items(&bravo, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // One message_rejected event per item of a tenant, none for the tenantless one.
    let events = store.unpublished_events(10).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for (event, id, item) in [
        (&events[0], first_id, &first),
        (&events[1], second_id, &second),
    ] {
        assert_eq!(event.event.kind, EventKind::MessageRejected);
        assert_eq!(event.event.tenant.as_ref(), Some(&acme));
        assert_eq!(event.event.at_ms, item.received_ms);
        assert_eq!(event.event.detail["rejected_id"], id);
        assert_eq!(event.event.detail["path"], item.item.path.as_str());
        assert_eq!(event.event.detail["phone_number_id"], "106540352242922");
    }

    // Retention takes the old ones, tenantless included; erasing the tenant takes the rest.
    assert_eq!(store.delete_rejected_items_before(T0 + 2).await.unwrap(), 2);
    assert_eq!(
        store.rejected_items(&acme, None, 10).await.unwrap().len(),
        1
    );
    store
        .delete_tenant(&acme, Deletion::EraseData, T0 + 3)
        .await
        .unwrap();
    assert_eq!(
        store.delete_rejected_items_before(i64::MAX).await.unwrap(),
        0
    );
}
