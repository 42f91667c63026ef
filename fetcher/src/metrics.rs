//! Istio's fetch metrics, exact names and labels (istio-wasm.md §2.8), plus wasmgate's own.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every `result` value of `istio_agent_wasm_remote_fetch_count`.
pub const REMOTE_FETCH_RESULTS: &[&str] = &[
    "success",
    "download_failure",
    "manifest_failure",
    "checksum_mismatched",
    "fetch_failure",
];

#[derive(Clone)]
pub(crate) struct Metrics {
    pub lookup: IntCounterVec,
    pub entries: IntGauge,
    pub remote_fetch: IntCounterVec,
    pub duration: Histogram,
    pub bytes: IntCounter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let lookup = IntCounterVec::new(
            Opts::new(
                "istio_agent_wasm_cache_lookup_count",
                "Number of Wasm module cache lookups, by hit",
            ),
            &["hit"],
        )
        .expect("static metric definition");
        let entries = IntGauge::new(
            "istio_agent_wasm_cache_entries",
            "Number of Wasm modules in the cache",
        )
        .expect("static metric definition");
        let remote_fetch = IntCounterVec::new(
            Opts::new(
                "istio_agent_wasm_remote_fetch_count",
                "Number of remote Wasm module fetches, by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "wasmgate_wasm_fetch_duration_seconds",
                "Time to get a Wasm module, cache hits included",
            )
            .buckets(vec![
                0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("static metric definition");
        let bytes = IntCounter::new(
            "wasmgate_wasm_fetch_bytes_total",
            "Bytes of Wasm modules fetched from remote sources",
        )
        .expect("static metric definition");
        // Expose every label value from the start, as dashboards expect zeros, not gaps.
        for hit in ["true", "false"] {
            lookup.with_label_values(&[hit]);
        }
        for r in REMOTE_FETCH_RESULTS {
            remote_fetch.with_label_values(&[r]);
        }
        Self {
            lookup,
            entries,
            remote_fetch,
            duration,
            bytes,
        }
    }

    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.lookup.clone()))?;
        registry.register(Box::new(self.entries.clone()))?;
        registry.register(Box::new(self.remote_fetch.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.bytes.clone()))?;
        Ok(())
    }

    pub(crate) fn lookup(&self, hit: bool) {
        self.lookup
            .with_label_values(&[if hit { "true" } else { "false" }])
            .inc();
    }

    pub(crate) fn remote(&self, result: &str) {
        self.remote_fetch.with_label_values(&[result]).inc();
    }
}
