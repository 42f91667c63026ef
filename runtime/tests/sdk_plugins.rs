//! The real plugins of `plugins/dist/` (built with the Rust proxy-wasm SDK) loaded through the runtime and
//! driven the way the gateway drives them: request headers, body, response headers, body, log, drop — with a
//! fake [`Host`] that records logs, answers HTTP/gRPC calls from another thread and owns the clock.
//!
//! Each test asserts the behaviour documented in `plugins/README.md` and the plugins' own READMEs.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wasmgate_runtime::{
    AbiVersion, Action, CallCompletion, CallResponse, CheckOptions, EntryPoint, FailAction,
    FailStrategy, GrpcCall, GrpcStream, GrpcStreamEvents, GrpcStreamSink, HeaderList, Host,
    HttpCall, LimitKind, Limits, LocalReply, LogLevel, MetricValue, Plugin, PluginOptions, Runtime,
    RuntimeError, RuntimeOptions, Status, Stream, StreamInfo, check_module,
};

/// How long a test waits for something asynchronous (a call answer, a tick, a queue delivery). Generous:
/// the machine may be loaded; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(20);

/// The fake clock's start: 2026-01-01T00:00:00Z.
const T0_SECS: u64 = 1_767_225_600;

// === fake host ===

#[derive(Default)]
struct FakeHost {
    logs: Mutex<Vec<(String, LogLevel, String)>>,
    /// `None`: the real clock.
    clock: Mutex<Option<SystemTime>>,
    http_calls: Mutex<Vec<HttpCall>>,
    grpc_calls: Mutex<Vec<GrpcCall>>,
    /// What the fake gRPC stream server saw, per stream: `msg:<m>`, then `end` or `reset`.
    grpc_streams: Arc<Mutex<Vec<Vec<String>>>>,
}

impl FakeHost {
    fn logged(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, m)| m.contains(needle))
    }

    fn messages(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, m)| m.clone())
            .collect()
    }

    fn set_clock(&self, t: SystemTime) {
        *self.clock.lock().unwrap() = Some(t);
    }

    fn advance(&self, d: Duration) {
        let mut clock = self.clock.lock().unwrap();
        *clock = Some(clock.expect("fake clock set") + d);
    }
}

/// Answers from another thread, as a real proxy would from its event loop.
fn answer_later(done: CallCompletion, response: Option<CallResponse>) {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(5));
        match response {
            Some(r) => done.complete(r),
            None => done.fail(),
        }
    });
}

/// A bidirectional echo stream answered at once, from inside the host calls (the runtime must defer
/// the callbacks until the current one returns): initial metadata `x-server-md: m1` when opened, one
/// `echo:<m>` per message, and on half-close trailers `x-server-trailer: t` and status 0 `all done`.
struct EchoStream {
    index: usize,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    events: Option<GrpcStreamEvents>,
}

impl EchoStream {
    fn record(&self, what: impl Into<String>) {
        self.seen.lock().unwrap()[self.index].push(what.into());
    }

    fn finish(&mut self) {
        if let Some(events) = self.events.take() {
            self.record("end");
            events.trailing_metadata(headers(&[("x-server-trailer", "t")]));
            events.close(0, "all done");
        }
    }
}

impl GrpcStreamSink for EchoStream {
    fn send(&mut self, message: Vec<u8>, end_stream: bool) {
        let message = String::from_utf8_lossy(&message).into_owned();
        self.record(format!("msg:{message}"));
        if let Some(events) = &self.events {
            events.message(format!("echo:{message}").into_bytes());
        }
        if end_stream {
            self.finish();
        }
    }

    fn close(&mut self) {
        self.finish();
    }
}

impl Drop for EchoStream {
    fn drop(&mut self) {
        if self.events.is_some() {
            self.record("reset");
        }
    }
}

impl Host for FakeHost {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        self.logs
            .lock()
            .unwrap()
            .push((plugin.to_string(), level, message.to_string()));
    }

    fn now(&self) -> SystemTime {
        self.clock.lock().unwrap().unwrap_or_else(SystemTime::now)
    }

    fn property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        match path {
            [b"xds", b"node", b"id"] | [b"node", b"id"] => Some(b"test-node".to_vec()),
            _ => None,
        }
    }

    /// Upstream `hostcalls-upstream` only. By `:path`: `/deny` answers 503, `/fail` fails the call, anything
    /// else 200 with body `pong` and a trailer.
    fn dispatch_http_call(&self, call: HttpCall, done: CallCompletion) -> Result<(), Status> {
        if call.upstream != "hostcalls-upstream" {
            return Err(Status::BadArgument);
        }
        let path = call
            .headers
            .get(":path")
            .map(|p| p.to_vec())
            .unwrap_or_default();
        self.http_calls.lock().unwrap().push(call);
        let response = match path.as_slice() {
            b"/fail" => None,
            b"/deny" => Some(CallResponse {
                headers: headers(&[(":status", "503")]),
                ..Default::default()
            }),
            _ => Some(CallResponse {
                headers: headers(&[(":status", "200"), ("x-echo", "1")]),
                body: b"pong".to_vec(),
                trailers: headers(&[("x-call-trailer", "t")]),
                ..Default::default()
            }),
        };
        answer_later(done, response);
        Ok(())
    }

    /// Upstream `hostcalls-grpc` answers message `pong`; `grpc-down` fails (UNAVAILABLE).
    fn dispatch_grpc_call(&self, call: GrpcCall, done: CallCompletion) -> Result<(), Status> {
        let response = match call.upstream.as_str() {
            "hostcalls-grpc" => Some(CallResponse {
                body: b"pong".to_vec(),
                ..Default::default()
            }),
            "grpc-down" => None,
            _ => return Err(Status::BadArgument),
        };
        self.grpc_calls.lock().unwrap().push(call);
        answer_later(done, response);
        Ok(())
    }

    /// Upstream `hostcalls-grpc` only: an [`EchoStream`].
    fn open_grpc_stream(
        &self,
        stream: GrpcStream,
        events: GrpcStreamEvents,
    ) -> Result<Box<dyn GrpcStreamSink>, Status> {
        if stream.upstream != "hostcalls-grpc" {
            return Err(Status::InternalFailure);
        }
        let index = {
            let mut seen = self.grpc_streams.lock().unwrap();
            seen.push(vec![format!("/{}/{}", stream.service, stream.method)]);
            seen.len() - 1
        };
        events.initial_metadata(headers(&[("x-server-md", "m1")]));
        Ok(Box::new(EchoStream {
            index,
            seen: self.grpc_streams.clone(),
            events: Some(events),
        }))
    }
}

// === helpers ===

fn headers(pairs: &[(&str, &str)]) -> HeaderList {
    pairs.iter().copied().collect()
}

fn header(list: &HeaderList, name: &str) -> Option<String> {
    list.get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn dist(file: &str) -> Vec<u8> {
    let path = format!("{}/../plugins/dist/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run plugins/build.sh)"))
}

struct Env {
    host: Arc<FakeHost>,
    runtime: Runtime,
}

