//! One job, start to end: scan the dataset (labels, split keys, checksums),
//! fit the class mapping (and the tokenizer if asked), clean and tokenize
//! every row on the worker pool partition by partition while offering it to
//! its class's split boundary, decide the stratified split from those
//! offers, write the splits, then the documents, the manifest last.
//!
//! A job whose rows fit the memory budget does the scan and the processing
//! in one pass instead ([`super::one_pass`]), with the same result. Writing
//! the splits and the documents is [`super::write_stage`].
//!
//! A dataset is one file or several; each pass takes the files in parallel
//! (the one pass, in order), and a file's batches in parallel too. Rows are
//! numbered across the files in the order given (by path), so nothing
//! depends on which worker or file finishes first. Finished partitions are
//! kept in memory when the job's rows fit the memory budget; otherwise in
//! the job's work directory, and a later run with the same directory
//! resumes from them.
//!
//! Synchronous and free of I/O other than the input files, the work
//! directory and the artifact sink it is given.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

// Labels are looked up once a row on every pass: a fast hash rather than
// SipHash, still randomly keyed, so crafted labels cannot force collisions.
use ahash::AHashMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::artifacts::*;
use super::clean::{CleaningConfig, TextCleaner, default_stopwords};
use super::compression::Compression;
use super::ingest::{self, ChunkParser, FileDigest, InputSource, RawChunk, ReadSettings, RowBatch};
use super::one_pass::run_in_one_pass;
use super::partitions::{FinishedRows, PartitionCounts, PartitionSummary, WORK_FORMAT, WorkDir};
use super::preprocessor::{ClassToIndex, FittedPreprocessor};
use super::processed_row::ProcessedRow;
use super::sorted_runs::Bucketing;
use super::spec::{InputFormat, JobSpec, NullLabelPolicy, TokenizerSpec};
use super::split::{Boundary, ClassSplit, ClassTally, RowKey, membership_hash, order_hash};
use super::tokenize::WordPieceTokenizer;
use super::write_stage;
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
    /// Rows cleaned and tokenized so far (those of partitions a previous run
    /// finished included) out of all the rows to process.
    fn progress(&self, rows_done: u64, rows_total: u64);
    fn is_cancelled(&self) -> bool;
}

/// The tokenizer a job starts with: loaded already, or to train.
pub enum TokenizerPlan {
    Ready(Box<WordPieceTokenizer>),
    Train { vocab_size: usize },
}

/// A job's dataset: one file, or several whose rows are numbered file after
/// file in the order given (sorted by path, so that a listing's order does
/// not matter).
pub type Dataset = [Box<dyn InputSource>];

#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Batch size (a batch is what a worker takes) and decompression caps.
    pub read: ReadSettings,
    /// Input rows per partition: the unit of work that is finished and kept.
    pub partition_rows: u64,
    /// Rows (as held in memory) the write stage sorts at once: the splits'
    /// rows are bucketed by their order so that one bucket is about this big.
    pub sort_bytes: u64,
    /// A job whose processed rows take at most this much memory reads its
    /// input once and keeps them there instead of spilling them to the work
    /// directory: faster, but such a job, cut off, starts over instead of
    /// resuming. 0: always two passes and spilled rows.
    pub in_memory_bytes: u64,
    /// Where finished partitions are kept: the same directory on a later run
    /// of the same job resumes from them.
    pub work_dir: PathBuf,
}

pub struct JobOutcome {
    pub manifest: Manifest,
    pub report: QualityReport,
}

pub(super) const NULL_LABEL_SAMPLE: usize = 20;

/// A dataset file as the passes see it.
pub(super) struct FileRef<'a> {
    pub(super) source: &'a dyn InputSource,
    /// The file part of a row's position key: empty for a single file.
    pub(super) key: &'a str,
    /// Of its first row, across the dataset (known once scanned).
    pub(super) first_position: u64,
    pub(super) rows: u64,
    /// The file's row position at the start of each chunk of a pass, from
    /// the scan: later passes parse chunks in any order and still number
    /// their rows exactly.
    pub(super) chunk_starts: Vec<u64>,
}

