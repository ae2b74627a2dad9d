//! The binary: `prepd run` writes the service's artifacts byte for byte, at
//! any worker count or batch size; `prepd serve` fails (never succeeds) a
//! job cut off by SIGKILL or SIGTERM, as seen after a restart.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::data;
use common::server::TestServer;
use serde_json::{Value, json};

const PREPD: &str = env!("CARGO_BIN_EXE_prepd");

fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with(".scratch") {
                    stack.push(path);
                }
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn prepd_run(input: &Path, out: &Path, config: &Path, vocab: &Path, workers: &str, batch_rows: &str) {
    let output = Command::new(PREPD)
        .args(["run", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(config)
        .arg("--tokenizer")
        .arg(vocab)
        .env("PREPD_WORKERS", workers)
        .env("PREPD_BATCH_ROWS", batch_rows)
        .env("PREPD_DATA_DIR", out.join(".scratch"))
        .output()
        .unwrap();
    assert!(output.status.success(), "prepd run failed: {}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("train") && stderr.contains("validation"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_matches_the_service_byte_for_byte_at_any_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dataset.csv");
    std::fs::write(&input, data::to_csv(&data::course_rows(900, 21))).unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, data::vocab()).unwrap();
    let spec = json!({"test_size": 0.25, "seed": 42, "rows_per_part": 200});
    let config = dir.path().join("spec.json");
    std::fs::write(&config, spec.to_string()).unwrap();

    let mut runs = Vec::new();
    for (workers, batch_rows) in [("1", "1000000"), ("2", "64"), ("7", "5")] {
        let out = dir.path().join(format!("out-{workers}-{batch_rows}"));
        prepd_run(&input, &out, &config, &vocab, workers, batch_rows);
        runs.push(files_under(&out));
    }
    let first = &runs[0];
    assert!(
        first.contains_key("manifest.json") && first.contains_key("train/part-00002.parquet"),
        "{:?}",
        first.keys()
    );
    for other in &runs[1..] {
        assert_eq!(first.keys().collect::<Vec<_>>(), other.keys().collect::<Vec<_>>());
        for (name, bytes) in first {
            assert!(other[name] == *bytes, "{name} differs between worker counts");
        }
    }

    let server = TestServer::start().await;
    let job = server.run_job("dataset.csv", std::fs::read(&input).unwrap(), Some(spec), Some(data::vocab())).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap();
    for (name, bytes) in first {
        assert!(server.artifact(id, name).await == *bytes, "{name} differs between prepd run and the service");
    }
    server.stop().await;
}

#[test]
fn run_reports_bad_input_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("d.csv");
    std::fs::write(&input, "id,title,tag\n1,a,x\n").unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, data::vocab()).unwrap();
    let output = Command::new(PREPD)
        .args(["run", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--tokenizer")
        .arg(&vocab)
        .env("PREPD_DATA_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("description"), "{stderr}");
    assert!(!dir.path().join("out/manifest.json").exists());
}

struct Serving {
    child: Child,
    base: String,
}

fn serve(data_dir: &Path) -> Serving {
    let mut child = Command::new(PREPD)
        .arg("serve")
        .env("PREPD_ADDR", "127.0.0.1:0")
        .env("PREPD_DATA_DIR", data_dir)
        .env("PREPD_WORKERS", "1")
        .env("PREPD_SHUTDOWN_GRACE_SECONDS", "5")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("prepd serve printed its address").unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Serving { child, base }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_big_job(client: &reqwest::Client, base: &str) -> String {
    let csv = data::to_csv(&data::course_rows(200_000, 5));
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("big.csv"))
        .part("tokenizer", reqwest::multipart::Part::text(data::vocab()).file_name("vocab.txt"));
    let job: Value = client.post(format!("{base}/jobs")).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = client.get(format!("{base}/jobs/{id}")).send().await.unwrap().json().await.unwrap();
        if job["status"] == "running" {
            return id;
        }
        assert!(job["status"] == "queued" && Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_off_by_a_stop_is_failed_after_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    // SIGKILL: nothing runs at all on the way down.
    let mut serving = serve(data_dir.path());
    wait_ready(&client, &serving.base).await;
    let killed = start_big_job(&client, &serving.base).await;
    serving.child.kill().unwrap();
    serving.child.wait().unwrap();

    // SIGTERM: drains, and the job ends failed as interrupted.
    let mut serving = serve(data_dir.path());
    wait_ready(&client, &serving.base).await;
    let job: Value = client.get(format!("{}/jobs/{killed}", serving.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["kind"], "interrupted", "{job}");
    let artifacts = client.get(format!("{}/jobs/{killed}/artifacts", serving.base)).send().await.unwrap();
    assert_eq!(artifacts.status(), 409);
    let stopped = start_big_job(&client, &serving.base).await;
    let pid = serving.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "prepd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");

    let mut serving = serve(data_dir.path());
    wait_ready(&client, &serving.base).await;
    let job: Value = client.get(format!("{}/jobs/{stopped}", serving.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["kind"], "interrupted", "{job}");
    serving.child.kill().unwrap();
    serving.child.wait().unwrap();
}
