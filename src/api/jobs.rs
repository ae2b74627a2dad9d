//! `/jobs`: submit (upload or URI), watch, cancel or delete, and fetch artifacts.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::problem::{ApiResult, Problem};
use crate::error::{Error, Result};
use crate::jobs::sources::RemoteDataset;
use crate::jobs::{JobRecord, JobStatus};
use crate::pipeline::artifacts::{self, ArtifactEntry, Manifest};
use crate::pipeline::ingest::{self, ReadSettings};
use crate::pipeline::spec::{InputFormat, JobSpec, TokenizerSpec};
use crate::pipeline::tokenize::WordPieceTokenizer;
use crate::store::ArtifactStore;

/// A job upload (`multipart/form-data`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JobUpload {
    /// The dataset: CSV, Parquet or JSON Lines (format from the file name or the spec).
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    /// The job spec as JSON (optional; defaults reproduce the course).
    config: Option<JobSpec>,
    /// A `tokenizer.json` or WordPiece `vocab.txt` (optional).
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    tokenizer: Option<Vec<u8>>,
}

const MAX_CONFIG_BYTES: usize = 1 << 20;
const MAX_TOKENIZER_BYTES: usize = 64 << 20;
/// Rows read before answering an upload, to catch a wrong header or format at once.
const PREFLIGHT_ROWS: usize = 64;

/// Submit a job.
///
/// As `multipart/form-data` (parts `file`, optional `config`, optional
/// `tokenizer`), the upload streams to the store. As `application/json`, the
/// spec's `source` names the dataset's URI. Answers `202` with the job.
#[utoipa::path(
    post, path = "/jobs", tag = "jobs",
    request_body(
        content(
            (JobUpload = "multipart/form-data"),
            (JobSpec = "application/json", example = json!({"source": "s3://datasets/madewithml/dataset.csv", "tokenizer": {"pretrained": "bert-base-uncased"}})),
        ),
    ),
    responses(
        (status = 202, description = "Accepted; poll the `Location`", body = JobRecord,
         headers(("location" = String, description = "`/jobs/{id}`"))),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Source URI not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unknown format or content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid spec or dataset (names the field, row or column)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Overloaded", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let record = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| Error::Malformed(format!("multipart body: {}", e.body_text())))?;
        submit_upload(&state, multipart).await?
    } else if content_type.starts_with("application/json") {
        let body = super::json_body(request, state.limits.max_json_bytes).await?;
        submit_uri(&state, &body).await?
    } else {
        return Err(Error::UnsupportedFormat(format!(
            "content type '{content_type}': send multipart/form-data (upload) or application/json (source URI)"
        ))
        .into());
    };
    let location = format!("/jobs/{}", record.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(record)).into_response())
}

fn upload_file_name(name: Option<&str>) -> String {
    let base = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() { "upload".into() } else { clean }
}

fn multipart_error(err: axum::extract::multipart::MultipartError, limit: u64) -> Error {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge { limit }
    } else {
        Error::Malformed(format!("multipart body: {}", err.body_text()))
    }
}

