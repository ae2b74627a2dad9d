//! WordPiece for cleaned text: after the course's cleaning only `[a-z0-9 ]`
//! is left, and on such text the whole uncased BERT pipeline of the
//! `tokenizers` crate reduces to "split on spaces, longest-match-first
//! WordPiece per word, special tokens around". This module does exactly that
//! with a table of the pieces that are whole short words (most words of a
//! text are), two byte tries for the rest, and no allocation per word, which is tens of times
//! faster than the general pipeline (normalizer with offsets, pre-tokenizer,
//! a hash lookup per candidate substring).
//!
//! [`CleanTextEncoder::for_tokenizer`] only builds an encoder for a pipeline
//! whose behaviour on `[a-z0-9 ]` it can state exactly; every other
//! tokenizer keeps the general path. [`CleanTextEncoder::encode`] answers
//! `None` for text holding any other byte, so the caller falls back and the
//! result never depends on which path ran. Tests compare both paths on
//! random and edge-case text.

use std::ops::{BitOr, Shl};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::{ModelWrapper, NormalizerWrapper, PostProcessor, PreTokenizerWrapper, Tokenizer};

const NO_TOKEN: u32 = u32::MAX;

/// `[a-z0-9]`, the alphabet of a cleaned word, as 0..36 (fits a `u64` mask).
fn symbol(byte: u8) -> Option<u32> {
    match byte {
        b'a'..=b'z' => Some(u32::from(byte - b'a')),
        b'0'..=b'9' => Some(u32::from(byte - b'0') + 26),
        _ => None,
    }
}

/// A trie over `[a-z0-9]` strings, each node's children stored contiguously
/// and found through a 36-bit mask, so a node costs 16 bytes and a step is a
/// mask test and a popcount.
#[derive(Debug, Clone, Default)]
struct PieceTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Clone, Copy)]
struct TrieNode {
    children: u64,
    first_child: u32,
    token: u32,
}

impl PieceTrie {
    /// Pieces whose bytes are not all in the alphabet can never match a
    /// cleaned word, so they are left out.
    fn build<'a>(pieces: impl Iterator<Item = (&'a str, u32)>) -> Self {
        fn symbols(piece: &str) -> impl Iterator<Item = Option<u32>> + '_ {
            piece.bytes().map(symbol)
        }
        let mut pieces: Vec<(&str, u32)> =
            pieces.filter(|(piece, _)| !piece.is_empty() && symbols(piece).all(|s| s.is_some())).collect();
        // In symbol order, a piece shares its path with the pieces before it
        // only up to the last one's, and a node's children come in the order
        // they are laid out: each draft node just links its children, where
        // a map per node made building a vocabulary's trie cost 20 ms.
        pieces.sort_unstable_by(|a, b| symbols(a.0).cmp(symbols(b.0)));
        struct Draft {
            symbol: u32,
            token: u32,
            first_child: u32,
            last_child: u32,
            next_sibling: u32,
        }
        const NONE: u32 = u32::MAX;
        let draft = |symbol| Draft { symbol, token: NO_TOKEN, first_child: NONE, last_child: NONE, next_sibling: NONE };
        let mut drafts = vec![draft(0)];
        for (piece, id) in pieces {
            let mut at = 0;
            for s in symbols(piece).flatten() {
                let last = drafts[at].last_child;
                if last != NONE && drafts[last as usize].symbol == s {
                    at = last as usize;
                    continue;
                }
                let child = drafts.len() as u32;
                drafts.push(draft(s));
                match last {
                    NONE => drafts[at].first_child = child,
                    _ => drafts[last as usize].next_sibling = child,
                }
                drafts[at].last_child = child;
                at = child as usize;
            }
            drafts[at].token = id;
        }
        // Laid out breadth-first, each node's children contiguous.
        let mut order = vec![0u32];
        let mut nodes = Vec::with_capacity(drafts.len());
        let mut next = 0;
        while next < order.len() {
            let node = &drafts[order[next] as usize];
            let first_child = order.len() as u32;
            let mut mask = 0u64;
            let mut child = node.first_child;
            while child != NONE {
                mask |= 1 << drafts[child as usize].symbol;
                order.push(child);
                child = drafts[child as usize].next_sibling;
            }
            nodes.push(TrieNode { children: mask, first_child, token: node.token });
            next += 1;
        }
        Self { nodes }
    }

    #[inline(always)]
    fn child(&self, node: usize, symbol: u32) -> Option<usize> {
        let TrieNode { children, first_child, .. } = self.nodes[node];
        let bit = 1u64 << symbol;
        (children & bit != 0).then(|| first_child as usize + (children & (bit - 1)).count_ones() as usize)
    }

    /// The longest piece that prefixes `word`: its token and byte length.
    #[inline(always)]
    fn longest_prefix(&self, word: &[u8]) -> Option<(u32, usize)> {
        let mut node = 0;
        let mut best = None;
        for (at, &byte) in word.iter().enumerate() {
            let Some(s) = symbol(byte) else { return best };
            match self.child(node, s) {
                Some(child) => node = child,
                None => return best,
            }
            let token = self.nodes[node].token;
            if token != NO_TOKEN {
                best = Some((token, at + 1));
            }
        }
        best
    }
}

