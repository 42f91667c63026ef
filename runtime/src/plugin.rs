//! Plugins, their VMs and the instance model.
//!
//! **Instance model.** A plugin runs in a *pool* of VMs: one VM per worker slot, as Envoy keeps
//! one VM per worker thread. The slot is picked from the calling thread (a thread-local index,
//! set by the proxy with [`set_thread_slot`]), so with one runtime per worker thread each worker
//! always uses "its" VM and the slot's mutex is uncontended; with work stealing, a request may
//! move threads, but its stream context stays in the VM it was created in (stream contexts live
//! inside a VM), and the mutex keeps that correct.
//! The mutex is held only for the duration of one callback. Plugins with the same module bytes,
//! vm_id, VM configuration and environment share a pool, each with its own root context, as in
//! Envoy; root-context state lives as long as the plugin (a rate limiter's buckets persist across
//! requests, per worker as in Envoy).
//!
//! **Tasks.** Work that arrives from outside a callback — call responses, queue notifications,
//! timer ticks — is queued on the slot and run by whoever holds or next takes its lock, never by
//! re-entering a VM that is busy (so a host that completes a call from inside
//! `dispatch_http_call` cannot deadlock or re-enter the guest).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst, fence,
};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::abi::LogLevel;
use crate::context::{self, Direction};
use crate::engine::Runtime;
use crate::error::RuntimeError;
use crate::limits::DEFAULT_RELOAD_BACKOFF;
use crate::metrics::{PluginStats, PluginStatsInner};
use crate::module::Module;
use crate::state::{PluginMeta, Signal, SlotFailure};
use crate::types::{CallResponse, FailStrategy, HeaderList, Outcome, StreamInfo};
use crate::vm::{Vm, VmSpec};

/// How a plugin is configured; Istio's `WasmPlugin` maps onto it field by field.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// `plugin_name` property; Istio uses `<namespace>.<name>`. Also the name in logs.
    pub name: String,
    /// `plugin_root_id` property (Istio `pluginName`); SDKs pick the root context by it.
    pub root_id: String,
    /// `plugin_vm_id`; also the namespace of shared data and queues. Istio leaves it empty.
    pub vm_id: String,
    /// `proxy_on_configure` data (Istio: `pluginConfig` as JSON; empty when absent).
    pub configuration: Vec<u8>,
    /// `proxy_on_vm_start` data.
    pub vm_configuration: Vec<u8>,
    /// WASI environment (Istio `vmConfig.env`, INLINE and HOST values resolved by the caller).
    pub env: Vec<(String, String)>,
    pub fail_strategy: FailStrategy,
    /// Base of the jittered wait between two reloads under `FailReload`: a reload happens after
    /// between 1× and 2× this since the failure.
    pub reload_backoff: Duration,
    /// Lowest level of `proxy_log` lines passed to [`Host::log`](crate::Host::log); also what
    /// `proxy_get_log_level` answers.
    pub log_level: LogLevel,
}

impl Default for PluginOptions {
    fn default() -> Self {
        Self {
            name: String::new(),
            root_id: String::new(),
            vm_id: String::new(),
            configuration: Vec::new(),
            vm_configuration: Vec::new(),
            env: Vec::new(),
            fail_strategy: FailStrategy::FailClose,
            reload_backoff: DEFAULT_RELOAD_BACKOFF,
            log_level: LogLevel::Info,
        }
    }
}

/// Work delivered to a VM from outside its callbacks.
pub(crate) enum Task {
    CallResponse {
        generation: u64,
        token: u32,
        response: Option<CallResponse>,
        grpc: bool,
    },
    QueueReady {
        generation: u64,
        root: u32,
        queue: u32,
    },
    Tick {
        generation: u64,
        root: u32,
    },
    /// One event of a gRPC stream, in the order the host saw them.
    GrpcStream {
        generation: u64,
        token: u32,
        event: GrpcStreamEvent,
    },
}

/// What a gRPC stream reports back to the plugin (see [`GrpcStreamEvents`](crate::GrpcStreamEvents)).
pub(crate) enum GrpcStreamEvent {
    InitialMetadata(HeaderList),
    Message(Vec<u8>),
    TrailingMetadata(HeaderList),
    Close { status: u32, message: String },
}

