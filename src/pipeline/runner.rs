//! One job, start to end: scan the input (labels, split keys, checksum),
//! decide the stratified split, fit the class mapping (and the tokenizer if
//! asked), clean and tokenize every row on the worker pool, write the
//! splits, then the documents, the manifest last.
//!
//! Synchronous and free of I/O other than the input source and the
//! artifact sink it is given.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::artifacts::*;
use super::clean::{CleaningConfig, TextCleaner, default_stopwords};
use super::ingest::{self, InputSource, ReadSettings, RowBatch};
use super::preprocessor::{ClassToIndex, FittedPreprocessor};
use super::pyunicode::UNICODE_VERSION;
use super::sorted_runs::SortedRuns;
use super::spec::{InputFormat, JobSpec, NullLabelPolicy, TokenizerSpec};
use super::split::{Boundary, ClassSplit, ClassTally, RowKey, membership_hash, order_hash};
use super::tokenize::WordPieceTokenizer;
use crate::error::{Error, InputLocation, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Queued,
    Ingest,
    Split,
    Fit,
    Process,
    Write,
    Done,
}

/// How a running job reports and is stopped.
pub trait JobObserver: Sync {
    fn stage(&self, stage: Stage);
    fn progress(&self, rows_done: u64, rows_total: u64);
    fn is_cancelled(&self) -> bool;
}

/// The tokenizer a job starts with: loaded already, or to train.
pub enum TokenizerPlan {
    Ready(Box<WordPieceTokenizer>),
    Train { vocab_size: usize },
}

#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Batch size (a batch is what a worker takes) and decompression caps.
    pub read: ReadSettings,
    /// Where processed rows wait, in sorted runs, to be written in order.
    pub scratch_dir: PathBuf,
}

pub struct JobOutcome {
    pub manifest: Manifest,
    pub report: QualityReport,
}

const NULL_LABEL_SAMPLE: usize = 20;

/// What the first pass learns: the input's checksum, and per class its
/// rows and how their membership hashes spread (nothing kept per row).
struct Scan {
    input: InputSummary,
    /// Data rows read, null labels included.
    rows: u64,
    /// Labels in order of first appearance; a label's class number is its index.
    labels: Vec<String>,
    class_numbers: HashMap<String, u32>,
    tallies: Vec<ClassTally>,
    null_label_rows: Vec<u64>,
    skipped: u64,
    id_column: IdColumn,
}

impl Scan {
    fn class_of(&self, label: Option<&str>) -> Option<u32> {
        self.class_numbers.get(label.filter(|l| !l.is_empty())?).copied()
    }
}

fn row_key<'a>(batch: &'a RowBatch, i: usize) -> RowKey<'a> {
    match &batch.split_keys {
        Some(keys) => RowKey::Value(keys[i].as_deref().unwrap_or("")),
        None => RowKey::Position(batch.first_position + i as u64),
    }
}

fn check_cancel(observer: &dyn JobObserver) -> Result<()> {
    if observer.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
}

fn input_summary(source: &dyn InputSource, format: InputFormat, observer: &dyn JobObserver) -> Result<InputSummary> {
    let mut reader = source.open()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
        if bytes % (256 << 20) < n as u64 {
            check_cancel(observer)?;
        }
    }
    Ok(InputSummary { name: source.name().to_string(), format, bytes, sha256: hex::encode(hasher.finalize()) })
}

