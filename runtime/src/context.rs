//! Layer (b), as in cpp-host `context.cc`: root and stream context lifecycle, action clamping,
//! `StopIteration` translation, deferred host actions and fail policy. It works on owned data
//! inside one VM and knows nothing of the proxy.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use wasmtime::TypedFunc;

use crate::abi::Status;
use crate::error::RuntimeError;
use crate::host::{CallCompletion, GrpcStreamEvents};
use crate::plugin::{GrpcStreamEvent, Task};
use crate::state::{
    BodyBuffer, CalloutKind, Context, GrpcStreamEntry, PluginMeta, RootCtx, Signal, StreamCtx,
    VmState,
};
use crate::types::{
    Action, CallResponse, FailAction, FailStrategy, GrpcCall, GrpcStream, HeaderList, HttpCall,
    LocalReply, Outcome, StreamInfo,
};
use crate::vm::Vm;

fn next_context_id(state: &mut VmState) -> u32 {
    let id = state.next_context_id;
    state.next_context_id = state.next_context_id.wrapping_add(1).max(1);
    id
}

/// Creates the plugin's root context and runs `proxy_on_context_create(root, 0)`,
/// `proxy_on_vm_start` and `proxy_on_configure` (cpp-host `onStart`/`onConfigure`; like cpp-host,
/// every root context gets its own `proxy_on_vm_start`, which SDKs route by context id).
pub(crate) fn create_root(vm: &mut Vm, plugin: &Arc<PluginMeta>) -> Result<u32, RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let id = next_context_id(vm.store.data_mut());
    vm.store.data_mut().contexts.insert(
        id,
        Context::Root(RootCtx {
            plugin: plugin.clone(),
            props: Default::default(),
        }),
    );
    let budget = vm.store.data().rt.limits.start_timeout;
    let start = |vm: &mut Vm| -> Result<bool, RuntimeError> {
        if let Some(f) = cb.context_create.as_ref() {
            vm.call("proxy_on_context_create", id, budget, |s| {
                f.call(s, (id as i32, 0))
            })?;
        }
        let Some(f) = cb.vm_start.as_ref() else {
            return Ok(true);
        };
        let size = vm.store.data().vm_configuration.len() as i32;
        vm.store.data_mut().in_vm_start = true;
        let ok = vm.call("proxy_on_vm_start", id, budget, |s| {
            f.call(s, (id as i32, size))
        });
        vm.store.data_mut().in_vm_start = false;
        Ok(ok? != 0)
    };
    let started = start(vm).map_err(|e| RuntimeError::Start {
        plugin: plugin.name.clone(),
        reason: e.to_string(),
    });
    let result = started.and_then(|ok| {
        if !ok {
            return Err(RuntimeError::Start {
                plugin: plugin.name.clone(),
                reason: "proxy_on_vm_start returned false".into(),
            });
        }
        let Some(f) = cb.configure.as_ref() else {
            return Ok(());
        };
        let size = plugin.configuration.len() as i32;
        let ok = vm
            .call("proxy_on_configure", id, budget, |s| {
                f.call(s, (id as i32, size))
            })
            .map_err(|e| RuntimeError::Configure {
                plugin: plugin.name.clone(),
                reason: e.to_string(),
            })?;
        if ok == 0 {
            return Err(RuntimeError::Configure {
                plugin: plugin.name.clone(),
                reason: "proxy_on_configure returned false (see the plugin's log for why)".into(),
            });
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            vm.store.data_mut().roots.insert(plugin.id, id);
            Ok(id)
        }
        Err(e) => {
            if vm.failed.is_none() {
                finish_context(vm, id, true);
            }
            vm.store.data_mut().contexts.remove(&id);
            Err(e)
        }
    }
}

