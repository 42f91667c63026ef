//! OCI registries (istio-wasm.md §2.5): resolve the manifest first, decide the image format
//! from media types, then stream only the layer that holds the module.
//!
//! Every request of a pull (the `/v2/` probe, the token, the manifests, the blob and each
//! redirect, e.g. a blob's to object storage) goes through the guarded reqwest client, so the
//! guard checks every connection at dial time (istio-wasm.md §2.3). `oci-client` gives the
//! reference parser, the manifest types and the push (`wasmgate push`, run by the operator): its
//! own reqwest client takes no resolver or redirect policy, so it makes no request of a fetch.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, ImageIndexEntry,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use tracing::debug;

use crate::auth::fingerprint;
use crate::error::FetchError;
use crate::guard::Guard;
use crate::location::OciLocation;
use crate::options::{
    DEFAULT_TOKEN_LIFETIME, FetcherOptions, MAX_ERROR_BODY, MAX_MANIFEST_SIZE, MAX_TOKEN_RESPONSE,
};
use crate::transport::{blocked, error_chain, read_limited, with_retries};
use crate::unbox::module_from_tar_gz;

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// proxy-wasm's artifact media types (solo-io wasm spec "oci" variant). Not oci-client's
/// `WASM_LAYER_MEDIA_TYPE`, which is the CNCF wasm type.
pub(crate) const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub(crate) const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";

/// The manifest kinds a pull accepts (oci-client's list).
const MANIFEST_TYPES: [&str; 4] = [
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
];

/// The manifest a reference resolved to.
pub(crate) struct Resolved {
    pub manifest: OciImageManifest,
    /// `sha256:<hex>` of the image manifest (Istio's checksum for OCI).
    pub digest: String,
    /// `sha256:<hex>` of the index the reference named, for multi-arch references.
    pub index_digest: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    registry: String,
    plain_http: bool,
    insecure: bool,
    auth: String,
}

/// Pulls through the guarded clients; pushes through oci-client.
pub(crate) struct OciFetcher {
    ca: Vec<Certificate>,
    /// oci-client push clients, one per (registry, transport, credential): oci-client keeps one
    /// credential per registry for a client's life, and building a client costs ~170 ms, so
    /// they are reused.
    clients: Mutex<HashMap<ClientKey, Client>>,
    /// Insecure-listed registries found to speak plain HTTP.
    plain_http: Mutex<HashSet<String>>,
    guard: Guard,
    /// Guarded HTTP clients (verifying, insecure): every request of a pull.
    guarded: (reqwest::Client, reqwest::Client),
    /// (registry, plain HTTP) → its authentication challenge, realm already checked.
    challenges: Mutex<HashMap<(String, bool), Challenge>>,
    /// Pull tokens and when to stop using them.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    registry: String,
    repository: String,
    /// [`fingerprint`] of the credential the token was issued for.
    auth: String,
}

/// A token server's answer (Docker token authentication spec).
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The start of a manifest, checked before it is parsed (as oci-client does).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: i32,
    media_type: Option<String>,
}

/// Which request of a pull failed: decides the error's variant (and so Istio's metric label).
#[derive(Clone, Copy)]
enum Stage {
    Manifest,
    Blob,
}

impl Stage {
    /// No answer, or a body that broke off: worth retrying.
    fn transport(self, what: &str, detail: String) -> FetchError {
        match self {
            Stage::Manifest => FetchError::Manifest {
                reference: what.to_owned(),
                status: None,
                detail,
            },
            Stage::Blob => FetchError::Download {
                url: what.to_owned(),
                status: None,
                detail,
            },
        }
    }

    /// A failure the registry reported, classified as oci-client's errors are.
    fn registry(self, what: &str, e: OciDistributionError) -> FetchError {
        match self {
            Stage::Manifest => manifest_error(what, e),
            Stage::Blob => download_error(what, e),
        }
    }

