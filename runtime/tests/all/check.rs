use wasmgate_runtime::*;

use crate::support::*;

#[test]
fn check_reports_abi_entry_point_allocator_and_imports() {
    let report = check_module(
        &wat("lifecycle"),
        &CheckOptions {
            configuration: b"{}".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.abi_version, AbiVersion::V0_2_1);
    assert_eq!(report.entry_point, EntryPoint::Initialize { main: true });
    assert_eq!(report.allocator, "malloc");
    assert!(report.imports.iter().all(|i| i.supported));
    assert!(report.logs.iter().any(|(_, m)| m == "config={}"));
    let text = report.to_string();
    assert!(text.contains("ABI version: 0.2.1"), "{text}");
    assert!(text.contains("env.proxy_log"), "{text}");
    assert!(text.contains("proxy_on_configure"), "{text}");
}

#[test]
fn check_names_unknown_imports_and_refused_configurations() {
    let err = check_module(&wat("unknown_import"), &CheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("env.proxy_frobnicate"), "{err}");
    let err = check_module(
        &wat("lifecycle"),
        &CheckOptions {
            configuration: b"reject".to_vec(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err.error, RuntimeError::Configure { .. }), "{err}");
}
