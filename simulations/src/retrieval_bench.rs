//! `salesboy-sim retrieval-bench`: the cost of semantic search for one tenant — the exact
//! scan of its cached vector index, the whole hybrid search (full text on SQLite, the
//! question embedded by the local fake embedder, the index scan, the fusion), the memory of
//! its index and the cold load from the database — for tenants of 1,000 and 20,000 chunks
//! of 768-dimensional vectors, at f32 and int8.
//!
//! The vectors come from the test kit's fake embedder (deterministic, any length). The
//! passages are synthetic but shaped like real text: words drawn by Zipf's law from a
//! vocabulary of function words and 6,000 made-up content words, so that a question's words
//! match a few passages or, for common words, many (as in a real catalogue); the full-text
//! half is timed on its own too. Run it on a release build: `cargo build --release -p
//! salesboy-sim && target/release/salesboy-sim retrieval-bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{NewKnowledge, NewTenant};
use salesboy_node::retrieval::{self, Retrieval, RetrievalSettings};
use salesboy_node::store::{EmbedPass, SqlStore};
use salesboy_protocol::TenantId;
use salesboy_testkit::{FakeEmbedder, fake_embedding};
use serde::Serialize;
use serde_json::json;

/// One tenant size at one precision.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Chunks (vectors) of the tenant.
    pub chunks: usize,
    /// Vector length.
    pub dimensions: usize,
    /// Whether the index is int8.
    pub int8: bool,
    /// The index's memory in bytes.
    pub index_bytes: usize,
    /// Median time to load the index from the database, ms.
    pub cold_load_ms: f64,
    /// The exact index scan for the top 20, p50 and p99, µs.
    pub scan_p50_us: f64,
    /// p99 of the scan, µs.
    pub scan_p99_us: f64,
    /// The full-text search alone (no embedding provider), p50, µs.
    pub fulltext_p50_us: f64,
    /// p99 of the full-text search, µs.
    pub fulltext_p99_us: f64,
    /// The tenant's in-memory full-text index (the hybrid search's), bytes.
    pub text_index_bytes: usize,
    /// Median time to build it from the database, ms.
    pub text_cold_load_ms: f64,
    /// Embedding one question by the fake over local HTTP, p50, µs (inside the hybrid
    /// search; a hosted provider takes tens of ms instead).
    pub embed_p50_us: f64,
    /// p99 of embedding one question, µs.
    pub embed_p99_us: f64,
    /// The whole hybrid search (warm cache), p50, µs.
    pub hybrid_p50_us: f64,
    /// p99 of the hybrid search, µs.
    pub hybrid_p99_us: f64,
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort_unstable();
    let index = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index].as_secs_f64() * 1e6
}

/// English function words, the most frequent words of any catalogue's text (left out of
/// questions' full-text queries as stopwords, as real questions' are).
const FUNCTION_WORDS: &[&str] = &[
    "the", "and", "of", "to", "a", "in", "for", "is", "on", "with", "our", "you", "we", "are",
    "your", "it", "at", "by", "from", "or", "this", "be", "as", "can", "all", "will", "have", "an",
    "not", "more",
];

/// Syllables the made-up content words are built of.
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "ke", "li",
    "mo", "nu", "pa", "re", "si", "to", "ve", "wa", "zo", "bri", "cla", "dro", "fle", "gri", "pla",
    "sto", "tra", "ven", "mar", "lin", "kor", "sel", "dan", "tup",
];

/// Content words in the vocabulary, besides the function words.
const CONTENT_WORDS: usize = 6_000;

/// Words per synthetic passage (about 600 characters, the size chunking aims at).
const PASSAGE_WORDS: usize = 90;

/// A deterministic xorshift generator: the same passages and questions on every run.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The vocabulary, most frequent first: the function words, then made-up content words.
fn vocabulary() -> Vec<String> {
    let n = SYLLABLES.len();
    let content = (0..CONTENT_WORDS).map(|i| {
        let (a, b, c) = (i % n, (i / n) % n, i / (n * n));
        // Two syllables for the first n², a third after; each word distinct.
        let mut word = format!("{}{}", SYLLABLES[a], SYLLABLES[b]);
        if c > 0 {
            word.push_str(SYLLABLES[c % n]);
        }
        word
    });
    FUNCTION_WORDS
        .iter()
        .map(|w| (*w).to_owned())
        .chain(content)
        .collect()
}