fn scan(spec: &JobSpec, source: &dyn InputSource, settings: &RunSettings, observer: &dyn JobObserver) -> Result<Scan> {
    let (format, _) = InputFormat::resolve(spec.format, source.name())?;
    let input = input_summary(source, format, observer)?;
    let opened = ingest::open(source, spec, settings.read)?;
    let mut scan = Scan {
        input,
        rows: 0,
        labels: Vec::new(),
        class_numbers: HashMap::new(),
        tallies: Vec::new(),
        null_label_rows: Vec::new(),
        skipped: 0,
        id_column: if opened.columns.id.is_some() { IdColumn::Integer } else { IdColumn::Absent },
    };
    for batch in opened.batches {
        let batch = batch?;
        check_cancel(observer)?;
        for (i, label) in batch.labels.iter().enumerate() {
            let position = batch.first_position + i as u64;
            scan.rows += 1;
            let class = match label.as_deref() {
                Some(label) if !label.is_empty() => match scan.class_numbers.get(label) {
                    Some(&class) => class,
                    None => {
                        let class = scan.labels.len() as u32;
                        scan.class_numbers.insert(label.to_string(), class);
                        scan.labels.push(label.to_string());
                        scan.tallies.push(ClassTally::default());
                        class
                    }
                },
                _ => {
                    if spec.null_labels == NullLabelPolicy::Error {
                        return Err(Error::bad_input(
                            InputLocation::cell(position + 1, &spec.label_column),
                            "null or empty label (set \"null_labels\": \"skip\" to leave such rows out)",
                        ));
                    }
                    if scan.null_label_rows.len() < NULL_LABEL_SAMPLE {
                        scan.null_label_rows.push(position + 1);
                    }
                    scan.skipped += 1;
                    continue;
                }
            };
            scan.tallies[class as usize].add(membership_hash(spec.seed, row_key(&batch, i)));
        }
        if let Some(ids) = &batch.ids {
            let all_integers = ids.iter().flatten().all(|id| id.trim().parse::<i64>().is_ok());
            if !all_integers {
                scan.id_column = IdColumn::Text;
            }
        }
    }
    if scan.rows == 0 {
        return Err(Error::bad_input(InputLocation::default(), "the input has a header but no data rows"));
    }
    if scan.labels.is_empty() {
        return Err(Error::bad_input(InputLocation::column(&spec.label_column), "every label is null"));
    }
    Ok(scan)
}

/// Which rows go to validation, per class, and the class mapping.
struct SplitPlan {
    seed: u64,
    by_class: Vec<ClassSplit>,
    /// Index of each class number in the sorted class mapping.
    target_of_class: Vec<i64>,
    class_to_index: ClassToIndex,
}

impl SplitPlan {
    /// The second pass: keeps only the rows in each class's boundary bucket
    /// and selects the exact threshold among them.
    fn fit(
        spec: &JobSpec,
        source: &dyn InputSource,
        settings: &RunSettings,
        scan: &Scan,
        observer: &dyn JobObserver,
    ) -> Result<Self> {
        let mut boundaries: Vec<Boundary> =
            scan.tallies.iter().map(|t| t.boundary(spec.test_size, spec.split_mode)).collect();
        for batch in ingest::open(source, spec, settings.read)?.batches {
            let batch = batch?;
            check_cancel(observer)?;
            for (i, label) in batch.labels.iter().enumerate() {
                if let Some(class) = scan.class_of(label.as_deref()) {
                    let hash = membership_hash(spec.seed, row_key(&batch, i));
                    boundaries[class as usize].offer(hash, batch.first_position + i as u64);
                }
            }
        }
        let by_class = boundaries.into_iter().map(Boundary::finish).collect();
        // Every class keeps at least one train row, so the train split's
        // labels are all the labels.
        let mut sorted = scan.labels.clone();
        sorted.sort();
        let class_to_index: ClassToIndex = sorted.iter().enumerate().map(|(i, l)| (l.clone(), i as i64)).collect();
        let target_of_class = scan.labels.iter().map(|l| class_to_index[l]).collect();
        Ok(Self { seed: spec.seed, by_class, target_of_class, class_to_index })
    }

    /// A row's class number and whether it goes to validation; `None` for a
    /// row left out (null label).
    fn side(&self, scan: &Scan, batch: &RowBatch, i: usize) -> Option<(u32, bool)> {
        let class = scan.class_of(batch.labels[i].as_deref())?;
        let hash = membership_hash(self.seed, row_key(batch, i));
        Some((class, self.by_class[class as usize].is_validation(hash, batch.first_position + i as u64)))
    }
}

