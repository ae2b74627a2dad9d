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

use serde::{Deserialize, Serialize};

use super::artifacts::ProcessedRow;
use super::sorted_runs::{Bucketing, write_run};
use super::split::Boundary;
use crate::error::{Error, Result};

/// Changes whenever what a work directory holds is laid out differently, so
/// that a directory left by an older prepd is started over, not misread.
pub const WORK_FORMAT: u32 = 2;

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
    use crate::pipeline::split::{ClassTally, SplitMode};

    fn row(order: u64) -> ProcessedRow {
        ProcessedRow { order: (order, order), split_hash: 0, id: None, text: "t".into(), ids: vec![1, 2], target: 0 }
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
}
