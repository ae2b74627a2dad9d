//! `prepd run`: one job from the command line, with a progress bar, writing
//! the same artifacts (byte for byte) as the service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::CommonConfig;
use crate::error::{Error, Result};
use crate::jobs::glob;
use crate::jobs::sources::{HubClient, SourcePolicy, TokenizerResolver};
use crate::pipeline::artifacts::Manifest;
use crate::pipeline::ingest::InputSource;
use crate::pipeline::runner::{self, JobObserver, RunSettings, Stage, TokenizerPlan};
use crate::pipeline::spec::{JobSpec, TokenizerSpec};
use crate::pipeline::tokenize::WordPieceTokenizer;
use crate::store::{ArtifactStore, StoreInput};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The dataset: a local path or a URI (`file://`, `https://`, `s3://`, `gs://`, `az://`).
    #[arg(long)]
    pub input: String,
    /// Directory to write the artifacts into.
    #[arg(long)]
    pub out: PathBuf,
    /// The job spec (JSON), as `POST /jobs` takes it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A `tokenizer.json` or WordPiece `vocab.txt`, as the upload's `tokenizer` part.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonConfig,
}

struct ProgressObserver {
    bar: ProgressBar,
    /// When each stage began (and the process's CPU time then), for the
    /// summary printed at the end.
    stages: std::sync::Mutex<Vec<(String, Instant, f64)>>,
}

/// Seconds of CPU (user and system) the process has used so far: beside a
/// stage's wall time it shows how many cores the stage kept busy.
fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

impl ProgressObserver {
    /// "ingest 1.20 s (2.31 cpu-s), split 0.80 s (...), ...": where the
    /// run's time went, and how much of the cores each stage used.
    fn stage_times(&self) -> String {
        let stages = self.stages.lock().unwrap();
        let took = |(i, (name, began, cpu_began)): (usize, &(String, Instant, f64))| {
            stages.get(i + 1).map(|(_, ended, cpu_ended)| {
                format!("{name} {:.2} s ({:.2} cpu-s)", (*ended - *began).as_secs_f64(), cpu_ended - cpu_began)
            })
        };
        stages.iter().enumerate().filter_map(took).collect::<Vec<_>>().join(", ")
    }
}

impl JobObserver for ProgressObserver {
    fn stage(&self, stage: Stage) {
        let name = serde_json::to_value(stage).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        self.stages.lock().unwrap().push((name.clone(), Instant::now(), process_cpu_seconds()));
        self.bar.set_message(name);
    }

    fn progress(&self, rows_done: u64, rows_total: u64) {
        self.bar.set_length(rows_total);
        self.bar.set_position(rows_done);
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A local path (which may hold a glob) as a `file://` URI; a URI as it is.
fn as_uri(input: &str) -> Result<String> {
    let has_scheme =
        input.split_once("://").is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphanumeric()));
    if has_scheme {
        return Ok(input.to_string());
    }
    // Only the part before a pattern must exist.
    let (existing, pattern) = match glob::pattern_start(input) {
        Some(at) => input.split_at(at),
        None => (input, ""),
    };
    let existing = if existing.is_empty() { "." } else { existing };
    let path = std::fs::canonicalize(existing).map_err(|e| Error::not_found(format!("input {input} ({e})")))?;
    let mut uri = url::Url::from_file_path(&path)
        .map(|u| u.to_string())
        .map_err(|_| Error::invalid_field("input", "not a usable path"))?;
    if !pattern.is_empty() {
        if !uri.ends_with('/') {
            uri.push('/');
        }
        uri.push_str(pattern);
    }
    Ok(uri)
}

pub async fn run(args: RunArgs) -> Result<Manifest> {
    let mut spec = match &args.config {
        Some(path) => JobSpec::from_json(&std::fs::read(path)?)?,
        None => JobSpec::default(),
    };
    let uri = as_uri(&args.input)?;
    // The command line reads what its user can read.
    let policy = SourcePolicy { allow_all: true, ..SourcePolicy::default() };
    let remote = policy.open_dataset(&uri).await?;
    remote.check_formats(spec.format)?;
    let cache = ArtifactStore::local(&args.common.data_dir)?;
    let tokenizer = match &args.tokenizer {
        // Built once: the spec names it by the sha256 of what it builds to.
        Some(path) => {
            let bytes = std::fs::read(path)?;
            let tokenizer = WordPieceTokenizer::from_bytes(&bytes)?;
            spec.tokenizer = TokenizerSpec::Uploaded { sha256: tokenizer.sha256().to_string() };
            TokenizerPlan::Ready(Box::new(tokenizer))
        }
        None => {
            let hub = HubClient::new(args.common.hf_endpoint.clone(), args.common.hf_token.clone());
            TokenizerResolver { store: &cache, policy: &policy, hub: &hub }.resolve(&spec.tokenizer, None).await?
        }
    };

    let out = ArtifactStore::local(&args.out)?;
    let runtime = tokio::runtime::Handle::current();
    let dataset: Vec<Box<dyn InputSource>> = remote
        .files
        .into_iter()
        .map(|file| {
            let source = StoreInput::new(
                remote.store.clone(),
                file.path,
                file.name,
                file.local_path,
                cache.scratch_dir().to_path_buf(),
                runtime.clone(),
            );
            Box::new(source) as Box<dyn InputSource>
        })
        .collect();
    let sink = out.sink(object_store::path::Path::from(""), runtime);
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(args.common.workers.max(1)).build().map_err(Error::internal)?;
    // A one-shot run keeps its partitions only while it runs.
    std::fs::create_dir_all(cache.scratch_dir())?;
    let work_dir = tempfile::Builder::new().prefix("run-").tempdir_in(cache.scratch_dir())?;
    let settings = RunSettings {
        read: args.common.read_settings(),
        partition_rows: args.common.partition_rows,
        sort_bytes: args.common.sort_bytes,
        in_memory_bytes: args.common.in_memory_bytes,
        work_dir: work_dir.path().to_path_buf(),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:8} [{bar:40}] {pos}/{len} rows {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let observer = Arc::new(ProgressObserver { bar: bar.clone(), stages: Default::default() });
    let running = observer.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        runner::run(&spec, &dataset, tokenizer, &sink, running.as_ref(), &pool, &settings)
    })
    .await?;
    bar.finish_and_clear();
    eprintln!("prepd: stages: {}", observer.stage_times());
    drop(work_dir);
    Ok(outcome?.manifest)
}
