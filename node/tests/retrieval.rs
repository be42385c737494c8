//! Semantic retrieval (issue 15) on both databases: passages embedded in the background
//! through a local fake embedding server (`FakeEmbedder`, in the providers' wire formats),
//! vectors stored per tenant and model, hybrid search, the provider down.
//!
//! Each test runs twice, `sqlite::<name>` and `postgres::<name>`, each on a fresh database
//! (Postgres through `SALESBOY_TEST_POSTGRES_URL`; never skipped).

use std::future::Future;

use std::time::Duration;

use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{
    InsertOutcome, NewInbound, NewKnowledge, NewReply, NewTenant, PassageChoice, ReplyOutcome,
};
use salesboy_node::knowledge::passages;
use salesboy_node::retrieval::{self, RetrievalSettings};
use salesboy_node::store::{EmbedPass, SqlStore};
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use salesboy_testkit::{
    Backend, FakeEmbedder, FakeEmbedderMode, database_suite, eventually, run_on_fresh_database,
};
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000;

/// What a test gets: a way to open stores on one fresh database, and the fake.
struct Fixture {
    url: String,
    fake: FakeEmbedder,
}

impl Fixture {
    /// A store on the database embedding with `model` through the fake (OpenAI wire
    /// format for `openai`, Gemini's for `gemini`).
    async fn store(&self, kind: &str, model: &str) -> SqlStore {
        self.store_with(&self.fake.providers_json(kind, model))
            .await
    }

    /// A store on the database embedding through `providers` (a provider list's JSON).
    async fn store_with(&self, providers: &str) -> SqlStore {
        let settings = RetrievalSettings {
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(200),
            idle_poll: Duration::from_millis(100),
            failure_rest: Duration::from_millis(50),
            ..RetrievalSettings::default()
        };
        let retrieval = retrieval::from_config(
            &salesboy_node::adapters::http_client().expect("http client"),
            Some(providers),
            settings,
        )
        .expect("valid providers")
        .expect("a chain");
        SqlStore::connect(&self.url)
            .await
            .expect("store")
            .with_retrieval(retrieval)
    }

    /// A store without embeddings (the default node).
    async fn plain_store(&self) -> SqlStore {
        SqlStore::connect(&self.url).await.expect("store")
    }
}

/// Runs `test` on a fresh database of `backend` with a fresh fake.
async fn run_on<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fake = FakeEmbedder::start().await;
    run_on_fresh_database(backend, |url| test(Fixture { url, fake })).await;
}

database_suite!(
    run_on =>
    documents_are_embedded_when_added_and_paraphrases_are_found,
    search_returns_only_the_tenants_own_passages,
    removing_a_document_removes_its_vectors,
    a_model_change_re_embeds_everything,
    provider_down_keeps_full_text_emits_an_event_and_loses_nothing,
    the_gemini_wire_format_embeds_too,
    without_a_provider_the_search_is_full_text_only,
    a_reply_keeps_the_passages_it_was_written_from,
    batches_of_long_vectors_are_read_whole,
    each_tenant_is_embedded_and_searched_with_its_own_model,
    a_passage_the_provider_refuses_holds_up_no_other,
    the_full_text_half_follows_additions_and_deletions_at_once,
);

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("tenant id")
}

async fn given_tenant(store: &SqlStore, id: &str) -> TenantId {
    let tenant = tenant(id);
    store
        .upsert_tenant(&NewTenant::new(tenant.clone(), format!("{id} shop"), T0))
        .await
        .expect("tenant");
    tenant
}

const SHIPPING: &str = "# Shipping\nWe ship across Nigeria within three working days.";
const BOOTS: &str = "# Products\nOur workshop makes handmade leather boots and belts.";
const REFUNDS: &str = "# Refunds\nUnhappy customers get their money back within two weeks.";

async fn add(store: &SqlStore, tenant: &TenantId, title: &str, text: &str) -> i64 {
    store
        .add_knowledge(&NewKnowledge {
            tenant: tenant.clone(),
            title: title.to_owned(),
            chunks: passages(text),
            created_ms: T0,
        })
        .await
        .expect("add knowledge")
}

