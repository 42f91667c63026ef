//! `wasmgate convert FILE`: the WasmPlugin (`extensions.istio.io/v1alpha1`) equivalent of every
//! Maistra `ServiceMeshExtension` in a file, translated by the same code that serves them
//! (`wasmgate_conf::convert_service_mesh_extensions`).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

const COMMAND: &str = "convert";

#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// YAML file holding ServiceMeshExtension resources (`-` reads standard input). Documents of
    /// other kinds are skipped.
    pub file: PathBuf,
}

/// Prints the WasmPlugin YAML on stdout and a deprecation note on stderr; or every problem
/// (naming file, document, resource and field) on stderr and exits 1.
pub fn run(args: &ConvertArgs) -> ExitCode {
    let (name, text) = match read(&args.file) {
        Ok(t) => t,
        Err(e) => return super::fail(COMMAND, e),
    };
    match wasmgate_conf::convert_service_mesh_extensions(Path::new(&name), &text) {
        Ok(yaml) => {
            print!("{yaml}");
            // One top-level `kind:` line per document.
            let count = yaml.lines().filter(|l| *l == "kind: WasmPlugin").count();
            eprintln!(
                "wasmgate convert: ServiceMeshExtension (maistra.io) is deprecated; {name}: \
                 {count} converted to WasmPlugin (extensions.istio.io/v1alpha1) above"
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("wasmgate convert: {name}: {} problem(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

/// `(name used in messages, contents)`.
fn read(file: &Path) -> Result<(String, String), String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading standard input: {e}"))?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((file.display().to_string(), text))
}