/// Plugin shutdown: `proxy_on_done(root)` then `proxy_on_delete(root)`.
pub(crate) fn delete_root(vm: &mut Vm, plugin_id: u64) {
    if let Some(root) = vm.store.data_mut().roots.remove(&plugin_id) {
        if vm.failed.is_none() {
            finish_context(vm, root, false);
        }
        vm.store.data_mut().contexts.remove(&root);
    }
}

/// `proxy_on_done`, optionally `proxy_on_log`, then `proxy_on_delete`. Failures here only mark
/// the VM failed; there is no request left to apply a fail strategy to.
fn finish_context(vm: &mut Vm, ctx: u32, log: bool) {
    let cb = Arc::clone(&vm.cb);
    let budget = vm.store.data().rt.limits.callback_timeout;
    let since = &mut None;
    if let Some(f) = cb.done.as_ref() {
        let _ = vm.call_after(since, "proxy_on_done", ctx, budget, |s| {
            f.call(s, ctx as i32)
        });
    }
    if log && let Some(f) = cb.log.as_ref() {
        let _ = vm.call_after(since, "proxy_on_log", ctx, budget, |s| {
            f.call(s, ctx as i32)
        });
    }
    if let Some(f) = cb.delete.as_ref() {
        let _ = vm.call_after(since, "proxy_on_delete", ctx, budget, |s| {
            f.call(s, ctx as i32)
        });
    }
}

/// A stream context: `proxy_on_context_create(stream, root)`.
pub(crate) fn create_stream(
    vm: &mut Vm,
    plugin: &Arc<PluginMeta>,
    root: u32,
    info: Arc<StreamInfo>,
) -> Result<(u32, Arc<Signal>), RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let id = next_context_id(vm.store.data_mut());
    let signal = Arc::new(Signal::default());
    vm.store.data_mut().contexts.insert(
        id,
        Context::Stream(Box::new(StreamCtx {
            root,
            plugin: plugin.clone(),
            info,
            request_headers: None,
            request_trailers: None,
            response_headers: None,
            response_trailers: None,
            request_body: None,
            response_body: None,
            request_body_seen: 0,
            response_body_seen: 0,
            props: Default::default(),
            pending: Default::default(),
            signal: signal.clone(),
            log_phase: false,
        })),
    );
    if let Some(f) = cb.context_create.as_ref() {
        let budget = vm.store.data().rt.limits.callback_timeout;
        vm.call("proxy_on_context_create", id, budget, |s| {
            f.call(s, (id as i32, root as i32))
        })?;
    }
    Ok((id, signal))
}

fn stream_mut(vm: &mut Vm, ctx: u32) -> Result<&mut StreamCtx, RuntimeError> {
    match vm.store.data_mut().contexts.get_mut(&ctx) {
        Some(Context::Stream(s)) => Ok(s),
        _ => Err(RuntimeError::Failed(
            "stream context no longer exists".into(),
        )),
    }
}

/// cpp-host `convertVmCallResultToFilterHeadersStatus`: 0 Continue, 2 ContinueAndEndStream;
/// 1 (`StopIteration`, what SDKs call Pause) becomes StopAllIterationAndWatermark — body held
/// too — and so does any out-of-range value.
fn headers_action(raw: i32) -> Action {
    match raw {
        0 | 2 => Action::Continue,
        _ => Action::Pause,
    }
}

/// Body and trailers: 0 Continue; every stop variant (and out-of-range values) stops.
fn data_action(raw: i32) -> Action {
    if raw == 0 {
        Action::Continue
    } else {
        Action::Pause
    }
}