/// Runs embedding passes until nothing is pending (bounded); a pass skipped because the
/// provider's circuit is resting (50 ms here) is tried again.
async fn embed_all(store: &SqlStore) {
    for _ in 0..200 {
        match store.embed_pending().await.expect("pass") {
            EmbedPass::Idle => return,
            EmbedPass::Embedded(_) => {}
            EmbedPass::Failed { skipped: true, .. } => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("embedding failed: {other:?}"),
        }
    }
    panic!("still pending after 200 passes");
}

/// (chunks, embedded chunks) of each of the tenant's documents.
async fn progress(store: &SqlStore, tenant: &TenantId) -> Vec<(i64, Option<i64>)> {
    store
        .list_knowledge(tenant)
        .await
        .expect("list")
        .into_iter()
        .map(|d| (d.chunk_count, d.embedded_chunks))
        .collect()
}

async fn vectors(store: &SqlStore, tenant: &TenantId) -> usize {
    store
        .load_vector_index(tenant)
        .await
        .expect("load")
        .expect("retrieval")
        .index
        .len()
}

async fn documents_are_embedded_when_added_and_paraphrases_are_found(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    add(&store, &acme, "Shipping", SHIPPING).await;
    add(&store, &acme, "Products", BOOTS).await;
    // Pending until the embedder runs: the progress says so.
    assert_eq!(progress(&store, &acme).await, [(1, Some(0)), (1, Some(0))]);

    // The background embedder, woken by the adds.
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(retrieval::worker::run(store.clone(), None, cancel.clone()));
    eventually(Duration::from_secs(20), || async {
        (progress(&store, &acme).await == [(1, Some(1)), (1, Some(1))]).then_some(())
    })
    .await;
    cancel.cancel();
    worker.await.expect("worker");
    assert_eq!(fx.fake.texts(), 2);

    // "deliver to Lagos" shares no word with "ship across Nigeria": full text finds
    // nothing, the vectors do.
    let hits = store
        .search_knowledge(&acme, "Do you deliver to Lagos?", 3)
        .await
        .expect("search");
    assert_eq!(hits[0].document_title, "Shipping", "{hits:#?}");
    assert_eq!(hits[0].vector_rank, Some(1));
    assert_eq!(hits[0].fulltext_rank, None);
    // A word match ranks by both.
    let hits = store
        .search_knowledge(&acme, "leather boots", 3)
        .await
        .expect("search");
    assert_eq!(hits[0].document_title, "Products");
    assert_eq!(hits[0].fulltext_rank, Some(1));
    assert_eq!(hits[0].vector_rank, Some(1));

    // Usage is recorded per tenant: the passages and the two questions.
    let totals = store.llm_usage_totals(&acme, 0).await.expect("usage");
    assert!(totals.prompt_tokens > 0, "{totals:?}");
    store.close().await;
}

async fn search_returns_only_the_tenants_own_passages(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    let beta = given_tenant(&store, "beta").await;
    let acme_doc = add(&store, &acme, "Shipping", SHIPPING).await;
    let beta_doc = add(
        &store,
        &beta,
        "Shipping",
        "# Shipping\nWe ship to Lagos and Abuja every day.",
    )
    .await;
    add(&store, &beta, "Refunds", REFUNDS).await;
    embed_all(&store).await;
    for question in ["Do you deliver to Lagos?", "refund", "shipping days"] {
        let hits = store
            .search_knowledge(&acme, question, 10)
            .await
            .expect("search");
        assert!(!hits.is_empty(), "{question}");
        assert!(
            hits.iter().all(|h| h.document_id == acme_doc),
            "{question}: {hits:#?}"
        );
        let hits = store
            .search_knowledge(&beta, question, 10)
            .await
            .expect("search");
        assert!(
            hits.iter().all(|h| h.document_id != acme_doc),
            "{question}: {hits:#?}"
        );
    }
    let hits = store
        .search_knowledge(&beta, "deliver to Nigeria", 1)
        .await
        .expect("search");
    assert_eq!(hits[0].document_id, beta_doc);
    assert_eq!(vectors(&store, &acme).await, 1);
    assert_eq!(vectors(&store, &beta).await, 2);
    store.close().await;
}

