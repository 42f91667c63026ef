use std::time::Duration;

use bytes::Bytes;
use wasmgate_runtime::*;

use crate::support::*;

/// Runs `on_request_headers` with `x-op: op` (plus `extra` headers) on a fresh plugin of the
/// hostcalls guest; returns the outcome, the headers after the callback, and the log lines the
/// callback produced.
fn run(
    e: &Env,
    plugin: &Plugin,
    op: &str,
    extra: &[(&str, &[u8])],
) -> (Outcome, HeaderList, Vec<String>, Stream) {
    let mut stream = plugin.new_stream(StreamInfo {
        source: Some("10.0.0.7:5555".parse().unwrap()),
        destination: Some("10.0.0.1:8080".parse().unwrap()),
        connection_id: 42,
        mtls: true,
        route_name: Some("route-a".into()),
        cluster_name: Some("backend".into()),
        ..Default::default()
    });
    let mut headers = request_headers();
    headers.push("x-op", op);
    for (k, v) in extra {
        headers.push(k, v);
    }
    let before = e.host.logs.lock().len();
    let outcome = stream.on_request_headers(&mut headers, false);
    let logs = e.host.messages()[before..].to_vec();
    (outcome, headers, logs, stream)
}

fn statuses(logs: &[String]) -> Vec<i32> {
    logs.iter()
        .filter_map(|m| m.strip_prefix("status="))
        .map(|s| s.parse().unwrap())
        .collect()
}

/// A fresh runtime per test (tests run in parallel) with Istio's empty vm_id.
fn setup() -> (Env, Plugin) {
    let e = env();
    let mut o = opts("");
    o.vm_id = String::new();
    let plugin = e.plugin_with(&wat("hostcalls"), o);
    (e, plugin)
}

#[test]
fn log_levels_and_stdio_reach_the_host() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "log", &[]);
    assert_eq!(statuses(&logs), [0, 0, 0, 0, 0, 0, 2, 6, 0, 0, 8, 0]);
    let entries = e.host.logs.lock().clone();
    let level_of = |msg: &str| {
        entries
            .iter()
            .find(|(_, _, m)| m == msg)
            .map(|(_, l, _)| *l)
    };
    // The plugin's level is Info: trace and debug are filtered.
    assert_eq!(level_of("trace-msg"), None);
    assert_eq!(level_of("debug-msg"), None);
    assert_eq!(level_of("info-msg"), Some(LogLevel::Info));
    assert_eq!(level_of("warn-msg"), Some(LogLevel::Warn));
    assert_eq!(level_of("error-msg"), Some(LogLevel::Error));
    assert_eq!(level_of("critical-msg"), Some(LogLevel::Critical));
    // stdout → info, stderr → error, trailing newline stripped; wasi_unstable too.
    assert_eq!(level_of("from-stdout"), Some(LogLevel::Info));
    assert_eq!(level_of("from-stderr"), Some(LogLevel::Error));
    assert!(entries.iter().all(|(p, _, _)| p == "test.plugin"));
}

