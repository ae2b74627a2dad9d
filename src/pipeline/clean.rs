//! The reference cleaning (DESIGN.md, "The reference semantics"), reproduced
//! in one pass per step instead of regular expressions:
//!
//! 1. `text.lower()`;
//! 2. `re.sub(r"\b(" + "|".join(stopwords) + r")\b\s*", " ", text)`;
//! 3. to 6. spacing punctuation, `[^A-Za-z0-9]+` -> `" "`, `" +"` -> `" "`,
//!    `strip()`: together, the ASCII alphanumeric words joined by one space;
//! 7. `re.sub(r"http\S+", "", text)`, with no second strip.

use serde::{Deserialize, Serialize};

use super::pyunicode::{is_space, is_word, lowers_to_itself, push_lower};

/// NLTK's English stopword list, in the order the reference alternates it.
pub const ENGLISH_STOPWORDS: &str = include_str!("stopwords-en.txt");

pub fn default_stopwords() -> Vec<String> {
    ENGLISH_STOPWORDS.lines().map(str::trim).filter(|w| !w.is_empty()).map(String::from).collect()
}

/// What the cleaner was configured with; kept in `preprocessor.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleaningConfig {
    /// `false` passes the joined text to the tokenizer unchanged.
    pub enabled: bool,
    pub stopwords: Vec<String>,
}

impl Default for CleaningConfig {
    fn default() -> Self {
        Self { enabled: true, stopwords: default_stopwords() }
    }
}

/// A stopword the alternation can try at the start of a word run.
///
/// Every reference stopword starts and ends with a word character and may hold
/// an apostrophe. A match must end on a word boundary, so it either covers
/// the whole run of word characters (`"the"`), or the run followed by the
/// apostrophe part (`"don"` + `"'t"`). Candidates are therefore looked up by
/// the part before the first non-word character, in list order, which keeps
/// the alternation's leftmost-first choice.
#[derive(Debug, Clone)]
struct StopwordIndex {
    /// The heads of each shape, by the head's length in bytes and first byte
    /// (`len * 256 + byte`), as a range of `heads`: a run of word characters
    /// (most are not stopwords) is looked up without hashing it, and mostly
    /// found to have no head of its shape at all.
    by_shape: Vec<(u32, u32)>,
    heads: Vec<Head>,
    /// No run of word characters longer than this can start a stopword.
    longest_head: usize,
}

#[derive(Debug, Clone)]
struct Head {
    /// The head's first bytes as one number: a shape holds up to a dozen
    /// heads ("this", "that", "then", ...), compared in registers rather
    /// than by a call to compare bytes each.
    prefix: u128,
    head: String,
    /// The stopwords with this head, in list order.
    words: Vec<String>,
}

impl StopwordIndex {
    fn new(stopwords: &[String]) -> Self {
        let mut by_head: Vec<(String, Vec<String>)> = Vec::new();
        for word in stopwords {
            let head_end = word.find(|c: char| !is_word(c)).unwrap_or(word.len());
            let head = &word[..head_end];
            match by_head.iter_mut().find(|(h, _)| h == head) {
                Some((_, words)) => words.push(word.clone()),
                None => by_head.push((head.to_string(), vec![word.clone()])),
            }
        }
        // An empty head (a stopword starting with a non-word character) can
        // never match: a run is never empty.
        by_head.retain(|(head, _)| !head.is_empty());
        let shape = |head: &str| head.len() * 256 + usize::from(head.as_bytes()[0]);
        by_head.sort_by_key(|(head, _)| shape(head));
        let longest_head = by_head.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
        let mut by_shape = vec![(0u32, 0u32); (longest_head + 1) * 256];
        for (at, (head, _)) in by_head.iter().enumerate() {
            let range = &mut by_shape[shape(head)];
            if range.0 == range.1 {
                *range = (at as u32, at as u32);
            }
            range.1 += 1;
        }
        let heads = by_head
            .into_iter()
            .map(|(head, words)| Head { prefix: packed_prefix(head.as_bytes(), head.len()), head, words })
            .collect();
        Self { by_shape, heads, longest_head }
    }

    /// The head that a run of word characters, the first `run_len` bytes
    /// of `rest`, is, if any.
    #[inline]
    fn head_of(&self, rest: &[u8], run_len: usize) -> Option<&Head> {
        if run_len > self.longest_head || run_len == 0 {
            return None;
        }
        let (from, to) = self.by_shape[run_len * 256 + usize::from(rest[0])];
        if from == to {
            return None;
        }
        let prefix = packed_prefix(rest, run_len);
        let run = &rest[..run_len];
        self.heads[from as usize..to as usize]
            .iter()
            .find(|h| h.prefix == prefix && (run_len <= PREFIX_BYTES || h.head.as_bytes() == run))
    }

