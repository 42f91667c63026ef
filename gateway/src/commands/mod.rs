//! The user tools: `wasmgate plugin check`, `push`, `pull` and `convert`. Each is a thin wrapper
//! over the library that does the work (`wasmgate-runtime`'s `check_module`, `wasmgate-fetcher`'s
//! `Fetcher`, `wasmgate-conf`'s `convert_service_mesh_extensions`), so what a tool says is what
//! the gateway would do.
//!
//! Exit status: 0 on success, 1 when the command ran and failed (a plugin that would not run, a
//! refused push, a checksum mismatch, an invalid file), 2 for a usage error (clap's).
//! Results go to stdout; errors and notes to stderr.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use wasmgate_fetcher::{DockerConfig, FetcherOptions};

pub mod convert;
pub mod plugin_check;
pub mod pull;
pub mod push;

/// `wasmgate plugin ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum PluginCommand {
    /// Load, link, start and configure a module exactly as the gateway would, and describe it.
    ///
    /// Prints the module's sha256, ABI version, entry point, allocator, imports (unsupported
    /// ones marked), exports and what it logged, and exits 0 when the plugin would run; exits 1
    /// naming the stage that refused it (compile, ABI, link, instantiate, start, configure).
    Check(plugin_check::CheckArgs),
}

/// Runs `wasmgate plugin <command>`.
pub fn plugin(command: &PluginCommand) -> ExitCode {
    match command {
        PluginCommand::Check(args) => plugin_check::run(args),
    }
}

/// How the registry is reached; shared by `push` and `pull`.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registries (`host[:port]`, comma separated, `*` for all) whose TLS certificates are not
    /// verified and which may be spoken to over plain HTTP when they do not speak TLS.
    #[arg(
        long,
        env = "WASMGATE_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "LIST"
    )]
    pub insecure_registries: Vec<String>,
    /// PEM bundle of root certificates trusted in addition to the system roots.
    #[arg(long, env = "WASMGATE_CA_BUNDLE", value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
}

/// Registry credentials given on the command line. Without them, the entry for the registry in
/// `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`) is used, else none.
#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
    /// User name for the registry (basic authentication, or the token request of a bearer-token
    /// registry); needs --password-stdin. Without it: the registry's entry in
    /// `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), else anonymous.
    #[arg(long, requires = "password_stdin", value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from standard input (all of it, trailing newlines removed, as
    /// `docker login --password-stdin`). It is never printed or logged.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

impl CredentialArgs {
    /// The credentials for `reference`'s registry, or `None` to fall back to the docker config
    /// file. Reads standard input when `--password-stdin` is set.
    fn load(&self, reference: &str) -> Result<Option<DockerConfig>, String> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .map_err(|e| format!("reading the password from standard input: {e}"))?;
        // As `docker login --password-stdin`: `echo pw |` and a file with a final newline work.
        let password = password.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err("--password-stdin: standard input holds no password".to_owned());
        }
        Ok(Some(DockerConfig::basic(
            &registry_of(reference),
            user,
            password,
        )))
    }
}

/// Fetcher options for a one-shot command: Istio's defaults, the given cache directory and the
/// registry flags. Credentials come from the docker config file unless given explicitly.
fn fetcher_options(cache_dir: PathBuf, registry: &RegistryArgs) -> FetcherOptions {
    let mut opts = FetcherOptions::new(cache_dir);
    opts.insecure_registries = registry
        .insecure_registries
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    opts.ca_bundle = registry.ca_bundle.clone();
    opts
}

/// The registry host (`host[:port]`) of an OCI reference, as docker names it: the first path
/// component when it looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
fn registry_of(reference: &str) -> String {
    let rest = reference.strip_prefix("oci://").unwrap_or(reference);
    match rest.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_owned(),
        _ => "docker.io".to_owned(),
    }
}

/// A private scratch directory (the fetcher's cache for a one-shot command), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(command: &str) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "wasmgate-{command}-{}-{nanos:09}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A single-threaded runtime: the tools do one network operation at a time.
fn tokio_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))
}

/// Logs of the libraries to stderr, `warn` and above unless `RUST_LOG` says otherwise: a tool's
/// output is its result, not the fetcher's progress.
pub fn init_tool_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Prints `wasmgate <command>: <message>` on stderr and returns exit status 1.
fn fail(command: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("wasmgate {command}: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_of_references() {
        assert_eq!(registry_of("oci://127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/acme/auth:v1"), "ghcr.io");
        assert_eq!(registry_of("localhost/x:1"), "localhost");
        assert_eq!(registry_of("oci://library/nginx:1"), "docker.io");
        assert_eq!(registry_of("nginx"), "docker.io");
    }
}
