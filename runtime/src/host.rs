//! Layer (c): THE seam. Everything the runtime needs from the proxy goes through [`Host`]; the
//! proxy's per-request data comes in as owned values through [`Stream`](crate::Stream) methods.

use std::sync::Weak;
use std::time::SystemTime;

use crate::abi::{LogLevel, Status};
use crate::plugin::{GrpcStreamEvent, Slot, Task, deliver};
use crate::types::{CallResponse, GrpcCall, GrpcStream, HeaderList, HttpCall};

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

    /// Opens a bidirectional gRPC stream (`proxy_grpc_stream`): `POST /{service}/{method}` to the
    /// upstream with the initial metadata. Return at once with the stream's [`GrpcStreamSink`]
    /// (the plugin's messages, half-close and reset go there) and report what the upstream sends
    /// through `events`, from any thread. An `Err` is returned to the plugin as the open's status:
    /// `InternalFailure` for a stream that cannot start, e.g. an unknown upstream (Envoy's
    /// `grpcStream` when `startRaw` fails; the Rust SDK expects only that or `ParseFailure`, and
    /// panics on anything else). Default: no upstream is known.
    fn open_grpc_stream(
        &self,
        stream: GrpcStream,
        events: GrpcStreamEvents,
    ) -> Result<Box<dyn GrpcStreamSink>, Status> {
        let _ = (stream, events);
        Err(Status::InternalFailure)
    }
}

/// The plugin's side of a gRPC stream, given by [`Host::open_grpc_stream`]. Called inside host
/// calls with the VM locked: queue the work and return, never block.
///
/// **Dropping the sink resets the stream** (HTTP/2 `RST_STREAM`, Envoy's `resetStream`) unless it
/// already ended: the plugin called `proxy_grpc_cancel`, its context went away or its VM did.
pub trait GrpcStreamSink: Send {
    /// One message (the host adds the 5-byte gRPC frame header), in the order the plugin sent
    /// them; `end_stream` half-closes after it. Ignore messages after the stream half-closed.
    fn send(&mut self, message: Vec<u8>, end_stream: bool);

    /// Half-closes the stream (`proxy_grpc_close`: END_STREAM, no message); replies still arrive.
    /// A no-op after an earlier half-close.
    fn close(&mut self);
}

/// The way back for a gRPC stream: what the upstream sends, delivered to the VM that opened the
/// stream in the order reported here (after its current callback, if it is busy). `Send + 'static`:
/// move it into the task doing the stream's I/O.
///
/// A stream ends with exactly one [`GrpcStreamEvents::close`]; dropping the events without it
/// closes the stream with 14 UNAVAILABLE. Events for a stream the plugin cancelled are dropped.
pub struct GrpcStreamEvents {
    slot: Weak<Slot>,
    generation: u64,
    token: u32,
    closed: bool,
}

impl GrpcStreamEvents {
    pub(crate) fn new(slot: Weak<Slot>, generation: u64, token: u32) -> Self {
        Self {
            slot,
            generation,
            token,
            closed: false,
        }
    }

    /// The response headers: `proxy_on_grpc_receive_initial_metadata`. For a trailers-only
    /// response Envoy's gRPC client reports empty initial metadata, then the headers as trailing
    /// metadata.
    pub fn initial_metadata(&self, metadata: HeaderList) {
        self.send(GrpcStreamEvent::InitialMetadata(metadata));
    }

    /// One received message, without its frame header: one `proxy_on_grpc_receive` each.
    pub fn message(&self, message: Vec<u8>) {
        self.send(GrpcStreamEvent::Message(message));
    }

    /// The trailers: `proxy_on_grpc_receive_trailing_metadata`.
    pub fn trailing_metadata(&self, metadata: HeaderList) {
        self.send(GrpcStreamEvent::TrailingMetadata(metadata));
    }

    /// The stream ended remotely (or failed): `proxy_on_grpc_close` with the gRPC status, whose
    /// message `proxy_get_status` answers. Status 0 is a clean end.
    pub fn close(mut self, status: u32, message: impl Into<String>) {
        self.closed = true;
        self.send(GrpcStreamEvent::Close {
            status,
            message: message.into(),
        });
    }

    fn send(&self, event: GrpcStreamEvent) {
        if let Some(slot) = self.slot.upgrade() {
            deliver(
                &slot,
                Task::GrpcStream {
                    generation: self.generation,
                    token: self.token,
                    event,
                },
            );
        }
    }
}

impl Drop for GrpcStreamEvents {
    fn drop(&mut self) {
        if !self.closed {
            self.send(GrpcStreamEvent::Close {
                status: 14,
                message: "upstream unavailable".into(),
            });
        }
    }
}

impl std::fmt::Debug for GrpcStreamEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcStreamEvents")
            .field("token", &self.token)
            .finish_non_exhaustive()
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
