use std::time::Duration;

use bytes::Bytes;
use wasmgate_runtime::*;

use crate::support::*;

fn traps() -> HeaderList {
    // three request headers: the hostile guest hits `unreachable`
    (0..3).map(|i| (format!("h{i}"), "v")).collect()
}

fn with_strategy(e: &Env, fail_strategy: FailStrategy, config: &str) -> Plugin {
    e.plugin_with(
        &wat("hostile"),
        PluginOptions {
            fail_strategy,
            reload_backoff: Duration::from_millis(300),
            ..opts(config)
        },
    )
}

fn is_fail_close(outcome: &Outcome) -> bool {
    outcome
        .local_reply
        .as_ref()
        .is_some_and(|r| r.status == 503 && r.details == "wasm_fail_stream")
}

#[test]
fn trap_with_fail_close_answers_503_now_and_for_later_streams() {
    let e = env();
    let plugin = with_strategy(&e, FailStrategy::FailClose, "");
    let mut stream = plugin.new_stream(StreamInfo::default());
    let outcome = stream.on_request_headers(&mut traps(), true);
    assert!(is_fail_close(&outcome), "{outcome:?}");
    // Once per stream; later phases of the same stream just continue.
    assert_eq!(
        stream.on_response_headers(&mut response_headers(), true),
        Outcome {
            action: Action::Continue,
            local_reply: None,
            fail: None
        }
    );
    let mut later = plugin.new_stream(StreamInfo::default());
    assert!(is_fail_close(
        &later.on_request_headers(&mut request_headers(), true)
    ));
    let stats = plugin.stats();
    assert_eq!((stats.traps, stats.fail_closed), (1, 2));
    assert_eq!(stats.local_replies.get(&503), Some(&2));
    assert!(matches!(
        plugin.failure(),
        Some(RuntimeError::Trap {
            callback: "proxy_on_request_headers",
            ..
        })
    ));
}

#[test]
fn trap_with_fail_open_skips_the_plugin() {
    let e = env();
    let plugin = with_strategy(&e, FailStrategy::FailOpen, "");
    let mut stream = plugin.new_stream(StreamInfo::default());
    let outcome = stream.on_request_headers(&mut traps(), true);
    assert_eq!(outcome.action, Action::Continue);
    assert_eq!(outcome.local_reply, None);
    assert_eq!(outcome.fail, Some(FailAction::Opened));
    let later = plugin.new_stream(StreamInfo::default());
    assert!(later.is_skipped());
    assert_eq!(plugin.stats().fail_opened, 2);
}

#[test]
fn trap_with_fail_reload_gets_a_fresh_vm_after_the_backoff() {
    let e = env();
    let plugin = with_strategy(&e, FailStrategy::FailReload, "");
    let mut stream = plugin.new_stream(StreamInfo::default());
    assert!(is_fail_close(
        &stream.on_request_headers(&mut traps(), true)
    ));
    // Within the backoff (≥ 300 ms): still failing closed.
    let mut during = plugin.new_stream(StreamInfo::default());
    assert!(is_fail_close(
        &during.on_request_headers(&mut request_headers(), true)
    ));
    eventually("a reloaded VM", || {
        let mut s = plugin.new_stream(StreamInfo::default());
        s.on_request_headers(&mut request_headers(), true).action == Action::Continue
    });
    let stats = plugin.stats();
    assert_eq!(stats.reloads, 1);
    assert!(stats.reload_backoffs >= 1);
    assert_eq!(stats.vms, 1);
    assert!(plugin.failure().is_none());
}

