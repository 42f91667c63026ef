//! Prometheus metrics on a registry of our own (never the process-global one), served by the admin
//! server at `/metrics`. Later issues add their collectors with [`Metrics::register`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Result label values of `wasmgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Every resource in the directory was accepted.
    Success,
    /// Some resources were rejected; their last good versions stay in force.
    Rejected,
    /// The reload could not run at all (e.g. the directory is unreadable).
    Error,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// All gateway metrics. Cheap to share (`Arc<Metrics>`); handles are resolved once where possible.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// Latency of every proxied request, from request header to the end of logging.
    pub request_duration: Histogram,
    reloads: IntCounterVec,
    /// Downstream connections currently open on the Gateway listeners.
    pub active_connections: IntGauge,
    /// Requests that matched no route (404), pre-resolved: the hottest error path.
    no_route: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "wasmgate_requests_total",
                "Requests by matched route and response status.",
            ),
            &["route", "code"],
        )
        .expect("static metric definition");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "wasmgate_request_duration_seconds",
                "Request latency from request headers read to response finished.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )
        .expect("static metric definition");
        let reloads = IntCounterVec::new(
            Opts::new("wasmgate_config_reloads_total", "Config reloads by result."),
            &["result"],
        )
        .expect("static metric definition");
        let active_connections = IntGauge::new(
            "wasmgate_active_connections",
            "Downstream connections currently open.",
        )
        .expect("static metric definition");
        let no_route = requests.with_label_values(&["", "404"]);
        let metrics = Self {
            registry,
            requests,
            request_duration,
            reloads,
            active_connections,
            no_route,
        };
        metrics.register(Box::new(metrics.requests.clone()));
        metrics.register(Box::new(metrics.request_duration.clone()));
        metrics.register(Box::new(metrics.reloads.clone()));
        metrics.register(Box::new(metrics.active_connections.clone()));
        for r in [
            ReloadResult::Success,
            ReloadResult::Rejected,
            ReloadResult::Error,
        ] {
            metrics.reloads.with_label_values(&[r.as_str()]);
        }
        metrics
    }

    /// The registry, for components that register their own metrics (the fetcher's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds a collector (plugin metrics, ...). Panics only on a duplicate name, a programming error.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric registered twice");
    }

    /// Counts one finished request.
    pub fn request_done(&self, route: Option<&str>, status: u16) {
        match route {
            None if status == 404 => self.no_route.inc(),
            _ => {
                let mut buf = itoa_buf();
                let code = fmt_status(status, &mut buf);
                self.requests
                    .with_label_values(&[route.unwrap_or(""), code])
                    .inc();
            }
        }
    }

    /// The `code="200"` counter of a route, resolved once at compile time so the common case of
    /// the request path is one atomic add.
    pub fn ok_counter(&self, route: &str) -> IntCounter {
        self.requests.with_label_values(&[route, "200"])
    }

    pub fn reload(&self, result: ReloadResult) {
        self.reloads.with_label_values(&[result.as_str()]).inc();
    }

    /// The Prometheus text exposition of every registered collector.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding to a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn itoa_buf() -> [u8; 3] {
    [b'0'; 3]
}

/// Formats a 3-digit status without allocating (the request path calls this).
fn fmt_status(status: u16, buf: &mut [u8; 3]) -> &str {
    let s = status.min(999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_family() {
        let m = Metrics::new();
        m.request_done(Some("default/r1"), 200);
        m.request_done(None, 404);
        m.reload(ReloadResult::Success);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(r#"wasmgate_requests_total{code="200",route="default/r1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmgate_requests_total{code="404",route=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmgate_config_reloads_total{result="success"} 1"#),
            "{text}"
        );
        assert!(text.contains("wasmgate_active_connections 0"), "{text}");
    }
}
