//! Real servers on 127.0.0.1 for the fetcher's tests: Debian's `docker-registry` (CNCF
//! distribution) and a small scripted HTTP server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmgate_fetcher::{BackoffConfig, Fetcher, FetcherOptions};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A minimal valid module whose custom section carries `tag`, so each test module is distinct.
pub fn module(tag: &str) -> Vec<u8> {
    module_with_payload(tag.as_bytes())
}

/// A valid module with a custom section of `payload`.
pub fn module_with_payload(payload: &[u8]) -> Vec<u8> {
    let mut section = Vec::new();
    leb(&mut section, 1);
    section.push(b'x');
    section.extend_from_slice(payload);
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    out.push(0);
    leb(&mut out, section.len() as u64);
    out.extend_from_slice(&section);
    out
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Options for tests: a temp cache, short backoff, generous but bounded timeouts.
pub fn options(cache: &Path) -> FetcherOptions {
    let mut o = FetcherOptions::new(cache);
    o.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..BackoffConfig::default()
    };
    o.request_timeout = Duration::from_secs(10);
    o.fetch_timeout = Duration::from_secs(30);
    o.docker_config = wasmgate_fetcher::DockerConfigSource::Disabled;
    o
}

pub fn fetcher(opts: FetcherOptions) -> (Fetcher, prometheus::Registry) {
    wasmgate_fetcher::install_crypto_provider();
    let f = Fetcher::new(opts).expect("fetcher");
    let reg = prometheus::Registry::new();
    f.register_metrics(&reg).expect("metrics");
    (f, reg)
}

/// Value of a counter or gauge, by name and optional label.
pub fn metric(reg: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    for family in reg.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = match label {
                None => true,
                Some((k, v)) => m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v),
            };
            if matches {
                return match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                    prometheus::proto::MetricType::HISTOGRAM => {
                        m.get_histogram().get_sample_count() as f64
                    }
                    other => panic!("{name}: unexpected type {other:?}"),
                };
            }
        }
    }
    panic!("metric {name} {label:?} not found");
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a registry guards itself.
#[derive(Clone, Default)]
pub struct RegistrySetup {
    pub basic_auth: Option<(String, String)>,
    /// (certificate chain PEM, key PEM)
    pub tls: Option<(String, String)>,
}

/// `docker-registry serve` on 127.0.0.1, storage in a temp dir, killed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    config: PathBuf,
}

