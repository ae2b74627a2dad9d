//! Where datasets and tokenizers come from, and which sources an operator
//! allows: object-store URIs (`s3://`, `gs://`, `az://`, `https://`),
//! `file://` only under allowed roots, no http(s) to loopback, link-local or
//! private addresses unless allowed, and the Hugging Face hub.
//!
//! A dataset source names one file, or many: a prefix or directory (every
//! file under it), or a glob (`s3://bucket/data/*.parquet`).

use std::net::IpAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::glob;
use crate::error::{Error, Result};
use crate::pipeline::runner::TokenizerPlan;
use crate::pipeline::spec::InputFormat;
use crate::pipeline::spec::TokenizerSpec;
use crate::pipeline::tokenize::WordPieceTokenizer;
use crate::store::ArtifactStore;

#[derive(Debug, Clone, Default)]
pub struct SourcePolicy {
    /// Directories under which `file://` sources may be read.
    pub file_roots: Vec<PathBuf>,
    /// Allow http(s) sources on loopback, link-local and private addresses.
    pub allow_private_network: bool,
    /// Allow every source (the CLI, reading the user's own files).
    pub allow_all: bool,
}

/// An object at a URI, opened through `object_store`.
pub struct RemoteObject {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// The last path segment: the file name.
    pub name: String,
    /// For `file://`: the local path.
    pub local_path: Option<PathBuf>,
}

/// The files a dataset source names, sorted by name: the order their rows
/// are numbered in, whatever order the store listed them.
pub struct RemoteDataset {
    pub store: Arc<dyn ObjectStore>,
    pub files: Vec<RemoteFile>,
}

pub struct RemoteFile {
    pub path: Path,
    /// The path below the source's prefix or directory (the file name, for a
    /// source that names one file).
    pub name: String,
    /// For `file://`: the local path.
    pub local_path: Option<PathBuf>,
}

impl RemoteDataset {
    /// Checks that the format of every file can be told.
    pub fn check_formats(&self, explicit: Option<InputFormat>) -> Result<()> {
        for file in &self.files {
            InputFormat::resolve(explicit, &file.name)?;
        }
        Ok(())
    }

    /// A short name for the whole source: the file's, or the pattern's.
    pub fn display_name(uri: &str) -> String {
        let trimmed = uri.trim_end_matches('/');
        let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
        percent_decode(last)
    }
}

/// Files a prefix or directory may hold at most.
pub const MAX_DATASET_FILES: usize = 100_000;

/// Hidden files and the markers data tools leave beside their output
/// (`_SUCCESS`, `.crc`, ...) are not data.
fn is_hidden(relative: &str) -> bool {
    relative.split('/').any(|segment| segment.starts_with('.') || segment.starts_with('_'))
}

