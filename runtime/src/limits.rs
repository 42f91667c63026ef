//! Every limit the runtime enforces, in one place (cpp-host keeps the same set in `limits.h`).
//!
//! A guest that exceeds a *memory or time* limit traps: its VM is marked failed and the plugin's
//! fail strategy applies. A guest that exceeds a *size* limit on data it hands the host (pairs,
//! buffers, random bytes) gets a status code and keeps running.

use std::time::Duration;

/// Limits applied to every VM of a [`Runtime`](crate::Runtime). `Default` gives the values below.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per VM, in bytes. cpp-host's `MAX_WASM_MEMORY_SIZE_BYTES` is 1 GiB; we
    /// default lower because there is one VM per worker slot per module.
    pub max_memory_bytes: usize,
    /// Wall time one callback may run before it is interrupted (epoch deadline).
    pub callback_timeout: Duration,
    /// Wall time for `_initialize`/`_start`, `proxy_on_vm_start` and `proxy_on_configure`,
    /// which legitimately do more work (parsing configuration, building tables).
    pub start_timeout: Duration,
    /// Epoch tick: the granularity of the deadlines above.
    pub epoch_tick: Duration,
    /// Size of a pairs buffer the guest passes (headers, metadata), as cpp-host `PAIRS_MAX_BYTES`.
    pub max_pairs_bytes: usize,
    /// Number of pairs in such a buffer, as cpp-host `PAIRS_MAX_COUNT`.
    pub max_pairs_count: usize,
    /// A body buffered while a plugin pauses it. Beyond this the request gets 413 and the
    /// response 500, as Envoy does when its buffer limit is exceeded.
    pub max_body_bytes: usize,
    /// One `random_get` call, as cpp-host `WASI_RANDOM_GET_MAX_SIZE_BYTES`.
    pub max_random_get_bytes: usize,
    /// One value in shared data.
    pub max_shared_data_value_bytes: usize,
    /// Items waiting in one shared queue; enqueue beyond it answers `InternalFailure`.
    pub max_queue_items: usize,
    /// One log message; longer ones are truncated (a guest should not flood the host log).
    pub max_log_message_bytes: usize,
    /// gRPC streams open at once in one VM (`proxy_grpc_stream`); beyond it the open answers
    /// `InternalFailure`, as Envoy does when it cannot start a stream. Envoy has no such cap; each
    /// stream here holds a connection, so a runaway guest must not open them without bound.
    pub max_grpc_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            callback_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(10),
            epoch_tick: Duration::from_millis(10),
            max_pairs_bytes: 1 << 20,
            max_pairs_count: 1024,
            max_body_bytes: 4 << 20,
            max_random_get_bytes: 64 << 10,
            max_shared_data_value_bytes: 1 << 20,
            max_queue_items: 10_000,
            max_log_message_bytes: 16 << 10,
            max_grpc_streams: 1024,
        }
    }
}

impl Limits {
    /// The epoch deadline, in ticks, for a wall-time budget. The only place that converts wall
    /// time to ticks. One extra tick because the current tick may be about to end.
    pub(crate) fn ticks_for(&self, budget: Duration) -> u64 {
        // In u64 (585 years of nanoseconds): a u128 division is a library call, and this runs
        // before every guest call.
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        (nanos(budget) / nanos(self.epoch_tick).max(1)).saturating_add(1)
    }
}

/// Default base of the jittered backoff between two reloads of a failed VM (`FAIL_RELOAD`),
/// as Envoy's `reload_config.backoff.base_interval`.
pub const DEFAULT_RELOAD_BACKOFF: Duration = Duration::from_secs(1);
