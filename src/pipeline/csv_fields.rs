//! Cutting CSV records into fields on the calling thread, for the plain
//! form nearly every file has; anything else is left to polars' reader.
//!
//! A chunk read through polars costs twice: its parse runs on polars' own
//! threads while the worker that asked waits, and every column comes back
//! as a series that is copied again into the rows. Here each field is a
//! slice of the chunk (or, with `""` escapes, one copy), cut with memchr.
//!
//! The fields are exactly what polars reads with every column a string
//! (the differential test below holds the two together):
//! - a field is quoted when it begins with `"`; `""` inside is one `"`; an
//!   unquoted empty field is null, a quoted empty one the empty string;
//! - one `\r` ending an unquoted field is dropped (so `\r\n` ends a line);
//! - a record with fewer fields than the header ends in nulls (an empty
//!   line is a row of nulls).
//!
//! Polars reads some records otherwise or refuses them: a `"` inside an
//! unquoted field, anything but a separator after a closing quote, more
//! fields than the header. On meeting one, [`cut_records`] stops and says
//! so, and the caller reads the whole chunk with polars.

use std::borrow::Cow;

/// One field: `None` where polars reads null.
pub type CsvField<'a> = Option<Cow<'a, str>>;

/// Why a chunk is left to polars.
#[derive(Debug, PartialEq, Eq)]
pub struct NotPlain;