/// A short `[a-z0-9]` word packed into a nonzero number, 6 bits a symbol
/// (offset by one, so no two words pack alike; 0 marks an empty slot).
trait PackedWord: Copy + Eq + From<u32> + Shl<u32, Output = Self> + BitOr<Output = Self> {
    /// The longest word that fits.
    const MAX_BYTES: usize;
    const EMPTY: Self;

    /// `None` if a byte is outside the alphabet.
    #[inline]
    fn pack(word: &[u8]) -> Option<Self> {
        word.iter().try_fold(Self::EMPTY, |key, &b| Some(key << 6 | Self::from(symbol(b)? + 1)))
    }

    /// The bits a table slot is chosen by.
    fn mixed(self) -> u64;
}

impl PackedWord for u64 {
    const MAX_BYTES: usize = 10;
    const EMPTY: Self = 0;
    #[inline]
    fn mixed(self) -> u64 {
        self
    }
}

impl PackedWord for u128 {
    const MAX_BYTES: usize = 21;
    const EMPTY: Self = 0;
    #[inline]
    fn mixed(self) -> u64 {
        (self as u64) ^ ((self >> 64) as u64).rotate_left(31)
    }
}

/// The word-start pieces that are whole words of one packed size, by packed
/// word: most words of a text are one, and one probe here replaces a walk
/// down the trie (greedy longest-match-first takes a word that is itself a
/// piece whole). Open addressing, linear probing.
#[derive(Debug, Clone)]
struct WholeWords<K> {
    slots: Vec<(K, u32)>,
    shift: u32,
}

