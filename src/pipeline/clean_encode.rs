//! Cleaning and clean-text WordPiece in one scan of a row's text, with a
//! per-thread memo of the runs of word characters already seen.
//!
//! The ASCII cleaning cuts a text into runs of word characters
//! ([`scan_ascii_runs`]); a run is dropped as a stopword or kept as a word,
//! and the tokenizer then takes each word on its own. So what a run turns
//! into, dropped or its kept bytes and token ids, is a function of the run's
//! bytes (except for a few stopword heads, where the text after the run
//! decides, and those are never remembered). Text repeats its words, so each
//! thread remembers what the runs it met turned into, and most of a row is
//! copied from that memo rather than looked up in the stopword, whole-word
//! and trie tables again. Tokenizing while cleaning also spares the second
//! pass over the cleaned text. The result is exactly cleaning, then
//! tokenizing the cleaned text: tests compare the two on random text.

use std::sync::atomic::{AtomicU64, Ordering};

use super::clean::{AsciiRun, CleanedWords, LoweredAscii, PADDING, TextCleaner, scan_ascii_runs, with_lowered_ascii};
use super::clean_text_wordpiece::CleanTextEncoder;
use super::preprocessor::EncodedText;
use super::tokenize::WordPieceTokenizer;
use crate::error::Result;

/// A new identity for a cleaner or an encoder: a memo entry names the two
/// that made it, so a thread's memo serves every preprocessor it runs.
pub(super) fn new_identity() -> u64 {
    // From 1: an empty memo entry's identities are 0.
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Cleans `text` and tokenizes the cleaned text: in one scan where
/// [`clean_and_encode`] applies, else one step after the other.
pub fn clean_and_tokenize(cleaner: &TextCleaner, tokenizer: &WordPieceTokenizer, text: &str) -> Result<EncodedText> {
    clean_and_tokenize_into(cleaner, tokenizer, text, |cleaned, ids, truncated| EncodedText {
        cleaned: cleaned.to_owned(),
        ids: ids.to_vec(),
        truncated,
    })
}

/// As [`clean_and_tokenize`], handing the cleaned text, the ids and whether
/// `max_length` cut any to `out`, which keeps them as it needs: a job packs
/// a row into one allocation straight from the scan's buffers.
pub fn clean_and_tokenize_into<R>(
    cleaner: &TextCleaner,
    tokenizer: &WordPieceTokenizer,
    text: &str,
    out: impl Fn(&str, &[u32], bool) -> R,
) -> Result<R> {
    let fused = tokenizer
        .clean_text_encoder()
        .and_then(|encoder| clean_and_encode(cleaner, encoder, text, tokenizer.max_length(), &out));
    if let Some(done) = fused {
        return Ok(done);
    }
    let cleaned = cleaner.clean(text);
    let (ids, truncated) = tokenizer.encode_reporting_truncation(&cleaned)?;
    Ok(out(&cleaned, &ids, truncated))
}

/// What `out` makes of the cleaned text of `text`, its ids (specials
/// included) and whether `max_length` cut any; `None` when this path does
/// not apply (cleaning off, text that is not ASCII but for characters that
/// act as spaces, no room for the specials) and the two steps must run one
/// after the other.
fn clean_and_encode<R>(
    cleaner: &TextCleaner,
    encoder: &CleanTextEncoder,
    text: &str,
    max_length: Option<usize>,
    out: &impl Fn(&str, &[u32], bool) -> R,
) -> Option<R> {
    if !cleaner.config().enabled {
        return None;
    }
    let budget = encoder.budget(max_length)?;
    encoder.on_this_cpu(|| {
        with_lowered_ascii(text, |lowered| {
            WORKSPACE.with_borrow_mut(|Workspace { memo, cleaned, ids }| {
                let owners = [cleaner.identity(), encoder.identity()];
                let mut memo = RunMemo::of_thread(memo, owners);
                let mut row = RowOut::new(encoder, cleaned, ids);
                scan_ascii_runs(lowered, |run| {
                    let keyed = run_key(lowered.padded_bytes(), run).map(|key| (key, memo.set_of(key)));
                    if let Some((key, set)) = keyed
                        && let Some(known) = memo.recall(key, set)
                    {
                        row.push_remembered(&known, lowered, run);
                        return run.end();
                    }
                    let ids_before = row.ids.len();
                    let mut kept = None;
                    let next = cleaner.clean_run(lowered, run, &mut |word| {
                        kept = Some(word.len());
                        row.push_word(word);
                    });
                    if let Some((key, set)) = keyed
                        && cleaner.run_decides_alone(&lowered.text()[run.start..run.end()])
                        && let Some(remembered) = Remembered::of(key, owners, kept, &row.ids[ids_before..])
                    {
                        memo.remember(set, remembered);
                    }
                    next
                });
                row.finish(budget, out)
            })
        })
        .flatten()
    })
}

/// This thread's memo, as one preprocessor (`owners`) sees it.
struct RunMemo<'m> {
    slots: &'m mut Vec<Remembered>,
    owners: [u64; 2],
    /// Preprocessors that share a thread spread over the memo rather than
    /// take each other's slots for the same words.
    salt: u64,
}