impl FileRef<'_> {
    /// Parses a chunk of a pass after the scan, on any thread.
    fn parse(&self, parser: &ChunkParser, chunk: Result<RawChunk>) -> Result<RowBatch> {
        let chunk = chunk.map_err(|e| self.locate(e))?;
        let index = chunk.index;
        let changed = || Error::internal(format!("{}: the input changed between passes", self.source.name()));
        let (&start, &end) = self.chunk_starts.get(index).zip(self.chunk_starts.get(index + 1)).ok_or_else(changed)?;
        let batch = parser.parse(chunk, start).map_err(|e| self.locate(e))?;
        if batch.len() as u64 != end - start {
            return Err(changed());
        }
        Ok(batch)
    }

    pub(super) fn row_key<'b>(&'b self, batch: &'b RowBatch, i: usize) -> RowKey<'b> {
        match &batch.split_keys {
            Some(keys) => RowKey::Value(keys.get(i).unwrap_or("")),
            None => RowKey::Position { file: self.key, row: batch.first_position + i as u64 },
        }
    }

    fn position(&self, batch: &RowBatch, i: usize) -> u64 {
        self.first_position + batch.first_position + i as u64
    }

    /// Errors about a file of a multi-file dataset name it.
    pub(super) fn locate(&self, err: Error) -> Error {
        if self.key.is_empty() { err } else { err.in_file(self.key) }
    }
}

pub(super) fn check_cancel(observer: &dyn JobObserver) -> Result<()> {
    if observer.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
}

fn checksum(source: &dyn InputSource, observer: &dyn JobObserver) -> Result<(u64, String)> {
    let mut reader = source.open()?;
    let mut digest = FileDigest::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        bytes += n as u64;
        if bytes % (256 << 20) < n as u64 {
            check_cancel(observer)?;
        }
    }
    Ok(digest.finish())
}

/// What the first pass learns: the checksums, the rows, and per class its
/// rows and how their membership hashes spread (nothing kept per row).
pub(super) struct Scan {
    pub(super) input: InputSummary,
    /// Data rows read, null labels included.
    pub(super) rows: u64,
    /// Sorted: a class's number is its index in the class mapping.
    pub(super) labels: Vec<String>,
    pub(super) class_numbers: AHashMap<String, u32>,
    pub(super) tallies: Vec<ClassTally>,
    /// 1-based positions of the first rows with a null label.
    pub(super) null_label_rows: Vec<u64>,
    pub(super) skipped: u64,
    pub(super) id_column: IdColumn,
    /// About what the processed rows take in memory: sets how finely they
    /// are bucketed on their way to the splits.
    pub(super) row_bytes: u64,
}

/// A processed row in memory beyond its cleaned text and token ids, which
/// are counted as two bytes per input character (a cleaned text keeps at
/// most its characters; a token id takes two bytes, four for a vocabulary
/// of 65,536 pieces or more, per four characters or so): the row's fields
/// (56 bytes), its id and the allocator's rounding. An upper bound.
pub(super) const ROW_OVERHEAD_BYTES: u64 = 128;

impl Scan {
    fn class_of(&self, label: Option<&str>) -> Option<u32> {
        self.class_numbers.get(label.filter(|l| !l.is_empty())?).copied()
    }
}

/// What scanning one file learns, beside its class tallies.
struct FileFacts {
    input: InputFile,
    /// 0-based rows of the file with a null label, the first few.
    null_label_rows: Vec<u64>,
    skipped: u64,
    id_column: IdColumn,
    row_bytes: u64,
    chunk_rows: Vec<u64>,
}

/// How a file's size and sha256 are taken.
pub(super) enum Checksum {
    /// By a read of their own, before the scan.
    ReadFirst((u64, String)),
    /// As the scan reads the file.
    AsRead(Arc<Mutex<FileDigest>>),
}

impl Checksum {
    /// As the pass reads the file when it reads every stored byte;
    /// otherwise by a read of its own, now.
    pub(super) fn begin(
        format: InputFormat,
        compression: Compression,
        source: &dyn InputSource,
        observer: &dyn JobObserver,
    ) -> Result<Self> {
        Ok(if ingest::digest_as_read(format, compression) {
            Checksum::AsRead(Arc::default())
        } else {
            Checksum::ReadFirst(checksum(source, observer)?)
        })
    }

