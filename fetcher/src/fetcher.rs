//! The fetch pipeline: URL → cache lookup → remote fetch → verify → cache → module.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use oci_client::secrets::RegistryAuth;
use tracing::{debug, info};

use crate::auth::{DockerConfig, credentials_for};
use crate::cache::{Cache, Key, NewModule, sha256_hex};
use crate::error::FetchError;
use crate::guard::Guard;
use crate::http::HttpFetcher;
use crate::location::{Location, OciLocation, is_sha256_hex};
use crate::metrics::{ConversionResult, Metrics};
use crate::oci::{OciFetcher, build_push_image};
use crate::options::FetcherOptions;
use crate::transport::{read_ca_bundle, redact_str};
use crate::unbox::is_wasm;

/// WasmPlugin `imagePullPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// `IfNotPresent`, except an `oci://` URL ending in `:latest`, which behaves as `Always`.
    #[default]
    Unspecified,
    /// Use the cached module for this URL if there is one.
    IfNotPresent,
    /// Pull again when the resource's version changes (not on every fetch).
    Always,
}

/// One module to fetch, from one WasmPlugin.
#[derive(Clone, Debug, Default)]
pub struct ModuleRequest {
    /// `oci://`, no scheme (= oci), `http://`, `https://` or `file://`.
    pub url: String,
    /// Expected hex sha256 (64 lowercase digits). For OCI the manifest digest (as Istio) or,
    /// beyond Istio, the digest of the `.wasm`; for HTTP the digest of the unpacked module.
    pub sha256: Option<String>,
    pub pull_policy: PullPolicy,
    /// The parsed `.dockerconfigjson` of the `imagePullSecret`, if any.
    pub pull_secret: Option<DockerConfig>,
    /// `namespace.name` of the WasmPlugin; with `resource_version`, drives `Always`.
    pub resource: String,
    /// The WasmPlugin's resource version (any string that changes when the resource does).
    pub resource_version: String,
}

impl ModuleRequest {
    /// A request with the default policy, no checksum and no secret.
    pub fn new(url: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            resource: resource.into(),
            ..Self::default()
        }
    }
}

/// A verified module.
#[derive(Clone, Debug)]
pub struct Module {
    /// The module; always starts with `\0asm`.
    pub bytes: Arc<[u8]>,
    /// Hex sha256 of `bytes`.
    pub wasm_sha256: String,
    /// `sha256:<hex>` of the image manifest, for OCI modules.
    pub manifest_digest: Option<String>,
    /// The cache file holding `bytes` (the file itself for `file://`).
    pub path: PathBuf,
    /// The URL as requested.
    pub url: String,
}

/// How `push` packages a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushFormat {
    /// Wasm artifact: config `application/vnd.module.wasm.config.v1+json`, module in a layer
    /// `application/vnd.module.wasm.content.layer.v1+wasm`.
    Artifact,
    /// Docker image: one `tar.gzip` layer holding `plugin.wasm`.
    Image,
}

