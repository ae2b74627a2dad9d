//! The fitted preprocessor: cleaning config, class mapping and tokenizer.
//! The batch job and `/preprocess` both call [`FittedPreprocessor`], so
//! serving can never drift from what training saw.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::clean::{CleaningConfig, TextCleaner};
use super::clean_encode::{clean_and_tokenize, clean_and_tokenize_into};
use super::ingest::join_text;
use super::processed_row::RowContent;
use super::pyunicode::UNICODE_VERSION;
use super::spec::TokenizerSpec;
use super::tokenize::WordPieceTokenizer;
use crate::error::{Error, Result};

pub const PREPROCESSOR_FORMAT_VERSION: u32 = 1;

/// Label -> index, from the sorted distinct labels of the train split.
pub type ClassToIndex = BTreeMap<String, i64>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenizerReference {
    pub source: TokenizerSpec,
    /// sha256 of the stored `tokenizer.json`.
    pub sha256: String,
    pub vocab_size: usize,
}

/// The content of `preprocessor.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessorConfig {
    pub format_version: u32,
    pub text_columns: Vec<String>,
    pub label_column: String,
    pub cleaning: CleaningConfig,
    pub class_to_index: ClassToIndex,
    pub tokenizer: TokenizerReference,
    pub max_length: Option<usize>,
    /// The Unicode version of the Python semantics the cleaning reproduces.
    pub unicode_version: String,
}

/// One record's model inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub target: Option<i64>,
}

/// A job's row, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRow {
    pub content: RowContent,
    /// `max_length` cut tokens off.
    pub truncated: bool,
}

/// One row's text after cleaning, and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedText {
    pub cleaned: String,
    pub ids: Vec<u32>,
    /// `max_length` cut tokens off.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct FittedPreprocessor {
    config: PreprocessorConfig,
    cleaner: TextCleaner,
    tokenizer: WordPieceTokenizer,
}

impl FittedPreprocessor {
    pub fn fit(
        text_columns: Vec<String>,
        label_column: String,
        cleaning: CleaningConfig,
        class_to_index: ClassToIndex,
        tokenizer_source: TokenizerSpec,
        tokenizer: WordPieceTokenizer,
        max_length: Option<usize>,
    ) -> Result<Self> {
        let tokenizer = tokenizer.with_max_length(max_length)?;
        let config = PreprocessorConfig {
            format_version: PREPROCESSOR_FORMAT_VERSION,
            text_columns,
            label_column,
            cleaning: cleaning.clone(),
            class_to_index,
            tokenizer: TokenizerReference {
                source: tokenizer_source,
                sha256: tokenizer.sha256().to_string(),
                vocab_size: tokenizer.vocab_size(),
            },
            max_length,
            unicode_version: UNICODE_VERSION.to_string(),
        };
        Ok(Self { config, cleaner: TextCleaner::new(cleaning), tokenizer })
    }

    /// Loads what a job stored: `preprocessor.json` and `tokenizer.json`.
    pub fn from_artifacts(preprocessor_json: &[u8], tokenizer_json: &[u8]) -> Result<Self> {
        let config: PreprocessorConfig = serde_json::from_slice(preprocessor_json)
            .map_err(|e| Error::internal(format!("unreadable preprocessor.json: {e}")))?;
        if config.format_version != PREPROCESSOR_FORMAT_VERSION {
            return Err(Error::Conflict(format!(
                "preprocessor.json has format version {}, this prepd reads {PREPROCESSOR_FORMAT_VERSION}",
                config.format_version
            )));
        }
        let tokenizer = WordPieceTokenizer::from_bytes(tokenizer_json)?;
        if tokenizer.sha256() != config.tokenizer.sha256 {
            return Err(Error::internal("tokenizer.json does not match the sha256 in preprocessor.json"));
        }
        let tokenizer = tokenizer.with_max_length(config.max_length)?;
        let cleaner = TextCleaner::new(config.cleaning.clone());
        Ok(Self { config, cleaner, tokenizer })
    }

    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &WordPieceTokenizer {
        &self.tokenizer
    }

    pub fn class_to_index(&self) -> &ClassToIndex {
        &self.config.class_to_index
    }

    /// The same preprocessor with the class mapping a job learned after its
    /// texts were encoded (a job read in one pass learns its classes as it
    /// encodes).
    pub fn with_class_to_index(mut self, class_to_index: ClassToIndex) -> Self {
        self.config.class_to_index = class_to_index;
        self
    }

    pub fn clean(&self, joined_text: &str) -> String {
        self.cleaner.clean(joined_text)
    }

    /// Cleans and tokenizes the joined text of one row: the core both doors share.
    pub fn encode_text(&self, joined_text: &str) -> Result<EncodedText> {
        clean_and_tokenize(&self.cleaner, &self.tokenizer, joined_text)
    }

    /// A job's row: its id, and its joined text cleaned and tokenized,
    /// packed as the job keeps it.
    pub fn encode_row(&self, id: Option<&str>, joined_text: &str) -> Result<EncodedRow> {
        clean_and_tokenize_into(&self.cleaner, &self.tokenizer, joined_text, |cleaned, ids, truncated| EncodedRow {
            content: RowContent::new(id, cleaned, ids),
            truncated,
        })
    }

    pub fn target(&self, label: &str) -> Option<i64> {
        self.config.class_to_index.get(label).copied()
    }

    /// Encodes one raw record (a JSON object with the text columns, and the
    /// label column optionally). `index` names the record in errors.
    pub fn encode_record(&self, record: &serde_json::Map<String, serde_json::Value>, index: usize) -> Result<Encoded> {
        let field = |name: &str| -> Result<Option<String>> {
            match record.get(name) {
                None => Err(Error::invalid_field(format!("records[{index}].{name}"), "missing")),
                Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Ok(Some(other.to_string())),
            }
        };
        let texts = self.config.text_columns.iter().map(|c| field(c)).collect::<Result<Vec<_>>>()?;
        let joined = join_text(texts.iter().map(Option::as_deref));
        let ids = self.encode_text(&joined)?.ids;
        let label_column = &self.config.label_column;
        let target = match record.get(label_column) {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => {
                let label = field(label_column)?.unwrap_or_default();
                Some(self.target(&label).ok_or_else(|| {
                    Error::invalid_field(
                        format!("records[{index}].{label_column}"),
                        format!("label '{label}' is not one of the job's classes"),
                    )
                })?)
            }
        };
        Ok(Encoded { ids, target })
    }
}
