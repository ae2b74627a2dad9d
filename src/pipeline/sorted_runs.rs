//! Processed rows kept out of memory until they are written in the seeded
//! order of their split: the order of a full shuffle, without a shuffle in
//! memory. Bucket by hash, sort within the bucket.
//!
//! Every row's order key starts with its order hash, so the top bits of that
//! hash cut the order into buckets that follow one another. A run (the rows
//! of one partition and split) is written sorted, as one compressed block
//! per bucket with an index of the blocks at its end. Reading back takes one
//! bucket at a time from every run and sorts it in memory: memory holds one
//! bucket, however many runs or rows there are, and every run is read once.
//!
//! ```text
//! run file: block 0 | block 1 | ... | block B-1 | B x u64 block length | u64 B | b"PREPDRUN"
//! block:    zstd frame of rows, each: order (2 x u64), split hash (u64), target (i64), id (u8 flag, len-prefixed bytes),
//!           text (len-prefixed), ids (u32 count, u32 each); little-endian
//! ```

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::processed_row::{ProcessedRow, RowContent};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"PREPDRUN";
/// Fast, and still several times smaller than the rows themselves.
const ZSTD_LEVEL: i32 = 1;
const MAX_BUCKET_BITS: u32 = 16;

/// How many buckets the order hash is cut into: a power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketing {
    bits: u32,
}

impl Bucketing {
    pub fn with_bits(bits: u32) -> Self {
        Self { bits: bits.min(MAX_BUCKET_BITS) }
    }

    /// Enough buckets that one holds about `bucket_bytes` of rows, for a
    /// dataset whose rows take about `row_bytes` in memory.
    pub fn for_row_bytes(row_bytes: u64, bucket_bytes: u64) -> Self {
        let buckets = row_bytes.div_ceil(bucket_bytes.max(1)).max(1);
        Self::with_bits(buckets.next_power_of_two().trailing_zeros())
    }

    pub fn count(&self) -> usize {
        1 << self.bits
    }

    fn of(&self, order: (u64, u64)) -> usize {
        if self.bits == 0 { 0 } else { (order.0 >> (64 - self.bits)) as usize }
    }
}

/// Sorts `rows` and writes them as a run at `path`, atomically: written
/// beside, synced, then renamed, so a run that exists is whole even after a
/// crash.
pub fn write_run(path: &Path, rows: &mut [ProcessedRow], bucketing: Bucketing) -> Result<()> {
    rows.sort_unstable_by_key(|r| r.order);
    let partial = path.with_extension("partial");
    let mut file = File::create(&partial)?;
    let mut lengths = Vec::with_capacity(bucketing.count());
    let mut encoded = Vec::new();
    let mut rest: &[ProcessedRow] = rows;
    for bucket in 0..bucketing.count() {
        let in_bucket = rest.iter().take_while(|r| bucketing.of(r.order) == bucket).count();
        let (these, after) = rest.split_at(in_bucket);
        rest = after;
        if these.is_empty() {
            lengths.push(0u64);
            continue;
        }
        encoded.clear();
        for row in these {
            encode_row(&mut encoded, row);
        }
        let block = zstd::bulk::compress(&encoded, ZSTD_LEVEL).map_err(Error::from)?;
        file.write_all(&block)?;
        lengths.push(block.len() as u64);
    }
    let mut footer = Vec::with_capacity(8 * lengths.len() + 16);
    lengths.iter().for_each(|len| footer.extend_from_slice(&len.to_le_bytes()));
    footer.extend_from_slice(&(lengths.len() as u64).to_le_bytes());
    footer.extend_from_slice(MAGIC);
    file.write_all(&footer)?;
    file.sync_all()?;
    std::fs::rename(partial, path)?;
    Ok(())
}

/// Where each bucket's block lies in a run.
struct RunIndex {
    path: PathBuf,
    /// `offsets[b]..offsets[b + 1]` is bucket `b`'s block.
    offsets: Vec<u64>,
}

