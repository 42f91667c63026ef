//! What a VM's `Store` holds: contexts and their owned data. `Store<T: 'static>` cannot borrow a
//! request, so every callback moves the proxy's data in here and back out (see `context.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::abi::{AbiVersion, BufferType, LogLevel, MapType, Status};
use crate::context::Direction;
use crate::engine::RuntimeInner;
use crate::host::GrpcStreamSink;
use crate::metrics::{GuestMetric, PluginStatsInner};
use crate::plugin::Slot;
use crate::types::{CallResponse, FailStrategy, HeaderList, LocalReply, Outcome, StreamInfo};

/// A plugin as the VM sees it: what `plugin_name`, `plugin_root_id` and the configuration
/// buffers answer, and where its stats go.
pub(crate) struct PluginMeta {
    pub id: u64,
    pub name: String,
    pub root_id: String,
    pub configuration: Vec<u8>,
    pub log_level: LogLevel,
    pub fail_strategy: FailStrategy,
    pub reload_backoff: Duration,
    pub stats: Arc<PluginStatsInner>,
    /// Per worker slot: why this plugin cannot run there, and (FAIL_RELOAD) when to try again.
    pub failures: Mutex<Vec<Option<SlotFailure>>>,
    /// Set (never cleared) once an entry of `failures` was: until then streams need not lock
    /// `failures`, a lock every worker would otherwise take for every stream. Slot `i`'s entry is
    /// only set with slot `i` locked, and read with it locked, so `Relaxed` is enough.
    pub ever_failed: AtomicBool,
}

pub(crate) struct SlotFailure {
    pub reason: crate::error::RuntimeError,
    pub retry_at: std::time::Instant,
}

/// Wakes a paused stream's [`Stream::resumed`](crate::Stream::resumed) future.
///
/// `fire` and `clear` run with the stream's VM slot locked (inside callbacks and tasks), so
/// they never race each other; `poll` runs in the proxy's task, unlocked.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<(Option<Outcome>, Option<Waker>)>,
    /// Fired since the last `clear`: lets `clear`, which every stream callback runs, skip the
    /// lock when there is nothing to forget (the usual case). Ordered by the slot lock.
    fired: AtomicBool,
}

impl Signal {
    pub fn fire(&self, outcome: Outcome) {
        self.fired.store(true, Relaxed);
        let waker = {
            let mut state = self.state.lock();
            state.0 = Some(outcome);
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub fn clear(&self) {
        // A load, not a swap: no atomic read-modify-write on the usual path.
        if self.fired.load(Relaxed) {
            self.fired.store(false, Relaxed);
            self.state.lock().0 = None;
        }
    }

    pub fn poll(&self, waker: &Waker) -> Poll<Outcome> {
        let mut state = self.state.lock();
        match state.0.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                state.1 = Some(waker.clone());
                Poll::Pending
            }
        }
    }
}

/// Host actions a plugin requested during a VM call, run after it returns (cpp-host
/// `DeferAfterCallActions`), so a local reply never re-enters the VM.
#[derive(Default)]
pub(crate) struct Pending {
    pub local_reply: Option<LocalReply>,
    pub continue_request: bool,
    pub continue_response: bool,
    pub close: bool,
}

pub(crate) struct RootCtx {
    pub plugin: Arc<PluginMeta>,
    pub props: HashMap<Vec<u8>, Vec<u8>>,
}

pub(crate) struct StreamCtx {
    pub root: u32,
    pub plugin: Arc<PluginMeta>,
    /// Shared by every plugin of the request: one allocation per request, not per plugin.
    pub info: Arc<StreamInfo>,
    pub request_headers: Option<HeaderList>,
    pub request_trailers: Option<HeaderList>,
    pub response_headers: Option<HeaderList>,
    pub response_trailers: Option<HeaderList>,
    /// The body buffer offered in the current body callback (chunk, or everything buffered).
    pub request_body: Option<BodyBuffer>,
    pub response_body: Option<BodyBuffer>,
    /// Bytes counted for `request.size`/`response.size`.
    pub request_body_seen: u64,
    pub response_body_seen: u64,
    pub props: HashMap<Vec<u8>, Vec<u8>>,
    pub pending: Pending,
    pub signal: Arc<Signal>,
    /// Inside `proxy_on_log` (maps that are gone answer `NotFound`, as Envoy's access-log phase).
    pub log_phase: bool,
}