impl Task {
    fn generation(&self) -> u64 {
        match self {
            Task::CallResponse { generation, .. }
            | Task::QueueReady { generation, .. }
            | Task::Tick { generation, .. }
            | Task::GrpcStream { generation, .. } => *generation,
        }
    }
}

pub(crate) struct SlotState {
    pub vm: Option<Vm>,
    /// Bumped for every VM created in the slot; streams and tasks of an older VM are stale.
    pub generation: u64,
}

/// One worker slot of a pool: its VM behind a mutex, and its task inbox.
pub(crate) struct Slot {
    index: usize,
    state: Mutex<SlotState>,
    inbox: Mutex<Vec<Task>>,
    /// `!inbox.is_empty()`, kept with the inbox locked and read without it: every callback
    /// checks the inbox twice (before and after unlocking the slot) and it is nearly always
    /// empty, so those checks are a load instead of two lock round trips.
    queued: AtomicBool,
    spec: Arc<VmSpec>,
}

pub(crate) struct VmPool {
    slots: Box<[Arc<Slot>]>,
}

thread_local! {
    /// How many slot locks this thread holds (0 or 1 in practice).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Slots that received tasks while this thread was inside a VM; drained after it leaves.
    static KICKS: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread as inside a VM for its lifetime; unwinding (a panicking host) included.
struct InVm;

impl InVm {
    fn enter() -> Self {
        DEPTH.set(DEPTH.get() + 1);
        InVm
    }
}

impl Drop for InVm {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get() - 1);
    }
}

thread_local! {
    /// The slot this thread's streams use: set by [`set_thread_slot`], else the next free index.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes every stream the calling thread creates use VM slot `index` (modulo the pool size).
///
/// A proxy with one thread per core calls this once on each worker thread with its index, so each
/// worker has VMs of its own and the slot lock is never contended. Threads that never call it get
/// indices in the order they first create a stream, which is only collision-free when no other
/// thread creates streams in between.
pub fn set_thread_slot(index: usize) {
    SLOT.set(Some(index));
}

fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SLOT.get().unwrap_or_else(|| {
        let id = NEXT.fetch_add(1, Relaxed);
        SLOT.set(Some(id));
        id
    })
}

impl Slot {
    /// Runs `f` with the slot locked, then the tasks that arrived meanwhile.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&Arc<Slot>, &mut SlotState) -> R) -> R {
        let result = {
            let mut state = self.state.lock();
            let _in_vm = InVm::enter();
            let result = f(self, &mut state);
            self.run_inbox(&mut state);
            result
        };
        after_unlock(self);
        result
    }

    fn run_inbox(self: &Arc<Self>, state: &mut SlotState) {
        // A task queued meanwhile that this load misses is run by `after_unlock`.
        while self.queued.load(Relaxed) {
            let tasks = {
                let mut inbox = self.inbox.lock();
                self.queued.store(false, Relaxed);
                std::mem::take(&mut *inbox)
            };
            for task in tasks {
                let live = state.generation == task.generation();
                match (live, state.vm.as_mut()) {
                    (true, Some(vm)) => {
                        if context::run_task(vm, task).is_err() && vm.failed.is_some() {
                            vm_failed(self, state);
                        }
                    }
                    // The timer of a VM that is gone must stop firing.
                    _ => {
                        if let Task::Tick { generation, root } = task {
                            let weak = Arc::downgrade(self);
                            self.spec.rt.timers.set(weak, generation, root, None);
                        }
                    }
                }
            }
        }
    }
}

/// Queues a task for a slot and runs it now if nobody holds the slot and this thread is not
/// inside a VM; otherwise the holder (or this thread, once it leaves its VM) runs it.
pub(crate) fn deliver(slot: &Arc<Slot>, task: Task) {
    {
        let mut inbox = slot.inbox.lock();
        inbox.push(task);
        slot.queued.store(true, Relaxed);
    }
    // Pairs with the fence in `after_unlock`: either the slot's holder sees `queued` after it
    // unlocks, or `kick`'s `try_lock` below sees the slot unlocked (see there).
    fence(SeqCst);
    if DEPTH.get() > 0 {
        KICKS.with(|k| k.borrow_mut().push(slot.clone()));
    } else {
        kick(slot);
    }
}

