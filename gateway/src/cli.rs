//! The command line. Every `run` flag can also come from a `WASMGATE_*` environment variable.
//!
//! Later subcommands (`plugin check`, `push`, `pull`, `convert`) are added as new [`Command`]
//! variants with their own argument structs; `main.rs` dispatches on the variant.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::limits;

/// wasmgate: a Wasm-extensible HTTP ingress gateway configured by Kubernetes Gateway API YAML.
#[derive(Debug, Parser)]
#[command(name = "wasmgate", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic as configured by the YAML files in a directory, reloading on change.
    Run(RunArgs),
    /// Check a config directory: print every problem and exit 1, or a summary and exit 0.
    Validate(ValidateArgs),
    /// Run a self-contained gateway with an embedded config and an in-process upstream.
    Demo(DemoArgs),
    /// Work with plugin modules: `plugin check` says whether a module runs here, and why not.
    #[command(subcommand)]
    Plugin(crate::commands::PluginCommand),
    /// Package a Wasm module as an OCI artifact or image, push it, and print the manifest digest.
    Push(crate::commands::push::PushArgs),
    /// Fetch a module as the gateway would (oci, http(s), file), verify it, and print its digests.
    Pull(crate::commands::pull::PullArgs),
    /// Print the WasmPlugin equivalent of every ServiceMeshExtension (maistra.io) in a file.
    Convert(crate::commands::convert::ConvertArgs),
}

/// Arguments of `wasmgate run` (and the serving half of `wasmgate demo`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Directory of `*.yaml`/`*.yml` resources (Gateway, HTTPRoute, Service, Secret, WasmPlugin).
    #[arg(long, env = "WASMGATE_CONFIG_DIR")]
    pub config_dir: PathBuf,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags shared by `run` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the Gateway listeners bind to (their ports come from the Gateway resources).
    #[arg(long, env = "WASMGATE_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Address of the admin server (/ready, /healthz, /metrics, /config_dump).
    #[arg(long, env = "WASMGATE_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Worker threads, each with its own event loop, plugin VMs and upstream pool (default: one
    /// per core).
    #[arg(long, env = "WASMGATE_THREADS")]
    pub threads: Option<usize>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT before exiting.
    #[arg(long, env = "WASMGATE_GRACE_PERIOD", default_value_t = limits::DEFAULT_GRACE_PERIOD_SECS)]
    pub grace_period: u64,
    /// Access log format: one line per request on the `access` tracing target.
    #[arg(long, env = "WASMGATE_ACCESS_LOG", value_enum, default_value_t = AccessLogFormat::Text)]
    pub access_log: AccessLogFormat,
    /// Extra labels of this gateway, `key=value`, matched by WasmPlugin selectors (repeatable).
    #[arg(long = "label", env = "WASMGATE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Default upstream timeout for routes without `timeouts`, e.g. `15s`, `500ms`, `0` (none).
    #[arg(long, env = "WASMGATE_UPSTREAM_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// How long a client's HTTP/1 connection may take to send its next request header, counted
    /// from the end of the previous request (native engine; `--http1-engine pingora` keeps
    /// pingora's 60 s per read), e.g. `60s`, `5m`.
    #[arg(long, env = "WASMGATE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// Seconds between DNS re-resolutions of backend names.
    #[arg(long, env = "WASMGATE_DNS_REFRESH", default_value_t = limits::DEFAULT_DNS_REFRESH_SECS)]
    pub dns_refresh: u64,
    /// Plugin module cache (default: `$XDG_CACHE_HOME/wasmgate`, else `~/.cache/wasmgate`, else
    /// `wasmgate-cache` in the temp dir).
    #[arg(long, env = "WASMGATE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Registries (`host[:port]`, comma separated, `*` = all) reached without TLS verification
    /// or over plain HTTP.
    #[arg(long, env = "WASMGATE_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
    /// Extra PEM root certificates for registries and HTTPS module URLs.
    #[arg(long, env = "WASMGATE_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Largest plugin module accepted, in bytes (Istio's 256 MiB default).
    #[arg(long, env = "WASMGATE_MAX_MODULE_SIZE", default_value_t = limits::DEFAULT_MAX_MODULE_SIZE)]
    pub max_module_size: u64,
    /// What serves HTTP/1 connections: wasmgate's own proxy loop, or pingora-proxy (which always
    /// serves HTTP/2 and h2c). Both run the same routing, plugins and errors.
    #[arg(long, env = "WASMGATE_HTTP1_ENGINE", value_enum, default_value_t = Http1Engine::Native)]
    pub http1_engine: Http1Engine,
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The config directory to check.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Port of the demo Gateway listener.
    #[arg(long, env = "WASMGATE_DEMO_PORT", default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Http1Engine {
    /// wasmgate's own HTTP/1 loop, server session and upstream client (faster; see `server/h1/`).
    Native,
    /// pingora-proxy, as for HTTP/2.
    Pingora,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLogFormat {
    Json,
    Text,
    Off,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty label key in {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Parses `15s`, `500ms`, `2m`, `1h`, or a bare number of seconds. `0` means no timeout.
/// [`parse_duration`], refusing zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("duration {s:?} must be more than 0")),
        d => Ok(d),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "wasmgate",
            "run",
            "--config-dir",
            "/tmp/x",
            "--label",
            "a=b",
            "--threads",
            "2",
            "--access-log",
            "json",
            "--upstream-timeout",
            "250ms",
            "--idle-timeout",
            "2m",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.serve.labels, vec![("a".into(), "b".into())]);
        assert_eq!(args.serve.threads, Some(2));
        assert_eq!(args.serve.access_log, AccessLogFormat::Json);
        assert_eq!(args.serve.upstream_timeout, Duration::from_millis(250));
        assert_eq!(args.serve.idle_timeout, Duration::from_secs(120));
    }

    #[test]
    fn a_zero_idle_timeout_is_refused() {
        let err =
            Cli::try_parse_from(["wasmgate", "run", "--idle-timeout", "0s"]).expect_err("refused");
        assert!(err.to_string().contains("must be more than 0"), "{err}");
    }
}
