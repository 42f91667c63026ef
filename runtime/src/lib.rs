//! `wasmgate-runtime`: a Proxy-Wasm host on wasmtime 48 that runs plugins built with any SDK
//! (Rust, C++, Go, TinyGo, AssemblyScript) as Envoy does, and knows nothing of the proxy that
//! embeds it.
//!
//! # Using it
//!
//! ```no_run
//! use std::sync::Arc;
//! use wasmgate_runtime::*;
//!
//! struct MyHost;
//! impl Host for MyHost {
//!     fn log(&self, plugin: &str, level: LogLevel, message: &str) {
//!         eprintln!("[{plugin}] {level:?} {message}");
//!     }
//! }
//!
//! # fn main() -> Result<(), RuntimeError> {
//! # let wasm_bytes: Vec<u8> = Vec::new();
//! // Once per process: the engine, linker, caches, shared data and metrics.
//! let runtime = Runtime::new(Arc::new(MyHost), RuntimeOptions::default())?;
//! // Per module (compiled once per digest) and per plugin configuration. `load` is the canary:
//! // swap configurations only after it succeeds.
//! let module = runtime.load_module(&wasm_bytes)?;
//! let plugin = Plugin::load(&runtime, &module, PluginOptions {
//!     name: "default.basic-auth".into(),
//!     configuration: br#"{"realm":"istio"}"#.to_vec(),
//!     ..Default::default()
//! })?;
//! // Per request, per plugin in the chain:
//! let mut stream = plugin.new_stream(StreamInfo::default());
//! let mut headers: HeaderList = [(":method", "GET"), (":path", "/")].into_iter().collect();
//! let outcome = stream.on_request_headers(&mut headers, true);
//! if let Some(reply) = outcome.local_reply {
//!     // send `reply`, stop the chain (response-path callbacks of earlier plugins still run)
//! } else if outcome.action == Action::Pause {
//!     // `stream.resumed().await` (bounded by a timeout) before the next phase; on Continue,
//!     // apply `stream.request_headers()`: the plugin may have edited them while paused.
//! }
//! // ... on_request_body / on_response_headers / on_response_body / trailers ...
//! stream.on_log();  // access-log phase: proxy_on_done + proxy_on_log
//! drop(stream);     // proxy_on_delete
//! # Ok(()) }
//! ```
//!
//! The proxy implements [`Host`] (logs, HTTP/gRPC calls, host-level properties) and fills a
//! [`StreamInfo`] per request; everything else — headers, bodies, properties, shared data,
//! queues, timers, metrics, fail strategies — is handled here. [`check_module`] runs the same
//! load for `wasmgate plugin check`.
//!
//! # Threads and time
//!
//! A [`Runtime`] starts two small threads: the epoch ticker (advances wasmtime's epoch every
//! [`Limits::epoch_tick`]; deadlines are set on every guest call) and, on first use, the timer
//! thread that drives `proxy_on_tick`. Nothing else runs in the background and no async runtime
//! is needed: stream callbacks are synchronous (Pingora body filters are), and
//! [`Stream::resumed`] is a plain future any executor can poll. Call responses
//! ([`CallCompletion`]) may be delivered from any thread.
//!
//! Keep one `Runtime` per process: shared data, shared queues and plugin metrics are
//! process-wide through it, and it compiles each module once per digest.
//!
//! # Testing against it
//!
//! `runtime/tests/all/` drives hand-written `.wat` guests (`runtime/tests/guests/`) through
//! this public API with a fake [`Host`]; `runtime/tests/sdk_plugins.rs` does the same with the
//! real SDK plugins of `plugins/dist/`. A fake host only needs [`Host::log`]; answer calls by
//! keeping the [`CallCompletion`] and completing it later, from any thread.
//!
//! # Layers (as proxy-wasm-cpp-host)
//! - `abi/`: marshalling only — guest pointers and enums to host types, the pairs codec, WASI.
//! - `context.rs`: root/stream lifecycle, action clamping, deferred actions, fail policy.
//! - [`Host`]: the one seam to the proxy.
//!
//! The instance model (one VM per worker slot, stream contexts pinned to their VM) is described
//! in `plugin.rs` and hidden behind [`Plugin::new_stream`]. Limits are all in [`Limits`].

#![deny(unsafe_code)]

mod abi;
mod cache;
mod check;
mod context;
mod engine;
mod error;
mod host;
mod limits;
mod metrics;
mod module;
mod plugin;
mod properties;
mod shared;
mod state;
mod timers;
mod types;
mod vm;

pub use abi::pairs;
pub use abi::{AbiVersion, LogLevel, MetricKind, Status};
pub use check::{CheckFailure, CheckOptions, CheckReport, check_module};
pub use engine::{Runtime, RuntimeOptions};
pub use error::{LimitKind, RuntimeError};
pub use host::{CallCompletion, GrpcStreamEvents, GrpcStreamSink, Host};
pub use limits::{DEFAULT_RELOAD_BACKOFF, Limits};
pub use metrics::{CALLBACK_SECONDS_BOUNDS, HISTOGRAM_BOUNDS, Histogram, MetricValue, PluginStats};
pub use module::{EntryPoint, ImportInfo, Module};
pub use plugin::{Plugin, PluginOptions, Stream, set_thread_slot};
pub use types::{
    Action, CallResponse, FailAction, FailStrategy, GrpcCall, GrpcStream, HeaderList, HttpCall,
    LocalReply, Outcome, StreamInfo,
};