impl Registry {
    pub fn start(setup: RegistrySetup) -> Result<Self> {
        if !Path::new(REGISTRY_BIN).exists() {
            panic!(
                "{REGISTRY_BIN} is missing: these tests need a real OCI registry. Run `apt-get install -y docker-registry apache2-utils`."
            );
        }
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: wasmgate-test\n",
            data = dir.path().join("data").display()
        );
        if let Some((cert, key)) = &setup.tls {
            let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&c, cert)?;
            std::fs::write(&k, key)?;
            yaml.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                c.display(),
                k.display()
            ));
        }
        if let Some((user, pass)) = &setup.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .context("htpasswd missing: `apt-get install -y apache2-utils`")?;
            if !out.status.success() {
                bail!("htpasswd failed");
            }
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout)?;
            yaml.push_str(&format!(
                "auth: {{htpasswd: {{realm: wasmgate-test, path: {}}}}}\n",
                path.display()
            ));
        }
        let config = dir.path().join("registry.yml");
        std::fs::write(&config, yaml)?;
        let mut reg = Self {
            port,
            dir,
            child: None,
            config,
        };
        reg.spawn()?;
        Ok(reg)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting docker-registry")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log"))
                    .unwrap_or_default();
                bail!("docker-registry did not listen on {}: {log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Path of a blob's data file in the registry's storage.
    pub fn blob_path(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pushes by raw HTTP following the OCI distribution spec (not through wasmgate's code).
pub struct RawPusher {
    pub base: String,
    pub client: reqwest::Client,
    pub basic: Option<(String, String)>,
}

impl RawPusher {
    pub fn new(registry: &Registry) -> Self {
        wasmgate_fetcher::install_crypto_provider();
        Self {
            base: format!("http://{}", registry.host()),
            client: reqwest::Client::new(),
            basic: None,
        }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.basic {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Uploads a blob (POST then PUT); returns its descriptor JSON.
    pub async fn blob(
        &self,
        repo: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<serde_json::Value> {
        let digest = format!("sha256:{}", sha256_hex(data));
        let resp = self
            .auth(
                self.client
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
            )
            .send()
            .await?;
        if resp.status() != 202 {
            bail!("upload start: {}", resp.status());
        }
        let loc = resp
            .headers()
            .get("location")
            .context("no Location")?
            .to_str()?
            .to_owned();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .auth(self.client.put(format!("{loc}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await?;
        if resp.status() != 201 {
            bail!("upload finish: {} {}", resp.status(), resp.text().await?);
        }
        Ok(serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()}))
    }

    /// PUTs a manifest under `reference` (tag or digest); returns its hex digest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &serde_json::Value,
    ) -> Result<String> {
        let body = serde_json::to_vec(manifest)?;
        let media_type = manifest["mediaType"]
            .as_str()
            .context("mediaType")?
            .to_owned();
        let resp = self
            .auth(
                self.client
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.base)),
            )
            .header("content-type", media_type)
            .body(body.clone())
            .send()
            .await?;
        if resp.status() != 201 {
            bail!("manifest put: {} {}", resp.status(), resp.text().await?);
        }
        Ok(sha256_hex(&body))
    }

    /// An image whose single layer is `layer` of `layer_type`, with a config of `config_type`.
    pub async fn image(
        &self,
        repo: &str,
        tag: &str,
        manifest_type: &str,
        config_type: &str,
        layers: &[(&str, Vec<u8>)],
    ) -> Result<String> {
        let config = self.blob(repo, config_type, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#).await?;
        let mut descs = Vec::new();
        for (media_type, data) in layers {
            descs.push(self.blob(repo, media_type, data).await?);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config,
            "layers": descs,
        });
        self.manifest(repo, tag, &manifest).await
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";

/// One scripted answer of [`HttpServer`].
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Send only this many body bytes (Content-Length still announces all), then close.
    pub truncate_to: Option<usize>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            body,
            truncate_to: None,
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: b"no".to_vec(),
            truncate_to: None,
            delay: Duration::ZERO,
        }
    }
}

type Route = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A scripted HTTP/1.1 server on 127.0.0.1: each path answers with its closure, given the
/// 0-based number of requests that path has seen. Counts requests per path.
pub struct HttpServer {
    pub addr: SocketAddr,
    hits: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn start(routes: Vec<(&str, Route)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<BTreeMap<String, Route>> =
            Arc::new(routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect());
        let hits = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
        let hits2 = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                let hits = hits2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let n = {
                        let mut h = hits.lock().unwrap();
                        let c = h.entry(path.clone()).or_insert(0);
                        *c += 1;
                        *c - 1
                    };
                    let reply = match routes.get(&path) {
                        Some(route) => route(n),
                        None => Reply::status(404),
                    };
                    tokio::time::sleep(reply.delay).await;
                    let head = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    let send = reply.truncate_to.unwrap_or(reply.body.len());
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&reply.body[..send]).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { addr, hits, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn route(f: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Route {
    Arc::new(f)
}

/// A bearer-token registry: a front on 127.0.0.1 that runs the Docker token flow (401 with a
/// `Bearer realm=…/token` challenge; `/token` checks basic credentials and issues a token) and
/// forwards authorised reads to a real `docker-registry`. It can answer 503 to the first
/// `fail_manifests` manifest requests, can redirect blob (or manifest) GETs elsewhere (as
/// registries backed by object storage do for blobs), and counts manifest, token and blob
/// requests.
pub struct TokenRegistry {
    pub addr: SocketAddr,
    pub manifest_requests: Arc<AtomicUsize>,
    pub token_requests: Arc<AtomicUsize>,
    pub blob_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

const TOKEN: &str = "wasmgate-test-token";

impl TokenRegistry {
    pub async fn start(upstream: &Registry, user: &str, pass: &str, fail_manifests: usize) -> Self {
        Self::start_with_realm(upstream, user, pass, fail_manifests, None).await
    }

    /// As `start`, advertising `realm` instead of its own `/token`.
    pub async fn start_with_realm(
        upstream: &Registry,
        user: &str,
        pass: &str,
        fail_manifests: usize,
        realm: Option<String>,
    ) -> Self {
        Self::start_full(upstream, user, pass, fail_manifests, realm, None).await
    }

    /// As `start`, answering each authorised GET whose path contains `part` (`/blobs/`,
    /// `/manifests/`) with `307 Location: <base><path>`.
    pub async fn start_redirecting(
        upstream: &Registry,
        user: &str,
        pass: &str,
        part: &'static str,
        base: String,
    ) -> Self {
        Self::start_full(upstream, user, pass, 0, None, Some((part, base))).await
    }

    async fn start_full(
        upstream: &Registry,
        user: &str,
        pass: &str,
        fail_manifests: usize,
        realm: Option<String>,
        redirect: Option<(&'static str, String)>,
    ) -> Self {
        use base64::Engine as _;
        wasmgate_fetcher::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = format!("http://{}", upstream.host());
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let manifest_requests = Arc::new(AtomicUsize::new(0));
        let token_requests = Arc::new(AtomicUsize::new(0));
        let blob_requests = Arc::new(AtomicUsize::new(0));
        let (manifests, tokens, blobs) = (
            manifest_requests.clone(),
            token_requests.clone(),
            blob_requests.clone(),
        );
        let client = reqwest::Client::new();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, basic) = (client.clone(), upstream.clone(), basic.clone());
                let (realm, redirect) = (realm.clone(), redirect.clone());
                let (manifests, tokens, blobs) = (manifests.clone(), tokens.clone(), blobs.clone());
                tokio::spawn(async move {
                    // One request per connection keeps the parser trivial. A TLS ClientHello
                    // (0x16) is dropped at once, as a plain HTTP server would refuse it.
                    let mut first = [0u8; 1];
                    if sock.peek(&mut first).await.is_err() || first[0] == 0x16 {
                        return;
                    }
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let mut lines = head.split("\r\n");
                    let first = lines.next().unwrap_or_default().to_owned();
                    let mut parts = first.split_whitespace();
                    let (method, target) = (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().unwrap_or("/").to_owned(),
                    );
                    let header = |name: &str| {
                        head.split("\r\n")
                            .find_map(|l| {
                                l.split_once(':')
                                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                            })
                            .map(|(_, v)| v.trim().to_owned())
                    };
                    let blob_get = method == "GET" && target.contains("/blobs/");
                    if blob_get {
                        blobs.fetch_add(1, Ordering::SeqCst);
                    }
                    let authz = header("authorization").unwrap_or_default();
                    let accept = header("accept").unwrap_or_default();
                    let realm = realm
                        .clone()
                        .unwrap_or_else(|| format!("http://{addr}/token"));
                    let challenge = format!(
                        "www-authenticate: Bearer realm=\"{realm}\",service=\"wasmgate-test\"\r\n"
                    );
                    let (status, extra, body): (u16, String, Vec<u8>) = if target
                        .starts_with("/token")
                    {
                        tokens.fetch_add(1, Ordering::SeqCst);
                        if authz == basic {
                            (
                                200,
                                "content-type: application/json\r\n".into(),
                                format!("{{\"token\":\"{TOKEN}\"}}").into_bytes(),
                            )
                        } else {
                            (401, String::new(), b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad credentials\"}]}".to_vec())
                        }
                    } else if authz != format!("Bearer {TOKEN}") {
                        (401, challenge, b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}".to_vec())
                    } else if target.contains("/manifests/")
                        && manifests.fetch_add(1, Ordering::SeqCst) < fail_manifests
                    {
                        (503, String::new(), b"busy".to_vec())
                    } else if method == "GET"
                        && let Some((part, base)) = &redirect
                        && target.contains(part)
                    {
                        (307, format!("location: {base}{target}\r\n"), Vec::new())
                    } else {
                        let method = reqwest::Method::from_bytes(method.as_bytes())
                            .unwrap_or(reqwest::Method::GET);
                        match client
                            .request(method, format!("{upstream}{target}"))
                            .header("accept", accept)
                            .send()
                            .await
                        {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let mut extra = String::new();
                                for name in ["content-type", "docker-content-digest"] {
                                    if let Some(v) =
                                        resp.headers().get(name).and_then(|v| v.to_str().ok())
                                    {
                                        extra.push_str(&format!("{name}: {v}\r\n"));
                                    }
                                }
                                (
                                    status,
                                    extra,
                                    resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                                )
                            }
                            Err(_) => (502, String::new(), Vec::new()),
                        }
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self {
            addr,
            manifest_requests,
            token_requests,
            blob_requests,
            task,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.addr)
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}
