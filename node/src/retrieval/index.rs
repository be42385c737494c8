//! A tenant's vector index: every passage vector of one model, normalised, in one flat
//! array, searched exactly (cosine = dot product of unit vectors) for the top k.
//!
//! A tenant has thousands of passages, not millions: a linear scan of 20,000 × 768 floats
//! is a few milliseconds and needs no approximate index. With int8 quantization each
//! component is stored as `round(x × 127)` (unit vectors have components in −1..1), a
//! quarter of the memory, and the dot product is computed in `i32` then scaled back; the
//! ranking barely moves (see the tests).
//!
//! Vectors are stored in the database as little-endian `f32` bytes ([`encode`],
//! [`decode`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A vector as little-endian `f32` bytes.
pub fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector of [`encode`]'s bytes; `None` when the length is not a multiple of 4.
pub fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// `vector` scaled to length 1; a zero vector stays zero (it matches nothing).
pub fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The components, flat, at full or int8 precision.
#[derive(Debug, Clone)]
enum Components {
    F32(Vec<f32>),
    I8(Vec<i8>),
}

/// One tenant's vectors of one model, searched exactly.
#[derive(Debug, Clone)]
pub struct TenantIndex {
    dimensions: usize,
    chunk_ids: Vec<i64>,
    components: Components,
}

/// A passage found by [`TenantIndex::search`]: its chunk and cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    /// The chunk.
    pub chunk_id: i64,
    /// Cosine similarity to the question, −1..1.
    pub similarity: f32,
}

/// Orders hits worst first (for the top-k heap): lower similarity, then higher chunk id.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ranked(VectorHit);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap's top is the worst kept hit.
        other
            .0
            .similarity
            .total_cmp(&self.0.similarity)
            .then(self.0.chunk_id.cmp(&other.0.chunk_id))
    }
}

impl TenantIndex {
    /// An index of `vectors` (chunk id, components), each normalised; vectors whose length
    /// is not `dimensions` are left out. `int8` quantizes.
    pub fn build(dimensions: usize, vectors: Vec<(i64, Vec<f32>)>, int8: bool) -> Self {
        let mut chunk_ids = Vec::with_capacity(vectors.len());
        let mut flat: Vec<f32> = Vec::with_capacity(vectors.len() * dimensions);
        for (chunk_id, mut vector) in vectors {
            if vector.len() != dimensions {
                continue;
            }
            normalise(&mut vector);
            chunk_ids.push(chunk_id);
            flat.extend_from_slice(&vector);
        }
        let components = if int8 {
            Components::I8(flat.iter().map(|x| quantize(*x)).collect())
        } else {
            Components::F32(flat)
        };
        Self {
            dimensions,
            chunk_ids,
            components,
        }
    }

    /// How many vectors.
    pub fn len(&self) -> usize {
        self.chunk_ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.chunk_ids.is_empty()
    }

    /// The vectors' length.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The memory the index holds, in bytes (its weight in the cache).
    pub fn bytes(&self) -> usize {
        let components = match &self.components {
            Components::F32(v) => v.len() * 4,
            Components::I8(v) => v.len(),
        };
        std::mem::size_of::<Self>() + self.chunk_ids.len() * 8 + components
    }

