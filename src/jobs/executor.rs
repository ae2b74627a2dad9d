//! Runs jobs: takes a slot, fetches the input and the tokenizer, hands the
//! pipeline to a blocking thread that drives the worker pool, and keeps the
//! record (status, stage, progress, timings) current in the coordinator.
//!
//! A job cut off by a stop (SIGTERM) or a crash is never presented as
//! succeeded: it goes back to `queued`, and the next process to start on the
//! same store resumes it from its finished partitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use object_store::ObjectStoreExt;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::sources::{HubClient, SourcePolicy, TokenizerResolver};
use super::{Coordinator, JobError, JobRecord, JobStatus};
use crate::error::{Error, Result};
use crate::pipeline::artifacts::SplitCounts;
use crate::pipeline::ingest::ReadSettings;
use crate::pipeline::partitions::WorkDir;
use crate::pipeline::runner::{self, JobObserver, RunSettings, Stage};
use crate::pipeline::spec::TokenizerSpec;
use crate::store::ArtifactStore;

/// Files of a multi-file source fetched at once.
const FETCH_CONCURRENCY: usize = 4;

/// A job this process is running: the live record and the stop flag.
struct RunningJob {
    record: Mutex<JobRecord>,
    cancel: AtomicBool,
    stage_started: Mutex<Instant>,
    /// When this run reported its first row count, and that count (rows a
    /// previous run finished): the rate counts only this run's rows.
    progress_started: Mutex<Option<(Instant, u64)>>,
}

impl RunningJob {
    fn new(record: JobRecord) -> Self {
        Self {
            record: Mutex::new(record),
            cancel: AtomicBool::new(false),
            stage_started: Mutex::new(Instant::now()),
            progress_started: Mutex::new(None),
        }
    }
}

impl JobObserver for RunningJob {
    fn stage(&self, stage: Stage) {
        let mut started = self.stage_started.lock().unwrap();
        let mut record = self.record.lock().unwrap();
        let previous = serde_json::to_value(record.stage).ok().and_then(|v| v.as_str().map(String::from));
        if let Some(previous) = previous.filter(|_| record.stage != Stage::Queued) {
            *record.timings.stages.entry(previous).or_default() += started.elapsed().as_secs_f64();
        }
        *started = Instant::now();
        record.stage = stage;
    }

    fn progress(&self, rows_done: u64, rows_total: u64) {
        let (started, resumed_at) =
            *self.progress_started.lock().unwrap().get_or_insert_with(|| (Instant::now(), rows_done));
        let elapsed = started.elapsed().as_secs_f64();
        let mut record = self.record.lock().unwrap();
        record.progress.resumed_rows = (resumed_at > 0).then_some(resumed_at);
        record.progress.rows_done = rows_done;
        record.progress.rows_total = Some(rows_total);
        if rows_done > resumed_at && elapsed > 0.0 {
            let rate = (rows_done - resumed_at) as f64 / elapsed;
            record.progress.rows_per_second = Some(rate);
            record.progress.eta_seconds = Some(rows_total.saturating_sub(rows_done) as f64 / rate);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

pub struct JobExecutor {
    store: ArtifactStore,
    coordinator: Arc<dyn Coordinator>,
    pool: Arc<rayon::ThreadPool>,
    policy: SourcePolicy,
    hub: HubClient,
    settings: ExecutorSettings,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<Uuid, Arc<RunningJob>>>,
    draining: AtomicBool,
}

/// How many jobs and threads an executor runs, and how jobs read and cut their input.
#[derive(Debug, Clone, Copy)]
pub struct ExecutorSettings {
    pub workers: usize,
    pub concurrent_jobs: usize,
    pub read: ReadSettings,
    pub partition_rows: u64,
    pub sort_bytes: u64,
    pub in_memory_bytes: u64,
}

impl JobExecutor {
    pub fn new(
        store: ArtifactStore,
        coordinator: Arc<dyn Coordinator>,
        policy: SourcePolicy,
        hub: HubClient,
        settings: ExecutorSettings,
    ) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(settings.workers.max(1))
            .thread_name(|n| format!("prepd-worker-{n}"))
            .build()
            .map_err(Error::internal)?;
        Ok(Self {
            store,
            coordinator,
            pool: Arc::new(pool),
            policy,
            hub,
            slots: Arc::new(Semaphore::new(settings.concurrent_jobs.max(1))),
            settings,
            running: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
        })
    }

    /// How this executor reads inputs (batch size, decompression caps).
    pub fn read_settings(&self) -> ReadSettings {
        self.settings.read
    }

    pub fn store(&self) -> &ArtifactStore {
        &self.store
    }

    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

    pub fn policy(&self) -> &SourcePolicy {
        &self.policy
    }

    pub fn tokenizers(&self) -> TokenizerResolver<'_> {
        TokenizerResolver { store: &self.store, policy: &self.policy, hub: &self.hub }
    }

    /// The freshest record: live for a job running here, else the coordinator's.
    pub async fn get(&self, id: Uuid) -> Result<JobRecord> {
        if let Some(job) = self.running.lock().unwrap().get(&id) {
            return Ok(job.record.lock().unwrap().clone());
        }
        self.coordinator.get(id).await
    }

    /// Records a new job and starts it in the background. An upload's files
    /// (and `files.json`) are in the store already; a source URI is fetched
    /// when the job starts.
    pub async fn submit(self: &Arc<Self>, record: JobRecord) -> Result<JobRecord> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        self.coordinator.insert(record.clone()).await?;
        metrics::counter!("prepd_jobs_submitted_total").increment(1);
        self.start(record.clone());
        Ok(record)
    }