async fn submit_upload(state: &AppState, mut multipart: Multipart) -> Result<JobRecord> {
    let store = state.executor.store().clone();
    let id = Uuid::now_v7();
    let limit = state.limits.max_upload_bytes;
    let outcome = async {
        let mut spec: Option<JobSpec> = None;
        let mut tokenizer: Option<Bytes> = None;
        let mut input: Option<(String, u64)> = None;
        while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
            let name = field.name().unwrap_or("").to_string();
            match name.as_str() {
                "file" => {
                    if input.is_some() {
                        return Err(Error::invalid_field("file", "send one file part"));
                    }
                    let file_name = upload_file_name(field.file_name());
                    let path = ArtifactStore::job_input_file(id, &file_name);
                    let stream = field.map_err(|e| multipart_error(e, limit));
                    let stored = store.put_stream(&path, Box::pin(stream), limit).await?;
                    input = Some((file_name, stored.bytes));
                }
                "config" => {
                    let bytes = read_small_field(field, MAX_CONFIG_BYTES, "config").await?;
                    spec = Some(JobSpec::from_json(&bytes)?);
                }
                "tokenizer" => tokenizer = Some(read_small_field(field, MAX_TOKENIZER_BYTES, "tokenizer").await?),
                other => {
                    return Err(Error::invalid_field(other, "unknown part; send 'file', 'config' and 'tokenizer'"));
                }
            }
        }
        let (input_name, input_bytes) =
            input.ok_or_else(|| Error::invalid_field("file", "missing: send the dataset as a part named 'file'"))?;
        if input_bytes == 0 {
            return Err(Error::bad_input(Default::default(), "the uploaded file is empty"));
        }
        let mut spec = spec.unwrap_or_default();
        if spec.source.is_some() {
            return Err(Error::invalid_field("source", "an upload carries its dataset; leave 'source' out"));
        }
        InputFormat::resolve(spec.format, &input_name)?;
        if let Some(bytes) = &tokenizer {
            let parsed = bytes.clone();
            let loaded = tokio::task::spawn_blocking(move || WordPieceTokenizer::from_bytes(&parsed)).await??;
            spec.tokenizer = TokenizerSpec::Uploaded { sha256: loaded.sha256().to_string() };
            store.put(&ArtifactStore::job_uploaded_tokenizer(id), bytes.clone()).await?;
        } else if matches!(spec.tokenizer, TokenizerSpec::Uploaded { .. }) {
            return Err(Error::invalid_field("tokenizer", "'uploaded' names a tokenizer part, and there is none"));
        }
        preflight(&store, id, &input_name, &spec, state.executor.read_settings()).await?;
        store.put_input_list(id, std::slice::from_ref(&input_name)).await?;
        Ok((spec, input_name))
    }
    .await;
    match outcome {
        Ok((spec, input_name)) => state.executor.submit(JobRecord::new(id, spec, input_name)).await,
        Err(e) => {
            // A rejected upload leaves nothing behind.
            let _ = store.delete_prefix(&ArtifactStore::job_prefix(id)).await;
            Err(e)
        }
    }
}

async fn read_small_field(mut field: axum::extract::multipart::Field<'_>, limit: usize, name: &str) -> Result<Bytes> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit as u64))? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            return Err(Error::invalid_field(name, format!("larger than {limit} bytes")));
        }
    }
    Ok(bytes.into())
}

/// Reads the header and the first rows, so that a wrong column, format or
/// encoding is answered now rather than by a failed job.
async fn preflight(
    store: &ArtifactStore,
    id: Uuid,
    input_name: &str,
    spec: &JobSpec,
    read: ReadSettings,
) -> Result<()> {
    let source = store.input_source(
        ArtifactStore::job_input_file(id, input_name),
        input_name.to_string(),
        tokio::runtime::Handle::current(),
    );
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut opened = ingest::open(&source, &spec, ReadSettings { batch_rows: PREFLIGHT_ROWS, ..read })?;
        match opened.batches.next() {
            Some(Err(e)) => Err(e),
            None => Err(Error::bad_input(Default::default(), "the input has a header but no data rows")),
            Some(Ok(_)) => Ok(()),
        }
    })
    .await?
}

async fn submit_uri(state: &AppState, body: &[u8]) -> Result<JobRecord> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::Malformed(format!("JSON body: {e}")))?;
    let spec = JobSpec::from_json(value.to_string().as_bytes())?;
    let source = spec.source.clone().ok_or_else(|| {
        Error::invalid_field("source", "missing: name the dataset's URI, or upload it as multipart/form-data")
    })?;
    if matches!(spec.tokenizer, TokenizerSpec::Uploaded { .. }) {
        return Err(Error::invalid_field("tokenizer", "'uploaded' needs a multipart upload"));
    }
    // Listed now so that a wrong URI or format is answered at once; the job
    // fetches what the source names when it starts.
    state.executor.policy().open_dataset(&source).await?.check_formats(spec.format)?;
    let record = JobRecord::new(Uuid::now_v7(), spec, RemoteDataset::display_name(&source));
    state.executor.submit(record).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Jobs per page (1 to 1000, default 50).
    limit: Option<usize>,
    /// The `next` of the previous page.
    before: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<JobRecord>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "A page of jobs", body = JobPage)))]