/// Fetches, verifies and caches modules. Cheap to clone; share one per process (it reuses
/// registry clients and HTTP connections).
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    opts: FetcherOptions,
    guard: Guard,
    cache: Cache,
    http: HttpFetcher,
    oci: OciFetcher,
    metrics: Metrics,
    /// One lock per (url, sha256) in flight: concurrent fetches of a module share one download.
    inflight: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Fetcher {
    /// Opens the cache directory (loading its index) and builds the HTTP clients.
    ///
    /// Errors: `Cache` if the directory cannot be created, `Setup` if the CA bundle cannot be
    /// read or parsed. Installs ring as the rustls provider unless the process already has one.
    pub fn new(opts: FetcherOptions) -> Result<Self, FetchError> {
        // reqwest panics when building a client without a process-wide provider; installing ring
        // is a no-op when the process already chose one.
        crate::install_crypto_provider();
        let guard = Guard::new(opts.blocked_cidrs.clone());
        let ca = read_ca_bundle(&opts)?;
        let cache = Cache::open(&opts.cache_dir)?;
        let http = HttpFetcher::new(&opts, &guard, &ca)?;
        let oci = OciFetcher::new(&ca, guard.clone(), http.clients());
        let metrics = Metrics::new();
        metrics.entries.set(cache.entries() as i64);
        Ok(Self {
            inner: Arc::new(Inner {
                opts,
                guard,
                cache,
                http,
                oci,
                metrics,
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options this fetcher was built with.
    pub fn options(&self) -> &FetcherOptions {
        &self.inner.opts
    }

    /// Registers the metrics (Istio's names, see `docs/fetching.md`) in `registry`.
    pub fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        self.inner.metrics.register(registry)
    }

    /// Records one WasmPlugin conversion (Istio's `istio_agent_wasm_config_conversion_count` and
    /// `…_duration` in ms). The gateway calls it; the metrics live here with the other
    /// `istio_agent_wasm_*` ones.
    pub fn record_conversion(&self, result: ConversionResult, elapsed: std::time::Duration) {
        let m = &self.inner.metrics;
        m.conversion.with_label_values(&[result.as_str()]).inc();
        m.conversion_ms.observe(elapsed.as_secs_f64() * 1000.0);
    }

    /// Returns the module `req` names, from the cache when Istio's rules allow, else from its
    /// source, verified.
    ///
    /// Bounded by [`FetcherOptions::fetch_timeout`]. Cancel-safe: dropping the future abandons the
    /// fetch without leaving partial files, and a later call starts over (or joins a download
    /// another caller still runs). A failed fetch caches nothing, so calling again retries.
    pub async fn fetch(&self, req: &ModuleRequest) -> Result<Module, FetchError> {
        let started = Instant::now();
        let result = self.fetch_inner(req).await;
        let shown = redact_str(&req.url);
        self.inner
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(m) => {
                debug!(target: "wasmgate::fetcher", url = %shown, sha256 = %m.wasm_sha256, elapsed = ?started.elapsed(), "module ready")
            }
            Err(e) => {
                info!(target: "wasmgate::fetcher", url = %shown, error = %e, "module fetch failed")
            }
        }
        result
    }

    async fn fetch_inner(&self, req: &ModuleRequest) -> Result<Module, FetchError> {
        let loc = Location::parse(&req.url)?;
        let expected = match req.sha256.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let s = s.to_ascii_lowercase();
                if !is_sha256_hex(&s) {
                    return Err(FetchError::Url {
                        url: redact_str(&req.url),
                        reason: "sha256 must be 64 hex digits".to_owned(),
                    });
                }
                Some(s)
            }
        };
        let remote = match &loc {
            Location::File(path) => return self.fetch_file(req, path, expected.as_deref()).await,
            Location::Http(url) => Remote::Http(url),
            Location::Oci(oci) => Remote::Oci(oci),
        };
        let flight = self.flight(&format!(
            "{}\n{}",
            req.url,
            expected.as_deref().unwrap_or("")
        ));
        let timeout = self.inner.opts.fetch_timeout;
        let outcome = tokio::time::timeout(timeout, async {
            let _turn = flight.lock().await;
            self.fetch_remote(req, &loc, remote, expected.as_deref())
                .await
        })
        .await;
        drop(flight);
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.strong_count() > 0);
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.inner.metrics.remote("download_failure");
                Err(FetchError::Timeout {
                    url: redact_str(&req.url),
                    after: timeout,
                })
            }
        }
    }

    fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        let fresh = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&fresh));
        fresh
    }

    async fn fetch_remote(
        &self,
        req: &ModuleRequest,
        loc: &Location,
        remote: Remote<'_>,
        expected: Option<&str>,
    ) -> Result<Module, FetchError> {
        let inner = &*self.inner;
        let name = loc.module_name(&req.url);
        let (is_oci, url_digest) = match remote {
            Remote::Oci(o) => (true, o.url_digest.as_deref()),
            Remote::Http(_) => (false, None),
        };
        let ignore_resource_version = match req.pull_policy {
            PullPolicy::Always => false,
            PullPolicy::IfNotPresent => true,
            PullPolicy::Unspecified => !(is_oci && req.url.ends_with(":latest")),
        };
        let key = Key {
            url: &req.url,
            name: &name,
            checksum: expected.or(url_digest),
            resource: &req.resource,
            resource_version: &req.resource_version,
            ignore_resource_version,
        };
        let hit = inner.cache.lookup(&key);
        inner.metrics.lookup(hit.is_some());
        if let Some(hit) = hit
            && let Some(bytes) = inner.cache.read(&hit).await?
        {
            return Ok(Module {
                bytes: bytes.into(),
                wasm_sha256: hit.wasm,
                manifest_digest: hit.manifest_digest,
                path: hit.path,
                url: req.url.clone(),
            });
        }

        let result = match remote {
            Remote::Http(url) => self.fetch_http(req, url, &name, expected).await,
            Remote::Oci(oci) => self.fetch_oci(req, oci, &name, expected).await,
        };
        match &result {
            Ok((m, Fetched::Downloaded)) => {
                inner.metrics.remote("success");
                inner.metrics.bytes.inc_by(m.bytes.len() as u64);
            }
            Ok((_, Fetched::AlreadyCached)) => {}
            Err(e) => inner.metrics.remote(e.metric_result()),
        }
        inner.metrics.entries.set(inner.cache.entries() as i64);
        result.map(|(m, _)| m)
    }

    async fn fetch_http(
        &self,
        req: &ModuleRequest,
        url: &reqwest::Url,
        name: &str,
        expected: Option<&str>,
    ) -> Result<(Module, Fetched), FetchError> {
        let inner = &*self.inner;
        let wasm = inner.http.fetch(&inner.opts, &inner.guard, url).await?;
        let actual = sha256_hex(&wasm);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(FetchError::ChecksumMismatch {
                url: crate::transport::redact_url(url),
                expected: expected.to_owned(),
                actual,
            });
        }
        check_magic(&crate::transport::redact_url(url), &wasm)?;
        let path = inner
            .cache
            .insert(NewModule {
                url: &req.url,
                name,
                checksums: &[actual.as_str()],
                url_checksum: Some(actual.as_str()),
                resource: &req.resource,
                resource_version: &req.resource_version,
                wasm: &wasm,
                wasm_hex: &actual,
                manifest_digest: None,
            })
            .await?;
        Ok((
            Module {
                bytes: wasm.into(),
                wasm_sha256: actual,
                manifest_digest: None,
                path,
                url: req.url.clone(),
            },
            Fetched::Downloaded,
        ))
    }

    async fn fetch_oci(
        &self,
        req: &ModuleRequest,
        oci: &OciLocation,
        name: &str,
        expected: Option<&str>,
    ) -> Result<(Module, Fetched), FetchError> {
        let inner = &*self.inner;
        let opts = &inner.opts;
        let auth = self.auth_for(oci, req.pull_secret.as_ref())?;
        let registry_host = oci.reference.resolve_registry();
        let (host, port) = split_host_port(registry_host);
        inner
            .guard
            .check_host(&req.url, host, port.unwrap_or(443))
            .await?;

        let resolved = inner.oci.resolve(opts, oci, &auth).await?;
        let manifest_hex = strip_sha256(&resolved.digest).to_owned();
        let index_hex = resolved.index_digest.as_deref().map(strip_sha256);
        // Istio does not keep `checksums` for URLs pinned by digest.
        let remember = !req.url.contains('@');

        if expected.is_none() {
            // Istio's second chance: the tag resolved to a manifest we already have.
            let hit = inner.cache.lookup_exact(name, &manifest_hex);
            inner.metrics.lookup(hit.is_some());
            if let Some(hit) = hit
                && let Some(bytes) = inner.cache.read(&hit).await?
            {
                if remember {
                    inner.cache.remember_url(
                        &req.url,
                        name,
                        &manifest_hex,
                        &req.resource,
                        &req.resource_version,
                    );
                }
                let module = Module {
                    bytes: bytes.into(),
                    wasm_sha256: hit.wasm,
                    manifest_digest: Some(resolved.digest.clone()),
                    path: hit.path,
                    url: req.url.clone(),
                };
                return Ok((module, Fetched::AlreadyCached));
            }
        }

        let wasm = inner.oci.module(opts, oci, &auth, &resolved).await?;
        let wasm_hex = sha256_hex(&wasm);
        if let Some(expected) = expected {
            let matches = expected == manifest_hex
                || Some(expected) == index_hex
                // Beyond Istio: the digest of the module itself.
                || expected == wasm_hex;
            if !matches {
                return Err(FetchError::ChecksumMismatch {
                    url: req.url.clone(),
                    expected: expected.to_owned(),
                    actual: manifest_hex,
                });
            }
        }
        check_magic(&req.url, &wasm)?;
        let mut keys: Vec<&str> = vec![manifest_hex.as_str(), wasm_hex.as_str()];
        keys.extend(index_hex);
        let path = inner
            .cache
            .insert(NewModule {
                url: &req.url,
                name,
                checksums: &keys,
                url_checksum: remember.then_some(manifest_hex.as_str()),
                resource: &req.resource,
                resource_version: &req.resource_version,
                wasm: &wasm,
                wasm_hex: &wasm_hex,
                manifest_digest: Some(&resolved.digest),
            })
            .await?;
        Ok((
            Module {
                bytes: wasm.into(),
                wasm_sha256: wasm_hex,
                manifest_digest: Some(resolved.digest),
                path,
                url: req.url.clone(),
            },
            Fetched::Downloaded,
        ))
    }

    /// `file://`: read, check the magic and, beyond Istio (which ignores it), the `sha256` if
    /// given. Not cached: the file is already local.
    async fn fetch_file(
        &self,
        req: &ModuleRequest,
        path: &std::path::Path,
        expected: Option<&str>,
    ) -> Result<Module, FetchError> {
        let limit = self.inner.opts.max_module_size;
        let file_err = |source| FetchError::File {
            path: path.to_owned(),
            source,
        };
        let meta = tokio::fs::metadata(path).await.map_err(file_err)?;
        if meta.len() > limit {
            return Err(FetchError::TooLarge {
                url: req.url.clone(),
                limit,
            });
        }
        let bytes = tokio::fs::read(path).await.map_err(file_err)?;
        check_magic(&req.url, &bytes)?;
        let actual = sha256_hex(&bytes);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(FetchError::ChecksumMismatch {
                url: req.url.clone(),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(Module {
            bytes: bytes.into(),
            wasm_sha256: actual,
            manifest_digest: None,
            path: path.to_owned(),
            url: req.url.clone(),
        })
    }

    fn auth_for(
        &self,
        oci: &OciLocation,
        secret: Option<&DockerConfig>,
    ) -> Result<RegistryAuth, FetchError> {
        credentials_for(&oci.registry, secret, &self.inner.opts.docker_config)
    }

    /// Deletes cache entries unused for [`FetcherOptions::module_expiry`]; returns how many
    /// module files were removed.
    pub async fn purge_expired(&self) -> usize {
        let inner = self.inner.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let removed = inner.cache.purge(inner.opts.module_expiry);
            inner.metrics.entries.set(inner.cache.entries() as i64);
            removed
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            info!(target: "wasmgate::fetcher", removed, "purged expired Wasm modules");
        }
        removed
    }

    /// Spawns the purge loop (every [`FetcherOptions::purge_interval`]) on the current tokio
    /// runtime. It ends by itself once every clone of this fetcher is dropped.
    pub fn spawn_purge_task(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.opts.purge_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { break };
                Fetcher { inner }.purge_expired().await;
            }
        })
    }

    /// Packages `module` as `format` and pushes it to `reference` (`oci://` optional). Returns
    /// the manifest digest (`sha256:<hex>`), the value for a WasmPlugin's `sha256` (without the
    /// prefix). Credentials: `credentials` if given, else the docker config file, else anonymous.
    pub async fn push(
        &self,
        module: &[u8],
        reference: &str,
        format: PushFormat,
        credentials: Option<&DockerConfig>,
    ) -> Result<String, FetchError> {
        let inner = &*self.inner;
        check_magic(reference, module)?;
        let oci = match Location::parse(reference)? {
            Location::Oci(oci) => oci,
            _ => {
                return Err(FetchError::Url {
                    url: reference.to_owned(),
                    reason: "push needs an oci:// reference".to_owned(),
                });
            }
        };
        let auth = self.auth_for(&oci, credentials)?;
        let (host, port) = split_host_port(oci.reference.resolve_registry());
        inner
            .guard
            .check_host(reference, host, port.unwrap_or(443))
            .await?;
        let image = build_push_image(module, format).map_err(|e| FetchError::Push {
            reference: reference.to_owned(),
            detail: format!("packaging the module: {e}"),
        })?;
        let push = inner.oci.push(&inner.opts, &oci, &auth, image);
        tokio::time::timeout(
            inner.opts.fetch_timeout.max(inner.opts.request_timeout),
            push,
        )
        .await
        .map_err(|_| FetchError::Timeout {
            url: reference.to_owned(),
            after: inner.opts.fetch_timeout,
        })?
    }
}

/// The sources that go through the cache.
#[derive(Clone, Copy)]
enum Remote<'a> {
    Http(&'a reqwest::Url),
    Oci(&'a OciLocation),
}

/// Whether a fetch downloaded the module or found it cached after resolving the manifest.
enum Fetched {
    Downloaded,
    AlreadyCached,
}

fn strip_sha256(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// `host:port`, `[v6]:port` or `host` → (host, port).
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

fn check_magic(url: &str, bytes: &[u8]) -> Result<(), FetchError> {
    if is_wasm(bytes) {
        Ok(())
    } else {
        Err(FetchError::InvalidModule {
            url: url.to_owned(),
            reason: "it does not start with the Wasm magic \\0asm".to_owned(),
        })
    }
}
