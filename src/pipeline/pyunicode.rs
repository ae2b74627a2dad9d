//! Python 3's character semantics, as the reference cleaning uses them:
//! `re` word characters and `\s` for `str` patterns, and `str.lower` with its
//! final-sigma rule. The tables are generated from CPython itself
//! (`tools/gen_unicode_tables.py`), so they follow that Python's Unicode
//! version rather than Rust's, which differ on thousands of code points.

use super::unicode_tables::{CASE_IGNORABLE, CASED, LOWER, SPACE, WORD};

pub use super::unicode_tables::UNICODE_VERSION;

const CAPITAL_SIGMA: char = '\u{03A3}';
const SMALL_SIGMA: char = '\u{03C3}';
const FINAL_SIGMA: char = '\u{03C2}';

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let cp = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// A `re` word character: `str.isalnum()` or `_`.
#[inline]
pub fn is_word(c: char) -> bool {
    if c.is_ascii() { c.is_ascii_alphanumeric() || c == '_' } else { in_ranges(WORD, c) }
}

/// `re`'s `\s` for `str` patterns, i.e. `str.isspace()`. In ASCII that is
/// also U+001C..U+001F, which Rust's `is_ascii_whitespace` leaves out.
#[inline]
pub fn is_space(c: char) -> bool {
    if c.is_ascii() { matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ') } else { in_ranges(SPACE, c) }
}

fn is_case_ignorable(c: char) -> bool {
    in_ranges(CASE_IGNORABLE, c)
}

fn is_cased(c: char) -> bool {
    in_ranges(CASED, c)
}

/// Appends Python's `text.lower()` to `out`.
pub fn push_lower(text: &str, out: &mut String) {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_lowercase() as char));
        return;
    }
    for (i, c) in text.char_indices() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c == CAPITAL_SIGMA {
            out.push(if is_final_sigma(text, i) { FINAL_SIGMA } else { SMALL_SIGMA });
        } else {
            match table_lowering(c) {
                Some(lowered) => out.extend(lowered.iter().copied().filter(|&l| l != '\0')),
                None => out.push(c),
            }
        }
    }
}

/// CPython's rule: the nearest non-case-ignorable character before the sigma
/// is cased, and the nearest one after it (if any) is not.
fn is_final_sigma(text: &str, sigma_at: usize) -> bool {
    let before = text[..sigma_at].chars().rev().find(|&c| !is_case_ignorable(c));
    if !before.is_some_and(is_cased) {
        return false;
    }
    let after_start = sigma_at + CAPITAL_SIGMA.len_utf8();
    let after = text[after_start..].chars().find(|&c| !is_case_ignorable(c));
    !after.is_some_and(is_cased)
}

/// What the lower-case table maps `c` (not ASCII, not capital sigma) to,
/// padded with NULs; `None` when it maps `c` to itself.
fn table_lowering(c: char) -> Option<&'static [char; 3]> {
    LOWER.binary_search_by_key(&(c as u32), |&(cp, _)| cp).ok().map(|at| &LOWER[at].1)
}

/// Whether `str.lower()` maps `c` to itself, wherever it stands.
pub fn lowers_to_itself(c: char) -> bool {
    if c.is_ascii() { !c.is_ascii_uppercase() } else { c != CAPITAL_SIGMA && table_lowering(c).is_none() }
}

/// Python's `text.lower()`.
pub fn lower(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_lower(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_that_lower_to_themselves() {
        for c in ['a', '1', ' ', '\u{2019}', '\u{1f917}', '\u{3c3}', '\u{e9}'] {
            assert!(lowers_to_itself(c), "{c:?}");
        }
        for c in ['A', '\u{3a3}', '\u{c9}', '\u{130}', '\u{212a}', '\u{24b6}'] {
            assert!(!lowers_to_itself(c), "{c:?}");
        }
    }

    #[test]
    fn python_word_characters_exclude_combining_marks_but_include_superscripts() {
        assert!(is_word('é'));
        assert!(is_word('²'));
        assert!(is_word('_'));
        assert!(!is_word('\u{0301}'));
        assert!(!is_word('\''));
    }

    #[test]
    fn python_whitespace_includes_ascii_separators() {
        for c in ['\t', '\n', '\x0b', '\x0c', '\r', '\x1c', '\x1f', ' ', '\u{85}', '\u{a0}', '\u{3000}'] {
            assert!(is_space(c), "{c:?}");
        }
        assert!(!is_space('\u{200b}'));
    }

    #[test]
    fn lower_follows_python_special_cases() {
        assert_eq!(lower("İ"), "i\u{0307}");
        assert_eq!(lower("ΑΣ"), "ας");
        assert_eq!(lower("Σ"), "σ");
        assert_eq!(lower("ΑΣΑ"), "ασα");
        assert_eq!(lower("AΣ\u{0301}"), "aς\u{0301}");
        assert_eq!(lower("K"), "k"); // KELVIN SIGN
        assert_eq!(lower("Hello"), "hello");
    }
}