    /// A request that got no answer: refused by the guard (naming what it refused), or a
    /// transport failure.
    fn send_error(self, what: &str, e: reqwest::Error) -> FetchError {
        blocked(&e).unwrap_or_else(|| self.transport(what, error_chain(&e.without_url())))
    }
}

/// How a registry asks for credentials on `/v2/` (distribution's token authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    /// No `WWW-Authenticate`: anonymous access.
    None,
    /// Anything but a usable bearer challenge: basic credentials, as oci-client falls back.
    Basic,
    /// Ask `realm` for a token.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// How one attempt reaches the registry (see `OciFetcher::with_client`).
#[derive(Clone, Copy)]
struct Transport {
    plain_http: bool,
    insecure: bool,
}

impl Transport {
    fn scheme(self) -> &'static str {
        if self.plain_http { "http" } else { "https" }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Picks a usable manifest from a multi-arch index: a wasm/wasi platform, else linux/amd64
/// (go-containerregistry's default, which Istio uses), else the first entry.
fn pick_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    let platform = |e: &ImageIndexEntry| {
        e.platform
            .as_ref()
            .map(|p| (p.os.to_string(), p.architecture.to_string()))
    };
    entries
        .iter()
        .find(|e| {
            platform(e).is_some_and(|(os, arch)| os.starts_with("wasi") || arch.starts_with("wasm"))
        })
        .or_else(|| {
            entries
                .iter()
                .find(|e| platform(e).is_some_and(|(os, arch)| os == "linux" && arch == "amd64"))
        })
        .or_else(|| entries.first())
        .map(|e| e.digest.clone())
}