impl<K: PackedWord> WholeWords<K> {
    /// Pieces that pack into `K` and not into a smaller key (`shorter`
    /// bytes or fewer) are kept.
    fn build<'a>(pieces: impl Iterator<Item = (&'a str, u32)>, shorter: usize) -> Self {
        let words: Vec<(K, u32)> = pieces
            .filter(|(piece, _)| piece.len() > shorter && piece.len() <= K::MAX_BYTES)
            .filter_map(|(piece, id)| Some((K::pack(piece.as_bytes())?, id)))
            .collect();
        let capacity = (2 * words.len()).next_power_of_two().max(2);
        let mut table = Self { slots: vec![(K::EMPTY, NO_TOKEN); capacity], shift: 64 - capacity.trailing_zeros() };
        for (key, id) in words {
            let mut slot = table.slot_of(key);
            while table.slots[slot].0 != K::EMPTY {
                slot = (slot + 1) & (capacity - 1);
            }
            table.slots[slot] = (key, id);
        }
        table
    }

    #[inline]
    fn slot_of(&self, key: K) -> usize {
        (key.mixed().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: K) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut slot = self.slot_of(key);
        loop {
            let (k, id) = self.slots[slot];
            if k == key {
                return Some(id);
            }
            if k == K::EMPTY {
                return None;
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// The uncased BERT pipeline restricted to cleaned text.
#[derive(Debug, Clone)]
pub struct CleanTextEncoder {
    whole_words: WholeWords<u64>,
    /// Whole words too long for a `u64`: a walk down the trie would take a
    /// step, and likely a cache miss, per byte.
    long_whole_words: WholeWords<u128>,
    word_start: PieceTrie,
    continuation: PieceTrie,
    unk: u32,
    max_word_len: usize,
    /// Special tokens the post-processor puts around a single sequence.
    before: Vec<u32>,
    after: Vec<u32>,
    identity: u64,
}

impl CleanTextEncoder {
    /// An encoder equivalent to `tokenizer` on `[a-z0-9 ]` text, or `None`
    /// when the pipeline has a part whose effect there it does not model.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        // Every BertNormalizer setting leaves `[a-z0-9 ]` unchanged.
        if !matches!(tokenizer.get_normalizer(), None | Some(NormalizerWrapper::BertNormalizer(_))) {
            return None;
        }
        if !matches!(tokenizer.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_))) {
            return None;
        }
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else { return None };
        // An added token is matched in the raw text before the model runs.
        // One holding ASCII punctuation can never occur in cleaned text.
        let added = tokenizer.get_added_vocabulary().get_added_tokens_decoder();
        if !added.values().all(|t| t.content.bytes().any(|b| b.is_ascii_punctuation())) {
            return None;
        }
        let (before, after) = single_sequence_specials(tokenizer)?;
        Self::from_model(model, before, after)
    }

    fn from_model(model: &WordPiece, before: Vec<u32>, after: Vec<u32>) -> Option<Self> {
        use tokenizers::Model;
        let vocab = model.get_vocab();
        let unk = *vocab.get(&model.unk_token)?;
        let prefix = model.continuing_subword_prefix.as_str();
        let word_start = PieceTrie::build(vocab.iter().map(|(t, &id)| (t.as_str(), id)));
        let whole_words = WholeWords::build(vocab.iter().map(|(t, &id)| (t.as_str(), id)), 0);
        let long_whole_words = WholeWords::build(vocab.iter().map(|(t, &id)| (t.as_str(), id)), u64::MAX_BYTES);
        let continuation =
            PieceTrie::build(vocab.iter().filter_map(|(t, &id)| t.strip_prefix(prefix).map(|rest| (rest, id))));
        Some(Self {
            whole_words,
            long_whole_words,
            word_start,
            continuation,
            unk,
            max_word_len: model.max_input_chars_per_word,
            before,
            after,
            identity: super::clean_encode::new_identity(),
        })
    }

    /// The ids of `text` with special tokens, and whether `max_length`
    /// (special tokens included) cut any; `None` if `text` holds a byte
    /// outside `[a-z0-9 ]` or the length leaves no room for the specials.
    pub fn encode(&self, text: &str, max_length: Option<usize>) -> Option<(Vec<u32>, bool)> {
        self.on_this_cpu(|| {
            let budget = self.budget(max_length)?;
            let mut ids = Vec::with_capacity(self.before.len() + self.after.len() + text.len() / 4 + 1);
            self.begin(&mut ids);
            for word in text.as_bytes().split(|&b| b == b' ').filter(|w| !w.is_empty()) {
                self.push_word(word, &mut ids)?;
            }
            let truncated = self.finish(&mut ids, budget);
            Some((ids, truncated))
        })
    }

    /// Runs `encode`, and the calls to this encoder inlined into it,
    /// compiled so that a trie step counts a node's children in one
    /// instruction where the CPU has it: the binary targets baseline
    /// x86-64, where `count_ones` takes a dozen.
    #[inline(always)]
    pub(super) fn on_this_cpu<R>(&self, encode: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            #[target_feature(enable = "popcnt")]
            fn with_popcnt<R>(encode: impl FnOnce() -> R) -> R {
                encode()
            }
            // SAFETY: the CPU has just been found to have the instruction.
            return unsafe { with_popcnt(encode) };
        }
        encode()
    }

    /// How many pieces fit between the special tokens under `max_length`;
    /// `None` when the specials alone reach it.
    #[inline]
    pub(super) fn budget(&self, max_length: Option<usize>) -> Option<usize> {
        let added = self.before.len() + self.after.len();
        match max_length {
            Some(max) if max <= added => None,
            Some(max) => Some(max - added),
            None => Some(usize::MAX),
        }
    }

    /// Starts a text's ids: the leading specials.
    #[inline]
    pub(super) fn begin(&self, ids: &mut Vec<u32>) {
        ids.extend_from_slice(&self.before);
    }

    /// Cuts the pieces to `budget` and appends the trailing specials;
    /// whether anything was cut.
    #[inline]
    pub(super) fn finish(&self, ids: &mut Vec<u32>, budget: usize) -> bool {
        let pieces = ids.len() - self.before.len();
        let truncated = pieces > budget;
        if truncated {
            ids.truncate(self.before.len() + budget);
        }
        ids.extend_from_slice(&self.after);
        truncated
    }

    /// Which encoder this is, for memos of its answers: clones share it,
    /// no two encoders built in one process do.
    pub(super) fn identity(&self) -> u64 {
        self.identity
    }

    /// Greedy longest-match-first, the whole word `[UNK]` if any position
    /// has no piece or the word is too long; as `WordPiece::tokenize`.
    #[inline(always)]
    pub(super) fn push_word(&self, word: &[u8], ids: &mut Vec<u32>) -> Option<()> {
        // A word that packs is in the alphabet; a longer one is checked here.
        if word.len() <= self.max_word_len && word.len() <= u128::MAX_BYTES {
            let whole = if word.len() <= u64::MAX_BYTES {
                self.whole_words.get(u64::pack(word)?)
            } else {
                self.long_whole_words.get(u128::pack(word)?)
            };
            if let Some(id) = whole {
                ids.push(id);
                return Some(());
            }
        } else if word.iter().any(|&b| symbol(b).is_none()) {
            return None;
        }
        if word.len() > self.max_word_len {
            ids.push(self.unk);
            return Some(());
        }
        let word_begins = ids.len();
        let mut at = 0;
        let mut trie = &self.word_start;
        while at < word.len() {
            match trie.longest_prefix(&word[at..]) {
                Some((token, len)) => {
                    ids.push(token);
                    at += len;
                    trie = &self.continuation;
                }
                None => {
                    ids.truncate(word_begins);
                    ids.push(self.unk);
                    return Some(());
                }
            }
        }
        Some(())
    }
}