impl<'m> RunMemo<'m> {
    fn of_thread(slots: &'m mut Vec<Remembered>, owners: [u64; 2]) -> Self {
        if slots.is_empty() {
            slots.resize(MEMO_SLOTS, Remembered::EMPTY);
        }
        let salt = (owners[0] << 32 ^ owners[1]).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        Self { slots, owners, salt }
    }

    /// The first slot of the run's set.
    #[inline(always)]
    fn set_of(&self, key: [u64; 2]) -> usize {
        let mixed = key[0] ^ key[1].wrapping_mul(0xff51_afd7_ed55_8ccd) ^ self.salt;
        let sets = MEMO_SLOTS / MEMO_WAYS;
        (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - sets.trailing_zeros())) as usize * MEMO_WAYS
    }

    /// What the run `key` turned into, if remembered. A run found again
    /// moves a way forward: the text's frequent runs end up found first.
    #[inline(always)]
    fn recall(&mut self, key: [u64; 2], set: usize) -> Option<Remembered> {
        let ways = &mut self.slots[set..set + MEMO_WAYS];
        let way = ways.iter().position(|known| known.key == key && known.owners == self.owners)?;
        #[cfg(test)]
        tests::HITS.set(tests::HITS.get() + 1);
        if way > 0 {
            ways.swap(way, way - 1);
        }
        Some(ways[way.saturating_sub(1)])
    }

    /// Takes a free way of the set, else its last: the least found.
    fn remember(&mut self, set: usize, remembered: Remembered) {
        let ways = &mut self.slots[set..set + MEMO_WAYS];
        let way = ways.iter().position(|w| w.owners == [0; 2]).unwrap_or(MEMO_WAYS - 1);
        ways[way] = remembered;
    }
}

/// A row's cleaned text and ids as they are written.
struct RowOut<'a> {
    encoder: &'a CleanTextEncoder,
    cleaned: &'a mut String,
    ids: &'a mut Vec<u32>,
    words: CleanedWords,
    in_alphabet: bool,
}

impl<'a> RowOut<'a> {
    fn new(encoder: &'a CleanTextEncoder, cleaned: &'a mut String, ids: &'a mut Vec<u32>) -> Self {
        cleaned.clear();
        ids.clear();
        encoder.begin(ids);
        Self { encoder, cleaned, ids, words: CleanedWords::default(), in_alphabet: true }
    }

    /// A word the cleaning keeps, tokenized as it is written.
    #[inline(always)]
    fn push_word(&mut self, word: &str) {
        self.words.push(word, self.cleaned);
        if !word.is_empty() {
            self.in_alphabet &= self.encoder.push_word(word.as_bytes(), self.ids).is_some();
        }
    }

    /// What a remembered run turned into.
    #[inline(always)]
    fn push_remembered(&mut self, known: &Remembered, lowered: &LoweredAscii<'_>, run: AsciiRun) {
        if known.stopword {
            // The whitespace after it is no word's: the scan skips it.
            return;
        }
        // Copies of a fixed size, cut after: no call to copy memory.
        let padded = &lowered.padded_text()[run.start..run.start + MEMO_RUN_BYTES];
        self.words.push_cut(padded, usize::from(known.kept), self.cleaned);
        let at = self.ids.len();
        self.ids.extend_from_slice(&known.ids);
        self.ids.truncate(at + usize::from(known.pieces));
    }

    /// What `out` makes of the row's text and ids, specials added and cut
    /// to `budget`.
    fn finish<R>(self, budget: usize, out: &impl Fn(&str, &[u32], bool) -> R) -> Option<R> {
        // Cleaned words are `[a-z0-9]` by construction: checked, not assumed.
        if !self.in_alphabet {
            return None;
        }
        let truncated = self.encoder.finish(self.ids, budget);
        Some(out(self.cleaned, self.ids, truncated))
    }
}

