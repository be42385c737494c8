//! The tenants' knowledge bases and their full-text search (architecture §11).
//!
//! A search OR-matches the question's words ([`query_words`]) as prefixes against the
//! tenant's full-text index in memory (`retrieval::text_index`, BM25), so a passage that
//! shares more (and rarer) words with the question ranks higher, and only the tenant's own
//! passages are ever scored (decision 0021). The database's full-text indexes (PostgreSQL's
//! generated `tsv` column with its GIN index, SQLite's FTS5 table `knowledge_fts` kept by
//! triggers) are still written with the passages but no longer searched.

use std::sync::Arc;

use salesboy_actors::store::{
    KnowledgeDocument, KnowledgeHit, KnownKnowledge, NewKnowledge, StoreError,
};
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use serde_json::json;

use super::decode::get;
use super::error::Failure;
use super::{Db, outbox};
use crate::retrieval::Stamp;
use crate::retrieval::text_cache::{CachedPassages, TextCache};

/// At most this many distinct words of a question are searched for.
const MAX_QUERY_WORDS: usize = 32;

/// Adds a document with its chunks and bumps the tenant's knowledge version.
pub(crate) async fn add_knowledge(db: &Db, document: &NewKnowledge) -> Result<i64, Failure> {
    let mut tx = db.begin().await?;
    bump_version(&mut tx, &document.tenant).await?;
    let document_id: i64 = sqlx::query_scalar(
        "INSERT INTO knowledge_documents (tenant_id, title, created_ms) VALUES ($1, $2, $3) \
         RETURNING id",
    )
    .bind(document.tenant.as_str())
    .bind(document.title.as_str())
    .bind(document.created_ms)
    .fetch_one(&mut *tx)
    .await?;
    for (ordinal, text) in (0_i64..).zip(&document.chunks) {
        sqlx::query(
            "INSERT INTO knowledge_chunks (document_id, tenant_id, ordinal, text) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(document_id)
        .bind(document.tenant.as_str())
        .bind(ordinal)
        .bind(text.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let event = Event::tenant(
        EventKind::KnowledgeChanged,
        document.tenant.clone(),
        document.created_ms,
        json!({"change": "added", "document_id": document_id, "title": document.title}),
    );
    outbox::append(&mut tx, &event).await?;
    tx.commit().await?;
    db.outbox_written();
    Ok(document_id)
}

/// The tenant's documents with their chunk counts, oldest first.
pub(crate) async fn list_knowledge(
    db: &Db,
    tenant: &TenantId,
) -> Result<Vec<KnowledgeDocument>, Failure> {
    let rows = sqlx::query(
        "SELECT d.id, d.title, d.created_ms, \
         (SELECT COUNT(*) FROM knowledge_chunks c WHERE c.document_id = d.id) AS chunk_count \
         FROM knowledge_documents d WHERE d.tenant_id = $1 ORDER BY d.id",
    )
    .bind(tenant.as_str())
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(KnowledgeDocument {
                id: get(row, "id")?,
                title: get(row, "title")?,
                chunk_count: get(row, "chunk_count")?,
                embedded_chunks: None,
                refused_chunks: None,
                created_ms: get(row, "created_ms")?,
            })
        })
        .collect()
}

/// Deletes one of the tenant's documents (its chunks and their index entries go with it)
/// and bumps the knowledge version.
pub(crate) async fn delete_knowledge(
    db: &Db,
    tenant: &TenantId,
    document_id: i64,
    at_ms: i64,
) -> Result<bool, Failure> {
    let mut tx = db.begin().await?;
    let deleted = sqlx::query("DELETE FROM knowledge_documents WHERE id = $1 AND tenant_id = $2")
        .bind(document_id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    bump_version(&mut tx, tenant).await?;
    let event = Event::tenant(
        EventKind::KnowledgeChanged,
        tenant.clone(),
        at_ms,
        json!({"change": "deleted", "document_id": document_id}),
    );
    outbox::append(&mut tx, &event).await?;
    tx.commit().await?;
    db.outbox_written();
    Ok(true)
}

/// The tenant's best `k` passages for `question`, ranked from the tenant's full-text index
/// in memory (`retrieval::text_index`: the question's words matched as prefixes, BM25 with
/// FTS5's constants) and answered from the passages cached with it in `texts` at the
/// tenant's knowledge version, both loaded on a cold search (decision 0021). A warm search
/// reads one row, the tenant's stamp, and scores no other tenant's passages; given what the
/// caller knows (`known`), it reads nothing when the cache holds that version or a newer
/// one (decision 0022).
pub(crate) async fn search_knowledge(
    db: &Db,
    texts: &TextCache,
    tenant: &TenantId,
    question: &str,
    k: u32,
    known: Option<KnownKnowledge>,
) -> Result<Vec<KnowledgeHit>, Failure> {
    let words = query_words(question);
    if words.is_empty() || k == 0 {
        return Ok(Vec::new());
    }
    let cached = match known.and_then(|known| texts.cached_since(tenant, known)) {
        Some(cached) => cached,
        None => match cached_at_stamp(db, texts, tenant).await? {
            Some(cached) => cached,
            None => return Ok(Vec::new()),
        },
    };
    Ok(cached
        .index
        .search(&words, k as usize)
        .into_iter()
        .enumerate()
        .filter_map(|(place, (chunk_id, score))| {
            let mut hit = cached.passages.get(&chunk_id)?.clone();
            hit.score = score;
            hit.fulltext_rank = u32::try_from(place + 1).ok();
            Some(hit)
        })
        .collect())
}

/// The tenant's passages as of its stamp, read now: from the cache if they are still
/// those, else loaded and cached; `None` for an unknown tenant.
async fn cached_at_stamp(
    db: &Db,
    texts: &TextCache,
    tenant: &TenantId,
) -> Result<Option<Arc<CachedPassages>>, Failure> {
    let started = texts.load_started();
    let Some(stamp) = passages_stamp(db, tenant).await? else {
        return Ok(None);
    };
    Ok(Some(match texts.cached(tenant, stamp) {
        Some(cached) => cached,
        None => {
            // A passage added after the stamp was read may be in it: the next search reads
            // the newer version and loads again.
            let cached = Arc::new(CachedPassages::new(
                stamp,
                tenant_passages(db, tenant).await?,
            ));
            texts.insert(tenant, Arc::clone(&cached), started);
            cached
        }
    }))
}

/// Every passage of the tenant with its document, by chunk id (score and ranks unset).
async fn tenant_passages(db: &Db, tenant: &TenantId) -> Result<Vec<KnowledgeHit>, Failure> {
    let rows = sqlx::query(
        "SELECT c.id AS chunk_id, d.id AS document_id, d.title, c.text \
         FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id \
         WHERE c.tenant_id = $1 ORDER BY c.id",
    )
    .bind(tenant.as_str())
    .fetch_all(&db.reader)
    .await?;
    rows.iter().map(passage).collect()
}

/// A passage from a row of `chunk_id`, `document_id`, `title` and `text` (score and ranks
/// unset).
pub(crate) fn passage(row: &sqlx::any::AnyRow) -> Result<KnowledgeHit, Failure> {
    Ok(KnowledgeHit {
        chunk_id: get(row, "chunk_id")?,
        document_id: get(row, "document_id")?,
        document_title: get(row, "title")?,
        text: get(row, "text")?,
        score: 0.0,
        fulltext_rank: None,
        vector_rank: None,
    })
}

/// What the tenant's cached full-text index is checked against: its creation time and
/// knowledge version (one row); `None` for an unknown tenant.
async fn passages_stamp(db: &Db, tenant: &TenantId) -> Result<Option<Stamp>, Failure> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT created_ms, knowledge_version FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&db.reader)
            .await?;
    Ok(row.map(|(tenant_created_ms, knowledge_version)| Stamp {
        tenant_created_ms,
        knowledge_version,
        ..Stamp::default()
    }))
}

