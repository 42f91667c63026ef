//! One VM: a wasmtime `Store` with its instance and typed guest callbacks. `call` is the only
//! way into the guest: it always sets an epoch deadline (the default deadline of 0 would trap at
//! once), records the callback time, and turns a trap into a `RuntimeError` that names the
//! callback and whether a limit was the cause.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, TypedFunc};

use crate::abi::AbiVersion;
use crate::abi::wasi::ProcExit;
use crate::engine::RuntimeInner;
use crate::error::{LimitKind, RuntimeError};
use crate::module::{EntryPoint, ModuleInner};
use crate::plugin::Slot;
use crate::state::{Limiter, VmState};

type F<P, R> = Option<TypedFunc<P, R>>;

/// Guest callbacks; all optional (a missing one means "continue", as in cpp-host).
#[derive(Default)]
pub(crate) struct Callbacks {
    pub context_create: F<(i32, i32), ()>,
    pub vm_start: F<(i32, i32), i32>,
    pub configure: F<(i32, i32), i32>,
    pub tick: F<i32, ()>,
    pub request_headers: F<(i32, i32, i32), i32>,
    pub request_headers_v1: F<(i32, i32), i32>,
    pub request_body: F<(i32, i32, i32), i32>,
    pub request_trailers: F<(i32, i32), i32>,
    pub response_headers: F<(i32, i32, i32), i32>,
    pub response_headers_v1: F<(i32, i32), i32>,
    pub response_body: F<(i32, i32, i32), i32>,
    pub response_trailers: F<(i32, i32), i32>,
    pub http_call_response: F<(i32, i32, i32, i32, i32), ()>,
    pub grpc_initial_metadata: F<(i32, i32, i32), ()>,
    pub grpc_receive: F<(i32, i32, i32), ()>,
    pub grpc_trailing_metadata: F<(i32, i32, i32), ()>,
    pub grpc_close: F<(i32, i32, i32), ()>,
    pub queue_ready: F<(i32, i32), ()>,
    pub done: F<i32, i32>,
    pub log: F<i32, ()>,
    pub delete: F<i32, ()>,
}

/// What a VM needs to be (re)created: shared by every slot of a pool.
pub(crate) struct VmSpec {
    pub rt: Arc<RuntimeInner>,
    pub module: Arc<ModuleInner>,
    pub vm_id: String,
    pub vm_name: String,
    pub vm_configuration: Arc<[u8]>,
    pub env: Arc<[(String, String)]>,
}

pub(crate) struct Vm {
    pub store: Store<VmState>,
    instance: wasmtime::Instance,
    /// Behind an `Arc` so a call can hold a callback while the VM is borrowed mutably: cloning
    /// the `Arc` is one atomic, where cloning a `TypedFunc` per call went through wasmtime's type
    /// registry (≈ 0.7 µs per request with one plugin in the bench profile).
    pub cb: Arc<Callbacks>,
    /// Set once the VM trapped or exceeded a limit; it never runs again.
    pub failed: Option<RuntimeError>,
    /// The worker slot the VM serves: whose per-slot call stats its calls count in.
    slot_index: usize,
}