/// A word drawn by Zipf's law (frequency ∝ 1 / rank), as words are in real text: a few
/// words in most passages, most words in few.
fn zipf_word<'a>(words: &'a [String], random: &mut Xorshift) -> &'a str {
    let rank = (words.len() as f64).powf(random.unit()) as usize;
    &words[rank.saturating_sub(1).min(words.len() - 1)]
}

/// Passage `i` of the synthetic catalogue.
fn passage(words: &[String], i: usize) -> String {
    let mut random = Xorshift::new(i as u64);
    let text: Vec<&str> = (0..PASSAGE_WORDS)
        .map(|_| zipf_word(words, &mut random))
        .collect();
    format!("Item {i}. {}.", text.join(" "))
}

/// Question `i`: three content words of one passage, as a customer asks about something the
/// catalogue has (so the full-text query always matches, often with common words too).
fn question(words: &[String], chunks: usize, i: usize) -> String {
    let mut random = Xorshift::new(0xA11CE ^ i as u64);
    let target = passage(words, (random.next() % chunks as u64) as usize);
    let content: Vec<&str> = target
        .trim_end_matches('.')
        .split(' ')
        .skip(2)
        .filter(|w| !FUNCTION_WORDS.contains(w))
        .collect();
    if content.is_empty() {
        return "do you have it?".to_owned();
    }
    let mut pick = || content[(random.next() % content.len() as u64) as usize];
    format!("do you have {} {} in {}?", pick(), pick(), pick())
}

/// Runs the benchmark for each tenant size, `searches` timed searches each. Progress and
/// each row as it is measured go to stderr.
pub async fn run(
    sizes: &[usize],
    dimensions: usize,
    searches: usize,
) -> anyhow::Result<Vec<BenchRow>> {
    let fake = FakeEmbedder::start().await;
    let providers = json!([{"kind": "openai", "model": "fake-embedding", "api_key": salesboy_testkit::fake_embedder::FAKE_EMBEDDING_KEY,
        "base_url": format!("http://{}/v1", fake.addr()), "dimensions": dimensions, "batch_size": 100}])
    .to_string();
    let words = vocabulary();
    let mut rows = Vec::new();
    for &chunks in sizes {
        anyhow::ensure!(chunks > 0, "a tenant size of 0 chunks");
        let questions: Vec<String> = (0..searches.max(1))
            .map(|i| question(&words, chunks, i))
            .collect();
        let dir = tempfile::tempdir().context("temp dir")?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let tenant = TenantId::new("bench").context("tenant")?;
        eprintln!("{chunks} chunks: adding and embedding ({dimensions} dimensions)");
        {
            let (store, _) = open(&url, &providers, false).await?;
            store
                .upsert_tenant(&NewTenant::new(tenant.clone(), "bench".to_owned(), 0))
                .await?;
            for document in 0..chunks.div_ceil(100) {
                let range = document * 100..((document + 1) * 100).min(chunks);
                store
                    .add_knowledge(&NewKnowledge {
                        tenant: tenant.clone(),
                        title: format!("document {document}"),
                        chunks: range.map(|i| passage(&words, i)).collect(),
                        created_ms: 0,
                    })
                    .await?;
            }
            while store.embed_pending().await? != EmbedPass::Idle {}
            store.close().await;
        }
        // The full-text half alone: the same database, no embedding provider.
        let fulltext_store = SqlStore::connect(&url).await?;
        // Warm its cache of full-text indexes (the first search builds the tenant's).
        fulltext_store
            .search_knowledge(&tenant, &questions[0], 5)
            .await?;
        let mut fulltexts = Vec::new();
        let mut matched = 0usize;
        for question in &questions {
            let started = Instant::now();
            let hits = fulltext_store
                .search_knowledge(&tenant, question, 5)
                .await?;
            fulltexts.push(started.elapsed());
            matched += usize::from(!hits.is_empty());
        }
        fulltext_store.close().await;
        anyhow::ensure!(
            matched == questions.len(),
            "{} of {} questions found nothing by full text",
            questions.len() - matched,
            questions.len()
        );
        let fulltext_p50_us = percentile(&mut fulltexts, 0.5);
        let fulltext_p99_us = percentile(&mut fulltexts, 0.99);
        for int8 in [false, true] {
            let (store, retrieval) = open(&url, &providers, int8).await?;
            let mut loads = Vec::new();
            let mut index = None;
            for _ in 0..5 {
                let started = Instant::now();
                let loaded = store
                    .load_vector_index(&tenant)
                    .await?
                    .context("retrieval")?;
                loads.push(started.elapsed());
                index = Some(loaded);
            }
            let index = index.context("loaded")?.index;
            anyhow::ensure!(
                index.len() == chunks,
                "{} vectors for {chunks} chunks",
                index.len()
            );
            let mut scans = Vec::new();
            for question in &questions {
                let query = fake_embedding(question, dimensions);
                let started = Instant::now();
                let hits = index.search(&query, 20);
                scans.push(started.elapsed());
                std::hint::black_box(hits);
            }
            let precision = if int8 { "int8" } else { "f32" };
            eprintln!(
                "{chunks} chunks, {precision}: index scan p50 {:.0} µs, p99 {:.0} µs; full text p50 {fulltext_p50_us:.0} µs, p99 {fulltext_p99_us:.0} µs",
                percentile(&mut scans, 0.5),
                percentile(&mut scans, 0.99),
            );
            let mut text_loads = Vec::new();
            let mut text_index = None;
            for _ in 0..5 {
                let started = Instant::now();
                let loaded = store.load_text_index(&tenant).await?.context("retrieval")?;
                text_loads.push(started.elapsed());
                text_index = Some(loaded);
            }
            let text_index = text_index.context("loaded")?;
            anyhow::ensure!(
                text_index.len() == chunks,
                "{} passages in the full-text index for {chunks} chunks",
                text_index.len()
            );
            let mut embeds = Vec::new();
            for question in &questions {
                let started = Instant::now();
                let embedded = retrieval.embed_question(retrieval.model(), question).await;
                embeds.push(started.elapsed());
                anyhow::ensure!(embedded.is_some(), "the fake did not embed a question");
            }
            // Warm the cache, then time whole searches.
            store.search_knowledge(&tenant, &questions[0], 5).await?;
            let mut hybrids = Vec::new();
            for question in &questions {
                let started = Instant::now();
                let hits = store.search_knowledge(&tenant, question, 5).await?;
                hybrids.push(started.elapsed());
                std::hint::black_box(hits);
            }
            let row = BenchRow {
                chunks,
                dimensions,
                int8,
                index_bytes: index.bytes(),
                cold_load_ms: percentile(&mut loads, 0.5) / 1000.0,
                scan_p50_us: percentile(&mut scans, 0.5),
                scan_p99_us: percentile(&mut scans, 0.99),
                fulltext_p50_us,
                fulltext_p99_us,
                text_index_bytes: text_index.bytes(),
                text_cold_load_ms: percentile(&mut text_loads, 0.5) / 1000.0,
                embed_p50_us: percentile(&mut embeds, 0.5),
                embed_p99_us: percentile(&mut embeds, 0.99),
                hybrid_p50_us: percentile(&mut hybrids, 0.5),
                hybrid_p99_us: percentile(&mut hybrids, 0.99),
            };
            eprintln!("{}", markdown(std::slice::from_ref(&row)));
            rows.push(row);
            store.close().await;
        }
    }
    Ok(rows)
}