fn env_with(slots: usize, limits: Limits) -> Env {
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

fn env() -> Env {
    env_with(1, Limits::default())
}

impl Env {
    fn load(&self, file: &str, options: PluginOptions) -> Result<Plugin, RuntimeError> {
        let module = self.runtime.load_module(&dist(file)).expect("module loads");
        Plugin::load(&self.runtime, &module, options)
    }

    fn plugin(&self, file: &str, config: &str) -> Plugin {
        self.load(file, options(file, config))
            .unwrap_or_else(|e| panic!("{file} with {config:?}: {e}"))
    }
}

fn options(file: &str, config: &str) -> PluginOptions {
    let name = file.trim_end_matches(".wasm");
    PluginOptions {
        name: format!("default.{name}"),
        root_id: name.to_string(),
        configuration: config.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Polls a future to completion on this thread, failing the test after [`PATIENCE`].
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for a paused stream to resume"
        );
        thread::park_timeout(Duration::from_millis(20));
    }
}

/// Retries `f` until it returns `Some`, failing the test after [`PATIENCE`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A request as the client sends it and the response the upstream would give.
#[derive(Clone)]
struct Exchange {
    request: Vec<(String, String)>,
    request_body: Option<Vec<Vec<u8>>>,
    request_trailers: Option<Vec<(String, String)>>,
    response: Vec<(String, String)>,
    response_body: Option<Vec<Vec<u8>>>,
    response_trailers: Option<Vec<(String, String)>>,
}

fn get(path: &str) -> Exchange {
    Exchange {
        request: vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            (":authority".into(), "gateway.test:8080".into()),
            (":scheme".into(), "http".into()),
        ],
        request_body: None,
        request_trailers: None,
        response: vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "text/plain".into()),
        ],
        response_body: None,
        response_trailers: None,
    }
}

impl Exchange {
    fn with(mut self, name: &str, value: &str) -> Self {
        self.request.push((name.into(), value.into()));
        self
    }
    fn method(mut self, method: &str) -> Self {
        self.request[0].1 = method.into();
        self
    }
    fn body(mut self, chunks: &[&str]) -> Self {
        self.request_body = Some(chunks.iter().map(|c| c.as_bytes().to_vec()).collect());
        self
    }
    fn request_trailers(mut self, pairs: &[(&str, &str)]) -> Self {
        self.request_trailers = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }
    fn upstream(mut self, pairs: &[(&str, &str)], body: Option<&[&str]>) -> Self {
        self.response = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.response_body =
            body.map(|chunks| chunks.iter().map(|c| c.as_bytes().to_vec()).collect());
        self
    }
    fn response_trailers(mut self, pairs: &[(&str, &str)]) -> Self {
        self.response_trailers = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }
}

/// What came out of the plugin.
#[derive(Debug, Default)]
struct Seen {
    /// What the upstream received; `None` when the plugin answered or reset the request first.
    upstream_headers: Option<HeaderList>,
    upstream_body: Vec<u8>,
    upstream_trailers: Option<HeaderList>,
    /// The response the client gets.
    status: u16,
    headers: HeaderList,
    body: Vec<u8>,
    trailers: Option<HeaderList>,
    local_reply: Option<LocalReply>,
    fail: Option<FailAction>,
    reset: bool,
    /// The actions of the request-path callbacks, in order.
    request_actions: Vec<Action>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }
    fn upstream(&self, name: &str) -> Option<String> {
        header(
            self.upstream_headers
                .as_ref()
                .expect("request reached the upstream"),
            name,
        )
    }
}

/// Settles an outcome the way the gateway does: a local reply ends the request path; a pause waits for
/// `resumed()`; a close resets. Returns false when the request path is over.
fn settle(stream: &mut Stream, seen: &mut Seen, mut outcome: wasmgate_runtime::Outcome) -> bool {
    if outcome.local_reply.is_none() && outcome.action == Action::Pause {
        outcome = block_on(stream.resumed());
    }
    if outcome.fail.is_some() {
        seen.fail = outcome.fail;
    }
    if let Some(reply) = outcome.local_reply {
        seen.local_reply = Some(reply);
        return false;
    }
    if outcome.action == Action::Close {
        seen.reset = true;
        return false;
    }
    true
}

/// Runs one exchange through one plugin. Local replies go through the plugin's response callbacks, as
/// Envoy runs encoder filters on local replies.
fn run(plugin: &Plugin, ex: &Exchange) -> Seen {
    let info = StreamInfo {
        source: Some("10.1.2.3:40000".parse().unwrap()),
        destination: Some("10.0.0.1:8080".parse().unwrap()),
        connection_id: 7,
        start_time: UNIX_EPOCH + Duration::from_secs(T0_SECS),
        ..Default::default()
    };
    let mut stream = plugin.new_stream(info);
    let mut seen = Seen::default();
    let go = request_path(&mut stream, ex, &mut seen);
    if !seen.reset {
        response_path(&mut stream, ex, &mut seen, go);
    }
    stream.on_log();
    drop(stream);
    seen
}

fn request_path(stream: &mut Stream, ex: &Exchange, seen: &mut Seen) -> bool {
    let mut req: HeaderList = ex
        .request
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let no_body = ex.request_body.is_none() && ex.request_trailers.is_none();
    let outcome = stream.on_request_headers(&mut req, no_body);
    seen.request_actions.push(outcome.action);
    let paused = outcome.action == Action::Pause;
    if !settle(stream, seen, outcome) {
        return false;
    }
    if paused {
        // The plugin may have edited the headers while the request waited (e.g. after an HTTP call).
        req = stream
            .request_headers()
            .expect("headers of a resumed stream");
    }
    let chunks = ex.request_body.clone().unwrap_or_default();
    let mut upstream_body = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len() && ex.request_trailers.is_none();
        let mut data = Bytes::from(chunk.clone());
        let outcome = stream.on_request_body(&mut data, last);
        seen.request_actions.push(outcome.action);
        let paused_at_end =
            last && outcome.action == Action::Pause && outcome.local_reply.is_none();
        if outcome.action == Action::Pause && !last && outcome.local_reply.is_none() {
            continue; // buffered by the runtime; offered again with the next chunk
        }
        if !settle(stream, seen, outcome) {
            return false;
        }
        if paused_at_end {
            data = stream.take_buffered_request_body();
        }
        upstream_body.extend_from_slice(&data);
    }
    if let Some(pairs) = &ex.request_trailers {
        let mut trailers: HeaderList = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let outcome = stream.on_request_trailers(&mut trailers);
        if !settle(stream, seen, outcome) {
            return false;
        }
        seen.upstream_trailers = Some(trailers);
    }
    seen.upstream_headers = Some(req);
    seen.upstream_body = upstream_body;
    true
}

