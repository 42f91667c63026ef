//! OCI registries (istio-wasm.md §2.5): resolve the manifest first, decide the image format
//! from media types, then stream only the layer that holds the module.
//!
//! Every request of a pull (the `/v2/` probe, the token, the manifests, the blob and each
//! redirect, e.g. a blob's to object storage) goes through the guarded reqwest client, so the
//! guard checks every connection at dial time (istio-wasm.md §2.3). `oci-client` gives the
//! reference parser, the manifest types and the push (`wasmgate push`, run by the operator): its
//! own reqwest client takes no resolver or redirect policy, so it makes no request of a fetch.
//!
//! The pull: `manifest.rs` resolves the reference (through an index if needed), `format.rs`
//! picks the layer that holds the module by Istio's format order, `blob.rs` streams it with its
//! size and digest checked. Every GET carries the credentials `token.rs` adds after the
//! registry's `challenge.rs`; `body.rs` reads answers within limits and `errors.rs` classifies
//! failures into `FetchError`. `push.rs` builds and uploads images for `wasmgate push`.

mod blob;
mod body;
mod challenge;
mod errors;
mod format;
mod manifest;
mod push;
mod token;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use oci_client::client::{Certificate, CertificateEncoding};
use oci_client::{Client, Reference};
use tracing::debug;

use self::challenge::Challenge;
use self::errors::is_transport;
use self::push::ClientKey;
use self::token::TokenKey;
use crate::error::FetchError;
use crate::guard::Guard;
use crate::options::FetcherOptions;

pub(crate) use self::push::build_push_image;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// proxy-wasm's artifact media types (solo-io wasm spec "oci" variant). Not oci-client's
/// `WASM_LAYER_MEDIA_TYPE`, which is the CNCF wasm type.
const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";

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

/// How one attempt reaches the registry (see `OciFetcher::with_registry`).
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
            let transport = Transport {
                plain_http,
                insecure,
            };
            async move {
                self.challenge(endpoint, transport).await?;
                op(transport).await
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
}

/// oci-client's `Reference::resolve_registry` for a registry as written.
fn registry_endpoint(registry: &str) -> &str {
    match registry {
        "docker.io" | "" => "index.docker.io",
        other => other,
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
