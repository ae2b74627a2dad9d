//! The reference cleaning (DESIGN.md, "The reference semantics"), reproduced
//! in one pass per step instead of regular expressions:
//!
//! 1. `text.lower()`;
//! 2. `re.sub(r"\b(" + "|".join(stopwords) + r")\b\s*", " ", text)`;
//! 3. to 6. spacing punctuation, `[^A-Za-z0-9]+` -> `" "`, `" +"` -> `" "`,
//!    `strip()`: together, the ASCII alphanumeric words joined by one space;
//! 7. `re.sub(r"http\S+", "", text)`, with no second strip.

use serde::{Deserialize, Serialize};

use super::pyunicode::{is_space, is_word, push_lower};

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
    /// Heads, each with its stopwords in list order, by the head's length
    /// in bytes and first byte (`len * 256 + byte`): a run of word
    /// characters (most are not stopwords) is looked up without hashing it,
    /// among the one or two heads of its shape.
    by_shape: Vec<Vec<(String, Vec<String>)>>,
    /// No run of word characters longer than this can start a stopword.
    longest_head: usize,
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
        let longest_head = by_head.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
        let mut by_shape = vec![Vec::new(); (longest_head + 1) * 256];
        for (head, words) in by_head {
            // An empty head (a stopword starting with a non-word character)
            // can never match: a run is never empty.
            if let Some(&first) = head.as_bytes().first() {
                by_shape[head.len() * 256 + usize::from(first)].push((head, words));
            }
        }
        Self { by_shape, longest_head }
    }

    /// The length of the stopword that matches at the start of `rest`, whose
    /// first `run_len` bytes are a maximal run of word characters.
    #[inline]
    fn match_at(&self, rest: &str, run_len: usize) -> Option<usize> {
        if run_len > self.longest_head || run_len == 0 {
            return None;
        }
        let head = &rest.as_bytes()[..run_len];
        let shape = &self.by_shape[run_len * 256 + usize::from(head[0])];
        let (_, candidates) = shape.iter().find(|(h, _)| h.as_bytes() == head)?;
        candidates.iter().find_map(|word| {
            let ends_on_boundary = || !rest[word.len()..].chars().next().is_some_and(is_word);
            (rest.starts_with(word.as_str()) && ends_on_boundary()).then_some(word.len())
        })
    }
}

#[derive(Debug, Clone)]
pub struct TextCleaner {
    config: CleaningConfig,
    stopwords: StopwordIndex,
}

impl TextCleaner {
    pub fn new(config: CleaningConfig) -> Self {
        let stopwords = StopwordIndex::new(&config.stopwords);
        Self { config, stopwords }
    }

    pub fn config(&self) -> &CleaningConfig {
        &self.config
    }

    pub fn clean(&self, text: &str) -> String {
        if !self.config.enabled {
            return text.to_string();
        }
        if text.is_ascii() {
            return self.clean_ascii(text);
        }
        self.clean_unicode(text)
    }

    /// The same steps for ASCII text, where lower-casing keeps byte
    /// positions and every class is a byte test, fused into one scan: a run
    /// of word characters is either a stopword match (dropped with the
    /// whitespace after it) or its alphanumeric words are written out.
    fn clean_ascii(&self, text: &str) -> String {
        let lowered = text.to_ascii_lowercase();
        let bytes = lowered.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut words = 0usize;
        let mut at = 0;
        while at < bytes.len() {
            if !is_ascii_word(bytes[at]) {
                at += 1;
                continue;
            }
            // Whole runs are consumed below, so a run found here starts on a word boundary.
            let run_len = bytes[at..].iter().position(|&b| !is_ascii_word(b)).unwrap_or(bytes.len() - at);
            match self.stopwords.match_at(&lowered[at..], run_len) {
                Some(word_len) => {
                    at += word_len;
                    at += bytes[at..].iter().take_while(|&&b| is_ascii_space(b)).count();
                }
                None => {
                    let run = &lowered[at..at + run_len];
                    if run.as_bytes().contains(&b'_') {
                        for word in run.split('_').filter(|w| !w.is_empty()) {
                            push_word_without_link(word, words, &mut out);
                            words += 1;
                        }
                    } else {
                        // Most runs are one word: no splitter set up for them.
                        push_word_without_link(run, words, &mut out);
                        words += 1;
                    }
                    at += run_len;
                }
            }
        }
        out
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
    for (n, word) in words.enumerate() {
        push_word_without_link(word, n, out);
    }
}

/// Appends the `index`th alphanumeric word, after a space unless it is the
/// first, cut at a link (`http` and at least one more character).
#[inline]
fn push_word_without_link(word: &str, index: usize, out: &mut String) {
    if index > 0 {
        out.push(' ');
    }
    // A byte scan: words are short, and `str::find` sets up a searcher per call.
    match word.as_bytes().windows(4).position(|w| w == b"http") {
        Some(link_at) if link_at + 4 < word.len() => out.push_str(&word[..link_at]),
        _ => out.push_str(word),
    }
}

/// `is_word` for one ASCII byte: a table, as the scan asks it of every byte.
#[inline]
fn is_ascii_word(byte: u8) -> bool {
    const WORD: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            table[byte] = (byte as u8).is_ascii_alphanumeric() || byte == b'_' as usize;
            byte += 1;
        }
        table
    };
    WORD[usize::from(byte)]
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
            assert_eq!(cleaner.clean_ascii(&text), cleaner.clean_unicode(&text), "{text:?}");
        }
    }

    #[test]
    fn disabled_cleaning_passes_text_through() {
        let cleaner = TextCleaner::new(CleaningConfig { enabled: false, stopwords: vec![] });
        assert_eq!(cleaner.clean("The A"), "The A");
    }
}
