//! A tenant's full-text index in memory, for every knowledge search (the hybrid search's
//! full-text half, and the search without an embedding provider: decision 0021): BM25 over
//! posting lists.
//!
//! The database's full-text search scores every passage that shares a word with the
//! question before it keeps the best few: thousands of passages for a common word in a
//! large catalogue (16 ms p99 at 20,000 passages on SQLite, docs/benchmarks.md). Held in
//! memory, the same ranking touches only the posting lists of the question's words: tens of
//! microseconds.
//!
//! Words are runs of letters and digits, lowercased (as the questions' words, see
//! `store::knowledge`). A question word matches every indexed word it begins ("open" finds
//! "opens" and "opening"), as the database searches do; the matches of one question word
//! count as one term. Scores are Okapi BM25 with SQLite FTS5's constants (k1 = 1.2,
//! b = 0.75, a non-positive idf counted as 10⁻⁶), so on SQLite the ranking is the
//! database's own.

use std::collections::HashMap;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalisation.
const B: f64 = 0.75;
/// The idf of a word in more than half the passages (FTS5's floor).
const MIN_IDF: f64 = 1e-6;

/// One tenant's passages as words: posting lists by word, and each passage's length.
#[derive(Debug, Clone, Default)]
pub struct TextIndex {
    /// Words, sorted (prefix lookups are a range), with their posting lists.
    words: Vec<String>,
    /// For each word: (passage position, occurrences), by position.
    postings: Vec<Vec<(u32, u32)>>,
    /// Chunk ids, by position.
    chunk_ids: Vec<i64>,
    /// Words in each passage, by position.
    lengths: Vec<u32>,
    /// Mean passage length in words.
    average_length: f64,
    /// What [`TextIndex::bytes`] reports, computed once.
    bytes: usize,
}

/// The words of `text`: runs of letters and digits, lowercased, keeping only letters and
/// digits (lowercasing "İ" adds a combining dot). The questions' words are made by this too
/// (`store::knowledge::query_words`), so both sides of a match are spelled alike.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter_map(|raw| {
            let word: String = raw
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect();
            (!word.is_empty()).then_some(word)
        })
}