impl OciFetcher {
    pub(crate) fn new(
        ca_pem: &[u8],
        guard: Guard,
        guarded: (reqwest::Client, reqwest::Client),
    ) -> Self {
        let ca = if ca_pem.is_empty() {
            Vec::new()
        } else {
            vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: ca_pem.to_vec(),
            }]
        };
        Self {
            ca,
            clients: Mutex::new(HashMap::new()),
            plain_http: Mutex::new(HashSet::new()),
            guard,
            guarded,
            challenges: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn guarded_client(&self, insecure: bool) -> &reqwest::Client {
        if insecure {
            &self.guarded.1
        } else {
            &self.guarded.0
        }
    }

    /// The registry's authentication challenge, asked once per registry through the guarded
    /// client. A realm that is not http(s) or points at a refused address is refused here
    /// (Istio's SSRF guard on token realms), before any token request, ours or oci-client's
    /// when pushing.
    async fn challenge(
        &self,
        registry: &str,
        plain_http: bool,
        insecure: bool,
    ) -> Result<Challenge, FetchError> {
        let key = (registry.to_owned(), plain_http);
        if let Some(known) = lock(&self.challenges).get(&key) {
            return Ok(known.clone());
        }
        let scheme = if plain_http { "http" } else { "https" };
        let url = format!("{scheme}://{registry}/v2/");
        let resp = self
            .guarded_client(insecure)
            .get(&url)
            .send()
            .await
            .map_err(|e| {
                blocked(&e).unwrap_or_else(|| FetchError::Manifest {
                    reference: registry.to_owned(),
                    status: None,
                    detail: error_chain(&e.without_url()),
                })
            })?;
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map_or(Challenge::None, parse_challenge);
        if let Challenge::Bearer { realm, .. } = &challenge {
            let blocked = |reason: String| FetchError::Blocked {
                url: registry.to_owned(),
                reason,
            };
            let parsed = reqwest::Url::parse(realm)
                .map_err(|_| blocked(format!("token realm {realm:?} is not a URL")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(blocked(format!("token realm {realm:?} is not http(s)")));
            }
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port_or_known_default().unwrap_or(443);
            self.guard
                .check_host(realm, host, port)
                .await
                .map_err(|e| match e {
                    FetchError::Blocked { reason, .. } => {
                        blocked(format!("token realm {realm}: {reason}"))
                    }
                    other => other,
                })?;
        }
        lock(&self.challenges).insert(key, challenge.clone());
        Ok(challenge)
    }

    /// GETs `url` of `reference`'s repository with the registry's credentials. A cached token
    /// the registry no longer accepts (401) is replaced once.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        stage: Stage,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        what: &str,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, FetchError> {
        let client = self.guarded_client(transport.insecure);
        let request = || {
            let r = client.get(url);
            match accept {
                Some(a) => r.header(reqwest::header::ACCEPT, a),
                None => r,
            }
        };
        let (authorized, cached) = self
            .authorize(request(), stage, transport, reference, auth, what)
            .await?;
        let resp = authorized
            .send()
            .await
            .map_err(|e| stage.send_error(what, e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED || !cached {
            return Ok(resp);
        }
        lock(&self.tokens).remove(&token_key(reference, auth));
        let (authorized, _) = self
            .authorize(request(), stage, transport, reference, auth, what)
            .await?;
        authorized
            .send()
            .await
            .map_err(|e| stage.send_error(what, e))
    }

    /// Adds the registry's credentials to a request for `reference`, as oci-client would: a
    /// given bearer token as is; basic credentials when the registry asks for basic; else a
    /// pull token from the challenge's realm (cached until shortly before it expires). Also
    /// says whether the token came from the cache.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        stage: Stage,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        what: &str,
    ) -> Result<(reqwest::RequestBuilder, bool), FetchError> {
        if let RegistryAuth::Bearer(token) = auth {
            return Ok((request.bearer_auth(token), false));
        }
        let registry = reference.resolve_registry();
        let challenge = self
            .challenge(registry, transport.plain_http, transport.insecure)
            .await?;
        let (realm, service) = match (challenge, auth) {
            (Challenge::Basic, RegistryAuth::Basic(user, pass)) => {
                return Ok((request.basic_auth(user, Some(pass)), false));
            }
            (Challenge::None | Challenge::Basic, _) => return Ok((request, false)),
            (Challenge::Bearer { realm, service }, _) => (realm, service),
        };
        let key = token_key(reference, auth);
        let cached = lock(&self.tokens)
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(token, _)| token.clone());
        if let Some(token) = cached {
            return Ok((request.bearer_auth(token), true));
        }
        let mut query = vec![(
            "scope",
            format!("repository:{}:pull", reference.repository()),
        )];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut ask = self
            .guarded_client(transport.insecure)
            .get(&realm)
            .query(&query);
        if let RegistryAuth::Basic(user, pass) = auth {
            ask = ask.basic_auth(user, Some(pass));
        }
        let resp = ask.send().await.map_err(|e| stage.send_error(what, e))?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let detail = format!("the token server answered {status}");
            let e = if status.is_server_error() {
                OciDistributionError::ServerError {
                    code: status.as_u16(),
                    url: realm,
                    message: detail,
                }
            } else {
                OciDistributionError::AuthenticationFailure(detail)
            };
            return Err(stage.registry(what, e));
        }
        let body = read_body(stage, resp, MAX_TOKEN_RESPONSE, what).await?;
        let not_a_token = |detail: String| FetchError::Auth {
            reference: what.to_owned(),
            detail: format!("the token server's answer is not a token: {detail}"),
        };
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| not_a_token(e.to_string()))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| not_a_token("no token".to_owned()))?;
        // Stop using it a little early: a token that expires in flight costs a failed request.
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .mul_f64(0.9);
        lock(&self.tokens).insert(key, (token.clone(), Instant::now() + lifetime));
        Ok((request.bearer_auth(token), false))
    }

    fn client(&self, opts: &FetcherOptions, key: ClientKey) -> Result<Client, FetchError> {
        if let Some(c) = lock(&self.clients).get(&key) {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            protocol: if key.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: key.insecure,
            extra_root_certificates: self.ca.clone(),
            platform_resolver: Some(Box::new(pick_platform)),
            read_timeout: Some(opts.request_timeout),
            connect_timeout: Some(opts.request_timeout),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| FetchError::Setup(format!("registry client: {}", error_chain(&e))))?;
        lock(&self.clients).insert(key, client.clone());
        Ok(client)
    }

    /// Runs `op` with how to reach the registry. For an insecure-listed registry that does not
    /// speak TLS, falls back to plain HTTP once and remembers it (Istio's `name.Insecure` retry,
    /// but only for listed registries).
    async fn with_registry<T, F, Fut>(
        &self,
        opts: &FetcherOptions,
        registry: &str,
        op: F,
    ) -> Result<T, FetchError>
    where
        F: Fn(Transport) -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        let insecure = opts.is_insecure(registry);
        // The host requests go to (`docker.io` becomes `index.docker.io`).
        let endpoint = registry_endpoint(registry);
        let attempt = |plain_http: bool| {
            let op = &op;
            async move {
                self.challenge(endpoint, plain_http, insecure).await?;
                op(Transport {
                    plain_http,
                    insecure,
                })
                .await
            }
        };
        let known_plain = insecure && lock(&self.plain_http).contains(registry);
        let result = attempt(known_plain).await;
        match result {
            Err(e) if insecure && !known_plain && is_transport(&e) => {
                debug!(target: "wasmgate::fetcher", %registry, error = %e, "TLS failed on an insecure registry; trying plain HTTP");
                let plain = attempt(true).await;
                if plain.is_ok() {
                    lock(&self.plain_http).insert(registry.to_owned());
                }
                plain
            }
            other => other,
        }
    }

    /// Fetches and resolves the manifest (through an index if needed), with retries.
    pub(crate) async fn resolve(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
    ) -> Result<Resolved, FetchError> {
        let shown_owned = loc.reference.whole();
        let shown = shown_owned.as_str();
        with_retries(opts, shown, move || {
            self.with_registry(opts, &loc.registry, move |transport| async move {
                let reference = &loc.reference;
                let (manifest, digest) = self.manifest(transport, reference, auth, shown).await?;
                let index = match manifest {
                    OciManifest::Image(m) => {
                        return Ok(Resolved {
                            manifest: m,
                            digest,
                            index_digest: None,
                        });
                    }
                    OciManifest::ImageIndex(index) => index,
                };
                let chosen =
                    pick_platform(&index.manifests).ok_or_else(|| FetchError::Manifest {
                        reference: shown.to_owned(),
                        status: Some(200),
                        detail: "the image index lists no manifests".to_owned(),
                    })?;
                let inner_reference = reference.clone_with_digest(chosen);
                let (inner, inner_digest) = self
                    .manifest(transport, &inner_reference, auth, shown)
                    .await?;
                match inner {
                    OciManifest::Image(m) => Ok(Resolved {
                        manifest: m,
                        digest: inner_digest,
                        index_digest: Some(digest),
                    }),
                    OciManifest::ImageIndex(_) => Err(FetchError::Manifest {
                        reference: shown.to_owned(),
                        status: Some(200),
                        detail: "nested image indexes are not supported".to_owned(),
                    }),
                }
            })
        })
        .await
    }

    /// One GET of a manifest, checked as oci-client checks it: against the reference's digest
    /// and the `Docker-Content-Digest` header, schema version 2 and a known media type. Returns
    /// the manifest and its digest.
    async fn manifest(
        &self,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        shown: &str,
    ) -> Result<(OciManifest, String), FetchError> {
        let stage = Stage::Manifest;
        let tag = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = v2_url(transport, reference, &format!("manifests/{tag}"));
        let accept = MANIFEST_TYPES.join(", ");
        let resp = self
            .send(
                stage,
                transport,
                reference,
                auth,
                shown,
                &url,
                Some(&accept),
            )
            .await?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let body = error_body(resp).await;
            return Err(stage.registry(shown, registry_answer(status, &body, &url)));
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let body = read_body(stage, resp, MAX_MANIFEST_SIZE, shown).await?;
        // The header, when present, is the canonical digest (oci-client's `validate_digest`).
        let mut digest = None;
        for expected in [reference.digest(), header_digest.as_deref()]
            .into_iter()
            .flatten()
        {
            check_digest(&body, expected).map_err(|e| stage.registry(shown, e))?;
            digest = Some(expected.to_owned());
        }
        let digest = digest.unwrap_or_else(|| crate::cache::sha256_prefixed(&body));
        let unusable = |e| stage.registry(shown, e);
        let versioned: Versioned = serde_json::from_slice(&body)
            .map_err(|e| unusable(OciDistributionError::VersionedParsingError(e.to_string())))?;
        if versioned.schema_version != 2 {
            return Err(unusable(
                OciDistributionError::UnsupportedSchemaVersionError(versioned.schema_version),
            ));
        }
        if let Some(media_type) = versioned.media_type
            && !MANIFEST_TYPES.contains(&media_type.as_str())
        {
            return Err(unusable(OciDistributionError::UnsupportedMediaTypeError(
                media_type,
            )));
        }
        let manifest = serde_json::from_slice(&body)
            .map_err(|e| unusable(OciDistributionError::ManifestParsingError(e.to_string())))?;
        Ok((manifest, digest))
    }

    /// Downloads the layer holding the module and extracts it, per Istio's format order:
    /// Docker image, OCI image, Wasm artifact.
    pub(crate) async fn module(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
        resolved: &Resolved,
    ) -> Result<Vec<u8>, FetchError> {
        let shown = loc.reference.whole();
        let m = &resolved.manifest;
        let limit = opts.max_module_size;
        let last = m.layers.last();
        let is_docker = m.media_type.as_deref() == Some(DOCKER_MANIFEST);
        let mut failures = Vec::new();

        // 1. Docker image: the last layer must be a gzipped tar holding plugin.wasm.
        if is_docker {
            match last {
                Some(l) if l.media_type == DOCKER_LAYER_GZIP => {
                    let layer = self.blob(opts, loc, auth, l).await?;
                    return module_from_tar_gz(&layer, limit, &shown);
                }
                Some(l) => failures.push(format!(
                    "Docker image: last layer has media type {:?}, want {DOCKER_LAYER_GZIP:?}",
                    l.media_type
                )),
                None => failures.push("Docker image: no layers".to_owned()),
            }
        }
        // 2. OCI image.
        match last {
            Some(l) if l.media_type == OCI_LAYER_GZIP => {
                let layer = self.blob(opts, loc, auth, l).await?;
                return module_from_tar_gz(&layer, limit, &shown);
            }
            Some(l) => failures.push(format!(
                "OCI image: last layer has media type {:?}, want {OCI_LAYER_GZIP:?}",
                l.media_type
            )),
            None => failures.push("OCI image: no layers".to_owned()),
        }
        // 3. Wasm artifact: the raw module in the layer of the proxy-wasm media type. Istio
        // wants exactly two layers; beyond Istio, any manifest with exactly one such layer.
        let wasm_layers: Vec<&OciDescriptor> = m
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER)
            .collect();
        match wasm_layers.as_slice() {
            [l] => return self.blob(opts, loc, auth, l).await,
            [] => failures.push(format!(
                "Wasm artifact: no layer of media type {WASM_LAYER:?}"
            )),
            _ => failures.push(format!(
                "Wasm artifact: several layers of media type {WASM_LAYER:?}"
            )),
        }
        Err(FetchError::InvalidModule {
            url: shown,
            reason: format!(
                "not a Wasm image in any supported format: {}",
                failures.join("; ")
            ),
        })
    }

    /// Streams one blob with retries, verifying its digest and bounding its size.
    async fn blob(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
        layer: &OciDescriptor,
    ) -> Result<Vec<u8>, FetchError> {
        let what = format!("{} blob {}", loc.reference.whole(), layer.digest);
        let limit = opts.max_module_size;
        if layer.size < 0 || layer.size as u64 > limit {
            return Err(FetchError::TooLarge { url: what, limit });
        }
        let what = what.as_str();
        with_retries(opts, what, move || {
            self.with_registry(opts, &loc.registry, move |transport| {
                self.download_blob(transport, &loc.reference, auth, layer, limit, what)
            })
        })
        .await
    }

    /// One GET of a blob through the guarded client: every connection, the registry's and each
    /// redirect's (object storage), is checked by the guard. Credentials go to the registry
    /// only: reqwest drops `Authorization` on a redirect to another host. The descriptor's
    /// `urls` (foreign layers) are not followed.
    async fn download_blob(
        &self,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        layer: &OciDescriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, FetchError> {
        let stage = Stage::Blob;
        let url = v2_url(transport, reference, &format!("blobs/{}", layer.digest));
        let resp = self
            .send(stage, transport, reference, auth, what, &url, None)
            .await?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let body = error_body(resp).await;
            return Err(stage.registry(what, registry_answer(status, &body, &url)));
        }
        let declared = resp.content_length();
        let data = read_limited(resp.bytes_stream(), declared, limit, what).await?;
        if data.len() as u64 != layer.size as u64 {
            return Err(FetchError::Download {
                url: what.to_owned(),
                status: None,
                detail: format!(
                    "blob has {} bytes, the manifest says {}",
                    data.len(),
                    layer.size
                ),
            });
        }
        check_digest(&data, &layer.digest).map_err(|e| stage.registry(what, e))?;
        Ok(data)
    }

    /// Pushes `layers` + `config` and a manifest of `manifest_media_type`; returns the manifest
    /// digest.
    pub(crate) async fn push(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
        image: PushImage,
    ) -> Result<String, FetchError> {
        let shown_owned = loc.reference.whole();
        let shown = shown_owned.as_str();
        let push_err = move |e: OciDistributionError| FetchError::Push {
            reference: shown.to_owned(),
            detail: oci_detail(&e),
        };
        let manifest = serde_json::to_vec(&image.manifest).map_err(|e| FetchError::Push {
            reference: shown.to_owned(),
            detail: e.to_string(),
        })?;
        let digest = crate::cache::sha256_prefixed(&manifest);
        let content_type =
            http::HeaderValue::from_str(&image.media_type).map_err(|e| FetchError::Push {
                reference: shown.to_owned(),
                detail: e.to_string(),
            })?;
        let (image, manifest, content_type) = (&image, &manifest, &content_type);
        let insecure = opts.is_insecure(&loc.registry);
        self.with_registry(opts, &loc.registry, move |transport| {
            let reference = loc.reference.clone();
            let client = self.client(
                opts,
                ClientKey {
                    registry: loc.registry.clone(),
                    plain_http: transport.plain_http,
                    insecure,
                    auth: fingerprint(auth),
                },
            );
            async move {
                let client = client?;
                client
                    .store_auth_if_needed(reference.resolve_registry(), auth)
                    .await;
                for (data, desc) in &image.blobs {
                    client
                        .push_blob(&reference, data.clone(), &desc.digest)
                        .await
                        .map_err(push_err)?;
                }
                client
                    .push_manifest_raw(&reference, manifest.clone(), content_type.clone())
                    .await
                    .map_err(push_err)?;
                Ok(())
            }
        })
        .await?;
        Ok(digest)
    }
}

