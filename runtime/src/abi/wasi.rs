//! WASI preview 1, registered under both `wasi_snapshot_preview1` and `wasi_unstable`.
//!
//! Why not `wasmtime-wasi`'s p1: its synchronous bindings run every I/O call (`fd_write`,
//! `poll_oneoff`, ...) through `in_tokio`, which calls `tokio::runtime::Handle::block_on` when a
//! tokio runtime is current — and that panics on a tokio worker thread, which is exactly where
//! Pingora runs our callbacks (checked with wasmtime-wasi 48.0.8: a guest `fd_write` from a task
//! on a multi-thread runtime panics with "Cannot start a runtime from within a runtime"; the
//! test `callbacks_and_wasi_run_on_a_tokio_worker_thread` keeps ours honest). Its async bindings need an async store, which a synchronous
//! Pingora body filter cannot drive. A proxy plugin also needs only what Envoy gives it (cpp-host
//! `exports.cc`): stdout/stderr to the log, the VM environment, clocks, random, no files. So this
//! is a thin, exact copy of Envoy's set, with one improvement noted at `poll_oneoff`.

use std::time::{Instant, UNIX_EPOCH};

use rand::RngCore;
use wasmtime::{Caller, FuncType, Linker, Val, ValType};

use super::LogLevel;
use super::memory::{in_bounds, read, write, write_u32, write_u64};
use crate::state::VmState;

type C<'a> = Caller<'a, VmState>;

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;

pub(crate) const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// A guest called `proc_exit`. It never returns, so this ends the call as a trap; at start-up,
/// code 0 is a normal end of `_start` (Go and some C toolchains exit this way).
#[derive(Debug)]
pub(crate) struct ProcExit(pub i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest called proc_exit({})", self.0)
    }
}

impl std::error::Error for ProcExit {}

fn monotonic_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn errno(r: Result<(), super::Status>) -> i32 {
    if r.is_ok() { SUCCESS } else { EFAULT }
}

/// Gathers an iovec array (`{ptr u32, len u32}` × n): the total length, and at most `cap`
/// bytes of the data (iovecs may all point at the same large region; the host must not
/// multiply guest memory).
fn gather(c: &C<'_>, iovs: i32, n: i32, cap: usize) -> Result<(usize, Vec<u8>), i32> {
    let table = read(c, iovs, n.checked_mul(8).ok_or(EINVAL)?).map_err(|_| EFAULT)?;
    let mut total = 0usize;
    let mut out = Vec::new();
    for iov in table.chunks_exact(8) {
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let room = cap.saturating_sub(out.len()).min(len as u32 as usize);
        // Checks the whole iovec is in memory, copies only what fits under the cap.
        if !in_bounds(c, ptr, len) {
            return Err(EFAULT);
        }
        out.extend(read(c, ptr, room as i32).map_err(|_| EFAULT)?);
        total = total.saturating_add(len as u32 as usize);
    }
    Ok((total, out))
}

/// fd 1 → info, fd 2 → error, trailing newline stripped (cpp-host `writevImpl`).
fn write_stdio(c: &mut C<'_>, fd: i32, iovs: i32, n: i32, ret: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return EBADF,
    };
    let cap = c.data().rt.limits.max_log_message_bytes;
    let (total, data) = match gather(c, iovs, n, cap) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let text = String::from_utf8_lossy(&data);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if !text.is_empty() {
        c.data().log(level, text);
    }
    errno(write_u32(c, ret, total as u32))
}

/// `NUL`-terminated strings and a pointer table, for args/environ.
fn put_strings(c: &mut C<'_>, items: &[String], ptrs: i32, buf: i32) -> i32 {
    let mut at = buf as u32;
    for (i, item) in items.iter().enumerate() {
        if write_u32(c, ptrs.wrapping_add((i as i32).wrapping_mul(4)), at).is_err() {
            return EFAULT;
        }
        let mut bytes = item.as_bytes().to_vec();
        bytes.push(0);
        if write(c, at as i32, &bytes).is_err() {
            return EFAULT;
        }
        at = at.wrapping_add(bytes.len() as u32);
    }
    SUCCESS
}