/// Runs remembered per thread: 512 KiB, sets of four ways (adjacent cache
/// lines) chosen by the run's hash. A new run takes a free way or the set's
/// last, so memory stays bounded whatever the text and the memo follows a
/// text's changing words. On the course's text, four ways keep 99% of runs
/// against 92% for one slot per run (a simulation over its runs).
const MEMO_SLOTS: usize = 1 << 13;
const MEMO_WAYS: usize = 4;
/// The longest run remembered: a key is two `u64`s of its bytes.
const MEMO_RUN_BYTES: usize = 16;
/// The most pieces remembered for one run; a word of more takes the tables.
const MEMO_IDS: usize = 7;

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = const {
        std::cell::RefCell::new(Workspace { memo: Vec::new(), cleaned: String::new(), ids: Vec::new() })
    };
}

/// A thread's memo, and the row being written, reused from row to row.
struct Workspace {
    memo: Vec<Remembered>,
    cleaned: String,
    ids: Vec<u32>,
}

/// What a run turned into, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Remembered {
    /// The run's bytes, zero-padded: no run holds a zero byte.
    key: [u64; 2],
    /// The cleaner's and the encoder's identities.
    owners: [u64; 2],
    /// How many of the run's bytes the cleaned text keeps (a link cuts it).
    kept: u8,
    stopword: bool,
    pieces: u8,
    ids: [u32; MEMO_IDS],
}

const _: () = assert!(std::mem::size_of::<Remembered>() == 64);
const _: () = assert!(MEMO_RUN_BYTES <= PADDING);

impl Remembered {
    const EMPTY: Self = Self { key: [0; 2], owners: [0; 2], kept: 0, stopword: false, pieces: 0, ids: [0; MEMO_IDS] };

    /// A run that kept `kept` bytes (`None`: a stopword) as `pieces`;
    /// `None` if they are too many to remember.
    fn of(key: [u64; 2], owners: [u64; 2], kept: Option<usize>, pieces: &[u32]) -> Option<Self> {
        if pieces.len() > MEMO_IDS {
            return None;
        }
        let mut ids = [0; MEMO_IDS];
        ids[..pieces.len()].copy_from_slice(pieces);
        let pieces = pieces.len() as u8;
        Some(Self { key, owners, kept: kept.unwrap_or(0) as u8, stopword: kept.is_none(), pieces, ids })
    }
}

