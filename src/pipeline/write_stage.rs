//! The write stage: a job's rows, in their seeded order, cut into each
//! split's Parquet parts, encoded on the workers and stored, then the
//! documents that describe them (class mapping, tokenizer, preprocessor,
//! quality report, manifest).

use std::borrow::Borrow;
use std::collections::BTreeMap;

use rayon::prelude::*;

use super::artifacts::*;
use super::in_order::map_in_order;
use super::parquet_part::parquet_part;
use super::partitions::{FinishedRows, OrderedRows, PartitionCounts};
use super::preprocessor::FittedPreprocessor;
use super::processed_row::ProcessedRow;
use super::pyunicode::UNICODE_VERSION;
use super::runner::{JobOutcome, Partitioning, Scan, SplitPlan};
use super::spec::JobSpec;
use crate::error::{Error, Result};

#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    spec: &JobSpec,
    scan: Scan,
    plan: SplitPlan,
    preprocessor: FittedPreprocessor,
    kept: FinishedRows,
    partitions: Partitioning,
    counts: PartitionCounts,
    sink: &dyn ArtifactSink,
    pool: &rayon::ThreadPool,
) -> Result<JobOutcome> {
    let planned = plan.counts();
    let rows =
        RowCounts { input: scan.rows, skipped: scan.skipped, train: planned.train, validation: planned.validation };
    // The splits' parts are stored as they fill, one split's interleaved with
    // the other's; the manifest lists them split by split.
    let mut parts: [Vec<ArtifactEntry>; 2] = Default::default();
    let id_column = scan.id_column;
    let rows_per_part = spec.rows_per_part.max(1);
    // Parts are encoded and checksummed on the workers, stored in order.
    let store = |part: EncodedPart| {
        sink.put(&part.entry.name, part.bytes)?;
        parts[part.side as usize].push(part.entry);
        Ok(())
    };
    let (routed, tokens) = match kept.into_ordered(partitions.count())? {
        OrderedRows::InMemory(rows) => {
            let (encoded, routed, tokens) = encode_parts_at_once(rows, &plan, rows_per_part, id_column)?;
            encoded.into_iter().try_for_each(store)?;
            (routed, tokens)
        }
        OrderedRows::Streamed(rows) => {
            let mut shards = ShardCutter::new(rows, &plan, rows_per_part);
            let encode = |shard: Shard| EncodedPart::encode(shard.name, shard.side, &shard.rows, id_column);
            // A part at a time per worker: parts are large.
            map_in_order(pool, &mut shards, pool.current_num_threads(), encode, store)?;
            (shards.routed, shards.tokens)
        }
    };
    let routed = SplitCounts { train: routed[0], validation: routed[1] };
    if routed != planned {
        return Err(Error::internal(format!("the parts hold {routed:?}, the split planned {planned:?}")));
    }
    let [mut artifacts, validation_parts] = parts;
    artifacts.extend(validation_parts);
    let mut put = |name: &str, bytes: Vec<u8>| -> Result<()> {
        artifacts.push(ArtifactEntry::describe(name, &bytes, None));
        sink.put(name, bytes)
    };

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
    let report = QualityReport {
        rows: rows.clone(),
        null_label_rows: scan.null_label_rows.clone(),
        empty_cleaned_texts: counts.empty_cleaned_texts,
        truncated_rows: counts.truncated_rows,
        classes_too_small: too_small,
        classes: classes.clone(),
        tokens: tokens.stats(),
    };
    let class_to_index = preprocessor.class_to_index().clone();
    put(CLASS_TO_INDEX, to_json_bytes(&class_to_index)?)?;
    put(TOKENIZER, preprocessor.tokenizer().json().as_bytes().to_vec())?;
    put(PREPROCESSOR, to_json_bytes(preprocessor.config())?)?;
    put(REPORT, to_json_bytes(&report)?)?;
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        prepd_version: env!("CARGO_PKG_VERSION").to_string(),
        // Where the bytes came from is not part of what they are.
        spec: JobSpec { source: None, ..spec.clone() },
        input: scan.input,
        rows,
        classes,
        class_to_index,
        tokenizer_sha256: preprocessor.tokenizer().sha256().to_string(),
        unicode_version: UNICODE_VERSION.to_string(),
        artifacts,
    };
    sink.put(MANIFEST, to_json_bytes(&manifest)?)?;
    Ok(JobOutcome { manifest, report })
}

/// A split's side, as it indexes per-split arrays.
#[derive(Debug, Clone, Copy)]
enum Side {
    Train = 0,
    Validation = 1,
}

