//! What a job publishes: the Parquet splits and the JSON documents beside
//! them, and how each is named, typed and checksummed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::preprocessor::ClassToIndex;
use super::spec::{InputFormat, JobSpec};
use crate::error::{Error, Result};

pub const MANIFEST: &str = "manifest.json";
pub const PREPROCESSOR: &str = "preprocessor.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const CLASS_TO_INDEX: &str = "class_to_index.json";
pub const REPORT: &str = "report.json";
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Receives a job's artifacts by name (`train/part-00000.parquet`, ...).
pub trait ArtifactSink: Sync {
    fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()>;
}

pub fn content_type(name: &str) -> &'static str {
    if name.ends_with(".parquet") {
        "application/vnd.apache.parquet"
    } else if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// An artifact is a relative path of plain segments: no `..`, no absolute
/// path, nothing a store could resolve outside a job's prefix.
pub fn is_valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactEntry {
    #[schema(example = "train/part-00000.parquet")]
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    pub content_type: String,
    /// Rows, for Parquet parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl ArtifactEntry {
    pub fn describe(name: &str, bytes: &[u8], rows: Option<u64>) -> Self {
        Self {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            content_type: content_type(name).to_string(),
            rows,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SplitCounts {
    pub train: u64,
    pub validation: u64,
}

/// The dataset a job read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InputSummary {
    /// In the order their rows are numbered (by path).
    pub files: Vec<InputFile>,
    pub bytes: u64,
    /// A single file's sha256; for several files, the sha256 of their
    /// `sha256sum` lines (`{sha256}  {name}\n`, in order).
    pub sha256: String,
}

impl InputSummary {
    pub fn of_files(files: Vec<InputFile>) -> Self {
        let bytes = files.iter().map(|f| f.bytes).sum();
        let sha256 = match files.as_slice() {
            [one] => one.sha256.clone(),
            many => {
                let mut hasher = Sha256::new();
                for file in many {
                    hasher.update(format!("{}  {}\n", file.sha256, file.name));
                }
                hex::encode(hasher.finalize())
            }
        };
        Self { files, bytes, sha256 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InputFile {
    /// The file's path within the source (its name, for a single file).
    pub name: String,
    pub format: InputFormat,
    pub bytes: u64,
    pub sha256: String,
    /// Data rows read from it.
    pub rows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RowCounts {
    /// Data rows read from the input.
    pub input: u64,
    /// Rows left out by `null_labels: "skip"`.
    pub skipped: u64,
    pub train: u64,
    pub validation: u64,
}

/// `manifest.json`: a pure function of the input bytes and the spec (no
/// job id, no clock), published last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    pub format_version: u32,
    pub prepd_version: String,
    pub spec: JobSpec,
    pub input: InputSummary,
    pub rows: RowCounts,
    pub classes: BTreeMap<String, SplitCounts>,
    pub class_to_index: ClassToIndex,
    pub tokenizer_sha256: String,
    pub unicode_version: String,
    pub artifacts: Vec<ArtifactEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SmallClass {
    pub label: String,
    pub rows: u64,
}

/// `report.json`: what a user should know about the data's quality.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QualityReport {
    pub rows: RowCounts,
    /// Positions (1-based data rows) of the first rows with a null label.
    pub null_label_rows: Vec<u64>,
    /// Rows whose cleaned text is empty (they encode as `[CLS] [SEP]`).
    pub empty_cleaned_texts: u64,
    /// Rows cut to `max_length` tokens.
    pub truncated_rows: u64,
    /// Classes too small to leave a row in train after taking
    /// `ceil(test_size * n)` for validation: kept wholly in train.
    pub classes_too_small: Vec<SmallClass>,
    pub classes: BTreeMap<String, SplitCounts>,
    pub tokens: TokenStats,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenStats {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
}

pub fn to_json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(Error::internal)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// How the `id` column is typed in Parquet: integers when every id is one
/// (as pandas would read the course's CSV), text otherwise. Ordered so that
/// the files of a dataset agree on their maximum: any file without ids
/// leaves the column out, any text id makes the column text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdColumn {
    Integer,
    Text,
    Absent,
}

impl IdColumn {
    /// Integers when every present id reads as one, else text.
    pub fn of_ids<'a>(ids: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let all_integers = ids.into_iter().flatten().all(|id| Self::integer(id).is_some());
        if all_integers { IdColumn::Integer } else { IdColumn::Text }
    }

    /// An id as the integer column holds it: the id read as an `i64`, white
    /// space around it ignored.
    pub fn integer(id: &str) -> Option<i64> {
        // Most ids are a few digits: read here, where `trim` and `parse`
        // took 4% of a job's time for two looks at each of a million ids.
        const DIGITS_THAT_FIT: usize = 18;
        if (1..=DIGITS_THAT_FIT).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) {
            return Some(id.bytes().fold(0, |n, digit| n * 10 + i64::from(digit - b'0')));
        }
        id.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ids_read_as_rust_reads_them_trimmed() {
        let ids = ["0", "7", "0042", "123456789012345678", "1234567890123456789", "9223372036854775807"];
        let more = ["9223372036854775808", "-5", "+5", " 12\t", "\u{a0}3", "", " ", "1e3", "1_000", "١٢", "12a", "--1"];
        for id in ids.into_iter().chain(more) {
            assert_eq!(IdColumn::integer(id), id.trim().parse::<i64>().ok(), "{id:?}");
        }
    }

    #[test]
    fn artifact_names_stay_inside_the_job() {
        assert!(is_valid_artifact_name("train/part-00000.parquet"));
        assert!(is_valid_artifact_name("manifest.json"));
        for bad in ["", "../x", "train/../../x", "/etc/passwd", "a//b", "a/./b", "a\\b"] {
            assert!(!is_valid_artifact_name(bad), "{bad}");
        }
    }
}
