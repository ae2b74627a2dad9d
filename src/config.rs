//! Settings, from flags or `PREPD_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::pipeline::compression::DecompressionLimits;
use crate::pipeline::ingest::ReadSettings;

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Settings every command shares.
#[derive(Debug, Clone, Args)]
pub struct CommonConfig {
    /// Where the local store keeps jobs, artifacts and the tokenizer cache.
    #[arg(long, env = "PREPD_DATA_DIR", default_value = "./prepd-data")]
    pub data_dir: PathBuf,
    /// Worker threads that clean and tokenize (default: the cores).
    #[arg(long, env = "PREPD_WORKERS", default_value_t = default_workers())]
    pub workers: usize,
    /// Rows per batch handed to a worker.
    #[arg(long, env = "PREPD_BATCH_ROWS", default_value_t = 8192)]
    pub batch_rows: usize,
    /// Input rows per partition: the unit of work a job finishes and keeps,
    /// so that a job cut off mid-way resumes from its finished partitions.
    /// Memory grows with it (a partition's rows are sorted in memory).
    #[arg(long, env = "PREPD_PARTITION_ROWS", default_value_t = 100_000)]
    pub partition_rows: u64,
    /// Bytes of processed rows the write stage sorts in memory at once (the
    /// rows wait on disk, bucketed by their seeded order, until then).
    #[arg(long, env = "PREPD_SORT_BYTES", default_value_t = 48 << 20)]
    pub sort_bytes: u64,
    /// A job whose processed rows take at most this many bytes reads its
    /// input once and keeps them in memory instead of spilling them to its
    /// work directory: faster, but such a job, cut off, starts over instead
    /// of resuming (0: always two reads and spilled rows).
    #[arg(long, env = "PREPD_IN_MEMORY_BYTES", default_value_t = 512 << 20)]
    pub in_memory_bytes: u64,
    /// Largest size a compressed input (`.gz`, `.zst`) may decompress to.
    #[arg(long, env = "PREPD_MAX_DECOMPRESSED_BYTES", default_value_t = 1 << 40)]
    pub max_decompressed_bytes: u64,
    /// Largest expansion of a compressed input, checked past its first 64 MiB.
    #[arg(long, env = "PREPD_MAX_COMPRESSION_RATIO", default_value_t = 250)]
    pub max_compression_ratio: u64,
    /// The Hugging Face hub (or a mirror) that `{"pretrained": ...}` tokenizers come from.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hf_endpoint: String,
    /// A hub token, for gated or private repositories.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
}

impl CommonConfig {
    pub fn read_settings(&self) -> ReadSettings {
        ReadSettings::new(
            self.batch_rows,
            DecompressionLimits { max_bytes: self.max_decompressed_bytes, max_ratio: self.max_compression_ratio },
        )
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[arg(long, env = "PREPD_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub common: CommonConfig,
    /// Jobs that run at once; more wait as `queued`.
    #[arg(long, env = "PREPD_CONCURRENT_JOBS", default_value_t = 1)]
    pub concurrent_jobs: usize,
    /// Largest dataset upload, in bytes.
    #[arg(long, env = "PREPD_MAX_UPLOAD_BYTES", default_value_t = 16 << 30)]
    pub max_upload_bytes: u64,
    /// Largest JSON request body (`/preprocess`, `/jobs` as JSON), in bytes.
    #[arg(long, env = "PREPD_MAX_JSON_BYTES", default_value_t = 8 << 20)]
    pub max_json_bytes: usize,
    /// Requests handled at once; beyond that the answer is 429.
    #[arg(long, env = "PREPD_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Directories `file://` sources may be read from (comma-separated); none by default.
    #[arg(long, env = "PREPD_FILE_ROOTS", value_delimiter = ',')]
    pub file_roots: Vec<PathBuf>,
    /// Allow http(s) sources on loopback, link-local and private addresses.
    #[arg(long, env = "PREPD_ALLOW_PRIVATE_SOURCES", default_value_t = false)]
    pub allow_private_sources: bool,
    /// Seconds a stop waits for in-flight requests and jobs.
    #[arg(long, env = "PREPD_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Fitted preprocessors kept in memory for `/preprocess`.
    #[arg(long, env = "PREPD_PREPROCESSOR_CACHE", default_value_t = 32)]
    pub preprocessor_cache: usize,
}
