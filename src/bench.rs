//! `prepd bench-stages`: each stage of a job alone, in process, on one local
//! file, and the `tokenizers` crate's general BERT pipeline on the same
//! cleaned texts with the same thread count: the limit the issue measures
//! prepd against. `bench/run.sh` puts these beside whole jobs and the
//! Python peers.
//!
//! Stages run one after the other on data already in memory (except read,
//! which is the parse of the file), so each figure is that stage's own cost.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use rayon::prelude::*;
use serde::Serialize;

use crate::config::CommonConfig;
use crate::error::{Error, Result};
use crate::pipeline::artifacts::IdColumn;
use crate::pipeline::clean::{CleaningConfig, TextCleaner, default_stopwords};
use crate::pipeline::clean_encode::clean_and_tokenize;
use crate::pipeline::ingest::{self, InputSource};
use crate::pipeline::parquet_part::parquet_part;
use crate::pipeline::preprocessor::EncodedText;
use crate::pipeline::processed_row::{ProcessedRow, RowContent};
use crate::pipeline::spec::JobSpec;
use crate::pipeline::split::{ClassTally, RowKey, membership_hash, order_hash};
use crate::pipeline::tokenize::WordPieceTokenizer;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A local CSV, JSONL or Parquet file.
    #[arg(long)]
    pub input: PathBuf,
    /// A `tokenizer.json` or WordPiece `vocab.txt`.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// The job spec (JSON), as `POST /jobs` takes it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object per stage instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonConfig,
}

struct LocalFile {
    path: PathBuf,
    name: String,
}

impl InputSource for LocalFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&self.path)?)))
    }

    fn local_file(&self) -> Result<PathBuf> {
        Ok(self.path.clone())
    }

    fn file_on_disk(&self) -> Option<PathBuf> {
        Some(self.path.clone())
    }
}

#[derive(Debug, Serialize)]
pub struct StageFigure {
    pub stage: &'static str,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Input megabytes (10^6) per second: the same yardstick for every stage.
    pub input_mb_per_second: f64,
    pub note: String,
}

fn figure(stage: &'static str, rows: usize, input_bytes: u64, took: Duration, note: String) -> StageFigure {
    let seconds = took.as_secs_f64().max(1e-9);
    StageFigure {
        stage,
        rows: rows as u64,
        seconds,
        rows_per_second: rows as f64 / seconds,
        input_mb_per_second: input_bytes as f64 / 1e6 / seconds,
        note,
    }
}

