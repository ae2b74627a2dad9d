//! Processed rows kept out of memory as sorted runs: files of rows in
//! ascending `(order hash, position)`, merged back into one ordered stream.
//! A full shuffle's order, by an external merge sort instead of a shuffle in
//! memory. The merge reads a bounded number of runs at once
//! ([`MAX_FAN_IN`]); more runs are first merged in groups into longer ones,
//! so memory stays the same however many runs a dataset makes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::artifacts::ProcessedRow;
use crate::error::{Error, Result};

/// Runs merged at once: this many read buffers are held.
pub const MAX_FAN_IN: usize = 256;
const READ_BUFFER: usize = 128 << 10;
const WRITE_BUFFER: usize = 1 << 20;

/// Sorts `rows` and writes them as a run at `path`, atomically: the run is
/// written beside and renamed into place once whole and synced, so a run
/// that exists is complete even after a crash.
pub fn write_run(path: &Path, rows: &mut [ProcessedRow]) -> Result<()> {
    rows.sort_unstable_by_key(|r| r.order);
    let partial = path.with_extension("partial");
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&partial)?);
    for row in rows.iter() {
        write_row(&mut out, row)?;
    }
    finish_run(out, &partial, path)
}

fn finish_run(out: BufWriter<File>, partial: &Path, path: &Path) -> Result<()> {
    let file = out.into_inner().map_err(|e| Error::from(e.into_error()))?;
    file.sync_all()?;
    std::fs::rename(partial, path)?;
    Ok(())
}

/// Every row of `runs`, in ascending `(order hash, position)`. Beyond
/// [`MAX_FAN_IN`] runs, groups are merged into longer runs in `temp_dir`
/// first (removed when the returned stream is dropped).
pub fn merge_runs(mut runs: Vec<PathBuf>, temp_dir: &Path) -> Result<MergedRows> {
    std::fs::create_dir_all(temp_dir)?;
    let temp = tempfile::Builder::new().prefix("merge-").tempdir_in(temp_dir)?;
    let mut level = 0;
    while runs.len() > MAX_FAN_IN {
        let mut longer = Vec::with_capacity(runs.len().div_ceil(MAX_FAN_IN));
        for (n, group) in runs.chunks(MAX_FAN_IN).enumerate() {
            let path = temp.path().join(format!("level{level}-{n:06}.run"));
            let partial = path.with_extension("partial");
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&partial)?);
            for row in MergedRows::open(group.to_vec(), None)? {
                write_row(&mut out, &row?)?;
            }
            finish_run(out, &partial, &path)?;
            longer.push(path);
        }
        // Runs of an earlier level that were made here are not needed again.
        if level > 0 {
            for run in &runs {
                let _ = std::fs::remove_file(run);
            }
        }
        runs = longer;
        level += 1;
    }
    MergedRows::open(runs, Some(temp))
}

struct Head {
    order: (u64, u64),
    run: usize,
    row: ProcessedRow,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

/// The k-way merge of some runs.
pub struct MergedRows {
    readers: Vec<BufReader<File>>,
    heads: BinaryHeap<Reverse<Head>>,
    _temp: Option<tempfile::TempDir>,
}

impl MergedRows {
    fn open(runs: Vec<PathBuf>, temp: Option<tempfile::TempDir>) -> Result<Self> {
        let mut readers = Vec::with_capacity(runs.len());
        let mut heads = BinaryHeap::with_capacity(runs.len());
        for (n, path) in runs.iter().enumerate() {
            let mut reader = BufReader::with_capacity(READ_BUFFER, File::open(path)?);
            if let Some(row) = read_row(&mut reader)? {
                heads.push(Reverse(Head { order: row.order, run: n, row }));
            }
            readers.push(reader);
        }
        Ok(Self { readers, heads, _temp: temp })
    }
}

impl Iterator for MergedRows {
    type Item = Result<ProcessedRow>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse(head) = self.heads.pop()?;
        match read_row(&mut self.readers[head.run]) {
            Ok(Some(row)) => self.heads.push(Reverse(Head { order: row.order, run: head.run, row })),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(head.row))
    }
}

fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

fn write_row(out: &mut impl Write, row: &ProcessedRow) -> Result<()> {
    out.write_all(&row.order.0.to_le_bytes())?;
    out.write_all(&row.order.1.to_le_bytes())?;
    out.write_all(&row.target.to_le_bytes())?;
    match &row.id {
        Some(id) => {
            out.write_all(&[1])?;
            write_bytes(out, id.as_bytes())?;
        }
        None => out.write_all(&[0])?,
    }
    write_bytes(out, row.text.as_bytes())?;
    out.write_all(&(row.ids.len() as u32).to_le_bytes())?;
    for id in &row.ids {
        out.write_all(&id.to_le_bytes())?;
    }
    Ok(())
}

fn read_array<const N: usize>(input: &mut impl Read) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_string(input: &mut impl Read) -> Result<String> {
    let len = u32::from_le_bytes(read_array(input)?) as usize;
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|e| Error::internal(format!("corrupt run file: {e}")))
}

fn read_row(input: &mut impl Read) -> Result<Option<ProcessedRow>> {
    let mut first = [0u8; 8];
    match input.read(&mut first[..1])? {
        0 => return Ok(None),
        _ => input.read_exact(&mut first[1..])?,
    }
    let order = (u64::from_le_bytes(first), u64::from_le_bytes(read_array(input)?));
    let target = i64::from_le_bytes(read_array(input)?);
    let id = match read_array::<1>(input)?[0] {
        0 => None,
        _ => Some(read_string(input)?),
    };
    let text = read_string(input)?;
    let n = u32::from_le_bytes(read_array(input)?) as usize;
    let mut raw = vec![0u8; 4 * n];
    input.read_exact(&mut raw)?;
    let ids = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Some(ProcessedRow { order, id, text, ids, target }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(order: u64, position: u64) -> ProcessedRow {
        ProcessedRow {
            order: (order, position),
            id: position.is_multiple_of(2).then(|| position.to_string()),
            text: format!("text {position}"),
            ids: vec![101, position as u32, 102],
            target: (position % 3) as i64,
        }
    }

    fn orders(merged: MergedRows) -> Vec<(u64, u64)> {
        merged.map(|r| r.unwrap().order).collect()
    }

    #[test]
    fn runs_merge_back_in_order_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        for (n, mut chunk) in
            [vec![row(9, 0), row(3, 1)], vec![row(5, 2)], vec![row(3, 0), row(1, 7)], vec![]].into_iter().enumerate()
        {
            let path = dir.path().join(format!("{n}.run"));
            write_run(&path, &mut chunk).unwrap();
            runs.push(path);
        }
        let merged: Vec<ProcessedRow> = merge_runs(runs, dir.path()).unwrap().collect::<Result<_>>().unwrap();
        let orders: Vec<(u64, u64)> = merged.iter().map(|r| r.order).collect();
        assert_eq!(orders, [(1, 7), (3, 0), (3, 1), (5, 2), (9, 0)]);
        let again = row(1, 7);
        assert_eq!(
            (merged[0].id.clone(), merged[0].text.clone(), merged[0].ids.clone(), merged[0].target),
            (again.id, again.text, again.ids, again.target)
        );
        assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "partial")));
    }

    #[test]
    fn more_runs_than_the_fan_in_merge_in_levels() {
        let dir = tempfile::tempdir().unwrap();
        let n_runs = MAX_FAN_IN * 2 + 3;
        let mut runs = Vec::new();
        let mut expected = Vec::new();
        for n in 0..n_runs as u64 {
            // Interleaved keys, so every level has work to do.
            let mut rows: Vec<ProcessedRow> = (0..3).map(|k| row((k * n_runs as u64 + n) * 7 % 1013, n)).collect();
            expected.extend(rows.iter().map(|r| r.order));
            let path = dir.path().join(format!("{n}.run"));
            write_run(&path, &mut rows).unwrap();
            runs.push(path);
        }
        expected.sort();
        assert_eq!(orders(merge_runs(runs, &dir.path().join("tmp")).unwrap()), expected);
    }
}
