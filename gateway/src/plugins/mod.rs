//! WasmPlugin filter chains: modules fetched in the background, plugins loaded and canaried off
//! the request path, chains precomputed per (listener port, route rule, backend) at compile time.
//!
//! - [`manager`]: one [`PluginManager`] per process owns the runtime and the fetcher, and the
//!   version of each WasmPlugin in force. The compiler asks it what to run for a resource; a
//!   resource whose module is not ready yet starts loading in the background and the compiler is
//!   asked again (a re-apply) when it is.
//! - [`chain`]: targeting and the per-rule chains.
//! - [`filter`]: the request path (HeaderList conversions, running a chain).
//! - [`host`]: the runtime's [`wasmgate_runtime::Host`]: logs, HTTP calls, properties.
//! - [`grpc_stream`]: the HTTP/2 I/O of gRPC streams plugins open.
//! - [`stats`]: the `/metrics` collector, read at scrape time.

pub mod chain;
pub mod filter;
pub mod grpc_stream;
pub mod host;
pub mod manager;
pub mod stats;

pub use chain::{Chain, ChainLink, PortChains};
pub use manager::{PluginManager, PluginSettings};