fn not_allowed(uri: &str, reason: impl Into<String>) -> Error {
    Error::SourceNotAllowed { uri: uri.to_string(), reason: reason.into() }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

impl SourcePolicy {
    /// Checks `uri` against the policy and opens it.
    pub async fn open(&self, uri: &str) -> Result<RemoteObject> {
        let url = Url::parse(uri).map_err(|e| Error::invalid_field("source", format!("not a URI: {e}")))?;
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back().map(str::to_string))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::invalid_field("source", "the URI names no file"))?;
        let name = percent_decode(&name);
        match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|_| Error::invalid_field("source", "not a local file path"))?;
                let canonical = self.check_file(uri, &path)?;
                let parent = canonical.parent().ok_or_else(|| not_allowed(uri, "no parent directory"))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(parent)?;
                Ok(RemoteObject {
                    store: Arc::new(store),
                    path: Path::from(name.as_str()),
                    name,
                    local_path: Some(canonical),
                })
            }
            "http" | "https" => {
                self.check_http(uri, &url).await?;
                let (store, path) = object_store::parse_url_opts(&url, [("allow_http", "true")])
                    .map_err(|e| Error::invalid_field("source", e.to_string()))?;
                Ok(RemoteObject { store: Arc::from(store), path, name, local_path: None })
            }
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" => {
                let options = cloud_options_from_env(url.scheme());
                let (store, path) = object_store::parse_url_opts(&url, options)
                    .map_err(|e| Error::invalid_field("source", e.to_string()))?;
                Ok(RemoteObject { store: Arc::from(store), path, name, local_path: None })
            }
            other => Err(Error::invalid_field("source", format!("unsupported scheme '{other}'"))),
        }
    }

    /// Checks `uri` against the policy and lists the files it names: one
    /// file; every file under a prefix (a URI ending in `/`) or a local
    /// directory; or the files matching a glob. Hidden names (`.x`, `_x`)
    /// are left out of listings.
    pub async fn open_dataset(&self, uri: &str) -> Result<RemoteDataset> {
        let scheme = uri.split_once("://").map_or("", |(scheme, _)| scheme);
        let is_http = matches!(scheme, "http" | "https");
        let after_scheme = uri.find("://").map_or(0, |at| at + 3);
        let pattern_at =
            if is_http { None } else { glob::pattern_start(&uri[after_scheme..]).map(|p| after_scheme + p) };
        let (base, pattern) = match pattern_at {
            Some(at) => (&uri[..at], Some(percent_decode(&uri[at..]))),
            None if uri.ends_with('/') && !is_http => (uri, None),
            None if scheme == "file" && self.is_local_dir(uri) => (uri, None),
            None => {
                let object = self.open(uri).await?;
                let file = RemoteFile { path: object.path, name: object.name, local_path: object.local_path };
                return Ok(RemoteDataset { store: object.store, files: vec![file] });
            }
        };
        let (store, prefix, local_root) = self.open_prefix(uri, base).await?;
        let listed: Vec<object_store::ObjectMeta> = {
            use futures::TryStreamExt;
            store.list(prefix.as_ref()).try_collect().await?
        };
        let prefix_len = prefix.as_ref().map_or(0, |p| p.as_ref().len() + 1);
        let mut files = Vec::new();
        for meta in listed {
            let relative = meta.location.as_ref()[prefix_len.min(meta.location.as_ref().len())..].to_string();
            let wanted = !is_hidden(&relative) && pattern.as_ref().is_none_or(|p| glob::matches(p, &relative));
            if !wanted {
                continue;
            }
            let local_path = match &local_root {
                Some(root) => Some(self.check_file(uri, &root.join(&relative))?),
                None => None,
            };
            files.push(RemoteFile { path: meta.location, name: relative, local_path });
            if files.len() > MAX_DATASET_FILES {
                return Err(Error::invalid_field(
                    "source",
                    format!("{uri} names more than {MAX_DATASET_FILES} files; narrow it with a glob"),
                ));
            }
        }
        if files.is_empty() {
            return Err(Error::not_found(format!("files at {uri}")));
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(RemoteDataset { store, files })
    }

    fn is_local_dir(&self, uri: &str) -> bool {
        Url::parse(uri).ok().and_then(|url| url.to_file_path().ok()).is_some_and(|path| path.is_dir())
    }

    /// The store and prefix to list for a source's `base` (the part of
    /// `uri` before any pattern), and for `file://` the local directory.
    async fn open_prefix(
        &self,
        uri: &str,
        base: &str,
    ) -> Result<(Arc<dyn ObjectStore>, Option<Path>, Option<PathBuf>)> {
        let url = Url::parse(base).map_err(|e| Error::invalid_field("source", format!("not a URI: {e}")))?;
        match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|_| Error::invalid_field("source", "not a local path"))?;
                let root = self.check_file(uri, &path)?;
                if !root.is_dir() {
                    return Err(Error::invalid_field("source", format!("{} is not a directory", root.display())));
                }
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
                Ok((Arc::new(store), None, Some(root)))
            }
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" => {
                let options = cloud_options_from_env(url.scheme());
                let (store, path) = object_store::parse_url_opts(&url, options)
                    .map_err(|e| Error::invalid_field("source", e.to_string()))?;
                let prefix = (!path.as_ref().is_empty()).then_some(path);
                Ok((Arc::from(store), prefix, None))
            }
            "http" | "https" => Err(Error::invalid_field("source", "an http(s) source names one file")),
            other => Err(Error::invalid_field("source", format!("unsupported scheme '{other}'"))),
        }
    }

    fn check_file(&self, uri: &str, path: &FsPath) -> Result<PathBuf> {
        let canonical = path.canonicalize().map_err(|_| Error::not_found(format!("file {}", path.display())))?;
        if self.allow_all {
            return Ok(canonical);
        }
        let allowed =
            self.file_roots.iter().filter_map(|root| root.canonicalize().ok()).any(|root| canonical.starts_with(&root));
        if allowed {
            Ok(canonical)
        } else if self.file_roots.is_empty() {
            Err(not_allowed(uri, "file:// sources are off (the operator allows them with PREPD_FILE_ROOTS)"))
        } else {
            Err(not_allowed(uri, "outside the allowed file roots"))
        }
    }

    async fn check_http(&self, uri: &str, url: &Url) -> Result<()> {
        if self.allow_all || self.allow_private_network {
            return Ok(());
        }
        let host = url.host_str().ok_or_else(|| Error::invalid_field("source", "no host"))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| Error::Unavailable(format!("cannot resolve {host}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if let Some(ip) = addresses.into_iter().find(|ip| is_private(*ip)) {
            return Err(not_allowed(
                uri,
                format!("{host} resolves to {ip}, a loopback, link-local or private address"),
            ));
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (a `+` stays a `+`: these are paths, not forms).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped =
            (bytes[i] == b'%').then(|| s.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())).flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// Credentials and endpoints from the usual environment variables
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as each cloud's builder reads them.
fn cloud_options_from_env(scheme: &str) -> Vec<(String, String)> {
    let prefix = match scheme {
        "s3" | "s3a" => "AWS_",
        "gs" => "GOOGLE_",
        _ => "AZURE_",
    };
    std::env::vars().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

/// Fetches tokenizers from the Hugging Face hub (or the endpoint in
/// `HF_ENDPOINT`), caching them in the store.
#[derive(Clone)]
pub struct HubClient {
    pub endpoint: String,
    pub token: Option<String>,
    /// Built on the first download: building it loads the system's root
    /// certificates (tens of milliseconds), which a job whose tokenizer is
    /// a file or cached never needs.
    client: Arc<OnceLock<reqwest::Client>>,
}

impl HubClient {
    pub fn new(endpoint: String, token: Option<String>) -> Self {
        Self { endpoint: endpoint.trim_end_matches('/').to_string(), token, client: Arc::default() }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("prepd/", env!("CARGO_PKG_VERSION")))
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("a TLS backend is built in")
        })
    }

    /// `repo` may carry a revision: `name@revision`.
    pub async fn fetch(&self, store: &ArtifactStore, repo: &str) -> Result<Bytes> {
        let (name, revision) = repo.split_once('@').unwrap_or((repo, "main"));
        let valid = |s: &str| {
            !s.is_empty() && !s.contains("..") && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        if !valid(name) || !valid(revision) {
            return Err(Error::invalid_field("tokenizer.pretrained", format!("'{repo}' is not a hub repository name")));
        }
        const FILES: [&str; 2] = ["tokenizer.json", "vocab.txt"];
        for file in FILES {
            if let Some(bytes) = store.get_opt(&ArtifactStore::hub_cache(name, revision, file)).await? {
                return Ok(bytes);
            }
        }
        for file in FILES {
            let url = format!("{}/{name}/resolve/{revision}/{file}", self.endpoint);
            let mut request = self.client().get(&url);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .map_err(|e| Error::Unavailable(format!("tokenizer hub at {}: {e}", self.endpoint)))?;
            match response.status() {
                s if s.is_success() => {
                    let bytes = response.bytes().await.map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
                    store.put(&ArtifactStore::hub_cache(name, revision, file), bytes.clone()).await?;
                    return Ok(bytes);
                }
                reqwest::StatusCode::NOT_FOUND => continue,
                status => return Err(Error::Unavailable(format!("{url} answered {status}"))),
            }
        }
        Err(Error::invalid_field(
            "tokenizer.pretrained",
            format!("'{repo}' has neither tokenizer.json nor vocab.txt at {}", self.endpoint),
        ))
    }
}

/// Everything a job's tokenizer can be resolved from.
pub struct TokenizerResolver<'a> {
    pub store: &'a ArtifactStore,
    pub policy: &'a SourcePolicy,
    pub hub: &'a HubClient,
}

impl TokenizerResolver<'_> {
    /// `uploaded` is the tokenizer file sent with the job, if any.
    pub async fn resolve(&self, spec: &TokenizerSpec, uploaded: Option<Bytes>) -> Result<TokenizerPlan> {
        let bytes = match spec {
            TokenizerSpec::Train { vocab_size } => return Ok(TokenizerPlan::Train { vocab_size: *vocab_size }),
            TokenizerSpec::Uploaded { .. } => {
                uploaded.ok_or_else(|| Error::invalid_field("tokenizer", "the uploaded tokenizer is missing"))?
            }
            TokenizerSpec::File(uri) => {
                let object = self.policy.open(uri).await?;
                object.store.get(&object.path).await?.bytes().await?
            }
            TokenizerSpec::Pretrained(repo) => self.hub.fetch(self.store, repo).await?,
        };
        let tokenizer = tokio::task::spawn_blocking(move || WordPieceTokenizer::from_bytes(&bytes)).await??;
        Ok(TokenizerPlan::Ready(Box::new(tokenizer)))
    }
}
