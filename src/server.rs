//! Starting and stopping the service: build the state from the config,
//! serve until a stop signal, then drain requests and jobs.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::api::{self, AppState, Limits};
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::jobs::sources::{HubClient, SourcePolicy};
use crate::jobs::{Coordinator, ExecutorSettings, JobExecutor, LocalCoordinator};
use crate::store::ArtifactStore;

/// The process-wide Prometheus recorder (one per process, however many servers).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

pub async fn build_state(config: &ServeConfig) -> Result<AppState> {
    let store = ArtifactStore::local(&config.common.data_dir)?;
    let coordinator: Arc<dyn Coordinator> = Arc::new(LocalCoordinator::open(store.clone()).await?);
    let policy = SourcePolicy {
        file_roots: config.file_roots.clone(),
        allow_private_network: config.allow_private_sources,
        allow_all: false,
    };
    let executor = JobExecutor::new(
        store,
        coordinator,
        policy,
        HubClient::new(config.common.hf_endpoint.clone(), config.common.hf_token.clone()),
        ExecutorSettings {
            workers: config.common.workers,
            concurrent_jobs: config.concurrent_jobs,
            read: config.common.read_settings(),
            partition_rows: config.common.partition_rows,
            sort_bytes: config.common.sort_bytes,
            in_memory_bytes: config.common.in_memory_bytes,
        },
    )?;
    let executor = Arc::new(executor);
    executor.resume_unfinished().await?;
    Ok(AppState {
        executor,
        preprocessors: api::preprocess::PreprocessorCache::new(config.preprocessor_cache),
        metrics: metrics_handle(),
        limits: Limits {
            max_upload_bytes: config.max_upload_bytes,
            max_json_bytes: config.max_json_bytes,
            max_concurrent_requests: config.max_concurrent_requests,
        },
    })
}

/// Serves on `listener` until `stop` completes, then stops taking requests,
/// lets in-flight ones finish, and stops running jobs (they go back to
/// `queued`, never to succeeded, and the next start resumes them).
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = build_state(&config).await?;
    let executor = state.executor.clone();
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = executor.clone();
    let shutdown = async move {
        stop.await;
        tracing::info!("stop requested: draining");
        draining.start_draining();
        let _ = stopping_tx.send(());
    };
    let app = api::app(state);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let served = async move { served.await.map_err(|e| Error::Internal(format!("server: {e}"))) };
    let result = tokio::select! {
        result = served => result,
        // In-flight requests get the grace period, not forever.
        _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
            Ok(())
        }
    };
    executor.drain(grace).await;
    result
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