/// Every part of a job whose rows are all at hand, sorted: the sides are
/// taken apart in parallel (as references, not moving the rows again) and
/// every part is encoded at once; in a stream, the parts that fill with the
/// last rows (the validation split's, mostly) would be encoded alone.
/// Returns the parts in part order, train's first, and what each side got.
fn encode_parts_at_once(
    rows: Vec<ProcessedRow>,
    plan: &SplitPlan,
    rows_per_part: usize,
    id_column: IdColumn,
) -> Result<(Vec<EncodedPart>, [u64; 2], TokenTally)> {
    let (validation, train): (Vec<&ProcessedRow>, Vec<&ProcessedRow>) =
        rows.par_iter().partition(|row| plan.is_validation(row));
    let tokens = rows
        .par_iter()
        .fold(TokenTally::default, |mut tally, row| {
            tally.add(row.content.token_ids().len() as u64);
            tally
        })
        .reduce(TokenTally::default, TokenTally::merged);
    let mut cut = Vec::new();
    for (side, rows) in [(Side::Train, &train), (Side::Validation, &validation)] {
        // An empty split still gets one (empty) part.
        let chunks: Vec<&[&ProcessedRow]> =
            if rows.is_empty() { vec![&[]] } else { rows.chunks(rows_per_part).collect() };
        cut.extend(chunks.into_iter().enumerate().map(|(n, chunk)| (part_name(side, n), side, chunk)));
    }
    let encoded = cut
        .into_par_iter()
        .map(|(name, side, rows)| EncodedPart::encode(name, side, rows, id_column))
        .collect::<Result<Vec<_>>>()?;
    let routed = [train.len() as u64, validation.len() as u64];
    drop((train, validation));
    free_in_background(rows);
    Ok((encoded, routed, tokens))
}

/// Frees a job's rows off the job's path: a million rows take a thread
/// a tenth of a second, which the job need not wait for (and `prepd run`,
/// which exits once its artifacts are written, never does). A task of the
/// job's pool, which this runs on, so that the pool stays the job's only
/// CPU: a worker with nothing else to do takes it at once, otherwise it
/// runs when this thread is next free.
fn free_in_background(rows: Vec<ProcessedRow>) {
    rayon::spawn(move || drop(rows));
}

/// The `n`th Parquet part of a side, from 0.
fn part_name(side: Side, n: usize) -> String {
    let split = match side {
        Side::Train => "train",
        Side::Validation => "val",
    };
    format!("{split}/part-{n:05}.parquet")
}

/// A Parquet part, encoded and described, to be stored.
struct EncodedPart {
    side: Side,
    entry: ArtifactEntry,
    bytes: Vec<u8>,
}

impl EncodedPart {
    fn encode<R: Borrow<ProcessedRow>>(name: String, side: Side, rows: &[R], id_column: IdColumn) -> Result<Self> {
        let bytes = parquet_part(rows, id_column)?;
        let entry = ArtifactEntry::describe(&name, &bytes, Some(rows.len() as u64));
        Ok(Self { side, entry, bytes })
    }
}

/// A Parquet part's rows, cut but not encoded yet.
struct Shard {
    name: String,
    side: Side,
    rows: Vec<ProcessedRow>,
}

/// Sends the rows, in their seeded order, to their side of the split and
/// cuts each side into parts of `rows_per_part` rows, a part as soon as it
/// is full. An empty split still gets one (empty) part, so that readers
/// find its schema.
struct ShardCutter<'a, I> {
    rows: I,
    plan: &'a SplitPlan,
    rows_per_part: usize,
    filling: [Vec<ProcessedRow>; 2],
    parts_cut: [usize; 2],
    /// Rows sent to each side so far.
    routed: [u64; 2],
    tokens: TokenTally,
}

impl<'a, I: Iterator<Item = Result<ProcessedRow>>> ShardCutter<'a, I> {
    fn new(rows: I, plan: &'a SplitPlan, rows_per_part: usize) -> Self {
        Self {
            rows,
            plan,
            rows_per_part,
            filling: Default::default(),
            parts_cut: [0; 2],
            routed: [0; 2],
            tokens: TokenTally::default(),
        }
    }

    fn cut(&mut self, side: Side) -> Shard {
        let n = &mut self.parts_cut[side as usize];
        let name = part_name(side, *n);
        *n += 1;
        let rows = std::mem::replace(&mut self.filling[side as usize], Vec::with_capacity(self.rows_per_part));
        Shard { name, side, rows }
    }
}

impl<I: Iterator<Item = Result<ProcessedRow>>> Iterator for ShardCutter<'_, I> {
    type Item = Result<Shard>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let row = match self.rows.next() {
                Some(Ok(row)) => row,
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    // The rest of each side, train first.
                    let unfinished = [Side::Train, Side::Validation]
                        .into_iter()
                        .find(|&s| !self.filling[s as usize].is_empty() || self.parts_cut[s as usize] == 0)?;
                    return Some(Ok(self.cut(unfinished)));
                }
            };
            let side = if self.plan.is_validation(&row) { Side::Validation } else { Side::Train };
            self.tokens.add(row.content.token_ids().len() as u64);
            self.routed[side as usize] += 1;
            let filling = &mut self.filling[side as usize];
            filling.push(row);
            if filling.len() == self.rows_per_part {
                return Some(Ok(self.cut(side)));
            }
        }
    }
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

    fn merged(self, other: Self) -> Self {
        match (self.rows, other.rows) {
            (0, _) => other,
            (_, 0) => self,
            _ => Self {
                rows: self.rows + other.rows,
                sum: self.sum + other.sum,
                min: self.min.min(other.min),
                max: self.max.max(other.max),
            },
        }
    }

    fn stats(&self) -> TokenStats {
        if self.rows == 0 {
            return TokenStats::default();
        }
        TokenStats { min: self.min, max: self.max, mean: self.sum as f64 / self.rows as f64 }
    }
}
