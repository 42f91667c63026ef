//! Errors that name the stage that failed.

use std::path::PathBuf;

/// Which limit a guest exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Linear memory beyond [`Limits::max_memory_bytes`](crate::Limits::max_memory_bytes).
    Memory,
    /// A callback ran past its epoch deadline.
    Time,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Time => "time",
        })
    }
}

/// Everything that can go wrong loading or running a plugin. Each variant names its stage, so a
/// message read in `/config_dump` or from `wasmgate plugin check` says where it broke.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured (bad limits, no epoch ticker thread).
    #[error("engine setup failed: {0}")]
    Engine(String),
    /// The bytes are not valid Wasm, or cranelift failed.
    #[error("compile failed: {0}")]
    Compile(String),
    /// The module is not a proxy-wasm plugin we can run (no ABI marker, no allocator...).
    #[error("not a runnable proxy-wasm module: {0}")]
    Abi(String),
    /// The module imports functions the host does not provide. Refused at load, never at request time.
    #[error("link failed: unknown imports {}", missing.join(", "))]
    Link { missing: Vec<String> },
    /// Instantiation failed (initial memory above the limit, start function trapped...).
    #[error("instantiate failed: {0}")]
    Instantiate(String),
    /// `_initialize`, `main`, `_start`, or `proxy_on_context_create`/`proxy_on_vm_start` of the root failed.
    #[error("start of plugin {plugin} failed: {reason}")]
    Start { plugin: String, reason: String },
    /// `proxy_on_configure` returned false or trapped: the configuration is refused.
    #[error("configuration of plugin {plugin} refused: {reason}")]
    Configure { plugin: String, reason: String },
    /// The guest trapped in a callback.
    #[error("plugin trapped in {callback}: {reason}")]
    Trap {
        callback: &'static str,
        reason: String,
    },
    /// The guest exceeded a limit in a callback.
    #[error("plugin exceeded its {kind} limit in {callback}")]
    Limit {
        kind: LimitKind,
        callback: &'static str,
    },
    /// The VM failed earlier and this plugin cannot run until it is reloaded.
    #[error("plugin VM failed earlier: {0}")]
    Failed(String),
    /// Reading or writing the compiled-code cache failed (never fatal for loading; reported by
    /// [`Runtime::new`](crate::Runtime::new) only when the directory cannot be created).
    #[error("compiled-code cache at {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}