    /// What the pass's reads feed, if they take the checksum.
    pub(super) fn digest(&self) -> Option<Arc<Mutex<FileDigest>>> {
        match self {
            Checksum::AsRead(digest) => Some(digest.clone()),
            Checksum::ReadFirst(_) => None,
        }
    }

    /// The file's size and sha256, once the pass has read it.
    pub(super) fn finish(self) -> (u64, String) {
        match self {
            Checksum::ReadFirst(taken) => taken,
            Checksum::AsRead(digest) => std::mem::take(&mut *digest.lock().unwrap()).finish(),
        }
    }
}

/// A row with a null or empty label: refused under the `error` policy,
/// otherwise left out (and counted by the caller).
pub(super) fn check_null_label(spec: &JobSpec, file_row: u64) -> Result<()> {
    if spec.null_labels == NullLabelPolicy::Error {
        return Err(Error::bad_input(
            InputLocation::cell(file_row + 1, &spec.label_column),
            "null or empty label (set \"null_labels\": \"skip\" to leave such rows out)",
        ));
    }
    Ok(())
}

/// A dataset must have data rows, and some of them a label.
pub(super) fn check_labelled_rows(spec: &JobSpec, rows: u64, classes: usize) -> Result<()> {
    if rows == 0 {
        return Err(Error::bad_input(InputLocation::default(), "the input has a header but no data rows"));
    }
    if classes == 0 {
        return Err(Error::bad_input(InputLocation::column(&spec.label_column), "every label is null"));
    }
    Ok(())
}

fn scan_file(
    spec: &JobSpec,
    file: &FileRef<'_>,
    settings: &RunSettings,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
    tallies: &mut AHashMap<String, ClassTally>,
) -> Result<FileFacts> {
    let (format, compression) = InputFormat::resolve(spec.format, file.source.name())?;
    let file_checksum = Checksum::begin(format, compression, file.source, observer)?;
    // Texts are read by the process pass; this one needs labels and keys.
    let opened =
        ingest::open_chunks_counting(file.source, spec, settings.read, file_checksum.digest())?.without_texts();
    let mut rows = 0u64;
    let mut row_bytes = 0u64;
    let mut null_label_rows = Vec::new();
    let mut skipped = 0;
    let mut id_column = if opened.columns.id.is_some() { IdColumn::Integer } else { IdColumn::Absent };
    // Rows are tallied in order (a row's key is its position); the parsing
    // before it, the expensive part, runs on as many threads as the pool has.
    let chunk_rows = opened.for_each_in_order(pool, |batch| {
        check_cancel(observer)?;
        for (i, label) in batch.labels.iter().enumerate() {
            rows += 1;
            let row = batch.first_position + i as u64;
            let tally = match label {
                Some(label) if !label.is_empty() => match tallies.get_mut(label) {
                    Some(tally) => tally,
                    None => tallies.entry(label.to_string()).or_default(),
                },
                _ => {
                    check_null_label(spec, row)?;
                    if null_label_rows.len() < NULL_LABEL_SAMPLE {
                        null_label_rows.push(row);
                    }
                    skipped += 1;
                    continue;
                }
            };
            tally.add(membership_hash(spec.seed, file.row_key(&batch, i)));
            row_bytes += ROW_OVERHEAD_BYTES;
        }
        row_bytes += 2 * batch.text_bytes;
        if let Some(ids) = &batch.ids {
            id_column = id_column.max(IdColumn::of_ids(ids.iter()));
        }
        Ok(())
    })?;
    let (bytes, sha256) = file_checksum.finish();
    let input = InputFile { name: file.source.name().to_string(), format, bytes, sha256, rows };
    Ok(FileFacts { input, null_label_rows, skipped, id_column, row_bytes, chunk_rows })
}

