//! A split's processed rows, kept out of memory: rows arrive in any order
//! from the workers, are spilled as sorted runs to a scratch directory, and
//! come back merged in `(order hash, position)` order. Memory holds one
//! unspilled run and one read buffer per run, whatever the dataset's size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::artifacts::ProcessedRow;
use crate::error::{Error, Result};

/// Bytes of rows (roughly) held before a run is spilled.
const RUN_BYTES: usize = 64 << 20;

fn row_bytes(row: &ProcessedRow) -> usize {
    64 + row.text.len() + row.id.as_ref().map_or(0, String::len) + 4 * row.ids.len()
}

#[derive(Default)]
struct Pending {
    rows: Vec<ProcessedRow>,
    bytes: usize,
}

pub struct SortedRuns {
    dir: tempfile::TempDir,
    pending: Mutex<Pending>,
    runs: Mutex<Vec<PathBuf>>,
    rows: Mutex<u64>,
}

impl SortedRuns {
    /// Runs live in a fresh directory under `scratch`, removed on drop.
    pub fn new(scratch: &Path, label: &str) -> Result<Self> {
        std::fs::create_dir_all(scratch)?;
        let dir = tempfile::Builder::new().prefix(&format!("{label}-")).tempdir_in(scratch)?;
        Ok(Self { dir, pending: Mutex::default(), runs: Mutex::default(), rows: Mutex::new(0) })
    }

    /// Adds rows; spills a sorted run when enough have gathered.
    pub fn extend(&self, rows: Vec<ProcessedRow>) -> Result<()> {
        *self.rows.lock().unwrap() += rows.len() as u64;
        let full = {
            let mut pending = self.pending.lock().unwrap();
            pending.bytes += rows.iter().map(row_bytes).sum::<usize>();
            pending.rows.extend(rows);
            (pending.bytes >= RUN_BYTES).then(|| std::mem::take(&mut *pending))
        };
        match full {
            Some(full) => self.spill(full.rows),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> u64 {
        *self.rows.lock().unwrap()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spill(&self, mut rows: Vec<ProcessedRow>) -> Result<()> {
        rows.sort_unstable_by_key(|r| r.order);
        let path = {
            let mut runs = self.runs.lock().unwrap();
            let path = self.dir.path().join(format!("run-{:06}", runs.len()));
            runs.push(path.clone());
            path
        };
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for row in &rows {
            write_row(&mut out, row)?;
        }
        out.flush()?;
        Ok(())
    }

    /// Every row, in ascending `(order hash, position)`.
    pub fn into_sorted(self) -> Result<MergedRows> {
        let last = std::mem::take(&mut *self.pending.lock().unwrap());
        if !last.rows.is_empty() {
            self.spill(last.rows)?;
        }
        let runs = std::mem::take(&mut *self.runs.lock().unwrap());
        let mut readers = Vec::with_capacity(runs.len());
        let mut heads = BinaryHeap::with_capacity(runs.len());
        for (n, path) in runs.iter().enumerate() {
            let mut reader = BufReader::with_capacity(256 << 10, File::open(path)?);
            if let Some(row) = read_row(&mut reader)? {
                heads.push(Reverse(Head { order: row.order, run: n, row }));
            }
            readers.push(reader);
        }
        Ok(MergedRows { _dir: self.dir, readers, heads })
    }
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

/// The k-way merge of the runs.
pub struct MergedRows {
    _dir: tempfile::TempDir,
    readers: Vec<BufReader<File>>,
    heads: BinaryHeap<Reverse<Head>>,
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
    String::from_utf8(buf).map_err(|e| Error::internal(format!("corrupt scratch run: {e}")))
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

    #[test]
    fn runs_merge_back_in_order_with_every_field() {
        let scratch = tempfile::tempdir().unwrap();
        let runs = SortedRuns::new(scratch.path(), "t").unwrap();
        // Several spilled runs, out of order.
        for chunk in [vec![row(9, 0), row(3, 1)], vec![row(5, 2)], vec![row(3, 0), row(1, 7)]] {
            runs.extend(chunk.clone()).unwrap();
            let pending = std::mem::take(&mut *runs.pending.lock().unwrap());
            runs.spill(pending.rows).unwrap();
        }
        runs.extend(vec![row(4, 4)]).unwrap();
        assert_eq!(runs.len(), 6);
        let merged: Vec<ProcessedRow> = runs.into_sorted().unwrap().collect::<Result<_>>().unwrap();
        let orders: Vec<(u64, u64)> = merged.iter().map(|r| r.order).collect();
        assert_eq!(orders, [(1, 7), (3, 0), (3, 1), (4, 4), (5, 2), (9, 0)]);
        let again = row(1, 7);
        assert_eq!(
            (merged[0].id.clone(), merged[0].text.clone(), merged[0].ids.clone(), merged[0].target),
            (again.id, again.text, again.ids, again.target)
        );
    }
}