/// A built image ready to push.
pub(crate) struct PushImage {
    pub media_type: String,
    pub manifest: OciImageManifest,
    /// Every blob (layers and config) with its descriptor.
    pub blobs: Vec<(bytes::Bytes, OciDescriptor)>,
}

/// oci-client's `Reference::resolve_registry` for a registry as written.
fn registry_endpoint(registry: &str) -> &str {
    match registry {
        "docker.io" | "" => "index.docker.io",
        other => other,
    }
}

/// A `WWW-Authenticate` header as oci-client reads it: a bearer challenge with a realm, else
/// basic credentials.
fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Basic;
    }
    match auth_param(params, "realm") {
        Some(realm) => Challenge::Bearer {
            realm,
            service: auth_param(params, "service"),
        },
        None => Challenge::Basic,
    }
}

/// The value of `name` in a challenge's `k=v, k="v"` list.
fn auth_param(params: &str, name: &str) -> Option<String> {
    let lower = params.to_ascii_lowercase();
    let key = format!("{name}=");
    let start = lower.match_indices(&key).find_map(|(i, _)| {
        let before = lower[..i].trim_end();
        (before.is_empty() || before.ends_with(',')).then_some(i + key.len())
    })?;
    let rest = &params[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split(',').next()?,
    };
    Some(value.trim().to_owned())
}