pub fn run(
    spec: &JobSpec,
    source: &dyn InputSource,
    tokenizer: TokenizerPlan,
    sink: &dyn ArtifactSink,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
    settings: &RunSettings,
) -> Result<JobOutcome> {
    spec.validate()?;
    observer.stage(Stage::Ingest);
    let scan = scan(spec, source, settings, observer)?;
    let rows_total = scan.rows - scan.skipped;
    observer.progress(0, rows_total);

    observer.stage(Stage::Split);
    let plan = SplitPlan::fit(spec, source, settings, &scan, observer)?;

    observer.stage(Stage::Fit);
    let cleaning = CleaningConfig {
        enabled: spec.cleaning.enabled,
        stopwords: spec.cleaning.stopwords.clone().unwrap_or_else(default_stopwords),
    };
    let (tokenizer, tokenizer_source) = match tokenizer {
        TokenizerPlan::Ready(tokenizer) => (*tokenizer, spec.tokenizer.clone()),
        TokenizerPlan::Train { vocab_size } => {
            let trained = train_tokenizer(spec, source, settings, &scan, &plan, &cleaning, vocab_size)?;
            let source = TokenizerSpec::Train { vocab_size };
            (trained, source)
        }
    };
    let preprocessor = FittedPreprocessor::fit(
        spec.text_columns.clone(),
        spec.label_column.clone(),
        cleaning,
        plan.class_to_index.clone(),
        tokenizer_source,
        tokenizer,
        spec.max_length,
    )?;

    observer.stage(Stage::Process);
    let processed = process(spec, source, settings, &scan, &plan, &preprocessor, observer, pool, rows_total)?;

    observer.stage(Stage::Write);
    check_cancel(observer)?;
    let outcome = write(spec, scan, plan, preprocessor, processed, sink)?;
    observer.stage(Stage::Done);
    Ok(outcome)
}

fn train_tokenizer(
    spec: &JobSpec,
    source: &dyn InputSource,
    settings: &RunSettings,
    scan: &Scan,
    plan: &SplitPlan,
    cleaning: &CleaningConfig,
    vocab_size: usize,
) -> Result<WordPieceTokenizer> {
    let cleaner = TextCleaner::new(cleaning.clone());
    let opened = ingest::open(source, spec, settings.read)?;
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let texts = opened.batches.map_while(|batch| match batch {
        Ok(batch) => Some(batch),
        Err(e) => {
            *failure.lock().unwrap() = Some(e);
            None
        }
    });
    let train_texts = texts.flat_map(|batch| {
        (0..batch.len())
            .filter(|&i| plan.side(scan, &batch, i).is_some_and(|(_, validation)| !validation))
            .map(|i| cleaner.clean(&batch.texts[i]))
            .collect::<Vec<_>>()
    });
    let trained = WordPieceTokenizer::train(train_texts, vocab_size);
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    trained
}

struct Processed {
    train: SortedRuns,
    validation: SortedRuns,
    empty_cleaned_texts: u64,
    truncated_rows: u64,
}

#[allow(clippy::too_many_arguments)]
fn process(
    spec: &JobSpec,
    source: &dyn InputSource,
    settings: &RunSettings,
    scan: &Scan,
    plan: &SplitPlan,
    preprocessor: &FittedPreprocessor,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
    rows_total: u64,
) -> Result<Processed> {
    let opened = ingest::open(source, spec, settings.read)?;
    let train = SortedRuns::new(&settings.scratch_dir, "train")?;
    let validation = SortedRuns::new(&settings.scratch_dir, "val")?;
    let rows_done = AtomicU64::new(0);
    let empty = AtomicU64::new(0);
    let truncated = AtomicU64::new(0);
    pool.install(|| {
        opened.batches.par_bridge().try_for_each(|batch| -> Result<()> {
            let batch = batch?;
            check_cancel(observer)?;
            let mut train_rows = Vec::with_capacity(batch.len());
            let mut validation_rows = Vec::new();
            for (i, text) in batch.texts.iter().enumerate() {
                let position = batch.first_position + i as u64;
                let Some((class, is_validation)) = plan.side(scan, &batch, i) else { continue };
                let encoded = preprocessor.encode_text(text)?;
                if encoded.cleaned.is_empty() {
                    empty.fetch_add(1, Ordering::Relaxed);
                }
                if encoded.truncated {
                    truncated.fetch_add(1, Ordering::Relaxed);
                }
                let row = ProcessedRow {
                    order: (order_hash(spec.seed, row_key(&batch, i)), position),
                    id: batch.ids.as_ref().and_then(|ids| ids[i].clone()),
                    text: encoded.cleaned,
                    ids: encoded.ids,
                    target: plan.target_of_class[class as usize],
                };
                if is_validation { validation_rows.push(row) } else { train_rows.push(row) }
            }
            let done = rows_done.fetch_add((train_rows.len() + validation_rows.len()) as u64, Ordering::Relaxed)
                + (train_rows.len() + validation_rows.len()) as u64;
            train.extend(train_rows)?;
            validation.extend(validation_rows)?;
            observer.progress(done, rows_total);
            Ok(())
        })
    })?;
    Ok(Processed { train, validation, empty_cleaned_texts: empty.into_inner(), truncated_rows: truncated.into_inner() })
}

