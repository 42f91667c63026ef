//! Every limit and knob of the fetcher, in one place, with istio-agent's defaults
//! (`../shared/reference/istio-wasm.md` §2.3).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::backoff::BackoffConfig;

/// Istio's `ISTIO_WASM_MAX_BINARY_SIZE_BYTES` default: 256 MiB.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 256 * 1024 * 1024;

/// Largest registry token-server answer read (a JSON token; real ones are a few KiB).
pub(crate) const MAX_TOKEN_RESPONSE: u64 = 1024 * 1024;

/// Largest manifest read: distribution's own limit on the manifests it accepts (4 MiB).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// How much of a registry's error answer is read for its message.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

/// A pull token's lifetime when the token server does not say (Docker token spec: 60 s).
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Where credentials come from when a request carries no pull secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DockerConfigSource {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (read at each fetch, so a
    /// `docker login` while the gateway runs is picked up).
    #[default]
    Environment,
    /// This exact file (tests, or a mounted secret).
    File(PathBuf),
    /// Anonymous unless the request carries a pull secret.
    Disabled,
}

/// Configuration of a [`crate::Fetcher`]. Build with [`FetcherOptions::new`] and override fields.
#[derive(Clone, Debug)]
pub struct FetcherOptions {
    /// Directory of the on-disk cache (`--cache-dir`). Created if missing.
    pub cache_dir: PathBuf,
    /// Timeout of one HTTP request (`WASM_HTTP_REQUEST_TIMEOUT`, 15 s). Applies to each
    /// registry request too (manifest, blob, token).
    pub request_timeout: Duration,
    /// Deadline for one whole fetch including retries (istiod's ECDS `http_uri.timeout`, 30 s).
    pub fetch_timeout: Duration,
    /// Attempts per request, counting the first (`WASM_HTTP_REQUEST_MAX_RETRIES`, 5).
    pub max_attempts: u32,
    /// Delay between attempts (exponential from 500 ms, jittered, at most 60 s).
    pub backoff: BackoffConfig,
    /// Largest module accepted, enforced while streaming and while un-gzipping and untarring
    /// (`ISTIO_WASM_MAX_BINARY_SIZE_BYTES`, 256 MiB). A compressed download larger than this is
    /// refused too.
    pub max_module_size: u64,
    /// Registries and HTTP hosts (`host[:port]`, compared with the URL's authority) whose TLS
    /// certificates are not verified, and which may be reached over plain HTTP when they do not
    /// speak TLS (`WASM_INSECURE_REGISTRIES`). `*` means every host.
    pub insecure_registries: Vec<String>,
    /// Extra PEM bundle of root certificates, trusted in addition to the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// How often expired cache entries are purged (`WASM_PURGE_INTERVAL`, 1 h).
    pub purge_interval: Duration,
    /// A cache entry not used for this long is purged (`WASM_MODULE_EXPIRY`, 24 h).
    pub module_expiry: Duration,
    /// Networks refused in addition to the always-refused link-local and cloud-metadata
    /// addresses (`BLOCKED_CIDRS_IN_WASM_FETCH`). Loopback and private networks are allowed,
    /// as in Istio.
    pub blocked_cidrs: Vec<IpNet>,
    /// Credentials used when a request has no pull secret.
    pub docker_config: DockerConfigSource,
}

impl FetcherOptions {
    /// Istio's defaults with the given cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            request_timeout: Duration::from_secs(15),
            fetch_timeout: Duration::from_secs(30),
            max_attempts: 5,
            backoff: BackoffConfig::default(),
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            insecure_registries: Vec::new(),
            ca_bundle: None,
            purge_interval: Duration::from_secs(3600),
            module_expiry: Duration::from_secs(24 * 3600),
            blocked_cidrs: Vec::new(),
            docker_config: DockerConfigSource::Environment,
        }
    }

    /// Parses a `WASM_INSECURE_REGISTRIES`-style list: comma separated, blanks ignored.
    pub fn parse_insecure_list(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether `authority` (`host[:port]`) is listed as insecure.
    pub(crate) fn is_insecure(&self, authority: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|r| r == "*" || r.eq_ignore_ascii_case(authority))
    }
}
