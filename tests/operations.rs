//! Operating the service: health, readiness, metrics, the OpenAPI document
//! (and its drift against the committed copy), the offline API page.

mod common;

use common::data;
use common::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_docs() {
    let server = TestServer::start().await;
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    assert!(health.headers().contains_key("x-response-time"));
    assert_eq!(server.client.get(server.url("/readyz")).send().await.unwrap().status(), 200);

    let job =
        server.run_job("d.csv", data::to_csv(&data::course_rows(30, 1)).into_bytes(), None, Some(data::vocab())).await;
    assert_eq!(job["status"], "succeeded");
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("prepd_http_request_duration_seconds"), "{metrics}");
    assert!(metrics.contains("route=\"/jobs/{id}\""), "{metrics}");
    assert!(metrics.contains("prepd_jobs{status=\"succeeded\"}"), "{metrics}");
    assert!(metrics.contains("prepd_rows_processed_total"), "{metrics}");

    let docs = server.client.get(server.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger"), "{page}");
    // The page's script is served by prepd itself, not a CDN.
    assert!(!page.contains("https://"), "{page}");

    let missing = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_openapi_matches_the_committed_document() {
    let server = TestServer::start().await;
    let served: serde_json::Value =
        server.client.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let committed_path = common::python::repo_root().join("openapi/openapi.json");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    let generated = prepd::api::openapi::document();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
    assert_eq!(served, serde_json::from_str::<serde_json::Value>(&generated).unwrap());
    for path in [
        "/jobs",
        "/jobs/{id}",
        "/jobs/{id}/artifacts",
        "/jobs/{id}/artifacts/{name}",
        "/preprocess",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(served["paths"][path].is_object(), "{path}");
    }
    server.stop().await;
}
