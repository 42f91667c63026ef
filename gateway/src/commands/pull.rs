//! `wasmgate pull URL`: fetches a module through `Fetcher::fetch`, the gateway's own code (same
//! schemes, formats, checksum rules, credentials and limits), and prints its digests.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wasmgate_fetcher::{Fetcher, Module, ModuleRequest};

use super::{CredentialArgs, RegistryArgs, ScratchDir, fail, fetcher_options, tokio_runtime};

const COMMAND: &str = "pull";

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// The module's URL as a WasmPlugin writes it: `oci://` (or no scheme), `http://`,
    /// `https://` or `file://`.
    pub url: String,
    /// Expected checksum, as the WasmPlugin's `sha256` (`sha256:` prefix optional). For OCI the
    /// manifest digest, or the sha256 of the module itself; for HTTP and files the sha256 of the
    /// (un-gzipped, un-tarred) module. A mismatch fails, naming both digests.
    #[arg(long, value_name = "DIGEST")]
    pub sha256: Option<String>,
    /// Write the module to this file (only after it has been verified).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Module cache to use, as `wasmgate run`'s (a module already there is not downloaded
    /// again). Default: a temporary cache, removed on exit, so the module is always fetched.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Fetches, verifies, optionally writes the module, and prints its digests on stdout.
pub fn run(args: &PullArgs) -> ExitCode {
    match pull(args) {
        Ok(module) => {
            println!("url:             {}", module.url);
            println!("module sha256:   {}", module.wasm_sha256);
            if let Some(digest) = &module.manifest_digest {
                println!("manifest digest: {digest}");
            }
            println!("size:            {} bytes", module.bytes.len());
            if let Some(out) = &args.output {
                println!("written to:      {}", out.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(COMMAND, e),
    }
}

fn pull(args: &PullArgs) -> Result<Module, String> {
    let is_oci = !["http://", "https://", "file://"]
        .iter()
        .any(|scheme| args.url.starts_with(scheme));
    if args.credentials.username.is_some() && !is_oci {
        return Err("--username applies to oci:// URLs only".to_owned());
    }
    let mut request = ModuleRequest::new(&args.url, "cli.pull");
    request.sha256 = args
        .sha256
        .as_deref()
        .map(|s| s.trim().trim_start_matches("sha256:").to_ascii_lowercase());
    request.pull_secret = args.credentials.load(&args.url)?;

    let scratch;
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => {
            scratch = ScratchDir::new(COMMAND)?;
            scratch.0.clone()
        }
    };
    let fetcher =
        Fetcher::new(fetcher_options(cache_dir, &args.registry)).map_err(|e| e.to_string())?;
    let module = tokio_runtime()?
        .block_on(fetcher.fetch(&request))
        .map_err(|e| e.to_string())?;
    if let Some(out) = &args.output {
        std::fs::write(out, &module.bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(module)
}