impl RunIndex {
    fn read(path: PathBuf, bucketing: Bucketing) -> Result<Self> {
        let corrupt = |what: &str| Error::internal(format!("corrupt run {}: {what}", path.display()));
        let mut file = File::open(&path)?;
        let size = file.metadata()?.len();
        let buckets = bucketing.count() as u64;
        let footer_len = 8 * buckets + 16;
        if size < footer_len {
            return Err(corrupt("too short"));
        }
        file.seek(SeekFrom::Start(size - footer_len))?;
        let mut footer = vec![0u8; footer_len as usize];
        file.read_exact(&mut footer)?;
        let (lengths, tail) = footer.split_at(8 * buckets as usize);
        if &tail[8..] != MAGIC || u64::from_le_bytes(tail[..8].try_into().unwrap()) != buckets {
            return Err(corrupt("bad footer"));
        }
        let mut offsets = Vec::with_capacity(buckets as usize + 1);
        offsets.push(0);
        for len in lengths.chunks_exact(8) {
            offsets.push(offsets.last().unwrap() + u64::from_le_bytes(len.try_into().unwrap()));
        }
        if *offsets.last().unwrap() != size - footer_len {
            return Err(corrupt("blocks and footer disagree"));
        }
        Ok(Self { path, offsets })
    }

    fn read_bucket(&self, bucket: usize) -> Result<Vec<ProcessedRow>> {
        let (start, end) = (self.offsets[bucket], self.offsets[bucket + 1]);
        let mut rows = Vec::new();
        if start == end {
            return Ok(rows);
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut block = vec![0u8; (end - start) as usize];
        file.read_exact(&mut block)?;
        let encoded = zstd::stream::decode_all(block.as_slice()).map_err(Error::from)?;
        let mut input = encoded.as_slice();
        while !input.is_empty() {
            rows.push(decode_row(&mut input)?);
        }
        Ok(rows)
    }
}

/// Every row of some runs, in ascending `(order hash, position)`.
pub struct OrderedRows {
    runs: Vec<RunIndex>,
    next_bucket: usize,
    bucket_count: usize,
    /// The current bucket, sorted descending so that rows pop off the end.
    current: Vec<ProcessedRow>,
}

/// Reads `runs` (all written with `bucketing`) back in order.
pub fn read_in_order(runs: Vec<PathBuf>, bucketing: Bucketing) -> Result<OrderedRows> {
    let runs = runs.into_iter().map(|path| RunIndex::read(path, bucketing)).collect::<Result<Vec<_>>>()?;
    Ok(OrderedRows { runs, next_bucket: 0, bucket_count: bucketing.count(), current: Vec::new() })
}

impl OrderedRows {
    /// Runs are read and decoded, and the bucket sorted, on the current
    /// rayon pool: the write stage's own thread would otherwise do it alone.
    fn load_next_bucket(&mut self) -> Result<()> {
        let bucket = self.next_bucket;
        self.next_bucket += 1;
        self.current.clear();
        let from_runs: Vec<Result<Vec<ProcessedRow>>> =
            self.runs.par_iter().map(|run| run.read_bucket(bucket)).collect();
        for rows in from_runs {
            self.current.extend(rows?);
        }
        self.current.par_sort_unstable_by_key(|r| std::cmp::Reverse(r.order));
        Ok(())
    }
}

impl Iterator for OrderedRows {
    type Item = Result<ProcessedRow>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.current.is_empty() {
            if self.next_bucket == self.bucket_count {
                return None;
            }
            if let Err(e) = self.load_next_bucket() {
                // Nothing more is read after a failure.
                self.next_bucket = self.bucket_count;
                return Some(Err(e));
            }
        }
        self.current.pop().map(Ok)
    }
}

fn encode_row(out: &mut Vec<u8>, row: &ProcessedRow) {
    out.extend_from_slice(&row.order.0.to_le_bytes());
    out.extend_from_slice(&row.order.1.to_le_bytes());
    out.extend_from_slice(&row.split_hash.to_le_bytes());
    out.extend_from_slice(&row.target.to_le_bytes());
    row.content.write_to(out);
}

fn take<'a, const N: usize>(input: &mut &'a [u8]) -> Result<&'a [u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>().ok_or_else(cut_short)?;
    *input = rest;
    Ok(head)
}