fn environ(c: &C<'_>) -> Vec<String> {
    c.data()
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

pub(crate) fn add_to_linker(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    for (flavour, m) in MODULES.into_iter().enumerate() {
        let unstable = flavour == 1;
        l.func_wrap(
            m,
            "fd_write",
            |mut c: C<'_>, fd: i32, iovs: i32, n: i32, ret: i32| {
                write_stdio(&mut c, fd, iovs, n, ret)
            },
        )?;
        l.func_wrap(
            m,
            "fd_pwrite",
            |mut c: C<'_>, fd: i32, iovs: i32, n: i32, _off: i64, ret: i32| {
                write_stdio(&mut c, fd, iovs, n, ret)
            },
        )?;
        l.func_wrap(m, "fd_read", |_: C<'_>, _: i32, _: i32, _: i32, _: i32| {
            ENOSYS
        })?;
        l.func_wrap(
            m,
            "fd_pread",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i64, _: i32| ENOSYS,
        )?;
        l.func_wrap(m, "fd_seek", |_: C<'_>, fd: i32, _: i64, _: i32, _: i32| {
            if (0..=2).contains(&fd) { ESPIPE } else { EBADF }
        })?;
        l.func_wrap(m, "fd_tell", |_: C<'_>, fd: i32, _: i32| {
            if (0..=2).contains(&fd) { ESPIPE } else { EBADF }
        })?;
        l.func_wrap(m, "fd_close", |_: C<'_>, _: i32| SUCCESS)?;
        l.func_wrap(m, "fd_fdstat_get", |mut c: C<'_>, fd: i32, ret: i32| {
            // Character device; stdin readable, stdout/stderr writable (rights FD_READ=2, FD_WRITE=64).
            let rights: u64 = match fd {
                0 => 1 << 1,
                1 | 2 => 1 << 6,
                _ => return EBADF,
            };
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            errno(write(&mut c, ret, &stat))
        })?;
        l.func_wrap(m, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| EBADF)?;
        l.func_wrap(
            m,
            "fd_prestat_dir_name",
            |_: C<'_>, _: i32, _: i32, _: i32| ENOSYS,
        )?;
        l.func_wrap(m, "fd_filestat_get", |_: C<'_>, _: i32, _: i32| EBADF)?;
        l.func_wrap(
            m,
            "fd_readdir",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i64, _: i32| EBADF,
        )?;
        l.func_wrap(
            m,
            "path_open",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| {
                ENOENT
            },
        )?;
        l.func_wrap(
            m,
            "environ_sizes_get",
            |mut c: C<'_>, count: i32, size: i32| {
                let env = environ(&c);
                let bytes: usize = env.iter().map(|e| e.len() + 1).sum();
                errno(
                    write_u32(&mut c, count, env.len() as u32)
                        .and_then(|()| write_u32(&mut c, size, bytes as u32)),
                )
            },
        )?;
        l.func_wrap(m, "environ_get", |mut c: C<'_>, ptrs: i32, buf: i32| {
            let env = environ(&c);
            put_strings(&mut c, &env, ptrs, buf)
        })?;
        l.func_wrap(
            m,
            "args_sizes_get",
            |mut c: C<'_>, count: i32, size: i32| {
                errno(write_u32(&mut c, count, 0).and_then(|()| write_u32(&mut c, size, 0)))
            },
        )?;
        l.func_wrap(m, "args_get", |_: C<'_>, _: i32, _: i32| SUCCESS)?;
        l.func_wrap(
            m,
            "clock_time_get",
            |mut c: C<'_>, id: i32, _precision: i64, ret: i32| {
                let ns = match id {
                    0 => c
                        .data()
                        .rt
                        .host
                        .now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    1 => monotonic_origin().elapsed().as_nanos() as u64,
                    _ => return ENOTSUP,
                };
                errno(write_u64(&mut c, ret, ns))
            },
        )?;
        l.func_wrap(m, "clock_res_get", |mut c: C<'_>, id: i32, ret: i32| {
            if !(0..=1).contains(&id) {
                return ENOTSUP;
            }
            errno(write_u64(&mut c, ret, 1))
        })?;
        l.func_wrap(m, "random_get", |mut c: C<'_>, buf: i32, len: i32| {
            let len = len as u32 as usize;
            if len > c.data().rt.limits.max_random_get_bytes {
                return EINVAL;
            }
            let mut bytes = vec![0u8; len];
            rand::rng().fill_bytes(&mut bytes);
            errno(write(&mut c, buf, &bytes))
        })?;
        l.func_wrap(m, "sched_yield", |_: C<'_>| SUCCESS)?;
        l.func_wrap(
            m,
            "poll_oneoff",
            move |mut c: C<'_>, subs: i32, events: i32, n: i32, ret: i32| {
                poll_oneoff(&mut c, unstable, subs, events, n, ret)
            },
        )?;
        l.func_wrap(
            m,
            "proc_exit",
            |_: C<'_>, code: i32| -> wasmtime::Result<()> {
                Err(wasmtime::Error::new(ProcExit(code)))
            },
        )?;
        l.func_wrap(m, "proc_raise", |_: C<'_>, _: i32| ENOSYS)?;
        add_stubs(l, m)?;
    }
    Ok(())
}