#[test]
fn headers_are_read_added_replaced_and_removed() {
    let (_e, plugin) = setup();
    let (outcome, headers, logs, _) = run(&_e, &plugin, "headers", &[]);
    assert_eq!(outcome.action, Action::Continue);
    assert_eq!(headers.get("x-added"), Some(&b"1"[..]));
    assert_eq!(headers.get("user-agent"), Some(&b"replaced"[..]));
    assert_eq!(headers.get_all(b"user-agent").count(), 1);
    assert_eq!(headers.get("x-multi"), None);
    // add, replace, remove, remove-absent OK; missing → NOT_FOUND; size; pairs; response map
    // absent in the request phase → BAD_ARGUMENT; lookup is case-insensitive.
    assert_eq!(statuses(&logs), [0, 0, 0, 0, 1, 0, 0, 2, 0]);
    let size: usize = logs
        .iter()
        .find_map(|m| m.strip_prefix("size="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(size, pairs::encoded_size(&headers));
    assert!(logs.contains(&format!("pairs={}", headers.len())));
    assert!(logs.contains(&"ua=replaced".to_string()));
}

#[test]
fn header_map_pairs_replace_the_map_and_malformed_pairs_are_refused() {
    let (e, plugin) = setup();
    let (_, headers, logs, _) = run(&e, &plugin, "set-pairs", &[]);
    assert_eq!(statuses(&logs), [0, 2]);
    let entries: Vec<_> = headers.iter().collect();
    assert_eq!(
        entries,
        [(&b":method"[..], &b"POST"[..]), (b":path", b"/new")]
    );
}

#[test]
fn bad_guest_pointers_get_invalid_memory_access_not_a_crash() {
    let (e, plugin) = setup();
    let (outcome, _, logs, mut stream) = run(&e, &plugin, "bad-ptr", &[]);
    assert_eq!(statuses(&logs), [6, 6, 6, 6, 6, 6, 6, 6]);
    assert_eq!(
        outcome,
        Outcome {
            action: Action::Continue,
            local_reply: None,
            fail: None
        }
    );
    // The VM is healthy afterwards.
    assert_eq!(
        stream
            .on_response_headers(&mut response_headers(), true)
            .action,
        Action::Continue
    );
    assert_eq!(plugin.stats().traps, 0);
}

#[test]
fn bad_enums_get_bad_argument() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "bad-enum", &[]);
    assert_eq!(statuses(&logs), [2, 2, 2, 2, 2, 2, 2]);
}

#[test]
fn local_reply_is_deferred_to_the_outcome() {
    let (e, plugin) = setup();
    let (outcome, _, logs, _) = run(&e, &plugin, "local-reply", &[]);
    assert_eq!(statuses(&logs), [0]);
    let reply = outcome.local_reply.expect("local reply");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.details, "access_denied");
    assert_eq!(reply.body, b"nope");
    assert_eq!(reply.headers.get("x-reason"), Some(&b"test"[..]));
    assert_eq!(reply.grpc_status, None);
    assert_eq!(plugin.stats().local_replies.get(&403), Some(&1));

    let (outcome, _, _, _) = run(&e, &plugin, "local-grpc", &[]);
    let reply = outcome.local_reply.unwrap();
    assert_eq!((reply.status, reply.grpc_status), (401, Some(16)));
}

#[test]
fn header_callback_results_are_clamped_as_envoy_does() {
    let (e, plugin) = setup();
    for (ret, action) in [
        ("0", Action::Continue),
        ("1", Action::Pause),
        ("2", Action::Continue),
        ("3", Action::Pause),
        ("4", Action::Pause),
        ("99", Action::Pause),
    ] {
        let (outcome, _, _, _) = run(&e, &plugin, "ret", &[("x-ret", ret.as_bytes())]);
        assert_eq!(outcome.action, action, "return value {ret}");
    }
}

#[test]
fn close_stream_resets_and_continue_inside_the_callback_continues() {
    let (e, plugin) = setup();
    assert_eq!(run(&e, &plugin, "close", &[]).0.action, Action::Close);
    assert_eq!(
        run(&e, &plugin, "continue-inline", &[]).0.action,
        Action::Continue
    );
}

