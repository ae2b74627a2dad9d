//! Training a WordPiece vocabulary, deterministically.
//!
//! The scheme is the one Hugging Face's `WordPieceTrainer` uses: split each
//! word into its first character and `##`-prefixed continuation characters,
//! then repeatedly merge the most frequent adjacent pair until the vocabulary
//! is full. Unlike that trainer, whose ties fall to hash-map order (two runs
//! on the same texts give different vocabularies), every tie here is broken
//! by the pieces' text, so the vocabulary is a function of the texts alone.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

const CONTINUATION: &str = "##";

type Pair = (u32, u32);

/// A candidate merge in the queue: most frequent first, then the smallest
/// `(left, right)` text.
#[derive(PartialEq, Eq)]
struct Candidate {
    count: u64,
    text: Reverse<(String, String)>,
    pair: Pair,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count.cmp(&other.count).then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

struct Pieces {
    text: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Pieces {
    fn id(&mut self, piece: String) -> u32 {
        if let Some(&id) = self.ids.get(&piece) {
            return id;
        }
        let id = self.text.len() as u32;
        self.ids.insert(piece.clone(), id);
        self.text.push(piece);
        id
    }
}

fn pairs_of(symbols: &[u32]) -> impl Iterator<Item = Pair> + '_ {
    symbols.windows(2).map(|w| (w[0], w[1]))
}

/// The vocabulary, in id order: `specials`, the alphabet (sorted), then the
/// merged pieces in the order they were made, until `vocab_size` entries.
pub fn train_vocab(word_counts: &BTreeMap<String, u64>, specials: &[&str], vocab_size: usize) -> Vec<String> {
    let mut pieces = Pieces { text: Vec::new(), ids: HashMap::new() };
    for special in specials {
        pieces.id(special.to_string());
    }
    let split = |word: &str| -> Vec<String> {
        word.chars()
            .enumerate()
            .map(|(i, c)| if i == 0 { c.to_string() } else { format!("{CONTINUATION}{c}") })
            .collect()
    };
    let alphabet: BTreeSet<String> = word_counts.keys().flat_map(|w| split(w)).collect();
    for piece in alphabet {
        pieces.id(piece);
    }
    let mut words: Vec<(Vec<u32>, u64)> = word_counts
        .iter()
        .map(|(word, &count)| (split(word).into_iter().map(|p| pieces.ids[&p]).collect(), count))
        .collect();

    let mut pair_counts: HashMap<Pair, u64> = HashMap::new();
    let mut where_found: HashMap<Pair, HashSet<usize>> = HashMap::new();
    for (index, (symbols, count)) in words.iter().enumerate() {
        for pair in pairs_of(symbols) {
            *pair_counts.entry(pair).or_default() += count;
            where_found.entry(pair).or_default().insert(index);
        }
    }
    let candidate = |pieces: &Pieces, pair: Pair, count: u64| Candidate {
        count,
        text: Reverse((pieces.text[pair.0 as usize].clone(), pieces.text[pair.1 as usize].clone())),
        pair,
    };
    let mut queue: BinaryHeap<Candidate> =
        pair_counts.iter().map(|(&pair, &count)| candidate(&pieces, pair, count)).collect();

    while pieces.text.len() < vocab_size {
        let Some(top) = queue.pop() else { break };
        let current = pair_counts.get(&top.pair).copied().unwrap_or(0);
        if current == 0 {
            continue;
        }
        if current != top.count {
            // Stale: the pair's count changed since it was queued.
            queue.push(candidate(&pieces, top.pair, current));
            continue;
        }
        let (left, right) = top.pair;
        let merged_text = format!(
            "{}{}",
            pieces.text[left as usize],
            pieces.text[right as usize].strip_prefix(CONTINUATION).unwrap_or(&pieces.text[right as usize])
        );
        let merged = pieces.id(merged_text);
        let mut affected: Vec<usize> = where_found.remove(&top.pair).unwrap_or_default().into_iter().collect();
        affected.sort_unstable();
        let mut touched: BTreeSet<Pair> = BTreeSet::new();
        for index in affected {
            let (symbols, count) = &mut words[index];
            let count = *count;
            for pair in pairs_of(symbols) {
                if let Some(c) = pair_counts.get_mut(&pair) {
                    *c -= count;
                }
                touched.insert(pair);
            }
            let mut rewritten = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    rewritten.push(merged);
                    i += 2;
                } else {
                    rewritten.push(symbols[i]);
                    i += 1;
                }
            }
            *symbols = rewritten;
            for pair in pairs_of(symbols) {
                *pair_counts.entry(pair).or_default() += count;
                where_found.entry(pair).or_default().insert(index);
                touched.insert(pair);
            }
        }
        pair_counts.remove(&top.pair);
        for pair in touched {
            if let Some(&count) = pair_counts.get(&pair)
                && count > 0
            {
                queue.push(candidate(&pieces, pair, count));
            }
        }
    }
    pieces.text.truncate(vocab_size.max(specials.len()));
    pieces.text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(words: &[(&str, u64)]) -> BTreeMap<String, u64> {
        words.iter().map(|(w, c)| (w.to_string(), *c)).collect()
    }

    #[test]
    fn merges_the_most_frequent_pair_first() {
        let vocab = train_vocab(&counts(&[("hug", 10), ("pug", 5), ("hugs", 5)]), &["[UNK]"], 100);
        assert_eq!(&vocab[..6], ["[UNK]", "##g", "##s", "##u", "h", "p"]);
        // "##u" + "##g" is the most frequent pair (20).
        assert_eq!(vocab[6], "##ug");
        assert!(vocab.contains(&"hug".to_string()));
    }

    #[test]
    fn ties_break_by_text_and_stop_at_the_size() {
        let vocab = train_vocab(&counts(&[("ab", 1), ("cd", 1)]), &[], 5);
        assert_eq!(vocab, ["##b", "##d", "a", "c", "ab"]);
    }
}