fn cut_short() -> Error {
    Error::internal("corrupt run: a row is cut short or damaged")
}

fn decode_row(input: &mut &[u8]) -> Result<ProcessedRow> {
    let order = (u64::from_le_bytes(*take(input)?), u64::from_le_bytes(*take(input)?));
    let split_hash = u64::from_le_bytes(*take(input)?);
    let target = u32::from_le_bytes(*take(input)?);
    let content = RowContent::read_from(input).ok_or_else(cut_short)?;
    Ok(ProcessedRow { order, split_hash, target, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows at odd positions have an id too large for two bytes.
    fn row(order: u64, position: u64) -> ProcessedRow {
        let id = position.is_multiple_of(2).then(|| position.to_string());
        let token = position as u32 + if position % 2 == 1 { 70_000 } else { 0 };
        let content = RowContent::new(id.as_deref(), &format!("text {position}"), &[101, token, 102]);
        ProcessedRow {
            order: (order, position),
            split_hash: position.wrapping_mul(31),
            target: (position % 3) as u32,
            content,
        }
    }

    fn read_back(runs: Vec<PathBuf>, bucketing: Bucketing) -> Vec<ProcessedRow> {
        read_in_order(runs, bucketing).unwrap().collect::<Result<_>>().unwrap()
    }

    #[test]
    fn runs_read_back_in_order_with_every_field_whatever_the_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let spread = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let chunks = [
            vec![row(spread(9), 0), row(spread(3), 1)],
            vec![row(spread(5), 2)],
            vec![],
            vec![row(spread(3), 0), row(spread(1), 7), row(spread(4), 4)],
        ];
        let mut expected: Vec<(u64, u64)> = chunks.iter().flatten().map(|r| r.order).collect();
        expected.sort();
        for bits in [0, 1, 3, 16] {
            let bucketing = Bucketing::with_bits(bits);
            let mut runs = Vec::new();
            for (n, chunk) in chunks.iter().enumerate() {
                let path = dir.path().join(format!("{bits}-{n}.run"));
                write_run(&path, &mut chunk.clone(), bucketing).unwrap();
                runs.push(path);
            }
            let rows = read_back(runs, bucketing);
            assert_eq!(rows.iter().map(|r| r.order).collect::<Vec<_>>(), expected, "{bits} bits");
            let again = row(spread(1), 7);
            let got = rows.iter().find(|r| r.order == again.order).unwrap();
            assert_eq!(got, &again);
        }
        assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "partial")));
    }

    #[test]
    fn many_rows_over_many_runs() {
        let dir = tempfile::tempdir().unwrap();
        let bucketing = Bucketing::with_bits(4);
        let mut expected = Vec::new();
        let mut runs = Vec::new();
        for n in 0..40u64 {
            let mut rows: Vec<ProcessedRow> =
                (0..50).map(|k| row((n * 50 + k).wrapping_mul(0xd1b5_4a32_d192_ed03), n * 50 + k)).collect();
            expected.extend(rows.iter().map(|r| r.order));
            let path = dir.path().join(format!("{n}.run"));
            write_run(&path, &mut rows, bucketing).unwrap();
            runs.push(path);
        }
        expected.sort();
        assert_eq!(read_back(runs, bucketing).iter().map(|r| r.order).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn a_damaged_run_is_an_error_not_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        write_run(&path, &mut [row(1, 1)], Bucketing::with_bits(2)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read_in_order(vec![path], Bucketing::with_bits(2)).is_err());
    }

    #[test]
    fn bucket_count_follows_the_data_size() {
        let mib = 1 << 20;
        assert_eq!(Bucketing::for_row_bytes(0, mib).count(), 1);
        assert_eq!(Bucketing::for_row_bytes(mib, mib).count(), 1);
        assert_eq!(Bucketing::for_row_bytes(3 * mib, mib).count(), 4);
        assert_eq!(Bucketing::for_row_bytes(u64::MAX / 2, mib).count(), 1 << MAX_BUCKET_BITS);
    }
}
