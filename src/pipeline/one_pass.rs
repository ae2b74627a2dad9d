//! A job whose rows fit in memory, read once: the scan and the processing
//! of the two-pass path ([`super::runner`]) done in one pass over the input,
//! with the same result.

use std::sync::Mutex;

use ahash::AHashMap;
use rayon::prelude::*;

use super::artifacts::*;
use super::in_order::{chunks_in_flight, map_in_order};
use super::ingest::{self, RawChunk, RowBatch};
use super::partitions::{FinishedRows, PartitionCounts};
use super::preprocessor::{EncodedRow, FittedPreprocessor};
use super::processed_row::ProcessedRow;
use super::runner::{
    Checksum, FileRef, JobObserver, JobOutcome, NULL_LABEL_SAMPLE, Partitioning, Processed, ROW_OVERHEAD_BYTES,
    RunSettings, Scan, check_cancel, check_labelled_rows, check_null_label, class_to_index, empty_boundaries,
    merge_boundaries, split_and_write,
};
use super::spec::{InputFormat, JobSpec};
use super::split::{ClassTally, membership_hash, order_hash};
use crate::error::{Error, Result};

/// A job that fits in memory reads its input once: each chunk is parsed,
/// cleaned and tokenized on the workers, then its rows are numbered and
/// tallied in order (what the scan does on its own otherwise) and kept.
/// Once every row is in, the classes are numbered, every row is offered to
/// its class's boundary, and the splits are written from memory. The output
/// is the same as two passes give: only the order in which the work is done
/// differs. `None` when the rows outgrow the memory budget (the job then
/// reads the input again, in two passes, and spills).
pub(super) fn run_in_one_pass(
    spec: &JobSpec,
    files: &mut [FileRef<'_>],
    settings: &RunSettings,
    unmapped: &FittedPreprocessor,
    sink: &dyn ArtifactSink,
    observer: &dyn JobObserver,
    pool: &rayon::ThreadPool,
) -> Result<Option<JobOutcome>> {
    // The rows are counted as they are read: the total is known at the end.
    observer.progress(0, 0);
    let mut pass = OnePass::default();
    for file in files.iter_mut() {
        file.first_position = pass.rows;
        match pass.read_file(spec, file, settings, unmapped, observer, pool) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(file.locate(e)),
        }
        file.rows = pass.rows - file.first_position;
    }
    check_labelled_rows(spec, pass.rows, pass.labels.len())?;
    pass.null_label_rows.truncate(NULL_LABEL_SAMPLE);

    // Classes were numbered as first seen; a class's number is its rank
    // among the sorted labels.
    let mut by_label: Vec<u32> = (0..pass.labels.len() as u32).collect();
    by_label.sort_by(|&a, &b| pass.labels[a as usize].cmp(&pass.labels[b as usize]));
    let mut renumbered = vec![0u32; by_label.len()];
    for (rank, &first_seen) in by_label.iter().enumerate() {
        renumbered[first_seen as usize] = rank as u32;
    }
    let labels: Vec<String> = by_label.iter().map(|&c| std::mem::take(&mut pass.labels[c as usize])).collect();
    let tallies: Vec<ClassTally> = by_label.iter().map(|&c| std::mem::take(&mut pass.tallies[c as usize])).collect();
    let scan = Scan {
        input: InputSummary::of_files(pass.input_files),
        rows: pass.rows,
        class_numbers: labels.iter().enumerate().map(|(n, l)| (l.clone(), n as u32)).collect(),
        labels,
        tallies,
        null_label_rows: pass.null_label_rows,
        skipped: pass.skipped,
        id_column: pass.id_column.unwrap_or(IdColumn::Absent),
        row_bytes: pass.row_bytes,
    };
    let empty = empty_boundaries(spec, &scan);
    let mut rows = pass.kept;
    let boundaries = pool.install(|| {
        rows.par_iter_mut().for_each(|row| row.target = renumbered[row.target as usize]);
        rows.par_chunks(1 << 14)
            .fold(
                || empty.clone(),
                |mut boundaries, chunk| {
                    chunk.iter().for_each(|row| boundaries[row.target as usize].offer(row.split_hash, row.order.1));
                    boundaries
                },
            )
            .reduce(
                || empty.clone(),
                |mut into, from| {
                    merge_boundaries(&mut into, from);
                    into
                },
            )
    });
    observer.progress(pass.counts.rows, pass.counts.rows);
    let preprocessor = unmapped.clone().with_class_to_index(class_to_index(&scan));
    let partitions = Partitioning { rows: scan.rows, partition_rows: settings.partition_rows.max(1) };
    let kept = FinishedRows::InMemory(Mutex::new(rows));
    let processed = Processed { scan, kept, counts: pass.counts, boundaries };
    split_and_write(spec, processed, None, preprocessor, partitions, sink, observer, pool).map(Some)
}