    /// The length of the stopword that matches at the start of `rest`, whose
    /// first `run_len` bytes are a maximal run of word characters.
    #[inline]
    fn match_at(&self, rest: &str, run_len: usize) -> Option<usize> {
        let Head { words, .. } = self.head_of(rest.as_bytes(), run_len)?;
        words.iter().find_map(|word| {
            if word.len() == run_len {
                // The head itself: the run is maximal, so it ends on a boundary.
                return Some(run_len);
            }
            let ends_on_boundary = || !rest[word.len()..].chars().next().is_some_and(is_word);
            (rest.starts_with(word.as_str()) && ends_on_boundary()).then_some(word.len())
        })
    }

    /// Whether [`Self::match_at`] on the maximal run `run` looks at nothing
    /// after it: the run is no head, or its head's first word is the head.
    fn decided_by_run(&self, run: &str) -> bool {
        self.head_of(run.as_bytes(), run.len()).is_none_or(|head| head.words[0].len() == run.len())
    }
}

const PREFIX_BYTES: usize = 16;

/// The first `len` bytes of `bytes` (at most 16), little-endian and
/// zero-padded; one unaligned load when 16 bytes are there to read.
#[inline]
fn packed_prefix(bytes: &[u8], len: usize) -> u128 {
    let len = len.min(PREFIX_BYTES);
    let word = match bytes.first_chunk::<PREFIX_BYTES>() {
        Some(chunk) => u128::from_le_bytes(*chunk),
        None => {
            let mut padded = [0u8; PREFIX_BYTES];
            padded[..len].copy_from_slice(&bytes[..len]);
            u128::from_le_bytes(padded)
        }
    };
    if len == PREFIX_BYTES { word } else { word & ((1u128 << (8 * len)) - 1) }
}

#[derive(Debug, Clone)]
pub struct TextCleaner {
    config: CleaningConfig,
    stopwords: StopwordIndex,
    identity: u64,
}

impl TextCleaner {
    pub fn new(config: CleaningConfig) -> Self {
        let stopwords = StopwordIndex::new(&config.stopwords);
        Self { config, stopwords, identity: super::clean_encode::new_identity() }
    }

    pub fn config(&self) -> &CleaningConfig {
        &self.config
    }

    /// Which cleaner this is, for memos of its answers: clones share it,
    /// no two cleaners built in one process do.
    pub(super) fn identity(&self) -> u64 {
        self.identity
    }

    pub fn clean(&self, text: &str) -> String {
        if !self.config.enabled {
            return text.to_string();
        }
        self.clean_mostly_ascii(text).unwrap_or_else(|| self.clean_unicode(text))
    }

    /// The same steps for text that is ASCII but for characters that act as
    /// spaces ([`with_lowered_ascii`]), where every class is a byte test,
    /// fused into one scan: a run of word characters is either a stopword
    /// match (dropped with the whitespace after it) or its alphanumeric
    /// words are written out. `None` for any other text.
    fn clean_mostly_ascii(&self, text: &str) -> Option<String> {
        with_lowered_ascii(text, |lowered| {
            let mut out = String::with_capacity(text.len());
            let mut words = CleanedWords::default();
            scan_ascii_runs(lowered, |run| self.clean_run(lowered, run, &mut |word| words.push(word, &mut out)));
            out
        })
    }

    /// What cleaning makes of one run of the ASCII scan: a stopword match is
    /// skipped with the whitespace after it, else the run's alphanumeric
    /// words, each cut at a link, go to `word` in order. Returns where the
    /// scan goes on.
    #[inline]
    pub(super) fn clean_run(&self, lowered: &LoweredAscii<'_>, run: AsciiRun, word: &mut impl FnMut(&str)) -> usize {
        let text = lowered.text();
        match self.stopwords.match_at(&text[run.start..], run.len) {
            Some(word_len) => lowered.after_spaces(run.start + word_len),
            None => {
                let run_text = &text[run.start..run.end()];
                if run.underscores {
                    run_text.split('_').filter(|w| !w.is_empty()).for_each(|w| word(without_link(w)));
                } else {
                    // Most runs are one word: no splitter set up for them.
                    word(without_link(run_text));
                }
                run.end()
            }
        }
    }

