use bytes::Bytes;
use wasmgate_runtime::*;

use crate::support::*;

#[test]
fn root_and_stream_callbacks_run_in_envoy_order() {
    let e = env();
    let mut o = opts("hello");
    o.vm_configuration = b"vmc".to_vec();
    let plugin = e.plugin_with(&wat("lifecycle"), o);
    assert_eq!(
        e.host.messages(),
        [
            "cb:initialize",
            "cb:main",
            "cb:create=1",
            "parent=0",
            "root_id=root",
            "cb:vm_start=1",
            "vm_config=vmc",
            "cb:configure=1",
            "config=hello"
        ]
    );
    e.host.clear();

    let mut stream = plugin.new_stream(StreamInfo::default());
    stream.on_request_headers(&mut request_headers(), false);
    stream.on_request_body(&mut Bytes::from_static(b"x"), false);
    stream.on_request_trailers(&mut HeaderList::new());
    stream.on_response_headers(&mut response_headers(), false);
    stream.on_response_body(&mut Bytes::from_static(b"y"), true);
    stream.on_response_trailers(&mut HeaderList::new());
    stream.on_log();
    drop(stream);
    assert_eq!(
        e.host.trace("cb:"),
        [
            "cb:create=2",
            "cb:request_headers=2",
            "cb:request_body=2",
            "cb:request_trailers=2",
            "cb:response_headers=2",
            "cb:response_body=2",
            "cb:response_trailers=2",
            "cb:done=2",
            "cb:log=2",
            "cb:delete=2"
        ]
    );
    assert!(e.host.messages().contains(&"parent=1".to_string()));

    // A stream dropped without on_log still gets done and delete.
    e.host.clear();
    let mut stream = plugin.new_stream(StreamInfo::default());
    stream.on_request_headers(&mut request_headers(), true);
    drop(stream);
    assert_eq!(
        e.host.trace("cb:"),
        [
            "cb:create=3",
            "cb:request_headers=3",
            "cb:done=3",
            "cb:delete=3"
        ]
    );

    // Plugin shutdown: done then delete on the root context.
    e.host.clear();
    drop(plugin);
    assert_eq!(e.host.trace("cb:"), ["cb:done=1", "cb:delete=1"]);
}

#[test]
fn configure_returning_false_refuses_the_configuration() {
    let e = env();
    let module = e.module(&wat("lifecycle"));
    let err = Plugin::load(&e.runtime, &module, opts("reject")).unwrap_err();
    match &err {
        RuntimeError::Configure { plugin, reason } => {
            assert_eq!(plugin, "test.plugin");
            assert!(reason.contains("returned false"), "{reason}");
        }
        other => panic!("expected Configure, got {other}"),
    }
}

#[test]
fn plugins_with_same_module_and_vm_id_share_a_vm_with_separate_root_contexts() {
    let e = env();
    let module = e.module(&wat("lifecycle"));
    let mut a = opts("first");
    a.vm_id = "shared".into();
    let mut b = opts("second");
    b.vm_id = "shared".into();
    let first = Plugin::load(&e.runtime, &module, a).unwrap();
    e.host.clear();
    let second = Plugin::load(&e.runtime, &module, b).unwrap();
    // The canary ran in a throwaway VM (its own _initialize); then the running VM got a second
    // root context (id 2) without being started again.
    let msgs = e.host.messages();
    assert_eq!(
        msgs.iter().filter(|m| *m == "cb:initialize").count(),
        1,
        "{msgs:?}"
    );
    let tail = &msgs[msgs.len() - 6..];
    assert_eq!(
        tail,
        [
            "cb:create=2",
            "parent=0",
            "root_id=root",
            "cb:vm_start=2",
            "cb:configure=2",
            "config=second"
        ]
    );
    // Streams of each plugin hang off their own root context.
    e.host.clear();
    drop(first.new_stream(StreamInfo::default()));
    drop(second.new_stream(StreamInfo::default()));
    let parents: Vec<_> = e.host.trace("parent=");
    assert_eq!(parents, ["parent=1", "parent=2"]);
}

#[test]
fn command_module_ending_in_proc_exit_zero_starts() {
    let e = env();
    let mut o = opts("");
    o.env = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
    let plugin = e.plugin_with(&wat("command"), o);
    assert_eq!(plugin.module().entry_point(), EntryPoint::Start);
    assert!(
        e.host.logged("start env-count=2"),
        "{:?}",
        e.host.messages()
    );
}

#[test]
fn host_calls_other_than_log_are_refused_during_initialize() {
    let e = env();
    let module = e.module(&wat("restricted_start"));
    let err = Plugin::load(&e.runtime, &module, opts("")).unwrap_err();
    assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
    assert!(err.to_string().contains("restricted_callback"), "{err}");
}
