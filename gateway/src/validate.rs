//! `wasmgate validate DIR`: every problem of a config directory, or a one-line summary.

use std::path::Path;
use std::process::ExitCode;

use wasmgate_conf::ConfigStore;

/// Prints every warning (`warning: ...` on stderr: ignored fields, routes a listener's
/// `allowedRoutes` refuses, references without a ReferenceGrant, ...), then every problem (one per
/// line, naming file, document, resource and field) and returns 1, or a summary and returns 0.
pub fn run(dir: &Path) -> ExitCode {
    let (s, report) = ConfigStore::new().reload(dir);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            println!("{e}");
        }
        eprintln!("{}: {} problem(s)", dir.display(), report.errors.len());
        return ExitCode::FAILURE;
    }
    println!(
        "{}: valid: {} Gateway(s), {} HTTPRoute(s), {} Service(s), {} Secret(s), {} WasmPlugin(s), \
         {} ReferenceGrant(s), {} Namespace(s), {} ignored document(s)",
        dir.display(),
        s.gateways.len(),
        s.routes.len(),
        s.services.len(),
        s.secrets.len(),
        s.wasm_plugins.len(),
        s.reference_grants.len(),
        s.namespaces.len(),
        s.ignored.len(),
    );
    ExitCode::SUCCESS
}