    /// Whether [`Self::clean_run`] on a run without underscores depends on
    /// nothing but the run's bytes: true unless a stopword that starts with
    /// the run and goes on past it (`don't` for `don`) comes first in the
    /// list, when the text after the run decides.
    pub(super) fn run_decides_alone(&self, run: &str) -> bool {
        self.stopwords.decided_by_run(run)
    }

    /// Any text: the steps one after the other, with Python's Unicode classes.
    fn clean_unicode(&self, text: &str) -> String {
        let mut lowered = String::with_capacity(text.len());
        push_lower(text, &mut lowered);
        let without_stopwords = self.remove_stopwords(&lowered);
        let mut out = String::with_capacity(without_stopwords.len());
        push_words_without_links(&without_stopwords, &mut out);
        out
    }

    /// Step 2. Matches are searched in the lowered text; word boundaries look
    /// at the original neighbours, as `re.sub` does.
    fn remove_stopwords(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut prev_is_word = false;
        while let Some(c) = text[at..].chars().next() {
            let c_is_word = is_word(c);
            if !c_is_word || prev_is_word {
                out.push(c);
                at += c.len_utf8();
                prev_is_word = c_is_word;
                continue;
            }
            // At the start of a run of word characters: the only place `\b` lets a stopword begin.
            let rest = &text[at..];
            let run_len = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
            match self.stopwords.match_at(rest, run_len) {
                Some(word_len) => {
                    let after_word = &rest[word_len..];
                    let trailing_space: usize =
                        after_word.chars().take_while(|&c| is_space(c)).map(char::len_utf8).sum();
                    out.push(' ');
                    at += word_len + trailing_space;
                    // Every stopword ends with a word character.
                    prev_is_word = trailing_space == 0;
                }
                None => {
                    out.push_str(&rest[..run_len]);
                    at += run_len;
                    prev_is_word = true;
                }
            }
        }
        out
    }
}

/// Steps 3 to 7: the ASCII alphanumeric words joined by one space, then
/// `http\S+` deleted. Inside a word, the first `http` followed by anything
/// deletes the rest of that word; the separators stay, so a deleted word
/// leaves a double (or leading, or trailing) space, as the reference does.
fn push_words_without_links(text: &str, out: &mut String) {
    let words = text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    let mut joined = CleanedWords::default();
    words.for_each(|word| joined.push(without_link(word), out));
}

/// An alphanumeric word cut at a link (`http` and at least one more
/// character), possibly to nothing.
#[inline]
fn without_link(word: &str) -> &str {
    // A byte scan: words are short, and `str::find` sets up a searcher per call.
    match word.as_bytes().windows(4).position(|w| w == b"http") {
        Some(link_at) if link_at + 4 < word.len() => &word[..link_at],
        _ => word,
    }
}

/// Joins cleaned words with one space each, as steps 3 to 6 leave them.
#[derive(Default)]
pub(super) struct CleanedWords {
    count: usize,
}

impl CleanedWords {
    #[inline]
    pub(super) fn push(&mut self, word: &str, out: &mut String) {
        self.separate(out);
        out.push_str(word);
    }

    /// [`Self::push`] of `word[..len]`.
    #[inline]
    pub(super) fn push_cut(&mut self, word: &str, len: usize, out: &mut String) {
        self.separate(out);
        let at = out.len();
        out.push_str(word);
        out.truncate(at + len);
    }

    /// The space before every word but the first.
    #[inline]
    fn separate(&mut self, out: &mut String) {
        if self.count > 0 {
            out.push(' ');
        }
        self.count += 1;
    }
}

/// Bytes the ASCII scan classifies at once, as one `u64`.
const BLOCK: usize = 8;
const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

#[inline]
fn block_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + BLOCK].try_into().expect("a block's worth of bytes"))
}

/// The index of the byte whose high bit is the lowest set in `mask`.
#[inline]
fn first_byte(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// Zero bytes after a lowered text: the scan reads a block at a time, and
/// the fused encoder a run's first 16 bytes, past the end; zeros are no
/// word's bytes.
pub(super) const PADDING: usize = 16;

/// An ASCII text lower-cased (which keeps byte positions), followed by
/// [`PADDING`] zeros.
pub(super) struct LoweredAscii<'a> {
    padded: &'a str,
    len: usize,
}

