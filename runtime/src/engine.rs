//! The runtime: one wasmtime `Engine` (epoch interruption, optional pooling allocator), one
//! `Linker` with every host function, compiled modules by digest, and the process-wide services
//! plugins share (shared data and queues, metrics, timers).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

use crate::abi::{hostcalls, wasi};
use crate::cache::CodeCache;
use crate::error::RuntimeError;
use crate::host::Host;
use crate::limits::Limits;
use crate::metrics::{MetricRegistry, MetricValue};
use crate::module::{Module, ModuleInner, prepare};
use crate::plugin::{Plugin, PluginOptions, VmPool};
use crate::shared::Shared;
use crate::state::VmState;
use crate::timers::Timers;

/// How to build a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub limits: Limits,
    /// Directory of the compiled-code cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Worker slots, i.e. VMs per module (one per proxy worker thread). 0 = the number of CPUs.
    pub slots: usize,
    /// Use wasmtime's pooling allocator, falling back to on-demand allocation when the machine
    /// cannot reserve the address space. Off by default: our VMs are long-lived (one per worker
    /// slot, created at load), so instantiation is off the request path and pooling would only
    /// reserve address space.
    pub pooling: bool,
}

/// The Proxy-Wasm host. Create one per process and keep it across configuration changes:
/// compiled modules, shared data, queues and plugin metrics live here. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub linker: Linker<VmState>,
    pub limits: Limits,
    pub host: Arc<dyn Host>,
    pub shared: Shared,
    pub metrics: MetricRegistry,
    pub timers: Timers,
    pub slots: usize,
    pub pooling: bool,
    cache: Option<CodeCache>,
    modules: Mutex<HashMap<[u8; 32], Weak<ModuleInner>>>,
    pub pools: Mutex<HashMap<[u8; 32], Weak<VmPool>>>,
    compilations: AtomicU64,
    cache_hits: AtomicU64,
}

fn engine_config(pooling: Option<&Limits>) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if let Some(limits) = pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(1000)
            .total_memories(1000)
            .total_tables(1000)
            .max_memory_size(limits.max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    /// Builds the engine and linker, and starts the epoch ticker thread.
    pub fn new(host: Arc<dyn Host>, options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let limits = options.limits;
        let (engine, pooling) = match options.pooling {
            true => match Engine::new(&engine_config(Some(&limits))) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::info!(error = %e, "pooling allocator unavailable, using on-demand allocation");
                    (
                        Engine::new(&engine_config(None))
                            .map_err(|e| RuntimeError::Engine(e.to_string()))?,
                        false,
                    )
                }
            },
            false => (
                Engine::new(&engine_config(None))
                    .map_err(|e| RuntimeError::Engine(e.to_string()))?,
                false,
            ),
        };
        let mut linker = Linker::new(&engine);
        hostcalls::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        wasi::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let cache = options
            .cache_dir
            .map(|dir| CodeCache::new(dir, &engine))
            .transpose()?;
        spawn_epoch_ticker(&engine, limits.epoch_tick)?;
        let slots = match options.slots {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                limits,
                host,
                shared: Shared::default(),
                metrics: MetricRegistry::default(),
                timers: Timers::default(),
                slots,
                pooling,
                cache,
                modules: Mutex::default(),
                pools: Mutex::default(),
                compilations: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<RuntimeInner> {
        &self.inner
    }

    /// Compiles (or finds compiled) and validates a module: ABI marker, memory, allocator,
    /// callback signatures, and that every import is one we provide. Compiled once per content
    /// digest while any handle to it lives, and cached on disk across restarts.
    ///
    /// Errors: [`RuntimeError::Compile`], [`RuntimeError::Abi`], [`RuntimeError::Link`].
    pub fn load_module(&self, bytes: &[u8]) -> Result<Module, RuntimeError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(inner) = self
            .inner
            .modules
            .lock()
            .get(&digest)
            .and_then(Weak::upgrade)
        {
            return Ok(Module { inner });
        }
        let rt = &self.inner;
        let cached = rt.cache.as_ref().and_then(|c| c.load(&rt.engine, &digest));
        let compiled = match cached {
            Some(module) => {
                rt.cache_hits.fetch_add(1, Relaxed);
                module
            }
            None => {
                rt.compilations.fetch_add(1, Relaxed);
                let module = wasmtime::Module::new(&rt.engine, bytes)
                    .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
                if let Some(cache) = &rt.cache {
                    cache.store(&digest, &module);
                }
                module
            }
        };
        let inner = Arc::new(prepare(digest, &compiled, &rt.linker)?);
        let mut modules = rt.modules.lock();
        modules.retain(|_, m| m.strong_count() > 0);
        modules.insert(digest, Arc::downgrade(&inner));
        Ok(Module { inner })
    }

    /// [`Plugin::load`].
    pub fn load_plugin(
        &self,
        module: &Module,
        options: PluginOptions,
    ) -> Result<Plugin, RuntimeError> {
        Plugin::load(self, module, options)
    }

    /// Metrics plugins defined with `proxy_define_metric`, by name (process-wide, as Envoy's).
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.inner.metrics.snapshot()
    }

    /// How many modules were compiled by cranelift (not found in memory or in the disk cache).
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Relaxed)
    }

    /// How many modules were loaded from the disk cache.
    pub fn cache_hits(&self) -> u64 {
        self.inner.cache_hits.load(Relaxed)
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Whether the pooling allocator is in use (it was asked for and the probe succeeded).
    pub fn pooling(&self) -> bool {
        self.inner.pooling
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("slots", &self.inner.slots)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// One thread advances the epoch every tick; it holds only a weak engine and exits with it.
fn spawn_epoch_ticker(engine: &Engine, tick: std::time::Duration) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(drop)
        .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker thread: {e}")))
}
