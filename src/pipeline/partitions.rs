//! A job's work directory: the partitions it has finished, kept so that a
//! job cut off mid-way (a crash, a kill, a stop) resumes from them instead
//! of starting over.
//!
//! A partition is a fixed range of input rows (`partition_rows` of them, by
//! position across the dataset's files). Once all its rows are cleaned and
//! tokenized, its train and validation rows are written as two sorted runs,
//! then a `.done` file with its counts: a partition is finished exactly when
//! its `.done` file exists. Everything is written beside and renamed into
//! place, so a crash leaves no half-written file that looks whole.
//!
//! ```text
//! {work_dir}/fingerprint            what the partitions were computed for
//! {work_dir}/partitions/p00000012.train.run
//! {work_dir}/partitions/p00000012.val.run
//! {work_dir}/partitions/p00000012.done    counts (JSON), written last
//! ```
//!
//! The fingerprint covers everything a partition's bytes depend on (input
//! checksum, spec, fitted preprocessor, partition size, buckets, prepd
//! version); a work directory left by another computation is emptied, never
//! reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::artifacts::ProcessedRow;
use super::sorted_runs::{Bucketing, write_run};
use crate::error::{Error, Result};

/// What a finished partition holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCounts {
    pub train: u64,
    pub validation: u64,
    pub empty_cleaned_texts: u64,
    pub truncated_rows: u64,
}

impl PartitionCounts {
    pub fn rows(&self) -> u64 {
        self.train + self.validation
    }

    pub fn add(&mut self, other: &PartitionCounts) {
        self.train += other.train;
        self.validation += other.validation;
        self.empty_cleaned_texts += other.empty_cleaned_texts;
        self.truncated_rows += other.truncated_rows;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitSide {
    Train,
    Validation,
}

impl SplitSide {
    fn run_suffix(self) -> &'static str {
        match self {
            SplitSide::Train => "train.run",
            SplitSide::Validation => "val.run",
        }
    }
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
    ) -> Result<(Self, BTreeMap<u64, PartitionCounts>)> {
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
            let counts: PartitionCounts = serde_json::from_slice(&std::fs::read(&path)?)
                .map_err(|e| Error::internal(format!("unreadable {}: {e}", path.display())))?;
            finished.insert(number, counts);
        }
        Ok((work, finished))
    }

    fn partitions_dir(&self) -> PathBuf {
        self.root.join("partitions")
    }

    pub fn bucketing(&self) -> Bucketing {
        self.bucketing
    }

    pub fn run_path(&self, partition: u64, side: SplitSide) -> PathBuf {
        self.partitions_dir().join(format!("p{partition:08}.{}", side.run_suffix()))
    }

    /// Writes a partition's rows (sorted here) and then marks it finished.
    pub fn finish_partition(
        &self,
        partition: u64,
        train: &mut [ProcessedRow],
        validation: &mut [ProcessedRow],
        counts: &PartitionCounts,
    ) -> Result<()> {
        write_run(&self.run_path(partition, SplitSide::Train), train, self.bucketing)?;
        write_run(&self.run_path(partition, SplitSide::Validation), validation, self.bucketing)?;
        let done = self.partitions_dir().join(format!("p{partition:08}.done"));
        write_atomically(&done, &serde_json::to_vec(counts).map_err(Error::internal)?)
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

    fn row(order: u64) -> ProcessedRow {
        ProcessedRow { order: (order, order), id: None, text: "t".into(), ids: vec![1, 2], target: 0 }
    }

    #[test]
    fn finished_partitions_survive_a_reopen_with_the_same_fingerprint_only() {
        let dir = tempfile::tempdir().unwrap();
        let bucketing = Bucketing::with_bits(1);
        let counts = PartitionCounts { train: 2, validation: 1, empty_cleaned_texts: 0, truncated_rows: 1 };
        {
            let (work, finished) = WorkDir::open(dir.path(), "a", bucketing).unwrap();
            assert!(finished.is_empty());
            work.finish_partition(3, &mut [row(2), row(1)], &mut [row(5)], &counts).unwrap();
            // A partition cut off before its .done file does not count.
            write_run(&work.run_path(4, SplitSide::Train), &mut [row(9)], bucketing).unwrap();
        }
        let (work, finished) = WorkDir::open(dir.path(), "a", bucketing).unwrap();
        assert_eq!(finished, BTreeMap::from([(3, counts)]));
        assert!(work.run_path(3, SplitSide::Validation).exists());
        let (_, finished) = WorkDir::open(dir.path(), "b", bucketing).unwrap();
        assert!(finished.is_empty());
        assert!(!work.run_path(3, SplitSide::Validation).exists());
    }
}
