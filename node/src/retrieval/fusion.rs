//! Reciprocal rank fusion: the full-text and the vector ranking merged into one.
//!
//! A passage at rank r (1-based) of a list scores `1 / (K + r)` from it; its fused score is
//! the sum over the lists it is in. Scores of the two searches (`ts_rank`/`bm25` and
//! cosine) are not comparable, ranks are; `K = 60` (Cormack et al., 2009) damps the weight
//! of the very first ranks. Ties go to the lower chunk id (older passage), so the order is
//! deterministic.

use std::collections::HashMap;

/// The damping constant.
pub const RRF_K: f64 = 60.0;

/// One passage of the fused ranking, with why it is there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fused {
    /// The chunk.
    pub chunk_id: i64,
    /// Its 1-based rank in the full-text results, if it was there.
    pub fulltext_rank: Option<u32>,
    /// Its 1-based rank in the vector results, if it was there.
    pub vector_rank: Option<u32>,
    /// The fused score, higher is better.
    pub score: f64,
}

/// Fuses two rankings (chunk ids, best first) and keeps the best `k`.
pub fn fuse(fulltext: &[i64], vector: &[i64], k: usize) -> Vec<Fused> {
    let mut by_chunk: HashMap<i64, Fused> = HashMap::new();
    let mut add = |ids: &[i64], is_vector: bool| {
        for (i, &chunk_id) in ids.iter().enumerate() {
            let rank = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let entry = by_chunk.entry(chunk_id).or_insert(Fused {
                chunk_id,
                fulltext_rank: None,
                vector_rank: None,
                score: 0.0,
            });
            let slot = if is_vector {
                &mut entry.vector_rank
            } else {
                &mut entry.fulltext_rank
            };
            if slot.is_none() {
                *slot = Some(rank);
                entry.score += 1.0 / (RRF_K + f64::from(rank));
            }
        }
    };
    add(fulltext, false);
    add(vector, true);
    let mut fused: Vec<Fused> = by_chunk.into_values().collect();
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.chunk_id.cmp(&b.chunk_id))
    });
    fused.truncate(k);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_wins_and_either_list_alone_still_counts() {
        let fused = fuse(&[1, 2, 3], &[3, 4, 1], 10);
        let ids: Vec<i64> = fused.iter().map(|f| f.chunk_id).collect();
        // 1: 1/61 + 1/63, 3: 1/63 + 1/61 — equal, lower id first; then 2 and 4 (rank 2).
        assert_eq!(ids, [1, 3, 2, 4]);
        assert_eq!(fused[0].fulltext_rank, Some(1));
        assert_eq!(fused[0].vector_rank, Some(3));
        assert_eq!(fused[2].vector_rank, None);
        assert!((fused[0].score - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-12);
        assert_eq!(fuse(&[1, 2], &[], 1).len(), 1);
        assert!(fuse(&[], &[], 3).is_empty());
    }
}