/// Turns deferred actions of the stream into the callback's outcome.
fn outcome(vm: &mut Vm, ctx: u32, action: Action) -> Outcome {
    // Other streams the plugin continued or answered (through proxy_set_effective_context).
    wake_streams(vm, ctx);
    let Ok(s) = stream_mut(vm, ctx) else {
        return Outcome::cont();
    };
    let pending = std::mem::take(&mut s.pending);
    if let Some(reply) = pending.local_reply {
        s.plugin.stats.local_reply(reply.status);
        return Outcome {
            action: Action::Pause,
            local_reply: Some(reply),
            fail: None,
        };
    }
    let action = if pending.close {
        Action::Close
    } else if action == Action::Pause && (pending.continue_request || pending.continue_response) {
        // Continued from inside its own callback: Envoy runs the deferred continue right after.
        Action::Continue
    } else {
        action
    };
    Outcome {
        action,
        local_reply: None,
        fail: None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

pub(crate) fn on_headers(
    vm: &mut Vm,
    ctx: u32,
    dir: Direction,
    headers: &mut HeaderList,
    end_of_stream: bool,
) -> Result<Outcome, RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let s = stream_mut(vm, ctx)?;
    s.signal_reset();
    let n = headers.len() as i32;
    let slot = match dir {
        Direction::Request => &mut s.request_headers,
        Direction::Response => &mut s.response_headers,
    };
    *slot = Some(std::mem::take(headers));
    let budget = vm.store.data().rt.limits.callback_timeout;
    let eos = i32::from(end_of_stream);
    let (name, v2, v1) = match dir {
        Direction::Request => (
            "proxy_on_request_headers",
            cb.request_headers.as_ref(),
            cb.request_headers_v1.as_ref(),
        ),
        Direction::Response => (
            "proxy_on_response_headers",
            cb.response_headers.as_ref(),
            cb.response_headers_v1.as_ref(),
        ),
    };
    let result = match (v2, v1) {
        (Some(f), _) => vm.call(name, ctx, budget, |st| f.call(st, (ctx as i32, n, eos))),
        (None, Some(f)) => vm.call(name, ctx, budget, |st| f.call(st, (ctx as i32, n))),
        (None, None) => Ok(0),
    };
    // The (possibly edited) headers go back to the proxy even if the guest trapped; the runtime
    // keeps its copy for later callbacks and for `request.*`/`response.*` properties.
    if let Ok(s) = stream_mut(vm, ctx) {
        let kept = match dir {
            Direction::Request => &s.request_headers,
            Direction::Response => &s.response_headers,
        };
        *headers = kept.clone().unwrap_or_default();
    }
    let raw = result?;
    Ok(outcome(vm, ctx, headers_action(raw)))
}

pub(crate) fn on_trailers(
    vm: &mut Vm,
    ctx: u32,
    dir: Direction,
    trailers: &mut HeaderList,
) -> Result<Outcome, RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let s = stream_mut(vm, ctx)?;
    s.signal_reset();
    let n = trailers.len() as i32;
    match dir {
        Direction::Request => s.request_trailers = Some(std::mem::take(trailers)),
        Direction::Response => s.response_trailers = Some(std::mem::take(trailers)),
    }
    let budget = vm.store.data().rt.limits.callback_timeout;
    let (name, f) = match dir {
        Direction::Request => ("proxy_on_request_trailers", cb.request_trailers.as_ref()),
        Direction::Response => ("proxy_on_response_trailers", cb.response_trailers.as_ref()),
    };
    let result = match f {
        Some(f) => vm.call(name, ctx, budget, |st| f.call(st, (ctx as i32, n))),
        None => Ok(0),
    };
    if let Ok(s) = stream_mut(vm, ctx) {
        let kept = match dir {
            Direction::Request => &s.request_trailers,
            Direction::Response => &s.response_trailers,
        };
        *trailers = kept.clone().unwrap_or_default();
    }
    let raw = result?;
    Ok(outcome(vm, ctx, data_action(raw)))
}

