//! Fetches proxy-wasm modules the way istio-agent does: `oci://` images and artifacts,
//! `http(s)://` files (gzip and tar unwrapped), `file://` paths; verifies them against the
//! WasmPlugin's `sha256`; caches them on disk with Istio's pull-policy semantics; and pushes
//! modules to registries for `wasmgate push`.
//!
//! The rules, and where wasmgate goes beyond Istio, are in `docs/fetching.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wasmgate_fetcher::FetchError> {
//! use wasmgate_fetcher::{Fetcher, FetcherOptions, ModuleRequest};
//! wasmgate_fetcher::install_crypto_provider();
//! let fetcher = Fetcher::new(FetcherOptions::new("/var/lib/wasmgate/modules"))?;
//! let module = fetcher.fetch(&ModuleRequest::new("oci://ghcr.io/acme/auth:v1", "default.auth")).await?;
//! assert!(module.bytes.starts_with(b"\0asm"));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod auth;
mod backoff;
mod cache;
mod error;
mod fetcher;
mod guard;
mod http;
mod location;
mod metrics;
mod oci;
mod options;
mod transport;
mod unbox;

pub use auth::DockerConfig;
pub use backoff::{Backoff, BackoffConfig};
pub use error::FetchError;
pub use fetcher::{Fetcher, Module, ModuleRequest, PullPolicy, PushFormat};
pub use metrics::{ConversionResult, REMOTE_FETCH_RESULTS};
pub use options::{DEFAULT_MAX_MODULE_SIZE, DockerConfigSource, FetcherOptions};

/// Installs ring as the process's rustls crypto provider, which the registry and HTTPS clients
/// need (the workspace builds rustls without a default provider). Idempotent; call it once
/// early in `main` and in tests.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