pub async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> ApiResult<Json<JobPage>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid_field("limit", "must be between 1 and 1000").into());
    }
    let mut jobs = state.executor.coordinator().list(query.before, limit + 1).await?;
    let next = (jobs.len() > limit).then(|| {
        jobs.truncate(limit);
        jobs[limit - 1].id
    });
    for job in jobs.iter_mut().filter(|j| !j.status.is_finished()) {
        if let Ok(live) = state.executor.get(job.id).await {
            *job = live;
        }
    }
    Ok(Json(JobPage { jobs, next }))
}

fn parse_id(id: &str) -> Result<Uuid> {
    id.parse().map_err(|_| Error::not_found(format!("job {id}")))
}

/// A job: status, stage, progress, counts, class mapping, timings, error.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobRecord>> {
    Ok(Json(state.executor.get(parse_id(&id)?).await?))
}

/// Cancel a queued or running job (`202`), or delete a finished one with its artifacts (`204`).
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Cancelling; the job ends as `cancelled`", body = JobRecord),
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let job = state.executor.get(id).await?;
    if job.status.is_finished() {
        state.executor.delete(id).await?;
        state.preprocessors.forget(id);
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        let job = state.executor.cancel(id).await?;
        Ok((StatusCode::ACCEPTED, Json(job)).into_response())
    }
}

/// The manifest of a succeeded job.
pub(crate) async fn manifest_of(state: &AppState, id: Uuid) -> Result<(Manifest, Bytes)> {
    let job = state.executor.get(id).await?;
    if job.status != JobStatus::Succeeded {
        return Err(Error::Conflict(format!(
            "job {id} is {}; artifacts appear once it has succeeded",
            job.status.as_str()
        )));
    }
    let bytes = state.executor.store().get(&ArtifactStore::job_artifact(id, artifacts::MANIFEST)).await?;
    let manifest = serde_json::from_slice(&bytes).map_err(Error::internal)?;
    Ok((manifest, bytes))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<ArtifactEntry>,
}

/// List a succeeded job's artifacts: name, size, sha256, content type.
#[utoipa::path(get, path = "/jobs/{id}/artifacts", tag = "jobs", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The artifacts", body = ArtifactList),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_artifacts(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ArtifactList>> {
    let (manifest, manifest_bytes) = manifest_of(&state, parse_id(&id)?).await?;
    let mut artifacts = manifest.artifacts;
    artifacts.push(ArtifactEntry::describe(artifacts::MANIFEST, &manifest_bytes, None));
    Ok(Json(ArtifactList { artifacts }))
}

/// Download one artifact, streamed.
#[utoipa::path(get, path = "/jobs/{id}/artifacts/{name}", tag = "jobs",
    params(("id" = Uuid, Path), ("name" = String, Path, example = "train/part-00000.parquet")),
    responses(
        (status = 200, description = "The artifact's bytes", content_type = "application/octet-stream"),
        (status = 404, description = "No such job or artifact", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an artifact name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_artifact(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    if !artifacts::is_valid_artifact_name(&name) {
        return Err(Error::invalid_field("name", format!("'{name}' is not an artifact name")).into());
    }
    let id = parse_id(&id)?;
    let (manifest, manifest_bytes) = manifest_of(&state, id).await?;
    let entry = if name == artifacts::MANIFEST {
        ArtifactEntry::describe(artifacts::MANIFEST, &manifest_bytes, None)
    } else {
        manifest
            .artifacts
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| Error::not_found(format!("artifact '{name}' of job {id}")))?
    };
    let stream = state.executor.store().get_stream(&ArtifactStore::job_artifact(id, &name)).await?;
    let headers = [
        (header::CONTENT_TYPE, entry.content_type.clone()),
        (header::CONTENT_LENGTH, entry.bytes.to_string()),
        (header::ETAG, format!("\"{}\"", entry.sha256)),
    ];
    Ok((headers, Body::from_stream(stream.map_err(|e| std::io::Error::other(e.to_string())))).into_response())
}