/// A body chunk. While the plugin pauses, chunks accumulate in the runtime and each callback
/// sees everything buffered so far (Envoy `StopIterationAndBuffer`); on continue the proxy gets
/// the whole (possibly rewritten) buffer back in `chunk`.
pub(crate) fn on_body(
    vm: &mut Vm,
    ctx: u32,
    dir: Direction,
    chunk: &mut Bytes,
    end_of_stream: bool,
) -> Result<Outcome, RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let max = vm.store.data().rt.limits.max_body_bytes;
    let s = stream_mut(vm, ctx)?;
    s.signal_reset();
    let (buffer, seen) = match dir {
        Direction::Request => (&mut s.request_body, &mut s.request_body_seen),
        Direction::Response => (&mut s.response_body, &mut s.response_body_seen),
    };
    *seen += chunk.len() as u64;
    // A clone, not a take: if the guest traps, the proxy still has the chunk (fail open).
    let data = match buffer.take() {
        None => BodyBuffer::new(chunk.clone()),
        Some(mut held) => {
            held.to_mut().extend_from_slice(chunk);
            held
        }
    };
    if data.len() > max {
        *chunk = Bytes::new();
        let (status, details) = match dir {
            Direction::Request => (413, "request_payload_too_large"),
            Direction::Response => (500, "response_payload_too_large"),
        };
        s.plugin.stats.local_reply(status);
        return Ok(Outcome {
            action: Action::Pause,
            local_reply: Some(LocalReply {
                status,
                details: details.into(),
                body: Vec::new(),
                headers: HeaderList::new(),
                grpc_status: None,
            }),
            fail: None,
        });
    }
    let size = data.len() as i32;
    *buffer = Some(data);
    let budget = vm.store.data().rt.limits.callback_timeout;
    let (name, f) = match dir {
        Direction::Request => ("proxy_on_request_body", cb.request_body.as_ref()),
        Direction::Response => ("proxy_on_response_body", cb.response_body.as_ref()),
    };
    let eos = i32::from(end_of_stream);
    let result = match f {
        Some(f) => vm.call(name, ctx, budget, |st| f.call(st, (ctx as i32, size, eos))),
        None => Ok(0),
    };
    let raw = result?;
    let out = outcome(vm, ctx, data_action(raw));
    let buffer = stream_mut(vm, ctx)?.body_mut(dir);
    *chunk = if out.action == Action::Pause {
        Bytes::new()
    } else {
        buffer
            .take()
            .map(BodyBuffer::into_bytes)
            .unwrap_or_default()
    };
    Ok(out)
}

/// Takes what the runtime buffered for a paused body (after [`Stream::resumed`]).
pub(crate) fn take_buffered(vm: &mut Vm, ctx: u32, dir: Direction) -> Bytes {
    match stream_mut(vm, ctx) {
        Ok(s) => s
            .body_mut(dir)
            .take()
            .map(BodyBuffer::into_bytes)
            .unwrap_or_default(),
        Err(_) => Bytes::new(),
    }
}

/// `proxy_on_done` then `proxy_on_log` (Envoy drives log from its access-log phase, after the
/// response; the request and response maps stay readable).
pub(crate) fn on_log(vm: &mut Vm, ctx: u32) -> Result<(), RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let budget = vm.store.data().rt.limits.callback_timeout;
    let since = &mut None;
    if let Some(f) = cb.done.as_ref() {
        vm.call_after(since, "proxy_on_done", ctx, budget, |s| {
            f.call(s, ctx as i32)
        })?;
    }
    stream_mut(vm, ctx)?.log_phase = true;
    if let Some(f) = cb.log.as_ref() {
        vm.call_after(since, "proxy_on_log", ctx, budget, |s| {
            f.call(s, ctx as i32)
        })?;
    }
    Ok(())
}

/// End of a stream context: `proxy_on_done` (unless `on_log` already ran it), `proxy_on_delete`.
/// Outstanding calls of the context are forgotten: their responses will not be delivered.
pub(crate) fn on_delete(vm: &mut Vm, ctx: u32, done_already: bool) {
    let cb = Arc::clone(&vm.cb);
    if vm.failed.is_none() {
        let budget = vm.store.data().rt.limits.callback_timeout;
        let since = &mut None;
        if !done_already && let Some(f) = cb.done.as_ref() {
            let _ = vm.call_after(since, "proxy_on_done", ctx, budget, |s| {
                f.call(s, ctx as i32)
            });
        }
        if vm.failed.is_none()
            && let Some(f) = cb.delete.as_ref()
        {
            let _ = vm.call_after(since, "proxy_on_delete", ctx, budget, |s| {
                f.call(s, ctx as i32)
            });
        }
    }
    let state = vm.store.data_mut();
    state.contexts.remove(&ctx);
    state.calls.retain(|_, owner| *owner != ctx);
    // As Envoy's `~Context`: the streams a context opened are reset with it.
    state.grpc_streams.retain(|_, s| s.ctx != ctx);
}

