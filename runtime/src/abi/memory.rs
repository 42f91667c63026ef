//! Guest memory access. Every pointer and length from the guest is checked here; a bad one is
//! `Status::InvalidMemoryAccess`, never a panic and never a trap.

use wasmtime::Caller;

use super::Status;
use crate::state::VmState;

fn range(ptr: i32, len: i32) -> std::ops::Range<usize> {
    let start = ptr as u32 as usize;
    start..start.saturating_add(len as u32 as usize)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &Caller<'_, VmState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    slice(caller, ptr, len).map(<[u8]>::to_vec)
}

/// The `len` bytes at `ptr` in guest memory, borrowed: for data the host only looks at (a
/// header name to find, a log line) or copies once into its own structures.
pub(crate) fn slice<'a>(
    caller: &'a Caller<'_, VmState>,
    ptr: i32,
    len: i32,
) -> Result<&'a [u8], Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    in_memory(memory.data(caller), ptr, len)
}

/// `len` bytes at `ptr` of a guest memory already borrowed (see [`split`]).
pub(crate) fn in_memory(memory: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    memory
        .get(range(ptr, len))
        .ok_or(Status::InvalidMemoryAccess)
}

/// Guest memory and the VM state at once, so guest bytes can go straight into host structures
/// (`proxy_add_header_map_value`) without an intermediate copy.
pub(crate) fn split<'a>(
    caller: &'a mut Caller<'_, VmState>,
) -> Result<(&'a [u8], &'a mut VmState), Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let (memory, state) = memory.data_and_store_mut(caller);
    Ok((memory, state))
}

/// Whether `len` bytes at `ptr` are inside guest memory (without copying them).
pub(crate) fn in_bounds(caller: &Caller<'_, VmState>, ptr: i32, len: i32) -> bool {
    caller
        .data()
        .memory
        .is_some_and(|m| range(ptr, len).end <= m.data_size(caller))
}

/// Reads a guest string; invalid UTF-8 is `BadArgument`.
pub(crate) fn read_string(
    caller: &Caller<'_, VmState>,
    ptr: i32,
    len: i32,
) -> Result<String, Status> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Status::BadArgument)
}

pub(crate) fn write(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data_mut(caller)
        .get_mut(range(ptr, bytes.len() as i32))
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, v: u32) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Caller<'_, VmState>, ptr: i32, v: u64) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `data` into memory the guest allocates, and writes its address and size to
/// `ptr_ptr`/`size_ptr` (cpp-host `copyToPointerSize`). Empty data allocates nothing and
/// writes 0/0. The outer `Err` is a trap from the guest allocator itself.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, VmState>,
    data: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<Result<(), Status>> {
    copy_out_with(caller, data.len(), ptr_ptr, size_ptr, |dst| {
        dst.copy_from_slice(data)
    })
}

/// [`copy_out`] of `len` bytes that `fill` writes straight into the guest's allocation (e.g. a
/// header map encoded in place), sparing a host buffer.
pub(crate) fn copy_out_with(
    caller: &mut Caller<'_, VmState>,
    len: usize,
    ptr_ptr: i32,
    size_ptr: i32,
    fill: impl FnOnce(&mut [u8]),
) -> wasmtime::Result<Result<(), Status>> {
    let Ok(len32) = u32::try_from(len) else {
        return Ok(Err(Status::BadArgument));
    };
    let mut addr = 0u32;
    if len > 0 {
        addr = match alloc(caller, len)? {
            Ok(addr) => addr,
            Err(status) => return Ok(Err(status)),
        };
        // `alloc` checked that the allocation lies inside memory.
        let Some(memory) = caller.data().memory else {
            return Ok(Err(Status::InvalidMemoryAccess));
        };
        match memory
            .data_mut(&mut *caller)
            .get_mut(addr as usize..addr as usize + len)
        {
            Some(dst) => fill(dst),
            None => return Ok(Err(Status::InvalidMemoryAccess)),
        }
    }
    Ok(write_u32(caller, ptr_ptr, addr).and_then(|()| write_u32(caller, size_ptr, len32)))
}

/// Calls the guest's `malloc`/`proxy_on_memory_allocate` with host calls restricted, as
/// cpp-host `allocMemory` does: a guest allocator that calls back into the host must not
/// observe or change stream state half-way through a host call.
pub(crate) fn alloc(
    caller: &mut Caller<'_, VmState>,
    size: usize,
) -> wasmtime::Result<Result<u32, Status>> {
    // An `Arc`: cloning the `TypedFunc` itself would go through wasmtime's type registry.
    let Some(malloc) = caller.data().malloc.clone() else {
        return Ok(Err(Status::InternalFailure));
    };
    let Ok(size32) = i32::try_from(size) else {
        return Ok(Err(Status::BadArgument));
    };
    let was = std::mem::replace(&mut caller.data_mut().restricted, true);
    let result = malloc.call(&mut *caller, size32);
    caller.data_mut().restricted = was;
    let addr = result? as u32;
    // A guest allocator that returns 0 or memory it does not have is a guest bug: the call fails.
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess);
    let fits = memory.map(|m| {
        (addr as usize)
            .checked_add(size)
            .is_some_and(|end| end <= m.data_size(&*caller))
    });
    Ok(match (addr, fits) {
        (0, _) | (_, Ok(false)) => Err(Status::InvalidMemoryAccess),
        (_, Err(status)) => Err(status),
        (addr, Ok(true)) => Ok(addr),
    })
}