fn write(
    spec: &JobSpec,
    scan: Scan,
    plan: SplitPlan,
    preprocessor: FittedPreprocessor,
    processed: Processed,
    sink: &dyn ArtifactSink,
) -> Result<JobOutcome> {
    let mut artifacts = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>, rows: Option<u64>| -> Result<()> {
        artifacts.push(ArtifactEntry::describe(name, &bytes, rows));
        sink.put(name, bytes)
    };
    let rows = RowCounts {
        input: scan.rows,
        skipped: scan.skipped,
        train: processed.train.len(),
        validation: processed.validation.len(),
    };
    let mut tokens = TokenTally::default();
    for (split, runs) in [("train", processed.train), ("val", processed.validation)] {
        let mut merged = runs.into_sorted()?.peekable();
        let mut part = Vec::with_capacity(spec.rows_per_part.min(1 << 16));
        let mut n = 0;
        // An empty split still gets one (empty) part, so readers find its schema.
        while n == 0 || merged.peek().is_some() {
            part.clear();
            for row in merged.by_ref().take(spec.rows_per_part) {
                let row = row?;
                tokens.add(row.ids.len() as u64);
                part.push(row);
            }
            let bytes = parquet_part(&part, scan.id_column)?;
            put(&format!("{split}/part-{n:05}.parquet"), bytes, Some(part.len() as u64))?;
            n += 1;
        }
    }

    let mut classes: BTreeMap<String, SplitCounts> = BTreeMap::new();
    let mut too_small = Vec::new();
    for (class, split) in plan.by_class.iter().enumerate() {
        let label = scan.labels[class].clone();
        if split.too_small() {
            too_small.push(SmallClass { label: label.clone(), rows: split.rows });
        }
        classes.insert(
            label,
            SplitCounts { train: split.rows - split.validation_rows, validation: split.validation_rows },
        );
    }
    let tokens = tokens.stats();
    let report = QualityReport {
        rows: rows.clone(),
        null_label_rows: scan.null_label_rows.clone(),
        empty_cleaned_texts: processed.empty_cleaned_texts,
        truncated_rows: processed.truncated_rows,
        classes_too_small: too_small,
        classes: classes.clone(),
        tokens,
    };
    put(CLASS_TO_INDEX, to_json_bytes(&plan.class_to_index)?, None)?;
    put(TOKENIZER, preprocessor.tokenizer().json().as_bytes().to_vec(), None)?;
    put(PREPROCESSOR, to_json_bytes(preprocessor.config())?, None)?;
    put(REPORT, to_json_bytes(&report)?, None)?;
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        prepd_version: env!("CARGO_PKG_VERSION").to_string(),
        // Where the bytes came from is not part of what they are.
        spec: JobSpec { source: None, ..spec.clone() },
        input: scan.input,
        rows,
        classes,
        class_to_index: plan.class_to_index,
        tokenizer_sha256: preprocessor.tokenizer().sha256().to_string(),
        unicode_version: UNICODE_VERSION.to_string(),
        artifacts,
    };
    sink.put(MANIFEST, to_json_bytes(&manifest)?)?;
    Ok(JobOutcome { manifest, report })
}

/// Token counts per row, summed as rows stream past.
#[derive(Default)]
struct TokenTally {
    rows: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl TokenTally {
    fn add(&mut self, tokens: u64) {
        self.min = if self.rows == 0 { tokens } else { self.min.min(tokens) };
        self.max = self.max.max(tokens);
        self.sum += tokens;
        self.rows += 1;
    }

    fn stats(&self) -> TokenStats {
        if self.rows == 0 {
            return TokenStats::default();
        }
        TokenStats { min: self.min, max: self.max, mean: self.sum as f64 / self.rows as f64 }
    }
}
