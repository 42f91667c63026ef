//! `wasmgate push FILE.wasm oci://REGISTRY/REPO:TAG`: packages a module as a Wasm artifact or a
//! Docker image and pushes it with `Fetcher::push`, so plugin authors need no docker, crane or
//! oras. Prints the manifest digest, the value of the WasmPlugin's `sha256`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wasmgate_fetcher::{Fetcher, PushFormat};

use super::{CredentialArgs, RegistryArgs, ScratchDir, fail, fetcher_options, tokio_runtime};

const COMMAND: &str = "push";

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// The module to push (must be a Wasm binary).
    pub file: PathBuf,
    /// Destination, `oci://REGISTRY/REPOSITORY:TAG` (`oci://` may be left out).
    pub reference: String,
    /// How to package the module.
    #[arg(long, value_enum, default_value_t = Format::Artifact)]
    pub format: Format,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OCI Wasm artifact: config `application/vnd.module.wasm.config.v1+json` and the module as
    /// a layer `application/vnd.module.wasm.content.layer.v1+wasm`, two layers as istio-agent
    /// expects.
    Artifact,
    /// Docker v2 image with one tar+gzip layer holding `plugin.wasm` (built deterministically:
    /// the same module gives the same digest).
    Image,
}

impl From<Format> for PushFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Artifact => PushFormat::Artifact,
            Format::Image => PushFormat::Image,
        }
    }
}

/// Pushes and prints `sha256:<hex>` on stdout (alone, for scripts) and a note on stderr.
pub fn run(args: &PushArgs) -> ExitCode {
    match push(args) {
        Ok(digest) => {
            println!("{digest}");
            let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
            eprintln!(
                "pushed {} to {} as {}; pin it in the WasmPlugin with `url: {}` and `sha256: {hex}`",
                args.file.display(),
                args.reference,
                format_name(args.format),
                with_scheme(&args.reference),
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(COMMAND, e),
    }
}

fn push(args: &PushArgs) -> Result<String, String> {
    let module = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let credentials = args.credentials.load(&args.reference)?;
    // The fetcher keeps a cache even when it only pushes; a throwaway one is enough.
    let scratch = ScratchDir::new(COMMAND)?;
    let fetcher = Fetcher::new(fetcher_options(scratch.0.clone(), &args.registry))
        .map_err(|e| e.to_string())?;
    tokio_runtime()?
        .block_on(fetcher.push(
            &module,
            &args.reference,
            args.format.into(),
            credentials.as_ref(),
        ))
        .map_err(|e| e.to_string())
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Artifact => "a Wasm artifact",
        Format::Image => "a Docker image",
    }
}

fn with_scheme(reference: &str) -> String {
    if reference.contains("://") {
        reference.to_owned()
    } else {
        format!("oci://{reference}")
    }
}
