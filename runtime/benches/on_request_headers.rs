//! One `proxy_on_request_headers` call through the runtime, per ABI path, and one whole stream
//! for comparison. Run with `cargo bench -p wasmgate-runtime --bench on_request_headers`; what
//! each benchmark measures, and the figures, are in `README.md` beside this file.
//!
//! Plugins are loaded as the gateway loads them (one runtime, one VM slot, default limits and
//! log level) with a host that does nothing, so the figures are the runtime's and the guest's
//! cost, not the proxy's.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use wasmgate_runtime::{
    AbiVersion, Action, HeaderList, Host, LogLevel, Plugin, PluginOptions, Runtime, RuntimeOptions,
    StreamInfo,
};

mod fixtures;
// The `.wat` guests use the tests' `;;LIB`/`(str ...)` shorthand; reuse its expander.
#[path = "../tests/all/support/mod.rs"]
mod support;

/// Streams alive at once while a batch is timed: about what one busy worker holds, so the VM's
/// context tables look like production rather than one stream or tens of thousands. It also
/// spreads the timer reads over 64 calls.
const LIVE_STREAMS: u64 = 64;

const ISTIO_BASIC_AUTH: &str = r#"{"basic_auth_rules": [{"prefix": "/productpage",
    "request_methods": ["GET", "POST"], "credentials": ["ok:test", "YWRtaW4zOmFkbWluMw=="]}]}"#;

/// The proxy's side costs nothing here: logs are dropped, nothing else is asked of it.
struct NullHost;

impl Host for NullHost {
    fn log(&self, _plugin: &str, _level: LogLevel, _message: &str) {}
}

/// One ABI path: a module and the configuration it runs with.
struct Case {
    id: &'static str,
    abi: AbiVersion,
    wasm: Vec<u8>,
    configuration: &'static str,
}

fn dist(file: &str) -> Vec<u8> {
    let path = format!("{}/../plugins/dist/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run plugins/build.sh)"))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "abi_0_2_1/header-append",
            abi: AbiVersion::V0_2_1,
            wasm: dist("header-append.wasm"),
            configuration: r#"{"x-powered-by": "wasmgate"}"#,
        },
        Case {
            id: "abi_0_2_1/basic-auth",
            abi: AbiVersion::V0_2_1,
            wasm: dist("basic-auth.wasm"),
            configuration: ISTIO_BASIC_AUTH,
        },
        Case {
            id: "abi_0_1_0/headers-abi010",
            abi: AbiVersion::V0_1_0,
            wasm: dist("headers-abi010.wasm"),
            configuration: "bench",
        },
        Case {
            id: "abi_0_2_0/abi_020.wat",
            abi: AbiVersion::V0_2_0,
            wasm: support::wat("abi_020"),
            configuration: "",
        },
    ]
}

fn load(runtime: &Runtime, case: &Case) -> Plugin {
    let module = runtime
        .load_module(&case.wasm)
        .unwrap_or_else(|e| panic!("{}: {e}", case.id));
    assert_eq!(module.abi_version(), case.abi, "{}", case.id);
    let name = case.id.rsplit('/').next().unwrap_or(case.id);
    let plugin = Plugin::load(
        runtime,
        &module,
        PluginOptions {
            name: format!("default.{name}"),
            root_id: name.into(),
            configuration: case.configuration.as_bytes().to_vec(),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.id));
    // Measure the path a passing request takes: Continue, no local reply, no failure.
    let mut headers = fixtures::request_headers();
    let outcome = plugin
        .new_stream(StreamInfo::default())
        .on_request_headers(&mut headers, true);
    assert_eq!(outcome.action, Action::Continue, "{}: {outcome:?}", case.id);
    assert!(
        outcome.local_reply.is_none() && outcome.fail.is_none(),
        "{}: {outcome:?}",
        case.id
    );
    plugin
}

fn response_headers() -> HeaderList {
    [
        (":status", "200"),
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5183"),
        ("date", "Tue, 03 Feb 2026 10:00:00 GMT"),
        ("x-envoy-upstream-service-time", "12"),
    ]
    .into_iter()
    .collect()
}

fn runtime() -> Runtime {
    Runtime::new(
        Arc::new(NullHost),
        RuntimeOptions {
            slots: 1,
            ..Default::default()
        },
    )
    .expect("runtime")
}

/// Exactly one `on_request_headers` per iteration: the stream is created before the clock
/// starts, and dropped (`proxy_on_delete`) after it stops.
fn on_request_headers(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("on_request_headers");
    for case in cases() {
        let plugin = load(&runtime, &case);
        let request = fixtures::request_headers();
        group.bench_function(case.id, |b| {
            b.iter_batched(
                || (plugin.new_stream(StreamInfo::default()), request.clone()),
                |(mut stream, mut headers)| {
                    let outcome = stream.on_request_headers(black_box(&mut headers), true);
                    (stream, headers, outcome)
                },
                BatchSize::NumIterations(LIVE_STREAMS),
            )
        });
    }
    group.finish();
}

