//! One structured line per request on the `access` tracing target, plus the process's log setup.
//!
//! The proxy emits the event only when the access log is on, so `--access-log off` costs one branch.
//! Formatting (JSON or text) is done by the subscriber's access layer, on stdout; operational logs go
//! to stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal as _;

use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::AccessLogFormat;

/// The tracing target of access log lines.
pub const TARGET: &str = "access";

/// What one access log line says about a request.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub upstream: &'a str,
    pub duration_us: u64,
    pub bytes_sent: usize,
    pub bytes_received: usize,
}

/// Emits one access log line. Callers check [`enabled`] first so nothing is built when it is off.
pub fn emit(r: &AccessRecord<'_>) {
    tracing::info!(
        target: TARGET,
        method = r.method,
        path = r.path,
        host = r.host,
        status = r.status,
        route = r.route,
        upstream = r.upstream,
        duration_us = r.duration_us,
        bytes_sent = r.bytes_sent,
        bytes_received = r.bytes_received,
    );
}

/// Installs the global subscriber: operational logs to stderr (`RUST_LOG`), access lines to stdout.
pub fn init_logging(access: AccessLogFormat) {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ops = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .with_filter(FilterFn::new(|m| m.target() != TARGET))
        .with_filter(env);
    let only_access = FilterFn::new(|m| m.target() == TARGET);
    let access_layer = match access {
        AccessLogFormat::Off => None,
        AccessLogFormat::Json => Some(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stdout)
                .with_filter(only_access)
                .boxed(),
        ),
        AccessLogFormat::Text => Some(
            fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(std::io::stdout().is_terminal())
                .with_target(false)
                .with_filter(only_access)
                .boxed(),
        ),
    };
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::registry()
        .with(ops)
        .with(access_layer)
        .try_init();
}
