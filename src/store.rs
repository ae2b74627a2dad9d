//! The object store behind every replica, and the artifact layout in it:
//!
//! ```text
//! jobs/{id}/job.json               the job record (local coordinator)
//! jobs/{id}/input/files/{name}     the dataset's files, as uploaded or fetched
//! jobs/{id}/input/files.json       their names in row order, written once all are in
//! jobs/{id}/input/tokenizer        an uploaded tokenizer
//! jobs/{id}/{artifact}             train/part-*.parquet, val/part-*.parquet,
//!                                  class_to_index.json, preprocessor.json,
//!                                  tokenizer.json, report.json, manifest.json (last)
//! cache/hf/{repo}/{revision}/{file} tokenizers fetched from the hub
//! ```
//!
//! Beside the store, on local disk: `{scratch}/jobs/{id}/`, a running job's
//! work directory (its finished partitions, kept until the job ends so that
//! a job cut off by a stop or a crash resumes from them).

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_util::io::{StreamReader, SyncIoBridge};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::pipeline::artifacts::ArtifactSink;
use crate::pipeline::ingest::InputSource;

#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// Where the store keeps files, for a local directory store.
    local_root: Option<PathBuf>,
    scratch: PathBuf,
}

/// What streaming an object into the store wrote.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

impl ArtifactStore {
    /// The embedded default: a local directory, created if missing.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Unavailable(format!("cannot create data directory {}: {e}", root.display())))?;
        let root = root.canonicalize()?;
        // Deleting a job removes its directories too, not only its files.
        let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        let scratch = root.join(".scratch");
        Ok(Self { store: Arc::new(store), local_root: Some(root), scratch })
    }

    pub fn job_prefix(id: Uuid) -> Path {
        Path::from(format!("jobs/{id}"))
    }

    pub fn job_record(id: Uuid) -> Path {
        Path::from(format!("jobs/{id}/job.json"))
    }

    /// A dataset file; `name` may hold `/` (a multi-file source's sub-paths).
    pub fn job_input_file(id: Uuid, name: &str) -> Path {
        Path::from(format!("jobs/{id}/input/files/{name}"))
    }

    /// The names of the dataset's files, once all are stored.
    pub fn job_input_list(id: Uuid) -> Path {
        Path::from(format!("jobs/{id}/input/files.json"))
    }

    pub fn job_uploaded_tokenizer(id: Uuid) -> Path {
        Path::from(format!("jobs/{id}/input/tokenizer"))
    }

    /// A job's work directory, on local disk.
    pub fn job_work_dir(&self, id: Uuid) -> PathBuf {
        self.scratch.join("jobs").join(id.to_string())
    }

    pub fn job_artifact(id: Uuid, name: &str) -> Path {
        Path::from(format!("jobs/{id}/{name}"))
    }

    pub fn hub_cache(repo: &str, revision: &str, file: &str) -> Path {
        Path::from(format!("cache/hf/{repo}/{revision}/{file}"))
    }

    pub fn scratch_dir(&self) -> &std::path::Path {
        &self.scratch
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub async fn put(&self, path: &Path, bytes: impl Into<Bytes>) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes.into())).await?;
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// The object's bytes, or `None` when there is no such object.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(got) => Ok(Some(got.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_stream(&self, path: &Path) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let got = self.store.get(path).await?;
        Ok(got.into_stream().map_err(Error::from))
    }

    /// Streams `body` into `path` without holding it whole, refusing more
    /// than `limit` bytes. Nothing is left at `path` on failure.
    pub async fn put_stream<S, E>(&self, path: &Path, mut body: S, limit: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Error>,
    {
        let upload = self.store.put_multipart(path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Into::into)?;
                bytes += chunk.len() as u64;
                if bytes > limit {
                    return Err(Error::TooLarge { limit });
                }
                hasher.update(&chunk);
                writer.wait_for_capacity(4).await?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await?;
                Ok(Stored { bytes, sha256: hex::encode(hasher.finalize()) })
            }
            Err(e) => {
                let _ = writer.abort().await;
                let _ = self.store.delete(path).await;
                Err(e)
            }
        }
    }

    /// Deletes every object under `prefix`.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        let paths = self.store.list(Some(prefix)).map_ok(|meta| meta.location).boxed();
        let mut deleted = self.store.delete_stream(paths);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Ids of the jobs with a directory under `jobs/`.
    pub async fn list_job_ids(&self) -> Result<Vec<Uuid>> {
        let listing = self.store.list_with_delimiter(Some(&Path::from("jobs"))).await?;
        Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().and_then(|n| n.parse().ok())).collect())
    }

    /// Readiness: the store answers a listing.
    pub async fn check(&self) -> Result<()> {
        self.store.list_with_delimiter(Some(&Path::from("jobs"))).await?;
        Ok(())
    }

    /// Reads an object synchronously, for the pipeline (off the async runtime).
    pub fn input_source(&self, path: Path, name: String, runtime: Handle) -> StoreInput {
        let local_file = self.local_root.as_ref().map(|root| root.join(path.as_ref()));
        StoreInput::new(self.store.clone(), path, name, local_file, self.scratch.clone(), runtime)
    }

    /// Records the names of a job's stored dataset files, in row order.
    pub async fn put_input_list(&self, id: Uuid, names: &[String]) -> Result<()> {
        self.put(&Self::job_input_list(id), serde_json::to_vec(names).map_err(Error::internal)?).await
    }

    /// A job's stored dataset, or `None` when its files are not all in yet.
    pub async fn stored_dataset(&self, id: Uuid, runtime: Handle) -> Result<Option<Vec<Box<dyn InputSource>>>> {
        let Some(bytes) = self.get_opt(&Self::job_input_list(id)).await? else { return Ok(None) };
        let names: Vec<String> = serde_json::from_slice(&bytes).map_err(Error::internal)?;
        let dataset = names
            .into_iter()
            .map(|name| {
                let source = self.input_source(Self::job_input_file(id, &name), name, runtime.clone());
                Box::new(source) as Box<dyn InputSource>
            })
            .collect();
        Ok(Some(dataset))
    }

    /// Writes a job's artifacts under `prefix`, synchronously.
    pub fn sink(&self, prefix: Path, runtime: Handle) -> StoreSink {
        StoreSink { store: self.clone(), prefix, runtime }
    }
}

