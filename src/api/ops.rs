//! Operations: liveness, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::problem::{ApiResult, Problem};
use crate::error::Error;
use crate::jobs::JobStatus;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process runs and answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store is reachable and the server is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Draining or store unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    if state.executor.is_draining() {
        return Err(Error::Unavailable("draining: the server is shutting down".into()).into());
    }
    state.executor.store().check().await?;
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics: request latency by route and status, jobs by status, rows processed.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(counts) = state.executor.coordinator().count_by_status().await {
        for status in
            [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled]
        {
            let n = counts.get(&status).copied().unwrap_or(0);
            metrics::gauge!("prepd_jobs", "status" => status.as_str()).set(n as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

pub async fn not_found() -> impl IntoResponse {
    let err = Error::not_found("route");
    (StatusCode::NOT_FOUND, super::problem::ApiError(err))
}