fn token_key(reference: &Reference, auth: &RegistryAuth) -> TokenKey {
    TokenKey {
        registry: reference.resolve_registry().to_owned(),
        repository: reference.repository().to_owned(),
        auth: fingerprint(auth),
    }
}

/// `<scheme>://<registry>/v2/<repository>/<path>`, as oci-client builds it.
fn v2_url(transport: Transport, reference: &Reference, path: &str) -> String {
    format!(
        "{}://{}/v2/{}/{path}{}",
        transport.scheme(),
        reference.resolve_registry(),
        reference.repository(),
        reference
            .namespace()
            .map(|ns| format!("?ns={ns}"))
            .unwrap_or_default(),
    )
}

/// A whole (bounded) body; a body that breaks off is a transport failure of `stage`.
async fn read_body(
    stage: Stage,
    resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    let declared = resp.content_length();
    read_limited(resp.bytes_stream(), declared, limit, what)
        .await
        .map_err(|e| match e {
            FetchError::Download {
                status: None,
                detail,
                ..
            } => stage.transport(what, detail),
            other => other,
        })
}

/// The start of an error answer's body, for its message; a body that breaks off is cut there.
async fn error_body(resp: reqwest::Response) -> Vec<u8> {
    use futures::StreamExt as _;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    body
}