/// The tenant's knowledge version; 0 if the tenant does not exist.
pub(crate) async fn knowledge_version(db: &Db, tenant: &TenantId) -> Result<i64, Failure> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT knowledge_version FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&db.reader)
            .await?;
    Ok(version.unwrap_or_default())
}

async fn bump_version(tx: &mut sqlx::AnyConnection, tenant: &TenantId) -> Result<(), Failure> {
    let bumped =
        sqlx::query("UPDATE tenants SET knowledge_version = knowledge_version + 1 WHERE id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if bumped == 0 {
        return Err(StoreError::NotFound {
            what: format!("tenant {tenant}"),
        }
        .into());
    }
    Ok(())
}

/// Words too common to say what a question is about; left out of the search unless the
/// question has nothing else.
const STOPWORDS: &[&str] = &[
    "a", "about", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "did", "do", "does", "for", "from", "get", "got", "had", "has", "have", "he",
    "hello", "here", "hi", "how", "i", "if", "in", "is", "it", "just", "may", "me", "might",
    "much", "must", "my", "need", "no", "not", "of", "on", "or", "our", "please", "shall", "she",
    "should", "so", "some", "than", "thank", "thanks", "that", "the", "their", "then", "there",
    "these", "they", "this", "those", "to", "too", "us", "very", "want", "was", "we", "were",
    "what", "when", "where", "which", "who", "why", "will", "with", "would", "yes", "you", "your",
];

/// The words a question is searched by: runs of letters and digits, lowercased, longer than
/// one character, each once, common words left out (unless nothing else is left), at most
/// [`MAX_QUERY_WORDS`]. Only letters and digits survive, so no word can carry FTS5 or
/// tsquery syntax.
pub(crate) fn query_words(question: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in crate::retrieval::text_index::words(question) {
        if word.chars().count() < 2 || words.contains(&word) {
            continue;
        }
        words.push(word);
    }
    let meaningful: Vec<String> = words
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .cloned()
        .collect();
    let mut chosen = if meaningful.is_empty() {
        words
    } else {
        meaningful
    };
    chosen.truncate(MAX_QUERY_WORDS);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_become_distinct_lowercase_words() {
        assert_eq!(
            query_words("How much is DELIVERY to Jakarta? delivery, price: 2 a 10"),
            ["delivery", "jakarta", "price", "10"]
        );
    }

    #[test]
    fn search_syntax_cannot_get_through() {
        assert_eq!(
            query_words(r#"price" OR tenant_id:* NEAR(a b) 'x' | !y & -- ;"#),
            ["price", "tenant", "id", "near"]
        );
        assert!(query_words("? ! * \" ' a b c").is_empty());
        assert!(query_words("").is_empty());
    }

    #[test]
    fn words_of_other_scripts_are_kept() {
        assert_eq!(query_words("Café ÜBER straße"), ["café", "über", "straße"]);
        assert_eq!(
            query_words("Berapa harga ongkir?"),
            ["berapa", "harga", "ongkir"]
        );
    }

    #[test]
    fn common_words_are_left_out_unless_nothing_else_is_left() {
        assert_eq!(query_words("When does the shop open?"), ["shop", "open"]);
        assert_eq!(query_words("who are you?"), ["who", "are", "you"]);
    }

    #[test]
    fn long_questions_are_capped() {
        let question: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_words(&question).len(), MAX_QUERY_WORDS);
    }
}
