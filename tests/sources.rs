//! Datasets and tokenizers from URIs: `file://` under allowed roots, http(s)
//! (refused on private addresses unless allowed), and the Hugging Face hub
//! through `HF_ENDPOINT`, tested against a local stand-in server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use common::data;
use common::server::TestServer;
use serde_json::{Value, json};

/// Serves `files` (path -> body) on 127.0.0.1:0 and counts the requests.
async fn file_server(files: Vec<(&'static str, String)>) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let files = Arc::new(files);
    let app = Router::new().route(
        "/{*path}",
        get(move |Path(path): Path<String>| {
            let files = files.clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => (StatusCode::OK, body.clone()),
                    None => (StatusCode::NOT_FOUND, "Entry not found".to_string()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

async fn submit(server: &TestServer, spec: Value) -> reqwest::Response {
    server.client.post(server.url("/jobs")).json(&spec).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uris_only_under_allowed_roots() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let rows = data::course_rows(60, 8);
    for dir in [root.path(), outside.path()] {
        std::fs::write(dir.join("dataset.csv"), data::to_csv(&rows)).unwrap();
        std::fs::write(dir.join("vocab.txt"), data::vocab()).unwrap();
    }
    let allowed = root.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.file_roots = vec![allowed]).await;
    let uri = |dir: &std::path::Path, name: &str| url::Url::from_file_path(dir.join(name)).unwrap().to_string();

    let response = submit(
        &server,
        json!({"source": uri(root.path(), "dataset.csv"), "tokenizer": {"file": uri(root.path(), "vocab.txt")}}),
    )
    .await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let job = server.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["input_name"], "dataset.csv");

    let response = submit(&server, json!({"source": uri(outside.path(), "dataset.csv")})).await;
    assert_eq!(response.status(), 403);
    // A symlink inside the root that points outside is outside.
    std::os::unix::fs::symlink(outside.path().join("dataset.csv"), root.path().join("link.csv")).unwrap();
    let response = submit(&server, json!({"source": uri(root.path(), "link.csv")})).await;
    assert_eq!(response.status(), 403);
    let response = submit(&server, json!({"source": uri(root.path(), "missing.csv")})).await;
    assert_eq!(response.status(), 404);
    // A directory or a glob under the root names many files; a file reached
    // through a symlink out of the root is refused, as alone.
    let parts = root.path().join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    std::fs::write(parts.join("a.csv"), data::to_csv(&rows[..30])).unwrap();
    std::fs::write(parts.join("b.csv"), data::to_csv(&rows[30..])).unwrap();
    std::fs::write(parts.join(".hidden.csv"), "not data").unwrap();
    let vocab = uri(root.path(), "vocab.txt");
    let mut outcomes = Vec::new();
    for source in [uri(root.path(), "parts"), format!("{}/*.csv", uri(root.path(), "parts"))] {
        let response = submit(&server, json!({"source": source, "tokenizer": {"file": vocab}})).await;
        assert_eq!(response.status(), 202, "{source}");
        let job: Value = response.json().await.unwrap();
        let job = server.wait_job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["progress"]["rows_done"], 60, "{job}");
        outcomes.push(server.artifact(job["id"].as_str().unwrap(), "train/part-00000.parquet").await);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let response = submit(&server, json!({"source": format!("{}/*.csv", uri(outside.path(), ""))})).await;
    assert_eq!(response.status(), 403);
    std::os::unix::fs::symlink(outside.path().join("dataset.csv"), parts.join("c.csv")).unwrap();
    let response = submit(&server, json!({"source": format!("{}/*.csv", uri(root.path(), "parts"))})).await;
    assert_eq!(response.status(), 403);
    let response = submit(&server, json!({"source": format!("{}/*.jsonl", uri(root.path(), "parts"))})).await;
    assert_eq!(response.status(), 404);

    let response = submit(&server, json!({"source": "ftp://example.com/d.csv"})).await;
    assert_eq!(response.status(), 422);
    let response = submit(&server, json!({"tokenizer": {"train": {"vocab_size": 100}}})).await;
    assert_eq!(response.status(), 422);
    let response = server
        .client
        .post(server.url("/jobs"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sources_refuse_private_addresses_unless_allowed() {
    let rows = data::course_rows(60, 12);
    let (base, _) = file_server(vec![("data/dataset.csv", data::to_csv(&rows)), ("vocab.txt", data::vocab())]).await;
    let strict = TestServer::start().await;
    for source in [
        format!("{base}/data/dataset.csv"),
        "http://localhost:1/d.csv".into(),
        "http://[::1]:1/d.csv".into(),
        "http://169.254.169.254/latest/d.csv".into(),
        "http://10.1.2.3/d.csv".into(),
    ] {
        let response = submit(&strict, json!({"source": source})).await;
        assert_eq!(response.status(), 403, "{source}");
        let body: Value = response.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains("private"), "{body}");
    }
    strict.stop().await;

    let open = TestServer::start_with(|c| c.allow_private_sources = true).await;
    let response = submit(
        &open,
        json!({"source": format!("{base}/data/dataset.csv"), "tokenizer": {"file": format!("{base}/vocab.txt")}}),
    )
    .await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let job = open.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // A source that is not there fails the job with the reason.
    let response = submit(
        &open,
        json!({"source": format!("{base}/data/missing.csv"), "tokenizer": {"file": format!("{base}/vocab.txt")}}),
    )
    .await;
    let job: Value = response.json().await.unwrap();
    let job = open.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"]["detail"].as_str().unwrap().contains("not found"), "{job}");
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretrained_tokenizers_come_from_the_hub_endpoint_and_are_cached() {
    // A stand-in for the hub: no tokenizer.json, a vocab.txt, as older BERT repos have.
    let (hub, hits) = file_server(vec![("acme/tiny-bert/resolve/main/vocab.txt", data::vocab())]).await;
    let endpoint = hub.clone();
    let server = TestServer::start_with(move |c| c.common.hf_endpoint = endpoint).await;
    let rows = data::course_rows(50, 6);
    let spec = json!({"tokenizer": {"pretrained": "acme/tiny-bert"}});
    let first = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), Some(spec.clone()), None).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let after_first = hits.load(Ordering::SeqCst);
    assert_eq!(after_first, 2, "tokenizer.json (404) then vocab.txt");
    let second = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), Some(spec), None).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(hits.load(Ordering::SeqCst), after_first, "the second job uses the store's cache");
    // Same vocabulary as an upload of the same file: same tokens.
    let uploaded = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), None, Some(data::vocab())).await;
    let a = server.artifact(first["id"].as_str().unwrap(), "val/part-00000.parquet").await;
    let b = server.artifact(uploaded["id"].as_str().unwrap(), "val/part-00000.parquet").await;
    assert_eq!(a, b);

    let missing = server
        .run_job(
            "d.csv",
            data::to_csv(&rows).into_bytes(),
            Some(json!({"tokenizer": {"pretrained": "acme/none"}})),
            None,
        )
        .await;
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["error"]["field"], "tokenizer.pretrained", "{missing}");
    // The default tokenizer is the course's, from the hub: unreachable here, so the job says so.
    let unreachable = TestServer::start().await;
    let job = unreachable.run_job("d.csv", data::to_csv(&rows).into_bytes(), None, None).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["kind"], "unavailable", "{job}");
    server.stop().await;
    unreachable.stop().await;
}
