//! BERT WordPiece tokenization through the `tokenizers` crate, with the
//! reference's settings: `[CLS]` pieces `[SEP]`, `##` continuation, words
//! over 100 characters become `[UNK]`, and no padding or truncation unless
//! the spec asks for a maximum length.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    Model, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::clean_text_wordpiece::CleanTextEncoder;
use super::wordpiece_trainer::train_vocab;
use crate::error::{Error, Result};

pub const UNK: &str = "[UNK]";
pub const CLS: &str = "[CLS]";
pub const SEP: &str = "[SEP]";
const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", UNK, CLS, SEP, "[MASK]"];
const MAX_INPUT_CHARS_PER_WORD: usize = 100;

/// A loaded WordPiece tokenizer and the canonical `tokenizer.json` it was
/// loaded from (padding and truncation removed), which is what prepd stores
/// and hashes.
#[derive(Clone)]
pub struct WordPieceTokenizer {
    inner: Tokenizer,
    /// The same pipeline specialised for cleaned text, when it can be.
    clean_text: Option<Arc<CleanTextEncoder>>,
    json: String,
    sha256: String,
    max_length: Option<usize>,
}

impl std::fmt::Debug for WordPieceTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordPieceTokenizer").field("sha256", &self.sha256).finish()
    }
}

fn tokenizer_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::invalid_field("tokenizer", format!("{what}: {err}"))
}

impl WordPieceTokenizer {
    /// A `tokenizer.json` (JSON object) or a WordPiece `vocab.txt` (one token a line).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|e| tokenizer_error("not UTF-8", e))?;
        if text.trim_start().starts_with('{') {
            let tokenizer =
                Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error("not a valid tokenizer.json", e))?;
            Self::from_tokenizer(tokenizer)
        } else {
            Self::from_vocab(text)
        }
    }

    /// The uncased BERT pipeline around a `vocab.txt`, as
    /// `BertTokenizer(vocab_file, do_lower_case=True)` builds it.
    pub fn from_vocab(vocab_txt: &str) -> Result<Self> {
        let vocab = read_vocab(vocab_txt);
        if vocab.is_empty() {
            return Err(tokenizer_error("vocab.txt", "empty vocabulary"));
        }
        for special in [UNK, CLS, SEP] {
            if !vocab.contains_key(special) {
                return Err(tokenizer_error("vocab.txt", format!("no {special} token")));
            }
        }
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token(UNK.into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(MAX_INPUT_CHARS_PER_WORD)
            .build()
            .map_err(|e| tokenizer_error("vocab.txt", e))?;
        Self::assemble(model)
    }

    /// Trains a WordPiece vocabulary of `vocab_size` on `texts` (the cleaned
    /// train split) and wraps it in the uncased BERT pipeline. Words are what
    /// that pipeline's normalizer and pre-tokenizer make of the texts.
    pub fn train<I>(texts: I, vocab_size: usize) -> Result<Self>
    where
        I: Iterator<Item = String>,
    {
        let normalizer = BertNormalizer::new(true, true, None, true);
        let mut word_counts: BTreeMap<String, u64> = BTreeMap::new();
        for text in texts {
            let mut normalized = NormalizedString::from(text.as_str());
            normalizer.normalize(&mut normalized).map_err(|e| tokenizer_error("training", e))?;
            let mut words = PreTokenizedString::from(normalized);
            BertPreTokenizer.pre_tokenize(&mut words).map_err(|e| tokenizer_error("training", e))?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *word_counts.entry(word.to_string()).or_default() += 1;
            }
        }
        let vocab = train_vocab(&word_counts, &SPECIAL_TOKENS, vocab_size);
        Self::from_vocab(&(vocab.join("\n") + "\n"))
    }

    fn assemble(model: WordPiece) -> Result<Self> {
        let cls = model.token_to_id(CLS).ok_or_else(|| tokenizer_error("vocab", "no [CLS]"))?;
        let sep = model.token_to_id(SEP).ok_or_else(|| tokenizer_error("vocab", "no [SEP]"))?;
        let mut tokenizer = uncased_bert_pipeline(model)?;
        tokenizer.with_post_processor(Some(BertProcessing::new((SEP.into(), sep), (CLS.into(), cls))));
        Self::from_tokenizer(tokenizer)
    }

    fn from_tokenizer(mut tokenizer: Tokenizer) -> Result<Self> {
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| tokenizer_error("truncation", e))?;
        let json = tokenizer.to_string(false).map_err(|e| Error::internal(format!("serialising tokenizer: {e}")))?;
        let sha256 = hex::encode(Sha256::digest(json.as_bytes()));
        let clean_text = CleanTextEncoder::for_tokenizer(&tokenizer).map(Arc::new);
        Ok(Self { inner: tokenizer, clean_text, json, sha256, max_length: None })
    }

    /// Truncate every encoding to `max_length` tokens, special tokens included
    /// (as `truncation=True, max_length=N` does in `transformers`).
    pub fn with_max_length(mut self, max_length: Option<usize>) -> Result<Self> {
        let params = max_length.map(|max_length| TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        });
        self.inner.with_truncation(params).map_err(|e| Error::invalid_field("max_length", e.to_string()))?;
        self.max_length = max_length;
        Ok(self)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_reporting_truncation(text)?.0)
    }

    /// The ids, and whether truncation to the maximum length cut any.
    /// Cleaned text takes the specialised path when there is one; it gives
    /// the same ids as the general pipeline, which handles everything else.
    pub fn encode_reporting_truncation(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        if let Some(encoded) = self.clean_text.as_ref().and_then(|fast| fast.encode(text, self.max_length)) {
            return Ok(encoded);
        }
        self.encode_general(text)
    }

    /// The specialised path for cleaned text, if this tokenizer has one.
    pub(super) fn clean_text_encoder(&self) -> Option<&CleanTextEncoder> {
        self.clean_text.as_deref()
    }

    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }

    /// Whether cleaned text has a specialised path for this tokenizer.
    pub fn has_clean_text_path(&self) -> bool {
        self.clean_text.is_some()
    }

    /// The `tokenizers` crate's pipeline, whatever the text: the reference
    /// the specialised path is tested and benchmarked against.
    pub fn encode_general(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let encoding = self.inner.encode_fast(text, true).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        Ok((encoding.get_ids().to_vec(), !encoding.get_overflowing().is_empty()))
    }

    /// The canonical `tokenizer.json`, without padding or truncation.
    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The id padding uses: the tokenizer's `[PAD]`, else 0.
    pub fn pad_id(&self) -> u32 {
        self.inner.token_to_id("[PAD]").unwrap_or(0)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// `BertTokenizer(do_lower_case=True)`'s normalizer and pre-tokenizer around
/// a WordPiece model: clean text, split CJK characters, lower-case and strip
/// accents, split on whitespace and punctuation.
fn uncased_bert_pipeline(model: WordPiece) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(|e| tokenizer_error("normalizer", e))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    Ok(tokenizer)
}

