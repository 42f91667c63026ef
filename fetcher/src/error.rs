//! What can go wrong while fetching a module, by stage.

use std::path::PathBuf;
use std::time::Duration;

/// A failed fetch. The variant names the stage; messages carry the URL and the cause, never a
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL (or the `sha256`) cannot be used as written.
    #[error("invalid module URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// The destination resolves to a link-local, cloud-metadata or configured blocked address.
    #[error("refusing to fetch {url}: {reason}")]
    Blocked { url: String, reason: String },
    /// The registry refused the credentials (or demanded some and none were configured).
    #[error("registry refused access to {reference}: {detail}")]
    Auth { reference: String, detail: String },
    /// The pull secret or docker config file is malformed.
    #[error("invalid registry credentials ({origin}): {reason}")]
    Credentials { origin: String, reason: String },
    /// Resolving the OCI manifest failed (network, 4xx/5xx, unparseable, unknown media type).
    #[error("fetching the manifest of {reference} failed: {detail}")]
    Manifest {
        reference: String,
        /// HTTP status when the registry answered, `None` for a transport error.
        status: Option<u16>,
        detail: String,
    },
    /// Downloading the module (HTTP body or OCI blob) failed.
    #[error("downloading {url} failed: {detail}")]
    Download {
        url: String,
        /// HTTP status when the server answered, `None` for a transport error or a bad body.
        status: Option<u16>,
        detail: String,
    },
    /// The module's digest differs from the `sha256` the user gave (or the URL's `@sha256:`).
    #[error(
        "module downloaded from {url} has checksum {actual}, which does not match the expected {expected}"
    )]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    /// What was downloaded is not a Wasm module, or the image holds none.
    #[error("{url} is not a usable Wasm module: {reason}")]
    InvalidModule { url: String, reason: String },
    /// The module (or its compressed form) exceeds [`crate::FetcherOptions::max_module_size`].
    #[error("module from {url} exceeds the size limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// The fetch did not finish within its deadline.
    #[error("fetching {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    /// Reading a `file://` module failed.
    #[error("reading module file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The on-disk cache could not be read or written.
    #[error("module cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Building the fetcher failed (CA bundle, HTTP client).
    #[error("fetcher setup: {0}")]
    Setup(String),
    /// Pushing a module to a registry failed.
    #[error("pushing to {reference} failed: {detail}")]
    Push { reference: String, detail: String },
}

impl FetchError {
    /// Whether trying again may succeed without a configuration change: transport errors,
    /// timeouts and 5xx answers other than 501, 505 and 511 (Istio's HTTP retry rule).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Manifest { status, .. } | FetchError::Download { status, .. } => {
                status.is_none_or(retryable_status)
            }
            FetchError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Istio's `istio_agent_wasm_remote_fetch_count` `result` label for this failure.
    pub fn metric_result(&self) -> &'static str {
        match self {
            FetchError::Manifest { .. } | FetchError::Auth { .. } => "manifest_failure",
            FetchError::ChecksumMismatch { .. } => "checksum_mismatched",
            FetchError::InvalidModule { .. } => "fetch_failure",
            _ => "download_failure",
        }
    }
}

/// Istio's rule: 5xx is worth retrying except 501 Not Implemented, 505 HTTP Version Not
/// Supported and 511 Network Authentication Required, which will not change by themselves.
pub(crate) fn retryable_status(status: u16) -> bool {
    (500..600).contains(&status) && !matches!(status, 501 | 505 | 511)
}
