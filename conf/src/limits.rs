//! Every numeric limit of the configuration, in one place. Most come from the upstream APIs
//! (Gateway API CRD bounds, Istio's WasmPlugin proto/CRD validation, Kubernetes names).

/// Largest config file read; a bigger one is reported and its last good resources kept.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// How often a config directory that is itself a symlink is polled (see `watch`).
pub const WATCH_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Kubernetes object names (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Kubernetes namespaces (DNS-1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Label values.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Label key name part (after the optional `prefix/`).
pub const MAX_LABEL_NAME_LEN: usize = 63;

/// Gateway: listeners per Gateway.
pub const MAX_LISTENERS: usize = 64;
/// Gateway: certificateRefs per listener.
pub const MAX_CERTIFICATE_REFS: usize = 64;
/// Hostnames (Gateway API `Hostname`): total length.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// HTTPRoute bounds from the Gateway API CRD.
pub const MAX_PARENT_REFS: usize = 32;
pub const MAX_ROUTE_HOSTNAMES: usize = 16;
pub const MAX_RULES: usize = 16;
pub const MAX_MATCHES: usize = 64;
pub const MAX_FILTERS: usize = 16;
pub const MAX_BACKEND_REFS: usize = 16;
pub const MAX_HEADER_MATCHES: usize = 16;
pub const MAX_QUERY_MATCHES: usize = 16;
pub const MAX_HEADER_MODIFIERS: usize = 16;
pub const MAX_PATH_LEN: usize = 1024;
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
pub const MAX_BACKEND_WEIGHT: u32 = 1_000_000;
/// Gateway API durations: at most this many `<number><unit>` parts, each number at most 5 digits.
pub const MAX_DURATION_PARTS: usize = 4;
pub const MAX_DURATION_DIGITS: usize = 5;

/// WasmPlugin bounds from Istio's API.
pub const MAX_TARGET_REFS: usize = 16;
pub const MAX_SELECTOR_LABELS: usize = 4096;
pub const MAX_IMAGE_PULL_SECRET_LEN: usize = 253;
pub const MAX_PLUGIN_NAME_LEN: usize = 256;
pub const MAX_ENV_VARS: usize = 256;
pub const MAX_ENV_NAME_LEN: usize = 256;
pub const MAX_ENV_VALUE_LEN: usize = 2048;
pub const MAX_POLICY_REF_NAME_LEN: usize = 253;
pub const MAX_POLICY_REF_GROUP_LEN: usize = 253;
pub const MAX_POLICY_REF_KIND_LEN: usize = 63;

/// Annotation listing a Service's endpoints as `host:port,host:port`.
pub const ENDPOINTS_ANNOTATION: &str = "wasmgate.io/endpoints";

/// ReferenceGrant bounds from the Gateway API CRD.
pub const MAX_REFERENCE_GRANT_FROM: usize = 16;
pub const MAX_REFERENCE_GRANT_TO: usize = 16;
/// Gateway: `allowedRoutes.kinds` per listener (Gateway API CRD).
pub const MAX_ROUTE_KINDS: usize = 8;
