//! Every `env.proxy_*` host function (and emscripten's two), registered once on the shared
//! `Linker`. Each one decodes raw words, calls into `VmState` or the runtime's shared services,
//! and encodes a `Status`. Guest mistakes are statuses; the only traps are a host call made while
//! calls are restricted (cpp-host `restricted_callback`) and traps of the guest allocator itself.

use std::io::{Read, Write};
use std::time::{Duration, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::memory::{
    copy_out, copy_out_with, in_memory, read, read_string, slice, split, write_u32, write_u64,
};
use super::pairs;
use super::{BufferType, LogLevel, MapType, MetricKind, Status, StreamType};
use crate::state::VmState;
use crate::types::{GrpcCall, GrpcStream, HeaderList, HttpCall, LocalReply};

type C<'a> = Caller<'a, VmState>;
type R = wasmtime::Result<i32>;

/// Unwraps a `Result<T, Status>`, returning the status code to the guest on error.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return Ok(Status::code(status)),
        }
    };
}

/// What `proxy_grpc_call` and `proxy_grpc_stream` both read: upstream, service, method and
/// initial metadata, each a `(pointer, length)` in guest memory.
fn grpc_target(
    c: &C<'_>,
    upstream: (i32, i32),
    service: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
) -> Result<GrpcStream, Status> {
    Ok(GrpcStream {
        upstream: String::from_utf8_lossy(&read(c, upstream.0, upstream.1)?).into_owned(),
        service: read_string(c, service.0, service.1)?,
        method: read_string(c, method.0, method.1)?,
        initial_metadata: pairs_from(c, metadata.0, metadata.1)?,
    })
}

fn code(r: Result<(), Status>) -> i32 {
    r.map_or_else(Status::code, |()| Status::Ok.code())
}

/// cpp-host traps with `restricted_callback` when a guest calls the host from its allocator or
/// its start function; we do the same.
fn guard(caller: &C<'_>, name: &str) -> wasmtime::Result<()> {
    if caller.data().restricted {
        wasmtime::bail!(
            "restricted_callback: {name} may not be called from the guest allocator or start function"
        );
    }
    Ok(())
}

fn pairs_from(caller: &C<'_>, ptr: i32, len: i32) -> Result<HeaderList, Status> {
    let limits = &caller.data().rt.limits;
    let (count, bytes) = (limits.max_pairs_count, limits.max_pairs_bytes);
    let buf = slice(caller, ptr, len)?;
    let mut list = HeaderList::with_capacity(pairs::count_hint(buf).min(count), buf.len());
    pairs::decode_with(buf, count, bytes, |k, v| list.push(k, v))
        .map_err(|_| Status::BadArgument)?;
    Ok(list)
}