fn kick(slot: &Arc<Slot>) {
    loop {
        let Some(mut state) = slot.state.try_lock() else {
            // The holder re-checks the inbox after it unlocks.
            return;
        };
        {
            let _in_vm = InVm::enter();
            slot.run_inbox(&mut state);
        }
        drop(state);
        drain_kicks();
        if slot.inbox.lock().is_empty() {
            return;
        }
    }
}

fn after_unlock(slot: &Arc<Slot>) {
    if DEPTH.get() > 0 {
        return;
    }
    // A deliverer stores `queued`, fences, then try-locks the slot; we unlocked it, fence, then
    // load `queued`. With the two SeqCst fences, one of us sees the other's write: we see the
    // task here, or its deliverer's `try_lock` succeeds and it runs the task itself.
    fence(SeqCst);
    if slot.queued.load(Relaxed) {
        kick(slot);
    }
    drain_kicks();
}

fn drain_kicks() {
    // Runs after every callback and nearly always finds nothing: look before taking.
    if DEPTH.get() > 0 || KICKS.with(|k| k.borrow().is_empty()) {
        return;
    }
    loop {
        let kicks = KICKS.with(|k| std::mem::take(&mut *k.borrow_mut()));
        if kicks.is_empty() {
            return;
        }
        for slot in kicks {
            kick(&slot);
        }
    }
}

/// The VM in this slot trapped or exceeded a limit: every plugin with a root context in it is
/// failed on this slot, paused streams are answered by their fail strategy, and the VM is
/// dropped. The next plugin that may run here (a new plugin, or a `FAIL_RELOAD` one after its
/// backoff) gets a fresh VM.
fn vm_failed(slot: &Arc<Slot>, state: &mut SlotState) {
    let Some(mut vm) = state.vm.take() else {
        return;
    };
    let reason = vm
        .failed
        .clone()
        .unwrap_or_else(|| RuntimeError::Failed("unknown".into()));
    context::fail_streams(&mut vm);
    for context in vm.store.data().contexts.values() {
        if let crate::state::Context::Root(root) = context {
            mark_failed(&root.plugin, slot.index, reason.clone());
        }
    }
    tracing::warn!(vm = %slot.spec.vm_name, slot = slot.index, error = %reason, "wasm VM failed");
}

fn mark_failed(plugin: &PluginMeta, index: usize, reason: RuntimeError) {
    let base = plugin.reload_backoff;
    let jitter = base.mul_f64(rand::rng().random::<f64>());
    if let Some(entry) = plugin.failures.lock().get_mut(index) {
        *entry = Some(SlotFailure {
            reason,
            retry_at: Instant::now() + base + jitter,
        });
        plugin.ever_failed.store(true, Relaxed);
    }
}

/// Makes sure `plugin` has a configured root context in this slot's VM, creating the VM if
/// needed; applies `FAIL_RELOAD`'s backoff.
fn ensure_root(
    slot: &Arc<Slot>,
    state: &mut SlotState,
    plugin: &Arc<PluginMeta>,
) -> Result<u32, RuntimeError> {
    let mut reload = false;
    if plugin.ever_failed.load(Relaxed)
        && let Some(entry) = plugin.failures.lock().get_mut(slot.index)
        && let Some(failure) = entry
    {
        if plugin.fail_strategy == FailStrategy::FailReload && Instant::now() >= failure.retry_at {
            *entry = None;
            reload = true;
        } else {
            if plugin.fail_strategy == FailStrategy::FailReload {
                plugin.stats.reload_backoffs.fetch_add(1, Relaxed);
            }
            return Err(RuntimeError::Failed(failure.reason.to_string()));
        }
    }
    if state.vm.is_none() {
        state.generation += 1;
        match Vm::new(
            &slot.spec,
            Arc::downgrade(slot),
            slot.index,
            state.generation,
        ) {
            Ok(vm) => state.vm = Some(vm),
            Err(e) => {
                mark_failed(plugin, slot.index, e.clone());
                if reload {
                    context::count_reload(plugin, false);
                }
                return Err(e);
            }
        }
    }
    let Some(vm) = state.vm.as_mut() else {
        return Err(RuntimeError::Failed("no VM".into()));
    };
    if let Some(&root) = vm.store.data().roots.get(&plugin.id) {
        return Ok(root);
    }
    match context::create_root(vm, plugin) {
        Ok(root) => {
            if reload {
                context::count_reload(plugin, true);
            }
            Ok(root)
        }
        Err(e) => {
            if vm.failed.is_some() {
                vm_failed(slot, state);
            }
            mark_failed(plugin, slot.index, e.clone());
            if reload {
                context::count_reload(plugin, false);
            }
            Err(e)
        }
    }
}