fn response_path(stream: &mut Stream, ex: &Exchange, seen: &mut Seen, from_upstream: bool) {
    let (mut resp, chunks, trailers) = match (&seen.local_reply, from_upstream) {
        (Some(reply), _) => {
            let mut h = headers(&[(":status", &reply.status.to_string())]);
            for (k, v) in reply.headers.iter() {
                h.push(k, v);
            }
            let body = (!reply.body.is_empty()).then(|| vec![reply.body.clone()]);
            (h, body.unwrap_or_default(), None)
        }
        (None, true) => (
            ex.response
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            ex.response_body.clone().unwrap_or_default(),
            ex.response_trailers.clone(),
        ),
        (None, false) => return,
    };
    let local = seen.local_reply.is_some();
    let outcome = stream.on_response_headers(&mut resp, chunks.is_empty() && trailers.is_none());
    let mut go = true;
    if outcome.local_reply.is_some() && !local {
        // A reply from the response path replaces the upstream's response.
        let reply = outcome.local_reply.clone().unwrap();
        seen.status = reply.status;
        seen.headers = reply.headers.clone();
        seen.body = reply.body.clone();
        seen.local_reply = Some(reply);
        seen.fail = outcome.fail.or(seen.fail);
        return;
    }
    if outcome.action == Action::Pause && outcome.local_reply.is_none() {
        let resumed = block_on(stream.resumed());
        go = settle(stream, seen, resumed);
        if go {
            resp = stream
                .response_headers()
                .expect("headers of a resumed stream");
        }
    }
    seen.status = header(&resp, ":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    seen.headers = resp;
    if !go {
        return;
    }
    let mut body = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len() && trailers.is_none();
        let mut data = Bytes::from(chunk.clone());
        let outcome = stream.on_response_body(&mut data, last);
        if outcome.action == Action::Pause && outcome.local_reply.is_none() {
            if !last {
                continue;
            }
            block_on(stream.resumed());
            data = stream.take_buffered_response_body();
        }
        body.extend_from_slice(&data);
    }
    seen.body = body;
    if let Some(pairs) = trailers {
        let mut t: HeaderList = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = stream.on_response_trailers(&mut t);
        seen.trailers = Some(t);
    }
}

// === every module loads and links ===

#[test]
fn every_dist_module_checks_with_its_abi_entry_point_and_allocator() {
    let expected = [
        (
            "basic-auth.wasm",
            AbiVersion::V0_2_1,
            EntryPoint::Initialize { main: false },
        ),
        (
            "rate-limit.wasm",
            AbiVersion::V0_2_1,
            EntryPoint::Initialize { main: false },
        ),
        (
            "header-append.wasm",
            AbiVersion::V0_2_1,
            EntryPoint::Initialize { main: false },
        ),
        (
            "hostcalls.wasm",
            AbiVersion::V0_2_1,
            EntryPoint::Initialize { main: false },
        ),
        (
            "hostile.wasm",
            AbiVersion::V0_2_1,
            EntryPoint::Initialize { main: false },
        ),
        ("headers-abi010.wasm", AbiVersion::V0_1_0, EntryPoint::Start),
    ];
    for (file, abi, entry) in expected {
        let report = check_module(&dist(file), &CheckOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(report.abi_version, abi, "{file}");
        assert_eq!(report.entry_point, entry, "{file}");
        assert_eq!(report.allocator, "proxy_on_memory_allocate", "{file}");
        let unsupported: Vec<_> = report.imports.iter().filter(|i| !i.supported).collect();
        assert!(
            unsupported.is_empty(),
            "{file} imports unsupported {unsupported:?}"
        );
    }
}

// === basic-auth ===

const ISTIO_BASIC_AUTH: &str = r#"{"basic_auth_rules": [{"prefix": "/productpage", "request_methods": ["GET", "POST"],
    "credentials": ["ok:test", "YWRtaW4zOmFkbWluMw=="]}]}"#;

#[test]
fn basic_auth_istio_docs_example() {
    let env = env();
    let plugin = env.plugin("basic-auth.wasm", ISTIO_BASIC_AUTH);

    let denied = run(&plugin, &get("/productpage"));
    let reply = denied
        .local_reply
        .as_ref()
        .expect("401 without credentials");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.details,
        "Request_denied_by_Basic_Auth_check._No_Basic_Authentication_information_found."
    );
    assert!(reply.body.is_empty(), "Istio's plugin sends an empty body");
    assert_eq!(
        header(&reply.headers, "www-authenticate").as_deref(),
        Some("Basic realm=istio")
    );
    assert!(denied.upstream_headers.is_none());

    for creds in ["Basic YWRtaW4zOmFkbWluMw==", "Basic b2s6dGVzdA=="] {
        let ok = run(&plugin, &get("/productpage").with("authorization", creds));
        assert!(ok.local_reply.is_none(), "{creds}: {:?}", ok.local_reply);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.upstream("authorization").as_deref(), Some(creds));
    }

    let wrong = run(
        &plugin,
        &get("/productpage?x=1")
            .method("POST")
            .with("authorization", "Basic b2s6bm9wZQ=="),
    );
    let reply = wrong.local_reply.expect("401 with wrong credentials");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.details,
        "Request_denied_by_Basic_Auth_check._Invalid_username_and/or_password"
    );

    for other in [
        get("/static/style.css"),
        get("/api/v1/products"),
        get("/productpage").method("DELETE"),
    ] {
        let seen = run(&plugin, &other);
        assert!(
            seen.local_reply.is_none(),
            "unprotected request denied: {:?}",
            other.request
        );
        assert_eq!(seen.status, 200);
    }
}

#[test]
fn basic_auth_realm_and_hosts() {
    let env = env();
    let plugin = env.plugin(
        "basic-auth.wasm",
        r#"{"realm": "shop", "basic_auth_rules": [{"exact": "/admin", "hosts": ["*.test"],
            "request_methods": ["GET"], "credentials": ["a:b"]}]}"#,
    );
    let seen = run(&plugin, &get("/admin"));
    let reply = seen
        .local_reply
        .expect("gateway.test:8080 matches *.test once the port is stripped");
    assert_eq!(
        header(&reply.headers, "www-authenticate").as_deref(),
        Some("Basic realm=shop")
    );
    let mut other_host = get("/admin");
    other_host.request[2].1 = "example.org".into();
    assert!(run(&plugin, &other_host).local_reply.is_none());
    assert!(
        run(&plugin, &get("/admin?x")).local_reply.is_none(),
        "exact match includes the query"
    );
}

#[test]
fn basic_auth_bad_configuration_is_refused_at_configure() {
    let env = env();
    for bad in [
        r#"{"basic_auth_rules": [{"prefix": "/", "credentials": ["a:b"]}]}"#,
        r#"{"basic_auth_rules": [{"prefix": "/", "exact": "/", "request_methods": ["GET"], "credentials": ["a:b"]}]}"#,
        r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"], "credentials": ["%%%"]}]}"#,
        "not json",
    ] {
        match env.load("basic-auth.wasm", options("basic-auth.wasm", bad)) {
            Err(RuntimeError::Configure { .. }) => {}
            other => panic!("{bad}: expected a refused configuration, got {other:?}"),
        }
    }
    assert!(
        env.host
            .logged("basic-auth: configuration refused: basic_auth_rules[0]: at least one method")
    );
}

#[test]
fn basic_auth_empty_configuration_allows_everything() {
    let env = env();
    let plugin = env.plugin("basic-auth.wasm", "");
    assert!(run(&plugin, &get("/productpage")).local_reply.is_none());
}

// === rate-limit ===