/// A registry's answer other than 200 as oci-client reports it (`validate_registry_response`),
/// so it is classified the same way.
fn registry_answer(status: reqwest::StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    let url = url.to_owned();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return OciDistributionError::UnauthorizedError { url };
    }
    if status.is_success() {
        return OciDistributionError::SpecViolationError(format!(
            "expected HTTP status 200, got {status}"
        ));
    }
    if status.is_client_error()
        && let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(body)
    {
        return OciDistributionError::RegistryError { envelope, url };
    }
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url,
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

/// Checks content against a digest (`sha256:`, `sha384:` or `sha512:`, as oci-client).
fn check_digest(data: &[u8], expected: &str) -> Result<(), OciDistributionError> {
    use sha2::Digest as _;
    let (algorithm, _) = expected.split_once(':').unwrap_or((expected, ""));
    let hex = match algorithm {
        "sha256" => hex::encode(sha2::Sha256::digest(data)),
        "sha384" => hex::encode(sha2::Sha384::digest(data)),
        "sha512" => hex::encode(sha2::Sha512::digest(data)),
        other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned()).into()),
    };
    let actual = format!("{algorithm}:{hex}");
    if actual != expected {
        return Err(DigestError::VerificationError {
            expected: expected.to_owned(),
            actual,
        }
        .into());
    }
    Ok(())
}