/// A configured plugin, ready to serve streams. Cheap to clone; `Send + Sync`. Dropping the
/// last clone (and the last [`Stream`]) ends its root contexts (`proxy_on_done`,
/// `proxy_on_delete`) and, if no other plugin shares them, its VMs.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    meta: Arc<PluginMeta>,
    pool: Arc<VmPool>,
    module: Module,
}

static NEXT_PLUGIN_ID: AtomicU64 = AtomicU64::new(1);

impl Plugin {
    /// Loads a plugin: the canary Envoy runs before accepting a configuration. The module is
    /// started and the plugin's root context created, started (`proxy_on_vm_start`) and
    /// configured (`proxy_on_configure`) in every worker slot before this returns, so a caller
    /// that swaps configurations only after `Ok` never serves a plugin that refuses its config.
    ///
    /// When the plugin shares VMs with a running plugin, the canary first runs in a throwaway
    /// VM, so a configuration that traps cannot take the shared VMs down.
    ///
    /// Errors: [`RuntimeError::Start`], [`RuntimeError::Configure`] (false from
    /// `proxy_on_configure`), [`RuntimeError::Instantiate`], [`RuntimeError::Limit`], `Trap`.
    pub fn load(
        runtime: &Runtime,
        module: &Module,
        options: PluginOptions,
    ) -> Result<Plugin, RuntimeError> {
        let rt = runtime.inner();
        let mut key = Sha256::new();
        key.update(module.inner.digest);
        for part in [options.vm_id.as_bytes(), &options.vm_configuration] {
            key.update((part.len() as u64).to_le_bytes());
            key.update(part);
        }
        for (k, v) in &options.env {
            key.update(format!("{}={}\0", k.len(), k).as_bytes());
            key.update(v.as_bytes());
        }
        let key: [u8; 32] = key.finalize().into();
        let (pool, shared) = {
            let mut pools = rt.pools.lock();
            pools.retain(|_, p| p.strong_count() > 0);
            match pools.get(&key).and_then(Weak::upgrade) {
                Some(pool) => (pool, true),
                None => {
                    let spec = Arc::new(VmSpec {
                        rt: rt.clone(),
                        module: module.inner.clone(),
                        vm_id: options.vm_id.clone(),
                        vm_name: if options.name.is_empty() {
                            format!("vm:{}", &module.digest()[..12])
                        } else {
                            options.name.clone()
                        },
                        vm_configuration: options.vm_configuration.clone().into(),
                        env: options.env.clone().into(),
                    });
                    let slots = (0..rt.slots)
                        .map(|index| {
                            Arc::new(Slot {
                                index,
                                state: Mutex::new(SlotState {
                                    vm: None,
                                    generation: 0,
                                }),
                                inbox: Mutex::new(Vec::new()),
                                queued: AtomicBool::new(false),
                                spec: spec.clone(),
                            })
                        })
                        .collect();
                    let pool = Arc::new(VmPool { slots });
                    pools.insert(key, Arc::downgrade(&pool));
                    (pool, false)
                }
            }
        };
        let meta = Arc::new(PluginMeta {
            id: NEXT_PLUGIN_ID.fetch_add(1, Relaxed),
            name: options.name,
            root_id: options.root_id,
            configuration: options.configuration,
            log_level: options.log_level,
            fail_strategy: options.fail_strategy,
            reload_backoff: options.reload_backoff,
            stats: Arc::new(PluginStatsInner::new(rt.slots)),
            failures: Mutex::new((0..rt.slots).map(|_| None).collect()),
            ever_failed: Default::default(),
        });
        if shared {
            let spec = &pool.slots[0].spec;
            // Its calls count in slot 0's stats, which no slot VM writes for this plugin yet.
            let mut canary = Vm::new(spec, Weak::new(), 0, 0)?;
            context::create_root(&mut canary, &meta)?;
            context::delete_root(&mut canary, meta.id);
        }
        let plugin = Plugin {
            inner: Arc::new(PluginInner {
                meta,
                pool,
                module: module.clone(),
            }),
        };
        for slot in plugin.inner.pool.slots.iter() {
            slot.with(|slot, state| ensure_root(slot, state, &plugin.inner.meta))?;
        }
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.inner.meta.name
    }

