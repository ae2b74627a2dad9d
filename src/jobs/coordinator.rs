//! Where job records live. The in-process coordinator keeps them in memory
//! and mirrors each to `jobs/{id}/job.json` in the store, so a restarted
//! process knows its jobs and resumes the ones a stop cut off.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{JobRecord, JobStatus};
use crate::error::{Error, Result};
use crate::store::ArtifactStore;

#[async_trait]
pub trait Coordinator: Send + Sync {
    async fn insert(&self, job: JobRecord) -> Result<()>;
    async fn get(&self, id: Uuid) -> Result<JobRecord>;
    /// Newest first; `before` is the id of the last job of the previous page.
    async fn list(&self, before: Option<Uuid>, limit: usize) -> Result<Vec<JobRecord>>;
    async fn update(&self, job: &JobRecord) -> Result<()>;
    async fn remove(&self, id: Uuid) -> Result<()>;
    /// Counts of jobs by status, for metrics.
    async fn count_by_status(&self) -> Result<BTreeMap<JobStatus, u64>>;
    /// Jobs queued or running when their process stopped, oldest first: the
    /// ones to resume.
    async fn unfinished(&self) -> Result<Vec<JobRecord>>;
}

pub struct LocalCoordinator {
    store: ArtifactStore,
    // UUIDv7 ids sort by creation time, so the map's order is the job order.
    jobs: Mutex<BTreeMap<Uuid, JobRecord>>,
}

impl LocalCoordinator {
    /// Loads the records in the store. A job that was queued or running when
    /// the last process stopped stays so: the executor resumes it.
    pub async fn open(store: ArtifactStore) -> Result<Self> {
        let mut jobs = BTreeMap::new();
        for id in store.list_job_ids().await? {
            let Some(bytes) = store.get_opt(&ArtifactStore::job_record(id)).await? else { continue };
            let Ok(job) = serde_json::from_slice::<JobRecord>(&bytes) else {
                tracing::warn!(%id, "skipping unreadable job record");
                continue;
            };
            jobs.insert(id, job);
        }
        Ok(Self { store, jobs: Mutex::new(jobs) })
    }

    async fn persist(&self, job: &JobRecord) -> Result<()> {
        let bytes = serde_json::to_vec(job).map_err(Error::internal)?;
        self.store.put(&ArtifactStore::job_record(job.id), bytes).await
    }
}

#[async_trait]
impl Coordinator for LocalCoordinator {
    async fn insert(&self, job: JobRecord) -> Result<()> {
        self.persist(&job).await?;
        self.jobs.lock().unwrap().insert(job.id, job);
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<JobRecord> {
        self.jobs.lock().unwrap().get(&id).cloned().ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    async fn list(&self, before: Option<Uuid>, limit: usize) -> Result<Vec<JobRecord>> {
        let jobs = self.jobs.lock().unwrap();
        let newest_first: Box<dyn Iterator<Item = &JobRecord>> = match before {
            Some(before) => Box::new(jobs.range(..before).rev().map(|(_, j)| j)),
            None => Box::new(jobs.values().rev()),
        };
        Ok(newest_first.take(limit).cloned().collect())
    }

    async fn update(&self, job: &JobRecord) -> Result<()> {
        if !self.jobs.lock().unwrap().contains_key(&job.id) {
            return Err(Error::not_found(format!("job {}", job.id)));
        }
        self.persist(job).await?;
        self.jobs.lock().unwrap().insert(job.id, job.clone());
        Ok(())
    }

    async fn remove(&self, id: Uuid) -> Result<()> {
        self.jobs.lock().unwrap().remove(&id);
        Ok(())
    }

    async fn count_by_status(&self) -> Result<BTreeMap<JobStatus, u64>> {
        let mut counts = BTreeMap::new();
        for job in self.jobs.lock().unwrap().values() {
            *counts.entry(job.status).or_insert(0) += 1;
        }
        Ok(counts)
    }

    async fn unfinished(&self) -> Result<Vec<JobRecord>> {
        Ok(self.jobs.lock().unwrap().values().filter(|job| !job.status.is_finished()).cloned().collect())
    }
}
