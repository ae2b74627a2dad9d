//! The job spec: what a user asks for, with defaults that reproduce the
//! course (Made With ML) pipeline.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::compression::Compression;
use super::split::SplitMode;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Parquet,
    Jsonl,
}

impl InputFormat {
    /// The format a file name's extension names, if any.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit('.').next()?;
        match ext {
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Parquet => "parquet",
            Self::Jsonl => "jsonl",
        }
    }

    /// The spec's format if given, else the file name's (through a `.gz`
    /// or `.zst` suffix), and the input's compression.
    pub fn resolve(explicit: Option<Self>, file_name: &str) -> Result<(Self, Compression)> {
        let (compression, stem) = Compression::split_name(file_name);
        let format = explicit.or_else(|| Self::from_file_name(stem)).ok_or_else(|| {
            Error::UnsupportedFormat(format!(
                "cannot tell the format of '{file_name}': name it .csv, .parquet or .jsonl (optionally .gz or .zst), or set \"format\" in the spec"
            ))
        })?;
        if format == Self::Parquet && compression != Compression::None {
            return Err(Error::UnsupportedFormat(format!(
                "'{file_name}': Parquet compresses its own pages; send the .parquet file as it is"
            )));
        }
        Ok((format, compression))
    }
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerSpec {
    /// A `tokenizer.json` or `vocab.txt` at a URI.
    File(String),
    /// A Hugging Face hub repository (`HF_ENDPOINT` is honoured), cached in the store.
    Pretrained(String),
    /// A WordPiece vocabulary trained on the cleaned train split.
    Train { vocab_size: usize },
    /// Set by prepd for a tokenizer uploaded with the job: its sha256.
    Uploaded { sha256: String },
}

impl Default for TokenizerSpec {
    /// The course tokenizes with SciBERT's uncased vocabulary.
    fn default() -> Self {
        TokenizerSpec::Pretrained("allenai/scibert_scivocab_uncased".into())
    }
}

/// What to do with a row whose label is null or empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NullLabelPolicy {
    /// Fail the job, naming the first such row.
    #[default]
    Error,
    /// Leave such rows out of both splits and count them in `report.json`.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CleaningOptions {
    /// `false` tokenizes the joined text as it is.
    pub enabled: bool,
    /// Replaces NLTK's English list; order matters (leftmost-first alternation).
    pub stopwords: Option<Vec<String>>,
}

impl Default for CleaningOptions {
    fn default() -> Self {
        Self { enabled: true, stopwords: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobSpec {
    /// The dataset's URI (`https://`, `s3://`, `gs://`, `az://`, `file://`),
    /// for jobs submitted as JSON; absent for uploads.
    #[schema(example = "s3://datasets/madewithml/dataset.csv")]
    pub source: Option<String>,
    /// Input format; by default taken from the file name.
    pub format: Option<InputFormat>,
    /// Joined with one space, in this order, to make the text.
    pub text_columns: Vec<String>,
    pub label_column: String,
    /// Copied to the artifacts. Unset: `id` when the dataset has it.
    pub id_column: Option<String>,
    /// Fraction of each class that goes to validation: `ceil(test_size * n)` rows.
    pub test_size: f64,
    pub seed: u64,
    /// A column whose value keys a row's split side and order; unset: the
    /// row's position in the input.
    pub split_key: Option<String>,
    /// `exact` (per class `ceil(test_size * n)`) or `stable` (no row changes
    /// side when rows are appended; counts exact only on average).
    pub split_mode: SplitMode,
    /// Truncate token sequences to this many tokens, `[CLS]` and `[SEP]` included.
    pub max_length: Option<usize>,
    pub tokenizer: TokenizerSpec,
    pub cleaning: CleaningOptions,
    pub null_labels: NullLabelPolicy,
    /// Rows per Parquet part file.
    pub rows_per_part: usize,
}

impl Default for JobSpec {
    fn default() -> Self {
        Self {
            source: None,
            format: None,
            text_columns: vec!["title".into(), "description".into()],
            label_column: "tag".into(),
            id_column: None,
            test_size: 0.2,
            seed: 1234,
            split_key: None,
            split_mode: SplitMode::Exact,
            max_length: None,
            tokenizer: TokenizerSpec::default(),
            cleaning: CleaningOptions::default(),
            null_labels: NullLabelPolicy::default(),
            rows_per_part: 250_000,
        }
    }
}

impl JobSpec {
    pub fn validate(&self) -> Result<()> {
        if !(self.test_size > 0.0 && self.test_size < 1.0) {
            return Err(Error::invalid_field("test_size", format!("must be in (0, 1), got {}", self.test_size)));
        }
        if self.text_columns.is_empty() {
            return Err(Error::invalid_field("text_columns", "name at least one column"));
        }
        if self.text_columns.iter().any(String::is_empty) || self.label_column.is_empty() {
            return Err(Error::invalid_field("text_columns", "column names must not be empty"));
        }
        if self.max_length.is_some_and(|n| n < 2) {
            return Err(Error::invalid_field("max_length", "must leave room for [CLS] and [SEP] (at least 2)"));
        }
        if self.rows_per_part == 0 {
            return Err(Error::invalid_field("rows_per_part", "must be at least 1"));
        }
        if let TokenizerSpec::Train { vocab_size } = self.tokenizer
            && !(16..=1_000_000).contains(&vocab_size)
        {
            return Err(Error::invalid_field("tokenizer.train.vocab_size", "must be between 16 and 1000000"));
        }
        Ok(())
    }

    /// Parses a spec from JSON, naming the offending field on error.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let spec: Self = serde_json::from_slice(bytes).map_err(|e| Error::invalid_field("config", e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reproduce_the_course() {
        let spec = JobSpec::from_json(b"{}").unwrap();
        assert_eq!(spec.text_columns, ["title", "description"]);
        assert_eq!(spec.label_column, "tag");
        assert_eq!(spec.test_size, 0.2);
        assert_eq!(spec.seed, 1234);
        assert_eq!(spec.max_length, None);
    }

    #[test]
    fn tokenizer_forms_parse() {
        let spec = JobSpec::from_json(br#"{"tokenizer": {"train": {"vocab_size": 100}}}"#).unwrap();
        assert_eq!(spec.tokenizer, TokenizerSpec::Train { vocab_size: 100 });
        let spec = JobSpec::from_json(br#"{"tokenizer": {"pretrained": "bert-base-uncased"}}"#).unwrap();
        assert_eq!(spec.tokenizer, TokenizerSpec::Pretrained("bert-base-uncased".into()));
    }

    #[test]
    fn bad_fields_are_named() {
        for (json, field) in [
            (r#"{"test_size": 1.0}"#, "test_size"),
            (r#"{"test_size": 0}"#, "test_size"),
            (r#"{"text_columns": []}"#, "text_columns"),
            (r#"{"bogus": 1}"#, "config"),
        ] {
            match JobSpec::from_json(json.as_bytes()) {
                Err(Error::InvalidField { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn format_from_name() {
        assert_eq!(InputFormat::from_file_name("a/b.CSV"), Some(InputFormat::Csv));
        assert_eq!(InputFormat::from_file_name("x.ndjson"), Some(InputFormat::Jsonl));
        assert_eq!(InputFormat::from_file_name("x.txt"), None);
    }
}