#[test]
fn rate_limit_tutorial_200_200_403_then_refill() {
    let env = env();
    env.host
        .set_clock(UNIX_EPOCH + Duration::from_secs(T0_SECS));
    let plugin = env.plugin("rate-limit.wasm", "");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let seen = run(&plugin, &get("/status/200"));
        statuses.push(seen.local_reply.as_ref().map_or(seen.status, |r| r.status));
        // The tutorial's headers are on every response, the plugin's own 403 included.
        assert_eq!(seen.header("who-am-i").as_deref(), Some("wasm-extension"));
        assert_eq!(seen.header("injected-by").as_deref(), Some("istio-api!"));
        if let Some(reply) = &seen.local_reply {
            assert_eq!(reply.body, b"rate limited, wait and retry.");
            assert_eq!(
                header(&reply.headers, "powered-by").as_deref(),
                Some("proxy-wasm-go-sdk!!")
            );
            assert!(seen.upstream_headers.is_none());
        }
        env.host.advance(Duration::from_millis(250));
    }
    assert_eq!(statuses, [200, 200, 403]);
    env.host.advance(Duration::from_millis(600));
    assert!(
        run(&plugin, &get("/")).local_reply.is_none(),
        "a new window 1.35 s after the first request"
    );
}

#[test]
fn rate_limit_configured_reply_and_headers() {
    let env = env();
    env.host
        .set_clock(UNIX_EPOCH + Duration::from_secs(T0_SECS));
    let plugin = env.plugin(
        "rate-limit.wasm",
        r#"{"tokens_per_second": 1, "deny_status": 429, "deny_headers": {"retry-after": "1"},
            "deny_body": "slow down", "response_headers": {"x-limited-by": "wasmgate"}}"#,
    );
    assert!(run(&plugin, &get("/")).local_reply.is_none());
    let seen = run(&plugin, &get("/"));
    let reply = seen
        .local_reply
        .clone()
        .expect("second request in the window is limited");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (429, &b"slow down"[..])
    );
    assert_eq!(header(&reply.headers, "retry-after").as_deref(), Some("1"));
    assert_eq!(seen.header("x-limited-by").as_deref(), Some("wasmgate"));
    assert_eq!(
        seen.header("who-am-i"),
        None,
        "configured response_headers replace the defaults"
    );

    let refused = env.load(
        "rate-limit.wasm",
        options("rate-limit.wasm", r#"{"tokens_per_second": 0}"#),
    );
    assert!(
        matches!(refused, Err(RuntimeError::Configure { .. })),
        "{refused:?}"
    );
}

#[test]
fn rate_limit_shared_bucket_holds_across_worker_vms() {
    const WORKERS: usize = 4;
    let env = env_with(WORKERS, Limits::default());
    env.host
        .set_clock(UNIX_EPOCH + Duration::from_secs(T0_SECS));
    let plugin = env.plugin(
        "rate-limit.wasm",
        r#"{"tokens_per_second": 3, "shared": true}"#,
    );
    // The first request creates the shared bucket; the rest race for the two tokens left, each on its own
    // thread and so, mostly, its own VM.
    assert!(run(&plugin, &get("/")).local_reply.is_none());
    let start = Arc::new(Barrier::new(2 * WORKERS));
    let handles: Vec<_> = (0..2 * WORKERS)
        .map(|_| {
            let (plugin, start) = (plugin.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                run(&plugin, &get("/")).local_reply.is_none()
            })
        })
        .collect();
    let passed = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(
        passed, 2,
        "3 tokens per second for the whole gateway, whatever VM serves the request"
    );
    assert_eq!(plugin.stats().vms, WORKERS as u64);
}

// === header-append ===

#[test]
fn header_append_adds_configured_headers_in_order() {
    let env = env();
    let plugin = env.plugin(
        "header-append.wasm",
        r#"{"x-second": "2", "X-First": "1", "content-type": "extra"}"#,
    );
    let seen = run(&plugin, &get("/"));
    let added: Vec<_> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with(b"x-"))
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        added,
        [
            ("x-second".to_string(), "2".to_string()),
            ("x-first".into(), "1".into())
        ]
    );
    let content_types: Vec<_> = seen.headers.get_all(b"content-type").collect();
    assert_eq!(
        content_types,
        [&b"text/plain"[..], b"extra"],
        "added, never replaced"
    );
    let refused = env.load(
        "header-append.wasm",
        options("header-append.wasm", r#"{"x": 1}"#),
    );
    assert!(
        matches!(refused, Err(RuntimeError::Configure { .. })),
        "{refused:?}"
    );
}

// === hostcalls ===

fn hostcalls(env: &Env, config: &str) -> Plugin {
    let mut opts = options("hostcalls.wasm", config);
    opts.vm_configuration = b"vm-config-bytes".to_vec();
    env.load("hostcalls.wasm", opts).expect("hostcalls loads")
}

fn scenario(name: &str) -> Exchange {
    get("/p?q=1").with("x-test", name)
}

#[test]
fn hostcalls_log_levels_and_time() {
    let env = env();
    env.host
        .set_clock(UNIX_EPOCH + Duration::from_secs(T0_SECS));
    let plugin = hostcalls(&env, "");
    let seen = run(&plugin, &scenario("log"));
    assert_eq!(seen.header("x-hostcalls").as_deref(), Some("log"));
    assert_eq!(
        seen.header("x-log-level").as_deref(),
        Some("2"),
        "PluginOptions::log_level defaults to info"
    );
    let logged: Vec<_> = env
        .host
        .messages()
        .into_iter()
        .filter(|m| m.starts_with("hostcalls log "))
        .collect();
    assert_eq!(
        logged,
        [
            "hostcalls log info",
            "hostcalls log warn",
            "hostcalls log error",
            "hostcalls log critical"
        ]
    );
    let levels: Vec<_> = env
        .host
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.2.starts_with("hostcalls log "))
        .map(|l| l.1)
        .collect();
    assert_eq!(
        levels,
        [
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical
        ]
    );
    assert!(
        env.host
            .logs
            .lock()
            .unwrap()
            .iter()
            .all(|(p, _, _)| p == "default.hostcalls")
    );

    let seen = run(&plugin, &scenario("time"));
    assert_eq!(
        seen.header("x-time-ns"),
        Some((T0_SECS as u128 * 1_000_000_000).to_string())
    );
}

#[test]
fn hostcalls_properties() {
    let env = env();
    let mut opts = options("hostcalls.wasm", "");
    opts.vm_id = "hostcalls-vm".into();
    let plugin = env.load("hostcalls.wasm", opts).expect("hostcalls loads");
    let seen = run(&plugin, &scenario("properties"));
    let prop = |name: &str| {
        seen.header(&format!("x-prop-{name}"))
            .unwrap_or_else(|| panic!("x-prop-{name}"))
    };
    assert_eq!(prop("request-path"), "/p?q=1");
    assert_eq!(prop("request-url-path"), "/p");
    assert_eq!(prop("request-query"), "q=1");
    assert_eq!(prop("request-method"), "GET");
    assert_eq!(prop("request-host"), "gateway.test:8080");
    assert_eq!(prop("request-scheme"), "http");
    assert_eq!(prop("request-protocol"), "HTTP/1.1");
    assert_eq!(prop("request-headers-x-test"), "properties");
    assert_eq!(
        prop("request-time"),
        (T0_SECS as i64 * 1_000_000_000).to_string()
    );
    assert_eq!(prop("source-address"), "10.1.2.3:40000");
    assert_eq!(prop("source-port"), "40000");
    assert_eq!(prop("destination-port"), "8080");
    assert_eq!(prop("connection-id"), "7");
    assert_eq!(prop("connection-mtls"), "false");
    assert_eq!(prop("plugin-name"), "default.hostcalls");
    assert_eq!(prop("plugin-root-id"), "hostcalls");
    assert_eq!(prop("plugin-vm-id"), "hostcalls-vm");
    assert_eq!(prop("xds-node-id"), "test-node");
    assert_eq!(prop("node-id"), "test-node");
    assert_eq!(prop("set"), "stored", "set_property then get_property");
}