/// What the one pass has learned and kept so far, over the files read.
#[derive(Default)]
struct OnePass {
    /// Rows read, null labels included: the next row's position.
    rows: u64,
    /// In the order first seen; rows' targets are these numbers until the end.
    labels: Vec<String>,
    class_of: AHashMap<String, u32>,
    tallies: Vec<ClassTally>,
    kept: Vec<ProcessedRow>,
    counts: PartitionCounts,
    input_files: Vec<InputFile>,
    null_label_rows: Vec<u64>,
    skipped: u64,
    /// The files' agreed id column, once a file is read.
    id_column: Option<IdColumn>,
    row_bytes: u64,
}

impl OnePass {
    /// Reads one file; `false` when the rows outgrew the memory budget.
    fn read_file(
        &mut self,
        spec: &JobSpec,
        file: &FileRef<'_>,
        settings: &RunSettings,
        unmapped: &FittedPreprocessor,
        observer: &dyn JobObserver,
        pool: &rayon::ThreadPool,
    ) -> Result<bool> {
        let (format, compression) = InputFormat::resolve(spec.format, file.source.name())?;
        let file_checksum = Checksum::begin(format, compression, file.source, observer)?;
        let opened = ingest::open_chunks_counting(file.source, spec, settings.read, file_checksum.digest())?;
        let mut id_column = if opened.columns.id.is_some() { IdColumn::Integer } else { IdColumn::Absent };
        let parser = &opened.parser;
        let mut file_rows = 0u64;
        let mut outgrown = false;
        // Parsing and encoding, the expensive part, run on the workers; a
        // row's position (and so its hashes) is known in order only.
        let encode = |chunk: RawChunk| -> Result<(RowBatch, Vec<Option<EncodedRow>>)> {
            let batch = parser.parse(chunk, 0)?;
            let encoded = batch
                .labels
                .iter()
                .zip(batch.texts.iter())
                .enumerate()
                .map(|(i, (label, text))| match label {
                    Some(label) if !label.is_empty() => unmapped.encode_row(batch.id(i), text).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?;
            Ok((batch, encoded))
        };
        let read = map_in_order(pool, opened.chunks, chunks_in_flight(pool), encode, |(mut batch, encoded)| {
            check_cancel(observer)?;
            batch.first_position = file_rows;
            file_rows += batch.len() as u64;
            if let Some(ids) = &batch.ids {
                id_column = id_column.max(IdColumn::of_ids(ids.iter()));
            }
            self.row_bytes += 2 * batch.text_bytes;
            for (i, encoded) in encoded.into_iter().enumerate() {
                let row = batch.first_position + i as u64;
                let Some(encoded) = encoded else {
                    check_null_label(spec, row)?;
                    if self.null_label_rows.len() < NULL_LABEL_SAMPLE {
                        self.null_label_rows.push(file.first_position + row + 1);
                    }
                    self.skipped += 1;
                    continue;
                };
                let label = batch.labels.get(i).unwrap_or_default();
                let class = match self.class_of.get(label) {
                    Some(&class) => class,
                    None => {
                        let class = self.labels.len() as u32;
                        self.labels.push(label.to_string());
                        self.class_of.insert(label.to_string(), class);
                        self.tallies.push(ClassTally::default());
                        class
                    }
                };
                let key = file.row_key(&batch, i);
                let split_hash = membership_hash(spec.seed, key);
                let order = (order_hash(spec.seed, key), file.first_position + row);
                self.tallies[class as usize].add(split_hash);
                self.counts.rows += 1;
                self.counts.empty_cleaned_texts += u64::from(encoded.content.text().is_empty());
                self.counts.truncated_rows += u64::from(encoded.truncated);
                self.row_bytes += ROW_OVERHEAD_BYTES;
                self.kept.push(ProcessedRow { order, split_hash, target: class, content: encoded.content });
            }
            if self.row_bytes > settings.in_memory_bytes {
                // Not an error: the caller starts over in two passes.
                outgrown = true;
                return Err(Error::Cancelled);
            }
            Ok(())
        });
        if outgrown {
            return Ok(false);
        }
        read?;
        self.rows += file_rows;
        self.id_column = Some(self.id_column.map_or(id_column, |agreed| agreed.max(id_column)));
        let (bytes, sha256) = file_checksum.finish();
        self.input_files.push(InputFile {
            name: file.source.name().to_string(),
            format,
            bytes,
            sha256,
            rows: file_rows,
        });
        Ok(true)
    }
}
