use wasmgate_runtime::*;

use crate::support::*;

#[test]
fn abi_0_1_0_uses_two_argument_callbacks_and_answers_missing_headers_with_empty_ok() {
    let e = env();
    let mut o = opts("plugin-cfg");
    o.vm_configuration = b"vm-cfg".to_vec();
    let plugin = e.plugin_with(&wat("abi_010"), o);
    assert_eq!(plugin.module().abi_version(), AbiVersion::V0_1_0);
    assert_eq!(plugin.module().allocator(), "malloc");
    assert!(e.host.logged("vm_config=vm-cfg"), "{:?}", e.host.messages());
    assert!(e.host.logged("config=plugin-cfg"));

    let mut stream = plugin.new_stream(StreamInfo::default());
    let mut headers = request_headers();
    let outcome = stream.on_request_headers(&mut headers, true);
    // The guest paused, but called proxy_continue_request inside the callback.
    assert_eq!(outcome.action, Action::Continue);
    let msgs = e.host.messages();
    let at = msgs
        .iter()
        .position(|m| m == "headers=7")
        .expect("callback ran");
    assert_eq!(
        msgs[at + 1..at + 5],
        ["status=0", "len=0", "status=0", "status=0"]
    );
    let outcome = stream.on_response_headers(&mut response_headers(), false);
    assert_eq!(outcome.action, Action::Continue);
}

#[test]
fn abi_0_2_0_answers_missing_headers_with_not_found() {
    let plugin = shared_plugin("abi_020", opts(""));
    assert_eq!(plugin.module().abi_version(), AbiVersion::V0_2_0);
    assert_eq!(plugin.module().entry_point(), EntryPoint::Start);
    let mut stream = plugin.new_stream(StreamInfo::default());
    stream.on_request_headers(&mut request_headers(), true);
    let msgs = shared_env().host.messages();
    assert!(
        msgs.windows(2).any(|w| w == ["eos=1", "status=1"]),
        "{msgs:?}"
    );
}

#[test]
fn abi_0_2_1_is_detected() {
    assert_eq!(shared_module("hostcalls").abi_version(), AbiVersion::V0_2_1);
    assert_eq!(
        shared_module("lifecycle").entry_point(),
        EntryPoint::Initialize { main: true }
    );
}

#[test]
fn missing_abi_marker_is_refused_at_load() {
    let err = env()
        .runtime
        .load_module(&wat("missing_marker"))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Abi(_)), "{err}");
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"), "{err}");
}

#[test]
fn unknown_imports_are_refused_at_load_by_name() {
    let err = env()
        .runtime
        .load_module(&wat("unknown_import"))
        .unwrap_err();
    match &err {
        RuntimeError::Link { missing } => {
            assert_eq!(missing, &["env.proxy_frobnicate", "my_host.magic"]);
        }
        other => panic!("expected a link error, got {other}"),
    }
    assert!(err.to_string().contains("env.proxy_frobnicate"));
}

#[test]
fn missing_allocator_is_refused() {
    let err = env().runtime.load_module(&wat("no_malloc")).unwrap_err();
    assert!(err.to_string().contains("malloc"), "{err}");
}

#[test]
fn callback_with_wrong_signature_is_refused_at_load() {
    let err = env()
        .runtime
        .load_module(&wat("bad_signature"))
        .unwrap_err();
    assert!(
        err.to_string().contains("proxy_on_request_headers"),
        "{err}"
    );
}

#[test]
fn invalid_bytes_are_a_compile_error() {
    let err = env()
        .runtime
        .load_module(b"\0asm\x01\0\0\0garbage")
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Compile(_)), "{err}");
}