/// Envoy (cpp-host) sets `nevents = 0` and returns: it never sleeps in a proxy callback. We don't
/// sleep either, but we report every subscription as ready, so a Go or TinyGo runtime that polls
/// for a timer sees its event fire instead of spinning on an empty result.
fn poll_oneoff(c: &mut C<'_>, unstable: bool, subs: i32, events: i32, n: i32, ret: i32) -> i32 {
    // wasi_unstable's subscription has an extra u64 before the clock id (56 bytes vs 48).
    let sub_size = if unstable { 56 } else { 48 };
    let Ok(table) = read(c, subs, n.saturating_mul(sub_size)) else {
        return EFAULT;
    };
    for (i, sub) in table.chunks_exact(sub_size as usize).enumerate() {
        let mut event = [0u8; 32];
        event[0..8].copy_from_slice(&sub[0..8]); // userdata
        event[10] = sub[8]; // event type = subscription tag (clock 0, fd_read 1, fd_write 2)
        if write(c, events.wrapping_add((i as i32).wrapping_mul(32)), &event).is_err() {
            return EFAULT;
        }
    }
    errno(write_u32(c, ret, n as u32))
}

/// File-system and socket calls: no preopened directories and no sockets, so these answer
/// errors exactly as cpp-host does (ENOTSUP, or EBADF where it checks the fd).
fn add_stubs(l: &mut Linker<VmState>, m: &str) -> wasmtime::Result<()> {
    use ValType::{I32, I64};
    let stubs: &[(&str, &[ValType], i32)] = &[
        ("fd_advise", &[I32, I64, I64, I32], EBADF),
        ("fd_allocate", &[I32, I64, I64], EBADF),
        ("fd_datasync", &[I32], EBADF),
        ("fd_sync", &[I32], EBADF),
        ("fd_fdstat_set_flags", &[I32, I32], ENOSYS),
        ("fd_fdstat_set_rights", &[I32, I64, I64], EBADF),
        ("fd_filestat_set_size", &[I32, I64], EBADF),
        ("fd_filestat_set_times", &[I32, I64, I64, I32], EBADF),
        ("fd_renumber", &[I32, I32], ENOTSUP),
        ("path_create_directory", &[I32, I32, I32], ENOTSUP),
        ("path_filestat_get", &[I32, I32, I32, I32, I32], ENOTSUP),
        (
            "path_filestat_set_times",
            &[I32, I32, I32, I32, I64, I64, I32],
            ENOTSUP,
        ),
        ("path_link", &[I32, I32, I32, I32, I32, I32, I32], ENOTSUP),
        ("path_readlink", &[I32, I32, I32, I32, I32, I32], ENOTSUP),
        ("path_remove_directory", &[I32, I32, I32], ENOTSUP),
        ("path_rename", &[I32, I32, I32, I32, I32, I32], ENOTSUP),
        ("path_symlink", &[I32, I32, I32, I32, I32], ENOTSUP),
        ("path_unlink_file", &[I32, I32, I32], ENOTSUP),
        ("sock_accept", &[I32, I32, I32], ENOTSUP),
        ("sock_recv", &[I32, I32, I32, I32, I32, I32], ENOTSUP),
        ("sock_send", &[I32, I32, I32, I32, I32], ENOTSUP),
        ("sock_shutdown", &[I32, I32], ENOTSUP),
    ];
    for &(name, params, err) in stubs {
        let ty = FuncType::new(l.engine(), params.iter().cloned(), [I32]);
        l.func_new(m, name, ty, move |_, _, results: &mut [Val]| {
            results[0] = Val::I32(err);
            Ok(())
        })?;
    }
    Ok(())
}

/// Every WASI function provided, for `check` reports and docs.
pub(crate) const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "random_get",
    "sched_yield",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];
