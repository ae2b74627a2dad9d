//! Every failure is an answer: bad requests and datasets get a 4xx
//! `application/problem+json` naming the field, row or column, the server
//! stays up, and nothing already stored is lost.

mod common;

use common::data;
use common::server::TestServer;
use serde_json::{Value, json};

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("urn:prepd:problem:"), "{body}");
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

fn csv(body: &[u8]) -> Vec<u8> {
    [b"id,title,description,tag\n".as_slice(), body].concat()
}

fn detail(p: &Value) -> &str {
    p["detail"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_named_and_harmless() {
    let server = TestServer::start_with(|c| c.file_roots = vec![]).await;
    // A good job first: it must survive everything below.
    let good =
        server.run_job("d.csv", data::to_csv(&data::course_rows(60, 1)).into_bytes(), None, Some(data::vocab())).await;
    assert_eq!(good["status"], "succeeded");
    let good_id = good["id"].as_str().unwrap().to_string();
    let good_manifest = server.artifact(&good_id, "manifest.json").await;
    let vocab = || Some(data::vocab());

    let p = problem(server.upload("d.csv", vec![], None, vocab()).await, 422).await;
    assert!(detail(&p).contains("empty"), "{p}");

    let form = reqwest::multipart::Form::new().text("config", "{}");
    let p = problem(server.client.post(server.url("/jobs")).multipart(form).send().await.unwrap(), 422).await;
    assert_eq!(p["field"], "file");

    let p = problem(server.upload("d.txt", csv(b"1,a,b,x\n"), None, vocab()).await, 415).await;
    assert!(detail(&p).contains("format"), "{p}");

    let p = problem(server.upload("d.csv", csv(b"1,a,\"never closed,x\n2,b,c,y\n"), None, vocab()).await, 422).await;
    assert_eq!(p["row"], 1, "{p}");
    assert!(detail(&p).contains("unterminated"), "{p}");

    let p = problem(server.upload("d.csv", b"id,title,tag\n1,a,x\n".to_vec(), None, vocab()).await, 422).await;
    assert_eq!(p["column"], "description", "{p}");
    let p = problem(server.upload("d.csv", b"id,title,description\n1,a,b\n".to_vec(), None, vocab()).await, 422).await;
    assert_eq!(p["column"], "tag", "{p}");

    let p = problem(server.upload("d.csv", csv(b"1,a,b,x\n2,\xff\xfe,c,y\n"), None, vocab()).await, 422).await;
    assert_eq!(p["row"], 2, "{p}");
    assert!(detail(&p).contains("UTF-8"), "{p}");

    for bad in [json!({"test_size": 0}), json!({"test_size": 1.5}), json!({"test_size": -0.1})] {
        let p = problem(server.upload("d.csv", csv(b"1,a,b,x\n"), Some(bad), vocab()).await, 422).await;
        assert_eq!(p["field"], "test_size", "{p}");
    }
    let p = problem(server.upload("d.csv", csv(b"1,a,b,x\n"), Some(json!({"nope": 1})), vocab()).await, 422).await;
    assert!(detail(&p).contains("nope"), "{p}");

    let p = problem(server.upload("d.csv", csv(b"1,a,b,x\n"), None, Some("not a vocab".into())).await, 422).await;
    assert_eq!(p["field"], "tokenizer", "{p}");

    let p = problem(
        server.client.post(server.url("/jobs")).body("x").header("content-type", "text/plain").send().await.unwrap(),
        415,
    )
    .await;
    assert!(detail(&p).contains("multipart"), "{p}");

    // The server is up, and the earlier job is untouched.
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(server.artifact(&good_id, "manifest.json").await, good_manifest);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_labels_and_tiny_classes_follow_the_documented_policy() {
    let server = TestServer::start().await;
    let mut rows = data::course_rows(80, 2);
    rows[5].tag = String::new();
    let body = data::to_csv(&rows).into_bytes();

    // Default policy: the job fails, naming the row and the column.
    let failed = server.run_job("d.csv", body.clone(), None, Some(data::vocab())).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["row"], 6, "{failed}");
    assert_eq!(failed["error"]["column"], "tag", "{failed}");
    assert_eq!(failed["error"]["kind"], "invalid-input");
    let id = failed["id"].as_str().unwrap();
    let p = problem(server.client.get(server.url(&format!("/jobs/{id}/artifacts"))).send().await.unwrap(), 409).await;
    assert!(detail(&p).contains("failed"), "{p}");
    // A failed job keeps its input.
    assert!(server.data_dir.path().join(format!("jobs/{id}/input/files/d.csv")).exists());

    // "skip": left out and reported.
    let skipped = server.run_job("d.csv", body, Some(json!({"null_labels": "skip"})), Some(data::vocab())).await;
    assert_eq!(skipped["status"], "succeeded", "{skipped}");
    let report: Value =
        serde_json::from_slice(&server.artifact(skipped["id"].as_str().unwrap(), "report.json").await).unwrap();
    assert_eq!(report["rows"]["skipped"], 1);
    assert_eq!(report["null_label_rows"], json!([6]));

    // A class with a single row stays in train and is reported.
    let mut rows = data::course_rows(50, 4);
    rows[10].tag = "lonely".into();
    let job = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), None, Some(data::vocab())).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["classes"]["lonely"], json!({"train": 1, "validation": 0}));
    let report: Value =
        serde_json::from_slice(&server.artifact(job["id"].as_str().unwrap(), "report.json").await).unwrap();
    assert_eq!(report["classes_too_small"], json!([{"label": "lonely", "rows": 1}]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_to_jobs_artifacts_and_preprocess() {
    let server = TestServer::start_with(|c| {
        c.max_upload_bytes = 20_000;
        c.max_json_bytes = 10_000;
    })
    .await;
    let rows = data::course_rows(40, 9);
    let job = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), None, Some(data::vocab())).await;
    let id = job["id"].as_str().unwrap();

    let p =
        problem(server.client.get(server.url("/jobs/0191e0a0-0000-7000-8000-000000000000")).send().await.unwrap(), 404)
            .await;
    assert!(detail(&p).contains("job"), "{p}");
    problem(server.client.get(server.url("/jobs/not-a-uuid")).send().await.unwrap(), 404).await;

    for name in ["..%2F..%2Fjob.json", "train/..%2F..%2Fx", "train/%2E%2E/job.json", "input/d.csv", "job.json"] {
        let response = server.client.get(server.url(&format!("/jobs/{id}/artifacts/{name}"))).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(status == 422 || status == 404, "{name}: {status}");
        problem(response, status).await;
    }

    let post = |body: Vec<u8>| {
        server.client.post(server.url("/preprocess")).header("content-type", "application/json").body(body).send()
    };
    let p = problem(post(b"{not json".to_vec()).await.unwrap(), 400).await;
    assert!(detail(&p).contains("JSON"), "{p}");
    let p = problem(post(json!({"job_id": id}).to_string().into_bytes()).await.unwrap(), 422).await;
    assert!(detail(&p).contains("records"), "{p}");
    let p =
        problem(post(json!({"job_id": id, "records": [{"title": "a"}]}).to_string().into_bytes()).await.unwrap(), 422)
            .await;
    assert_eq!(p["field"], "records[0].description", "{p}");
    let p = problem(
        post(
            json!({"job_id": id, "records": [{"title": "a", "description": "b", "tag": "nope"}]})
                .to_string()
                .into_bytes(),
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    assert_eq!(p["field"], "records[0].tag", "{p}");
    let unknown =
        json!({"job_id": "0191e0a0-0000-7000-8000-000000000000", "records": [{"title": "a", "description": "b"}]});
    problem(post(unknown.to_string().into_bytes()).await.unwrap(), 404).await;
    let huge = json!({"job_id": id, "records": [{"title": "a".repeat(20_000), "description": ""}]});
    problem(post(huge.to_string().into_bytes()).await.unwrap(), 413).await;

    // A job that has not succeeded cannot serve.
    let mut bad = rows.clone();
    bad[3].tag = String::new();
    let failed = server.run_job("d.csv", data::to_csv(&bad).into_bytes(), None, Some(data::vocab())).await;
    let request = json!({"job_id": failed["id"], "records": [{"title": "a", "description": "b"}]});
    let p = problem(post(request.to_string().into_bytes()).await.unwrap(), 409).await;
    assert!(detail(&p).contains("failed"), "{p}");

    // An upload over the limit.
    let big = data::to_csv(&data::course_rows(400, 1)).into_bytes();
    assert!(big.len() > 20_000);
    problem(server.upload("d.csv", big, None, Some(data::vocab())).await, 413).await;
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    server.stop().await;
}