/// Every import real SDKs declare — the whole issue list, version-specific ones, emscripten's,
/// and WASI preview 1 under both module names — links, with the signatures SDKs use.
#[test]
fn every_host_function_and_wasi_call_links() {
    const I: &str = "i32";
    let env_fns: &[(&str, &[&str], &[&str])] = &[
        ("proxy_log", &[I, I, I], &[I]),
        ("proxy_get_log_level", &[I], &[I]),
        ("proxy_get_current_time_nanoseconds", &[I], &[I]),
        ("proxy_set_tick_period_milliseconds", &[I], &[I]),
        ("proxy_get_property", &[I, I, I, I], &[I]),
        ("proxy_set_property", &[I, I, I, I], &[I]),
        ("proxy_get_buffer_bytes", &[I, I, I, I, I], &[I]),
        ("proxy_set_buffer_bytes", &[I, I, I, I, I], &[I]),
        ("proxy_get_buffer_status", &[I, I, I], &[I]),
        ("proxy_get_header_map_pairs", &[I, I, I], &[I]),
        ("proxy_set_header_map_pairs", &[I, I, I], &[I]),
        ("proxy_get_header_map_size", &[I, I], &[I]),
        ("proxy_get_header_map_value", &[I, I, I, I, I], &[I]),
        ("proxy_add_header_map_value", &[I, I, I, I, I], &[I]),
        ("proxy_replace_header_map_value", &[I, I, I, I, I], &[I]),
        ("proxy_remove_header_map_value", &[I, I, I], &[I]),
        ("proxy_send_local_response", &[I, I, I, I, I, I, I, I], &[I]),
        ("proxy_continue_stream", &[I], &[I]),
        ("proxy_close_stream", &[I], &[I]),
        ("proxy_set_effective_context", &[I], &[I]),
        ("proxy_done", &[], &[I]),
        ("proxy_http_call", &[I, I, I, I, I, I, I, I, I, I], &[I]),
        (
            "proxy_grpc_call",
            &[I, I, I, I, I, I, I, I, I, I, I, I],
            &[I],
        ),
        ("proxy_grpc_stream", &[I, I, I, I, I, I, I, I, I], &[I]),
        ("proxy_grpc_send", &[I, I, I, I], &[I]),
        ("proxy_grpc_cancel", &[I], &[I]),
        ("proxy_grpc_close", &[I], &[I]),
        ("proxy_get_status", &[I, I, I], &[I]),
        ("proxy_get_shared_data", &[I, I, I, I, I], &[I]),
        ("proxy_set_shared_data", &[I, I, I, I, I], &[I]),
        ("proxy_register_shared_queue", &[I, I, I], &[I]),
        ("proxy_resolve_shared_queue", &[I, I, I, I, I], &[I]),
        ("proxy_enqueue_shared_queue", &[I, I, I], &[I]),
        ("proxy_dequeue_shared_queue", &[I, I, I], &[I]),
        ("proxy_define_metric", &[I, I, I, I], &[I]),
        ("proxy_increment_metric", &[I, "i64"], &[I]),
        ("proxy_record_metric", &[I, "i64"], &[I]),
        ("proxy_get_metric", &[I, I], &[I]),
        ("proxy_call_foreign_function", &[I, I, I, I, I, I], &[I]),
        ("proxy_get_configuration", &[I, I], &[I]),
        ("proxy_continue_request", &[], &[I]),
        ("proxy_continue_response", &[], &[I]),
        ("proxy_clear_route_cache", &[], &[I]),
        ("emscripten_notify_memory_growth", &[I], &[]),
        ("pthread_equal", &[I, I], &[I]),
    ];
    const L: &str = "i64";
    let wasi_fns: &[(&str, &[&str], &[&str])] = &[
        ("args_get", &[I, I], &[I]),
        ("args_sizes_get", &[I, I], &[I]),
        ("clock_res_get", &[I, I], &[I]),
        ("clock_time_get", &[I, L, I], &[I]),
        ("environ_get", &[I, I], &[I]),
        ("environ_sizes_get", &[I, I], &[I]),
        ("fd_advise", &[I, L, L, I], &[I]),
        ("fd_allocate", &[I, L, L], &[I]),
        ("fd_close", &[I], &[I]),
        ("fd_datasync", &[I], &[I]),
        ("fd_fdstat_get", &[I, I], &[I]),
        ("fd_fdstat_set_flags", &[I, I], &[I]),
        ("fd_fdstat_set_rights", &[I, L, L], &[I]),
        ("fd_filestat_get", &[I, I], &[I]),
        ("fd_filestat_set_size", &[I, L], &[I]),
        ("fd_filestat_set_times", &[I, L, L, I], &[I]),
        ("fd_pread", &[I, I, I, L, I], &[I]),
        ("fd_prestat_dir_name", &[I, I, I], &[I]),
        ("fd_prestat_get", &[I, I], &[I]),
        ("fd_pwrite", &[I, I, I, L, I], &[I]),
        ("fd_read", &[I, I, I, I], &[I]),
        ("fd_readdir", &[I, I, I, L, I], &[I]),
        ("fd_renumber", &[I, I], &[I]),
        ("fd_seek", &[I, L, I, I], &[I]),
        ("fd_sync", &[I], &[I]),
        ("fd_tell", &[I, I], &[I]),
        ("fd_write", &[I, I, I, I], &[I]),
        ("path_create_directory", &[I, I, I], &[I]),
        ("path_filestat_get", &[I, I, I, I, I], &[I]),
        ("path_filestat_set_times", &[I, I, I, I, L, L, I], &[I]),
        ("path_link", &[I, I, I, I, I, I, I], &[I]),
        ("path_open", &[I, I, I, I, I, L, L, I, I], &[I]),
        ("path_readlink", &[I, I, I, I, I, I], &[I]),
        ("path_remove_directory", &[I, I, I], &[I]),
        ("path_rename", &[I, I, I, I, I, I], &[I]),
        ("path_symlink", &[I, I, I, I, I], &[I]),
        ("path_unlink_file", &[I, I, I], &[I]),
        ("poll_oneoff", &[I, I, I, I], &[I]),
        ("proc_exit", &[I], &[]),
        ("proc_raise", &[I], &[I]),
        ("random_get", &[I, I], &[I]),
        ("sched_yield", &[], &[I]),
        ("sock_accept", &[I, I, I], &[I]),
        ("sock_recv", &[I, I, I, I, I, I], &[I]),
        ("sock_send", &[I, I, I, I, I], &[I]),
        ("sock_shutdown", &[I, I], &[I]),
    ];
    let sig = |p: &[&str], r: &[&str]| {
        let mut s = String::new();
        if !p.is_empty() {
            s += &format!(" (param {})", p.join(" "));
        }
        if !r.is_empty() {
            s += &format!(" (result {})", r.join(" "));
        }
        s
    };
    let mut imports = String::new();
    for (name, p, r) in env_fns {
        imports += &format!("(import \"env\" \"{name}\" (func{}))\n", sig(p, r));
    }
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        for (name, p, r) in wasi_fns {
            imports += &format!("(import \"{module}\" \"{name}\" (func{}))\n", sig(p, r));
        }
    }
    let src = format!(
        "(module {imports} (memory (export \"memory\") 1) \
         (func (export \"malloc\") (param i32) (result i32) (i32.const 1024)) \
         (func (export \"proxy_abi_version_0_2_1\")))"
    );
    let module = env()
        .runtime
        .load_module(src.as_bytes())
        .expect("every import links");
    assert_eq!(module.imports().len(), env_fns.len() + 2 * wasi_fns.len());
    assert!(module.imports().iter().all(|i| i.supported));
}
