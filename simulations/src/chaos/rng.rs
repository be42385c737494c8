//! The simulation's one source of randomness: SplitMix64, seeded from the run's seed.

/// SplitMix64: small, fast, seedable (any seed, 0 included); good enough to draw faults.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// An independent generator derived from this one's next draw and `stream`.
    pub fn fork(&mut self, stream: u64) -> Self {
        Self(self.next_u64() ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }
}

/// Draws keyed by what they are for, so that the order in which independent tasks happen to
/// draw does not change what they get: the `n`th draw for one key is the same in every run
/// of a seed, whichever other keys were drawn in between.
#[derive(Debug)]
pub struct KeyedDraws {
    seed: u64,
    counts: std::sync::Mutex<std::collections::BTreeMap<u64, u64>>,
}

impl KeyedDraws {
    /// Draws for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            counts: std::sync::Mutex::default(),
        }
    }

    /// A generator for the next use of `key`.
    pub fn rng(&self, key: &[u8]) -> SimRng {
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(hash).or_default();
        *count += 1;
        let mut rng = SimRng::new(self.seed ^ hash);
        rng.fork(*count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first[0], SimRng::new(8).next_u64());
        assert!((0..100).all(|_| a.between(3, 5) >= 3 && b.between(3, 5) <= 5));
    }
}