#[test]
fn hostcalls_plugin_and_vm_configuration() {
    let env = env();
    let plugin = hostcalls(&env, r#"{"upstream": "u"}"#);
    let seen = run(&plugin, &scenario("config"));
    assert_eq!(
        seen.header("x-plugin-config").as_deref(),
        Some(r#"{"upstream": "u"}"#)
    );
    assert_eq!(
        seen.header("x-vm-config").as_deref(),
        Some("vm-config-bytes")
    );
    assert!(env.host.logged("hostcalls: on_vm_start"));
    assert!(env.host.logged("(15 bytes of vm configuration)"));
}

#[test]
fn hostcalls_header_maps() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let ex = scenario("headers")
        .with("x-in", "in-value")
        .with("x-replace", "old")
        .with("x-remove", "gone")
        .upstream(
            &[
                (":status", "201"),
                ("x-resp-replace", "old"),
                ("x-resp-remove", "gone"),
            ],
            None,
        );
    let seen = run(&plugin, &ex);
    assert_eq!(seen.upstream("x-added").as_deref(), Some("added"));
    assert_eq!(seen.upstream("x-replace").as_deref(), Some("replaced"));
    assert_eq!(seen.upstream("x-remove"), None);
    assert_eq!(seen.header("x-req-header-count").as_deref(), Some("8"));
    assert_eq!(seen.header("x-got-x-in").as_deref(), Some("in-value"));
    assert_eq!(
        seen.header("x-got-missing").as_deref(),
        Some("none"),
        "ABI 0.2.1: absent header is NOT_FOUND"
    );
    assert_eq!(seen.status, 201);
    assert_eq!(seen.header("x-seen-status").as_deref(), Some("201"));
    assert_eq!(seen.header("x-resp-header-count").as_deref(), Some("3"));
    assert_eq!(seen.header("x-resp-added").as_deref(), Some("added"));
    assert_eq!(seen.header("x-resp-replace").as_deref(), Some("replaced"));
    assert_eq!(seen.header("x-resp-remove"), None);

    let ex = scenario("headers-set")
        .with("x-drop-me", "1")
        .with("x-keep", "1")
        .upstream(
            &[(":status", "200"), ("x-drop-too", "1"), ("x-kept", "1")],
            None,
        );
    let seen = run(&plugin, &ex);
    assert_eq!(seen.upstream("x-drop-me"), None);
    assert_eq!(seen.upstream("x-keep").as_deref(), Some("1"));
    assert_eq!(seen.upstream("x-set-pairs").as_deref(), Some("yes"));
    assert_eq!(seen.upstream(":path").as_deref(), Some("/p?q=1"));
    assert_eq!(seen.header("x-drop-too"), None);
    assert_eq!(seen.header("x-kept").as_deref(), Some("1"));
    assert_eq!(seen.header("x-set-pairs").as_deref(), Some("yes"));
}

#[test]
fn hostcalls_request_body_buffered_and_streamed() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let seen = run(
        &plugin,
        &scenario("request-body-buffer")
            .method("POST")
            .body(&["hello ", "world"]),
    );
    assert_eq!(
        seen.request_actions,
        [Action::Continue, Action::Pause, Action::Continue]
    );
    assert_eq!(seen.upstream_body, b"HELLO WORLD");
    assert_eq!(seen.header("x-req-body").as_deref(), Some("hello world"));
    assert_eq!(seen.header("x-req-body-size").as_deref(), Some("11"));
    assert_eq!(seen.header("x-req-body-calls").as_deref(), Some("2"));

    let seen = run(
        &plugin,
        &scenario("request-body-stream")
            .method("POST")
            .body(&["abc", "def"]),
    );
    assert_eq!(
        seen.request_actions,
        [Action::Continue, Action::Continue, Action::Continue]
    );
    assert_eq!(seen.upstream_body, b"ABCDEF");
    assert_eq!(seen.header("x-req-body-calls").as_deref(), Some("2"));
}

#[test]
fn hostcalls_response_body_buffered_and_streamed() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let ex = scenario("response-body-buffer").upstream(
        &[(":status", "200"), ("content-length", "6")],
        Some(&["abc", "def"]),
    );
    let seen = run(&plugin, &ex);
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        "hostcalls saw 6 bytes: abcdef"
    );
    assert_eq!(
        seen.header("content-length"),
        None,
        "the plugin drops the stale length"
    );

    let ex =
        scenario("response-body-stream").upstream(&[(":status", "200")], Some(&["abc", "def"]));
    assert_eq!(run(&plugin, &ex).body, b"ABCDEF");
}

#[test]
fn hostcalls_trailers() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let ex = scenario("trailers")
        .method("POST")
        .body(&["x"])
        .request_trailers(&[("x-t1", "a"), ("x-t2", "b")])
        .upstream(&[(":status", "200")], Some(&["y"]))
        .response_trailers(&[("grpc-status", "0")]);
    let seen = run(&plugin, &ex);
    assert_eq!(
        seen.header("x-req-trailers").as_deref(),
        Some("x-t1=a;x-t2=b")
    );
    let upstream_trailers = seen
        .upstream_trailers
        .as_ref()
        .expect("request trailers sent on");
    assert_eq!(
        header(upstream_trailers, "x-trailer-added").as_deref(),
        Some("yes")
    );
    let trailers = seen.trailers.as_ref().expect("response trailers");
    assert_eq!(
        header(trailers, "x-resp-trailer").as_deref(),
        Some("hostcalls")
    );
    assert_eq!(header(trailers, "grpc-status").as_deref(), Some("0"));
}

#[test]
fn hostcalls_local_replies_from_each_phase() {
    let env = env();
    let plugin = hostcalls(&env, "");
    for (name, ex, body) in [
        (
            "request-headers",
            scenario("local-reply-request-headers"),
            "local reply from request headers",
        ),
        (
            "request-body",
            scenario("local-reply-request-body")
                .method("POST")
                .body(&["a", "b"]),
            "local reply from request body",
        ),
        (
            "response-headers",
            scenario("local-reply-response-headers"),
            "local reply from response headers",
        ),
    ] {
        let seen = run(&plugin, &ex);
        let reply = seen
            .local_reply
            .unwrap_or_else(|| panic!("{name}: no local reply"));
        assert_eq!(reply.status, 418, "{name}");
        assert_eq!(reply.body, body.as_bytes(), "{name}");
        assert_eq!(
            header(&reply.headers, "x-local-reply").as_deref(),
            Some(name)
        );
        assert_eq!(
            reply.details,
            format!("hostcalls_{}", name.replace('-', "_"))
        );
        if name != "response-headers" {
            assert!(
                seen.upstream_headers.is_none(),
                "{name}: the upstream must not be called"
            );
        }
    }
    let seen = run(&plugin, &scenario("no-such-scenario"));
    assert_eq!(seen.local_reply.map(|r| r.status), Some(400));
}

