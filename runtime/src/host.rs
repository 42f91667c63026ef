//! Layer (c): THE seam. Everything the runtime needs from the proxy goes through [`Host`]; the
//! proxy's per-request data comes in as owned values through [`Stream`](crate::Stream) methods.

use std::sync::Weak;
use std::time::SystemTime;

use crate::abi::{LogLevel, Status};
use crate::plugin::{Slot, Task, deliver};
use crate::types::{CallResponse, GrpcCall, HttpCall};

/// Services the proxy gives plugins. Implemented by the gateway, and by a fake in tests.
///
/// Every method is called synchronously from inside a Wasm host call, on whatever thread runs
/// the callback, with that VM locked: implementations must not block and must not call back
/// into the same [`Stream`](crate::Stream) or [`Plugin`](crate::Plugin).
pub trait Host: Send + Sync + 'static {
    /// A log line from `proxy_log` or the guest's stdout (info) / stderr (error), already
    /// filtered by the plugin's configured level. `plugin` is the plugin's name (or the VM's
    /// name for output before any plugin context exists).
    fn log(&self, plugin: &str, level: LogLevel, message: &str);

    /// Wall clock for `proxy_get_current_time_nanoseconds` and WASI's realtime clock.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Properties the stream cannot answer: `xds.node...` (and the old `node`), metadata,
    /// anything unknown. Path segments as the plugin sent them. Serialize values as Envoy does
    /// (strings raw, integers 8-byte little-endian). Default: nothing (`NotFound`).
    fn property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        let _ = path;
        None
    }

    /// Starts an HTTP call to the named upstream. Return at once; answer later, from any thread,
    /// with `done.complete(response)` (or drop `done` to fail the call; the plugin then sees a
    /// response with no headers). An `Err` is returned to the plugin as the call's status
    /// (Envoy answers `BadArgument` for an unknown upstream). Default: no upstream is known.
    fn dispatch_http_call(&self, call: HttpCall, done: CallCompletion) -> Result<(), Status> {
        let _ = (call, done);
        Err(Status::BadArgument)
    }

    /// Starts a unary gRPC call, as [`Host::dispatch_http_call`]. A response with
    /// `grpc_status != 0` (or a dropped `done`, which means 14 UNAVAILABLE) reaches the plugin
    /// through `proxy_on_grpc_close`.
    fn dispatch_grpc_call(&self, call: GrpcCall, done: CallCompletion) -> Result<(), Status> {
        let _ = (call, done);
        Err(Status::BadArgument)
    }
}

/// The way back for an HTTP or gRPC call. `Send + 'static`: move it into the task doing the call.
/// The response is delivered to the VM that made the call (after its current callback, if it is
/// busy); a stream the plugin then continues or answers wakes in
/// [`Stream::resumed`](crate::Stream::resumed).
pub struct CallCompletion {
    target: Option<(Weak<Slot>, u64, u32, bool)>,
}

impl CallCompletion {
    pub(crate) fn new(slot: Weak<Slot>, generation: u64, token: u32, grpc: bool) -> Self {
        Self {
            target: Some((slot, generation, token, grpc)),
        }
    }

    /// Delivers the response.
    pub fn complete(mut self, response: CallResponse) {
        self.send(Some(response));
    }

    /// Delivers a failure (connection error, timeout): as dropping the completion.
    pub fn fail(mut self) {
        self.send(None);
    }

    fn send(&mut self, response: Option<CallResponse>) {
        let Some((slot, generation, token, grpc)) = self.target.take() else {
            return;
        };
        if let Some(slot) = slot.upgrade() {
            deliver(
                &slot,
                Task::CallResponse {
                    generation,
                    token,
                    response,
                    grpc,
                },
            );
        }
    }
}

impl Drop for CallCompletion {
    fn drop(&mut self) {
        self.send(None);
    }
}

impl std::fmt::Debug for CallCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCompletion").finish_non_exhaustive()
    }
}
