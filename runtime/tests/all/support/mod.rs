//! Test support: a fake host that records everything (like cpp-host's `TestContext`), the
//! `.wat` guests compiled once per test binary, and small helpers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use wasmgate_runtime::*;

/// A call the plugin asked the host to make, with the completion to answer it.
pub struct PendingCall {
    pub http: Option<HttpCall>,
    pub grpc: Option<GrpcCall>,
    pub done: CallCompletion,
}

/// A gRPC stream the plugin opened: what it asked for, the events to answer with, and what its
/// sink saw (`send:<msg>:<end_stream>`, `close`, `drop`).
pub struct OpenedStream {
    pub stream: GrpcStream,
    pub events: Option<GrpcStreamEvents>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

struct RecordingSink(Arc<Mutex<Vec<String>>>);

impl GrpcStreamSink for RecordingSink {
    fn send(&mut self, message: Vec<u8>, end_stream: bool) {
        let message = String::from_utf8_lossy(&message).into_owned();
        self.0.lock().push(format!("send:{message}:{end_stream}"));
    }

    fn close(&mut self) {
        self.0.lock().push("close".into());
    }
}

impl Drop for RecordingSink {
    fn drop(&mut self) {
        self.0.lock().push("drop".into());
    }
}

#[derive(Default)]
pub struct FakeHost {
    /// gRPC streams opened, when `accept_streams` is set (else opens answer `InternalFailure`).
    pub grpc_streams: Mutex<Vec<OpenedStream>>,
    pub accept_streams: Mutex<bool>,
    pub logs: Mutex<Vec<(String, LogLevel, String)>>,
    pub calls: Mutex<Vec<PendingCall>>,
    pub properties: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    /// Answer calls synchronously from inside dispatch (the hard case for re-entrancy).
    pub answer_inline: Mutex<Option<CallResponse>>,
    pub refuse_calls: Mutex<Option<Status>>,
    pub fixed_now: Mutex<Option<SystemTime>>,
}

impl Host for FakeHost {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        self.logs
            .lock()
            .push((plugin.to_owned(), level, message.to_owned()));
    }

    fn now(&self) -> SystemTime {
        self.fixed_now.lock().unwrap_or_else(SystemTime::now)
    }

    fn property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        self.properties.lock().get(&path.join(&0u8)).cloned()
    }

    fn dispatch_http_call(&self, call: HttpCall, done: CallCompletion) -> Result<(), Status> {
        if let Some(status) = *self.refuse_calls.lock() {
            return Err(status);
        }
        if let Some(response) = self.answer_inline.lock().clone() {
            done.complete(response);
            return Ok(());
        }
        self.calls.lock().push(PendingCall {
            http: Some(call),
            grpc: None,
            done,
        });
        Ok(())
    }

    fn dispatch_grpc_call(&self, call: GrpcCall, done: CallCompletion) -> Result<(), Status> {
        self.calls.lock().push(PendingCall {
            http: None,
            grpc: Some(call),
            done,
        });
        Ok(())
    }

    fn open_grpc_stream(
        &self,
        stream: GrpcStream,
        events: GrpcStreamEvents,
    ) -> Result<Box<dyn GrpcStreamSink>, Status> {
        if !*self.accept_streams.lock() {
            return Err(Status::InternalFailure);
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        self.grpc_streams.lock().push(OpenedStream {
            stream,
            events: Some(events),
            seen: seen.clone(),
        });
        Ok(Box::new(RecordingSink(seen)))
    }
}

impl FakeHost {
    pub fn messages(&self) -> Vec<String> {
        self.logs.lock().iter().map(|(_, _, m)| m.clone()).collect()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().iter().any(|(_, _, m)| m.contains(needle))
    }

    /// Messages in order that start with `prefix` (the guests log `cb:<name>` to trace lifecycle).
    pub fn trace(&self, prefix: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.starts_with(prefix))
            .collect()
    }

    pub fn clear(&self) {
        self.logs.lock().clear();
    }

    pub fn take_call(&self) -> Option<PendingCall> {
        let mut calls = self.calls.lock();
        (!calls.is_empty()).then(|| calls.remove(0))
    }
}

