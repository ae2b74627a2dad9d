//! The job lifecycle over real HTTP: upload, watch, artifacts, `/preprocess`
//! agreement with the artifacts, listing, cancelling and deleting.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::data::{self, Row};
use common::server::TestServer;
use polars::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn read_parquet(bytes: &[u8]) -> DataFrame {
    ParquetReader::new(std::io::Cursor::new(bytes.to_vec())).finish().unwrap()
}

fn list_u32(frame: &DataFrame, column: &str, row: usize) -> Vec<u32> {
    let value = frame.column(column).unwrap().get(row).unwrap();
    match value {
        AnyValue::List(series) => series.cast(&DataType::UInt32).unwrap().u32().unwrap().into_no_null_iter().collect(),
        other => panic!("{column}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_to_artifacts_to_preprocess() {
    let server = TestServer::start().await;
    let rows = data::course_rows(700, 7);
    let by_id: HashMap<u64, Row> = rows.iter().map(|r| (r.id, r.clone())).collect();
    let config = json!({"test_size": 0.2, "seed": 1234});
    let response =
        server.upload("dataset.csv", data::to_csv(&rows).into_bytes(), Some(config), Some(data::vocab())).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/jobs/{id}"));
    assert!(["queued", "running", "succeeded"].contains(&accepted["status"].as_str().unwrap()));

    let job = server.wait_job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["stage"], "done");
    assert_eq!(job["progress"]["rows_done"], 700);
    assert_eq!(job["progress"]["rows_total"], 700);
    assert!(job["progress"]["rows_per_second"].as_f64().unwrap() > 0.0, "{job}");
    assert_eq!(job["progress"]["eta_seconds"], 0.0);
    assert!(job["timings"]["total_seconds"].as_f64().unwrap() > 0.0);
    for stage in ["ingest", "split", "fit", "process", "write"] {
        assert!(job["timings"]["stages"][stage].is_number(), "{stage} timing: {job}");
    }

    // Per class: ceil(0.2 n) rows to validation, the rest to train.
    let mut per_class: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        *per_class.entry(row.tag.clone()).or_default() += 1;
    }
    let mut validation_total = 0;
    for (tag, n) in &per_class {
        let n_val = (0.2 * *n as f64).ceil() as u64;
        assert_eq!(job["classes"][tag]["validation"], n_val, "{tag}");
        assert_eq!(job["classes"][tag]["train"], n - n_val, "{tag}");
        validation_total += n_val;
    }
    assert_eq!(job["counts"]["validation"], validation_total);
    let sorted: Vec<&String> = per_class.keys().collect();
    for (index, tag) in sorted.iter().enumerate() {
        assert_eq!(job["class_to_index"][tag.as_str()], index as i64);
    }

    // Artifacts: listed with sizes and checksums that match what is served.
    let listing = server.get_json(&format!("/jobs/{id}/artifacts")).await;
    let names: Vec<&str> =
        listing["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    for expected in [
        "train/part-00000.parquet",
        "val/part-00000.parquet",
        "class_to_index.json",
        "preprocessor.json",
        "tokenizer.json",
        "report.json",
        "manifest.json",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    for artifact in listing["artifacts"].as_array().unwrap() {
        let name = artifact["name"].as_str().unwrap();
        let bytes = server.artifact(&id, name).await;
        assert_eq!(bytes.len() as u64, artifact["bytes"].as_u64().unwrap(), "{name}");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), artifact["sha256"].as_str().unwrap(), "{name}");
    }
    let class_to_index: Value = serde_json::from_slice(&server.artifact(&id, "class_to_index.json").await).unwrap();
    assert_eq!(class_to_index, job["class_to_index"]);

    let val = read_parquet(&server.artifact(&id, "val/part-00000.parquet").await);
    let train = read_parquet(&server.artifact(&id, "train/part-00000.parquet").await);
    assert_eq!(val.height() as u64, validation_total);
    assert_eq!((val.height() + train.height()) as u64, 700);
    let names: Vec<String> = val.get_column_names().iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["id", "text", "ids", "masks", "targets"]);
    assert_eq!(val.column("id").unwrap().dtype(), &DataType::Int64);
    assert_eq!(val.column("ids").unwrap().dtype(), &DataType::List(Box::new(DataType::Int32)));
    assert_eq!(val.column("masks").unwrap().dtype(), &DataType::List(Box::new(DataType::Int8)));
    assert_eq!(val.column("targets").unwrap().dtype(), &DataType::Int64);

    // Principle 1: /preprocess on every validation row returns that row's artifact values.
    let ids_column = val.column("id").unwrap().i64().unwrap().clone();
    let targets = val.column("targets").unwrap().i64().unwrap().clone();
    let records: Vec<Value> = ids_column
        .into_no_null_iter()
        .map(|row_id| {
            let row = &by_id[&(row_id as u64)];
            json!({"title": row.title, "description": row.description, "tag": row.tag})
        })
        .collect();
    let response: Value =
        server.post_json("/preprocess", &json!({"job_id": id, "records": records, "padding": "none"})).await;
    for row in 0..val.height() {
        let expected_ids = list_u32(&val, "ids", row);
        let served: Vec<u32> = serde_json::from_value(response["ids"][row].clone()).unwrap();
        assert_eq!(served, expected_ids, "row {row}");
        let masks: Vec<u32> = serde_json::from_value(response["masks"][row].clone()).unwrap();
        assert_eq!(masks, list_u32(&val, "masks", row), "row {row}");
        assert_eq!(response["targets"][row], targets.get(row).unwrap(), "row {row}");
    }

    // One record at a time, padded to the longest of the request, and unlabelled.
    let row = &rows[0];
    let single: Value = server.post_json("/preprocess", &json!({"job_id": id, "records": [{"title": row.title, "description": row.description}, {"title": "", "description": null}]})).await;
    assert!(single.get("targets").is_none(), "{single}");
    let first = single["ids"][0].as_array().unwrap().len();
    assert_eq!(single["ids"][1].as_array().unwrap().len(), first);
    assert_eq!(single["masks"][1].as_array().unwrap().iter().filter(|m| **m == 1).count(), 2);
    let fixed: Value = server
        .post_json(
            "/preprocess",
            &json!({"job_id": id, "records": [{"title": "a", "description": "b"}], "padding": {"max_length": 300}}),
        )
        .await;
    assert_eq!(fixed["ids"][0].as_array().unwrap().len(), 300);

    // The report names nothing alarming for clean data.
    let report: Value = serde_json::from_slice(&server.artifact(&id, "report.json").await).unwrap();
    assert_eq!(report["rows"]["input"], 700);
    assert_eq!(report["classes_too_small"], json!([]));

    // pandas and pyarrow read the artifacts unchanged.
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        std::fs::write(
            dir.path().join(format!("{split}.parquet")),
            server.artifact(&id, &format!("{split}/part-00000.parquet")).await,
        )
        .unwrap();
    }
    let script = r#"
