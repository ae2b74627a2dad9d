//! Shell-style patterns over `/`-separated paths, for sources that name many
//! files (`s3://bucket/data/*.parquet`, `file:///data/**/part-*.csv`):
//! `*` any run of characters within a segment, `?` one character, `[abc]`,
//! `[a-z]` and `[!abc]` one character of (or not of) a set, and a whole
//! segment `**` any number of segments, none included.

/// Where the pattern part of a URI or path starts: the segment holding the
/// first wildcard. `None` when there is no wildcard.
pub fn pattern_start(text: &str) -> Option<usize> {
    let first = text.find(['*', '?', '['])?;
    Some(text[..first].rfind('/').map_or(0, |slash| slash + 1))
}

/// Whether `path` (relative, `/`-separated) matches `pattern` as a whole.
pub fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    match_segments(&pattern, &path)
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((segment, rest)) => match path.split_first() {
            Some((name, path_rest)) => {
                let segment: Vec<char> = segment.chars().collect();
                let name: Vec<char> = name.chars().collect();
                match_segment(&segment, &name) && match_segments(rest, path_rest)
            }
            None => false,
        },
    }
}

fn match_segment(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| match_segment(rest, &name[skip..])),
        Some(('?', rest)) => !name.is_empty() && match_segment(rest, &name[1..]),
        Some(('[', rest)) => match (parse_set(rest), name.split_first()) {
            (Some((set, after)), Some((&c, name_rest))) => set.contains(c) && match_segment(after, name_rest),
            // An unclosed `[` is a plain character.
            (None, Some((&'[', name_rest))) => match_segment(rest, name_rest),
            _ => false,
        },
        Some((&c, rest)) => name.first() == Some(&c) && match_segment(rest, &name[1..]),
    }
}

struct CharSet {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl CharSet {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Parses a set after its `[`; returns it and the pattern after its `]`.
fn parse_set(pattern: &[char]) -> Option<(CharSet, &[char])> {
    let (negated, mut at) = match pattern.first() {
        Some('!') | Some('^') => (true, 1),
        _ => (false, 0),
    };
    let mut ranges = Vec::new();
    let mut first = true;
    while let Some(&c) = pattern.get(at) {
        // A `]` first in the set is a member, not its end.
        if c == ']' && !first {
            return Some((CharSet { negated, ranges }, &pattern[at + 1..]));
        }
        if pattern.get(at + 1) == Some(&'-') && pattern.get(at + 2).is_some_and(|&hi| hi != ']') {
            ranges.push((c, pattern[at + 2]));
            at += 3;
        } else {
            ranges.push((c, c));
            at += 1;
        }
        first = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_within_a_segment() {
        assert!(matches("*.csv", "a.csv"));
        assert!(matches("part-*.csv", "part-0001.csv"));
        assert!(!matches("*.csv", "sub/a.csv"));
        assert!(!matches("*.csv", "a.csv.gz"));
        assert!(matches("*.csv*", "a.csv.gz"));
        assert!(matches("*/*.csv", "sub/a.csv"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(matches("**/*.parquet", "a.parquet"));
        assert!(matches("**/*.parquet", "2024/01/a.parquet"));
        assert!(matches("2024/**/a.parquet", "2024/a.parquet"));
        assert!(!matches("**/*.parquet", "2024/01/a.csv"));
    }

    #[test]
    fn question_marks_and_sets() {
        assert!(matches("part-?.csv", "part-1.csv"));
        assert!(!matches("part-?.csv", "part-10.csv"));
        assert!(matches("part-[0-4].csv", "part-3.csv"));
        assert!(!matches("part-[0-4].csv", "part-7.csv"));
        assert!(matches("part-[!0-4].csv", "part-7.csv"));
        assert!(matches("[]a].csv", "].csv"));
        assert!(matches("a[.csv", "a[.csv"));
    }

    #[test]
    fn the_pattern_starts_at_its_first_wildcard_segment() {
        assert_eq!(pattern_start("s3://b/data/*.parquet"), Some("s3://b/data/".len()));
        assert_eq!(pattern_start("/data/2024/*/part-?.csv"), Some("/data/2024/".len()));
        assert_eq!(pattern_start("s3://b/data/file.csv"), None);
    }
}