/// Runs a task delivered to this VM from outside a callback: a call response, a queue
/// notification or a timer tick. Streams whose plugin continued or answered them are woken.
pub(crate) fn run_task(vm: &mut Vm, task: Task) -> Result<(), RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let budget = vm.store.data().rt.limits.callback_timeout;
    let result = match task {
        Task::CallResponse {
            token,
            response,
            grpc,
            ..
        } => {
            let Some(ctx) = vm.store.data_mut().calls.remove(&token) else {
                return Ok(());
            };
            if !vm.store.data().contexts.contains_key(&ctx) {
                return Ok(());
            }
            let result = deliver_response(vm, ctx, token, response, grpc, budget);
            let state = vm.store.data_mut();
            state.call_response = None;
            state.last_status = (0, Vec::new());
            result
        }
        Task::QueueReady { root, queue, .. } => match cb.queue_ready.as_ref() {
            Some(f) if vm.store.data().contexts.contains_key(&root) => {
                vm.call("proxy_on_queue_ready", root, budget, |s| {
                    f.call(s, (root as i32, queue as i32))
                })
            }
            _ => Ok(()),
        },
        Task::GrpcStream { token, event, .. } => {
            let result = deliver_stream_event(vm, token, event, budget);
            let state = vm.store.data_mut();
            state.call_response = None;
            state.last_status = (0, Vec::new());
            result
        }
        Task::Tick { root, .. } => match cb.tick.as_ref() {
            Some(f) if vm.store.data().contexts.contains_key(&root) => {
                vm.call("proxy_on_tick", root, budget, |s| f.call(s, root as i32))
            }
            _ => {
                let state = vm.store.data();
                state
                    .rt
                    .timers
                    .set(state.slot.clone(), state.generation, root, None);
                Ok(())
            }
        },
    };
    wake_streams(vm, 0);
    result
}

fn deliver_response(
    vm: &mut Vm,
    ctx: u32,
    token: u32,
    response: Option<CallResponse>,
    grpc: bool,
    budget: std::time::Duration,
) -> Result<(), RuntimeError> {
    let cb = Arc::clone(&vm.cb);
    let (t, c) = (token as i32, ctx as i32);
    if !grpc {
        let r = response.unwrap_or_default();
        let sizes = (
            r.headers.len() as i32,
            r.body.len() as i32,
            r.trailers.len() as i32,
        );
        vm.store.data_mut().call_response = Some(r);
        let Some(f) = cb.http_call_response.as_ref() else {
            return Ok(());
        };
        return vm.call("proxy_on_http_call_response", ctx, budget, |s| {
            f.call(s, (c, t, sizes.0, sizes.1, sizes.2))
        });
    }
    // Unary gRPC: success is initial metadata, the message and trailing metadata; failure is
    // `proxy_on_grpc_close` with the status (14 UNAVAILABLE when the host gave no response).
    let r = response.unwrap_or_else(|| CallResponse {
        grpc_status: 14,
        grpc_message: "upstream unavailable".into(),
        ..Default::default()
    });
    let (headers, body, trailers) = (
        r.headers.len() as i32,
        r.body.len() as i32,
        r.trailers.len() as i32,
    );
    let (status, message) = (r.grpc_status, r.grpc_message.clone());
    vm.store.data_mut().call_response = Some(r);
    let grpc = |vm: &mut Vm, name, f, n| grpc_callback(vm, name, f, ctx, budget, (c, t, n));
    if status != 0 {
        vm.store.data_mut().last_status = (status, message.into_bytes());
        return grpc(vm, GRPC_CLOSE, &cb.grpc_close, status as i32);
    }
    if headers > 0 {
        grpc(
            vm,
            GRPC_INITIAL_METADATA,
            &cb.grpc_initial_metadata,
            headers,
        )?;
    }
    grpc(vm, GRPC_RECEIVE, &cb.grpc_receive, body)?;
    if trailers > 0 {
        grpc(
            vm,
            GRPC_TRAILING_METADATA,
            &cb.grpc_trailing_metadata,
            trailers,
        )?;
    }
    Ok(())
}