/// The special tokens a single sequence gets, read from the post-processor:
/// `BertProcessing`, or a `TemplateProcessing` whose single-sequence template
/// is special tokens, the sequence, special tokens. Other processors are not
/// modelled.
fn single_sequence_specials(tokenizer: &Tokenizer) -> Option<(Vec<u32>, Vec<u32>)> {
    let Some(processor) = tokenizer.get_post_processor() else { return Some((vec![], vec![])) };
    let json = serde_json::to_value(processor).ok()?;
    let (before, after) = match json.get("type")?.as_str()? {
        "BertProcessing" => {
            let id = |field: &str| json.get(field)?.get(1)?.as_u64().and_then(|id| u32::try_from(id).ok());
            (vec![id("cls")?], vec![id("sep")?])
        }
        "TemplateProcessing" => {
            let specials = json.get("special_tokens")?;
            let mut before = vec![];
            let mut after = vec![];
            let mut seen_sequence = false;
            for piece in json.get("single")?.as_array()? {
                if let Some(special) = piece.get("SpecialToken") {
                    let name = special.get("id")?.as_str()?;
                    let ids = specials.get(name)?.get("ids")?.as_array()?;
                    let ids = ids
                        .iter()
                        .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                        .collect::<Option<Vec<_>>>()?;
                    if seen_sequence { after.extend(ids) } else { before.extend(ids) }
                } else if piece.get("Sequence")?.get("id")?.as_str()? == "A" && !seen_sequence {
                    seen_sequence = true;
                } else {
                    return None;
                }
            }
            if !seen_sequence {
                return None;
            }
            (before, after)
        }
        _ => return None,
    };
    // The count truncation reserves must match what the template adds.
    (processor.added_tokens(false) == before.len() + after.len()).then_some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_rng::Rng;
    use crate::pipeline::tokenize::WordPieceTokenizer;

    #[test]
    fn trie_finds_the_longest_piece() {
        let trie = PieceTrie::build([("a", 1), ("ab", 2), ("abcd", 3), ("b", 4), ("x-y", 5)].into_iter());
        assert_eq!(trie.longest_prefix(b"abc"), Some((2, 2)));
        assert_eq!(trie.longest_prefix(b"abcde"), Some((3, 4)));
        assert_eq!(trie.longest_prefix(b"b"), Some((4, 1)));
        assert_eq!(trie.longest_prefix(b"c"), None);
        assert_eq!(trie.longest_prefix(b"x"), None);
    }

    #[test]
    fn a_whole_word_longer_than_the_models_word_limit_is_unknown() {
        // The whole-word table must not bypass `max_input_chars_per_word`.
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhi\nhell\n##o\nabcdefghij\nabcdefghijk\n\
                     abcdefghijklmnopqrstu\nabcdefghijklmnopqrstuv\n##v\n";
        let base = WordPieceTokenizer::from_vocab(vocab).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(base.json()).unwrap();
        for limit in [3, 4, 5, 10, 11, 20, 21, 22, 100] {
            json["model"]["max_input_chars_per_word"] = limit.into();
            let tokenizer = WordPieceTokenizer::from_bytes(json.to_string().as_bytes()).unwrap();
            assert!(tokenizer.has_clean_text_path());
            let long = "abcdefghijklmnopqrstu abcdefghijklmnopqrstuv abcdefghijklmnopqrstuvv";
            for text in ["hello hi", "hell hello", "abcdefghij abcdefghijk", "hellohello hello", long] {
                let general = tokenizer.encode_general(text).unwrap();
                assert_eq!(tokenizer.encode_reporting_truncation(text).unwrap(), general, "limit {limit}: {text}");
            }
        }
    }

    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

    /// A vocabulary of short pieces over a few letters (so words split in
    /// many ways and often fail), pieces with other bytes, repeats, and
    /// `long_words` whole (they pack into neither key or only the wider).
    fn random_vocab(rng: &mut Rng, long_words: &[String]) -> String {
        let mut lines =
            vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].into_iter().map(String::from).collect::<Vec<_>>();
        for _ in 0..300 {
            let len = 1 + rng.below(4);
            let piece: String =
                (0..len).map(|_| LETTERS[rng.below(8) + if rng.below(4) == 0 { 26 } else { 0 }] as char).collect();
            let line = match rng.below(10) {
                0..=4 => piece,
                5..=8 => format!("##{piece}"),
                _ => format!("{piece}-{}", if rng.below(2) == 0 { "é" } else { "#" }),
            };
            lines.push(line);
        }
        lines.extend(long_words.iter().cloned());
        lines.push("a".into()); // a repeated token keeps its last line
        lines.join("\n") + "\n"
    }

    fn random_word(rng: &mut Rng, len: usize) -> String {
        (0..len).map(|_| LETTERS[rng.below(8) + if rng.below(5) == 0 { 26 } else { 0 }] as char).collect()
    }

    /// Twenty words of 9 to 24 bytes: past a `u64` key, some past a `u128`.
    fn random_long_words(rng: &mut Rng) -> Vec<String> {
        (0..20)
            .map(|_| {
                let len = 9 + rng.below(16);
                random_word(rng, len)
            })
            .collect()
    }

    fn random_clean_text(rng: &mut Rng, long_words: &[String]) -> String {
        let mut text = String::new();
        for _ in 0..rng.below(12) {
            let spaces = match rng.below(6) {
                0 => 0,
                1 => 2,
                _ => 1,
            };
            text.extend(std::iter::repeat_n(' ', spaces));
            match rng.below(20) {
                0 => {
                    let len = 95 + rng.below(10);
                    text.push_str(&random_word(rng, len));
                }
                // A long piece, whole or with a letter more or less.
                1..=2 => {
                    let word = &long_words[rng.below(long_words.len())];
                    match rng.below(3) {
                        0 => text.push_str(word),
                        1 => text.push_str(&word[..word.len() - 1]),
                        _ => text.push_str(&format!("{word}{}", random_word(rng, 1))),
                    }
                }
                _ => {
                    let len = 1 + rng.below(9);
                    text.push_str(&random_word(rng, len));
                }
            }
        }
        text
    }

    #[test]
    fn fuzzed_clean_text_matches_the_general_pipeline() {
        let mut rng = Rng(7);
        let (mut truncated, mut unknown) = (0, 0);
        for round in 0..40 {
            let long_words = random_long_words(&mut rng);
            let vocab = random_vocab(&mut rng, &long_words);
            for max_length in [None, Some(2), Some(3), Some(7)] {
                let tokenizer = WordPieceTokenizer::from_vocab(&vocab).unwrap().with_max_length(max_length).unwrap();
                assert!(tokenizer.has_clean_text_path());
                for case in 0..200 {
                    let text = random_clean_text(&mut rng, &long_words);
                    let (ids, cut) = tokenizer.encode_general(&text).unwrap();
                    assert_eq!(
                        tokenizer.encode_reporting_truncation(&text).unwrap(),
                        (ids.clone(), cut),
                        "round {round}, max_length {max_length:?}, case {case}: {text:?}"
                    );
                    truncated += usize::from(cut);
                    unknown += usize::from(ids.contains(&1));
                }
            }
        }
        // The cases reach both the truncation and the `[UNK]` branches often.
        assert!(truncated > 5000 && unknown > 5000, "truncated {truncated}, unknown {unknown}");
    }

    #[test]
    fn other_bytes_fall_back_to_the_general_pipeline() {
        let tokenizer = WordPieceTokenizer::from_vocab("[UNK]\n[CLS]\n[SEP]\nab\n##c\n").unwrap();
        for text in ["AB", "ab\tc", "ab,c", "abé", "ab\u{a0}c", "ab\nabc"] {
            assert_eq!(tokenizer.encode_reporting_truncation(text).unwrap(), tokenizer.encode_general(text).unwrap());
        }
    }

    /// The shape of Hugging Face's `bert-base-uncased/tokenizer.json`: a
    /// template post-processor and special tokens in the added vocabulary.
    fn hub_style_tokenizer(vocab: &str, added: &[(&str, bool)]) -> Tokenizer {
        use tokenizers::processors::template::TemplateProcessing;
        let from_vocab = WordPieceTokenizer::from_vocab(vocab).unwrap();
        let mut tokenizer: Tokenizer = Tokenizer::from_bytes(from_vocab.json().as_bytes()).unwrap();
        let id = |t: &str| tokenizer.token_to_id(t).unwrap();
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .unwrap()
            .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
            .unwrap()
            .special_tokens(vec![("[CLS]", id("[CLS]")), ("[SEP]", id("[SEP]"))])
            .build()
            .unwrap();
        tokenizer.with_post_processor(Some(template));
        let added: Vec<_> = added.iter().map(|&(t, special)| tokenizers::AddedToken::from(t, special)).collect();
        tokenizer.add_tokens(added).unwrap();
        tokenizer
    }

    #[test]
    fn template_post_processor_is_read_from_the_tokenizer_json() {
        let mut rng = Rng(11);
        let long_words = random_long_words(&mut rng);
        let vocab = random_vocab(&mut rng, &long_words);
        let hub = hub_style_tokenizer(&vocab, &[("[CLS]", true), ("[SEP]", true), ("[UNK]", true)]);
        let tokenizer = WordPieceTokenizer::from_bytes(hub.to_string(false).unwrap().as_bytes()).unwrap();
        assert!(tokenizer.has_clean_text_path());
        for _ in 0..2000 {
            let text = random_clean_text(&mut rng, &long_words);
            assert_eq!(tokenizer.encode_reporting_truncation(&text).unwrap(), tokenizer.encode_general(&text).unwrap());
        }
    }

    #[test]
    fn pipelines_it_cannot_model_keep_the_general_path() {
        let vocab = "[UNK]\n[CLS]\n[SEP]\nab\n##c\n";
        // An added token made of letters is matched in the text before WordPiece.
        let hub = hub_style_tokenizer(vocab, &[("abc", false)]);
        assert!(CleanTextEncoder::for_tokenizer(&hub).is_none());
        let mut lowercase_only = hub_style_tokenizer(vocab, &[]);
        lowercase_only.with_normalizer(Some(tokenizers::normalizers::utils::Lowercase)).unwrap();
        assert!(CleanTextEncoder::for_tokenizer(&lowercase_only).is_none());
        let mut whitespace_split = hub_style_tokenizer(vocab, &[]);
        whitespace_split.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
        assert!(CleanTextEncoder::for_tokenizer(&whitespace_split).is_none());
    }
}