/// A `vocab.txt` as `transformers` reads it: text-mode lines (`\n`, `\r\n`
/// and `\r` all end a line), nothing stripped but the line end, and a
/// repeated token keeping its last line number.
fn read_vocab(vocab_txt: &str) -> ahash::AHashMap<String, u32> {
    let normalized = vocab_txt.replace("\r\n", "\n").replace('\r', "\n");
    let body = normalized.strip_suffix('\n').unwrap_or(&normalized);
    if body.is_empty() && normalized.is_empty() {
        return ahash::AHashMap::new();
    }
    body.split('\n').enumerate().map(|(id, token)| (token.to_string(), id as u32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nun\n##aff\n##able\n";

    #[test]
    fn vocab_txt_builds_bert_pipeline() {
        let tok = WordPieceTokenizer::from_vocab(VOCAB).unwrap();
        assert_eq!(tok.encode("hello unaffable world").unwrap(), vec![2, 5, 7, 8, 9, 6, 3]);
        assert_eq!(tok.encode("zzz").unwrap(), vec![2, 1, 3]);
        assert_eq!(tok.encode("").unwrap(), vec![2, 3]);
        let long_word = "hello".repeat(21);
        assert_eq!(tok.encode(&long_word).unwrap(), vec![2, 1, 3]);
    }

    #[test]
    fn vocab_lines_are_read_as_python_reads_them() {
        let vocab = read_vocab("a\r\nb \rc\n\nd");
        assert_eq!(vocab["a"], 0);
        assert_eq!(vocab["b "], 1);
        assert_eq!(vocab["c"], 2);
        assert_eq!(vocab[""], 3);
        assert_eq!(vocab["d"], 4);
    }

    #[test]
    fn json_round_trip_is_stable() {
        let tok = WordPieceTokenizer::from_vocab(VOCAB).unwrap();
        let again = WordPieceTokenizer::from_bytes(tok.json().as_bytes()).unwrap();
        assert_eq!(tok.json(), again.json());
        assert_eq!(tok.sha256(), again.sha256());
    }

    #[test]
    fn truncation_keeps_special_tokens() {
        let tok = WordPieceTokenizer::from_vocab(VOCAB).unwrap().with_max_length(Some(3)).unwrap();
        assert_eq!(tok.encode("hello world world").unwrap(), vec![2, 5, 3]);
    }

    #[test]
    fn training_is_deterministic() {
        let texts =
            || ["machine learning models", "learning rate schedules", "deep models"].map(String::from).into_iter();
        let a = WordPieceTokenizer::train(texts(), 60).unwrap();
        let b = WordPieceTokenizer::train(texts(), 60).unwrap();
        assert_eq!(a.json(), b.json());
        let ids = a.encode("learning").unwrap();
        assert_eq!(ids.first(), Some(&2));
    }
}
