use std::time::Duration;

use bytes::Bytes;
use wasmgate_runtime::*;

use crate::support::*;

fn hostile(limits: Limits) -> (Env, Plugin) {
    let e = env_with(limits, 1);
    let plugin = e.plugin(&wat("hostile"), "");
    (e, plugin)
}

/// `n` request headers select the guest's behaviour (see hostile.wat).
fn headers(n: usize) -> HeaderList {
    (0..n).map(|i| (format!("h{i}"), "v")).collect()
}

fn assert_fail_closed(outcome: &Outcome) {
    let reply = outcome.local_reply.as_ref().expect("fail-close reply");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (503, "wasm_fail_stream")
    );
    assert_eq!(reply.grpc_status, Some(14));
    assert_eq!(outcome.fail, Some(FailAction::Closed));
}

#[test]
fn callback_time_obeyed() {
    let (_e, plugin) = hostile(Limits {
        callback_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let mut stream = plugin.new_stream(StreamInfo::default());
    assert_eq!(
        stream.on_request_headers(&mut headers(5), true).action,
        Action::Continue
    );
    assert_eq!(plugin.stats().traps, 0);
}

#[test]
fn callback_time_violated() {
    let (_e, plugin) = hostile(Limits {
        callback_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let mut stream = plugin.new_stream(StreamInfo::default());
    let started = std::time::Instant::now();
    let outcome = stream.on_request_headers(&mut headers(1), true);
    assert_fail_closed(&outcome);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        plugin.failure(),
        Some(RuntimeError::Limit {
            kind: LimitKind::Time,
            callback: "proxy_on_request_headers"
        })
    ));
    let stats = plugin.stats();
    assert_eq!(
        (stats.traps, stats.limit_exceeded, stats.fail_closed),
        (1, 1, 1)
    );
}

#[test]
fn memory_obeyed() {
    let (_e, plugin) = hostile(Limits {
        max_memory_bytes: 16 << 20,
        ..Default::default()
    });
    let mut stream = plugin.new_stream(StreamInfo::default());
    assert_eq!(
        stream.on_request_headers(&mut headers(4), true).action,
        Action::Continue
    );
    assert!(plugin.stats().memory_bytes >= 8 << 20);
}

#[test]
fn memory_violated() {
    let (_e, plugin) = hostile(Limits {
        max_memory_bytes: 16 << 20,
        ..Default::default()
    });
    let mut stream = plugin.new_stream(StreamInfo::default());
    assert_fail_closed(&stream.on_request_headers(&mut headers(2), true));
    assert!(matches!(
        plugin.failure(),
        Some(RuntimeError::Limit {
            kind: LimitKind::Memory,
            ..
        })
    ));
}

#[test]
fn initial_memory_above_the_limit_is_refused_at_load() {
    let e = env_with(
        Limits {
            max_memory_bytes: 16 << 20,
            ..Default::default()
        },
        1,
    );
    let module = e.module(&wat("big_memory"));
    let err = Plugin::load(&e.runtime, &module, opts("")).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Limit {
                kind: LimitKind::Memory,
                ..
            }
        ),
        "{err}"
    );
}

fn body_env(max_body_bytes: usize) -> (Env, Plugin) {
    let e = env_with(
        Limits {
            max_body_bytes,
            ..Default::default()
        },
        1,
    );
    let plugin = e.plugin(&wat("hostcalls"), "");
    (e, plugin)
}

fn buffering_stream(plugin: &Plugin) -> Stream {
    let mut stream = plugin.new_stream(StreamInfo::default());
    let mut h = request_headers();
    h.push("x-op", "body-hold");
    stream.on_request_headers(&mut h, false);
    stream
}

#[test]
fn body_buffer_obeyed() {
    let (_e, plugin) = body_env(16);
    let mut stream = buffering_stream(&plugin);
    for _ in 0..2 {
        let outcome = stream.on_request_body(&mut Bytes::from_static(b"12345678"), false);
        assert_eq!(outcome.action, Action::Pause);
        assert_eq!(outcome.local_reply, None);
    }
    assert_eq!(stream.take_buffered_request_body().len(), 16);
}

#[test]
fn body_buffer_violated() {
    let (_e, plugin) = body_env(16);
    let mut stream = buffering_stream(&plugin);
    stream.on_request_body(&mut Bytes::from_static(b"12345678"), false);
    let outcome = stream.on_request_body(&mut Bytes::from_static(b"123456789"), false);
    let reply = outcome.local_reply.expect("413");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (413, "request_payload_too_large")
    );
    // Response bodies: 500.
    let mut stream = buffering_stream(&plugin);
    let outcome = stream.on_response_body(&mut Bytes::from(vec![0u8; 17]), false);
    assert_eq!(outcome.local_reply.expect("500").status, 500);
}

fn pairs_env(limits: Limits) -> (Env, Plugin) {
    let e = env_with(limits, 1);
    let plugin = e.plugin(&wat("hostcalls"), "");
    (e, plugin)
}

fn set_pairs(e: &Env, plugin: &Plugin) -> (HeaderList, Vec<String>) {
    let mut stream = plugin.new_stream(StreamInfo::default());
    let mut h = request_headers();
    h.push("x-op", "set-pairs");
    let before = e.host.logs.lock().len();
    stream.on_request_headers(&mut h, false);
    (h, e.host.messages()[before..].to_vec())
}

#[test]
fn pairs_count_and_size_obeyed() {
    let (e, plugin) = pairs_env(Limits {
        max_pairs_count: 2,
        max_pairs_bytes: 64,
        ..Default::default()
    });
    let (headers, logs) = set_pairs(&e, &plugin);
    assert_eq!(logs[0], "status=0");
    assert_eq!(headers.len(), 2);
}

#[test]
fn pairs_count_violated() {
    let (e, plugin) = pairs_env(Limits {
        max_pairs_count: 1,
        ..Default::default()
    });
    let (headers, logs) = set_pairs(&e, &plugin);
    assert_eq!(logs[0], "status=2");
    assert_eq!(
        headers.get("x-op"),
        Some(&b"set-pairs"[..]),
        "map unchanged"
    );
}

#[test]
fn pairs_size_violated() {
    let (e, plugin) = pairs_env(Limits {
        max_pairs_bytes: 20,
        ..Default::default()
    });
    let (_, logs) = set_pairs(&e, &plugin);
    assert_eq!(logs[0], "status=2");
}