#[test]
fn properties_are_served_as_envoy_serializes_them() {
    let (e, plugin) = setup();
    e.host
        .properties
        .lock()
        .insert(b"xds\0node\0id".to_vec(), b"gateway-1".to_vec());
    let prop = |path: &[u8]| {
        let (_, headers, logs, _) = run(&e, &plugin, "property", &[("x-path", path)]);
        let status = statuses(&logs)[0];
        (
            status,
            headers
                .get("x-prop")
                .filter(|_| status == 0)
                .map(<[u8]>::to_vec),
        )
    };
    let ok = |v: &[u8]| (0, Some(v.to_vec()));
    assert_eq!(prop(b"request\0path"), ok(b"/api/x?q=1"));
    assert_eq!(prop(b"request\0url_path"), ok(b"/api/x"));
    assert_eq!(prop(b"request\0query"), ok(b"q=1"));
    assert_eq!(prop(b"request\0method"), ok(b"GET"));
    assert_eq!(prop(b"request\0host"), ok(b"example.com"));
    assert_eq!(prop(b"request\0useragent"), ok(b"test/1.0"));
    assert_eq!(prop(b"request\0headers\0x-multi"), ok(b"a,b"));
    assert_eq!(prop(b"request\0protocol"), ok(b"HTTP/1.1"));
    assert_eq!(prop(b"source\0address"), ok(b"10.0.0.7:5555"));
    assert_eq!(prop(b"source\0port"), ok(&5555i64.to_le_bytes()));
    assert_eq!(prop(b"destination\0port"), ok(&8080i64.to_le_bytes()));
    assert_eq!(prop(b"connection\0id"), ok(&42i64.to_le_bytes()));
    assert_eq!(prop(b"connection_id"), ok(&42i64.to_le_bytes()));
    assert_eq!(prop(b"connection\0mtls"), ok(&[1]));
    assert_eq!(prop(b"plugin_name"), ok(b"test.plugin"));
    assert_eq!(prop(b"plugin_root_id"), ok(b"root"));
    assert_eq!(prop(b"plugin_vm_id"), ok(b""));
    assert_eq!(prop(b"xds\0route_name"), ok(b"route-a"));
    assert_eq!(prop(b"route_name"), ok(b"route-a"));
    assert_eq!(prop(b"cluster_name"), ok(b"backend"));
    assert_eq!(prop(b"xds\0node\0id"), ok(b"gateway-1"));
    assert_eq!(prop(b"node\0id"), ok(b"gateway-1"));
    assert_eq!(prop(b"no\0such\0thing"), (1, None));
    // request.headers is a pairs-encoded map, repeated values joined by ','.
    let map = prop(b"request\0headers").1.unwrap();
    let decoded = pairs::decode(&map, 1024, 1 << 20).unwrap();
    assert!(decoded.contains(&(b"x-multi".to_vec(), b"a,b".to_vec())));
    assert!(decoded.contains(&(b":path".to_vec(), b"/api/x?q=1".to_vec())));
    // request.time is i64 nanoseconds.
    assert_eq!(prop(b"request\0time").1.unwrap().len(), 8);
}

#[test]
fn set_property_is_read_back_on_the_stream() {
    let (e, plugin) = setup();
    let (_, headers, logs, _) = run(
        &e,
        &plugin,
        "set-property",
        &[("x-path", b"my\0key"), ("x-value", b"v1")],
    );
    assert_eq!(statuses(&logs), [0, 0]);
    assert_eq!(headers.get("x-prop"), Some(&b"v1"[..]));
}

#[test]
fn shared_data_compare_and_swap_is_process_wide_per_vm_id() {
    let e = env();
    let module = e.module(&wat("hostcalls"));
    let mut o = opts("");
    o.vm_id = "sd".into();
    let a = Plugin::load(&e.runtime, &module, o.clone()).unwrap();
    o.configuration = b"other".to_vec();
    let b = Plugin::load(&e.runtime, &module, o).unwrap();
    let c = e.plugin(&wat("hostcalls"), ""); // another vm_id

    let set = |p: &Plugin, value: &[u8], cas: Option<u32>| {
        let cas = cas.map(|c| c.to_string());
        let mut extra: Vec<(&str, &[u8])> = vec![("x-key", b"k"), ("x-value", value)];
        if let Some(cas) = &cas {
            extra.push(("x-cas", cas.as_bytes()));
        }
        statuses(&run(&e, p, "shared-set", &extra).2)[0]
    };
    let get = |p: &Plugin| {
        let (_, headers, logs, _) = run(&e, p, "shared-get", &[("x-key", b"k")]);
        let cas: u32 = logs
            .iter()
            .find_map(|m| m.strip_prefix("cas="))
            .unwrap()
            .parse()
            .unwrap();
        (
            statuses(&logs)[0],
            headers.get("x-shared").map(<[u8]>::to_vec),
            cas,
        )
    };
    assert_eq!(get(&a).0, 1, "absent key is NOT_FOUND");
    assert_eq!(set(&a, b"v1", None), 0);
    let (status, value, cas) = get(&b);
    assert_eq!(
        (status, value.as_deref()),
        (0, Some(&b"v1"[..])),
        "same vm_id sees it"
    );
    assert_ne!(cas, 0);
    assert_eq!(
        set(&b, b"v2", Some(cas + 1000)),
        8,
        "stale cas is CAS_MISMATCH"
    );
    assert_eq!(set(&b, b"v2", Some(cas)), 0);
    assert_eq!(get(&a).1.as_deref(), Some(&b"v2"[..]));
    assert_eq!(get(&c).0, 1, "another vm_id does not see it");
}

