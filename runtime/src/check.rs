//! `wasmgate plugin check`: load, link, start and configure a module exactly as the gateway
//! would, and describe it.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::abi::{AbiVersion, LogLevel};
use crate::engine::{Runtime, RuntimeOptions};
use crate::error::RuntimeError;
use crate::host::Host;
use crate::limits::Limits;
use crate::module::{EntryPoint, ImportInfo};
use crate::plugin::{Plugin, PluginOptions};

/// What to check the module with.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `proxy_on_configure` data (the WasmPlugin's `pluginConfig` as JSON).
    pub configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub root_id: String,
    /// Defaults to `check` when empty.
    pub name: String,
    pub limits: Limits,
}

/// A module that would run. `Display` prints the report the CLI shows.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub digest: String,
    pub abi_version: AbiVersion,
    pub entry_point: EntryPoint,
    pub allocator: &'static str,
    pub imports: Vec<ImportInfo>,
    pub exports: Vec<String>,
    /// What the plugin logged while starting and configuring.
    pub logs: Vec<(LogLevel, String)>,
}

/// A module that would not run: the stage that refused it, and what the plugin logged until then
/// (a refused configuration is only useful next to what the plugin said about it).
#[derive(Debug)]
pub struct CheckFailure {
    pub error: RuntimeError,
    pub logs: Vec<(LogLevel, String)>,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CheckFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

struct Collect(Mutex<Vec<(LogLevel, String)>>);

impl Host for Collect {
    fn log(&self, _plugin: &str, level: LogLevel, message: &str) {
        self.0.lock().push((level, message.to_owned()));
    }
}

/// Checks a module. `Err` says which stage refused it and why (an unknown import is named in
/// [`RuntimeError::Link`]; a refused configuration is [`RuntimeError::Configure`]), with the
/// plugin's log up to that point.
pub fn check_module(bytes: &[u8], opts: &CheckOptions) -> Result<CheckReport, CheckFailure> {
    let host = Arc::new(Collect(Mutex::new(Vec::new())));
    let take_logs = |host: &Collect| std::mem::take(&mut *host.0.lock());
    let loaded = Runtime::new(
        host.clone(),
        RuntimeOptions {
            limits: opts.limits.clone(),
            slots: 1,
            ..Default::default()
        },
    )
    .and_then(|runtime| {
        let module = runtime.load_module(bytes)?;
        let plugin = Plugin::load(
            &runtime,
            &module,
            PluginOptions {
                name: if opts.name.is_empty() {
                    "check".into()
                } else {
                    opts.name.clone()
                },
                root_id: opts.root_id.clone(),
                configuration: opts.configuration.clone(),
                vm_configuration: opts.vm_configuration.clone(),
                env: opts.env.clone(),
                log_level: LogLevel::Trace,
                ..Default::default()
            },
        )?;
        drop(plugin);
        Ok(module)
    });
    match loaded {
        Ok(module) => Ok(CheckReport {
            digest: module.digest(),
            abi_version: module.abi_version(),
            entry_point: module.entry_point(),
            allocator: module.allocator(),
            imports: module.imports().to_vec(),
            exports: module.exports().to_vec(),
            logs: take_logs(&host),
        }),
        Err(error) => Err(CheckFailure {
            error,
            logs: take_logs(&host),
        }),
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sha256:      {}", self.digest)?;
        writeln!(f, "ABI version: {}", self.abi_version)?;
        writeln!(f, "entry point: {}", self.entry_point)?;
        writeln!(f, "allocator:   {}", self.allocator)?;
        writeln!(f, "imports ({}):", self.imports.len())?;
        for i in &self.imports {
            let mark = if i.supported { "" } else { "  (UNSUPPORTED)" };
            writeln!(f, "  {}.{}{mark}", i.module, i.name)?;
        }
        writeln!(f, "exports ({}):", self.exports.len())?;
        for e in &self.exports {
            writeln!(f, "  {e}")?;
        }
        if !self.logs.is_empty() {
            writeln!(f, "log while starting and configuring:")?;
            for (level, msg) in &self.logs {
                writeln!(f, "  [{level:?}] {msg}")?;
            }
        }
        write!(
            f,
            "result:      OK, the plugin starts and accepts its configuration"
        )
    }
}