#[test]
fn hostcalls_http_call_resumes_or_denies() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let seen = run(&plugin, &scenario("http-call"));
    assert_eq!(seen.request_actions, [Action::Pause]);
    assert!(seen.local_reply.is_none(), "{:?}", seen.local_reply);
    assert_eq!(
        seen.upstream("x-call-status").as_deref(),
        Some("200"),
        "resumed with the header added"
    );
    assert_eq!(seen.header("x-call-body").as_deref(), Some("pong"));
    assert_eq!(seen.header("x-call-headers").as_deref(), Some("2"));
    assert_eq!(seen.header("x-call-trailers").as_deref(), Some("1"));
    assert_eq!(seen.header("x-call-token-matches").as_deref(), Some("true"));
    {
        let calls = env.host.http_calls.lock().unwrap();
        let call = calls.last().expect("the host saw the call");
        assert_eq!(header(&call.headers, ":method").as_deref(), Some("POST"));
        assert_eq!(
            header(&call.headers, ":path").as_deref(),
            Some("/hostcalls")
        );
        assert_eq!(
            header(&call.headers, "x-from").as_deref(),
            Some("hostcalls")
        );
        assert_eq!(call.body, b"hostcalls-ping");
        assert_eq!(call.timeout, Some(Duration::from_secs(5)));
    }

    let denied = run(&plugin, &scenario("http-call").with("x-call-path", "/deny"));
    let reply = denied.local_reply.expect("503 from the call denies");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (403, &b"denied by http call: status 503"[..])
    );

    let failed = run(&plugin, &scenario("http-call").with("x-call-path", "/fail"));
    let reply = failed.local_reply.expect("a failed call denies");
    assert_eq!(reply.body, b"denied by http call: status none");

    let unknown = run(
        &plugin,
        &scenario("http-call").with("x-upstream", "nowhere"),
    );
    let reply = unknown
        .local_reply
        .expect("an unknown upstream is refused at dispatch");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (500, &b"http call dispatch failed: BadArgument"[..])
    );
}

#[test]
fn hostcalls_grpc_call_resumes_or_fails() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let seen = run(&plugin, &scenario("grpc-call"));
    assert!(seen.local_reply.is_none(), "{:?}", seen.local_reply);
    assert_eq!(seen.header("x-grpc-status").as_deref(), Some("0"));
    assert_eq!(seen.header("x-grpc-body").as_deref(), Some("pong"));
    assert_eq!(seen.header("x-grpc-token-matches").as_deref(), Some("true"));
    {
        let calls = env.host.grpc_calls.lock().unwrap();
        let call = calls.last().expect("the host saw the call");
        assert_eq!(
            (call.service.as_str(), call.method.as_str()),
            ("hostcalls.Echo", "Ping")
        );
        assert_eq!(call.message, b"ping");
    }

    let down = hostcalls(&env, r#"{"grpc_upstream": "grpc-down"}"#);
    let reply = run(&down, &scenario("grpc-call"))
        .local_reply
        .expect("a failed gRPC call answers 503");
    assert_eq!(reply.status, 503);
    assert!(
        String::from_utf8_lossy(&reply.body).starts_with("grpc call failed: status 14"),
        "{reply:?}"
    );

    // A stream to an unknown upstream is refused at open.
    let reply = run(&down, &scenario("grpc-stream"))
        .local_reply
        .expect("a refused stream answers 500");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (500, &b"grpc stream open failed: InternalFailure"[..])
    );
}

#[test]
fn hostcalls_grpc_stream_messages_both_ways_then_close_or_cancel() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let seen = run(&plugin, &scenario("grpc-stream"));
    assert!(seen.local_reply.is_none(), "{:?}", seen.local_reply);
    assert_eq!(seen.header("x-grpc-stream-initial").as_deref(), Some("m1"));
    assert_eq!(
        seen.header("x-grpc-stream-token-matches").as_deref(),
        Some("true")
    );
    assert_eq!(
        seen.header("x-grpc-stream-messages").as_deref(),
        Some("echo:one,echo:two,echo:three")
    );
    assert_eq!(seen.header("x-grpc-stream-trailer").as_deref(), Some("t"));
    assert_eq!(seen.header("x-grpc-stream-close").as_deref(), Some("0"));
    assert_eq!(
        seen.header("x-grpc-stream-close-message").as_deref(),
        Some("all done")
    );
    assert_eq!(
        env.host.grpc_streams.lock().unwrap()[0],
        [
            "/hostcalls.Echo/Stream",
            "msg:one",
            "msg:two",
            "msg:three",
            "end"
        ]
    );

    // Cancel at the first reply: the host's stream is reset (its sink dropped), and the close its
    // dropped events then report (14) never reaches the plugin.
    let seen = run(&plugin, &scenario("grpc-stream-cancel"));
    assert!(seen.local_reply.is_none(), "{:?}", seen.local_reply);
    assert_eq!(
        seen.header("x-grpc-stream-messages").as_deref(),
        Some("echo:one")
    );
    assert_eq!(
        seen.header("x-grpc-stream-cancelled").as_deref(),
        Some("true")
    );
    assert_eq!(seen.header("x-grpc-stream-close"), None);
    assert_eq!(
        env.host.grpc_streams.lock().unwrap()[1],
        ["/hostcalls.Echo/Stream", "msg:one", "reset"]
    );
}

#[test]
fn hostcalls_shared_data_with_cas() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let first = run(&plugin, &scenario("shared-data"));
    assert_eq!(first.header("x-shared-counter").as_deref(), Some("1"));
    assert_eq!(
        first.header("x-shared-cas").as_deref(),
        Some("ok,mismatch,b"),
        "a stale CAS is refused"
    );
    // Shared data is process-wide per vm_id: a second plugin on the same module sees the same counter.
    let other = env.plugin("hostcalls.wasm", "");
    assert_eq!(
        run(&other, &scenario("shared-data"))
            .header("x-shared-counter")
            .as_deref(),
        Some("2")
    );
}