#[test]
fn shared_queue_notifies_the_registering_root_after_the_callback() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "queue", &[]);
    // register, resolve, resolve unknown, dequeue unknown, enqueue; then, after the callback,
    // proxy_on_queue_ready: dequeue "hello", then EMPTY.
    assert_eq!(statuses(&logs), [0, 0, 1, 1, 0, 0, 7]);
    let id = logs.iter().find_map(|m| m.strip_prefix("queue=")).unwrap();
    assert!(logs.contains(&format!("resolved={id}")));
    assert!(logs.contains(&format!("queue-ready={id}")));
    assert!(logs.contains(&"dequeued=hello".to_string()));
}

#[test]
fn http_call_pauses_the_stream_until_its_response_continues_it() {
    let (e, plugin) = setup();
    let (outcome, _, logs, mut stream) = run(&e, &plugin, "http-call", &[]);
    assert_eq!(outcome.action, Action::Pause);
    assert_eq!(statuses(&logs), [0]);
    let call = e.host.take_call().expect("dispatched");
    let http = call.http.unwrap();
    assert_eq!(http.upstream, "upstream-a");
    assert_eq!(http.headers.get(":authority"), Some(&b"auth.local"[..]));
    assert_eq!(http.body, b"ping");
    assert_eq!(http.timeout, Some(Duration::from_secs(5)));
    // Answered from another thread, as a proxy would.
    std::thread::spawn(move || {
        call.done.complete(CallResponse {
            headers: [(":status", "200")].into_iter().collect(),
            body: b"ok".to_vec(),
            trailers: [("x-t", "1")].into_iter().collect(),
            ..Default::default()
        })
    })
    .join()
    .unwrap();
    let resumed = block_on(stream.resumed());
    assert_eq!(resumed.action, Action::Continue);
    assert_eq!(resumed.local_reply, None);
    for line in [
        "resp-headers=1",
        "resp-body=2",
        "resp-trailers=1",
        "resp-status=200",
        "resp-trailer=1",
        "resp-body-bytes=ok",
    ] {
        assert!(
            e.host.logged(line),
            "missing {line}: {:?}",
            e.host.messages()
        );
    }
}

#[test]
fn http_call_response_can_answer_the_request() {
    let (e, plugin) = setup();
    let (_, _, _, mut stream) = run(&e, &plugin, "http-call", &[]);
    let call = e.host.take_call().unwrap();
    call.done.complete(CallResponse {
        headers: [(":status", "200")].into_iter().collect(),
        body: b"deny".to_vec(),
        ..Default::default()
    });
    let resumed = block_on(stream.resumed());
    let reply = resumed.local_reply.expect("local reply");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (403, "denied_by_auth")
    );
}

#[test]
fn dropped_call_completion_delivers_a_failed_response() {
    let (e, plugin) = setup();
    let (_, _, _, mut stream) = run(&e, &plugin, "http-call", &[]);
    drop(e.host.take_call().unwrap());
    assert_eq!(block_on(stream.resumed()).action, Action::Close);
    assert!(e.host.logged("resp-headers=0"));
}

