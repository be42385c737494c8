//! `salesboy-sim retrieval-eval`: how well knowledge retrieval finds the passage that
//! answers a question, full text alone vs hybrid (full text + vectors, fused by rank).
//!
//! The labelled set (`simulations/data/retrieval-eval.json`, built in) is a shop's
//! knowledge base and questions, each with the passage that answers it; some share words
//! with it (`lexical`), some say it otherwise (`paraphrase`), some are in Spanish or French.
//! Every passage is added as a document to a fresh SQLite database, embedded, and each
//! question searched twice: by a store without embeddings (full text) and by one with
//! (hybrid). Scores: recall@k (the share of questions whose passage is in the top k) and
//! MRR (the mean of 1 / rank of the passage within the top 10, 0 when absent).
//!
//! The embedding provider is the configured one (`--providers` or
//! `SALESBOY_EMBEDDING_PROVIDERS`, real keys, outside CI) or, by default, the test kit's
//! [`FakeEmbedder`]: its figures show the pipeline at work on a synonym table written for
//! this set, not a real model's quality.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{NewKnowledge, NewTenant};
use salesboy_node::knowledge::passages;
use salesboy_node::retrieval::{self, RetrievalSettings};
use salesboy_node::store::{EmbedPass, SqlStore};
use salesboy_protocol::TenantId;
use salesboy_testkit::FakeEmbedder;
use serde::{Deserialize, Serialize};

/// The rank (1-based, within the top 10) of a question's passage by full text and by
/// hybrid search; `None`: not found.
type RankPair = (Option<usize>, Option<usize>);

/// The built-in labelled set.
pub const DEFAULT_SET: &str = include_str!("../data/retrieval-eval.json");

/// A labelled set.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalSet {
    /// The passages, each one document.
    pub passages: Vec<EvalPassage>,
    /// The questions.
    pub questions: Vec<EvalQuestion>,
}

/// A passage of the set.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalPassage {
    /// Its label (the document's title).
    pub id: String,
    /// Its text.
    pub text: String,
}

/// A question of the set.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalQuestion {
    /// `lexical`, `paraphrase`, `spanish`, `french`.
    pub kind: String,
    /// The question.
    pub question: String,
    /// The passages that answer it.
    pub relevant: Vec<String>,
}

/// Recall@k and MRR over some questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Questions scored.
    pub questions: usize,
    /// The share whose passage is in the top k.
    pub recall_at_k: f64,
    /// Mean reciprocal rank within the top 10.
    pub mrr: f64,
}

/// Full text vs hybrid on one group of questions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The group (`all` or a kind).
    pub group: String,
    /// Full text alone.
    pub fulltext: Scores,
    /// Full text and vectors fused.
    pub hybrid: Scores,
}

/// The evaluation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The k of recall@k.
    pub k: usize,
    /// The embedding model.
    pub model: String,
    /// Whether the provider was the test kit's fake.
    pub fake: bool,
    /// All questions, then each kind.
    pub comparisons: Vec<Comparison>,
}

impl EvalReport {
    /// The comparison over all questions.
    pub fn all(&self) -> &Comparison {
        &self.comparisons[0]
    }

    /// A markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "model `{}`{} — recall@{k} and MRR (top 10)\n\n| questions | n | full-text recall@{k} | hybrid recall@{k} | full-text MRR | hybrid MRR |\n|---|---|---|---|---|---|\n",
            self.model,
            if self.fake {
                " (the test kit's fake embedder)"
            } else {
                ""
            },
            k = self.k,
        );
        for c in &self.comparisons {
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                c.group,
                c.fulltext.questions,
                c.fulltext.recall_at_k,
                c.hybrid.recall_at_k,
                c.fulltext.mrr,
                c.hybrid.mrr
            ));
        }
        out
    }
}

