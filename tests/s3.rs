//! `s3://` sources through a real S3 endpoint: moto's server on loopback,
//! configured the way an operator would, with `AWS_*` variables.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::data;
use common::server::TestServer;
use serde_json::{Value, json};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts moto, creates a bucket and puts `objects` in it with boto3.
fn s3_with(objects: &[(&str, Vec<u8>)]) -> (Moto, String) {
    let python = common::python::python();
    let port = free_port();
    let child = Command::new(&python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto server");
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    for (key, bytes) in objects {
        std::fs::write(dir.path().join(key.replace('/', "_")), bytes).unwrap();
    }
    let keys: Vec<&str> = objects.iter().map(|(k, _)| *k).collect();
    let script = r#"
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket="datasets")
for key in sys.argv[3:]:
    s3.upload_file(os.path.join(sys.argv[2], key.replace("/", "_")), "datasets", key)
"#;
    let status =
        Command::new(&python).arg("-c").arg(script).arg(&endpoint).arg(dir.path()).args(&keys).status().unwrap();
    assert!(status.success());
    (moto, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sources_read_through_object_store() {
    let rows = data::course_rows(120, 31);
    let parts = data::course_rows(300, 32);
    let (_moto, endpoint) = s3_with(&[
        ("madewithml/dataset.csv", data::to_csv(&rows).into_bytes()),
        ("vocab/vocab.txt", data::vocab().into_bytes()),
        // Listed out of name order by nobody's promise: prepd sorts them.
        ("parts/part-2.parquet", data::to_parquet(&parts[200..])),
        ("parts/part-0.parquet", data::to_parquet(&parts[..100])),
        ("parts/part-1.parquet", data::to_parquet(&parts[100..200])),
        ("parts/_SUCCESS", Vec::new()),
    ]);
    // SAFETY: this test binary holds this one test, so no other thread reads the environment meanwhile.
    unsafe {
        std::env::set_var("AWS_ENDPOINT", &endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ALLOW_HTTP", "true");
    }
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/jobs"))
        .json(&json!({"source": "s3://datasets/madewithml/dataset.csv", "tokenizer": {"file": "s3://datasets/vocab/vocab.txt"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let job = server.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_done"], 120);

    // The same bytes uploaded give the same split files.
    let uploaded = server.run_job("dataset.csv", data::to_csv(&rows).into_bytes(), None, Some(data::vocab())).await;
    for name in ["train/part-00000.parquet", "val/part-00000.parquet"] {
        assert_eq!(
            server.artifact(job["id"].as_str().unwrap(), name).await,
            server.artifact(uploaded["id"].as_str().unwrap(), name).await,
            "{name}"
        );
    }

    // Many files: a glob and the prefix name the same parts (the marker is
    // not data), and give the same bytes.
    let mut jobs = Vec::new();
    for source in ["s3://datasets/parts/*.parquet", "s3://datasets/parts/"] {
        let response = server
            .client
            .post(server.url("/jobs"))
            .json(&json!({"source": source, "tokenizer": {"file": "s3://datasets/vocab/vocab.txt"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{source}");
        let job: Value = response.json().await.unwrap();
        let job = server.wait_job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["progress"]["rows_done"], 300, "{job}");
        jobs.push(job["id"].as_str().unwrap().to_string());
    }
    let manifest: Value = serde_json::from_slice(&server.artifact(&jobs[0], "manifest.json").await).unwrap();
    let names: Vec<&str> =
        manifest["input"]["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["part-0.parquet", "part-1.parquet", "part-2.parquet"]);
    for name in ["train/part-00000.parquet", "val/part-00000.parquet", "manifest.json"] {
        assert_eq!(server.artifact(&jobs[0], name).await, server.artifact(&jobs[1], name).await, "{name}");
    }
    let none = server
        .client
        .post(server.url("/jobs"))
        .json(&json!({"source": "s3://datasets/parts/*.csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);

    let missing = server
        .client
        .post(server.url("/jobs"))
        .json(&json!({"source": "s3://datasets/nothing.csv", "tokenizer": {"file": "s3://datasets/vocab/vocab.txt"}}))
        .send()
        .await
        .unwrap();
    let missing: Value = missing.json().await.unwrap();
    let missing = server.wait_job(missing["id"].as_str().unwrap()).await;
    assert_eq!(missing["status"], "failed", "{missing}");
    assert!(missing["error"]["detail"].as_str().unwrap().contains("not found"), "{missing}");
    server.stop().await;
}
