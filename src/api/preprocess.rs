//! `/preprocess`: a model server's door to the same preprocessing a job
//! applied, through the job's fitted preprocessor (loaded once, cached).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::problem::{ApiResult, Problem};
use crate::error::{Error, Result};
use crate::pipeline::artifacts;
use crate::pipeline::preprocessor::{Encoded, FittedPreprocessor};
use crate::store::ArtifactStore;

/// Fitted preprocessors of succeeded jobs, by job id.
#[derive(Clone)]
pub struct PreprocessorCache {
    capacity: usize,
    loaded: Arc<Mutex<HashMap<Uuid, Arc<FittedPreprocessor>>>>,
}

impl PreprocessorCache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), loaded: Arc::default() }
    }

    pub fn forget(&self, id: Uuid) {
        self.loaded.lock().unwrap().remove(&id);
    }

    async fn get(&self, state: &AppState, id: Uuid) -> Result<Arc<FittedPreprocessor>> {
        if let Some(found) = self.loaded.lock().unwrap().get(&id) {
            return Ok(found.clone());
        }
        // Only a succeeded job's artifacts are read.
        super::jobs::manifest_of(state, id).await?;
        let store = state.executor.store();
        let config = store.get(&ArtifactStore::job_artifact(id, artifacts::PREPROCESSOR)).await?;
        let tokenizer = store.get(&ArtifactStore::job_artifact(id, artifacts::TOKENIZER)).await?;
        let fitted = Arc::new(
            tokio::task::spawn_blocking(move || FittedPreprocessor::from_artifacts(&config, &tokenizer)).await??,
        );
        let mut loaded = self.loaded.lock().unwrap();
        if loaded.len() >= self.capacity {
            // Jobs are immutable, so any entry may go; a miss only costs a reload.
            if let Some(&evict) = loaded.keys().next() {
                loaded.remove(&evict);
            }
        }
        loaded.insert(id, fitted.clone());
        Ok(fitted)
    }
}

/// How to pad the returned sequences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// To the longest sequence of the request (the course's `padding="longest"`).
    #[default]
    Longest,
    /// No padding: sequences keep their lengths.
    None,
    /// To exactly this length; a longer sequence is an error (fit the job with
    /// `max_length` to truncate).
    #[serde(untagged)]
    MaxLength { max_length: usize },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreprocessRequest {
    /// A succeeded job whose preprocessing to apply.
    pub job_id: Uuid,
    /// Raw records: the job's text columns, and its label column optionally.
    #[schema(example = json!([{"title": "Transfer learning with transformers", "description": "Using transformers for transfer learning on text classification tasks."}]))]
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub padding: Padding,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreprocessResponse {
    pub ids: Vec<Vec<u32>>,
    pub masks: Vec<Vec<u8>>,
    /// Present when a record carries a label: its index, `null` for records without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<Option<i64>>>,
}

/// Records above which encoding moves off the async threads.
const INLINE_RECORDS: usize = 8;

/// Preprocess raw records exactly as the job did.
#[utoipa::path(post, path = "/preprocess", tag = "preprocess", request_body = PreprocessRequest,
    responses(
        (status = 200, description = "Token ids and masks (and targets where labels were given)", body = PreprocessResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A missing field or an unknown label (names the record and field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Overloaded", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn preprocess(State(state): State<AppState>, request: Request) -> ApiResult<Json<PreprocessResponse>> {
    let body = super::json_body(request, state.limits.max_json_bytes).await?;
    let request = parse_request(&body)?;
    let fitted = state.preprocessors.get(&state, request.job_id).await?;
    let pad_id = fitted.tokenizer().pad_id();
    let encoded = if request.records.len() <= INLINE_RECORDS {
        encode_all(&fitted, &request.records)?
    } else {
        let records = request.records;
        tokio::task::spawn_blocking(move || encode_all(&fitted, &records)).await??
    };
    Ok(Json(pad(encoded, request.padding, pad_id)?))
}

fn parse_request(body: &[u8]) -> Result<PreprocessRequest> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::Malformed(format!("JSON body: {e}")))?;
    let request: PreprocessRequest =
        serde_json::from_value(value).map_err(|e| Error::invalid_field("body", e.to_string()))?;
    if request.records.is_empty() {
        return Err(Error::invalid_field("records", "send at least one record"));
    }
    Ok(request)
}

fn encode_all(
    fitted: &FittedPreprocessor,
    records: &[serde_json::Map<String, serde_json::Value>],
) -> Result<Vec<Encoded>> {
    records.iter().enumerate().map(|(i, record)| fitted.encode_record(record, i)).collect()
}

fn pad(encoded: Vec<Encoded>, padding: Padding, pad_id: u32) -> Result<PreprocessResponse> {
    let width = match padding {
        Padding::None => None,
        Padding::Longest => encoded.iter().map(|e| e.ids.len()).max(),
        Padding::MaxLength { max_length } => {
            if let Some((i, e)) = encoded.iter().enumerate().find(|(_, e)| e.ids.len() > max_length) {
                return Err(Error::invalid_field(
                    format!("records[{i}]"),
                    format!("{} tokens, more than padding.max_length {max_length}", e.ids.len()),
                ));
            }
            Some(max_length)
        }
    };
    let targets = encoded.iter().any(|e| e.target.is_some()).then(|| encoded.iter().map(|e| e.target).collect());
    let (ids, masks) = encoded
        .into_iter()
        .map(|e| {
            let real = e.ids.len();
            let mut ids = e.ids;
            let mut masks = vec![1u8; real];
            if let Some(width) = width {
                ids.resize(width, pad_id);
                masks.resize(width, 0);
            }
            (ids, masks)
        })
        .unzip();
    Ok(PreprocessResponse { ids, masks, targets })
}

/// The HTTP stack's own cost, for benchmarks: parses the same body as
/// `/preprocess` and answers a fixed small result without preprocessing.
#[utoipa::path(post, path = "/preprocess/baseline", tag = "preprocess", request_body = PreprocessRequest,
    responses((status = 200, description = "A fixed answer", body = PreprocessResponse)))]
pub async fn baseline(State(state): State<AppState>, request: Request) -> ApiResult<Json<PreprocessResponse>> {
    let body = super::json_body(request, state.limits.max_json_bytes).await?;
    let request = parse_request(&body)?;
    let n = request.records.len();
    Ok(Json(PreprocessResponse { ids: vec![vec![101, 102]; n], masks: vec![vec![1, 1]; n], targets: None }))
}