#[test]
fn call_answered_inside_dispatch_is_delivered_after_the_callback() {
    let (e, plugin) = setup();
    *e.host.answer_inline.lock() = Some(CallResponse {
        headers: [(":status", "204")].into_iter().collect(),
        ..Default::default()
    });
    let (outcome, _, logs, mut stream) = run(&e, &plugin, "http-call", &[]);
    assert_eq!(outcome.action, Action::Pause);
    // The response ran after on_request_headers returned (not re-entrantly inside it).
    let token_at = logs.iter().position(|m| m.starts_with("token=")).unwrap();
    let response_at = logs.iter().position(|m| m == "resp-status=204").unwrap();
    assert!(token_at < response_at);
    assert_eq!(block_on(stream.resumed()).action, Action::Continue);
}

#[test]
fn http_call_refused_or_malformed_returns_a_status() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "http-call-bad", &[]);
    assert_eq!(statuses(&logs), [2]);
    assert!(e.host.take_call().is_none());
    *e.host.refuse_calls.lock() = Some(Status::BadArgument);
    let (_, _, logs, _) = run(&e, &plugin, "http-call", &[]);
    assert_eq!(statuses(&logs), [2]);
}

#[test]
fn grpc_call_success_and_failure_reach_the_plugin() {
    let (e, plugin) = setup();
    let (outcome, _, _, mut stream) = run(&e, &plugin, "grpc-call", &[]);
    assert_eq!(outcome.action, Action::Pause);
    let call = e.host.take_call().unwrap();
    let grpc = call.grpc.unwrap();
    assert_eq!(
        (grpc.service.as_str(), grpc.method.as_str()),
        ("svc.Foo", "Bar")
    );
    assert_eq!(grpc.message, b"msg");
    call.done.complete(CallResponse {
        headers: [("md", "1")].into_iter().collect(),
        body: b"pong".to_vec(),
        ..Default::default()
    });
    assert_eq!(block_on(stream.resumed()).action, Action::Continue);
    assert!(e.host.logged("grpc-md=1"));
    assert!(e.host.logged("grpc-size=4"));
    assert!(e.host.logged("grpc-msg=pong"));

    let (_, _, _, mut stream) = run(&e, &plugin, "grpc-call", &[]);
    e.host.take_call().unwrap().done.complete(CallResponse {
        grpc_status: 14,
        grpc_message: "down".into(),
        ..Default::default()
    });
    assert_eq!(block_on(stream.resumed()).action, Action::Continue);
    assert!(e.host.logged("grpc-close=14"));
    assert!(e.host.logged("grpc-status-msg=down"));
}

#[test]
fn grpc_stream_refused_by_host_and_tokens_checked_by_kind() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "grpc-stream", &[]);
    // The host knows no stream upstream: InternalFailure. Send on token 1 (a unary-call id by
    // Envoy's callout scheme): BadArgument. Cancel/close of an unknown call id: NotFound.
    assert_eq!(statuses(&logs), [10, 2, 1, 1]);
}

/// Statuses of a callback run as a stream event is delivered (the guest logs `status=` lines).
fn statuses_since(e: &Env, before: usize) -> Vec<i32> {
    statuses(&e.host.messages()[before..])
}

