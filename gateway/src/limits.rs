//! Every default and bound of the gateway, in one place.

use std::time::Duration;

/// Seconds in-flight requests get after SIGTERM/SIGINT (Pingora's own default is 300 s; ours is short).
pub const DEFAULT_GRACE_PERIOD_SECS: u64 = 10;
/// Threads of the control runtime's blocking pool: plugin loads (compile, instantiate, canary),
/// module file reads and cache writes, DNS lookups. Beyond it, blocking work queues rather than
/// adding threads (see `server::run`); two let a DNS lookup run while a module compiles.
pub const CONTROL_BLOCKING_THREADS: usize = 2;
/// One message a plugin's gRPC stream receives (gRPC's default `max_receive_message_length`);
/// a larger one ends the stream with 8 RESOURCE_EXHAUSTED, as gRPC clients do.
pub const GRPC_STREAM_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Route timeout when an HTTPRoute sets none (Envoy's default route timeout).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);
/// How often backend names without a Service endpoint list are re-resolved by DNS.
pub const DEFAULT_DNS_REFRESH_SECS: u64 = 10;
/// Connect timeout to an upstream address; a refused or unreachable backend answers 503 after this.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream connections kept per upstream address for reuse (Pingora's connector pool, and
/// each worker's pool in `server/h1/upstream.rs`).
pub const UPSTREAM_KEEPALIVE_POOL: usize = 128;
/// How many upstream addresses one request may try when connecting fails.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;
/// Time allowed for a downstream TLS handshake before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before retrying `accept()` after a transient error (e.g. EMFILE).
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Coalescing window of the config directory watch: a change is reloaded at most this long after
/// its first event, however often the directory keeps changing.
pub const RELOAD_WINDOW: Duration = Duration::from_millis(200);
/// Bytes of a regular expression program compiled from a route match (guards against huge regexes).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Rejected versions kept for `/config_dump`.
pub const MAX_REJECTED_IN_DUMP: usize = 64;
/// Idle upstream connections are closed after this long in the pool.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each worker closes the idle upstream connections that expired or that the upstream
/// closed. Between sweeps, a connection the upstream closed holds a descriptor in CLOSE_WAIT.
pub const UPSTREAM_POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Pending connections the kernel queues per listening port.
pub const LISTEN_BACKLOG: u32 = 4096;
/// How long a reload waits for new backends' first DNS resolution before swapping anyway.
pub const INITIAL_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before fetching a failed plugin module again (beyond Istio: failed fetches retry in
/// the background, so a registry outage heals without a config change).
pub const PLUGIN_FETCH_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between two background fetch attempts of a failed module.
pub const PLUGIN_FETCH_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a paused plugin may hold a request when the route has no timeout.
pub const PLUGIN_PAUSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--max-module-size`: Istio's 256 MiB.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 256 * 1024 * 1024;
/// Body of Istio's deny-all RBAC filter, answered with 403 when a FAIL_CLOSE module is unavailable.
pub const DENY_ALL_BODY: &str = "RBAC: access denied";
/// At startup, how long the ports stay closed (and readiness waits) for plugins still loading
/// (fetch + compile + canary); past it they open, and a plugin still loading is skipped until it
/// is ready, as one added at runtime is.
pub const STARTUP_PLUGIN_WAIT: Duration = Duration::from_secs(30);
/// What one read from a client connection takes at most: a request header and a small body
/// arrive in one read; a larger body is relayed in pieces of up to this size.
pub const DOWNSTREAM_READ_BUFFER: usize = 16 * 1024;
/// Read buffers (of `DOWNSTREAM_READ_BUFFER` or `UPSTREAM_READ_BUFFER` bytes) each worker keeps
/// spare between messages, for the next read to take without allocating (`h1/wire.rs`): at most
/// 1 MiB per worker.
pub const SPARE_READ_BUFFERS: usize = 64;
/// Largest request header, in bytes, and most fields in it: pingora-core's bounds
/// (`MAX_HEADER_SIZE`, `MAX_HEADERS`), kept when the HTTP/1 server session became our own. A
/// larger header is answered 400.
pub const DOWNSTREAM_MAX_REQUEST_HEADER: usize = 1024 * 1024 - 1;
pub const DOWNSTREAM_MAX_REQUEST_FIELDS: usize = 256;
/// Write buffer of each downstream connection: a response header and a body up to this size leave
/// in one `send` (see `server/coalesce.rs`). Pingora's own listeners use one MSS (1460 bytes).
pub const DOWNSTREAM_WRITE_BUFFER: usize = 4096;
/// Write buffer of each upstream connection: what Pingora's HTTP/1 client writes between two
/// flushes (e.g. a chunk's size line, data and CRLF) leaves in one `send` (see
/// `server/h1/upstream.rs`).
pub const UPSTREAM_WRITE_BUFFER: usize = 4096;
/// What one read from an upstream connection takes at most: the response header and a small body
/// arrive in one read; a larger body is relayed in pieces of up to this size.
pub const UPSTREAM_READ_BUFFER: usize = 16 * 1024;
/// Largest upstream response header, in bytes, and most fields in it: pingora-core's bounds
/// (`MAX_HEADER_SIZE`, `MAX_HEADERS`), kept when the upstream client became our own.
pub const UPSTREAM_MAX_RESPONSE_HEADER: usize = 1024 * 1024 - 1;
pub const UPSTREAM_MAX_RESPONSE_FIELDS: usize = 256;
/// Longest chunk-size line (with its extensions) and trailer section of a chunked response body:
/// pingora-core's bounds (`PARTIAL_CHUNK_HEAD_LIMIT`, `TRAILER_SIZE_LIMIT`).
pub const MAX_CHUNK_HEAD: usize = 8 * 1024;
pub const MAX_TRAILERS: usize = 64 * 1024;