    pub fn module(&self) -> &Module {
        &self.inner.module
    }

    /// Starts a stream (`proxy_on_context_create(stream, root)`) in this thread's VM. Never
    /// fails: if the plugin cannot run here, the stream carries its fail strategy — `FailOpen`
    /// streams skip every callback ([`Stream::is_skipped`]), `FailClose` streams answer their
    /// first callback with 503 `wasm_fail_stream`. A proxy running a chain passes one
    /// `Arc<StreamInfo>` to every plugin of the request.
    pub fn new_stream(&self, info: impl Into<Arc<StreamInfo>>) -> Stream {
        let info = info.into();
        let slots = &self.inner.pool.slots;
        let slot = slots[thread_slot() % slots.len()].clone();
        let meta = &self.inner.meta;
        let created = slot.with(|slot, state| {
            let root = ensure_root(slot, state, meta)?;
            let generation = state.generation;
            let vm = state
                .vm
                .as_mut()
                .ok_or_else(|| RuntimeError::Failed("no VM".into()))?;
            match context::create_stream(vm, meta, root, info) {
                Ok((ctx, signal)) => Ok((ctx, signal, generation)),
                Err(e) => {
                    if vm.failed.is_some() {
                        vm_failed(slot, state);
                    }
                    Err(e)
                }
            }
        });
        let (mode, ctx, signal, generation) = match created {
            Ok((ctx, signal, generation)) => (Mode::Active, ctx, signal, generation),
            Err(_) => (Mode::Failed, 0, Arc::new(Signal::default()), 0),
        };
        let mut stream = Stream {
            plugin: self.inner.clone(),
            slot,
            generation,
            ctx,
            signal,
            mode,
            logged: false,
        };
        if mode == Mode::Failed && meta.fail_strategy == FailStrategy::FailOpen {
            stream.fail();
        }
        stream
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> PluginStats {
        let (mut vms, mut memory) = (0, 0);
        for slot in self.inner.pool.slots.iter() {
            // Through `with`, so a task that arrives meanwhile is not left waiting.
            slot.with(|_, state| {
                if let Some(vm) = &state.vm
                    && vm.store.data().roots.contains_key(&self.inner.meta.id)
                {
                    vms += 1;
                    memory += vm.memory_bytes() as u64;
                }
            });
        }
        self.inner.meta.stats.snapshot(vms, memory)
    }

    /// Why the plugin cannot run in some worker slot right now, if it cannot.
    pub fn failure(&self) -> Option<RuntimeError> {
        self.inner
            .meta
            .failures
            .lock()
            .iter()
            .flatten()
            .next()
            .map(|f| f.reason.clone())
    }
}

impl Drop for PluginInner {
    fn drop(&mut self) {
        for slot in self.pool.slots.iter() {
            slot.with(|_, state| {
                if let Some(vm) = state.vm.as_mut() {
                    context::delete_root(vm, self.meta.id);
                }
            });
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.meta.name)
            .field("module", &self.inner.module)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Active,
    /// The VM failed (before or during this stream); the fail strategy answers.
    Failed,
    /// `FailOpen` after a failure, or `FailClose` after its 503 was sent: callbacks continue.
    Done,
}

/// One HTTP request through one plugin: a stream context that lives, in one VM, from request
/// headers to `proxy_on_delete` (on drop). `Send + Sync`; keep it in the proxy's per-request
/// context and call the phases in order. Each call returns an [`Outcome`]; when it carries a
/// `local_reply`, send it and stop the chain; on `Action::Pause`, await [`Stream::resumed`]
/// before calling the next phase.
pub struct Stream {
    plugin: Arc<PluginInner>,
    slot: Arc<Slot>,
    generation: u64,
    ctx: u32,
    signal: Arc<Signal>,
    mode: Mode,
    logged: bool,
}

impl Stream {
    /// True when the plugin is skipped for this stream (`FailOpen` after a failure): the proxy
    /// may stop calling it.
    pub fn is_skipped(&self) -> bool {
        self.mode == Mode::Done && self.plugin.meta.fail_strategy == FailStrategy::FailOpen
    }