#[test]
fn grpc_stream_sends_in_order_and_delivers_events_until_closed() {
    let (e, plugin) = setup();
    *e.host.accept_streams.lock() = true;
    let (_, _, logs, stream) = run(&e, &plugin, "grpc-stream-open", &[]);
    // open, send, send with end_stream, close.
    assert_eq!(statuses(&logs), [0, 0, 0, 0]);
    let token: u32 = logs
        .iter()
        .find_map(|m| m.strip_prefix("stream-token="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        token & 3,
        2,
        "a stream id by Envoy's callout scheme: {token}"
    );
    let (events, seen) = {
        let mut streams = e.host.grpc_streams.lock();
        let opened = &mut streams[0];
        assert_eq!(
            (
                opened.stream.upstream.as_str(),
                opened.stream.service.as_str()
            ),
            ("grpc-up", "svc.S")
        );
        (opened.events.take().unwrap(), opened.seen.clone())
    };
    assert_eq!(*seen.lock(), ["send:a:false", "send:b:true", "close"]);

    events.initial_metadata([("md", "1")].into_iter().collect());
    events.message(b"m1".to_vec());
    events.message(b"m2".to_vec());
    events.trailing_metadata([("t", "1"), ("u", "2")].into_iter().collect());
    let before = e.host.messages().len();
    events.close(5, "nope");
    let logs = e.host.messages();
    for want in [
        "grpc-md=1",
        "grpc-msg=m1",
        "grpc-msg=m2",
        "grpc-trailing=2",
        "grpc-close=5",
        "grpc-status-msg=nope",
    ] {
        assert!(logs.iter().any(|m| m == want), "{want} in {logs:?}");
    }
    let order: Vec<_> = logs.iter().filter(|m| m.starts_with("grpc-")).collect();
    assert_eq!(
        order,
        [
            "grpc-md=1",
            "grpc-size=2",
            "grpc-msg=m1",
            "grpc-size=2",
            "grpc-msg=m2",
            "grpc-trailing=2",
            "grpc-close=5",
            "grpc-status-msg=nope"
        ]
    );
    // In the close callback: get_status, continue, then on the closed stream send OK (dropped),
    // close OK (forgets it), close again NOT_FOUND.
    assert_eq!(statuses_since(&e, before)[2..], [0, 0, 1]);
    // The remote close released the host's stream; nothing more reached it.
    assert_eq!(
        *seen.lock(),
        ["send:a:false", "send:b:true", "close", "drop"]
    );
    drop(stream);
}

#[test]
fn grpc_stream_cancel_resets_and_silences_it() {
    let (e, plugin) = setup();
    *e.host.accept_streams.lock() = true;
    let (_, _, logs, _stream) = run(&e, &plugin, "grpc-stream-cancel", &[]);
    // open, cancel, cancel again, send and close: NOT_FOUND.
    assert_eq!(statuses(&logs), [0, 0, 1, 1, 1]);
    let (events, seen) = {
        let mut streams = e.host.grpc_streams.lock();
        (streams[0].events.take().unwrap(), streams[0].seen.clone())
    };
    assert_eq!(*seen.lock(), ["drop"]);
    let before = e.host.messages().len();
    events.message(b"late".to_vec());
    events.close(0, "");
    assert_eq!(e.host.messages()[before..], [] as [String; 0]);
}

#[test]
fn grpc_stream_ends_with_its_context_and_a_remote_close_keeps_it_until_closed() {
    let (e, plugin) = setup();
    *e.host.accept_streams.lock() = true;
    let (_, _, logs, stream) = run(&e, &plugin, "grpc-stream-keep", &[]);
    assert_eq!(statuses(&logs), [0, 0]);
    let (events, seen) = {
        let mut streams = e.host.grpc_streams.lock();
        (streams[0].events.take().unwrap(), streams[0].seen.clone())
    };
    // The context ends: its stream is reset, and what the host still reports is dropped.
    drop(stream);
    assert_eq!(*seen.lock(), ["send:a:false", "drop"]);
    let before = e.host.messages().len();
    events.message(b"late".to_vec());
    assert!(
        !e.host.messages()[before..]
            .iter()
            .any(|m| m.starts_with("grpc-"))
    );
    drop(events);

    // A remote close first: the plugin's later send is accepted, its close forgets the stream.
    let (_, _, _, _stream) = run(&e, &plugin, "grpc-stream-keep", &[]);
    let events = e.host.grpc_streams.lock()[1].events.take().unwrap();
    let before = e.host.messages().len();
    events.close(0, "done");
    assert!(e.host.logged("grpc-close=0"));
    assert_eq!(statuses_since(&e, before)[2..], [0, 0, 1]);
}

#[test]
fn metrics_counter_gauge_histogram() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "metrics", &[]);
    // define, +5, -1 refused on a counter, get; gauge define/record/-2/get; histogram
    // define/record/record, get and increment refused; redefinition with another kind refused;
    // unknown id NOT_FOUND.
    assert_eq!(
        statuses(&logs),
        [0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 1]
    );
    assert!(logs.contains(&"counter=5".to_string()));
    assert!(logs.contains(&"gauge=40".to_string()));
    let metrics = e.runtime.metrics();
    assert_eq!(metrics["test_counter"], MetricValue::Counter(5));
    assert_eq!(metrics["test_gauge"], MetricValue::Gauge(40));
    let MetricValue::Histogram(h) = &metrics["test_hist"] else {
        panic!()
    };
    assert_eq!((h.count, h.sum), (2, 707));
    assert_eq!(h.buckets.iter().sum::<u64>(), 2);
}