async fn removing_a_document_removes_its_vectors(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    let shipping = add(&store, &acme, "Shipping", SHIPPING).await;
    add(&store, &acme, "Products", BOOTS).await;
    embed_all(&store).await;
    assert_eq!(vectors(&store, &acme).await, 2);
    // Warm the cache, then delete: the next search must not return the deleted passage.
    assert!(
        !store
            .search_knowledge(&acme, "deliver Lagos", 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .delete_knowledge(&acme, shipping, T0 + 1)
            .await
            .unwrap()
    );
    assert_eq!(vectors(&store, &acme).await, 1);
    let hits = store
        .search_knowledge(&acme, "Do you deliver to Lagos?", 5)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.document_id != shipping), "{hits:#?}");
    // Deleting the tenant's last document leaves no vector behind.
    let products = store.list_knowledge(&acme).await.unwrap()[0].id;
    assert!(
        store
            .delete_knowledge(&acme, products, T0 + 2)
            .await
            .unwrap()
    );
    assert_eq!(vectors(&store, &acme).await, 0);
    store.close().await;
}

/// The hybrid search's full text comes from a cached index of the tenant's passages: a
/// document added after it was cached is found at once (before it is embedded), by meaning
/// too once embedded, and one deleted is gone at once.
async fn the_full_text_half_follows_additions_and_deletions_at_once(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    add(&store, &acme, "Shipping", SHIPPING).await;
    embed_all(&store).await;
    let hits = store
        .search_knowledge(&acme, "shipping Nigeria", 3)
        .await
        .unwrap();
    assert_eq!(hits[0].document_title, "Shipping", "{hits:#?}");

    let products = add(&store, &acme, "Products", BOOTS).await;
    let (fulltext_rank, vector_rank) = ranks_of(&store, &acme, "leather boots", products).await;
    assert_eq!(
        fulltext_rank,
        Some(1),
        "the new document is found by full text"
    );
    assert_eq!(vector_rank, None, "not embedded yet");
    // Embedded now: the cached vector index is stale and reloaded.
    embed_all(&store).await;
    let (_, vector_rank) = ranks_of(&store, &acme, "leather boots", products).await;
    assert!(vector_rank.is_some(), "found by meaning too");

    assert!(
        store
            .delete_knowledge(&acme, products, T0 + 1)
            .await
            .unwrap()
    );
    let hits = store
        .search_knowledge(&acme, "leather boots", 3)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.document_id != products), "{hits:#?}");
    assert!(
        store.retrieval().expect("retrieval").cached_text_bytes() > 0,
        "the index is cached"
    );
    store.close().await;
}

/// The full-text and vector ranks of `document`'s best passage among the top 3 for
/// `question`; panics when it is not among them.
async fn ranks_of(
    store: &SqlStore,
    tenant: &TenantId,
    question: &str,
    document: i64,
) -> (Option<u32>, Option<u32>) {
    let hits = store.search_knowledge(tenant, question, 3).await.unwrap();
    let found = hits
        .iter()
        .find(|h| h.document_id == document)
        .unwrap_or_else(|| panic!("document {document} not found: {hits:#?}"));
    (found.fulltext_rank, found.vector_rank)
}

async fn a_model_change_re_embeds_everything(fx: Fixture) {
    let first = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&first, "acme").await;
    add(&first, &acme, "Shipping", SHIPPING).await;
    add(&first, &acme, "Refunds", REFUNDS).await;
    embed_all(&first).await;
    assert_eq!(fx.fake.texts(), 2);
    first.close().await;

    // The node restarts with another model: every passage is pending again.
    let second = fx.store("openai", "fake-embed-2").await;
    assert_eq!(progress(&second, &acme).await, [(1, Some(0)), (1, Some(0))]);
    embed_all(&second).await;
    assert_eq!(progress(&second, &acme).await, [(1, Some(1)), (1, Some(1))]);
    assert_eq!(fx.fake.texts(), 4);
    assert_eq!(vectors(&second, &acme).await, 2);
    second.close().await;
    // The old model's vectors were replaced, not kept beside the new ones.
    let back = fx.store("openai", "fake-embed-1").await;
    assert_eq!(vectors(&back, &acme).await, 0);
    back.close().await;
}