impl LoweredAscii<'_> {
    pub(super) fn text(&self) -> &str {
        &self.padded[..self.len]
    }

    pub(super) fn padded_bytes(&self) -> &[u8] {
        self.padded.as_bytes()
    }

    pub(super) fn padded_text(&self) -> &str {
        self.padded
    }

    /// `at` moved past the whitespace there, as `\s*` after a stopword.
    pub(super) fn after_spaces(&self, at: usize) -> usize {
        at + self.text().as_bytes()[at..].iter().take_while(|&&b| is_ascii_space(b)).count()
    }
}

/// Runs `f` on `text` lower-cased in this thread's buffer (the lowered
/// text is only looked at: one buffer a thread instead of an allocation a
/// row), with each non-ASCII character written as an ASCII space; `None`
/// if one of them does not act as a space in cleaning (see
/// [`acts_as_a_space`]).
pub(super) fn with_lowered_ascii<R>(text: &str, f: impl FnOnce(&LoweredAscii<'_>) -> R) -> Option<R> {
    thread_local! {
        static LOWERED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    LOWERED.with_borrow_mut(|buffer| {
        buffer.clear();
        if text.is_ascii() {
            buffer.push_str(text);
            buffer.make_ascii_lowercase();
        } else {
            for c in text.chars() {
                match c {
                    _ if c.is_ascii() => buffer.push(c.to_ascii_lowercase()),
                    _ if acts_as_a_space(c) => buffer.push(' '),
                    _ => return None,
                }
            }
        }
        let len = buffer.len();
        buffer.extend(std::iter::repeat_n('\0', PADDING));
        Some(f(&LoweredAscii { padded: buffer, len }))
    })
}

/// Whether cleaning treats `c` (not ASCII) exactly as it treats a space:
/// it is no word character and lower-casing keeps it. Then no stopword
/// match can hold it, it ends words as a space does (`\b`), and steps 3 to
/// 6 turn it, with any whitespace around it, into the one space between two
/// words. Whether `\s*` after a stopword takes it does not matter: it is
/// replaced by a space either way. Curly quotes, dashes and emoji act so;
/// letters such as `é` do not (they are word characters).
fn acts_as_a_space(c: char) -> bool {
    !is_word(c) && lowers_to_itself(c)
}

/// A maximal run of word characters (`[0-9a-z_]`) of a lowered text.
#[derive(Debug, Clone, Copy)]
pub(super) struct AsciiRun {
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) underscores: bool,
}

impl AsciiRun {
    pub(super) fn end(&self) -> usize {
        self.start + self.len
    }
}

/// Hands each maximal run of word characters of `lowered` to `on_run`,
/// which answers where the scan goes on (the run's end, or past it).
#[inline(always)]
pub(super) fn scan_ascii_runs(lowered: &LoweredAscii<'_>, mut on_run: impl FnMut(AsciiRun) -> usize) {
    let bytes = lowered.padded_bytes();
    let mut at = 0;
    while at < lowered.len {
        let word = WordBytes::of(block_at(bytes, at)).word;
        if word == 0 {
            at += BLOCK;
            continue;
        }
        at += first_byte(word);
        // Whole runs are consumed below, so a run found here starts on a
        // word boundary. Its end is found a block at a time: a branch a
        // byte would be mispredicted at nearly every run's end.
        let start = at;
        let mut underscores = false;
        loop {
            let block = WordBytes::of(block_at(bytes, at));
            let other = !block.word & HIGH_BITS;
            if other == 0 {
                underscores |= block.underscore != 0;
                at += BLOCK;
                continue;
            }
            let before_end = (other & other.wrapping_neg()) - 1;
            underscores |= block.underscore & before_end != 0;
            at += first_byte(other);
            break;
        }
        at = on_run(AsciiRun { start, len: at - start, underscores });
    }
}

/// `is_word` of eight lower-cased ASCII bytes at once: the high bit of each
/// byte that is a word character (`[0-9a-z_]`), and of each underscore.
struct WordBytes {
    word: u64,
    underscore: u64,
}

impl WordBytes {
    #[inline]
    fn of(block: u64) -> Self {
        // For a byte below 0x80, adding 0x80 - n sets its high bit exactly
        // when it is at least n, and never carries into the next byte.
        let at_least = |n: u8| block.wrapping_add(LOW_BITS * u64::from(0x80 - n));
        let within = |low: u8, high: u8| at_least(low) & !at_least(high + 1);
        let underscore = within(b'_', b'_') & HIGH_BITS;
        let word = (within(b'0', b'9') | within(b'a', b'z')) & HIGH_BITS | underscore;
        Self { word, underscore }
    }
}

/// `is_space` for one ASCII byte.
#[inline]
fn is_ascii_space(byte: u8) -> bool {
    matches!(byte, b'\t'..=b'\r' | 0x1c..=0x1f | b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str) -> String {
        TextCleaner::new(CleaningConfig::default()).clean(text)
    }

    #[test]
    fn stopword_list_is_nltk_english() {
        let words = default_stopwords();
        assert_eq!(words.len(), 179);
        assert_eq!(&words[..3], ["i", "me", "my"]);
    }

    #[test]
    fn course_example() {
        assert_eq!(
            clean("Comparison between YOLO and RCNN on real world videos Bringing theory to experiment is cool."),
            "comparison yolo rcnn real world videos bringing theory experiment cool"
        );
    }

    #[test]
    fn apostrophes_follow_leftmost_first_alternation() {
        // `you` is tried before `you're`; then `re` is a stopword of its own.
        assert_eq!(clean("you're great"), "great");
        assert_eq!(clean("it's fine"), "fine");
    }

    #[test]
    fn combining_mark_ends_a_python_word() {
        // U+0301 is not alphanumeric in Python, so `the` is a whole word.
        assert_eq!(clean("the\u{301}ory"), "ory");
        // A superscript two is alphanumeric, so `the²` is not a stopword.
        assert_eq!(clean("the² x"), "the x");
    }

    #[test]
    fn links_are_removed_late_leaving_spaces() {
        assert_eq!(clean("see https://example.com now"), "see  example com");
        assert_eq!(clean("http"), "http");
        assert_eq!(clean("xhttpy z"), "x z");
        assert_eq!(clean("httpx z"), " z");
        assert_eq!(clean("z httpx"), "z ");
    }

    #[test]
    fn ascii_fast_path_matches_the_unicode_steps() {
        // Pieces that meet at every interesting boundary: stopwords with and
        // without apostrophes, underscores, Python-only whitespace, links.
        const PIECES: &[&str] = &[
            "the", "The", "don", "'t", "t", "you", "'re", "re", "it", "'s", "a", "I", "http", "https", "://x", "x",
            "Y2", "_", "__a", " ", "  ", "\t", "\x1c", "\x1f", "\x0b", ",", ".", "-", "'", "me", "ab", "www",
        ];
        let cleaner = TextCleaner::new(CleaningConfig::default());
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for case in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(case % 12) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
            }
            assert_eq!(cleaner.clean_mostly_ascii(&text), Some(cleaner.clean_unicode(&text)), "{text:?}");
        }
    }

    #[test]
    fn characters_that_act_as_spaces_keep_the_fast_path_exact() {
        // Non-ASCII pieces of both kinds: ones the fast path writes as a
        // space (quotes, dashes, emoji, Unicode spaces, a combining mark)
        // and ones it must leave to the Unicode steps (letters, a digit, a
        // circled letter and a Kelvin sign that lower-case, final sigma).
        const PIECES: &[&str] = &[
            "the", "The", "don", "'t", "’t", "t", "it", "“", "”", "—", "🤗", "\u{200a}", "\u{a0}", "\u{301}", "http",
            "s://x", "x", "_", " ", ",", "é", "²", "Ⓐ", "K", "Σ", "İ", "ab", "me",
        ];
        let cleaner = TextCleaner::new(CleaningConfig::default());
        let (mut fast, mut slow) = (0, 0);
        let mut rng = crate::pipeline::test_rng::Rng(41);
        for case in 0..20_000 {
            let text: String = (0..case % 12).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            let unicode = cleaner.clean_unicode(&text);
            match cleaner.clean_mostly_ascii(&text) {
                Some(cleaned) => {
                    assert_eq!(cleaned, unicode, "{text:?}");
                    fast += usize::from(!text.is_ascii());
                }
                None => slow += 1,
            }
            assert_eq!(cleaner.clean(&text), unicode, "{text:?}");
        }
        assert!(fast > 3000 && slow > 3000, "{fast} non-ASCII texts on the fast path, {slow} on the Unicode steps");
    }

    #[test]
    fn disabled_cleaning_passes_text_through() {
        let cleaner = TextCleaner::new(CleaningConfig { enabled: false, stopwords: vec![] });
        assert_eq!(cleaner.clean("The A"), "The A");
    }
}