/// Calls `record` with the fields of each record of `chunk` (always
/// `columns` of them), in order. `Err(NotPlain)` as soon as a record is not
/// in the plain form: records before it have been passed on already.
pub fn cut_records<'a>(
    chunk: &'a str,
    columns: usize,
    mut record: impl FnMut(&[CsvField<'a>]),
) -> Result<(), NotPlain> {
    let bytes = chunk.as_bytes();
    if bytes.is_empty() {
        // Polars refuses an empty read; chunks are never empty anyway.
        return Err(NotPlain);
    }
    let mut fields: Vec<CsvField<'a>> = Vec::with_capacity(columns);
    let mut at = 0;
    while at < bytes.len() {
        fields.clear();
        loop {
            let (field, end) = if bytes[at] == b'"' { quoted_field(chunk, at)? } else { unquoted_field(chunk, at)? };
            if fields.len() == columns {
                return Err(NotPlain);
            }
            fields.push(field);
            at = end.next;
            if end.of_record {
                break;
            }
            if at == bytes.len() {
                // A separator ends the chunk: the record's last field is empty.
                fields.push(None);
                break;
            }
        }
        if fields.len() > columns {
            return Err(NotPlain);
        }
        fields.resize(columns, None);
        record(&fields);
    }
    Ok(())
}

/// Where a field ended: the next field's or record's start, and which.
struct FieldEnd {
    next: usize,
    of_record: bool,
}

fn unquoted_field(chunk: &str, start: usize) -> Result<(CsvField<'_>, FieldEnd), NotPlain> {
    let bytes = chunk.as_bytes();
    let stop = memchr::memchr3(b',', b'\n', b'"', &bytes[start..]).map(|offset| start + offset);
    let (mut value_end, end) = match stop.map(|at| (at, bytes[at])) {
        Some((_, b'"')) => return Err(NotPlain),
        Some((at, b',')) => (at, FieldEnd { next: at + 1, of_record: false }),
        Some((at, _newline)) => (at, FieldEnd { next: at + 1, of_record: true }),
        None => (bytes.len(), FieldEnd { next: bytes.len(), of_record: true }),
    };
    if value_end > start && bytes[value_end - 1] == b'\r' {
        value_end -= 1;
    }
    // Cut at ASCII bytes, so on character boundaries.
    let value = (value_end > start).then(|| Cow::Borrowed(&chunk[start..value_end]));
    Ok((value, end))
}

fn quoted_field(chunk: &str, open: usize) -> Result<(CsvField<'_>, FieldEnd), NotPlain> {
    let bytes = chunk.as_bytes();
    let start = open + 1;
    let mut from = start;
    let mut escaped = false;
    let close = loop {
        let quote = from + memchr::memchr(b'"', &bytes[from..]).ok_or(NotPlain)?;
        if bytes.get(quote + 1) == Some(&b'"') {
            escaped = true;
            from = quote + 2;
        } else {
            break quote;
        }
    };
    let raw = &chunk[start..close];
    let value = if escaped { Cow::Owned(raw.replace("\"\"", "\"")) } else { Cow::Borrowed(raw) };
    let after = close + 1;
    let end = match bytes.get(after) {
        None => FieldEnd { next: after, of_record: true },
        Some(b',') => FieldEnd { next: after + 1, of_record: false },
        Some(b'\n') => FieldEnd { next: after + 1, of_record: true },
        Some(b'\r') if matches!(bytes.get(after + 1), None | Some(b'\n')) => {
            FieldEnd { next: (after + 2).min(bytes.len()), of_record: true }
        }
        Some(_) => return Err(NotPlain),
    };
    Ok((Some(value), end))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::test_rng::Rng;
    use polars::prelude::*;

    type Rows = Vec<Vec<Option<String>>>;

    fn cut(chunk: &str, columns: usize) -> Result<Rows, NotPlain> {
        let mut rows = Vec::new();
        cut_records(chunk, columns, |fields| {
            rows.push(fields.iter().map(|f| f.as_ref().map(|v| v.to_string())).collect())
        })?;
        Ok(rows)
    }

    /// What polars reads, with the options `ingest` gives it; `None` when it refuses.
    fn polars_reads(chunk: &str, columns: usize) -> Option<Rows> {
        let schema: SchemaRef =
            Arc::new((0..columns).map(|c| Field::new(format!("c{c}").into(), DataType::String)).collect());
        let frame = CsvReadOptions::default()
            .with_has_header(false)
            .with_schema(Some(schema))
            .into_reader_with_file_handle(Cursor::new(chunk.as_bytes().to_vec()))
            .finish()
            .ok()?;
        let strings: Vec<_> = frame.columns().iter().map(|c| c.str().unwrap().clone()).collect();
        Some((0..frame.height()).map(|r| strings.iter().map(|s| s.get(r).map(str::to_owned)).collect()).collect())
    }

    #[test]
    fn plain_records_read_as_polars_reads_them() {
        let cases = [
            ("x,\"\",z\n", vec![vec![Some("x"), Some(""), Some("z")]]),
            ("x,,z\n", vec![vec![Some("x"), None, Some("z")]]),
            ("x,y,\"z\"\r\n", vec![vec![Some("x"), Some("y"), Some("z")]]),
            ("\n", vec![vec![None, None, None]]),
            (" \n", vec![vec![Some(" "), None, None]]),
            ("x,y,z\r\r\n", vec![vec![Some("x"), Some("y"), Some("z\r")]]),
            ("x,\"a \"\"b\"\",\nc\",z", vec![vec![Some("x"), Some("a \"b\",\nc"), Some("z")]]),
            ("x,y,\n1,2", vec![vec![Some("x"), Some("y"), None], vec![Some("1"), Some("2"), None]]),
        ];
        for (chunk, expected) in cases {
            let expected: Rows = expected.iter().map(|r| r.iter().map(|f| f.map(str::to_owned)).collect()).collect();
            assert_eq!(cut(chunk, 3).as_ref(), Ok(&expected), "{chunk:?}");
            assert_eq!(polars_reads(chunk, 3).as_ref(), Some(&expected), "{chunk:?}");
        }
        for refused in ["x,y,z,w\n", "x,a\"b,z\n", "x,\"a\"b,z\n", "x,\"a\" ,z\n", "x,\"open\n"] {
            assert_eq!(cut(refused, 3), Err(NotPlain), "{refused:?}");
        }
    }

    fn random_field(rng: &mut Rng) -> String {
        const PLAIN: [&str; 7] = ["a", "Bc", "é", " ", "\r", "9", "日本"];
        const QUOTED: [&str; 6] = [",", "\n", "\"\"", "\r\n", " ", "x"];
        let mut field = String::new();
        match rng.below(10) {
            0..=1 => {}
            2..=6 => (0..1 + rng.below(5)).for_each(|_| field.push_str(PLAIN[rng.below(PLAIN.len())])),
            _ => {
                field.push('"');
                for _ in 0..rng.below(6) {
                    let pieces = if rng.one_in(2) { &PLAIN[..] } else { &QUOTED[..] };
                    field.push_str(pieces[rng.below(pieces.len())]);
                }
                field.push('"');
            }
        }
        field
    }

    /// Records of 0 to 5 fields against a header of 3, line ends `\n` or
    /// `\r\n`, sometimes a stray quote or carriage return: whatever the
    /// cutter reads, polars reads the same; whatever polars refuses, the
    /// cutter leaves to it.
    #[test]
    fn random_records_read_as_polars_reads_them_or_are_left_to_it() {
        let mut rng = Rng(7);
        let (mut agreed, mut left) = (0, 0);
        for _ in 0..5000 {
            let mut chunk = String::new();
            for _ in 0..1 + rng.below(4) {
                let fields: Vec<String> = (0..rng.below(6)).map(|_| random_field(&mut rng)).collect();
                chunk.push_str(&fields.join(","));
                chunk.push_str(if rng.below(10) < 3 { "\r\n" } else { "\n" });
            }
            if rng.below(20) < 3 {
                let at = rng.below(chunk.len() + 1);
                if chunk.is_char_boundary(at) {
                    chunk.insert(at, if rng.one_in(2) { '"' } else { '\r' });
                }
            }
            if rng.one_in(5) {
                chunk.pop();
            }
            match cut(&chunk, 3) {
                Ok(rows) => {
                    assert_eq!(Some(&rows), polars_reads(&chunk, 3).as_ref(), "{chunk:?}");
                    agreed += 1;
                }
                Err(NotPlain) => left += 1,
            }
        }
        // Most records are plain: the cutter must be reading them.
        assert!(agreed > 1000, "cut {agreed}, left to polars {left}");
    }
}