/// A whole request through one plugin, as the gateway drives it: `new_stream` (context
/// create), request headers, response headers, `on_log` (done + log) and drop (delete).
/// Only copying the header lists in is left out of the timing.
fn stream_lifecycle(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("stream_lifecycle");
    for case in cases().into_iter().filter(|c| c.abi == AbiVersion::V0_2_1) {
        let plugin = load(&runtime, &case);
        let (request, response) = (fixtures::request_headers(), response_headers());
        group.bench_function(case.id, |b| {
            b.iter_batched(
                || (request.clone(), response.clone()),
                |(mut request, mut response)| {
                    let mut stream = plugin.new_stream(StreamInfo::default());
                    let outcome = stream.on_request_headers(black_box(&mut request), true);
                    stream.on_response_headers(black_box(&mut response), false);
                    stream.on_log();
                    drop(stream);
                    (request, response, outcome)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The gateway benchmark's 5-plugin chain (`bench/config/plugin-chain.yaml`): basic-auth,
/// rate-limit (a limit never reached), header-append, and two `hostcalls` instances that share
/// a VM and edit both header lists (`x-test: headers`), so the other plugins' streams see copies
/// on write.
fn chain_plugins(runtime: &Runtime) -> Vec<Plugin> {
    [
        ("basic-auth", "basic-auth.wasm", ISTIO_BASIC_AUTH),
        (
            "rate-limit",
            "rate-limit.wasm",
            r#"{"tokens_per_second": 100000000, "deny_status": 429,
                "response_headers": {"x-rate-limit": "checked"}}"#,
        ),
        (
            "header-append",
            "header-append.wasm",
            r#"{"x-bench": "chain"}"#,
        ),
        (
            "hostcalls-a",
            "hostcalls.wasm",
            r#"{"log_lifecycle": false}"#,
        ),
        (
            "hostcalls-b",
            "hostcalls.wasm",
            r#"{"log_lifecycle": false}"#,
        ),
    ]
    .into_iter()
    .map(|(name, file, configuration)| {
        let module = runtime.load_module(&dist(file)).expect(name);
        Plugin::load(
            runtime,
            &module,
            PluginOptions {
                name: format!("default.{name}"),
                root_id: name.into(),
                configuration: configuration.as_bytes().to_vec(),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"))
    })
    .collect()
}

fn chain_request() -> HeaderList {
    let mut request = fixtures::request_headers();
    request.push("x-test", "headers");
    request
}

/// One whole request through `plugins`, as the gateway drives it: a stream per plugin, request
/// headers in chain order, response headers in reverse, `on_log`, drop.
fn run_chain(
    plugins: &[Plugin],
    mut request: HeaderList,
    mut response: HeaderList,
) -> (HeaderList, HeaderList) {
    let info = Arc::new(StreamInfo::default());
    let mut streams = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        let mut stream = plugin.new_stream(info.clone());
        let outcome = stream.on_request_headers(black_box(&mut request), true);
        assert!(outcome.action == Action::Continue && outcome.local_reply.is_none());
        streams.push(stream);
    }
    for stream in streams.iter_mut().rev() {
        stream.on_response_headers(black_box(&mut response), false);
    }
    for stream in &mut streams {
        stream.on_log();
    }
    drop(streams);
    (request, response)
}

fn chain(c: &mut Criterion) {
    let runtime = runtime();
    let plugins = chain_plugins(&runtime);
    let (request, response) = (chain_request(), response_headers());
    // Every plugin ran and edited what it should: the chain measured is the chain configured.
    let (after_request, after_response) = run_chain(&plugins, request.clone(), response.clone());
    assert_eq!(after_request.get("x-added"), Some(&b"added"[..]));
    assert_eq!(after_response.get("x-bench"), Some(&b"chain"[..]));
    assert_eq!(after_response.get("x-rate-limit"), Some(&b"checked"[..]));
    assert_eq!(after_response.get("x-resp-added"), Some(&b"added"[..]));
    c.bench_function("chain/5_plugins", |b| {
        b.iter_batched(
            || (request.clone(), response.clone()),
            |(request, response)| run_chain(&plugins, request, response),
            BatchSize::SmallInput,
        )
    });
}

/// The same chain in two workers at once, each pinned to its own VM slot as the gateway's
/// `--threads 2` runs: the time is the wall time for both workers to each serve one request. With
/// nothing shared between them it would equal `chain/5_plugins` (given two idle cores); what
/// the workers share (the plugins' counters, reference counts) adds to it.
fn chain_2_workers(c: &mut Criterion) {
    let runtime = Runtime::new(
        Arc::new(NullHost),
        RuntimeOptions {
            slots: 2,
            ..Default::default()
        },
    )
    .expect("runtime");
    let plugins = chain_plugins(&runtime);
    let (request, response) = (chain_request(), response_headers());
    c.bench_function("chain/5_plugins_2_workers", |b| {
        b.iter_custom(|iters| {
            let start = std::sync::Barrier::new(3);
            std::thread::scope(|s| {
                for slot in 0..2 {
                    let (plugins, start) = (&plugins, &start);
                    let (request, response) = (&request, &response);
                    s.spawn(move || {
                        wasmgate_runtime::set_thread_slot(slot);
                        start.wait();
                        for _ in 0..iters {
                            run_chain(plugins, request.clone(), response.clone());
                        }
                    });
                }
                start.wait();
                std::time::Instant::now()
            })
            .elapsed()
        })
    });
}

criterion_group! {
    name = benches;
    config = fixtures::criterion();
    targets = on_request_headers, stream_lifecycle, chain, chain_2_workers
}
criterion_main!(benches);