/// Runs the evaluation of `set` with the providers `providers_json` (`None`: a fresh
/// [`FakeEmbedder`]) and recall@`k`.
pub async fn run(
    set: &EvalSet,
    providers_json: Option<&str>,
    k: usize,
) -> anyhow::Result<EvalReport> {
    // The fake, when there is one, serves until the evaluation ends.
    let (fake, providers) = match providers_json {
        Some(json) => (None, json.to_owned()),
        None => {
            let fake = FakeEmbedder::start().await;
            let providers = fake.providers_json("openai", "fake-embedding");
            (Some(fake), providers)
        }
    };
    let retrieval = retrieval::from_config(
        &salesboy_node::adapters::http_client().context("http client")?,
        Some(&providers),
        RetrievalSettings::default(),
    )
    .context("reading the embedding providers")?
    .context("no embedding provider")?;
    let model = retrieval.model().to_owned();

    let dir = tempfile::tempdir().context("temp dir")?;
    let url = format!("sqlite://{}", dir.path().join("eval.db").display());
    let fulltext = SqlStore::connect(&url)
        .await
        .context("opening the database")?;
    let hybrid = SqlStore::connect(&url)
        .await
        .context("opening the database")?
        .with_retrieval(retrieval);
    let tenant = TenantId::new("eval").context("tenant id")?;
    fulltext
        .upsert_tenant(&NewTenant::new(tenant.clone(), "eval".to_owned(), 0))
        .await?;
    let mut labels: HashMap<i64, String> = HashMap::new();
    for passage in &set.passages {
        let id = fulltext
            .add_knowledge(&NewKnowledge {
                tenant: tenant.clone(),
                title: passage.id.clone(),
                chunks: passages(&passage.text),
                created_ms: 0,
            })
            .await?;
        labels.insert(id, passage.id.clone());
    }
    // Embed everything (a real provider may ask for pauses).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        match hybrid.embed_pending().await? {
            EmbedPass::Idle => break,
            EmbedPass::Embedded(_) => {}
            EmbedPass::Failed { .. } => {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the embedding provider did not answer in 10 minutes"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    let mut ranks: BTreeMap<String, Vec<RankPair>> = BTreeMap::new();
    for question in &set.questions {
        let rank = |hits: Vec<salesboy_actors::store::KnowledgeHit>| {
            hits.iter()
                .position(|hit| {
                    labels
                        .get(&hit.document_id)
                        .is_some_and(|label| question.relevant.contains(label))
                })
                .map(|i| i + 1)
        };
        let by_text = rank(
            fulltext
                .search_knowledge(&tenant, &question.question, 10)
                .await?,
        );
        let by_both = rank(
            hybrid
                .search_knowledge(&tenant, &question.question, 10)
                .await?,
        );
        for group in ["all", question.kind.as_str()] {
            ranks
                .entry(group.to_owned())
                .or_default()
                .push((by_text, by_both));
        }
    }
    fulltext.close().await;
    hybrid.close().await;

    let score = |ranks: &[Option<usize>]| Scores {
        questions: ranks.len(),
        recall_at_k: ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64
            / ranks.len().max(1) as f64,
        mrr: ranks
            .iter()
            .map(|r| r.map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / ranks.len().max(1) as f64,
    };
    let mut comparisons = Vec::new();
    let all = ranks.remove("all").unwrap_or_default();
    for (group, pairs) in std::iter::once(("all".to_owned(), all)).chain(ranks) {
        let text: Vec<Option<usize>> = pairs.iter().map(|p| p.0).collect();
        let both: Vec<Option<usize>> = pairs.iter().map(|p| p.1).collect();
        comparisons.push(Comparison {
            group,
            fulltext: score(&text),
            hybrid: score(&both),
        });
    }
    Ok(EvalReport {
        k,
        model,
        fake: fake.is_some(),
        comparisons,
    })
}

/// The built-in set.
pub fn default_set() -> anyhow::Result<EvalSet> {
    serde_json::from_str(DEFAULT_SET).context("reading the built-in retrieval set")
}