fn scan(
    spec: &JobSpec,
    files: &mut [FileRef<'_>],
    settings: &RunSettings,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
) -> Result<Scan> {
    // Class tallies are merged as files finish (the merge is a sum, so the
    // order does not matter); each file's facts are kept in file order.
    let merged: Mutex<HashMap<String, ClassTally>> = Mutex::default();
    let facts: Vec<Result<FileFacts>> = pool.install(|| {
        files
            .par_iter()
            .map(|file| {
                let mut tallies = AHashMap::new();
                let facts =
                    scan_file(spec, file, settings, observer, pool, &mut tallies).map_err(|e| file.locate(e))?;
                let mut merged = merged.lock().unwrap();
                for (label, tally) in tallies {
                    merged.entry(label).or_default().merge(&tally);
                }
                Ok(facts)
            })
            .collect()
    });
    // The first failing file, in order, is the one reported.
    let facts = facts.into_iter().collect::<Result<Vec<_>>>()?;

    let mut next_position = 0;
    let mut null_label_rows = Vec::new();
    let mut skipped = 0;
    let mut id_column = IdColumn::Integer;
    let mut row_bytes = 0;
    for (file, facts) in files.iter_mut().zip(&facts) {
        row_bytes += facts.row_bytes;
        file.first_position = next_position;
        file.rows = facts.input.rows;
        file.chunk_starts = std::iter::once(0)
            .chain(facts.chunk_rows.iter().scan(0, |at, rows| {
                *at += rows;
                Some(*at)
            }))
            .collect();
        null_label_rows.extend(facts.null_label_rows.iter().map(|row| next_position + row + 1));
        next_position += facts.input.rows;
        skipped += facts.skipped;
        id_column = id_column.max(facts.id_column);
    }
    null_label_rows.truncate(NULL_LABEL_SAMPLE);
    let rows = next_position;
    let mut tallies: Vec<(String, ClassTally)> = merged.into_inner().unwrap().into_iter().collect();
    check_labelled_rows(spec, rows, tallies.len())?;
    tallies.sort_by(|a, b| a.0.cmp(&b.0));
    let (labels, tallies): (Vec<String>, Vec<ClassTally>) = tallies.into_iter().unzip();
    let class_numbers = labels.iter().enumerate().map(|(n, l)| (l.clone(), n as u32)).collect();
    Ok(Scan {
        input: InputSummary::of_files(facts.into_iter().map(|f| f.input).collect()),
        rows,
        labels,
        class_numbers,
        tallies,
        null_label_rows,
        skipped,
        id_column,
        row_bytes,
    })
}

/// Which rows go to validation, per class.
///
/// A class's boundary needs every row of the class offered to it. The rows
/// are offered as they are processed, so the split is known once the
/// process stage is done and costs no pass of its own; only training a
/// tokenizer on the train rows needs it before, and then a pass offers them
/// first ([`SplitPlan::by_pass`]).
pub(super) struct SplitPlan {
    seed: u64,
    pub(super) by_class: Vec<ClassSplit>,
}

/// Every class's boundary before any row is offered: what it looks for.
pub(super) fn empty_boundaries(spec: &JobSpec, scan: &Scan) -> Vec<Boundary> {
    scan.tallies.iter().map(|t| t.boundary(spec.test_size, spec.split_mode)).collect()
}

/// The class mapping: a class's number is its index among the sorted labels.
/// Every class keeps at least one train row, so the train split's labels
/// are all the labels.
pub(super) fn class_to_index(scan: &Scan) -> ClassToIndex {
    scan.labels.iter().enumerate().map(|(i, l)| (l.clone(), i as i64)).collect()
}

/// Merges boundaries that were offered different rows.
pub(super) fn merge_boundaries(into: &mut [Boundary], from: Vec<Boundary>) {
    into.iter_mut().zip(from).for_each(|(b, other)| b.merge(other));
}

impl SplitPlan {
    fn from_boundaries(spec: &JobSpec, boundaries: Vec<Boundary>) -> Self {
        Self { seed: spec.seed, by_class: boundaries.into_iter().map(Boundary::finish).collect() }
    }

    /// A pass of its own that offers every row (reading labels and keys only).
    fn by_pass(
        spec: &JobSpec,
        files: &[FileRef<'_>],
        settings: &RunSettings,
        scan: &Scan,
        observer: &dyn JobObserver,
        pool: &rayon::ThreadPool,
    ) -> Result<Self> {
        let empty = empty_boundaries(spec, scan);
        let merged = Mutex::new(empty.clone());
        pool.install(|| {
            files.par_iter().try_for_each(|file| -> Result<()> {
                let opened = ingest::open_chunks(file.source, spec, settings.read).map_err(|e| file.locate(e))?;
                // This pass needs labels and keys only.
                let parser = &opened.parser.without_texts();
                opened
                    .chunks
                    .par_bridge()
                    .try_fold(
                        || empty.clone(),
                        |mut boundaries, chunk| -> Result<Vec<Boundary>> {
                            let batch = file.parse(parser, chunk)?;
                            check_cancel(observer)?;
                            for (i, label) in batch.labels.iter().enumerate() {
                                if let Some(class) = scan.class_of(label) {
                                    let hash = membership_hash(spec.seed, file.row_key(&batch, i));
                                    boundaries[class as usize].offer(hash, file.position(&batch, i));
                                }
                            }
                            Ok(boundaries)
                        },
                    )
                    .try_for_each(|boundaries| -> Result<()> {
                        let boundaries = boundaries?;
                        merge_boundaries(&mut merged.lock().unwrap(), boundaries);
                        Ok(())
                    })
            })
        })?;
        Ok(Self::from_boundaries(spec, merged.into_inner().unwrap()))
    }

    pub(super) fn is_validation(&self, row: &ProcessedRow) -> bool {
        self.by_class[row.target as usize].is_validation(row.split_hash, row.order.1)
    }

    /// A row's target and whether it goes to validation; `None` for a row
    /// left out (null label).
    fn side(&self, scan: &Scan, file: &FileRef<'_>, batch: &RowBatch, i: usize) -> Option<(i64, bool)> {
        let class = scan.class_of(batch.labels.get(i))?;
        let hash = membership_hash(self.seed, file.row_key(batch, i));
        Some((i64::from(class), self.by_class[class as usize].is_validation(hash, file.position(batch, i))))
    }

    pub(super) fn counts(&self) -> SplitCounts {
        let validation: u64 = self.by_class.iter().map(|c| c.validation_rows).sum();
        let rows: u64 = self.by_class.iter().map(|c| c.rows).sum();
        SplitCounts { train: rows - validation, validation }
    }
}

pub fn run(
    spec: &JobSpec,
    dataset: &Dataset,
    tokenizer: TokenizerPlan,
    sink: &dyn ArtifactSink,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
    settings: &RunSettings,
) -> Result<JobOutcome> {
    spec.validate()?;
    if dataset.is_empty() {
        return Err(Error::bad_input(InputLocation::default(), "the dataset has no files"));
    }
    let multi_file = dataset.len() > 1;
    let mut files: Vec<FileRef<'_>> = dataset
        .iter()
        .map(|source| FileRef {
            source: source.as_ref(),
            key: if multi_file { source.name() } else { "" },
            first_position: 0,
            rows: 0,
            chunk_starts: Vec::new(),
        })
        .collect();

    let cleaning = CleaningConfig {
        enabled: spec.cleaning.enabled,
        stopwords: spec.cleaning.stopwords.clone().unwrap_or_else(default_stopwords),
    };
    let fit = |classes: ClassToIndex, source: TokenizerSpec, tokenizer: WordPieceTokenizer| {
        let (texts, label) = (spec.text_columns.clone(), spec.label_column.clone());
        FittedPreprocessor::fit(texts, label, cleaning.clone(), classes, source, tokenizer, spec.max_length)
    };
    // A given tokenizer encodes before the classes are known; the mapping is
    // set once they are. One to train learns from the train rows, so the
    // split must be known first.
    let (unmapped, train_vocab_size) = match tokenizer {
        TokenizerPlan::Ready(tokenizer) => (Some(fit(ClassToIndex::new(), spec.tokenizer.clone(), *tokenizer)?), None),
        TokenizerPlan::Train { vocab_size } => (None, Some(vocab_size)),
    };
    // Files on local disk larger than the budget all together are taken to
    // outgrow it (a dataset is mostly its texts, and the rows hold each text
    // about twice over): not worth a pass that would start over.
    let bytes_on_disk: Option<u64> = files
        .iter()
        .map(|f| f.source.file_on_disk().and_then(|path| std::fs::metadata(path).ok()).map(|m| m.len()))
        .sum();
    let may_fit = bytes_on_disk.is_none_or(|bytes| bytes <= settings.in_memory_bytes);
    if let Some(unmapped) = &unmapped
        && settings.in_memory_bytes > 0
        && may_fit
    {
        // The pass is the ingest and the processing at once: the stages
        // before it take no time of their own.
        for stage in [Stage::Ingest, Stage::Split, Stage::Fit, Stage::Process] {
            observer.stage(stage);
        }
        if let Some(outcome) = run_in_one_pass(spec, &mut files, settings, unmapped, sink, observer, pool)? {
            return Ok(outcome);
        }
        tracing::info!("the processed rows outgrew PREPD_IN_MEMORY_BYTES: reading the input again, spilling");
    }

    observer.stage(Stage::Ingest);
    let scan = scan(spec, &mut files, settings, observer, pool)?;

    observer.stage(Stage::Split);
    let split_first = match train_vocab_size {
        Some(_) => Some(SplitPlan::by_pass(spec, &files, settings, &scan, observer, pool)?),
        None => None,
    };

    observer.stage(Stage::Fit);
    let preprocessor = match (unmapped, train_vocab_size) {
        (Some(unmapped), _) => unmapped.with_class_to_index(class_to_index(&scan)),
        (None, Some(vocab_size)) => {
            let plan = split_first.as_ref().ok_or_else(|| Error::internal("no split to train a tokenizer on"))?;
            let trained = train_tokenizer(spec, &files, settings, &scan, plan, &cleaning, vocab_size)?;
            fit(class_to_index(&scan), TokenizerSpec::Train { vocab_size }, trained)?
        }
        (None, None) => return Err(Error::internal("neither a tokenizer nor one to train")),
    };

    observer.stage(Stage::Process);
    let partitions = Partitioning { rows: scan.rows, partition_rows: settings.partition_rows.max(1) };
    let bucketing = Bucketing::for_row_bytes(scan.row_bytes, settings.sort_bytes);
    let (kept, finished) = if scan.row_bytes <= settings.in_memory_bytes {
        (FinishedRows::in_memory(scan.rows), BTreeMap::new())
    } else {
        let fingerprint = fingerprint(spec, &scan, &preprocessor, partitions.partition_rows, bucketing)?;
        let (work, finished) = WorkDir::open(&settings.work_dir, &fingerprint, bucketing)?;
        (FinishedRows::Spilled(work), finished)
    };
    let finished = process(spec, &files, settings, &scan, &preprocessor, &kept, finished, partitions, observer, pool)?;
    let mut counts = PartitionCounts::default();
    let mut boundaries = empty_boundaries(spec, &scan);
    for summary in finished.into_values() {
        counts.add(&summary.counts);
        merge_boundaries(&mut boundaries, summary.boundaries);
    }
    let processed = Processed { scan, kept, counts, boundaries };
    split_and_write(spec, processed, split_first, preprocessor, partitions, sink, observer, pool)
}

/// Every row processed, and what the split needs of them.
pub(super) struct Processed {
    pub(super) scan: Scan,
    pub(super) kept: FinishedRows,
    pub(super) counts: PartitionCounts,
    /// Every row offered.
    pub(super) boundaries: Vec<Boundary>,
}

/// Decides the split from the rows' offers, then writes the splits and the documents.
#[allow(clippy::too_many_arguments)]
pub(super) fn split_and_write(
    spec: &JobSpec,
    processed: Processed,
    split_first: Option<SplitPlan>,
    preprocessor: FittedPreprocessor,
    partitions: Partitioning,
    sink: &dyn ArtifactSink,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
) -> Result<JobOutcome> {
    let Processed { scan, kept, counts, boundaries } = processed;
    let plan = SplitPlan::from_boundaries(spec, boundaries);
    if split_first.is_some_and(|first| first.by_class != plan.by_class) {
        return Err(Error::internal("the split offered by the rows processed differs from the one planned first"));
    }
    let planned = plan.counts();
    if counts.rows != planned.train + planned.validation {
        return Err(Error::internal(format!("the partitions hold {} rows, the split {planned:?}", counts.rows)));
    }

    observer.stage(Stage::Write);
    check_cancel(observer)?;
    let outcome =
        pool.install(|| write_stage::write(spec, scan, plan, preprocessor, kept, partitions, counts, sink, pool))?;
    observer.stage(Stage::Done);
    Ok(outcome)
}

/// Everything a partition's bytes depend on.
fn fingerprint(
    spec: &JobSpec,
    scan: &Scan,
    preprocessor: &FittedPreprocessor,
    partition_rows: u64,
    bucketing: Bucketing,
) -> Result<String> {
    let spec = JobSpec { source: None, ..spec.clone() };
    let described = serde_json::to_vec(&(
        env!("CARGO_PKG_VERSION"),
        WORK_FORMAT,
        &spec,
        &scan.input.sha256,
        preprocessor.config(),
        partition_rows,
        bucketing.count(),
    ))
    .map_err(Error::internal)?;
    Ok(hex::encode(Sha256::digest(described)))
}

fn train_tokenizer(
    spec: &JobSpec,
    files: &[FileRef<'_>],
    settings: &RunSettings,
    scan: &Scan,
    plan: &SplitPlan,
    cleaning: &CleaningConfig,
    vocab_size: usize,
) -> Result<WordPieceTokenizer> {
    let cleaner = TextCleaner::new(cleaning.clone());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failure.lock().unwrap().get_or_insert(e);
    };
    // Streamed batch by batch: only one batch's texts are held at a time.
    let train_texts = files.iter().flat_map(|file| {
        let batches = match ingest::open(file.source, spec, settings.read) {
            Ok(opened) => opened.batches,
            Err(e) => {
                fail(file.locate(e));
                Box::new(std::iter::empty())
            }
        };
        let cleaner = &cleaner;
        batches.map_while(move |batch| batch.map_err(|e| fail(file.locate(e))).ok()).flat_map(move |batch| {
            (0..batch.len())
                .filter(|&i| plan.side(scan, file, &batch, i).is_some_and(|(_, validation)| !validation))
                .map(|i| cleaner.clean(batch.texts.get(i)))
                .collect::<Vec<_>>()
        })
    });
    let trained = WordPieceTokenizer::train(train_texts, vocab_size);
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    trained
}

/// Input positions cut into fixed ranges.
#[derive(Debug, Clone, Copy)]
pub(super) struct Partitioning {
    /// Input rows, null labels included.
    pub(super) rows: u64,
    pub(super) partition_rows: u64,
}

impl Partitioning {
    pub(super) fn count(&self) -> u64 {
        self.rows.div_ceil(self.partition_rows)
    }

    fn of(&self, position: u64) -> u64 {
        position / self.partition_rows
    }

    /// Input rows (null labels included) in `partition`.
    fn len(&self, partition: u64) -> u64 {
        self.partition_rows.min(self.rows - partition * self.partition_rows)
    }
}

/// A partition (or a part of one) whose rows are still arriving from the workers.
struct OpenPartition {
    /// Input positions accounted for, rows left out included.
    seen: u64,
    rows: Vec<ProcessedRow>,
    summary: PartitionSummary,
}

impl OpenPartition {
    fn new(seen: u64, boundaries: Vec<Boundary>) -> Self {
        Self { seen, rows: Vec::new(), summary: PartitionSummary { counts: Default::default(), boundaries } }
    }

    fn absorb(&mut self, other: OpenPartition) {
        self.seen += other.seen;
        self.rows.extend(other.rows);
        self.summary.counts.add(&other.summary.counts);
        merge_boundaries(&mut self.summary.boundaries, other.summary.boundaries);
    }
}

/// Cleans and tokenizes every row of the partitions not finished yet;
/// returns every partition's summary, those finished before included.
#[allow(clippy::too_many_arguments)]
fn process(
    spec: &JobSpec,
    files: &[FileRef<'_>],
    settings: &RunSettings,
    scan: &Scan,
    preprocessor: &FittedPreprocessor,
    kept: &FinishedRows,
    finished: BTreeMap<u64, PartitionSummary>,
    partitions: Partitioning,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
) -> Result<BTreeMap<u64, PartitionSummary>> {
    let rows_total = scan.rows - scan.skipped;
    let empty = empty_boundaries(spec, scan);
    let finished = Mutex::new(finished);
    let rows_done = AtomicU64::new(finished.lock().unwrap().values().map(|s| s.counts.rows).sum());
    observer.progress(rows_done.load(Ordering::Relaxed), rows_total);
    let is_finished = |partition: u64| finished.lock().unwrap().contains_key(&partition);
    let open: Mutex<HashMap<u64, OpenPartition>> = Mutex::default();

    pool.install(|| {
        files.par_iter().try_for_each(|file| -> Result<()> {
            let last = file.first_position + file.rows;
            let all_finished =
                (file.rows == 0) || (partitions.of(file.first_position)..=partitions.of(last - 1)).all(is_finished);
            if all_finished {
                return Ok(());
            }
            let opened = ingest::open_chunks(file.source, spec, settings.read).map_err(|e| file.locate(e))?;
            let parser = &opened.parser;
            opened.chunks.par_bridge().try_for_each(|chunk| -> Result<()> {
                let batch = file.parse(parser, chunk)?;
                check_cancel(observer)?;
                let mut i = 0;
                while i < batch.len() {
                    let partition = partitions.of(file.position(&batch, i));
                    let end = ((partition + 1) * partitions.partition_rows - file.position(&batch, 0))
                        .min(batch.len() as u64) as usize;
                    if !is_finished(partition) {
                        let part = encode_rows(spec, file, scan, &empty, preprocessor, &batch, i..end)?;
                        let done = part.summary.counts.rows;
                        let complete = {
                            let mut open = open.lock().unwrap();
                            let entry = open.entry(partition).or_insert_with(|| OpenPartition::new(0, empty.clone()));
                            entry.absorb(part);
                            (entry.seen == partitions.len(partition)).then(|| open.remove(&partition)).flatten()
                        };
                        if let Some(complete) = complete {
                            kept.finish_partition(partition, complete.rows, &complete.summary)?;
                            finished.lock().unwrap().insert(partition, complete.summary);
                        }
                        let done = rows_done.fetch_add(done, Ordering::Relaxed) + done;
                        observer.progress(done, rows_total);
                    }
                    i = end;
                }
                Ok(())
            })
        })
    })?;

    let finished = finished.into_inner().unwrap();
    if finished.len() as u64 != partitions.count() {
        return Err(Error::internal(format!("{} of {} partitions finished", finished.len(), partitions.count())));
    }
    Ok(finished)
}

/// Cleans and tokenizes rows `range` of a batch (all in one partition), and
/// offers them to their class's split boundary.
fn encode_rows(
    spec: &JobSpec,
    file: &FileRef<'_>,
    scan: &Scan,
    empty: &[Boundary],
    preprocessor: &FittedPreprocessor,
    batch: &RowBatch,
    range: std::ops::Range<usize>,
) -> Result<OpenPartition> {
    let mut part = OpenPartition::new(range.len() as u64, empty.to_vec());
    part.rows.reserve(range.len());
    let counts = &mut part.summary.counts;
    for i in range {
        let Some(class) = scan.class_of(batch.labels.get(i)) else { continue };
        let key = file.row_key(batch, i);
        let position = file.position(batch, i);
        let split_hash = membership_hash(spec.seed, key);
        part.summary.boundaries[class as usize].offer(split_hash, position);
        let encoded = preprocessor.encode_row(batch.id(i), batch.texts.get(i))?;
        counts.rows += 1;
        counts.empty_cleaned_texts += u64::from(encoded.content.text().is_empty());
        counts.truncated_rows += u64::from(encoded.truncated);
        let order = (order_hash(spec.seed, key), position);
        part.rows.push(ProcessedRow { order, split_hash, target: class, content: encoded.content });
    }
    Ok(part)
}
