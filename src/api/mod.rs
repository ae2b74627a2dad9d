//! The HTTP door: axum routers that validate, call the domain, record
//! metrics and answer. Where a request goes: `routes()` below, then the
//! handler in `jobs.rs`, `preprocess.rs` or `ops.rs`.

pub mod jobs;
pub mod openapi;
pub mod ops;
pub mod preprocess;
pub mod problem;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::Error;
use crate::jobs::JobExecutor;
use problem::ApiError;

/// Limits the HTTP layer enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_upload_bytes: u64,
    pub max_json_bytes: usize,
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_upload_bytes: 16 << 30, max_json_bytes: 8 << 20, max_concurrent_requests: 512 }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub executor: Arc<JobExecutor>,
    pub preprocessors: preprocess::PreprocessorCache,
    pub metrics: PrometheusHandle,
    pub limits: Limits,
}

/// The whole service, ready to serve or to drive in-process in tests.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    let api = Router::new()
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/jobs/{id}/artifacts", get(jobs::list_artifacts))
        .route("/jobs/{id}/artifacts/{*name}", get(jobs::get_artifact))
        .route("/preprocess", post(preprocess::preprocess))
        .route("/preprocess/baseline", post(preprocess::baseline))
        .layer(DefaultBodyLimit::max(limits.max_upload_bytes.min(usize::MAX as u64) as usize))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async { ApiError(Error::Overloaded) }))
                .load_shed()
                .concurrency_limit(limits.max_concurrent_requests),
        );
    Router::new()
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(openapi::docs())
        .fallback(ops::not_found)
        .layer(middleware::from_fn(record_request))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Request latency by route and status, matching the `x-response-time` header.
async fn record_request(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16().to_string();
    metrics::histogram!("prepd_http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(elapsed.as_secs_f64());
    if let Ok(value) = format!("{:.3}ms", elapsed.as_secs_f64() * 1e3).parse() {
        response.headers_mut().insert("x-response-time", value);
    }
    response
}

/// A JSON request's body, refused as a problem (413) past `limit` bytes.
pub(crate) async fn json_body(request: Request, limit: usize) -> Result<axum::body::Bytes, Error> {
    axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| Error::TooLarge { limit: limit as u64 })
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError(self).into_response()
    }
}