impl TextIndex {
    /// The index of `passages` (chunk id, text).
    pub fn build<'a>(passages: impl IntoIterator<Item = (i64, &'a str)>) -> Self {
        let mut by_word: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut chunk_ids = Vec::new();
        let mut lengths = Vec::new();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for (chunk_id, text) in passages {
            let Ok(position) = u32::try_from(chunk_ids.len()) else {
                break;
            };
            counts.clear();
            let mut length = 0_u32;
            for word in words(text) {
                *counts.entry(word).or_default() += 1;
                length = length.saturating_add(1);
            }
            for (word, count) in counts.drain() {
                by_word.entry(word).or_default().push((position, count));
            }
            chunk_ids.push(chunk_id);
            lengths.push(length);
        }
        let mut entries: Vec<(String, Vec<(u32, u32)>)> = by_word.into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let (words, postings): (Vec<String>, Vec<Vec<(u32, u32)>>) = entries.into_iter().unzip();
        let total: u64 = lengths.iter().map(|&l| u64::from(l)).sum();
        let average_length = if chunk_ids.is_empty() {
            0.0
        } else {
            total as f64 / chunk_ids.len() as f64
        };
        let bytes = words.iter().map(|w| w.len() + 24).sum::<usize>()
            + postings.iter().map(|p| p.len() * 8 + 24).sum::<usize>()
            + chunk_ids.len() * 12;
        Self {
            words,
            postings,
            chunk_ids,
            lengths,
            average_length,
            bytes,
        }
    }

    /// How many passages it holds.
    pub fn len(&self) -> usize {
        self.chunk_ids.len()
    }

    /// Whether it holds no passage.
    pub fn is_empty(&self) -> bool {
        self.chunk_ids.is_empty()
    }

    /// The memory it holds, in bytes (approximate: what the cache is charged).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The best `limit` passages for the question words `query` (already lowercased, each
    /// once), best first, as (chunk id, BM25 score); ties by chunk id. Passages that match
    /// no word are not listed.
    pub fn search(&self, query: &[String], limit: usize) -> Vec<(i64, f64)> {
        if limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let passages = self.chunk_ids.len();
        // Dense accumulators (a few hundred KiB at 20,000 passages) with the positions
        // touched: thousands of postings for a common word cost microseconds.
        let mut scores = vec![0.0_f64; passages];
        let mut scored: Vec<u32> = Vec::new();
        let mut frequencies = vec![0_u32; passages];
        let mut counted: Vec<u32> = Vec::new();
        let average_length = self.average_length.max(1.0);
        for word in query {
            // Every indexed word `word` begins: one term, occurrences summed per passage.
            let start = self.words.partition_point(|w| w.as_str() < word.as_str());
            let end = start
                + self.words[start..]
                    .iter()
                    .take_while(|w| w.starts_with(word.as_str()))
                    .count();
            for postings in &self.postings[start..end] {
                for &(position, count) in postings {
                    let frequency = &mut frequencies[position as usize];
                    if *frequency == 0 {
                        counted.push(position);
                    }
                    *frequency += count;
                }
            }
            if counted.is_empty() {
                continue;
            }
            let containing = counted.len() as f64;
            let idf = ((passages as f64 - containing + 0.5) / (containing + 0.5)).ln();
            let idf = if idf > 0.0 { idf } else { MIN_IDF };
            for position in counted.drain(..) {
                let at = position as usize;
                let tf = f64::from(std::mem::take(&mut frequencies[at]));
                let length = f64::from(self.lengths[at]);
                let norm = K1 * (1.0 - B + B * length / average_length);
                if scores[at] == 0.0 {
                    scored.push(position);
                }
                scores[at] += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(i64, f64)> = scored
            .into_iter()
            .map(|position| {
                let at = position as usize;
                (self.chunk_ids[at], scores[at])
            })
            .collect();
        let by_score = |a: &(i64, f64), b: &(i64, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit - 1, by_score);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(by_score);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn ids(hits: &[(i64, f64)]) -> Vec<i64> {
        hits.iter().map(|hit| hit.0).collect()
    }

    #[test]
    fn a_rare_word_outranks_a_common_one() {
        let index = TextIndex::build([
            (1, "leather bag, brown leather"),
            (2, "leather belt"),
            (3, "leather wallet with a zip"),
            (4, "canvas bag"),
        ]);
        let hits = index.search(&query(&["zip", "leather"]), 10);
        assert_eq!(hits[0].0, 3, "{hits:?}");
        assert_eq!(
            hits.len(),
            3,
            "the canvas bag matches neither word: {hits:?}"
        );
    }

    #[test]
    fn a_question_word_finds_the_words_it_begins() {
        let index = TextIndex::build([(1, "We are open daily"), (2, "Opening hours: 9 to 5")]);
        assert_eq!(ids(&index.search(&query(&["open"]), 10)), [1, 2]);
        assert!(index.search(&query(&["opens"]), 10).is_empty());
    }

    #[test]
    fn more_occurrences_score_higher_and_shorter_passages_win_ties_of_count() {
        let index = TextIndex::build([
            (1, "boots boots boots and more"),
            (2, "boots and more"),
            (3, "boots and a great deal more words besides these"),
            (4, "sandals"),
        ]);
        assert_eq!(ids(&index.search(&query(&["boots"]), 10)), [1, 2, 3]);
    }

    #[test]
    fn the_limit_keeps_the_best_and_equal_scores_go_by_chunk_id() {
        let index = TextIndex::build((1..=50).map(|i| (i, "the same text")));
        assert_eq!(
            ids(&index.search(&query(&["same"]), 3)),
            [1, 2, 3],
            "equal scores: lowest chunk ids"
        );
        assert!(index.search(&query(&["same"]), 0).is_empty());
    }

    #[test]
    fn nothing_is_found_for_unknown_words_or_in_an_empty_index() {
        let index = TextIndex::build([(1, "Café ÜBER straße")]);
        assert_eq!(ids(&index.search(&query(&["café", "über"]), 5)), [1]);
        assert!(index.search(&query(&["lagos"]), 5).is_empty());
        assert!(TextIndex::build([]).search(&query(&["x"]), 5).is_empty());
        assert!(TextIndex::build([]).is_empty());
    }

    #[test]
    fn words_keep_only_letters_and_digits_after_lowercasing() {
        assert_eq!(
            words("Shipping to İSTANBUL, 2-day!").collect::<Vec<_>>(),
            ["shipping", "to", "istanbul", "2", "day"]
        );
        let index = TextIndex::build([(1, "Shipping to İstanbul")]);
        assert_eq!(ids(&index.search(&query(&["istanbul"]), 5)), [1]);
    }

    #[test]
    fn its_size_grows_with_the_text() {
        let small = TextIndex::build([(1, "one two")]);
        let large = TextIndex::build((1..=100).map(|i| (i, "one two three four five six")));
        assert_eq!(large.len(), 100);
        assert!(large.bytes() > small.bytes());
    }
}