    /// The fail strategy's answer, once; later callbacks just continue.
    fn fail(&mut self) -> Outcome {
        if self.mode == Mode::Done {
            return Outcome::cont();
        }
        self.mode = Mode::Done;
        let outcome = context::fail_outcome(&self.plugin.meta);
        context::count_fail(&self.plugin.meta, &outcome);
        outcome
    }

    fn run(&mut self, f: impl FnOnce(&mut Vm, u32) -> Result<Outcome, RuntimeError>) -> Outcome {
        match self.mode {
            Mode::Active => {}
            Mode::Failed => return self.fail(),
            Mode::Done => return Outcome::cont(),
        }
        let (generation, ctx) = (self.generation, self.ctx);
        let result = self.slot.with(|slot, state| {
            if state.generation != generation {
                return None;
            }
            let vm = state.vm.as_mut()?;
            match f(vm, ctx) {
                Ok(outcome) => Some(outcome),
                Err(_) => {
                    if vm.failed.is_some() {
                        vm_failed(slot, state);
                    }
                    None
                }
            }
        });
        match result {
            Some(outcome) => outcome,
            None => {
                self.mode = Mode::Failed;
                self.fail()
            }
        }
    }

    /// `proxy_on_request_headers`. `headers` goes in and comes back edited.
    pub fn on_request_headers(&mut self, headers: &mut HeaderList, end_of_stream: bool) -> Outcome {
        self.run(|vm, ctx| context::on_headers(vm, ctx, Direction::Request, headers, end_of_stream))
    }

    /// `proxy_on_request_body`. On `Continue`, `body` holds what to send on: this chunk, or
    /// everything buffered since the plugin paused, possibly rewritten. On `Pause` it is empty
    /// and the runtime keeps the data (up to [`Limits::max_body_bytes`](crate::Limits), then
    /// 413); if the pause came at end of stream, await [`Stream::resumed`] then take the data
    /// with [`Stream::take_buffered_request_body`]. Synchronous, for Pingora's body filters.
    pub fn on_request_body(&mut self, body: &mut Bytes, end_of_stream: bool) -> Outcome {
        self.run(|vm, ctx| context::on_body(vm, ctx, Direction::Request, body, end_of_stream))
    }

    /// `proxy_on_request_trailers`.
    pub fn on_request_trailers(&mut self, trailers: &mut HeaderList) -> Outcome {
        self.run(|vm, ctx| context::on_trailers(vm, ctx, Direction::Request, trailers))
    }

    /// `proxy_on_response_headers` (`:status` included in `headers`).
    pub fn on_response_headers(
        &mut self,
        headers: &mut HeaderList,
        end_of_stream: bool,
    ) -> Outcome {
        self.run(|vm, ctx| {
            context::on_headers(vm, ctx, Direction::Response, headers, end_of_stream)
        })
    }

    /// `proxy_on_response_body`; as [`Stream::on_request_body`] (500 beyond the buffer limit).
    pub fn on_response_body(&mut self, body: &mut Bytes, end_of_stream: bool) -> Outcome {
        self.run(|vm, ctx| context::on_body(vm, ctx, Direction::Response, body, end_of_stream))
    }

    /// `proxy_on_response_trailers`.
    pub fn on_response_trailers(&mut self, trailers: &mut HeaderList) -> Outcome {
        self.run(|vm, ctx| context::on_trailers(vm, ctx, Direction::Response, trailers))
    }

    /// The request body the runtime buffered while the plugin paused it.
    pub fn take_buffered_request_body(&mut self) -> Bytes {
        self.take_buffered(Direction::Request)
    }

    /// The response body the runtime buffered while the plugin paused it.
    pub fn take_buffered_response_body(&mut self) -> Bytes {
        self.take_buffered(Direction::Response)
    }

    fn take_buffered(&mut self, dir: Direction) -> Bytes {
        if self.mode != Mode::Active {
            return Bytes::new();
        }
        let (generation, ctx) = (self.generation, self.ctx);
        self.slot.with(|_, state| match state.vm.as_mut() {
            Some(vm) if state.generation == generation => context::take_buffered(vm, ctx, dir),
            _ => Bytes::new(),
        })
    }