/// Source of a guest under `tests/guests/`.
pub fn guest(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests")
        .join(format!("{name}.wat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A guest from `tests/guests/NAME.wat`, expanded: `;;LIB` (after the imports) becomes the
/// shared `lib.wat` plus data segments, and each `(str "text")` becomes `(i32.const ADDR)
/// (i32.const LEN)` of that text placed in memory from address 1024. Guests stay small and
/// readable without hand-counted string offsets.
pub fn wat(name: &str) -> Vec<u8> {
    expand(&String::from_utf8(guest(name)).unwrap()).into_bytes()
}

pub fn expand(src: &str) -> String {
    let lib = String::from_utf8(guest("lib")).unwrap();
    let src = src.replace(";;LIB", &format!("{lib}\n;;DATA"));
    let mut out = String::new();
    let mut data = String::new();
    let mut addr = 1024usize;
    let mut rest = src.as_str();
    while let Some(at) = rest.find("(str \"") {
        out.push_str(&rest[..at]);
        let lit_start = at + 5;
        let lit_end = lit_start + 1 + closing_quote(&rest[lit_start + 1..]);
        let literal = &rest[lit_start..=lit_end];
        let len = decoded_len(&literal[1..literal.len() - 1]);
        out.push_str(&format!("(i32.const {addr}) (i32.const {len})"));
        data.push_str(&format!("  (data (i32.const {addr}) {literal})\n"));
        addr += len + 1;
        rest = &rest[lit_end + 1..];
        rest = rest
            .strip_prefix(')')
            .expect("(str \"...\") must close right after the string");
    }
    out.push_str(rest);
    assert!(addr < 60000, "guest strings overflow their region");
    out.replace(";;DATA", &data)
}

fn closing_quote(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i
}

fn decoded_len(s: &str) -> usize {
    let b = s.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if b[i] == b'\\' {
            i += if b[i + 1].is_ascii_hexdigit() { 3 } else { 2 };
        } else {
            i += 1;
        }
        n += 1;
    }
    n
}

pub struct Env {
    pub host: Arc<FakeHost>,
    pub runtime: Runtime,
}

pub fn env_with(limits: Limits, slots: usize) -> Env {
    let host = Arc::new(FakeHost::default());
    let runtime = Runtime::new(
        host.clone(),
        RuntimeOptions {
            limits,
            slots,
            ..Default::default()
        },
    )
    .expect("runtime");
    Env { host, runtime }
}

pub fn env() -> Env {
    env_with(Limits::default(), 1)
}

impl Env {
    pub fn module(&self, wat: &[u8]) -> Module {
        self.runtime.load_module(wat).expect("module loads")
    }

    pub fn plugin(&self, wat: &[u8], config: &str) -> Plugin {
        self.plugin_with(wat, opts(config))
    }

    pub fn plugin_with(&self, wat: &[u8], options: PluginOptions) -> Plugin {
        let module = self.module(wat);
        Plugin::load(&self.runtime, &module, options).expect("plugin loads")
    }
}

/// Options with a vm_id unique to this call, so tests running in parallel never share a VM
/// (or shared data) unless they ask to.
pub fn opts(config: &str) -> PluginOptions {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    PluginOptions {
        name: "test.plugin".into(),
        root_id: "root".into(),
        vm_id: format!("vm-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        configuration: config.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A module of the shared runtime, compiled once per test binary.
pub fn shared_module(name: &str) -> Module {
    static MODULES: OnceLock<Mutex<HashMap<String, Module>>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    let mut modules = modules.lock();
    modules
        .entry(name.to_owned())
        .or_insert_with(|| shared_env().module(&wat(name)))
        .clone()
}

/// A plugin of `guest` in the shared runtime.
pub fn shared_plugin(name: &str, options: PluginOptions) -> Plugin {
    Plugin::load(&shared_env().runtime, &shared_module(name), options).expect("plugin loads")
}

pub fn request_headers() -> HeaderList {
    [
        (":method", "GET"),
        (":path", "/api/x?q=1"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("user-agent", "test/1.0"),
        ("x-multi", "a"),
        ("x-multi", "b"),
    ]
    .into_iter()
    .collect()
}

pub fn response_headers() -> HeaderList {
    [(":status", "200"), ("content-type", "text/plain")]
        .into_iter()
        .collect()
}

/// Polls until `f` is true or a generous deadline passes (no sleeps as synchronisation).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Minimal executor for `Stream::resumed` (the runtime is executor-agnostic).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "future never completed");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Compiled-once cache of modules shared by tests in this binary (compilation dominates time).
pub fn shared_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(env)
}