async fn provider_down_keeps_full_text_emits_an_event_and_loses_nothing(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    fx.fake.set_mode(FakeEmbedderMode::Down);
    let shipping = add(&store, &acme, "Shipping", SHIPPING).await;
    assert!(matches!(
        store.embed_pending().await.unwrap(),
        EmbedPass::Failed {
            pending: 1,
            skipped: false
        }
    ));
    // A second failure in the same streak raises no second event.
    store.embed_pending().await.unwrap();
    let failed: Vec<_> = store
        .unpublished_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == EventKind::KnowledgeEmbeddingFailed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event.tenant.as_ref(), Some(&acme));
    assert_eq!(
        failed[0].event.detail["document_ids"],
        serde_json::json!([shipping])
    );
    assert_eq!(failed[0].event.detail["retrying"], true);

    // Searches still answer, by full text.
    let hits = store
        .search_knowledge(&acme, "shipping Nigeria", 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].fulltext_rank, Some(1));
    assert_eq!(hits[0].vector_rank, None);
    assert_eq!(progress(&store, &acme).await, [(1, Some(0))]);

    // Back up (once the circuit's short test rest is over): the passage was kept pending
    // and is embedded now.
    fx.fake.set_mode(FakeEmbedderMode::Up);
    embed_all(&store).await;
    assert_eq!(progress(&store, &acme).await, [(1, Some(1))]);
    let hits = store
        .search_knowledge(&acme, "Do you deliver to Lagos?", 3)
        .await
        .unwrap();
    assert_eq!(hits[0].document_id, shipping);
    assert_eq!(hits[0].vector_rank, Some(1));
    store.close().await;
}

async fn the_gemini_wire_format_embeds_too(fx: Fixture) {
    let store = fx.store("gemini", "fake-embed-g").await;
    let acme = given_tenant(&store, "acme").await;
    add(&store, &acme, "Shipping", SHIPPING).await;
    add(&store, &acme, "Products", BOOTS).await;
    add(&store, &acme, "Refunds", REFUNDS).await;
    embed_all(&store).await;
    // One batchEmbedContents for the three passages; questions go through embedContent.
    assert_eq!(fx.fake.requests(), 1);
    let hits = store
        .search_knowledge(&acme, "¿Hacen envíos a Lagos?", 3)
        .await
        .unwrap();
    assert_eq!(hits[0].document_title, "Shipping", "{hits:#?}");
    assert_eq!(fx.fake.requests(), 2);
    store.close().await;
}

async fn without_a_provider_the_search_is_full_text_only(fx: Fixture) {
    let store = fx.plain_store().await;
    let acme = given_tenant(&store, "acme").await;
    add(&store, &acme, "Shipping", SHIPPING).await;
    assert_eq!(store.embed_pending().await.unwrap(), EmbedPass::Idle);
    assert_eq!(progress(&store, &acme).await, [(1, None)]);
    assert!(
        store
            .search_knowledge(&acme, "Do you deliver to Lagos?", 3)
            .await
            .unwrap()
            .is_empty()
    );
    let hits = store
        .search_knowledge(&acme, "ship Nigeria", 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].vector_rank, None);
    assert_eq!(fx.fake.requests(), 0);
    store.close().await;
}

