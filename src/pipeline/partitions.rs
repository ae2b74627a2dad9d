//! A job's work directory: the partitions it has finished, kept so that a
//! job cut off mid-way (a crash, a kill, a stop) resumes from them instead
//! of starting over.
//!
//! A partition is a fixed range of input rows (`partition_rows` of them, by
//! position across the dataset's files). Once all its rows are cleaned and
//! tokenized, they are written as one sorted run (train and validation
//! rows together: the split is decided once every partition is done), then
//! a `.done` file with its counts and what it offered to the split's
//! boundaries: a partition is finished exactly when its `.done` file
//! exists. Everything is written beside and renamed into place, so a crash
//! leaves no half-written file that looks whole.
//!
//! ```text
//! {work_dir}/fingerprint            what the partitions were computed for
//! {work_dir}/partitions/p00000012.run
//! {work_dir}/partitions/p00000012.done    summary (JSON), written last
//! ```
//!
//! The fingerprint covers everything a partition's bytes depend on (input
//! checksum, spec, fitted preprocessor, partition size, buckets, prepd
//! version, the work directory's format); a work directory left by another
//! computation is emptied, never reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::processed_row::ProcessedRow;
use super::sorted_runs::{Bucketing, read_in_order, write_run};
use super::split::Boundary;
use crate::error::{Error, Result};

/// Changes whenever what a work directory holds is laid out differently, so
/// that a directory left by an older prepd is started over, not misread.
pub const WORK_FORMAT: u32 = 4;

/// What a finished partition's rows came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCounts {
    /// Rows processed (rows left out, such as null labels, not counted).
    pub rows: u64,
    pub empty_cleaned_texts: u64,
    pub truncated_rows: u64,
}

impl PartitionCounts {
    pub fn add(&mut self, other: &PartitionCounts) {
        self.rows += other.rows;
        self.empty_cleaned_texts += other.empty_cleaned_texts;
        self.truncated_rows += other.truncated_rows;
    }
}

/// A finished partition: its counts and, per class, what its rows offered
/// to the class's split boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    pub counts: PartitionCounts,
    pub boundaries: Vec<Boundary>,
}

pub struct WorkDir {
    root: PathBuf,
    bucketing: Bucketing,
}

impl WorkDir {
    /// Opens (creating) the work directory for a computation with this
    /// `fingerprint`, and returns the partitions already finished for it.
    pub fn open(
        root: &Path,
        fingerprint: &str,
        bucketing: Bucketing,
    ) -> Result<(Self, BTreeMap<u64, PartitionSummary>)> {
        let work = Self { root: root.to_path_buf(), bucketing };
        std::fs::create_dir_all(root)?;
        let fingerprint_file = root.join("fingerprint");
        let previous = std::fs::read_to_string(&fingerprint_file).ok();
        if previous.as_deref() != Some(fingerprint) {
            if previous.is_some() {
                tracing::info!(work_dir = %root.display(), "work directory is for another computation; starting over");
            }
            remove_dir_if_present(&work.partitions_dir())?;
            write_atomically(&fingerprint_file, fingerprint.as_bytes())?;
        }
        std::fs::create_dir_all(work.partitions_dir())?;
        let mut finished = BTreeMap::new();
        for entry in std::fs::read_dir(work.partitions_dir())? {
            let path = entry?.path();
            let Some(number) = partition_number(&path, ".done") else { continue };
            let summary: PartitionSummary = serde_json::from_slice(&std::fs::read(&path)?)
                .map_err(|e| Error::internal(format!("unreadable {}: {e}", path.display())))?;
            finished.insert(number, summary);
        }
        Ok((work, finished))
    }

    fn partitions_dir(&self) -> PathBuf {
        self.root.join("partitions")
    }

    pub fn bucketing(&self) -> Bucketing {
        self.bucketing
    }

    pub fn run_path(&self, partition: u64) -> PathBuf {
        self.partitions_dir().join(format!("p{partition:08}.run"))
    }

    /// Writes a partition's rows (sorted here) and then marks it finished.
    pub fn finish_partition(
        &self,
        partition: u64,
        rows: &mut [ProcessedRow],
        summary: &PartitionSummary,
    ) -> Result<()> {
        write_run(&self.run_path(partition), rows, self.bucketing)?;
        let done = self.partitions_dir().join(format!("p{partition:08}.done"));
        write_atomically(&done, &serde_json::to_vec(summary).map_err(Error::internal)?)
    }

    /// Removes the directory and everything in it.
    pub fn remove(root: &Path) -> Result<()> {
        remove_dir_if_present(root)
    }
}

/// Every processed row of a job, in ascending `(order hash, position)`.
pub type RowsInOrder = Box<dyn Iterator<Item = Result<ProcessedRow>> + Send>;

/// Where finished partitions' rows wait until the split is known and the
/// write stage takes them in their seeded order.
pub enum FinishedRows {
    /// Spilled to the work directory as sorted runs: memory stays bounded
    /// whatever the dataset's size, and a job cut off resumes from them.
    Spilled(WorkDir),
    /// Kept in memory, for a job whose rows fit the memory budget: no run is
    /// encoded, compressed, written and read back, but a job cut off starts
    /// over (it is a few seconds' work at that size).
    InMemory(Mutex<Vec<ProcessedRow>>),
}

