//! The binary: `prepd run` writes the service's artifacts byte for byte, at
//! any worker count, batch or partition size, from one file or many; `prepd
//! serve` resumes a job cut off by SIGKILL or SIGTERM after a restart and
//! ends with the bytes of an uninterrupted run.

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

fn assert_same_files(expected: &BTreeMap<String, Vec<u8>>, actual: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(expected.keys().collect::<Vec<_>>(), actual.keys().collect::<Vec<_>>(), "{what}");
    for (name, bytes) in expected {
        assert!(actual[name] == *bytes, "{name} differs: {what}");
    }
}

/// `prepd run` with these settings; returns the files it wrote.
fn prepd_run(
    input: &str,
    out: &Path,
    config: &Path,
    vocab: &Path,
    settings: &[(&str, &str)],
) -> BTreeMap<String, Vec<u8>> {
    let output = Command::new(PREPD)
        .args(["run", "--input", input])
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(config)
        .arg("--tokenizer")
        .arg(vocab)
        .env("PREPD_DATA_DIR", out.join(".scratch"))
        .envs(settings.iter().copied())
        .output()
        .unwrap();
    assert!(output.status.success(), "prepd run failed: {}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("train") && stderr.contains("validation"), "{stderr}");
    files_under(out)
}

fn write_inputs(dir: &Path, spec: &Value) -> (std::path::PathBuf, std::path::PathBuf) {
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, data::vocab()).unwrap();
    let config = dir.join("spec.json");
    std::fs::write(&config, spec.to_string()).unwrap();
    (vocab, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_matches_the_service_byte_for_byte_at_any_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dataset.csv");
    std::fs::write(&input, data::to_csv(&data::course_rows(900, 21))).unwrap();
    let spec = json!({"test_size": 0.25, "seed": 42, "rows_per_part": 200});
    let (vocab, config) = write_inputs(dir.path(), &spec);

    // Workers, rows per batch, rows per partition, bytes sorted at once (so
    // 1, 8 and 256 buckets), bytes of rows kept in memory rather than
    // spilled to runs (the service below spills).
    let matrix = [
        ("1", "1000000", "1000000", "100000000", "0"),
        ("2", "64", "100", "60000", "0"),
        ("7", "5", "37", "2000", "0"),
        // Read once, the rows kept in memory.
        ("2", "64", "100", "60000", "100000000"),
        ("7", "5", "37", "2000", "100000000"),
    ];
    let mut runs = Vec::new();
    for (workers, batch_rows, partition_rows, sort_bytes, in_memory_bytes) in matrix {
        let out = dir.path().join(format!("out-{workers}-{batch_rows}-{partition_rows}-{in_memory_bytes}"));
        let settings = [
            ("PREPD_WORKERS", workers),
            ("PREPD_BATCH_ROWS", batch_rows),
            ("PREPD_PARTITION_ROWS", partition_rows),
            ("PREPD_SORT_BYTES", sort_bytes),
            ("PREPD_IN_MEMORY_BYTES", in_memory_bytes),
        ];
        runs.push(prepd_run(input.to_str().unwrap(), &out, &config, &vocab, &settings));
    }
    let first = &runs[0];
    assert!(
        first.contains_key("manifest.json") && first.contains_key("train/part-00002.parquet"),
        "{:?}",
        first.keys()
    );
    for (other, settings) in runs[1..].iter().zip(&matrix[1..]) {
        let settings = format!("workers, batch rows, partition rows, sort bytes, in-memory bytes {settings:?}");
        assert_same_files(first, other, &settings);
    }
    // A budget the file fits but its rows (each text held twice, and more)
    // outgrow: read once until they do, then again in two passes.
    let budget = std::fs::metadata(&input).unwrap().len().to_string();
    let settings = [("PREPD_WORKERS", "2"), ("PREPD_BATCH_ROWS", "64"), ("PREPD_IN_MEMORY_BYTES", budget.as_str())];
    let outgrown = prepd_run(input.to_str().unwrap(), &dir.path().join("out-outgrown"), &config, &vocab, &settings);
    assert_same_files(first, &outgrown, "rows outgrowing the memory budget");

    let server = TestServer::start().await;
    let job = server.run_job("dataset.csv", std::fs::read(&input).unwrap(), Some(spec), Some(data::vocab())).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap();
    for (name, bytes) in first {
        assert!(server.artifact(id, name).await == *bytes, "{name} differs between prepd run and the service");
    }
    server.stop().await;
}

/// The shards load as one dataset in pyarrow, as parallel readers take them.
fn pyarrow_rows(dir: &Path) -> (u64, Vec<String>) {
    let script = "import sys, pyarrow.dataset as ds\n\
        d = ds.dataset(sys.argv[1], format='parquet')\n\
        print(d.count_rows())\n\
        print(','.join(d.schema.names))\n";
    let output = Command::new(common::python::python()).args(["-c", script]).arg(dir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    let rows = lines.next().unwrap().parse().unwrap();
    (rows, lines.next().unwrap().split(',').map(String::from).collect())
}

#[test]
fn many_files_read_as_one_dataset_whatever_the_listing_order() {
    let dir = tempfile::tempdir().unwrap();
    let rows = data::course_rows(1200, 8);
    let spec = json!({"rows_per_part": 150});
    let (vocab, config) = write_inputs(dir.path(), &spec);
    // The same three parts, created in opposite orders (so listed differently),
    // plus a marker file that is not data.
    let mut outputs = Vec::new();
    for (n, order) in [[0, 1, 2], [2, 1, 0]].iter().enumerate() {
        let parts = dir.path().join(format!("parts-{n}"));
        std::fs::create_dir_all(parts.join("more")).unwrap();
        for &k in order {
            let name = if k == 2 { "more/part-2.csv".to_string() } else { format!("part-{k}.csv") };
            std::fs::write(parts.join(name), data::to_csv(&rows[k * 400..(k + 1) * 400])).unwrap();
        }
        std::fs::write(parts.join("_SUCCESS"), "").unwrap();
        let out = dir.path().join(format!("out-{n}"));
        let settings = [("PREPD_WORKERS", "2"), ("PREPD_PARTITION_ROWS", "90")];
        outputs.push(prepd_run(parts.to_str().unwrap(), &out, &config, &vocab, &settings));
    }
    assert_same_files(&outputs[0], &outputs[1], "listing order");
    // Read once with the rows in memory (above), or twice and spilled.
    let spilled = [("PREPD_WORKERS", "2"), ("PREPD_PARTITION_ROWS", "90"), ("PREPD_IN_MEMORY_BYTES", "0")];
    let parts = dir.path().join("parts-0");
    let twice = prepd_run(parts.to_str().unwrap(), &dir.path().join("out-twice"), &config, &vocab, &spilled);
    assert_same_files(&outputs[0], &twice, "one pass or two");

    let manifest: Value = serde_json::from_slice(&outputs[0]["manifest.json"]).unwrap();
    let names: Vec<&str> =
        manifest["input"]["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["more/part-2.csv", "part-0.csv", "part-1.csv"]);
    assert_eq!(manifest["rows"]["input"], 1200);
    let shards = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"].as_str().unwrap().starts_with("train/"))
        .count();
    assert_eq!(shards as u64, manifest["rows"]["train"].as_u64().unwrap().div_ceil(150));
    let (train_rows, columns) = pyarrow_rows(&dir.path().join("out-0/train"));
    assert_eq!(train_rows, manifest["rows"]["train"].as_u64().unwrap());
    assert_eq!(columns, ["id", "text", "ids", "masks", "targets"]);

    // A glob names a subset; a bad file is named in the error.
    let glob = dir.path().join("parts-0/part-*.csv");
    let out = dir.path().join("out-glob");
    let files = prepd_run(glob.to_str().unwrap(), &out, &config, &vocab, &[]);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest["rows"]["input"], 800);
    std::fs::write(dir.path().join("parts-0/part-1.csv"), "id,title,description,tag\n1,a,b,\n").unwrap();
    let stderr = prepd_run_failing(glob.to_str().unwrap(), dir.path(), &vocab);
    assert!(stderr.contains("in file 'part-1.csv' at row 1, column 'tag'"), "{stderr}");
}

/// `prepd run` that must fail, writing nothing under `dir/out`; returns its stderr.
fn prepd_run_failing(input: &str, dir: &Path, vocab: &Path) -> String {
    let output = Command::new(PREPD)
        .args(["run", "--input", input, "--out"])
        .arg(dir.join("out"))
        .arg("--tokenizer")
        .arg(vocab)
        .env("PREPD_DATA_DIR", dir.join("cache"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!dir.join("out/manifest.json").exists());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_reports_bad_input_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("d.csv");
    std::fs::write(&input, "id,title,tag\n1,a,x\n").unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, data::vocab()).unwrap();
    let stderr = prepd_run_failing(input.to_str().unwrap(), dir.path(), &vocab);
    assert!(stderr.contains("description"), "{stderr}");
}

struct Serving {
    child: Child,
    base: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RESUME_PARTITION_ROWS: &str = "2000";

async fn serve(data_dir: &Path) -> Serving {
    let mut child = Command::new(PREPD)
        .arg("serve")
        .env("PREPD_ADDR", "127.0.0.1:0")
        .env("PREPD_DATA_DIR", data_dir)
        .env("PREPD_WORKERS", "1")
        .env("PREPD_BATCH_ROWS", "500")
        .env("PREPD_PARTITION_ROWS", RESUME_PARTITION_ROWS)
        // Spilled, as a job too large for memory: what is spilled resumes.
        .env("PREPD_IN_MEMORY_BYTES", "0")
        .env("PREPD_SHUTDOWN_GRACE_SECONDS", "5")
        .stdout(Stdio::null())
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
    let serving = Serving { child, base };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = || async { client.get(format!("{}/readyz", serving.base)).send().await };
    while !ready().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serving
}

async fn job(client: &reqwest::Client, serving: &Serving, id: &str) -> Value {
    client.get(format!("{}/jobs/{id}", serving.base)).send().await.unwrap().json().await.unwrap()
}

/// Polls until the job has processed at least `rows` rows (and is still running).
async fn wait_for_rows(client: &reqwest::Client, serving: &Serving, id: &str, rows: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let job = job(client, serving, id).await;
        assert!(job["status"] == "running" || job["status"] == "queued", "{job}");
        if job["progress"]["rows_done"].as_u64().unwrap_or(0) >= rows {
            return job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_off_by_a_kill_or_a_stop_resumes_and_ends_with_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let client = reqwest::Client::new();
    let csv = data::to_csv(&data::course_rows(60_000, 5));
    let spec = json!({"rows_per_part": 20_000});
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(csv.clone().into_bytes()).file_name("big.csv"))
        .text("config", spec.to_string())
        .part("tokenizer", reqwest::multipart::Part::text(data::vocab()).file_name("vocab.txt"));

    // SIGKILL a third of the way: nothing at all runs on the way down.
    let mut serving = serve(&data_dir).await;
    let submitted: Value =
        client.post(format!("{}/jobs", serving.base)).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = submitted["id"].as_str().unwrap().to_string();
    let before_kill = wait_for_rows(&client, &serving, &id, 20_000).await;
    serving.child.kill().unwrap();
    serving.child.wait().unwrap();

    // The next start resumes from the finished partitions: only the rows of
    // partitions cut off are processed again.
    let mut serving = serve(&data_dir).await;
    let resumed = wait_for_rows(&client, &serving, &id, 40_000).await;
    assert_eq!(resumed["attempts"], 2, "{resumed}");
    let done_before = before_kill["progress"]["rows_done"].as_u64().unwrap();
    let resumed_rows = resumed["progress"]["resumed_rows"].as_u64().unwrap();
    let partition: u64 = RESUME_PARTITION_ROWS.parse().unwrap();
    assert!(resumed_rows + partition >= done_before, "resumed {resumed_rows} after {done_before} were done: {resumed}");
    assert_eq!(resumed["progress"]["rows_total"], 60_000);

    // SIGTERM: drains; the job goes back to queued, never to succeeded.
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
    let record: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join(format!("jobs/{id}/job.json"))).unwrap()).unwrap();
    assert_eq!(record["status"], "queued", "{record}");

    let serving = serve(&data_dir).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        let job = job(&client, &serving, &id).await;
        if job["status"] != "running" && job["status"] != "queued" {
            break job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["attempts"], 3, "{finished}");
    assert_eq!(finished["progress"]["rows_done"], 60_000, "{finished}");
    assert!(!data_dir.join(format!(".scratch/jobs/{id}")).exists(), "the work directory outlived the job");

    // The same bytes as a run that was never interrupted.
    let input = dir.path().join("big.csv");
    std::fs::write(&input, csv).unwrap();
    let (vocab, config) = write_inputs(dir.path(), &spec);
    let expected = prepd_run(input.to_str().unwrap(), &dir.path().join("out"), &config, &vocab, &[]);
    for (name, bytes) in &expected {
        let served = client.get(format!("{}/jobs/{id}/artifacts/{name}", serving.base)).send().await.unwrap();
        assert_eq!(served.status(), 200, "{name}");
        assert!(served.bytes().await.unwrap() == *bytes, "{name} differs from an uninterrupted run");
    }
}

/// `prepd bench-stages` times every stage on the file and finds the
/// specialised WordPiece equal to the `tokenizers` crate on every row (and
/// cleaning and tokenizing in one scan equal to the two steps); `prepd
/// run` says where its time went.
#[test]
fn bench_stages_and_stage_times() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, data::to_csv(&data::course_rows(1500, 23))).unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, data::vocab()).unwrap();
    let output = Command::new(PREPD)
        .args(["bench-stages", "--json", "--workers", "2", "--batch-rows", "100"])
        .arg("--input")
        .arg(&csv)
        .arg("--tokenizer")
        .arg(&vocab)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stages: Vec<&str> = figures.iter().map(|f| f["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["read", "split", "clean_tokenize", "clean", "tokenize", "tokenizer_limit", "write"]);
    for figure in &figures {
        assert_eq!(figure["rows"], 1500, "{figure}");
        assert!(figure["rows_per_second"].as_f64().unwrap() > 0.0, "{figure}");
    }
    let limit = &figures[5]["note"];
    assert!(limit.as_str().unwrap().ends_with("ids differ from prepd's on 0 rows"), "{limit}");
    assert!(figures[4]["note"].as_str().unwrap().starts_with("clean-text WordPiece"), "{}", figures[4]);
    assert!(figures[2]["note"].as_str().unwrap().starts_with("in one scan"), "{}", figures[2]);

    let run = Command::new(PREPD)
        .args(["run", "--input"])
        .arg(&csv)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--tokenizer")
        .arg(&vocab)
        .env("PREPD_DATA_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("prepd: stages: ingest ") && stderr.contains(", write "), "{stderr}");
}