    /// Starts again, in the background, the jobs a stop or a crash cut off:
    /// each resumes from its finished partitions.
    pub async fn resume_unfinished(self: &Arc<Self>) -> Result<()> {
        for mut record in self.coordinator.unfinished().await? {
            tracing::info!(id = %record.id, stage = ?record.stage, "resuming a job cut off by a stop");
            record.status = JobStatus::Queued;
            record.stage = Stage::Queued;
            self.coordinator.update(&record).await?;
            self.start(record);
        }
        Ok(())
    }

    fn start(self: &Arc<Self>, record: JobRecord) {
        let job = Arc::new(RunningJob::new(record.clone()));
        self.running.lock().unwrap().insert(record.id, job.clone());
        let executor = self.clone();
        tokio::spawn(async move { executor.drive(job).await });
    }

    /// Cancels a queued or running job; the record says `cancelled` once it stops.
    pub async fn cancel(&self, id: Uuid) -> Result<JobRecord> {
        let job = self.running.lock().unwrap().get(&id).cloned();
        match job {
            Some(job) => {
                job.cancel.store(true, Ordering::Relaxed);
                Ok(job.record.lock().unwrap().clone())
            }
            None => self.coordinator.get(id).await,
        }
    }

    /// Deletes a finished job, its input and its artifacts.
    pub async fn delete(&self, id: Uuid) -> Result<()> {
        let record = self.get(id).await?;
        if !record.status.is_finished() {
            return Err(Error::Conflict(format!("job {id} is {}; cancel it first", record.status.as_str())));
        }
        self.store.delete_prefix(&ArtifactStore::job_prefix(id)).await?;
        self.coordinator.remove(id).await
    }