fn is_transport(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::Manifest { status: None, .. }
            | FetchError::Download { status: None, .. }
            | FetchError::Push { .. }
    )
}

/// oci-client errors with their causes (registry URLs carry no credentials).
fn oci_detail(e: &OciDistributionError) -> String {
    error_chain(e)
}

/// Classifies an oci-client error into (HTTP status if any, is it an auth refusal).
fn classify(e: &OciDistributionError) -> (Option<u16>, bool) {
    match e {
        OciDistributionError::UnauthorizedError { .. } => (Some(401), true),
        OciDistributionError::AuthenticationFailure(_) => (Some(401), true),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                (Some(401), true)
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                (Some(404), false)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                (Some(429), false)
            } else {
                (Some(400), false)
            }
        }
        OciDistributionError::ServerError { code, .. } => {
            (Some(*code), *code == 401 || *code == 403)
        }
        OciDistributionError::RequestError(r) => (r.status().map(|s| s.as_u16()), false),
        OciDistributionError::IoError(_) | OciDistributionError::DigestError(_) => (None, false),
        // Unparseable or unsupported answers: the registry answered, retrying will not help.
        _ => (Some(200), false),
    }
}

fn manifest_error(reference: &str, e: OciDistributionError) -> FetchError {
    let (status, auth) = classify(&e);
    if auth {
        return FetchError::Auth {
            reference: reference.to_owned(),
            detail: format!(
                "{} (check imagePullSecret or the docker config credentials)",
                oci_detail(&e)
            ),
        };
    }
    FetchError::Manifest {
        reference: reference.to_owned(),
        status,
        detail: oci_detail(&e),
    }
}

