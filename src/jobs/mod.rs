//! Job lifecycle: the record every replica can read, the coordinator that
//! keeps records, and the executor that runs jobs on the worker pool.

pub mod coordinator;
pub mod executor;
pub mod glob;
pub mod sources;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, ErrorKind, InputLocation};
use crate::pipeline::artifacts::SplitCounts;
use crate::pipeline::preprocessor::ClassToIndex;
use crate::pipeline::runner::Stage;
use crate::pipeline::spec::JobSpec;

pub use coordinator::{Coordinator, LocalCoordinator};
pub use executor::{ExecutorSettings, JobExecutor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub rows_done: u64,
    /// Known once the input has been scanned.
    pub rows_total: Option<u64>,
    /// Rows of partitions an earlier attempt finished: not processed again
    /// after a resume (counted in `rows_done`, not in the rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_rows: Option<u64>,
    /// Rows cleaned and tokenized per second since processing began (in this attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
    /// Seconds left at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Timings {
    /// Seconds spent in each stage, in the order they ran.
    pub stages: BTreeMap<String, f64>,
    pub total_seconds: Option<f64>,
}

/// A failed job's error, in the shape of an RFC 9457 problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// `invalid-input`, `invalid-request`, `unavailable`, `internal`, ...
    pub kind: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub fn kind_slug(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Malformed => "malformed",
        ErrorKind::InvalidRequest => "invalid-request",
        ErrorKind::InvalidInput => "invalid-input",
        ErrorKind::UnsupportedFormat => "unsupported-format",
        ErrorKind::Forbidden => "forbidden",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::TooLarge => "too-large",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Internal => "internal",
    }
}

impl From<&Error> for JobError {
    fn from(err: &Error) -> Self {
        let (location, field) = match err {
            Error::BadInput { location, .. } => (location.clone(), None),
            Error::InvalidField { field, .. } => (InputLocation::default(), Some(field.clone())),
            _ => (InputLocation::default(), None),
        };
        JobError {
            kind: kind_slug(err.kind()).to_string(),
            detail: err.to_string(),
            file: location.file,
            row: location.row,
            column: location.column,
            field,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobRecord {
    pub id: Uuid,
    pub status: JobStatus,
    pub stage: Stage,
    pub progress: Progress,
    pub spec: JobSpec,
    /// The input's file name, as uploaded or named by the source URI.
    pub input_name: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Times the job has started running: more than one when a stop or a
    /// crash cut it off and it resumed from its finished partitions.
    #[serde(default)]
    pub attempts: u32,
    /// Per split, once the split is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<SplitCounts>,
    /// Per class and split, once the job has succeeded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, SplitCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_to_index: Option<ClassToIndex>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

impl JobRecord {
    pub fn new(id: Uuid, spec: JobSpec, input_name: String) -> Self {
        Self {
            id,
            status: JobStatus::Queued,
            stage: Stage::Queued,
            progress: Progress::default(),
            spec,
            input_name,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            attempts: 0,
            counts: None,
            classes: BTreeMap::new(),
            class_to_index: None,
            timings: Timings::default(),
            error: None,
        }
    }
}