#[test]
fn hostcalls_shared_queue_reaches_on_queue_ready() {
    let env = env();
    let plugin = hostcalls(&env, r#"{"queue": "hostcalls"}"#);
    let seen = run(&plugin, &scenario("queue").with("x-queue-value", "item-1"));
    assert_eq!(seen.header("x-queue-resolved").as_deref(), Some("true"));
    assert_eq!(seen.header("x-queue-enqueued").as_deref(), Some("item-1"));
    eventually("on_queue_ready to dequeue item-1", || {
        let seen = run(&plugin, &scenario("queue-read"));
        (seen.header("x-queue-last").as_deref() == Some("item-1")).then_some(())
    });
    assert!(env.host.logged(r#"hostcalls: dequeued "item-1""#));
    let count = run(&plugin, &scenario("queue-read")).header("x-queue-count");
    assert_eq!(count.as_deref(), Some("1"));
}

#[test]
fn hostcalls_ticks_count_and_resume_paused_streams() {
    let env = env();
    let plugin = hostcalls(&env, r#"{"tick_ms": 10}"#);
    eventually("two ticks", || {
        let seen = run(&plugin, &scenario("ticks"));
        (seen.header("x-ticks")?.parse::<u64>().ok()? >= 2).then_some(())
    });
    let seen = run(&plugin, &scenario("pause-until-tick"));
    assert_eq!(seen.request_actions, [Action::Pause]);
    assert!(seen.local_reply.is_none(), "{:?}", seen.local_reply);
    assert_eq!(seen.header("x-resumed-by").as_deref(), Some("tick"));
    assert!(env.host.logged("hostcalls: tick resumes stream"));

    let no_ticks = hostcalls(&env, "");
    let reply = run(&no_ticks, &scenario("pause-until-tick"))
        .local_reply
        .expect("500 without tick_ms");
    assert_eq!(reply.status, 500);
}

#[test]
fn hostcalls_metrics_defined_updated_and_read() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let seen = run(&plugin, &scenario("metrics"));
    assert_eq!(seen.header("x-metric-error"), None);
    assert_eq!(seen.header("x-metric-counter").as_deref(), Some("1"));
    assert_eq!(seen.header("x-metric-gauge").as_deref(), Some("40"));
    let metrics = env.runtime.metrics();
    assert!(
        matches!(
            metrics.get("hostcalls_requests_total"),
            Some(MetricValue::Counter(1))
        ),
        "{metrics:?}"
    );
    assert!(
        matches!(metrics.get("hostcalls_gauge"), Some(MetricValue::Gauge(40))),
        "{metrics:?}"
    );
    match metrics.get("hostcalls_histogram") {
        Some(MetricValue::Histogram(h)) => assert_eq!((h.count, h.sum), (2, 77)),
        other => panic!("histogram: {other:?}"),
    }
    let again = run(&plugin, &scenario("metrics"));
    assert_eq!(again.header("x-metric-counter").as_deref(), Some("2"));
}

#[test]
fn hostcalls_foreign_functions_compress_round_trip() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let data = "wasmgate ".repeat(40);
    let seen = run(&plugin, &scenario("foreign").with("x-foreign-data", &data));
    assert_eq!(seen.header("x-foreign-roundtrip").as_deref(), Some("ok"));
    let len: usize = seen
        .header("x-foreign-compressed-len")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        len > 0 && len < data.len(),
        "compressed {len} bytes of {}",
        data.len()
    );
    assert_eq!(
        seen.header("x-foreign-unknown").as_deref(),
        Some("NotFound")
    );
}

#[test]
fn hostcalls_close_stream_resets_the_request() {
    let env = env();
    let plugin = hostcalls(&env, "");
    let seen = run(&plugin, &scenario("close"));
    assert_eq!(seen.request_actions, [Action::Close]);
    assert!(seen.reset && seen.upstream_headers.is_none());
}

#[test]
fn hostcalls_lifecycle_order_of_a_stream() {
    let env = env();
    let plugin = hostcalls(&env, r#"{"log_lifecycle": true}"#);
    let before = env.host.messages().len();
    run(&plugin, &scenario("time"));
    let lifecycle: Vec<String> = env.host.messages()[before..]
        .iter()
        .filter_map(|m| m.strip_prefix("hostcalls: "))
        .map(|m| {
            m.rsplit_once(' ')
                .map_or(m, |(callback, _id)| callback)
                .to_string()
        })
        .collect();
    assert_eq!(
        lifecycle,
        [
            "create_http_context",
            "on_http_request_headers",
            "on_http_response_headers",
            "on_done",
            "on_log"
        ]
    );
    assert!(env.host.logged("hostcalls: on_configure"));
}

// === hostile ===

/// One VM, 64 MiB of linear memory, and the default one-second callback budget (a shorter one could fail
/// honest callbacks on a loaded machine).
fn hostile_env() -> Env {
    env_with(
        1,
        Limits {
            max_memory_bytes: 64 << 20,
            ..Limits::default()
        },
    )
}

fn hostile(env: &Env, config: &str, strategy: FailStrategy) -> Plugin {
    let mut opts = options("hostile.wasm", config);
    opts.fail_strategy = strategy;
    opts.reload_backoff = Duration::from_millis(20);
    env.load("hostile.wasm", opts).expect("hostile loads")
}

fn is_fail_stream(seen: &Seen) -> bool {
    seen.fail == Some(FailAction::Closed)
        && seen
            .local_reply
            .as_ref()
            .is_some_and(|r| r.status == 503 && r.details == "wasm_fail_stream")
}

#[test]
fn hostile_panic_fail_close_answers_503_from_then_on() {
    let env = hostile_env();
    let plugin = hostile(&env, "", FailStrategy::FailClose);
    assert!(
        run(&plugin, &get("/")).local_reply.is_none(),
        "behaves without a plan"
    );
    let seen = run(
        &plugin,
        &get("/").with("x-hostile", "panic_in=on_request_headers"),
    );
    assert!(is_fail_stream(&seen), "{seen:?}");
    assert!(seen.upstream_headers.is_none());
    assert!(
        env.host.logged("hostile: panic in on_request_headers"),
        "the SDK's panic hook logs the message"
    );
    assert!(
        matches!(plugin.failure(), Some(RuntimeError::Trap { .. })),
        "{:?}",
        plugin.failure()
    );
    assert!(
        is_fail_stream(&run(&plugin, &get("/"))),
        "the failed VM keeps failing closed"
    );
    let stats = plugin.stats();
    assert!(stats.traps >= 1 && stats.fail_closed >= 2, "{stats:?}");
}

#[test]
fn hostile_panic_in_response_headers_fails_the_response() {
    let env = hostile_env();
    let plugin = hostile(
        &env,
        r#"{"panic_in": "on_response_headers"}"#,
        FailStrategy::FailClose,
    );
    let seen = run(&plugin, &get("/"));
    assert!(
        seen.upstream_headers.is_some(),
        "the request passed before the trap"
    );
    assert!(is_fail_stream(&seen), "{seen:?}");
}

#[test]
fn hostile_panic_fail_open_skips_the_plugin() {
    let env = hostile_env();
    let plugin = hostile(&env, "", FailStrategy::FailOpen);
    let seen = run(
        &plugin,
        &get("/").with("x-hostile", "panic_in=on_request_headers"),
    );
    assert_eq!(seen.fail, Some(FailAction::Opened));
    assert!(seen.local_reply.is_none());
    assert!(
        seen.upstream_headers.is_some(),
        "the request goes on without the plugin"
    );
    let next = run(
        &plugin,
        &get("/").with("x-hostile", "panic_in=on_request_headers"),
    );
    assert!(next.local_reply.is_none() && next.upstream_headers.is_some());
}

#[test]
fn hostile_fail_reload_serves_again_after_backoff() {
    let env = hostile_env();
    let plugin = hostile(&env, "", FailStrategy::FailReload);
    let seen = run(
        &plugin,
        &get("/")
            .with("x-hostile", "panic_in=on_request_body")
            .method("POST")
            .body(&["x"]),
    );
    assert!(is_fail_stream(&seen), "{seen:?}");
    eventually("a reloaded VM", || {
        run(&plugin, &get("/")).local_reply.is_none().then_some(())
    });
    assert!(plugin.stats().reloads >= 1);
}

#[test]
fn hostile_infinite_loop_is_stopped_by_the_time_limit() {
    let env = hostile_env();
    let plugin = hostile(&env, "", FailStrategy::FailClose);
    let started = Instant::now();
    let seen = run(
        &plugin,
        &get("/").with("x-hostile", "loop_in=on_request_headers"),
    );
    assert!(is_fail_stream(&seen), "{seen:?}");
    assert!(started.elapsed() < PATIENCE);
    match plugin.failure() {
        Some(RuntimeError::Limit {
            kind: LimitKind::Time,
            ..
        }) => {}
        other => panic!("expected the time limit, got {other:?}"),
    }
    assert!(
        env.host
            .logged("hostile: looping forever in on_request_headers")
    );
}

#[test]
fn hostile_memory_bomb_beyond_the_limit_fails_the_vm() {
    let env = hostile_env();
    let plugin = hostile(&env, "", FailStrategy::FailClose);
    let fits = run(&plugin, &get("/").with("x-hostile", "grow_memory_mb=8"));
    assert!(fits.local_reply.is_none(), "8 MiB fits in 64 MiB: {fits:?}");
    assert!(
        env.host
            .logged("hostile: 8 MiB allocated in on_request_headers")
    );
    let seen = run(&plugin, &get("/").with("x-hostile", "grow_memory_mb=128"));
    assert!(is_fail_stream(&seen), "{seen:?}");
    assert!(!env.host.logged("hostile: 128 MiB allocated"));
    assert!(plugin.failure().is_some());
}

#[test]
fn hostile_bad_pointers_get_status_codes() {
    let env = hostile_env();
    let plugin = hostile(&env, r#"{"bad_pointers": true}"#, FailStrategy::FailClose);
    let seen = run(&plugin, &get("/"));
    assert!(seen.local_reply.is_none(), "{seen:?}");
    let statuses = seen.header("x-hostile-statuses").expect("statuses echoed");
    let map: std::collections::HashMap<_, _> = statuses
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(map.get("log"), Some(&"6"), "{statuses}");
    assert_eq!(map.get("key"), Some(&"6"), "{statuses}");
    assert_eq!(map.get("return_ptr"), Some(&"6"), "{statuses}");
    assert_eq!(map.get("map_type"), Some(&"2"), "{statuses}");
    assert_eq!(map.get("buffer_type"), Some(&"2"), "{statuses}");
    assert!(map.get("pairs").is_some_and(|s| *s != "0"), "{statuses}");
    assert!(
        run(&plugin, &get("/")).local_reply.is_none(),
        "the VM is still healthy"
    );
}

#[test]
fn hostile_start_and_configure_failures_refuse_the_plugin() {
    let env = hostile_env();
    let refused = env.load(
        "hostile.wasm",
        options("hostile.wasm", r#"{"configure_returns": false}"#),
    );
    assert!(
        matches!(refused, Err(RuntimeError::Configure { .. })),
        "{refused:?}"
    );
    assert!(
        env.host
            .logged("hostile: refusing the configuration as asked")
    );

    let trapped = env.load(
        "hostile.wasm",
        options("hostile.wasm", r#"{"panic_in": "on_configure"}"#),
    );
    assert!(
        matches!(
            trapped,
            Err(RuntimeError::Configure { .. } | RuntimeError::Trap { .. })
        ),
        "{trapped:?}"
    );

    let unknown = env.load(
        "hostile.wasm",
        options("hostile.wasm", r#"{"panic_in": "on_nothing"}"#),
    );
    assert!(
        matches!(unknown, Err(RuntimeError::Configure { .. })),
        "{unknown:?}"
    );

    for vm_config in [
        r#"{"panic_in": "on_vm_start"}"#,
        r#"{"vm_start_returns": false}"#,
    ] {
        let mut opts = options("hostile.wasm", "");
        opts.vm_configuration = vm_config.as_bytes().to_vec();
        let failed = env.load("hostile.wasm", opts);
        assert!(
            matches!(
                failed,
                Err(RuntimeError::Start { .. } | RuntimeError::Trap { .. })
            ),
            "{vm_config}: {failed:?}"
        );
    }
}

#[test]
fn hostile_panic_in_tick_fails_the_vm_between_requests() {
    let env = hostile_env();
    let mut opts = options("hostile.wasm", r#"{"panic_in": "on_tick", "tick_ms": 100}"#);
    opts.fail_strategy = FailStrategy::FailClose;
    let plugin = match env.load("hostile.wasm", opts) {
        Ok(plugin) => plugin,
        // On a very slow machine the first tick may trap before the canary finishes: also a refusal.
        Err(e) => {
            return assert!(
                matches!(
                    e,
                    RuntimeError::Trap { .. } | RuntimeError::Configure { .. }
                ),
                "{e:?}"
            );
        }
    };
    eventually("the tick to trap", || plugin.failure());
    assert!(is_fail_stream(&run(&plugin, &get("/"))));
    assert!(env.host.logged("hostile: panic in on_tick"));
}

#[test]
fn hostile_failure_does_not_touch_other_plugins() {
    let env = hostile_env();
    let bad = hostile(&env, "", FailStrategy::FailClose);
    let good = env.plugin("header-append.wasm", r#"{"x-ok": "1"}"#);
    assert!(is_fail_stream(&run(
        &bad,
        &get("/").with("x-hostile", "panic_in=on_request_headers")
    )));
    let seen = run(&good, &get("/"));
    assert_eq!(seen.header("x-ok").as_deref(), Some("1"));
}

// === ABI 0.1.0 through proxy-wasm 0.1.4 ===

#[test]
fn abi_0_1_0_plugin_runs_with_its_own_imports() {
    let env = env();
    let module = env
        .runtime
        .load_module(&dist("headers-abi010.wasm"))
        .unwrap();
    assert_eq!(module.abi_version(), AbiVersion::V0_1_0);
    assert_eq!(module.entry_point(), EntryPoint::Start);
    let plugin = env.plugin("headers-abi010.wasm", "abi-config");
    let seen = run(&plugin, &get("/old"));
    assert_eq!(seen.upstream("x-abi").as_deref(), Some("0.1.0"));
    assert_eq!(seen.header("x-abi").as_deref(), Some("0.1.0"));
    assert_eq!(seen.header("x-abi010-path").as_deref(), Some("/old"));
    assert_eq!(
        seen.header("x-abi010-config").as_deref(),
        Some("abi-config"),
        "proxy_get_configuration"
    );
    let missing = seen.header("x-abi010-missing");
    assert!(
        matches!(missing.as_deref(), Some("empty" | "none")),
        "ABI 0.1.0: absent header is OK, {missing:?}"
    );
}

#[test]
fn abi_0_1_0_plugin_resumes_with_continue_request() {
    let env = env();
    let plugin = env.plugin("headers-abi010.wasm", "pause-until-tick");
    let seen = run(&plugin, &get("/").with("x-abi010", "pause"));
    assert_eq!(seen.request_actions, [Action::Pause]);
    assert!(seen.local_reply.is_none(), "{:?}", seen.local_reply);
    assert_eq!(seen.upstream("x-abi").as_deref(), Some("0.1.0"));
}

#[test]
fn hostcalls_root_context_is_done_when_the_plugin_goes() {
    let env = env();
    let plugin = hostcalls(&env, r#"{"log_lifecycle": true}"#);
    run(&plugin, &scenario("time"));
    assert!(!env.host.logged("hostcalls: root on_done"));
    drop(plugin);
    assert!(
        env.host.logged("hostcalls: root on_done"),
        "{:?}",
        env.host.messages()
    );
}