const GRPC_INITIAL_METADATA: &str = "proxy_on_grpc_receive_initial_metadata";
const GRPC_RECEIVE: &str = "proxy_on_grpc_receive";
const GRPC_TRAILING_METADATA: &str = "proxy_on_grpc_receive_trailing_metadata";
const GRPC_CLOSE: &str = "proxy_on_grpc_close";

/// Calls one of the gRPC callbacks, all `(context, token, size or status)`, if the module
/// exports it (a missing one is skipped, as in cpp-host).
fn grpc_callback(
    vm: &mut Vm,
    name: &'static str,
    f: &Option<TypedFunc<(i32, i32, i32), ()>>,
    ctx: u32,
    budget: std::time::Duration,
    args: (i32, i32, i32),
) -> Result<(), RuntimeError> {
    match f {
        Some(f) => vm.call(name, ctx, budget, |s| f.call(s, args)),
        None => Ok(()),
    }
}

/// Streams (other than `except`, whose caller collects its own) with deferred actions learn
/// them through their `resumed` future.
fn wake_streams(vm: &mut Vm, except: u32) {
    let state = vm.store.data_mut();
    let touched = std::mem::take(&mut state.touched);
    for ctx in touched {
        if ctx == except {
            continue;
        }
        let Some(Context::Stream(s)) = state.contexts.get_mut(&ctx) else {
            continue;
        };
        let pending = std::mem::take(&mut s.pending);
        let outcome = match pending.local_reply {
            Some(reply) => {
                s.plugin.stats.local_reply(reply.status);
                Outcome {
                    action: Action::Pause,
                    local_reply: Some(reply),
                    fail: None,
                }
            }
            None if pending.close => Outcome {
                action: Action::Close,
                local_reply: None,
                fail: None,
            },
            None if pending.continue_request || pending.continue_response => Outcome::cont(),
            None => continue,
        };
        s.signal.fire(outcome);
    }
}

/// When the VM fails, every paused stream in it is answered by its plugin's fail strategy.
pub(crate) fn fail_streams(vm: &mut Vm) {
    for context in vm.store.data_mut().contexts.values_mut() {
        if let Context::Stream(s) = context {
            s.signal.fire(fail_outcome(&s.plugin));
        }
    }
}

/// Envoy's fail policy for one stream: `FAIL_OPEN` continues without the plugin; `FAIL_CLOSE`
/// and `FAIL_RELOAD` (for streams of the failed VM) answer 503 `wasm_fail_stream`, gRPC
/// UNAVAILABLE. Counted in the plugin's stats when handed to the proxy ([`count_fail`]).
pub(crate) fn fail_outcome(plugin: &PluginMeta) -> Outcome {
    match plugin.fail_strategy {
        FailStrategy::FailOpen => Outcome {
            action: Action::Continue,
            local_reply: None,
            fail: Some(FailAction::Opened),
        },
        FailStrategy::FailClose | FailStrategy::FailReload => Outcome {
            action: Action::Pause,
            local_reply: Some(LocalReply {
                status: 503,
                details: "wasm_fail_stream".into(),
                body: Vec::new(),
                headers: HeaderList::new(),
                grpc_status: Some(14),
            }),
            fail: Some(FailAction::Closed),
        },
    }
}