import sys, pandas as pd, pyarrow.parquet as pq
d = sys.argv[1]
for split in ("train", "val"):
    t = pq.read_table(f"{d}/{split}.parquet")
    assert t.schema.names == ["id", "text", "ids", "masks", "targets"], t.schema
    df = pd.read_parquet(f"{d}/{split}.parquet")
    assert str(df["targets"].dtype) == "int64", df.dtypes
    assert all(len(i) == len(m) and set(m) <= {1} for i, m in zip(df["ids"], df["masks"]))
    print(split, len(df))
"#;
    let run =
        || std::process::Command::new(common::python::python()).arg("-c").arg(script).arg(dir.path()).output().unwrap();
    let mut output = run();
    // pyarrow 26 has aborted (std::terminate, SIGABRT) on a few of many runs
    // under load, in its first read, on the same bytes that read fine on
    // every other run: one more try for a death by signal only. A wrong file
    // fails the script's assertions (exit status 1) on every try.
    if std::os::unix::process::ExitStatusExt::signal(&output.status).is_some() {
        eprintln!("python died by a signal, once more: {}", String::from_utf8_lossy(&output.stderr));
        output = run();
    }
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains(&format!("val {validation_total}")), "{printed}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_newest_first_and_delete_removes() {
    let server = TestServer::start().await;
    let rows = data::course_rows(40, 3);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), None, Some(data::vocab())).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let page = server.get_json("/jobs?limit=2").await;
    let listed: Vec<&str> = page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    let next = page["next"].as_str().unwrap();
    let page = server.get_json(&format!("/jobs?limit=2&before={next}")).await;
    let listed: Vec<&str> = page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [ids[0].as_str()]);
    assert!(page.get("next").is_none());

    let deleted = server.client.delete(server.url(&format!("/jobs/{}", ids[0]))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = server.client.get(server.url(&format!("/jobs/{}", ids[0]))).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert!(!server.data_dir.path().join("jobs").join(&ids[0]).exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_queued_and_a_running_job() {
    let server = TestServer::start_with(|c| c.concurrent_jobs = 1).await;
    let big = data::to_csv(&data::course_rows(150_000, 11)).into_bytes();
    let first: Value = server.upload("big.csv", big.clone(), None, Some(data::vocab())).await.json().await.unwrap();
    let second: Value = server.upload("big.csv", big, None, Some(data::vocab())).await.json().await.unwrap();
    let (first, second) = (first["id"].as_str().unwrap(), second["id"].as_str().unwrap());
    // The second waits for the first's slot: cancel it while queued.
    let cancelled = server.client.delete(server.url(&format!("/jobs/{second}"))).send().await.unwrap();
    assert_eq!(cancelled.status(), 202);
    let cancelled = server.client.delete(server.url(&format!("/jobs/{first}"))).send().await.unwrap();
    assert_eq!(cancelled.status(), 202);
    for id in [first, second] {
        let job = server.wait_job(id).await;
        assert_eq!(job["status"], "cancelled", "{job}");
        let artifacts = server.client.get(server.url(&format!("/jobs/{id}/artifacts"))).send().await.unwrap();
        assert_eq!(artifacts.status(), 409);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_and_tokenizer_sources() {
    let server = TestServer::start().await;
    let rows = data::course_rows(300, 5);
    let csv_job = server.run_job("d.csv", data::to_csv(&rows).into_bytes(), None, Some(data::vocab())).await;
    let jsonl_job = server.run_job("d.jsonl", data::to_jsonl(&rows).into_bytes(), None, Some(data::vocab())).await;
    assert_eq!(csv_job["status"], "succeeded", "{csv_job}");
    assert_eq!(jsonl_job["status"], "succeeded", "{jsonl_job}");
    // The same rows make the same split files, whatever the input format.
    for name in ["train/part-00000.parquet", "val/part-00000.parquet"] {
        let a = server.artifact(csv_job["id"].as_str().unwrap(), name).await;
        let b = server.artifact(jsonl_job["id"].as_str().unwrap(), name).await;
        assert_eq!(a, b, "{name}");
    }
    // Parquet in: written by polars.
    let parquet_job = server.run_job("d.parquet", data::to_parquet(&rows), None, Some(data::vocab())).await;
    assert_eq!(parquet_job["status"], "succeeded", "{parquet_job}");
    let a = server.artifact(csv_job["id"].as_str().unwrap(), "val/part-00000.parquet").await;
    let b = server.artifact(parquet_job["id"].as_str().unwrap(), "val/part-00000.parquet").await;
    assert_eq!(a, b);

    // A WordPiece trained on the train split.
    let trained = server
        .run_job(
            "d.csv",
            data::to_csv(&rows).into_bytes(),
            Some(json!({"tokenizer": {"train": {"vocab_size": 300}}})),
            None,
        )
        .await;
    assert_eq!(trained["status"], "succeeded", "{trained}");
    let preprocessor: Value =
        serde_json::from_slice(&server.artifact(trained["id"].as_str().unwrap(), "preprocessor.json").await).unwrap();
    assert_eq!(preprocessor["tokenizer"]["source"], json!({"train": {"vocab_size": 300}}));
    let tokenizer: Value =
        serde_json::from_slice(&server.artifact(trained["id"].as_str().unwrap(), "tokenizer.json").await).unwrap();
    assert!(tokenizer["model"]["vocab"]["[CLS]"].is_number());
    assert!(tokenizer.get("padding").is_none_or(Value::is_null));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_inputs_stream_within_caps() {
    use std::io::Write;
    let server = TestServer::start_with(|c| c.common.max_decompressed_bytes = 200_000).await;
    let rows = data::course_rows(300, 17);
    let csv = data::to_csv(&rows);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(csv.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(std::io::Cursor::new(data::to_jsonl(&rows)), 3).unwrap();

    let uploaded_sha = |bytes: &[u8]| (bytes.len() as u64, hex::encode(Sha256::digest(bytes)));
    let (plain_sha, gz_sha) = (uploaded_sha(csv.as_bytes()), uploaded_sha(&gz));
    let plain = server.run_job("d.csv", csv.clone().into_bytes(), None, Some(data::vocab())).await;
    let gzipped = server.run_job("d.csv.gz", gz, None, Some(data::vocab())).await;
    let zstded = server.run_job("d.jsonl.zst", zst, None, Some(data::vocab())).await;
    for job in [&plain, &gzipped, &zstded] {
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    for name in ["train/part-00000.parquet", "val/part-00000.parquet"] {
        let expected = server.artifact(plain["id"].as_str().unwrap(), name).await;
        assert_eq!(server.artifact(gzipped["id"].as_str().unwrap(), name).await, expected, "{name}");
        assert_eq!(server.artifact(zstded["id"].as_str().unwrap(), name).await, expected, "{name}");
    }
    // The manifest's checksum is the input's as uploaded: the compressed
    // bytes (read for the checksum alone), the plain ones (hashed as the scan reads).
    for (job, name, (bytes, sha256)) in [(&gzipped, "d.csv.gz", gz_sha), (&plain, "d.csv", plain_sha)] {
        let manifest: Value =
            serde_json::from_slice(&server.artifact(job["id"].as_str().unwrap(), "manifest.json").await).unwrap();
        let file = &manifest["input"]["files"][0];
        assert_eq!(
            (file["name"].as_str(), file["bytes"].as_u64(), file["sha256"].as_str()),
            (Some(name), Some(bytes), Some(sha256.as_str()))
        );
    }

    // Past the cap on decompressed bytes: refused at upload, naming the limit.
    let big = data::to_csv(&data::course_rows(3000, 17));
    assert!(big.len() > 200_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(big.as_bytes()).unwrap();
    let response = server.upload("big.csv.gz", gz.finish().unwrap(), None, Some(data::vocab())).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("PREPD_MAX_DECOMPRESSED_BYTES"), "{problem}");

    // A corrupt stream is answered at upload; Parquet inside gzip is refused.
    let response = server.upload("d.csv.gz", b"not gzip".to_vec(), None, Some(data::vocab())).await;
    assert_eq!(response.status(), 422);
    let response = server.upload("d.parquet.gz", b"x".to_vec(), None, Some(data::vocab())).await;
    assert_eq!(response.status(), 415);
    server.stop().await;
}

/// Rows appended to a dataset and the job run again with `split_key: "id"`:
/// in exact mode a few existing rows change side (the per-class boundary
/// moves); in stable mode none do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_rows_keep_their_side_in_stable_mode() {
    use std::collections::BTreeSet;
    let server = TestServer::start().await;
    let before = data::course_rows(2000, 23);
    let after = data::course_rows(2500, 23);
    assert_eq!(before.last().unwrap().id, after[1999].id);
    let old_ids: BTreeSet<i64> = before.iter().map(|r| r.id as i64).collect();
    let validation_ids = |bytes: Vec<u8>| -> BTreeSet<i64> {
        read_parquet(&bytes).column("id").unwrap().i64().unwrap().into_no_null_iter().collect()
    };
    for mode in ["exact", "stable"] {
        let spec = json!({"split_key": "id", "split_mode": mode});
        let first =
            server.run_job("d.csv", data::to_csv(&before).into_bytes(), Some(spec.clone()), Some(data::vocab())).await;
        let second = server.run_job("d.csv", data::to_csv(&after).into_bytes(), Some(spec), Some(data::vocab())).await;
        assert_eq!(second["status"], "succeeded", "{second}");
        let was = validation_ids(server.artifact(first["id"].as_str().unwrap(), "val/part-00000.parquet").await);
        let now: BTreeSet<i64> =
            validation_ids(server.artifact(second["id"].as_str().unwrap(), "val/part-00000.parquet").await)
                .intersection(&old_ids)
                .copied()
                .collect();
        let changed = was.symmetric_difference(&now).count();
        println!("{mode}: {changed} of {} existing rows changed side after appending 500", old_ids.len());
        let validation = second["counts"]["validation"].as_u64().unwrap();
        if mode == "stable" {
            assert_eq!(changed, 0);
            assert!((430..570).contains(&validation), "{validation}");
        } else {
            assert!(changed <= 500, "{changed}");
            let expected: u64 = second["classes"]
                .as_object()
                .unwrap()
                .values()
                .map(|c| {
                    let n = c["train"].as_u64().unwrap() + c["validation"].as_u64().unwrap();
                    (0.2 * n as f64).ceil() as u64
                })
                .sum();
            assert_eq!(validation, expected);
        }
    }
    server.stop().await;
}

/// A job small enough for memory reads its input once; the same job made to
/// spill reads it twice. Their artifacts are the same bytes, and the job
/// read once still reports every stage, its progress and what it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_read_once_writes_what_a_job_read_twice_does() {
    let mut rows = data::course_rows(600, 17);
    for i in [0, 7, 333, 599] {
        rows[i].tag = String::new();
    }
    let csv = data::to_csv(&rows).into_bytes();
    let spec = json!({"null_labels": "skip", "rows_per_part": 100, "seed": 7});
    let twice = TestServer::start().await;
    let once = TestServer::start_with(|c| c.common.in_memory_bytes = 64 << 20).await;
    let mut jobs = Vec::new();
    for server in [&twice, &once] {
        let job = server.run_job("d.csv", csv.clone(), Some(spec.clone()), Some(data::vocab())).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        jobs.push(job);
    }
    let read_once = &jobs[1];
    assert_eq!(read_once["progress"]["rows_done"], 596, "{read_once}");
    assert_eq!(read_once["progress"]["rows_total"], 596, "{read_once}");
    for stage in ["ingest", "split", "fit", "process", "write"] {
        assert!(read_once["timings"]["stages"][stage].is_number(), "{stage} timing: {read_once}");
    }
    let listed = twice.get_json(&format!("/jobs/{}/artifacts", jobs[0]["id"].as_str().unwrap())).await;
    let names: Vec<&str> =
        listed["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"val/part-00001.parquet"), "{names:?}");
    for name in names {
        let (a, b) = (jobs[0]["id"].as_str().unwrap(), jobs[1]["id"].as_str().unwrap());
        assert!(twice.artifact(a, name).await == once.artifact(b, name).await, "{name} differs");
    }
    let report: Value =
        serde_json::from_slice(&once.artifact(jobs[1]["id"].as_str().unwrap(), "report.json").await).unwrap();
    assert_eq!(report["rows"]["skipped"], 4, "{report}");
    assert_eq!(report["null_label_rows"], json!([1, 8, 334, 600]), "{report}");
    twice.stop().await;
    once.stop().await;
}

/// Jobs running at once on a pool of one worker. Each job's in-order loop
/// (cutting chunks, numbering rows) runs on the pool's thread and runs its
/// own chunks while it waits, so jobs must neither wait on each other for
/// good nor mix their rows: the small jobs read their input once, the large
/// ones twice (spilled), and each writes what it writes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_at_once_on_one_worker_finish_as_alone() {
    let server = TestServer::start_with(|c| {
        c.common.workers = 1;
        c.concurrent_jobs = 4;
        // 300 rows are some 55 KB of CSV and fit; 3,000 rows' 550 KB
        // file is larger than the budget, so those jobs read it twice.
        c.common.in_memory_bytes = 512 << 10;
    })
    .await;
    let small = data::course_rows(300, 21);
    let large = data::course_rows(3_000, 22);
    let alone = [
        server.run_job("s.csv", data::to_csv(&small).into_bytes(), None, Some(data::vocab())).await,
        server.run_job("l.csv", data::to_csv(&large).into_bytes(), None, Some(data::vocab())).await,
    ];
    let together = tokio::join!(
        server.run_job("s.csv", data::to_csv(&small).into_bytes(), None, Some(data::vocab())),
        server.run_job("l.csv", data::to_csv(&large).into_bytes(), None, Some(data::vocab())),
        server.run_job("s.jsonl", data::to_jsonl(&small).into_bytes(), None, Some(data::vocab())),
        server.run_job("l.jsonl", data::to_jsonl(&large).into_bytes(), None, Some(data::vocab())),
    );
    let together = [together.0, together.1, together.2, together.3];
    for job in alone.iter().chain(&together) {
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    for (n, job) in together.iter().enumerate() {
        let first = &alone[n % 2];
        for name in ["train/part-00000.parquet", "val/part-00000.parquet"] {
            let expected = server.artifact(first["id"].as_str().unwrap(), name).await;
            let written = server.artifact(job["id"].as_str().unwrap(), name).await;
            assert!(expected == written, "{name} of job {n} differs from the job run alone");
        }
    }
    server.stop().await;
}