/// The memo key of a run, `None` for one never remembered: longer than a
/// key, or holding underscores (it is then several words, or none).
#[inline(always)]
fn run_key(padded: &[u8], run: AsciiRun) -> Option<[u64; 2]> {
    if run.len > MEMO_RUN_BYTES || run.underscores {
        return None;
    }
    // The text is followed by `PADDING` zeros, so both words can be read.
    let word = |at: usize| u64::from_le_bytes(padded[at..at + 8].try_into().expect("eight bytes"));
    let (low, high) = (word(run.start), word(run.start + 8));
    let keep = |bytes: usize| u64::MAX >> (64 - 8 * bytes);
    Some(if run.len <= 8 { [low & keep(run.len), 0] } else { [low, high & keep(run.len - 8)] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::clean::CleaningConfig;
    use crate::pipeline::processed_row::RowContent;
    use crate::pipeline::test_rng::Rng;
    use crate::pipeline::tokenize::WordPieceTokenizer;

    thread_local! {
        pub(super) static HITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    const LETTERS: &[u8] = b"aehinostd0";

    fn random_word(rng: &mut Rng, len: usize) -> String {
        (0..len).map(|_| LETTERS[rng.below(LETTERS.len())] as char).collect()
    }

    fn random_vocab(rng: &mut Rng) -> String {
        let mut lines: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).into();
        for _ in 0..400 {
            let len = 1 + rng.below(5);
            let piece = random_word(rng, len);
            lines.push(if rng.one_in(2) { format!("##{piece}") } else { piece });
        }
        lines.join("\n") + "\n"
    }

    /// Text where every rule of the cleaning meets the tokenizer: stopwords
    /// (with apostrophes too), capitals, underscores, links, punctuation,
    /// Python-only whitespace, runs longer than a memo key, many pieces.
    fn random_text(rng: &mut Rng, pool: &[String]) -> String {
        const PIECES: &[&str] = &[
            "the", "The", "don", "'t", "don't", "Don't", "you", "'re", "a", "I", "it's", "http", "https", "://x.io",
            "_", "__a", "a_b", " ", "  ", "\t", "\x1c", ",", ".", "-", "'", "DATA", "s", "t", "’", "🤗", "é",
        ];
        let mut text = String::new();
        for _ in 0..rng.below(16) {
            match rng.below(4) {
                0 => text.push_str(PIECES[rng.below(PIECES.len())]),
                1 | 2 => text.push_str(&pool[rng.below(pool.len())]),
                _ => {
                    let len = 1 + if rng.one_in(8) { rng.below(30) } else { rng.below(8) };
                    let word = random_word(rng, len);
                    text.push_str(&if rng.one_in(5) { word.to_uppercase() } else { word });
                }
            }
            if !rng.one_in(4) {
                text.push(' ');
            }
        }
        text
    }

    #[test]
    fn fused_equals_cleaning_then_tokenizing() {
        let mut rng = Rng(23);
        // Two cleaners and two tokenizers on one thread: a run remembered
        // for one pair must never answer for another.
        let cleaners = [
            TextCleaner::new(CleaningConfig::default()),
            TextCleaner::new(CleaningConfig {
                enabled: true,
                stopwords: vec!["data".into(), "ah".into(), "at's".into()],
            }),
        ];
        let (mut runs_seen, mut cut, mut fallbacks) = (0, 0, 0);
        HITS.set(0);
        for round in 0..10 {
            let vocabs = [random_vocab(&mut rng), random_vocab(&mut rng)];
            for max_length in [None, Some(3), Some(9)] {
                let tokenizers = vocabs
                    .each_ref()
                    .map(|v| WordPieceTokenizer::from_vocab(v).unwrap().with_max_length(max_length).unwrap());
                // Words that come back, as in real text.
                let pool: Vec<String> = (0..50)
                    .map(|_| {
                        let len = 1 + rng.below(12);
                        random_word(&mut rng, len)
                    })
                    .collect();
                for case in 0..300 {
                    let text = random_text(&mut rng, &pool);
                    for cleaner in &cleaners {
                        for tokenizer in &tokenizers {
                            let encoder = tokenizer.clean_text_encoder().expect("a clean-text path");
                            let cleaned = cleaner.clean(&text);
                            let (ids, truncated) = tokenizer.encode_general(&cleaned).unwrap();
                            let expected = (cleaned.clone(), ids, truncated);
                            let context = format!("round {round}, max_length {max_length:?}, case {case}: {text:?}");
                            match clean_and_encode(cleaner, encoder, &text, max_length, &owned) {
                                Some(fused) => assert_eq!(fused, expected, "{context}"),
                                // A letter outside ASCII takes the Unicode steps.
                                None => {
                                    assert!(text.contains('é'), "{context}");
                                    fallbacks += 1;
                                }
                            }
                            let either = clean_and_tokenize(cleaner, tokenizer, &text).unwrap();
                            assert_eq!((either.cleaned, either.ids, either.truncated), expected, "{context}");
                            // As a job keeps it.
                            let row = clean_and_tokenize_into(cleaner, tokenizer, &text, |cleaned, ids, truncated| {
                                (RowContent::new(Some("7"), cleaned, ids), truncated)
                            })
                            .unwrap();
                            let kept = (row.0.text().to_owned(), row.0.token_ids().iter().collect(), row.1);
                            assert_eq!(kept, expected, "{context}");
                            runs_seen += cleaned.split(' ').count();
                            cut += usize::from(truncated);
                        }
                    }
                }
            }
        }
        // Many runs come from the memo, and truncation is reached.
        assert!(HITS.get() > runs_seen / 4, "{} hits of {runs_seen} words", HITS.get());
        assert!(cut > 1000, "{cut} truncated");
        assert!(fallbacks > 1000 && fallbacks < 36_000 / 2, "{fallbacks} texts not in one scan");
    }

    #[test]
    fn other_text_is_left_to_the_two_steps() {
        let tokenizer = WordPieceTokenizer::from_vocab("[UNK]\n[CLS]\n[SEP]\nab\n##c\n").unwrap();
        let encoder = tokenizer.clean_text_encoder().unwrap();
        let cleaner = TextCleaner::new(CleaningConfig::default());
        assert_eq!(clean_and_encode(&cleaner, encoder, "Caf\u{e9} ab", None, &owned), None);
        let off = TextCleaner::new(CleaningConfig { enabled: false, stopwords: vec![] });
        assert_eq!(clean_and_encode(&off, encoder, "ab", None, &owned), None);
        // No room for `[CLS]` and `[SEP]`.
        assert_eq!(clean_and_encode(&cleaner, encoder, "ab", Some(2), &owned), None);
        let abc = clean_and_encode(&cleaner, encoder, "The ABC", None, &owned);
        assert_eq!(abc, Some(("abc".into(), vec![1, 3, 4, 2], false)));
    }

    /// What the one scan hands out, as owned values to compare.
    fn owned(cleaned: &str, ids: &[u32], truncated: bool) -> (String, Vec<u32>, bool) {
        (cleaned.to_owned(), ids.to_vec(), truncated)
    }
}
