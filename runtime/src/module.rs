//! A compiled, validated, pre-linked proxy-wasm module. Everything that can be refused is refused
//! here, at load time: no ABI marker, no allocator, an import we do not provide, a callback with
//! the wrong signature. A request never discovers a bad module.

use std::sync::Arc;

use wasmtime::{ExternType, FuncType, InstancePre, ValType};

use crate::abi::{AbiVersion, hostcalls, wasi};
use crate::error::RuntimeError;
use crate::state::VmState;

/// How the module is started (cpp-host `startVm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// A reactor: `_initialize`, then `main(0, 0)` or `__main_void` when exported.
    Initialize { main: bool },
    /// A command: `_start`.
    Start,
    /// Neither (hand-written modules): nothing runs before the root context is created.
    None,
}

impl std::fmt::Display for EntryPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Initialize { main: true } => "_initialize + main",
            Self::Initialize { main: false } => "_initialize",
            Self::Start => "_start",
            Self::None => "none",
        })
    }
}

/// One import of the module and whether the host provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInfo {
    pub module: String,
    pub name: String,
    pub supported: bool,
}

/// A loaded module. Cheap to clone; compiled once per content digest per [`Runtime`](crate::Runtime).
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub digest: [u8; 32],
    pub pre: InstancePre<VmState>,
    pub abi: AbiVersion,
    pub entry: EntryPoint,
    pub allocator: &'static str,
    pub imports: Vec<ImportInfo>,
    pub exports: Vec<String>,
}

impl Module {
    /// sha256 of the module bytes, hex.
    pub fn digest(&self) -> String {
        hex::encode(self.inner.digest)
    }
    pub fn abi_version(&self) -> AbiVersion {
        self.inner.abi
    }
    pub fn entry_point(&self) -> EntryPoint {
        self.inner.entry
    }
    /// `malloc` or `proxy_on_memory_allocate`.
    pub fn allocator(&self) -> &'static str {
        self.inner.allocator
    }
    pub fn imports(&self) -> &[ImportInfo] {
        &self.inner.imports
    }
    pub fn exports(&self) -> &[String] {
        &self.inner.exports
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("digest", &self.digest())
            .field("abi", &self.inner.abi)
            .finish_non_exhaustive()
    }
}

pub(crate) fn is_supported_import(module: &str, name: &str) -> bool {
    match module {
        "env" => hostcalls::ENV_FUNCTIONS.contains(&name),
        m if wasi::MODULES.contains(&m) => wasi::FUNCTIONS.contains(&name),
        _ => false,
    }
}

use ValType::{I32, I64};

/// Signatures of the guest exports we call. An export with another signature is refused at
/// load (cpp-host fails such a module with `MissingFunction` too).
pub(crate) fn expected_signature(
    name: &str,
    abi: AbiVersion,
) -> Option<(&'static [ValType], &'static [ValType])> {
    let v1 = abi == AbiVersion::V0_1_0;
    Some(match name {
        "_initialize" | "_start" => (&[], &[]),
        "__main_void" => (&[], &[I32]),
        "main" => (&[I32, I32], &[I32]),
        "malloc" | "proxy_on_memory_allocate" => (&[I32], &[I32]),
        "proxy_on_context_create" => (&[I32, I32], &[]),
        "proxy_on_vm_start" | "proxy_on_configure" => (&[I32, I32], &[I32]),
        "proxy_on_tick" | "proxy_on_log" | "proxy_on_delete" => (&[I32], &[]),
        "proxy_on_done" => (&[I32], &[I32]),
        "proxy_on_request_headers" | "proxy_on_response_headers" if v1 => (&[I32, I32], &[I32]),
        "proxy_on_request_headers"
        | "proxy_on_response_headers"
        | "proxy_on_request_body"
        | "proxy_on_response_body" => (&[I32, I32, I32], &[I32]),
        "proxy_on_request_trailers" | "proxy_on_response_trailers" => (&[I32, I32], &[I32]),
        "proxy_on_http_call_response" => (&[I32, I32, I32, I32, I32], &[]),
        "proxy_on_grpc_receive_initial_metadata"
        | "proxy_on_grpc_receive"
        | "proxy_on_grpc_receive_trailing_metadata"
        | "proxy_on_grpc_close" => (&[I32, I32, I32], &[]),
        "proxy_on_queue_ready" => (&[I32, I32], &[]),
        _ => return None,
    })
}

fn same(ty: &FuncType, (params, results): (&[ValType], &[ValType])) -> bool {
    let eq = |a: &ValType, b: &ValType| matches!((a, b), (I32, I32) | (I64, I64));
    ty.params().len() == params.len()
        && ty.results().len() == results.len()
        && ty.params().zip(params).all(|(a, b)| eq(&a, b))
        && ty.results().zip(results).all(|(a, b)| eq(&a, b))
}

/// Validates a compiled module and pre-links it.
pub(crate) fn prepare(
    digest: [u8; 32],
    module: &wasmtime::Module,
    linker: &wasmtime::Linker<VmState>,
) -> Result<ModuleInner, RuntimeError> {
    let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
    let has = |name: &str| exports.iter().any(|e| e == name);
    let abi = AbiVersion::MARKERS
        .iter()
        .rev()
        .find(|(marker, _)| has(marker))
        .map(|&(_, abi)| abi)
        .ok_or_else(|| {
            RuntimeError::Abi(
                "missing or unknown proxy-wasm ABI version: the module exports none of \
                 proxy_abi_version_0_1_0, proxy_abi_version_0_2_0, proxy_abi_version_0_2_1"
                    .into(),
            )
        })?;
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(RuntimeError::Abi(
            "the module exports no memory named \"memory\"".into(),
        ));
    }
    let allocator = ["malloc", "proxy_on_memory_allocate"]
        .into_iter()
        .find(|&name| has(name))
        .ok_or_else(|| {
            RuntimeError::Abi(
                "the module exports neither malloc nor proxy_on_memory_allocate; the host cannot \
                 return data to it"
                    .into(),
            )
        })?;
    for export in module.exports() {
        if let (ExternType::Func(ty), Some(expected)) =
            (export.ty(), expected_signature(export.name(), abi))
            && !same(&ty, expected)
        {
            return Err(RuntimeError::Abi(format!(
                "export {} has signature {ty}, expected params {:?} results {:?}",
                export.name(),
                expected.0,
                expected.1
            )));
        }
    }
    let entry = if has("_initialize") {
        EntryPoint::Initialize {
            main: has("main") || has("__main_void"),
        }
    } else if has("_start") {
        EntryPoint::Start
    } else {
        EntryPoint::None
    };

    let imports: Vec<ImportInfo> = module
        .imports()
        .map(|i| ImportInfo {
            module: i.module().to_owned(),
            name: i.name().to_owned(),
            supported: is_supported_import(i.module(), i.name()),
        })
        .collect();
    let missing: Vec<String> = imports
        .iter()
        .filter(|i| !i.supported)
        .map(|i| format!("{}.{}", i.module, i.name))
        .collect();
    if !missing.is_empty() {
        return Err(RuntimeError::Link { missing });
    }
    // Known names with a wrong type (or a memory/table import) still fail here, at load.
    let pre = linker
        .instantiate_pre(module)
        .map_err(|e| RuntimeError::Link {
            missing: vec![format!("{e:#}")],
        })?;
    Ok(ModuleInner {
        digest,
        pre,
        abi,
        entry,
        allocator,
        imports,
        exports,
    })
}