fn timeout(ms: i32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

pub(crate) fn add_to_linker(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    add_general(linker)?;
    add_headers_and_buffers(linker)?;
    add_stream_control(linker)?;
    add_calls(linker)?;
    add_shared(linker)?;
    add_metrics(linker)?;
    add_foreign_and_emscripten(linker)?;
    Ok(())
}

fn add_general(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    // proxy_log is the one call allowed everywhere, including in the allocator.
    l.func_wrap(
        "env",
        "proxy_log",
        |c: C<'_>, level: i32, ptr: i32, len: i32| -> R {
            let level = tri!(LogLevel::from_raw(level).ok_or(Status::BadArgument));
            let msg = tri!(slice(&c, ptr, len));
            c.data().log(level, &String::from_utf8_lossy(msg));
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> R {
            let level = c.data().log_level() as u32;
            Ok(code(write_u32(&mut c, ret, level)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R {
            let now = c.data().rt.host.now();
            let ns = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Ok(code(write_u64(&mut c, ret, ns)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |c: C<'_>, ms: i32| -> R {
            guard(&c, "proxy_set_tick_period_milliseconds")?;
            let state = c.data();
            let root = tri!(state.root_id().ok_or(Status::BadArgument));
            let period = (ms > 0).then(|| Duration::from_millis(ms as u32 as u64));
            state
                .rt
                .timers
                .set(state.slot.clone(), state.generation, root, period);
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, path_ptr: i32, path_len: i32, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_get_property")?;
            let path = tri!(slice(&c, path_ptr, path_len));
            let value = tri!(crate::properties::get(c.data(), path).ok_or(Status::NotFound));
            Ok(code(copy_out(&mut c, &value, ret_ptr, ret_len)?))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, path_ptr: i32, path_len: i32, val_ptr: i32, val_len: i32| -> R {
            guard(&c, "proxy_set_property")?;
            let path = tri!(read(&c, path_ptr, path_len));
            let value = tri!(read(&c, val_ptr, val_len));
            tri!(c.data_mut().props_mut()).insert(path, value);
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> R {
            guard(&c, "proxy_set_effective_context")?;
            let ctx = ctx as u32;
            if !c.data().contexts.contains_key(&ctx) {
                return Ok(Status::BadArgument.code());
            }
            c.data_mut().effective_ctx = ctx;
            Ok(0)
        },
    )?;
    l.func_wrap("env", "proxy_done", |c: C<'_>| -> R {
        guard(&c, "proxy_done")?;
        // We always run proxy_on_log/proxy_on_delete after proxy_on_done, whatever it returned,
        // so a later proxy_done has nothing left to release.
        Ok(0)
    })?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, ret_code: i32, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_get_status")?;
            let (status, msg) = c.data().last_status.clone();
            tri!(write_u32(&mut c, ret_code, status));
            Ok(code(copy_out(&mut c, &msg, ret_ptr, ret_len)?))
        },
    )?;
    // ABI 0.1.0: the configuration of the current phase (VM configuration in on_vm_start).
    l.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut c: C<'_>, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_get_configuration")?;
            let state = c.data();
            let which = if state.in_vm_start {
                BufferType::VmConfiguration
            } else {
                BufferType::PluginConfiguration
            };
            let config = tri!(state.buffer(which)).to_vec();
            Ok(code(copy_out(&mut c, &config, ret_ptr, ret_len)?))
        },
    )?;
    Ok(())
}

fn add_headers_and_buffers(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_get_header_map_pairs")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            // A reference count, so the map can be encoded straight into the guest's allocation.
            let list = tri!(c.data().header_map(map)).clone();
            let size = pairs::encoded_size(&list);
            Ok(code(copy_out_with(
                &mut c,
                size,
                ret_ptr,
                ret_len,
                |dst| pairs::encode_into(&list, dst),
            )?))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> R {
            guard(&c, "proxy_set_header_map_pairs")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            let list = tri!(pairs_from(&c, ptr, len));
            *tri!(c.data_mut().header_map_mut(map)) = list;
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, map: i32, ret: i32| -> R {
            guard(&c, "proxy_get_header_map_size")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            let size = pairs::encoded_size(tri!(c.data().header_map(map)));
            Ok(code(write_u32(&mut c, ret, size as u32)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: i32, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_get_header_map_value")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            let key = tri!(slice(&c, key_ptr, key_len));
            // A reference count: the value is copied once, from the map into the guest.
            let list = tri!(c.data().header_map(map)).clone();
            let value = match list.get(key) {
                Some(v) => v,
                // ABI 0.1.0 answered OK with an empty value; 0.2.x answers NOT_FOUND.
                None if c.data().abi == super::AbiVersion::V0_1_0 => &[],
                None => return Ok(Status::NotFound.code()),
            };
            Ok(code(copy_out(&mut c, value, ret_ptr, ret_len)?))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32| -> R {
            guard(&c, "proxy_add_header_map_value")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            let (memory, state) = tri!(split(&mut c));
            let key = tri!(in_memory(memory, key_ptr, key_len));
            let value = tri!(in_memory(memory, val_ptr, val_len));
            tri!(state.header_map_mut(map)).push(key, value);
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32| -> R {
            guard(&c, "proxy_replace_header_map_value")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            let (memory, state) = tri!(split(&mut c));
            let key = tri!(in_memory(memory, key_ptr, key_len));
            let value = tri!(in_memory(memory, val_ptr, val_len));
            tri!(state.header_map_mut(map)).replace(key, value);
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, key_ptr: i32, key_len: i32| -> R {
            guard(&c, "proxy_remove_header_map_value")?;
            let map = tri!(MapType::from_raw(map).ok_or(Status::BadArgument));
            let (memory, state) = tri!(split(&mut c));
            let key = tri!(in_memory(memory, key_ptr, key_len));
            tri!(state.header_map_mut(map)).remove(key);
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, buffer: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_get_buffer_bytes")?;
            let buffer = tri!(BufferType::from_raw(buffer).ok_or(Status::BadArgument));
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start.checked_add(max).is_none() {
                return Ok(Status::BadArgument.code());
            }
            let data = tri!(c.data().buffer(buffer));
            // As cpp-host: clamp to the buffer, and an empty result is NOT_FOUND.
            let end = data.len().min(start + max);
            if start >= end {
                return Ok(Status::NotFound.code());
            }
            let slice = data[start..end].to_vec();
            Ok(code(copy_out(&mut c, &slice, ret_ptr, ret_len)?))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, buffer: i32, start: i32, len: i32, val_ptr: i32, val_len: i32| -> R {
            guard(&c, "proxy_set_buffer_bytes")?;
            let buffer = tri!(BufferType::from_raw(buffer).ok_or(Status::BadArgument));
            let value = tri!(read(&c, val_ptr, val_len));
            let max_body = c.data().rt.limits.max_body_bytes;
            let data = tri!(c.data_mut().buffer_mut(buffer));
            let (start, len) = (start as u32 as usize, len as u32 as usize);
            // Envoy `Buffer::copyFrom`: at 0, drain `len` bytes then prepend; at or past the end,
            // append; anything else is BAD_ARGUMENT.
            let new_len = if start == 0 {
                data.len() - len.min(data.len()) + value.len()
            } else {
                data.len() + value.len()
            };
            if new_len > max_body {
                return Ok(Status::BadArgument.code());
            }
            if start == 0 {
                data.splice(..len.min(data.len()), value);
            } else if start >= data.len() {
                data.extend_from_slice(&value);
            } else {
                return Ok(Status::BadArgument.code());
            }
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: C<'_>, buffer: i32, ret_len: i32, ret_flags: i32| -> R {
            guard(&c, "proxy_get_buffer_status")?;
            let buffer = tri!(BufferType::from_raw(buffer).ok_or(Status::BadArgument));
            let len = tri!(c.data().buffer(buffer)).len() as u32;
            tri!(write_u32(&mut c, ret_len, len));
            Ok(code(write_u32(&mut c, ret_flags, 0)))
        },
    )?;
    Ok(())
}

fn add_stream_control(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |c: C<'_>,
         status: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32|
         -> R {
            guard(&c, "proxy_send_local_response")?;
            let details = tri!(read(&c, details_ptr, details_len));
            let body = tri!(read(&c, body_ptr, body_len));
            let headers = tri!(pairs_from(&c, headers_ptr, headers_len));
            let status = tri!(
                u16::try_from(status)
                    .ok()
                    .filter(|s| (100..=999).contains(s))
                    .ok_or(Status::BadArgument)
            );
            // Envoy replaces whitespace in response code details with '_'.
            let details: String = String::from_utf8_lossy(&details)
                .chars()
                .map(|ch| if ch.is_whitespace() { '_' } else { ch })
                .collect();
            let reply = LocalReply {
                status,
                details,
                body,
                headers,
                grpc_status: (0..=16)
                    .contains(&grpc_status)
                    .then_some(grpc_status as u32),
            };
            let mut c = c;
            tri!(c.data_mut().pending_mut()).local_reply = Some(reply);
            Ok(0)
        },
    )?;
    fn pend(c: &mut C<'_>, ty: Option<StreamType>, close: bool) -> Result<(), Status> {
        let ty = ty.ok_or(Status::BadArgument)?;
        let pending = c.data_mut().pending_mut()?;
        match (ty, close) {
            (StreamType::Request, false) => pending.continue_request = true,
            (StreamType::Response, false) => pending.continue_response = true,
            (StreamType::Request | StreamType::Response, true) => pending.close = true,
            // TCP streams are not supported (Istio's NETWORK plugins are refused by the gateway).
            _ => return Err(Status::Unimplemented),
        }
        Ok(())
    }
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, ty: i32| -> R {
            guard(&c, "proxy_continue_stream")?;
            Ok(code(pend(&mut c, StreamType::from_raw(ty), false)))
        },
    )?;
    l.func_wrap("env", "proxy_close_stream", |mut c: C<'_>, ty: i32| -> R {
        guard(&c, "proxy_close_stream")?;
        Ok(code(pend(&mut c, StreamType::from_raw(ty), true)))
    })?;
    l.func_wrap("env", "proxy_continue_request", |mut c: C<'_>| -> R {
        guard(&c, "proxy_continue_request")?;
        Ok(code(pend(&mut c, Some(StreamType::Request), false)))
    })?;
    l.func_wrap("env", "proxy_continue_response", |mut c: C<'_>| -> R {
        guard(&c, "proxy_continue_response")?;
        Ok(code(pend(&mut c, Some(StreamType::Response), false)))
    })?;
    // Routing happens in the proxy after the chain; there is no route cache to clear.
    l.func_wrap("env", "proxy_clear_route_cache", |c: C<'_>| -> R {
        guard(&c, "proxy_clear_route_cache")?;
        Ok(0)
    })?;
    Ok(())
}

fn add_calls(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         up_ptr: i32,
         up_len: i32,
         hdr_ptr: i32,
         hdr_len: i32,
         body_ptr: i32,
         body_len: i32,
         trl_ptr: i32,
         trl_len: i32,
         timeout_ms: i32,
         ret_token: i32|
         -> R {
            guard(&c, "proxy_http_call")?;
            let upstream = tri!(read_string(&c, up_ptr, up_len));
            let headers = tri!(pairs_from(&c, hdr_ptr, hdr_len));
            let body = tri!(read(&c, body_ptr, body_len));
            let trailers = tri!(pairs_from(&c, trl_ptr, trl_len));
            // Envoy refuses a call without these three.
            for required in [&b":method"[..], b":path", b":authority"] {
                if headers.get(required).is_none_or(<[u8]>::is_empty) {
                    return Ok(Status::BadArgument.code());
                }
            }
            let call = HttpCall {
                upstream,
                headers,
                body,
                trailers,
                timeout: timeout(timeout_ms),
            };
            let token = tri!(crate::context::dispatch_http_call(c.data_mut(), call));
            Ok(code(write_u32(&mut c, ret_token, token)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C<'_>,
         up_ptr: i32,
         up_len: i32,
         svc_ptr: i32,
         svc_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         timeout_ms: i32,
         ret_token: i32|
         -> R {
            guard(&c, "proxy_grpc_call")?;
            let target = tri!(grpc_target(
                &c,
                (up_ptr, up_len),
                (svc_ptr, svc_len),
                (m_ptr, m_len),
                (md_ptr, md_len)
            ));
            let call = GrpcCall {
                upstream: target.upstream,
                service: target.service,
                method: target.method,
                initial_metadata: target.initial_metadata,
                message: tri!(read(&c, msg_ptr, msg_len)),
                timeout: timeout(timeout_ms),
            };
            let token = tri!(crate::context::dispatch_grpc_call(c.data_mut(), call));
            Ok(code(write_u32(&mut c, ret_token, token)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: C<'_>,
         up_ptr: i32,
         up_len: i32,
         svc_ptr: i32,
         svc_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         ret_token: i32|
         -> R {
            guard(&c, "proxy_grpc_stream")?;
            let stream = tri!(grpc_target(
                &c,
                (up_ptr, up_len),
                (svc_ptr, svc_len),
                (m_ptr, m_len),
                (md_ptr, md_len)
            ));
            let token = tri!(crate::context::open_grpc_stream(c.data_mut(), stream));
            Ok(code(write_u32(&mut c, ret_token, token)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: C<'_>, token: i32, msg_ptr: i32, msg_len: i32, end_stream: i32| -> R {
            guard(&c, "proxy_grpc_send")?;
            let message = tri!(read(&c, msg_ptr, msg_len));
            tri!(crate::context::grpc_send(
                c.data_mut(),
                token as u32,
                message,
                end_stream != 0
            ));
            Ok(0)
        },
    )?;
    l.func_wrap("env", "proxy_grpc_close", |mut c: C<'_>, token: i32| -> R {
        guard(&c, "proxy_grpc_close")?;
        tri!(crate::context::grpc_close(c.data_mut(), token as u32));
        Ok(0)
    })?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: C<'_>, token: i32| -> R {
            guard(&c, "proxy_grpc_cancel")?;
            tri!(crate::context::grpc_cancel(c.data_mut(), token as u32));
            Ok(0)
        },
    )?;
    Ok(())
}

fn add_shared(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| -> R {
            guard(&c, "proxy_get_shared_data")?;
            let key = tri!(read(&c, key_ptr, key_len));
            let state = c.data();
            let (value, cas) = tri!(state.rt.shared.get(&state.vm_id, &key));
            tri!(copy_out(&mut c, &value, ret_ptr, ret_len)?);
            Ok(code(write_u32(&mut c, ret_cas, cas)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32, cas: i32| -> R {
            guard(&c, "proxy_set_shared_data")?;
            let key = tri!(read(&c, key_ptr, key_len));
            let value = tri!(read(&c, val_ptr, val_len));
            let state = c.data();
            if value.len() > state.rt.limits.max_shared_data_value_bytes {
                return Ok(Status::BadArgument.code());
            }
            Ok(code(state.rt.shared.set(
                &state.vm_id,
                key,
                value,
                cas as u32,
            )))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, name_ptr: i32, name_len: i32, ret_id: i32| -> R {
            guard(&c, "proxy_register_shared_queue")?;
            let name = tri!(read(&c, name_ptr, name_len));
            let state = c.data();
            let root = tri!(state.root_id().ok_or(Status::BadArgument));
            let id = state.rt.shared.register_queue(
                &state.vm_id,
                name,
                crate::shared::Receiver {
                    slot: state.slot.clone(),
                    generation: state.generation,
                    root,
                },
            );
            Ok(code(write_u32(&mut c, ret_id, id)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vm_ptr: i32, vm_len: i32, name_ptr: i32, name_len: i32, ret_id: i32| -> R {
            guard(&c, "proxy_resolve_shared_queue")?;
            let vm_id = tri!(read_string(&c, vm_ptr, vm_len));
            let name = tri!(read(&c, name_ptr, name_len));
            let id = tri!(c.data().rt.shared.resolve_queue(&vm_id, &name));
            Ok(code(write_u32(&mut c, ret_id, id)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, id: i32, val_ptr: i32, val_len: i32| -> R {
            guard(&c, "proxy_enqueue_shared_queue")?;
            let value = tri!(read(&c, val_ptr, val_len));
            let rt = &c.data().rt;
            Ok(code(rt.shared.enqueue(
                id as u32,
                value,
                rt.limits.max_queue_items,
            )))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ret_ptr: i32, ret_len: i32| -> R {
            guard(&c, "proxy_dequeue_shared_queue")?;
            let value = tri!(c.data().rt.shared.dequeue(id as u32));
            Ok(code(copy_out(&mut c, &value, ret_ptr, ret_len)?))
        },
    )?;
    Ok(())
}

fn add_metrics(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, name_ptr: i32, name_len: i32, ret_id: i32| -> R {
            guard(&c, "proxy_define_metric")?;
            let kind = tri!(MetricKind::from_raw(kind).ok_or(Status::BadArgument));
            let name = tri!(read_string(&c, name_ptr, name_len));
            let metric = tri!(c.data().rt.metrics.define(kind, &name));
            let state = c.data_mut();
            let id = match state
                .metrics
                .iter()
                .position(|m| std::sync::Arc::ptr_eq(m, &metric))
            {
                Some(i) => i,
                None => {
                    state.metrics.push(metric);
                    state.metrics.len() - 1
                }
            };
            Ok(code(write_u32(&mut c, ret_id, id as u32 + 1)))
        },
    )?;
    fn metric(c: &C<'_>, id: i32) -> Result<std::sync::Arc<crate::metrics::GuestMetric>, Status> {
        (id as u32 as usize)
            .checked_sub(1)
            .and_then(|i| c.data().metrics.get(i))
            .cloned()
            .ok_or(Status::NotFound)
    }
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, delta: i64| -> R {
            guard(&c, "proxy_increment_metric")?;
            Ok(code(tri!(metric(&c, id)).increment(delta)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> R {
            guard(&c, "proxy_record_metric")?;
            tri!(metric(&c, id)).record(value as u64);
            Ok(0)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R {
            guard(&c, "proxy_get_metric")?;
            let value = tri!(tri!(metric(&c, id)).get());
            Ok(code(write_u64(&mut c, ret, value)))
        },
    )?;
    Ok(())
}

fn add_foreign_and_emscripten(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>,
         name_ptr: i32,
         name_len: i32,
         args_ptr: i32,
         args_len: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> R {
            guard(&c, "proxy_call_foreign_function")?;
            let name = tri!(read(&c, name_ptr, name_len));
            let args = tri!(read(&c, args_ptr, args_len));
            let limit = c.data().rt.limits.max_body_bytes;
            let result = tri!(foreign_function(&name, &args, limit));
            Ok(code(copy_out(&mut c, &result, ret_ptr, ret_len)?))
        },
    )?;
    l.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        |_: C<'_>, _: i32| {},
    )?;
    l.func_wrap("env", "pthread_equal", |_: C<'_>, a: i32, b: i32| -> i32 {
        i32::from(a == b)
    })?;
    // AssemblyScript's `Math.random` seed (beyond Envoy, which would refuse such a module).
    l.func_wrap("env", "seed", |_: C<'_>| -> f64 {
        rand::random::<f64>() * (u32::MAX as f64)
    })?;
    // AssemblyScript's default `abort` import: a guest assertion failure, so a trap.
    l.func_wrap(
        "env",
        "abort",
        |c: C<'_>, msg: i32, file: i32, line: i32, col: i32| -> wasmtime::Result<()> {
            let _ = (msg, file, &c);
            wasmtime::bail!("guest called abort() at {file}:{line}:{col}")
        },
    )?;
    Ok(())
}

/// Envoy's `compress`/`uncompress` foreign functions (zlib format).
fn foreign_function(name: &[u8], args: &[u8], limit: usize) -> Result<Vec<u8>, Status> {
    match name {
        b"compress" => {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(args)
                .map_err(|_| Status::SerializationFailure)?;
            enc.finish().map_err(|_| Status::SerializationFailure)
        }
        b"uncompress" => {
            let mut out = Vec::new();
            // Bounded: a zip bomb from the guest must not exhaust host memory.
            flate2::read::ZlibDecoder::new(args)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| Status::SerializationFailure)?;
            if out.len() > limit {
                return Err(Status::SerializationFailure);
            }
            Ok(out)
        }
        _ => Err(Status::NotFound),
    }
}

/// Every import name this file provides under `env`, for `check` reports and load-time errors.
pub(crate) const ENV_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_get_status",
    "proxy_get_configuration",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_send_local_response",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_call_foreign_function",
    "emscripten_notify_memory_growth",
    "pthread_equal",
    "abort",
    "seed",
];