async fn a_reply_keeps_the_passages_it_was_written_from(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    add(&store, &acme, "Shipping", SHIPPING).await;
    add(&store, &acme, "Products", BOOTS).await;
    embed_all(&store).await;
    let hits = store
        .search_knowledge(&acme, "Do you deliver to Lagos?", 2)
        .await
        .unwrap();
    let chosen: Vec<PassageChoice> = hits.iter().map(PassageChoice::from).collect();
    assert_eq!(chosen[0].document_title, "Shipping");
    assert_eq!(chosen[0].vector_rank, Some(1));

    let chat = ChatId::new("15550001111").unwrap();
    let InsertOutcome::Inserted { id } = store
        .insert_inbound(&NewInbound {
            tenant: acme.clone(),
            chat: chat.clone(),
            wamid: Wamid::new("wamid.q1").unwrap(),
            received_ms: T0,
            sent_ms: None,
            kind: "text".to_owned(),
            body: Some("Do you deliver to Lagos?".to_owned()),
            raw: None,
        })
        .await
        .unwrap()
    else {
        panic!("inserted");
    };
    store.claim_epoch(&acme, 1).await.unwrap();
    let outcome = store
        .record_reply(&NewReply {
            tenant: acme.clone(),
            chat: chat.clone(),
            answers: vec![id],
            body: "Yes, across Nigeria.".to_owned(),
            passages: chosen.clone(),
            epoch: 1,
            created_ms: T0 + 1,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, ReplyOutcome::Recorded { .. }));
    let messages = store
        .conversation_messages(&acme, &chat, None, 10)
        .await
        .unwrap();
    let reply = messages
        .iter()
        .find(|m| m.body.as_deref() == Some("Yes, across Nigeria."))
        .expect("reply");
    assert_eq!(reply.passages, chosen);
    let question = messages.iter().find(|m| m.id == id).expect("question");
    assert!(question.passages.is_empty());
    store.close().await;
}

/// 40 vectors of 3,072 floats are about 3 MB of JSON: more than a chat answer may be, well
/// within an embedding answer's limit.
async fn batches_of_long_vectors_are_read_whole(fx: Fixture) {
    let providers = serde_json::json!([{"kind": "openai", "model": "fake-embed-3072",
        "api_key": salesboy_testkit::fake_embedder::FAKE_EMBEDDING_KEY,
        "base_url": format!("http://{}/v1", fx.fake.addr()), "dimensions": 3072, "batch_size": 40}])
    .to_string();
    let retrieval = retrieval::from_config(
        &salesboy_node::adapters::http_client().expect("http client"),
        Some(&providers),
        RetrievalSettings::default(),
    )
    .expect("valid")
    .expect("a chain");
    let store = SqlStore::connect(&fx.url)
        .await
        .expect("store")
        .with_retrieval(retrieval);
    let acme = given_tenant(&store, "acme").await;
    store
        .add_knowledge(&NewKnowledge {
            tenant: acme.clone(),
            title: "many".to_owned(),
            chunks: (0..40)
                .map(|i| format!("passage number {i} about boots"))
                .collect(),
            created_ms: T0,
        })
        .await
        .unwrap();
    assert_eq!(
        store.embed_pending().await.unwrap(),
        EmbedPass::Embedded(40)
    );
    let index = store.load_vector_index(&acme).await.unwrap().unwrap().index;
    assert_eq!((index.len(), index.dimensions()), (40, 3072));
    store.close().await;
}

/// A provider list of two models through the fake: `fake-embed-1` (the default) and
/// `fake-embed-2`.
fn two_models(fx: &Fixture) -> String {
    let mut first: Vec<serde_json::Value> =
        serde_json::from_str(&fx.fake.providers_json("openai", "fake-embed-1")).unwrap();
    let second: Vec<serde_json::Value> =
        serde_json::from_str(&fx.fake.providers_json("openai", "fake-embed-2")).unwrap();
    first.extend(second);
    serde_json::Value::Array(first).to_string()
}

async fn choose_model(store: &SqlStore, tenant: &TenantId, model: Option<&str>) {
    let mut record: NewTenant = store
        .tenant(tenant)
        .await
        .expect("tenant")
        .map(|t| NewTenant {
            id: t.id,
            name: t.name,
            system_prompt: t.system_prompt,
            llm_config: t.llm_config,
            llm_monthly_spend_cap_micros: t.llm_monthly_spend_cap_micros,
            embedding_model: t.embedding_model,
            engine: t.engine,
            web_hygiene: None,
            read_receipts: None,
            created_ms: t.created_ms,
        })
        .expect("exists");
    record.embedding_model = model.map(str::to_owned);
    store.upsert_tenant(&record).await.expect("model chosen");
}

