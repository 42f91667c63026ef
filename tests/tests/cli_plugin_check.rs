//! `wasmgate plugin check`: the real binary on our built plugins, hostile configurations, a
//! module with an unknown import, and bytes that are not Wasm.

use std::path::PathBuf;

use wasmgate_e2e::cli::wasmgate;

fn dist(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(name)
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

#[test]
fn every_built_plugin_passes_with_its_abi_entry_point_and_allocator() {
    let mut checked = 0;
    for entry in std::fs::read_dir(dist("")).expect("plugins/dist") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = wasmgate(["plugin".as_ref(), "check".as_ref(), path.as_os_str()]);
        assert_eq!(out.code, 0, "{name}: {}", out.all());
        let abi = if name == "headers-abi010.wasm" {
            "0.1.0"
        } else {
            "0.2.1"
        };
        assert_eq!(
            line(&out.stdout, "ABI version:"),
            format!("ABI version: {abi}")
        );
        let entry = if name == "headers-abi010.wasm" {
            "_start"
        } else {
            "_initialize"
        };
        assert_eq!(
            line(&out.stdout, "entry point:"),
            format!("entry point: {entry}")
        );
        assert_eq!(
            line(&out.stdout, "allocator:"),
            "allocator:   proxy_on_memory_allocate",
            "{name}"
        );
        // Every import our SDK plugins use is supported and listed.
        assert!(out.stdout.contains("  env.proxy_log\n"), "{name}");
        assert!(
            !out.stdout.contains("UNSUPPORTED"),
            "{name}: {}",
            out.stdout
        );
        assert!(
            out.stdout
                .ends_with("result:      OK, the plugin starts and accepts its configuration\n"),
            "{name}: {}",
            out.stdout
        );
        checked += 1;
    }
    assert_eq!(checked, 6, "all plugins/dist modules");
}

#[test]
fn the_configuration_reaches_the_plugin() {
    let config = r#"{"basic_auth_rules":[{"prefix":"/productpage","request_methods":["GET"],"credentials":["ok:test"]}]}"#;
    let out = wasmgate([
        "plugin".as_ref(),
        "check".as_ref(),
        dist("basic-auth.wasm").as_os_str(),
        "--config".as_ref(),
        config.as_ref(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("[Info] basic-auth: 1 rule(s), realm \"istio\""),
        "{}",
        out.stdout
    );

    // The same from a WasmPlugin file, as the gateway would configure it.
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("basic-auth.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n\
         metadata: {name: basic-auth, namespace: istio-system}\n\
         spec:\n  url: oci://ghcr.io/istio-ecosystem/wasm-extensions/basic_auth:1.12.0\n  phase: AUTHN\n\
         \x20 pluginConfig:\n    realm: bookinfo\n    basic_auth_rules:\n\
         \x20   - {prefix: /productpage, request_methods: [GET, POST], credentials: [\"ok:test\", \"YWRtaW4zOmFkbWluMw==\"]}\n\
         \x20   - {prefix: /api, request_methods: [GET], credentials: [\"ok:test\"]}\n",
    )
    .unwrap();
    let out = wasmgate([
        "plugin".as_ref(),
        "check".as_ref(),
        dist("basic-auth.wasm").as_os_str(),
        "--from-wasmplugin".as_ref(),
        yaml.as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("[Info] basic-auth: 2 rule(s), realm \"bookinfo\""),
        "{}",
        out.stdout
    );
}

#[test]
fn a_refused_configuration_fails_naming_configure_and_shows_the_plugin_log() {
    let out = wasmgate([
        "plugin".as_ref(),
        "check".as_ref(),
        dist("hostile.wasm").as_os_str(),
        "--config".as_ref(),
        r#"{"configure_returns": false}"#.as_ref(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("the plugin would not run: configuration of plugin check refused"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("proxy_on_configure"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("[Warn] hostile: refusing the configuration as asked"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failing_vm_start_fails_naming_the_start() {
    let out = wasmgate([
        "plugin".as_ref(),
        "check".as_ref(),
        dist("hostile.wasm").as_os_str(),
        "--vm-config".as_ref(),
        r#"{"vm_start_returns": false}"#.as_ref(),
        "--name".as_ref(),
        "edge.hostile".as_ref(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("start of plugin edge.hostile failed"),
        "{}",
        out.stderr
    );
}

/// A minimal proxy-wasm module (ABI marker, memory, malloc) that imports a host function no
/// proxy provides: `env.proxy_frobnicate`.
fn module_with_unknown_import() -> Vec<u8> {
    fn name(s: &str) -> Vec<u8> {
        let mut v = vec![u8::try_from(s.len()).unwrap()];
        v.extend_from_slice(s.as_bytes());
        v
    }
    fn section(id: u8, content: Vec<u8>) -> Vec<u8> {
        let mut v = vec![id, u8::try_from(content.len()).unwrap()];
        v.extend(content);
        v
    }
    const FUNC: u8 = 0x60;
    const I32: u8 = 0x7f;
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = (i32) -> i32, 1 = () -> ().
    m.extend(section(1, vec![2, FUNC, 1, I32, 1, I32, FUNC, 0, 0]));
    // Import env.proxy_frobnicate : type 0 (function 0).
    let mut import = vec![1];
    import.extend(name("env"));
    import.extend(name("proxy_frobnicate"));
    import.extend([0x00, 0]);
    m.extend(section(2, import));
    // Functions 1 (malloc, type 0) and 2 (ABI marker, type 1).
    m.extend(section(3, vec![2, 0, 1]));
    // One memory of one page.
    m.extend(section(5, vec![1, 0x00, 1]));
    let mut exports = vec![3];
    exports.extend(name("memory"));
    exports.extend([0x02, 0]);
    exports.extend(name("malloc"));
    exports.extend([0x00, 1]);
    exports.extend(name("proxy_abi_version_0_2_1"));
    exports.extend([0x00, 2]);
    m.extend(section(7, exports));
    // Bodies: malloc returns 1024 (i32.const 1024, LEB128 80 08); the marker does nothing.
    m.extend(section(
        10,
        vec![2, 5, 0, 0x41, 0x80, 0x08, 0x0b, 2, 0, 0x0b],
    ));
    m
}

#[test]
fn an_unknown_import_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frobnicate.wasm");
    std::fs::write(&path, module_with_unknown_import()).unwrap();
    let out = wasmgate(["plugin".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("link failed: unknown imports env.proxy_frobnicate"),
        "{}",
        out.stderr
    );
}

#[test]
fn bytes_that_are_not_wasm_and_missing_files_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.wasm");
    std::fs::write(&path, b"#!/bin/sh\necho this is not a module\n").unwrap();
    let out = wasmgate(["plugin".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("compile failed"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let out = wasmgate([
        "plugin".as_ref(),
        "check".as_ref(),
        dir.path().join("missing.wasm").as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("missing.wasm"), "{}", out.stderr);

    // A usage error is exit 2 (clap), distinct from "the plugin would not run".
    let out = wasmgate(["plugin", "check", "x.wasm", "--env", "NO_EQUALS_SIGN"]);
    assert_eq!(out.code, 2, "{}", out.all());
}
