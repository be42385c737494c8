//! The tenants' knowledge bases and their full-text search (architecture §11).
//!
//! Postgres: `knowledge_chunks.tsv`, a generated `to_tsvector('simple', text)` column with a
//! GIN index, queried with `to_tsquery('simple', 'a | b')` and ranked by `ts_rank`.
//! SQLite: the external-content FTS5 table `knowledge_fts` (text and tenant), kept in step by
//! triggers, queried with `tenant_id : "t" AND text : ("a" OR "b")` and ranked by `bm25`. Both OR-match the question's words, so a passage
//! that shares more (and rarer) words with the question ranks higher, and both filter on the
//! chunk's own `tenant_id`: a tenant never sees another's passages.

use salesboy_actors::store::{KnowledgeDocument, KnowledgeHit, NewKnowledge, StoreError};
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use serde_json::json;

use super::decode::{get, limit};
use super::error::Failure;
use super::{Db, Dialect, outbox};

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

/// The full-text search on SQLite: `$1` tenant, `$2` FTS5 query ([`sqlite_query`]: the
/// tenant's passages only), `$3` limit. bm25 is lower-is-better: negated so that, as on
/// Postgres, higher is better; the tenant column weighs nothing. CROSS JOIN fixes the order:
/// the full-text index first, then each match's chunk. Left to itself (no statistics, as on
/// a fresh database) SQLite 3.51 walks the tenant's chunks and runs the full-text query once
/// per chunk: 156 ms instead of 0.4 ms at 1,000 passages. The chunk's own `tenant_id` is
/// still checked: the index's tenant match is by tokens.
pub(crate) const SQLITE_SEARCH: &str = "SELECT c.id AS chunk_id, d.id AS document_id, d.title, c.text, -bm25(knowledge_fts, 1.0, 0.0) AS score \
     FROM knowledge_fts \
     CROSS JOIN knowledge_chunks c ON c.id = knowledge_fts.rowid \
     CROSS JOIN knowledge_documents d ON d.id = c.document_id \
     WHERE knowledge_fts MATCH $2 AND c.tenant_id = $1 \
     ORDER BY score DESC, c.id LIMIT $3";

/// The FTS5 query for `words` within `tenant`'s passages: `tenant_id : "acme" AND text :
/// ("open"* OR "hours"*)`. Tenant ids are ASCII letters, digits, `_` and `-`: nothing to
/// escape inside the quotes. `"…"*` is a prefix match: "open" finds "opens" and "opening".
fn sqlite_query(tenant: &TenantId, words: &[String]) -> String {
    let words = words
        .iter()
        .map(|word| format!("\"{word}\"*"))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!("tenant_id : \"{tenant}\" AND text : ({words})")
}

/// The tenant's best `k` passages for `question`.
pub(crate) async fn search_knowledge(
    db: &Db,
    tenant: &TenantId,
    question: &str,
    k: u32,
) -> Result<Vec<KnowledgeHit>, Failure> {
    let words = query_words(question);
    if words.is_empty() || k == 0 {
        return Ok(Vec::new());
    }
    let (sql, query) = match db.dialect {
        Dialect::Postgres => (
            "SELECT c.id AS chunk_id, d.id AS document_id, d.title, c.text, \
             CAST(ts_rank(c.tsv, to_tsquery('simple', $2)) AS DOUBLE PRECISION) AS score \
             FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id \
             WHERE c.tenant_id = $1 AND c.tsv @@ to_tsquery('simple', $2) \
             ORDER BY score DESC, c.id LIMIT $3",
            // `:*` is a prefix match: "open" finds "opens" and "opening".
            words
                .iter()
                .map(|word| format!("{word}:*"))
                .collect::<Vec<_>>()
                .join(" | "),
        ),
        Dialect::Sqlite => (SQLITE_SEARCH, sqlite_query(tenant, &words)),
    };
    let rows = sqlx::query(sql)
        .bind(tenant.as_str())
        .bind(query)
        .bind(limit(k))
        .fetch_all(&db.reader)
        .await?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            Ok(KnowledgeHit {
                chunk_id: get(row, "chunk_id")?,
                document_id: get(row, "document_id")?,
                document_title: get(row, "title")?,
                text: get(row, "text")?,
                score: get(row, "score")?,
                fulltext_rank: u32::try_from(i + 1).ok(),
                vector_rank: None,
            })
        })
        .collect()
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

    #[tokio::test]
    async fn sqlite_searches_from_the_full_text_index_first() {
        use sqlx::Row;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = crate::store::SqlStore::connect(&url).await.expect("store");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {SQLITE_SEARCH}"
        )))
        .bind("acme")
        .bind(sqlite_query(
            &TenantId::new("acme").expect("tenant"),
            &["lagos".to_owned()],
        ))
        .bind(5_i64)
        .fetch_all(&store.db.reader)
        .await
        .expect("plan");
        let plan: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String, _>("detail").expect("detail"))
            .collect();
        assert!(plan[0].contains("knowledge_fts"), "{plan:?}");
        store.close().await;
    }

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