async fn each_tenant_is_embedded_and_searched_with_its_own_model(fx: Fixture) {
    let store = fx.store_with(&two_models(&fx)).await;
    let acme = given_tenant(&store, "acme").await;
    let beta = given_tenant(&store, "beta").await;
    choose_model(&store, &beta, Some("fake-embed-2")).await;
    add(&store, &acme, "Shipping", SHIPPING).await;
    add(&store, &beta, "Shipping", SHIPPING).await;
    embed_all(&store).await;
    assert_eq!(fx.fake.texts(), 2);
    let models = fx.fake.models();
    assert!(models.contains(&"fake-embed-1".to_owned()), "{models:?}");
    assert!(models.contains(&"fake-embed-2".to_owned()), "{models:?}");
    for tenant in [&acme, &beta] {
        assert_eq!(progress(&store, tenant).await, [(1, Some(1))]);
        let hits = store
            .search_knowledge(tenant, "Do you deliver to Lagos?", 3)
            .await
            .expect("search");
        assert_eq!(hits[0].vector_rank, Some(1), "{tenant}: {hits:#?}");
    }
    // Each index holds its own model's vectors.
    let index = store.load_vector_index(&beta).await.unwrap().unwrap();
    assert_eq!(
        (index.model.as_str(), index.index.len()),
        ("fake-embed-2", 1)
    );

    // acme moves to the second model: only its passage is pending and embedded again.
    // (The searches embedded their questions too.)
    let embedded = fx.fake.texts();
    choose_model(&store, &acme, Some("fake-embed-2")).await;
    assert_eq!(progress(&store, &acme).await, [(1, Some(0))]);
    assert_eq!(progress(&store, &beta).await, [(1, Some(1))]);
    embed_all(&store).await;
    assert_eq!(fx.fake.texts(), embedded + 1);
    assert_eq!(progress(&store, &acme).await, [(1, Some(1))]);
    store.close().await;

    // A node with the first model only: beta's model is not there, so its passages wait
    // (none is embedded with another model) and its searches use full text alone.
    let narrow = fx.store("openai", "fake-embed-1").await;
    let gamma = given_tenant(&narrow, "gamma").await;
    choose_model(&narrow, &gamma, Some("fake-embed-2")).await;
    add(&narrow, &gamma, "Refunds", REFUNDS).await;
    embed_all(&narrow).await;
    assert_eq!(
        fx.fake.texts(),
        embedded + 1,
        "nothing embedded with a model not chosen"
    );
    assert!(narrow.load_vector_index(&gamma).await.unwrap().is_none());
    let hits = narrow
        .search_knowledge(&gamma, "refunds", 3)
        .await
        .expect("search");
    assert_eq!(hits[0].fulltext_rank, Some(1), "{hits:#?}");
    assert_eq!(hits[0].vector_rank, None);
    narrow.close().await;
}