#[test]
fn foreign_functions_compress_and_uncompress() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "foreign", &[]);
    assert_eq!(statuses(&logs), [0, 0, 3, 1]);
    assert!(logs.contains(&"uncompressed=hello hello hello hello".to_string()));
}

#[test]
fn time_clocks_random_environment_and_stubbed_files() {
    let e = env();
    let mut o = opts("");
    o.env = vec![("GREETING".into(), "hi".into()), ("B".into(), "2".into())];
    let plugin = e.plugin_with(&wat("hostcalls"), o);
    let (_, _, logs, _) = run(&e, &plugin, "time", &[]);
    // now, level, clocks (realtime, monotonic, unknown → ENOTSUP), random (ok, too large →
    // EINVAL), environ sizes/get, args, no preopens (EBADF), path_open ENOENT, sockets ENOTSUP,
    // sched_yield, poll_oneoff.
    assert_eq!(
        statuses(&logs),
        [0, 0, 0, 0, 58, 0, 28, 0, 0, 0, 8, 44, 58, 0, 0]
    );
    for line in [
        "time-nonzero=1",
        "level=2",
        "realtime-nonzero=1",
        "env-count=2",
        "env0=GREETING=hi",
        "argc=0",
        "events=1",
        "event-userdata=77",
    ] {
        assert!(logs.contains(&line.to_string()), "missing {line}: {logs:?}");
    }
}

#[test]
fn effective_context_switches_between_root_and_stream() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "effective", &[]);
    // to root; root has no request headers; unknown context; back to stream; headers; proxy_done
    assert_eq!(statuses(&logs), [0, 2, 2, 0, 0, 0]);
}

#[test]
fn tick_period_drives_proxy_on_tick_on_the_root_context() {
    let (e, plugin) = setup();
    let (_, _, logs, _) = run(&e, &plugin, "tick", &[]);
    assert_eq!(statuses(&logs), [0]);
    eventually("three ticks", || e.host.logged("tick=3"));
    // The guest stops its timer after the third tick.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!e.host.logged("tick=4"));
    let (_, _, logs, _) = run(&e, &plugin, "status", &[]);
    assert_eq!(statuses(&logs), [0]);
}

#[test]
fn body_is_buffered_while_paused_then_replaced() {
    let (e, plugin) = setup();
    let (_, _, _, mut stream) = run(&e, &plugin, "body-buffer", &[]);
    let mut chunk = Bytes::from_static(b"hello ");
    assert_eq!(
        stream.on_request_body(&mut chunk, false).action,
        Action::Pause
    );
    assert!(chunk.is_empty(), "held back while paused");
    let mut chunk = Bytes::from_static(b"world");
    assert_eq!(
        stream.on_request_body(&mut chunk, true).action,
        Action::Continue
    );
    assert_eq!(&chunk[..], b"REPLACED");
    assert!(e.host.logged("body-size=6"));
    assert!(e.host.logged("body-size=11"));
    assert!(e.host.logged("body=hello world"));
}

