//! The search benchmark's smoke (CI): a small tenant is added, embedded, loaded and
//! searched at both precisions; every question finds something by full text and the index
//! and the full-text index hold every chunk (the bench refuses otherwise). Its timings are
//! not asserted.

use salesboy_sim::retrieval_bench::{markdown, run};

#[tokio::test]
async fn the_search_bench_measures_a_small_tenant_at_both_precisions() {
    let rows = run(&[150], 32, 30).await.expect("bench");
    println!("{}", markdown(&rows));
    assert_eq!(rows.len(), 2);
    assert!(!rows[0].int8 && rows[1].int8, "{rows:?}");
    for row in &rows {
        assert_eq!((row.chunks, row.dimensions), (150, 32));
        assert!(row.cold_load_ms > 0.0 && row.hybrid_p99_us > 0.0, "{row:?}");
        assert!(
            row.text_index_bytes > 0 && row.embed_p99_us > 0.0,
            "{row:?}"
        );
    }
    // int8 keeps a byte per dimension where f32 keeps four.
    assert!(rows[1].index_bytes < rows[0].index_bytes, "{rows:?}");
}