    /// Stops taking jobs and stops the running ones at their next batch,
    /// waiting up to `grace` for them to go back to `queued`. Either way the
    /// next start resumes them (never shows them as succeeded).
    pub async fn drain(&self, grace: Duration) {
        self.start_draining();
        let jobs: Vec<Arc<RunningJob>> = self.running.lock().unwrap().values().cloned().collect();
        for job in &jobs {
            job.cancel.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + grace;
        while !self.running.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Readiness turns false and new jobs are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    async fn drive(self: Arc<Self>, job: Arc<RunningJob>) {
        let id = job.record.lock().unwrap().id;
        let started = Instant::now();
        let outcome = self.clone().execute(job.clone()).await;
        let interrupted = matches!(outcome, Err(Error::Cancelled)) && self.is_draining();
        // Cleaned up before the end shows in the record, so that a job seen
        // finished has nothing left to tidy.
        if !interrupted {
            self.clean_up(id, outcome.as_ref().err()).await;
        }
        let record = {
            let mut record = job.record.lock().unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            record.timings.total_seconds = Some(record.timings.total_seconds.unwrap_or(0.0) + elapsed);
            match &outcome {
                // Stopped by a stop, not by its user: the next start resumes it.
                _ if interrupted => {
                    record.status = JobStatus::Queued;
                    record.stage = Stage::Queued;
                }
                Ok(()) => record.status = JobStatus::Succeeded,
                Err(Error::Cancelled) => record.status = JobStatus::Cancelled,
                Err(e) => {
                    record.status = JobStatus::Failed;
                    record.error = Some(JobError::from(e));
                }
            }
            if record.status.is_finished() {
                record.finished_at = Some(Utc::now());
            }
            record.clone()
        };
        if record.status.is_finished() {
            metrics::counter!("prepd_jobs_finished_total", "status" => record.status.as_str()).increment(1);
        }
        if record.status == JobStatus::Succeeded {
            metrics::counter!("prepd_rows_processed_total").increment(record.progress.rows_done);
        }
        if let Err(e) = self.coordinator.update(&record).await {
            tracing::error!(%id, error = %e, "could not record the job's end");
        }
        self.running.lock().unwrap().remove(&id);
    }

    /// Removes a finished job's work directory and, when it did not
    /// succeed, whatever artifacts it had written (its input and record stay).
    async fn clean_up(&self, id: Uuid, error: Option<&Error>) {
        if let Some(e) = error {
            if !matches!(e, Error::Cancelled) {
                tracing::warn!(%id, error = %e, "job failed");
            }
            if let Err(e) = self.remove_partial_artifacts(id).await {
                tracing::error!(%id, error = %e, "could not remove a failed job's partial artifacts");
            }
        }
        let work_dir = self.store.job_work_dir(id);
        let removed = tokio::task::spawn_blocking(move || WorkDir::remove(&work_dir)).await;
        if let Err(e) = removed.map_err(Error::from).and_then(|removed| removed) {
            tracing::warn!(%id, error = %e, "could not remove the job's work directory");
        }
    }

    async fn remove_partial_artifacts(&self, id: Uuid) -> Result<()> {
        let prefix = ArtifactStore::job_prefix(id);
        let keep = |path: &object_store::path::Path| {
            let rest = path.as_ref().strip_prefix(prefix.as_ref()).unwrap_or("");
            rest == "/job.json" || rest.starts_with("/input/")
        };
        use futures::TryStreamExt;
        let listed: Vec<_> = self.store.object_store().list(Some(&prefix)).try_collect().await?;
        for meta in listed.into_iter().filter(|m| !keep(&m.location)) {
            let _ = self.store.object_store().delete(&meta.location).await;
        }
        Ok(())
    }

    async fn execute(self: Arc<Self>, job: Arc<RunningJob>) -> Result<()> {
        let _slot = tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot.map_err(Error::internal)?,
            _ = wait_for_cancel(&job) => return Err(Error::Cancelled),
        };
        let (id, spec) = {
            let mut record = job.record.lock().unwrap();
            record.status = JobStatus::Running;
            record.started_at.get_or_insert_with(Utc::now);
            record.attempts += 1;
            (record.id, record.spec.clone())
        };
        job.stage(Stage::Ingest);
        let (stop_flusher, flusher_stopped) = tokio::sync::oneshot::channel();
        let flusher = self.spawn_flusher(job.clone(), flusher_stopped);
        let result = async {
            let runtime = Handle::current();
            let dataset = match self.store.stored_dataset(id, runtime.clone()).await? {
                Some(dataset) => dataset,
                None => {
                    let source = spec
                        .source
                        .as_deref()
                        .ok_or_else(|| Error::internal(format!("job {id} has neither stored files nor a source")))?;
                    self.fetch(id, source).await?;
                    self.store
                        .stored_dataset(id, runtime.clone())
                        .await?
                        .ok_or_else(|| Error::internal(format!("job {id}: the fetched files are not listed")))?
                }
            };
            let uploaded = match spec.tokenizer {
                TokenizerSpec::Uploaded { .. } => {
                    Some(self.store.get(&ArtifactStore::job_uploaded_tokenizer(id)).await?)
                }
                _ => None,
            };
            let tokenizer = self.tokenizers().resolve(&spec.tokenizer, uploaded).await?;
            let sink = self.store.sink(ArtifactStore::job_prefix(id), runtime);
            let pool = self.pool.clone();
            let settings = RunSettings {
                read: self.settings.read,
                partition_rows: self.settings.partition_rows,
                sort_bytes: self.settings.sort_bytes,
                in_memory_bytes: self.settings.in_memory_bytes,
                work_dir: self.store.job_work_dir(id),
            };
            let observer = job.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                runner::run(&spec, &dataset, tokenizer, &sink, observer.as_ref(), &pool, &settings)
            })
            .await??;
            let mut record = job.record.lock().unwrap();
            record.counts =
                Some(SplitCounts { train: outcome.manifest.rows.train, validation: outcome.manifest.rows.validation });
            record.classes = outcome.manifest.classes.clone();
            record.class_to_index = Some(outcome.manifest.class_to_index.clone());
            Ok(())
        }
        .await;
        // Awaited, not aborted: a write in flight must land before the final record.
        let _ = stop_flusher.send(());
        let _ = flusher.await;
        result
    }

    /// Copies the files a source names into the store, then lists them.
    async fn fetch(&self, id: Uuid, source: &str) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let dataset = self.policy.open_dataset(source).await?;
        let remote = dataset.store.clone();
        let names: Vec<String> = dataset.files.iter().map(|f| f.name.clone()).collect();
        futures::stream::iter(dataset.files)
            .map(|file| {
                let remote = remote.clone();
                async move {
                    let stream = remote.get(&file.path).await?.into_stream();
                    self.store.put_stream(&ArtifactStore::job_input_file(id, &file.name), stream, u64::MAX).await
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        self.store.put_input_list(id, &names).await
    }

    /// Mirrors the live record to the coordinator every second until `stop`.
    fn spawn_flusher(
        &self,
        job: Arc<RunningJob>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop => return,
                }
                let record = job.record.lock().unwrap().clone();
                if let Err(e) = coordinator.update(&record).await {
                    tracing::warn!(id = %record.id, error = %e, "could not record progress");
                }
            }
        })
    }
}

async fn wait_for_cancel(job: &RunningJob) {
    while !job.cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