#[test]
fn streamed_body_chunks_are_rewritten_in_place() {
    let (e, plugin) = setup();
    let (_, _, _, mut stream) = run(&e, &plugin, "body-stream", &[]);
    let before = e.host.logs.lock().len();
    let mut chunk = Bytes::from_static(b"abc");
    assert_eq!(
        stream.on_response_body(&mut chunk, false).action,
        Action::Continue
    );
    assert_eq!(&chunk[..], b"<abc>");
    let logs = e.host.messages()[before..].to_vec();
    // status, prepend, append, insert in the middle refused, read past the end NOT_FOUND
    assert_eq!(statuses(&logs), [0, 0, 0, 2, 1]);
}

#[test]
fn body_paused_at_end_of_stream_is_kept_for_the_proxy() {
    let (e, plugin) = setup();
    let (_, _, _, mut stream) = run(&e, &plugin, "body-hold", &[]);
    let mut chunk = Bytes::from_static(b"data");
    assert_eq!(
        stream.on_request_body(&mut chunk, true).action,
        Action::Pause
    );
    assert_eq!(&stream.take_buffered_request_body()[..], b"data");
}

#[test]
fn response_phase_sees_request_headers_and_edits_response_maps() {
    let (e, plugin) = setup();
    let (_, _, _, mut stream) = run(&e, &plugin, "none", &[]);
    let mut trailers: HeaderList = [("x-t", "1")].into_iter().collect();
    stream.on_request_trailers(&mut trailers);
    assert_eq!(trailers.get("x-trailer-added"), Some(&b"1"[..]));
    assert!(e.host.logged("req-trailers=1"));
    let mut headers = response_headers();
    stream.on_response_headers(&mut headers, false);
    assert_eq!(headers.get("x-resp"), Some(&b"1"[..]));
    assert!(e.host.logged("resp-phase-path=/api/x?q=1"));
    let mut trailers: HeaderList = [("grpc-status", "2")].into_iter().collect();
    stream.on_response_trailers(&mut trailers);
    assert_eq!(trailers.get("grpc-status"), Some(&b"0"[..]));
    stream.on_log();
    assert!(e.host.logged("log-path=/api/x?q=1"));
    assert!(e.host.logged("log-code=200"));
}

#[test]
fn a_plugin_can_continue_another_paused_stream() {
    let (e, plugin) = setup();
    let (outcome, _, logs, mut paused) = run(&e, &plugin, "http-call", &[]);
    assert_eq!(outcome.action, Action::Pause);
    let ctx = logs
        .iter()
        .find_map(|m| m.strip_prefix("ctx="))
        .unwrap()
        .to_string();
    let (outcome, _, logs, _other) =
        run(&e, &plugin, "continue-other", &[("x-ctx", ctx.as_bytes())]);
    assert_eq!(outcome.action, Action::Continue);
    assert_eq!(statuses(&logs), [0, 0, 0]);
    assert_eq!(block_on(paused.resumed()).action, Action::Continue);
}

#[test]
fn headers_edited_while_paused_are_visible_after_resume() {
    let (e, plugin) = setup();
    let (_, headers, _, mut stream) = run(&e, &plugin, "http-call", &[]);
    assert_eq!(headers.get("x-call"), None);
    e.host.take_call().unwrap().done.complete(CallResponse {
        headers: [(":status", "200")].into_iter().collect(),
        body: b"ok".to_vec(),
        ..Default::default()
    });
    assert_eq!(block_on(stream.resumed()).action, Action::Continue);
    let now = stream.request_headers().expect("request headers");
    assert_eq!(now.get("x-call"), Some(&b"done"[..]));
    assert_eq!(stream.response_headers(), None);
}

#[test]
fn hostile_wasi_pointers_get_efault_not_a_crash() {
    let e = env();
    let mut o = opts("");
    o.env = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
    let plugin = e.plugin_with(&wat("hostcalls"), o);
    let (outcome, _, logs, _) = run(&e, &plugin, "wasi-bad", &[]);
    assert_eq!(statuses(&logs), [21, 21, 21, 21, 21, 21, 21]);
    assert_eq!(outcome.action, Action::Continue);
    assert_eq!(plugin.stats().traps, 0);
}