pub fn run(args: &BenchArgs) -> Result<Vec<StageFigure>> {
    let spec = match &args.config {
        Some(path) => JobSpec::from_json(&std::fs::read(path)?)?,
        None => JobSpec::default(),
    };
    let name = args.input.file_name().and_then(|n| n.to_str()).unwrap_or("input").to_string();
    let source = LocalFile { path: args.input.clone(), name };
    let input_bytes = std::fs::metadata(&args.input)?.len();
    let tokenizer =
        WordPieceTokenizer::from_bytes(&std::fs::read(&args.tokenizer)?)?.with_max_length(spec.max_length)?;
    let workers = args.common.workers.max(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().map_err(Error::internal)?;
    let mut figures = Vec::new();

    // Read: one parse of the file, as the scan does it (chunks parsed on the workers, rows taken in order).
    let started = Instant::now();
    let (mut texts, mut labels, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    ingest::open_chunks(&source, &spec, args.common.read_settings())?.for_each_in_order(&pool, |batch| {
        texts.extend(batch.texts.iter().map(String::from));
        labels.extend(batch.labels.iter().map(|l| l.map(str::to_owned)));
        ids.extend(batch.ids.iter().flat_map(|ids| ids.iter().map(|id| id.map(str::to_owned))));
        Ok(())
    })?;
    let rows = texts.len();
    figures.push(figure("read", rows, input_bytes, started.elapsed(), format!("parse to rows, {workers} threads")));

    // Split: both passes' work (class tallies, then each class's boundary) and each row's side.
    let started = Instant::now();
    let key = |row: usize| RowKey::Position { file: "", row: row as u64 };
    let mut tallies: HashMap<&str, ClassTally> = HashMap::new();
    for (row, label) in labels.iter().enumerate() {
        let Some(label) = label.as_deref().filter(|l| !l.is_empty()) else { continue };
        tallies.entry(label).or_default().add(membership_hash(spec.seed, key(row)));
    }
    let mut boundaries: HashMap<&str, _> =
        tallies.iter().map(|(label, t)| (*label, t.boundary(spec.test_size, spec.split_mode))).collect();
    for (row, label) in labels.iter().enumerate() {
        if let Some(boundary) = label.as_deref().and_then(|l| boundaries.get_mut(l)) {
            boundary.offer(membership_hash(spec.seed, key(row)), row as u64);
        }
    }
    let splits: HashMap<&str, _> = boundaries.into_iter().map(|(label, b)| (label, b.finish())).collect();
    let mut classes: Vec<&str> = splits.keys().copied().collect();
    classes.sort_unstable();
    let validation = labels
        .iter()
        .enumerate()
        .filter(|(row, label)| {
            let split = label.as_deref().and_then(|l| splits.get(l));
            split.is_some_and(|s| s.is_validation(membership_hash(spec.seed, key(*row)), *row as u64))
        })
        .count();
    let split_note = format!("{} classes, {validation} validation rows, 1 thread", classes.len());
    figures.push(figure("split", rows, input_bytes, started.elapsed(), split_note));

    let cleaner = TextCleaner::new(CleaningConfig {
        enabled: spec.cleaning.enabled,
        stopwords: spec.cleaning.stopwords.clone().unwrap_or_else(default_stopwords),
    });
    // The job cleans and tokenizes in one scan; each is also timed alone.
    let started = Instant::now();
    let fused: Result<Vec<EncodedText>> = pool
        .install(|| texts.par_iter().with_min_len(256).map(|t| clean_and_tokenize(&cleaner, &tokenizer, t)).collect());
    let fused = fused?;
    let path = if tokenizer.has_clean_text_path() { "in one scan" } else { "one after the other" };
    figures.push(figure("clean_tokenize", rows, input_bytes, started.elapsed(), format!("{path}, {workers} threads")));

    let started = Instant::now();
    let cleaned: Vec<String> = pool.install(|| texts.par_iter().with_min_len(256).map(|t| cleaner.clean(t)).collect());
    figures.push(figure("clean", rows, input_bytes, started.elapsed(), format!("{workers} threads")));
    drop(texts);

    let encode_all = |general: bool| -> Result<(Vec<Vec<u32>>, Duration)> {
        let started = Instant::now();
        let encoded: Result<Vec<Vec<u32>>> = pool.install(|| {
            cleaned
                .par_iter()
                .with_min_len(256)
                .map(|text| {
                    let (ids, _) = if general {
                        tokenizer.encode_general(text)?
                    } else {
                        tokenizer.encode_reporting_truncation(text)?
                    };
                    Ok(ids)
                })
                .collect()
        });
        Ok((encoded?, started.elapsed()))
    };
    let (encoded, took) = encode_all(false)?;
    let path = if tokenizer.has_clean_text_path() { "clean-text WordPiece" } else { "general pipeline" };
    figures.push(figure("tokenize", rows, input_bytes, took, format!("{path}, {workers} threads")));
    let (limit, took) = encode_all(true)?;
    let differing = encoded.iter().zip(&limit).filter(|(a, b)| a != b).count();
    let differing_fused =
        fused.iter().zip(&cleaned).zip(&encoded).filter(|((f, c), e)| f.cleaned != **c || f.ids != **e).count();
    drop(fused);
    if differing_fused > 0 {
        return Err(Error::internal(format!(
            "clean and tokenize in one scan differ from one after the other on {differing_fused} rows"
        )));
    }
    let limit_note = format!("tokenizers crate, {workers} threads; ids differ from prepd's on {differing} rows");
    figures.push(figure("tokenizer_limit", rows, input_bytes, took, limit_note));
    drop(limit);

    // Write: the rows in their seeded order, as Parquet parts (the job writes one part at a time).
    let class_index: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, l)| (*l, i as u32)).collect();
    let mut processed: Vec<ProcessedRow> = cleaned
        .into_iter()
        .zip(encoded)
        .enumerate()
        .filter_map(|(row, (text, token_ids))| {
            let target = *class_index.get(labels[row].as_deref()?)?;
            let id = ids.get(row).and_then(Option::as_deref);
            let content = RowContent::new(id, &text, &token_ids);
            Some(ProcessedRow { order: (order_hash(spec.seed, key(row)), row as u64), split_hash: 0, target, content })
        })
        .collect();
    let id_column = if ids.is_empty() { IdColumn::Absent } else { IdColumn::of_ids(ids.iter().map(Option::as_deref)) };
    let started = Instant::now();
    processed.sort_unstable_by_key(|r| r.order);
    let mut written = 0u64;
    for part in processed.chunks(spec.rows_per_part.max(1)) {
        written += parquet_part(part, id_column)?.len() as u64;
    }
    let write_note = format!("sort and encode Parquet, 1 thread, {:.1} MB out", written as f64 / 1e6);
    figures.push(figure("write", processed.len(), input_bytes, started.elapsed(), write_note));

    if args.json {
        for figure in &figures {
            println!("{}", serde_json::to_string(figure).map_err(Error::internal)?);
        }
    } else {
        println!("{:<16} {:>10} {:>9} {:>12} {:>9}  note", "stage", "rows", "seconds", "rows/s", "MB/s");
        for f in &figures {
            println!(
                "{:<16} {:>10} {:>9.3} {:>12.0} {:>9.1}  {}",
                f.stage, f.rows, f.seconds, f.rows_per_second, f.input_mb_per_second, f.note
            );
        }
    }
    Ok(figures)
}