/// Saves `acme` through the admin API with `model` as its `embedding_model`.
async fn save_with_model(
    gateway: &salesboy_testkit::gateway::Gateway,
    model: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = gateway
        .http
        .post(format!("{}/api/tenants", gateway.base))
        .bearer_auth(salesboy_testkit::gateway::ADMIN_TOKEN)
        .json(
            &serde_json::json!({"id": "acme", "phone_number_id": "100200300",
            "access_token": "token-acme", "embedding_model": model}),
        )
        .send()
        .await
        .expect("admin request");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

/// The API takes a tenant's model only when the node has providers for it, shows it, and
/// `null` goes back to the node's default.
#[tokio::test]
async fn the_api_takes_only_a_model_the_node_embeds_with() {
    use reqwest::StatusCode;
    use salesboy_testkit::Db;
    use salesboy_testkit::gateway::Gateway;
    use serde_json::{Value, json};

    let fake = FakeEmbedder::start().await;
    let fx = Fixture {
        url: String::new(),
        fake,
    };
    let providers = two_models(&fx);
    let gateway = Gateway::start(Db::Sqlite, |config| {
        config.embedding_providers = Some(providers.into());
    })
    .await;
    let (status, answer) = save_with_model(&gateway, json!("fake-embed-3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("embedding_model")
            && message.contains("not one of this node's models (fake-embed-1, fake-embed-2)"),
        "{answer}"
    );
    // Refused before anything was written.
    assert!(
        gateway
            .store()
            .tenant(&tenant("acme"))
            .await
            .unwrap()
            .is_none()
    );

    let (status, saved) = save_with_model(&gateway, json!("fake-embed-2")).await;
    assert!(status.is_success(), "{saved}");
    assert_eq!(saved["embedding_model"], "fake-embed-2");
    let stored = gateway
        .store()
        .tenant(&tenant("acme"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.embedding_model.as_deref(), Some("fake-embed-2"));
    let (status, saved) = save_with_model(&gateway, Value::Null).await;
    assert!(status.is_success(), "{saved}");
    assert_eq!(saved["embedding_model"], Value::Null);
    gateway.node.stop().await;

    // A node without embedding providers takes no model at all.
    let plain = Gateway::start(Db::Sqlite, |_| {}).await;
    let (status, answer) = save_with_model(&plain, json!("fake-embed-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no embedding provider"),
        "{answer}"
    );
    plain.node.stop().await;
}

async fn a_passage_the_provider_refuses_holds_up_no_other(fx: Fixture) {
    let store = fx.store("openai", "fake-embed-1").await;
    let acme = given_tenant(&store, "acme").await;
    let beta = given_tenant(&store, "beta").await;
    fx.fake.refuse_texts_containing(Some("POISON"));
    let odd = add(
        &store,
        &acme,
        "Odd",
        "# Odd\nThis passage holds POISON, which the provider refuses.",
    )
    .await;
    let shipping = add(&store, &acme, "Shipping", SHIPPING).await;
    add(&store, &beta, "Refunds", REFUNDS).await;
    embed_all(&store).await;

    // The others have their vectors; the refused passage is no longer pending.
    let documents = store.list_knowledge(&acme).await.expect("list");
    let counts = |id: i64| {
        let d = documents.iter().find(|d| d.id == id).expect("document");
        (d.chunk_count, d.embedded_chunks, d.refused_chunks)
    };
    assert_eq!(counts(odd), (1, Some(0), Some(1)));
    assert_eq!(counts(shipping), (1, Some(1), Some(0)));
    assert_eq!(vectors(&store, &beta).await, 1);
    assert_eq!(store.embed_pending().await.expect("pass"), EmbedPass::Idle);
    // One event names it, not to be retried.
    let events = store.recent_events(100).await.expect("events");
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::KnowledgeEmbeddingFailed)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].detail["retrying"], false);
    assert_eq!(refused[0].detail["document_ids"], serde_json::json!([odd]));
    assert_eq!(
        refused[0].detail["chunk_ids"].as_array().map(Vec::len),
        Some(1)
    );
    // Full text still finds it.
    let hits = store
        .search_knowledge(&acme, "poison", 3)
        .await
        .expect("search");
    assert_eq!(hits[0].document_id, odd, "{hits:#?}");

    // A provider that refuses every request refuses no passage of its own: they stay
    // pending and are embedded once it takes them again.
    fx.fake.refuse_texts_containing(Some(""));
    add(&store, &beta, "Shipping", SHIPPING).await;
    add(&store, &beta, "Products", BOOTS).await;
    assert!(
        matches!(
            store.embed_pending().await.expect("pass"),
            EmbedPass::Failed { skipped: false, .. }
        ),
        "refused as a whole"
    );
    let beta_documents = store.list_knowledge(&beta).await.expect("list");
    assert!(
        beta_documents.iter().all(|d| d.refused_chunks == Some(0)),
        "{beta_documents:?}"
    );
    fx.fake.refuse_texts_containing(None);
    embed_all(&store).await;
    assert_eq!(vectors(&store, &beta).await, 3);
    store.close().await;
}