fn download_error(what: &str, e: OciDistributionError) -> FetchError {
    let (status, auth) = classify(&e);
    if auth {
        return FetchError::Auth {
            reference: what.to_owned(),
            detail: oci_detail(&e),
        };
    }
    FetchError::Download {
        url: what.to_owned(),
        status,
        detail: oci_detail(&e),
    }
}

/// Builds the image `wasmgate push` uploads.
pub(crate) fn build_push_image(
    module: &[u8],
    format: crate::PushFormat,
) -> std::io::Result<PushImage> {
    use sha2::{Digest, Sha256};
    let desc = |media_type: &str, data: &[u8]| OciDescriptor {
        media_type: media_type.to_owned(),
        digest: crate::cache::sha256_prefixed(data),
        size: data.len() as i64,
        ..OciDescriptor::default()
    };
    match format {
        crate::PushFormat::Artifact => {
            // solo-io "oci" variant: the runtime config is both the manifest config and a layer,
            // so the manifest has the two layers istio-agent requires.
            let config = bytes::Bytes::from_static(
                br#"{"type":"envoy_proxy","abiVersions":["proxy_abi_version_0_2_1"],"config":{"rootIds":[]}}"#,
            );
            let wasm = bytes::Bytes::copy_from_slice(module);
            let config_desc = desc(WASM_CONFIG, &config);
            let layers = vec![config_desc.clone(), desc(WASM_LAYER, &wasm)];
            let manifest = OciImageManifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_owned()),
                config: config_desc.clone(),
                layers: layers.clone(),
                ..OciImageManifest::default()
            };
            Ok(PushImage {
                media_type: OCI_MANIFEST.to_owned(),
                manifest,
                blobs: vec![(config, config_desc), (wasm, layers[1].clone())],
            })
        }
        crate::PushFormat::Image => {
            let tar = {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_size(module.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, "plugin.wasm", module)?;
                b.into_inner()?
            };
            let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
            let layer = {
                use std::io::Write as _;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(&tar)?;
                gz.finish()?
            };
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }))?;
            let (layer, config) = (bytes::Bytes::from(layer), bytes::Bytes::from(config));
            let config_desc = desc(DOCKER_CONFIG, &config);
            let layer_desc = desc(DOCKER_LAYER_GZIP, &layer);
            let manifest = OciImageManifest {
                schema_version: 2,
                media_type: Some(DOCKER_MANIFEST.to_owned()),
                config: config_desc.clone(),
                layers: vec![layer_desc.clone()],
                ..OciImageManifest::default()
            };
            Ok(PushImage {
                media_type: DOCKER_MANIFEST.to_owned(),
                manifest,
                blobs: vec![(layer, layer_desc), (config, config_desc)],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse_challenge("bearer service=x, Realm=http://h/t"),
            Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("x".into())
            }
        );
        // A key inside another parameter's value is not the parameter.
        assert_eq!(
            parse_challenge(r#"Bearer service="realm=no",realm="http://h/t""#),
            Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("realm=no".into())
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="registry""#),
            Challenge::Basic
        );
        assert_eq!(parse_challenge("Bearer service=x"), Challenge::Basic);
    }
}