/// Stats for a fail outcome the proxy receives.
pub(crate) fn count_fail(plugin: &PluginMeta, outcome: &Outcome) {
    if let Some(action) = outcome.fail {
        plugin.stats.fail(action);
        if let Some(reply) = &outcome.local_reply {
            plugin.stats.local_reply(reply.status);
        }
    }
}

/// The next callout id of a kind: Envoy's scheme, so a token alone tells a call from a stream.
/// Skips 0 (never a valid token) and ids still in use after a wrap.
fn next_token(state: &mut VmState, kind: CalloutKind) -> u32 {
    let next = &mut state.next_callout[kind as usize];
    loop {
        *next = next.wrapping_add(4);
        let id = *next;
        if id != 0 && !state.calls.contains_key(&id) && !state.grpc_streams.contains_key(&id) {
            return id;
        }
    }
}

/// `proxy_http_call`: registered before the host sees it, so a host that answers at once (even
/// from inside `dispatch_http_call`) is delivered correctly, after the current callback.
pub(crate) fn dispatch_http_call(state: &mut VmState, call: HttpCall) -> Result<u32, Status> {
    let token = next_token(state, CalloutKind::HttpCall);
    state.calls.insert(token, state.effective_ctx);
    let done = CallCompletion::new(state.slot.clone(), state.generation, token, false);
    state
        .rt
        .host
        .dispatch_http_call(call, done)
        .inspect_err(|_| {
            state.calls.remove(&token);
        })?;
    Ok(token)
}

pub(crate) fn dispatch_grpc_call(state: &mut VmState, call: GrpcCall) -> Result<u32, Status> {
    let token = next_token(state, CalloutKind::GrpcCall);
    state.calls.insert(token, state.effective_ctx);
    let done = CallCompletion::new(state.slot.clone(), state.generation, token, true);
    state
        .rt
        .host
        .dispatch_grpc_call(call, done)
        .inspect_err(|_| {
            state.calls.remove(&token);
        })?;
    Ok(token)
}

/// `proxy_grpc_stream`: the stream is registered before the host sees it, so events the host
/// reports at once are delivered after the current callback.
pub(crate) fn open_grpc_stream(state: &mut VmState, stream: GrpcStream) -> Result<u32, Status> {
    if state.grpc_streams.len() >= state.rt.limits.max_grpc_streams {
        return Err(Status::InternalFailure);
    }
    let token = next_token(state, CalloutKind::GrpcStream);
    let events = GrpcStreamEvents::new(state.slot.clone(), state.generation, token);
    let sink = state.rt.host.open_grpc_stream(stream, events)?;
    state.grpc_streams.insert(
        token,
        GrpcStreamEntry {
            ctx: state.effective_ctx,
            sink: Some(sink),
            local_closed: false,
            remote_closed: false,
        },
    );
    Ok(token)
}

/// `proxy_grpc_send`, as Envoy's `grpcSend`: a call token is `BadArgument`, an unknown stream
/// `NotFound`; a stream the upstream already ended accepts and drops the message.
pub(crate) fn grpc_send(
    state: &mut VmState,
    token: u32,
    message: Vec<u8>,
    end_stream: bool,
) -> Result<(), Status> {
    if CalloutKind::of(token) != Some(CalloutKind::GrpcStream) {
        return Err(Status::BadArgument);
    }
    let entry = state.grpc_streams.get_mut(&token).ok_or(Status::NotFound)?;
    if let Some(sink) = entry.sink.as_mut() {
        sink.send(message, end_stream);
    }
    Ok(())
}