    /// The `k` vectors most similar to `query` (any length; normalised here), best first,
    /// ties by chunk id. A query of another length finds nothing.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<VectorHit> {
        if query.len() != self.dimensions || k == 0 || self.dimensions == 0 {
            return Vec::new();
        }
        let mut query = query.to_vec();
        normalise(&mut query);
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        let mut offer = |i: usize, similarity: f32| {
            let hit = Ranked(VectorHit {
                chunk_id: self.chunk_ids[i],
                similarity,
            });
            if heap.len() < k {
                heap.push(hit);
            } else if let Some(worst) = heap.peek()
                && hit < *worst
            {
                heap.pop();
                heap.push(hit);
            }
        };
        match &self.components {
            Components::F32(flat) => {
                for (i, row) in flat.chunks_exact(self.dimensions).enumerate() {
                    offer(i, dot(row, &query));
                }
            }
            Components::I8(flat) => {
                let q: Vec<i8> = query.iter().map(|x| quantize(*x)).collect();
                let scale = 1.0 / (127.0 * 127.0);
                for (i, row) in flat.chunks_exact(self.dimensions).enumerate() {
                    let sum: i32 = row
                        .iter()
                        .zip(&q)
                        .map(|(a, b)| i32::from(*a) * i32::from(*b))
                        .sum();
                    offer(i, sum as f32 * scale);
                }
            }
        }
        let mut hits: Vec<VectorHit> = heap.into_iter().map(|r| r.0).collect();
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.chunk_id.cmp(&b.chunk_id))
        });
        hits
    }
}

fn quantize(x: f32) -> i8 {
    (x * 127.0).round().clamp(-127.0, 127.0) as i8
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators: the compiler vectorises this.
    let mut sums = [0.0_f32; 4];
    let chunks = a.len() / 4 * 4;
    for i in (0..chunks).step_by(4) {
        sums[0] += a[i] * b[i];
        sums[1] += a[i + 1] * b[i + 1];
        sums[2] += a[i + 2] * b[i + 2];
        sums[3] += a[i + 3] * b[i + 3];
    }
    let mut sum = sums.iter().sum::<f32>();
    for i in chunks..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random vector.
    fn vector(seed: u64, dimensions: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..dimensions)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn bytes_round_trip() {
        let v = vec![0.25, -1.5, f32::MIN_POSITIVE, 3.0e7];
        assert_eq!(decode(&encode(&v)), Some(v));
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[test]
    fn exact_search_finds_the_nearest_and_orders_by_similarity() {
        let vectors: Vec<(i64, Vec<f32>)> = (0..500).map(|i| (i, vector(i as u64, 64))).collect();
        let index = TenantIndex::build(64, vectors.clone(), false);
        assert_eq!(index.len(), 500);
        // A vector's own (scaled) copy is its nearest neighbour.
        let query: Vec<f32> = vectors[42].1.iter().map(|x| x * 3.0).collect();
        let hits = index.search(&query, 5);
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].chunk_id, 42);
        assert!((hits[0].similarity - 1.0).abs() < 1e-5);
        assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        // Brute force agrees.
        let mut all: Vec<(f32, i64)> = vectors
            .iter()
            .map(|(id, v)| {
                let (mut a, mut b) = (v.clone(), query.clone());
                normalise(&mut a);
                normalise(&mut b);
                (dot(&a, &b), *id)
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let expected: Vec<i64> = all.iter().take(5).map(|x| x.1).collect();
        assert_eq!(
            hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(),
            expected
        );
        assert!(index.search(&[1.0; 3], 5).is_empty());
        assert!(index.search(&query, 0).is_empty());
    }

    #[test]
    fn int8_keeps_the_ranking_at_a_quarter_of_the_memory() {
        let vectors: Vec<(i64, Vec<f32>)> = (0..300).map(|i| (i, vector(i as u64, 128))).collect();
        let full = TenantIndex::build(128, vectors.clone(), false);
        let small = TenantIndex::build(128, vectors.clone(), true);
        assert!(small.bytes() * 3 < full.bytes());
        let mut agree = 0;
        for probe in 0..50 {
            let query = vector(10_000 + probe, 128);
            let a = full.search(&query, 10);
            let b = small.search(&query, 10);
            assert_eq!(a.len(), b.len());
            agree += a
                .iter()
                .filter(|h| b.iter().any(|g| g.chunk_id == h.chunk_id))
                .count();
            // The best hit is found by both.
            let own = &vectors[probe as usize].1;
            assert_eq!(small.search(own, 1)[0].chunk_id, probe as i64);
        }
        // At least 90 % of the top-10 sets agree.
        assert!(agree >= 450, "{agree} of 500");
    }
}