impl FinishedRows {
    pub fn in_memory(rows: u64) -> Self {
        Self::InMemory(Mutex::new(Vec::with_capacity(rows.min(1 << 24) as usize)))
    }

    /// Keeps a finished partition's rows; once spilled, the partition is
    /// marked finished in the work directory.
    pub fn finish_partition(
        &self,
        partition: u64,
        mut rows: Vec<ProcessedRow>,
        summary: &PartitionSummary,
    ) -> Result<()> {
        match self {
            Self::Spilled(work) => work.finish_partition(partition, &mut rows, summary),
            Self::InMemory(kept) => {
                kept.lock().unwrap().append(&mut rows);
                Ok(())
            }
        }
    }

    /// The rows of partitions `0..partitions`, in order. Sorting rows kept
    /// in memory runs on the current rayon pool.
    pub fn into_ordered(self, partitions: u64) -> Result<OrderedRows> {
        match self {
            Self::Spilled(work) => {
                let runs = (0..partitions).map(|p| work.run_path(p)).collect();
                Ok(OrderedRows::Streamed(Box::new(read_in_order(runs, work.bucketing())?)))
            }
            Self::InMemory(kept) => {
                let mut rows = kept.into_inner().unwrap();
                rows.par_sort_unstable_by_key(|r| r.order);
                Ok(OrderedRows::InMemory(rows))
            }
        }
    }
}

/// A job's finished rows in their split order.
pub enum OrderedRows {
    /// Sorted in memory, every row at hand.
    InMemory(Vec<ProcessedRow>),
    /// Merged from the spilled runs as they are read.
    Streamed(RowsInOrder),
}

fn partition_number(path: &Path, suffix: &str) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix('p')?.strip_suffix(suffix)?.parse().ok()
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)?;
    std::io::Write::write_all(&mut &file, bytes)?;
    file.sync_all()?;
    std::fs::rename(partial, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::processed_row::RowContent;
    use crate::pipeline::split::{ClassTally, SplitMode};

    fn row(order: u64) -> ProcessedRow {
        ProcessedRow { order: (order, order), split_hash: 0, target: 0, content: RowContent::new(None, "t", &[1, 2]) }
    }

    #[test]
    fn finished_partitions_survive_a_reopen_with_the_same_fingerprint_only() {
        let dir = tempfile::tempdir().unwrap();
        let bucketing = Bucketing::with_bits(1);
        let boundaries = ClassTally::default().boundary(0.2, SplitMode::Exact);
        let summary = PartitionSummary {
            counts: PartitionCounts { rows: 3, empty_cleaned_texts: 0, truncated_rows: 1 },
            boundaries: vec![boundaries],
        };
        {
            let (work, finished) = WorkDir::open(dir.path(), "a", bucketing).unwrap();
            assert!(finished.is_empty());
            work.finish_partition(3, &mut [row(2), row(1), row(5)], &summary).unwrap();
            // A partition cut off before its .done file does not count.
            write_run(&work.run_path(4), &mut [row(9)], bucketing).unwrap();
        }
        let (work, finished) = WorkDir::open(dir.path(), "a", bucketing).unwrap();
        assert_eq!(finished, BTreeMap::from([(3, summary)]));
        assert!(work.run_path(3).exists());
        let (_, finished) = WorkDir::open(dir.path(), "b", bucketing).unwrap();
        assert!(finished.is_empty());
        assert!(!work.run_path(3).exists());
    }

    #[test]
    fn rows_kept_in_memory_come_back_in_the_order_spilled_rows_do() {
        let dir = tempfile::tempdir().unwrap();
        let spread = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Partitions finished out of order, as workers finish them.
        let partitions: [(u64, Vec<u64>); 3] = [(2, vec![9, 4]), (0, vec![1, 7, 3]), (1, vec![8, 2, 6, 5])];
        let summary = PartitionSummary::default();
        let (work, _) = WorkDir::open(dir.path(), "a", Bucketing::with_bits(2)).unwrap();
        let mut orders = Vec::new();
        for kept in [FinishedRows::Spilled(work), FinishedRows::in_memory(9)] {
            for (partition, keys) in &partitions {
                let rows = keys.iter().map(|&k| row(spread(k))).collect();
                kept.finish_partition(*partition, rows, &summary).unwrap();
            }
            let rows = match kept.into_ordered(3).unwrap() {
                OrderedRows::InMemory(rows) => rows,
                OrderedRows::Streamed(rows) => rows.collect::<Result<Vec<_>>>().unwrap(),
            };
            orders.push(rows.iter().map(|r| r.order).collect::<Vec<_>>());
        }
        let mut expected: Vec<(u64, u64)> = (1..10).map(|k| (spread(k), spread(k))).collect();
        expected.sort();
        assert_eq!(orders, [expected.clone(), expected]);
    }
}
