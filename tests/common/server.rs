//! A prepd server on 127.0.0.1:0 for one test, stopped when dropped.

use std::time::{Duration, Instant};

use prepd::config::{CommonConfig, ServeConfig};
use serde_json::Value;
use tokio::sync::oneshot;

pub fn config(data_dir: &std::path::Path) -> ServeConfig {
    ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        common: CommonConfig {
            data_dir: data_dir.to_path_buf(),
            workers: 2,
            batch_rows: 64,
            partition_rows: 150,
            sort_bytes: 64 << 10,
            // The jobs' rows spill to runs, as a large job's do.
            in_memory_bytes: 0,
            max_decompressed_bytes: 1 << 30,
            max_compression_ratio: 250,
            hf_endpoint: "http://127.0.0.1:9".into(),
            hf_token: None,
        },
        concurrent_jobs: 2,
        max_upload_bytes: 64 << 20,
        max_json_bytes: 1 << 20,
        max_concurrent_requests: 64,
        file_roots: vec![],
        allow_private_sources: false,
        shutdown_grace_seconds: 5,
        preprocessor_cache: 4,
    }
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<prepd::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = config(data_dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(prepd::server::serve(config, listener, async {
            let _ = stopped.await;
        }));
        let server = Self { base, client: reqwest::Client::new(), data_dir, stop: Some(stop), task: Some(task) };
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads a dataset (and optionally a spec and a tokenizer).
    pub async fn upload(
        &self,
        file_name: &str,
        data: Vec<u8>,
        config: Option<Value>,
        tokenizer: Option<String>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(data).file_name(file_name.to_string()));
        if let Some(config) = config {
            form = form.text("config", config.to_string());
        }
        if let Some(tokenizer) = tokenizer {
            form = form.part("tokenizer", reqwest::multipart::Part::text(tokenizer).file_name("vocab.txt"));
        }
        self.client.post(self.url("/jobs")).multipart(form).send().await.unwrap()
    }

    /// Uploads and waits for the job to finish; returns the final record.
    pub async fn run_job(
        &self,
        file_name: &str,
        data: Vec<u8>,
        config: Option<Value>,
        tokenizer: Option<String>,
    ) -> Value {
        let response = self.upload(file_name, data, config, tokenizer).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        self.wait_job(body["id"].as_str().unwrap()).await
    }

    /// POSTs a JSON body and returns the JSON answer, whatever its status.
    pub async fn post_json(&self, path: &str, body: &Value) -> Value {
        self.client.post(self.url(path)).json(body).send().await.unwrap().json().await.unwrap()
    }

    /// GETs a JSON answer, whatever its status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client.get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get_json(&format!("/jobs/{id}")).await
    }

    /// Polls until the job has finished.
    pub async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let job = self.job(id).await;
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn artifact(&self, id: &str, name: &str) -> Vec<u8> {
        let response = self.client.get(self.url(&format!("/jobs/{id}/artifacts/{name}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        response.bytes().await.unwrap().to_vec()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