/// An object in a store as a pipeline input.
pub struct StoreInput {
    store: Arc<dyn ObjectStore>,
    path: Path,
    name: String,
    /// The object's own file, when the store is a local directory.
    local_file: Option<PathBuf>,
    scratch: PathBuf,
    runtime: Handle,
    spooled: OnceLock<PathBuf>,
}

impl StoreInput {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        name: String,
        local_file: Option<PathBuf>,
        scratch: PathBuf,
        runtime: Handle,
    ) -> Self {
        Self { store, path, name, local_file, scratch, runtime, spooled: OnceLock::new() }
    }
}

impl InputSource for StoreInput {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self) -> Result<Box<dyn Read + Send>> {
        // A local object is read as a file: through the store's async stream
        // every read is a hop to the runtime and back, which costs more than
        // the parse on a fast disk.
        if let Some(path) = &self.local_file {
            return Ok(Box::new(std::fs::File::open(path)?));
        }
        let store = self.store.clone();
        let path = self.path.clone();
        let stream = self.runtime.block_on(async move { store.get(&path).await })?.into_stream();
        let reader = StreamReader::new(stream.map_err(|e| std::io::Error::other(Error::from(e))));
        Ok(Box::new(SyncIoBridge::new_with_handle(reader, self.runtime.clone())))
    }

    fn file_on_disk(&self) -> Option<PathBuf> {
        self.local_file.clone()
    }

    /// Formats read by random access (Parquet) need a file: the store's own
    /// for a local store, else a copy in the scratch directory.
    fn local_file(&self) -> Result<PathBuf> {
        if let Some(path) = &self.local_file {
            return Ok(path.clone());
        }
        if let Some(path) = self.spooled.get() {
            return Ok(path.clone());
        }
        std::fs::create_dir_all(&self.scratch)?;
        let target = self.scratch.join(format!("{}-{}", Uuid::new_v4(), self.name));
        let mut reader = self.open()?;
        let mut file = std::fs::File::create(&target)?;
        std::io::copy(&mut reader, &mut file)?;
        Ok(self.spooled.get_or_init(|| target).clone())
    }
}

impl Drop for StoreInput {
    fn drop(&mut self) {
        if let Some(path) = self.spooled.get() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A job's artifact prefix as a pipeline sink.
pub struct StoreSink {
    store: ArtifactStore,
    prefix: Path,
    runtime: Handle,
}

impl ArtifactSink for StoreSink {
    fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let path = if self.prefix.as_ref().is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        };
        self.runtime.block_on(self.store.put(&path, bytes))
    }
}