/// `proxy_grpc_close`, as Envoy's `grpcClose`: a unary call is cancelled; a stream is
/// half-closed (END_STREAM, replies still arrive) and forgotten once the upstream closed too.
pub(crate) fn grpc_close(state: &mut VmState, token: u32) -> Result<(), Status> {
    match CalloutKind::of(token) {
        Some(CalloutKind::GrpcCall) => state.calls.remove(&token).map(drop).ok_or(Status::NotFound),
        Some(CalloutKind::GrpcStream) => {
            let entry = state.grpc_streams.get_mut(&token).ok_or(Status::NotFound)?;
            if let Some(sink) = entry.sink.as_mut() {
                sink.close();
            }
            if entry.remote_closed {
                state.grpc_streams.remove(&token);
            } else {
                entry.local_closed = true;
            }
            Ok(())
        }
        _ => Err(Status::BadArgument),
    }
}

/// `proxy_grpc_cancel`, as Envoy's `grpcCancel`: a unary call is cancelled; a stream is reset
/// (dropping its sink) and forgotten: no callback of it runs any more.
pub(crate) fn grpc_cancel(state: &mut VmState, token: u32) -> Result<(), Status> {
    match CalloutKind::of(token) {
        Some(CalloutKind::GrpcCall) => state.calls.remove(&token).map(drop).ok_or(Status::NotFound),
        Some(CalloutKind::GrpcStream) => state
            .grpc_streams
            .remove(&token)
            .map(drop)
            .ok_or(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

/// Delivers one event of a gRPC stream to the context that opened it.
fn deliver_stream_event(
    vm: &mut Vm,
    token: u32,
    event: GrpcStreamEvent,
    budget: std::time::Duration,
) -> Result<(), RuntimeError> {
    let Some(entry) = vm.store.data().grpc_streams.get(&token) else {
        // Cancelled, or closed on both sides: Envoy drops what is still in flight.
        return Ok(());
    };
    let ctx = entry.ctx;
    if !vm.store.data().contexts.contains_key(&ctx) {
        return Ok(());
    }
    let cb = Arc::clone(&vm.cb);
    let (c, t) = (ctx as i32, token as i32);
    let state = vm.store.data_mut();
    let (name, f, response) = match event {
        GrpcStreamEvent::InitialMetadata(headers) => (
            GRPC_INITIAL_METADATA,
            &cb.grpc_initial_metadata,
            CallResponse {
                headers,
                ..Default::default()
            },
        ),
        GrpcStreamEvent::Message(body) => (
            GRPC_RECEIVE,
            &cb.grpc_receive,
            CallResponse {
                body,
                ..Default::default()
            },
        ),
        GrpcStreamEvent::TrailingMetadata(trailers) => (
            GRPC_TRAILING_METADATA,
            &cb.grpc_trailing_metadata,
            CallResponse {
                trailers,
                ..Default::default()
            },
        ),
        GrpcStreamEvent::Close { status, message } => {
            if let Some(entry) = state.grpc_streams.get_mut(&token) {
                entry.remote_closed = true;
                entry.sink = None;
            }
            state.last_status = (status, message.into_bytes());
            let result = grpc_callback(
                vm,
                GRPC_CLOSE,
                &cb.grpc_close,
                ctx,
                budget,
                (c, t, status as i32),
            );
            // Envoy forgets the stream here only if the plugin had closed its side too.
            let streams = &mut vm.store.data_mut().grpc_streams;
            if streams.get(&token).is_some_and(|e| e.local_closed) {
                streams.remove(&token);
            }
            return result;
        }
    };
    // The size of what the callback can read: its only part of the response.
    let n = (response.headers.len() + response.body.len() + response.trailers.len()) as i32;
    state.call_response = Some(response);
    grpc_callback(vm, name, f, ctx, budget, (c, t, n))
}

impl StreamCtx {
    /// A new direct callback starts: forget a stale wake-up from an earlier pause.
    fn signal_reset(&self) {
        self.signal.clear();
    }
}

pub(crate) fn count_reload(plugin: &PluginMeta, ok: bool) {
    if ok {
        plugin.stats.reloads.fetch_add(1, Relaxed);
    } else {
        plugin.stats.reload_failures.fetch_add(1, Relaxed);
    }
}