impl StreamCtx {
    /// The body buffer of the `dir` direction.
    pub fn body_mut(&mut self, dir: Direction) -> &mut Option<BodyBuffer> {
        match dir {
            Direction::Request => &mut self.request_body,
            Direction::Response => &mut self.response_body,
        }
    }
}

/// A body callback's buffer: the proxy's chunk itself until the plugin edits it or a pause makes
/// chunks accumulate, so a plugin that only looks at (or ignores) the body costs no copy of it.
pub(crate) struct BodyBuffer {
    shared: Bytes,
    /// Set once edited or appended to; `shared` is then empty.
    owned: Option<Vec<u8>>,
}

impl BodyBuffer {
    pub fn new(chunk: Bytes) -> Self {
        BodyBuffer {
            shared: chunk,
            owned: None,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        self.owned.as_deref().unwrap_or(&self.shared)
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The bytes to edit or append to; the first edit copies a shared chunk (or takes it over,
    /// when nothing else refers to it).
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        self.owned
            .get_or_insert_with(|| Vec::from(std::mem::take(&mut self.shared)))
    }

    pub fn into_bytes(self) -> Bytes {
        self.owned.map_or(self.shared, Bytes::from)
    }
}

pub(crate) enum Context {
    Root(RootCtx),
    Stream(Box<StreamCtx>),
}

/// Memory limiter that also remembers *why* a later trap happened.
pub(crate) struct Limiter {
    pub max_bytes: usize,
    pub exceeded: bool,
    pub current_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        self.current_bytes = desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Kinds of callout ids, in their low two bits (Envoy's `Wasm::CalloutType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CalloutKind {
    HttpCall = 0,
    GrpcCall = 1,
    GrpcStream = 2,
}

impl CalloutKind {
    pub fn of(token: u32) -> Option<Self> {
        match token & 3 {
            0 => Some(Self::HttpCall),
            1 => Some(Self::GrpcCall),
            2 => Some(Self::GrpcStream),
            _ => None,
        }
    }
}

/// One gRPC stream as Envoy keeps it (`GrpcStreamClientHandler`): forgotten when both sides
/// closed, or at once on cancel.
pub(crate) struct GrpcStreamEntry {
    /// The context that opened it, which receives its callbacks.
    pub ctx: u32,
    /// `None` once the upstream ended the stream: nothing is left to send or reset.
    pub sink: Option<Box<dyn GrpcStreamSink>>,
    /// The plugin called `proxy_grpc_close`.
    pub local_closed: bool,
    /// `proxy_on_grpc_close` was delivered.
    pub remote_closed: bool,
}

/// The `T` of `Store<T>`: one per VM.
pub(crate) struct VmState {
    pub rt: Arc<RuntimeInner>,
    pub limiter: Limiter,
    pub abi: AbiVersion,
    pub memory: Option<Memory>,
    pub malloc: Option<Arc<TypedFunc<i32, i32>>>,
    pub vm_id: String,
    /// Name used for logs that no plugin context owns (e.g. output of `_initialize`).
    pub vm_name: String,
    pub vm_configuration: Arc<[u8]>,
    pub env: Arc<[(String, String)]>,
    pub next_context_id: u32,
    /// Looked up on every host call: keyed by ids the host hands out, so a fast non-keyed hash
    /// is safe (SipHash here was ≈ 1 µs per request through a 5-plugin chain).
    pub contexts: FxHashMap<u32, Context>,
    /// Root context of each plugin (by plugin id) living in this VM.
    pub roots: FxHashMap<u64, u32>,
    /// The context of the callback running now, and the one `proxy_set_effective_context` chose.
    pub current_ctx: u32,
    pub effective_ctx: u32,
    /// While the guest allocator runs (and in `_initialize`), only a few host calls are allowed.
    pub restricted: bool,
    /// Inside `proxy_on_vm_start` (ABI 0.1.0 `proxy_get_configuration` answers the VM configuration).
    pub in_vm_start: bool,
    /// The response being delivered in `proxy_on_http_call_response` / gRPC callbacks.
    pub call_response: Option<CallResponse>,
    /// `proxy_get_status` answer, set around gRPC and failed-call callbacks.
    pub last_status: (u32, Vec<u8>),
    /// Last id handed out per callout kind ([`CalloutKind`]): ids step by 4 and their low two
    /// bits say the kind, as Envoy's `nextHttpCallId`/`nextGrpcCallId`/`nextGrpcStreamId`.
    pub next_callout: [u32; 3],
    /// Outstanding HTTP and unary gRPC calls: token → context that made them.
    pub calls: FxHashMap<u32, u32>,
    /// gRPC streams the plugin has not forgotten yet: token → stream.
    pub grpc_streams: FxHashMap<u32, GrpcStreamEntry>,
    pub metrics: Vec<Arc<GuestMetric>>,
    /// Streams whose deferred actions were set since they were last collected.
    pub touched: Vec<u32>,
    pub slot: Weak<Slot>,
    pub generation: u64,
}

impl VmState {
    pub fn plugin_of(&self, ctx: u32) -> Option<&Arc<PluginMeta>> {
        match self.contexts.get(&ctx)? {
            Context::Root(r) => Some(&r.plugin),
            Context::Stream(s) => Some(&s.plugin),
        }
    }

    /// The plugin a log line from the guest belongs to.
    pub fn log_name(&self) -> &str {
        self.plugin_of(self.effective_ctx)
            .map_or(self.vm_name.as_str(), |p| p.name.as_str())
    }

    pub fn log_level(&self) -> LogLevel {
        self.plugin_of(self.effective_ctx)
            .map_or(LogLevel::Info, |p| p.log_level)
    }

    pub fn log(&self, level: LogLevel, msg: &str) {
        if level >= self.log_level() {
            let max = self.rt.limits.max_log_message_bytes;
            let msg = if msg.len() > max {
                let mut end = max;
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                &msg[..end]
            } else {
                msg
            };
            self.rt.host.log(self.log_name(), level, msg);
        }
    }

    pub fn stream(&self) -> Result<&StreamCtx, Status> {
        match self.contexts.get(&self.effective_ctx) {
            Some(Context::Stream(s)) => Ok(s),
            _ => Err(Status::BadArgument),
        }
    }

    pub fn stream_mut(&mut self) -> Result<&mut StreamCtx, Status> {
        match self.contexts.get_mut(&self.effective_ctx) {
            Some(Context::Stream(s)) => Ok(s),
            _ => Err(Status::BadArgument),
        }
    }

    /// The effective stream's deferred actions, remembering that it has some.
    pub fn pending_mut(&mut self) -> Result<&mut Pending, Status> {
        let ctx = self.effective_ctx;
        if !self.touched.contains(&ctx) {
            self.touched.push(ctx);
        }
        Ok(&mut self.stream_mut()?.pending)
    }

    /// The root context of the effective context (itself for a root).
    pub fn root_id(&self) -> Option<u32> {
        match self.contexts.get(&self.effective_ctx)? {
            Context::Root(_) => Some(self.effective_ctx),
            Context::Stream(s) => Some(s.root),
        }
    }

    /// Envoy: a map that does not exist in this phase is `BadArgument`, except in the access-log
    /// phase where it is `NotFound`.
    fn missing_map(&self) -> Status {
        match self.stream() {
            Ok(s) if s.log_phase => Status::NotFound,
            _ => Status::BadArgument,
        }
    }

    pub fn header_map(&self, map: MapType) -> Result<&HeaderList, Status> {
        let found = match map {
            MapType::HttpCallResponseHeaders | MapType::GrpcInitialMetadata => {
                self.call_response.as_ref().map(|r| &r.headers)
            }
            MapType::HttpCallResponseTrailers | MapType::GrpcTrailingMetadata => {
                self.call_response.as_ref().map(|r| &r.trailers)
            }
            _ => {
                let s = self.stream().map_err(|_| self.missing_map())?;
                match map {
                    MapType::RequestHeaders => s.request_headers.as_ref(),
                    MapType::RequestTrailers => s.request_trailers.as_ref(),
                    MapType::ResponseHeaders => s.response_headers.as_ref(),
                    _ => s.response_trailers.as_ref(),
                }
            }
        };
        found.ok_or_else(|| self.missing_map())
    }

    pub fn header_map_mut(&mut self, map: MapType) -> Result<&mut HeaderList, Status> {
        let missing = self.missing_map();
        let found = match map {
            // Envoy lets plugins edit a call response's maps; they are gone after the callback.
            MapType::HttpCallResponseHeaders | MapType::GrpcInitialMetadata => {
                self.call_response.as_mut().map(|r| &mut r.headers)
            }
            MapType::HttpCallResponseTrailers | MapType::GrpcTrailingMetadata => {
                self.call_response.as_mut().map(|r| &mut r.trailers)
            }
            _ => {
                let s = self.stream_mut().map_err(|_| missing)?;
                match map {
                    MapType::RequestHeaders => s.request_headers.as_mut(),
                    MapType::RequestTrailers => s.request_trailers.as_mut(),
                    MapType::ResponseHeaders => s.response_headers.as_mut(),
                    _ => s.response_trailers.as_mut(),
                }
            }
        };
        found.ok_or(missing)
    }

    /// Read access to a buffer. Configuration buffers are readable from any context of the plugin.
    pub fn buffer(&self, buffer: BufferType) -> Result<&[u8], Status> {
        match buffer {
            BufferType::VmConfiguration => Ok(&self.vm_configuration),
            BufferType::PluginConfiguration => self
                .plugin_of(self.effective_ctx)
                .map(|p| p.configuration.as_slice())
                .ok_or(Status::NotFound),
            BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => self
                .call_response
                .as_ref()
                .map(|r| r.body.as_slice())
                .ok_or(Status::NotFound),
            BufferType::RequestBody => self
                .stream()
                .ok()
                .and_then(|s| s.request_body.as_ref().map(BodyBuffer::as_slice))
                .ok_or(Status::NotFound),
            BufferType::ResponseBody => self
                .stream()
                .ok()
                .and_then(|s| s.response_body.as_ref().map(BodyBuffer::as_slice))
                .ok_or(Status::NotFound),
            BufferType::DownstreamData
            | BufferType::UpstreamData
            | BufferType::ForeignFunctionArguments => Err(Status::NotFound),
        }
    }

    /// Write access: only the bodies of the current body callback and a call response body.
    pub fn buffer_mut(&mut self, buffer: BufferType) -> Result<&mut Vec<u8>, Status> {
        match buffer {
            BufferType::RequestBody => self
                .stream_mut()
                .ok()
                .and_then(|s| s.request_body.as_mut().map(BodyBuffer::to_mut))
                .ok_or(Status::NotFound),
            BufferType::ResponseBody => self
                .stream_mut()
                .ok()
                .and_then(|s| s.response_body.as_mut().map(BodyBuffer::to_mut))
                .ok_or(Status::NotFound),
            BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => self
                .call_response
                .as_mut()
                .map(|r| &mut r.body)
                .ok_or(Status::NotFound),
            _ => Err(Status::BadArgument),
        }
    }

    /// Properties written by `proxy_set_property` on the effective context.
    pub fn props_mut(&mut self) -> Result<&mut HashMap<Vec<u8>, Vec<u8>>, Status> {
        match self.contexts.get_mut(&self.effective_ctx) {
            Some(Context::Stream(s)) => Ok(&mut s.props),
            Some(Context::Root(r)) => Ok(&mut r.props),
            None => Err(Status::BadArgument),
        }
    }

    pub fn props(&self) -> Option<&HashMap<Vec<u8>, Vec<u8>>> {
        match self.contexts.get(&self.effective_ctx)? {
            Context::Stream(s) => Some(&s.props),
            Context::Root(r) => Some(&r.props),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untouched_body_goes_back_as_the_same_bytes() {
        let chunk = Bytes::from(vec![b'x'; 64]);
        let buffer = BodyBuffer::new(chunk.clone());
        assert_eq!(buffer.as_slice(), &chunk[..]);
        assert_eq!(buffer.into_bytes().as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn an_edited_body_is_a_copy_and_the_chunk_stays_as_it_was() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = BodyBuffer::new(chunk.clone());
        buffer.to_mut().extend_from_slice(b" world");
        assert_eq!(buffer.len(), 11);
        assert_eq!(buffer.as_slice(), b"hello world");
        assert_eq!(&buffer.into_bytes()[..], b"hello world");
        assert_eq!(&chunk[..], b"hello");
    }
}
