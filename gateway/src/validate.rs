//! `wasmgate validate DIR`: every problem of a config directory, or a one-line summary.

use std::path::Path;
use std::process::ExitCode;

/// Prints every problem (one per line, naming file, document, resource and field) and returns 1,
/// or prints a summary and returns 0.
pub fn run(dir: &Path) -> ExitCode {
    match wasmgate_conf::validate_dir(dir) {
        Ok(s) => {
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
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("{}: {} problem(s)", dir.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}