async fn open(
    url: &str,
    providers: &str,
    int8: bool,
) -> anyhow::Result<(SqlStore, Arc<Retrieval>)> {
    let retrieval = retrieval::from_config(
        &salesboy_node::adapters::http_client().context("http client")?,
        Some(providers),
        RetrievalSettings {
            int8,
            ..RetrievalSettings::default()
        },
    )?
    .context("a chain")?;
    let store = SqlStore::connect(url)
        .await?
        .with_retrieval(Arc::clone(&retrieval));
    Ok((store, retrieval))
}

/// The rows as a markdown table.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| chunks | dims | precision | index memory | cold load (median) | index scan p50 / p99 | full text alone (no provider) p50 / p99 | text index memory | text index cold load | question embedded (fake) p50 / p99 | hybrid search p50 / p99 |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} MiB | {:.1} ms | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.1} MiB | {:.1} ms | {:.0} / {:.0} µs | {:.0} / {:.0} µs |\n",
            r.chunks,
            r.dimensions,
            if r.int8 { "int8" } else { "f32" },
            r.index_bytes as f64 / (1024.0 * 1024.0),
            r.cold_load_ms,
            r.scan_p50_us,
            r.scan_p99_us,
            r.fulltext_p50_us,
            r.fulltext_p99_us,
            r.text_index_bytes as f64 / (1024.0 * 1024.0),
            r.text_cold_load_ms,
            r.embed_p50_us,
            r.embed_p99_us,
            r.hybrid_p50_us,
            r.hybrid_p99_us
        ));
    }
    out
}