impl Vm {
    /// Instantiates and starts a VM (`_initialize` + `main`, or `_start`) for worker slot
    /// `slot_index`, with host calls restricted as cpp-host does during start.
    pub fn new(
        spec: &VmSpec,
        slot: Weak<Slot>,
        slot_index: usize,
        generation: u64,
    ) -> Result<Vm, RuntimeError> {
        let rt = &spec.rt;
        let state = VmState {
            rt: rt.clone(),
            limiter: Limiter {
                max_bytes: rt.limits.max_memory_bytes,
                exceeded: false,
                current_bytes: 0,
            },
            abi: spec.module.abi,
            memory: None,
            malloc: None,
            vm_id: spec.vm_id.clone(),
            vm_name: spec.vm_name.clone(),
            vm_configuration: spec.vm_configuration.clone(),
            env: spec.env.clone(),
            next_context_id: 1,
            contexts: Default::default(),
            roots: Default::default(),
            current_ctx: 0,
            effective_ctx: 0,
            restricted: true,
            in_vm_start: false,
            call_response: None,
            last_status: (0, Vec::new()),
            next_callout: [0, 1, 2],
            calls: Default::default(),
            grpc_streams: Default::default(),
            metrics: Vec::new(),
            touched: Vec::new(),
            slot,
            generation,
        };
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(rt.limits.ticks_for(rt.limits.start_timeout));
        let instance = spec.module.pre.instantiate(&mut store).map_err(|e| {
            if store.data().limiter.exceeded {
                RuntimeError::Limit {
                    kind: LimitKind::Memory,
                    callback: "instantiate",
                }
            } else {
                RuntimeError::Instantiate(format!("{e:#}"))
            }
        })?;
        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        store.data_mut().limiter.current_bytes = memory.map_or(0, |m| m.data_size(&store));
        let malloc = instance
            .get_typed_func::<i32, i32>(&mut store, spec.module.allocator)
            .map_err(|e| RuntimeError::Abi(format!("{e:#}")))?;
        store.data_mut().malloc = Some(Arc::new(malloc));

        macro_rules! get {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).ok()
            };
        }
        let v1 = spec.module.abi == AbiVersion::V0_1_0;
        let cb = Callbacks {
            context_create: get!("proxy_on_context_create"),
            vm_start: get!("proxy_on_vm_start"),
            configure: get!("proxy_on_configure"),
            tick: get!("proxy_on_tick"),
            request_headers: if v1 {
                None
            } else {
                get!("proxy_on_request_headers")
            },
            request_headers_v1: if v1 {
                get!("proxy_on_request_headers")
            } else {
                None
            },
            request_body: get!("proxy_on_request_body"),
            request_trailers: get!("proxy_on_request_trailers"),
            response_headers: if v1 {
                None
            } else {
                get!("proxy_on_response_headers")
            },
            response_headers_v1: if v1 {
                get!("proxy_on_response_headers")
            } else {
                None
            },
            response_body: get!("proxy_on_response_body"),
            response_trailers: get!("proxy_on_response_trailers"),
            http_call_response: get!("proxy_on_http_call_response"),
            grpc_initial_metadata: get!("proxy_on_grpc_receive_initial_metadata"),
            grpc_receive: get!("proxy_on_grpc_receive"),
            grpc_trailing_metadata: get!("proxy_on_grpc_receive_trailing_metadata"),
            grpc_close: get!("proxy_on_grpc_close"),
            queue_ready: get!("proxy_on_queue_ready"),
            done: get!("proxy_on_done"),
            log: get!("proxy_on_log"),
            delete: get!("proxy_on_delete"),
        };
        let mut vm = Vm {
            store,
            instance,
            cb: Arc::new(cb),
            failed: None,
            slot_index,
        };
        let start = |vm: &mut Vm| -> Result<(), RuntimeError> {
            let budget = rt.limits.start_timeout;
            match spec.module.entry {
                EntryPoint::Initialize { main } => {
                    let f: TypedFunc<(), ()> = vm.typed("_initialize")?;
                    vm.call("_initialize", 0, budget, |s| f.call(s, ()))?;
                    if main {
                        if let Ok(f) = vm.typed::<(i32, i32), i32>("main") {
                            vm.call("main", 0, budget, |s| f.call(s, (0, 0)))?;
                        } else {
                            let f: TypedFunc<(), i32> = vm.typed("__main_void")?;
                            vm.call("__main_void", 0, budget, |s| f.call(s, ()))?;
                        }
                    }
                }
                EntryPoint::Start => {
                    let f: TypedFunc<(), ()> = vm.typed("_start")?;
                    // `_start` ending in proc_exit(0) is the normal end of a command module.
                    vm.call("_start", 0, budget, |s| match f.call(s, ()) {
                        Err(e) if e.downcast_ref::<ProcExit>().is_some_and(|x| x.0 == 0) => Ok(()),
                        other => other,
                    })?;
                }
                EntryPoint::None => {}
            }
            Ok(())
        };
        start(&mut vm).map_err(|e| RuntimeError::Start {
            plugin: spec.vm_name.clone(),
            reason: e.to_string(),
        })?;
        vm.store.data_mut().restricted = false;
        Ok(vm)
    }

    fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
    ) -> Result<TypedFunc<P, R>, RuntimeError> {
        self.instance
            .get_typed_func(&mut self.store, name)
            .map_err(|e| RuntimeError::Abi(format!("{name}: {e:#}")))
    }

    /// Runs one guest call with a deadline; `ctx` becomes the current and effective context.
    /// A failure marks the VM failed.
    pub fn call<R>(
        &mut self,
        callback: &'static str,
        ctx: u32,
        budget: Duration,
        f: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        self.call_after(&mut None, callback, ctx, budget, f)
    }

    /// [`Vm::call`] for calls made back to back (`proxy_on_done` then `proxy_on_log`): the clock
    /// read that ended the previous call, kept in `since`, starts this one, so a sequence of n
    /// calls reads the clock n + 1 times instead of 2n. Only for calls with no host work worth
    /// timing between them; `since` must not outlive the sequence.
    pub fn call_after<R>(
        &mut self,
        since: &mut Option<Instant>,
        callback: &'static str,
        ctx: u32,
        budget: Duration,
        f: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        let started = since.take();
        if let Some(failed) = &self.failed {
            return Err(RuntimeError::Failed(failed.to_string()));
        }
        let ticks = self.store.data().rt.limits.ticks_for(budget);
        self.store.set_epoch_deadline(ticks);
        {
            let state = self.store.data_mut();
            // A grow refused earlier but handled by the guest must not explain a later trap.
            state.limiter.exceeded = false;
            state.current_ctx = ctx;
            state.effective_ctx = ctx;
        }
        let started = started.unwrap_or_else(Instant::now);
        let result = f(&mut self.store);
        let ended = Instant::now();
        *since = Some(ended);
        let took = ended.duration_since(started);
        if let Some(p) = self.store.data().plugin_of(ctx) {
            p.stats.callback(self.slot_index, took);
        }
        result.map_err(|e| {
            let err = self.classify(callback, e);
            if let Some(stats) = self.store.data().plugin_of(ctx).map(|p| &p.stats) {
                stats
                    .traps
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if matches!(err, RuntimeError::Limit { .. }) {
                    stats
                        .limit_exceeded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            self.failed = Some(err.clone());
            err
        })
    }

    fn classify(&self, callback: &'static str, e: wasmtime::Error) -> RuntimeError {
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return RuntimeError::Limit {
                kind: LimitKind::Time,
                callback,
            };
        }
        if self.store.data().limiter.exceeded {
            return RuntimeError::Limit {
                kind: LimitKind::Memory,
                callback,
            };
        }
        let reason = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => e.root_cause().to_string(),
        };
        RuntimeError::Trap { callback, reason }
    }

    /// Linear memory in bytes now.
    pub fn memory_bytes(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }
}
