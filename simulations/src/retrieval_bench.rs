//! `salesboy-sim retrieval-bench`: the cost of semantic search for one tenant — the exact
//! scan of its cached vector index, the whole hybrid search (full text on SQLite, the
//! question embedded by the local fake embedder, the index scan, the fusion), the memory of
//! its index and the cold load from the database — for tenants of 1,000 and 20,000 chunks
//! of 768-dimensional vectors, at f32 and int8.
//!
//! The vectors come from the test kit's fake embedder (deterministic, any length); the
//! passages are synthetic. Run it on a release build: `cargo build --release -p
//! salesboy-sim && target/release/salesboy-sim retrieval-bench`.

use std::time::{Duration, Instant};

use anyhow::Context;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{NewKnowledge, NewTenant};
use salesboy_node::retrieval::{self, RetrievalSettings};
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

const WORDS: &[&str] = &[
    "delivery",
    "boots",
    "leather",
    "refund",
    "payment",
    "size",
    "warranty",
    "sale",
    "bag",
    "belt",
    "wallet",
    "sandals",
    "polish",
    "gift",
    "order",
    "store",
    "hours",
    "price",
    "transfer",
    "card",
    "Lagos",
    "Abuja",
    "Kano",
    "custom",
    "stitching",
    "sole",
    "heel",
];

fn passage(i: usize) -> String {
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut words = Vec::new();
    for _ in 0..60 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        words.push(WORDS[(state % WORDS.len() as u64) as usize]);
    }
    format!("Passage {i}: {}.", words.join(" "))
}

/// Runs the benchmark for each tenant size, `searches` timed searches each.
pub async fn run(
    sizes: &[usize],
    dimensions: usize,
    searches: usize,
) -> anyhow::Result<Vec<BenchRow>> {
    let fake = FakeEmbedder::start().await;
    let providers = json!([{"kind": "openai", "model": "fake-embedding", "api_key": salesboy_testkit::fake_embedder::FAKE_EMBEDDING_KEY,
        "base_url": format!("http://{}/v1", fake.addr()), "dimensions": dimensions, "batch_size": 100}])
    .to_string();
    let questions: Vec<String> = (0..searches.max(1))
        .map(|i| {
            format!(
                "question {i}: do you have {} in {}?",
                WORDS[i % WORDS.len()],
                WORDS[(i * 7) % WORDS.len()]
            )
        })
        .collect();
    let mut rows = Vec::new();
    for &chunks in sizes {
        let dir = tempfile::tempdir().context("temp dir")?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let tenant = TenantId::new("bench").context("tenant")?;
        {
            let store = open(&url, &providers, false).await?;
            store
                .upsert_tenant(&NewTenant {
                    id: tenant.clone(),
                    name: "bench".to_owned(),
                    system_prompt: None,
                    llm_config: None,
                    llm_monthly_spend_cap_micros: None,
                    embedding_model: None,
                    created_ms: 0,
                })
                .await?;
            for document in 0..chunks.div_ceil(100) {
                let range = document * 100..((document + 1) * 100).min(chunks);
                store
                    .add_knowledge(&NewKnowledge {
                        tenant: tenant.clone(),
                        title: format!("document {document}"),
                        chunks: range.map(passage).collect(),
                        created_ms: 0,
                    })
                    .await?;
            }
            while store.embed_pending().await? != EmbedPass::Idle {}
            store.close().await;
        }
        for int8 in [false, true] {
            let store = open(&url, &providers, int8).await?;
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
            // Warm the cache, then time whole searches.
            store.search_knowledge(&tenant, &questions[0], 5).await?;
            let mut hybrids = Vec::new();
            for question in &questions {
                let started = Instant::now();
                let hits = store.search_knowledge(&tenant, question, 5).await?;
                hybrids.push(started.elapsed());
                std::hint::black_box(hits);
            }
            rows.push(BenchRow {
                chunks,
                dimensions,
                int8,
                index_bytes: index.bytes(),
                cold_load_ms: percentile(&mut loads, 0.5) / 1000.0,
                scan_p50_us: percentile(&mut scans, 0.5),
                scan_p99_us: percentile(&mut scans, 0.99),
                hybrid_p50_us: percentile(&mut hybrids, 0.5),
                hybrid_p99_us: percentile(&mut hybrids, 0.99),
            });
            store.close().await;
        }
    }
    Ok(rows)
}

async fn open(url: &str, providers: &str, int8: bool) -> anyhow::Result<SqlStore> {
    let retrieval = retrieval::from_config(
        &salesboy_node::adapters::http_client().context("http client")?,
        Some(providers),
        RetrievalSettings {
            int8,
            ..RetrievalSettings::default()
        },
    )?
    .context("a chain")?;
    Ok(SqlStore::connect(url).await?.with_retrieval(retrieval))
}

/// The rows as a markdown table.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| chunks | dims | precision | index memory | cold load (median) | index scan p50 / p99 | hybrid search p50 / p99 |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} MiB | {:.1} ms | {:.0} / {:.0} µs | {:.0} / {:.0} µs |\n",
            r.chunks,
            r.dimensions,
            if r.int8 { "int8" } else { "f32" },
            r.index_bytes as f64 / (1024.0 * 1024.0),
            r.cold_load_ms,
            r.scan_p50_us,
            r.scan_p99_us,
            r.hybrid_p50_us,
            r.hybrid_p99_us
        ));
    }
    out
}