#[test]
fn trap_in_configure_refuses_the_configuration() {
    let e = env();
    let module = e.module(&wat("hostile"));
    let err = Plugin::load(&e.runtime, &module, opts("configure")).unwrap_err();
    match err {
        RuntimeError::Configure { reason, .. } => {
            assert!(reason.contains("unreachable"), "{reason}")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn trap_in_each_stream_callback_applies_the_fail_strategy() {
    let e = env();
    // Trap while creating the stream context: the first callback answers 503.
    let p = with_strategy(&e, FailStrategy::FailClose, "create_stream");
    let mut s = p.new_stream(StreamInfo::default());
    assert!(is_fail_close(
        &s.on_request_headers(&mut request_headers(), true)
    ));

    for (config, phase) in [("request_body", 0), ("response_headers", 1)] {
        let p = with_strategy(&e, FailStrategy::FailClose, config);
        let mut s = p.new_stream(StreamInfo::default());
        assert_eq!(
            s.on_request_headers(&mut request_headers(), false).action,
            Action::Continue
        );
        let outcome = match phase {
            0 => s.on_request_body(&mut Bytes::from_static(b"x"), true),
            _ => s.on_response_headers(&mut response_headers(), true),
        };
        assert!(is_fail_close(&outcome), "{config}: {outcome:?}");
        assert_eq!(p.stats().traps, 1, "{config}");
    }

    // Traps in on_log and on_delete fail the VM (no request is left to answer).
    for config in ["log", "delete"] {
        let p = with_strategy(&e, FailStrategy::FailClose, config);
        let mut s = p.new_stream(StreamInfo::default());
        s.on_request_headers(&mut request_headers(), true);
        s.on_log();
        drop(s);
        assert_eq!(p.stats().traps, 1, "{config}");
        assert!(p.failure().is_some(), "{config}");
    }
}

#[test]
fn trap_in_a_call_response_fails_the_paused_stream() {
    let e = env();
    let p = with_strategy(&e, FailStrategy::FailClose, "http_call_response");
    let mut s = p.new_stream(StreamInfo::default());
    assert_eq!(
        s.on_request_headers(&mut request_headers(), true).action,
        Action::Pause
    );
    e.host
        .take_call()
        .expect("call")
        .done
        .complete(CallResponse::default());
    assert!(is_fail_close(&block_on(s.resumed())));
}

#[test]
fn trap_in_tick_or_queue_ready_fails_the_vm() {
    let e = env();
    let p = with_strategy(&e, FailStrategy::FailClose, "tick");
    eventually("the tick trap", || p.failure().is_some());
    let mut s = p.new_stream(StreamInfo::default());
    assert!(is_fail_close(
        &s.on_request_headers(&mut request_headers(), true)
    ));

    let p = with_strategy(&e, FailStrategy::FailOpen, "queue_ready");
    eventually("the queue trap", || p.failure().is_some());
    assert!(p.new_stream(StreamInfo::default()).is_skipped());
}

#[test]
fn a_failed_plugin_does_not_affect_other_plugins() {
    let e = env();
    let bad = with_strategy(&e, FailStrategy::FailClose, "");
    let good = e.plugin(&wat("lifecycle"), "");
    let mut s = bad.new_stream(StreamInfo::default());
    assert!(is_fail_close(&s.on_request_headers(&mut traps(), true)));
    let mut s = good.new_stream(StreamInfo::default());
    assert_eq!(
        s.on_request_headers(&mut request_headers(), true).action,
        Action::Continue
    );
    assert_eq!(good.stats().traps, 0);
}

#[test]
fn a_canary_that_traps_does_not_break_the_running_plugin_sharing_its_vm() {
    let e = env();
    let module = e.module(&wat("hostile"));
    let mut o = opts("");
    o.vm_id = "shared".into();
    let running = Plugin::load(&e.runtime, &module, o.clone()).unwrap();
    o.configuration = b"configure".to_vec();
    assert!(Plugin::load(&e.runtime, &module, o).is_err());
    let mut s = running.new_stream(StreamInfo::default());
    assert_eq!(
        s.on_request_headers(&mut request_headers(), true).action,
        Action::Continue
    );
    assert!(running.failure().is_none());
}

#[test]
fn a_new_plugin_gets_a_fresh_vm_after_the_shared_one_failed() {
    let e = env();
    let module = e.module(&wat("hostile"));
    let mut o = opts("");
    o.vm_id = "swap".into();
    let old = Plugin::load(&e.runtime, &module, o.clone()).unwrap();
    let mut s = old.new_stream(StreamInfo::default());
    assert!(is_fail_close(&s.on_request_headers(&mut traps(), true)));
    // A configuration change (hot swap) loads a new plugin: it must not inherit the failure.
    o.configuration = b"v2".to_vec();
    let new = Plugin::load(&e.runtime, &module, o).unwrap();
    let mut s = new.new_stream(StreamInfo::default());
    assert_eq!(
        s.on_request_headers(&mut request_headers(), true).action,
        Action::Continue
    );
    assert!(old.failure().is_some());
}