    /// Waits until a paused stream may go on: the plugin called `proxy_continue_stream`
    /// (→ `Continue`), `proxy_send_local_response` (→ a `local_reply`) or `proxy_close_stream`
    /// (→ `Close`) from a later callback — typically its `proxy_on_http_call_response` — or its
    /// VM failed (→ the fail strategy's outcome). Executor-agnostic. The proxy should bound the
    /// wait with its own timeout: a plugin may never continue. On `Continue`, re-read the
    /// headers of the paused phase with [`Stream::request_headers`] /
    /// [`Stream::response_headers`]: the plugin may have edited them meanwhile.
    pub async fn resumed(&mut self) -> Outcome {
        if self.mode != Mode::Active {
            return self.run(|_, _| Ok(Outcome::cont()));
        }
        let signal = self.signal.clone();
        let outcome = std::future::poll_fn(|cx| signal.poll(cx.waker())).await;
        if outcome.fail.is_some() {
            // The VM failed while the stream waited: the fail strategy has answered it.
            self.mode = Mode::Done;
            context::count_fail(&self.plugin.meta, &outcome);
        }
        outcome
    }

    /// Access-log phase: `proxy_on_done` then `proxy_on_log`. Call once, after the response
    /// (or when the request ends early). `proxy_on_delete` follows when the stream is dropped.
    pub fn on_log(&mut self) {
        if self.logged || self.mode != Mode::Active {
            return;
        }
        self.logged = true;
        let _ = self.run(|vm, ctx| context::on_log(vm, ctx).map(|()| Outcome::cont()));
    }

    /// The request headers as the runtime holds them now. After [`Stream::resumed`] returns
    /// `Continue`, apply these to the request: while the stream was paused, a later callback
    /// (typically `proxy_on_http_call_response`) may have edited them, as Envoy allows.
    /// `None` before `on_request_headers` or when the plugin no longer runs on this stream.
    pub fn request_headers(&mut self) -> Option<HeaderList> {
        self.current(|s| s.request_headers.clone())
    }

    /// The response headers as the runtime holds them now; see [`Stream::request_headers`].
    pub fn response_headers(&mut self) -> Option<HeaderList> {
        self.current(|s| s.response_headers.clone())
    }

    fn current<T>(&mut self, f: impl FnOnce(&crate::state::StreamCtx) -> Option<T>) -> Option<T> {
        if self.mode != Mode::Active {
            return None;
        }
        let (generation, ctx) = (self.generation, self.ctx);
        self.slot.with(|_, state| match state.vm.as_ref() {
            Some(vm) if state.generation == generation => {
                match vm.store.data().contexts.get(&ctx) {
                    Some(crate::state::Context::Stream(s)) => f(s),
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// Updates what the stream knows (e.g. the upstream address once connected).
    pub fn update_info(&mut self, f: impl FnOnce(&mut StreamInfo)) {
        if self.mode != Mode::Active {
            return;
        }
        let (generation, ctx) = (self.generation, self.ctx);
        self.slot.with(|_, state| {
            if state.generation != generation {
                return;
            }
            if let Some(vm) = state.vm.as_mut()
                && let Some(crate::state::Context::Stream(s)) =
                    vm.store.data_mut().contexts.get_mut(&ctx)
            {
                f(Arc::make_mut(&mut s.info));
            }
        });
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.mode != Mode::Active {
            return;
        }
        let (generation, ctx, logged) = (self.generation, self.ctx, self.logged);
        self.slot.with(|slot, state| {
            if state.generation != generation {
                return;
            }
            if let Some(vm) = state.vm.as_mut() {
                context::on_delete(vm, ctx, logged);
                if vm.failed.is_some() {
                    vm_failed(slot, state);
                }
            }
        });
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("plugin", &self.plugin.meta.name)
            .field("context", &self.ctx)
            .field("mode", &self.mode)
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Plugin>();
    assert::<Stream>();
    assert::<Runtime>();
    assert::<Module>();
    assert::<crate::host::CallCompletion>();
}

/// The proxy awaits `resumed()` inside its (Send) request future.
#[allow(dead_code)]
fn _assert_resumed_is_send(stream: &mut Stream) {
    fn send<T: Send>(_: T) {}
    send(stream.resumed());
}
