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

/// `result` of `istio_agent_wasm_config_conversion_count`: the outcome of turning one
/// WasmPlugin into a runnable filter (the gateway's step; recorded with
/// [`crate::Fetcher::record_conversion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversionResult {
    /// The module was fetched and the filter built.
    Success,
    /// The plugin needs no remote fetch (`file://`).
    NoRemoteLoad,
    /// Building the filter configuration failed.
    MarshalFailure,
    /// The plugin configuration could not be read.
    UnmarshalFailure,
    /// The module could not be fetched or verified.
    FetchFailure,
    /// The plugin has no URL to fetch.
    MissRemoteFetchHint,
}

impl ConversionResult {
    /// The label value, as Istio spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::NoRemoteLoad => "no_remote_load",
            Self::MarshalFailure => "marshal_failure",
            Self::UnmarshalFailure => "unmarshal_failure",
            Self::FetchFailure => "fetch_failure",
            Self::MissRemoteFetchHint => "miss_remote_fetch_hint",
        }
    }

    const ALL: [Self; 6] = [
        Self::Success,
        Self::NoRemoteLoad,
        Self::MarshalFailure,
        Self::UnmarshalFailure,
        Self::FetchFailure,
        Self::MissRemoteFetchHint,
    ];
}

#[derive(Clone)]
pub(crate) struct Metrics {
    pub conversion: IntCounterVec,
    pub conversion_ms: Histogram,
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
        let conversion = IntCounterVec::new(
            Opts::new(
                "istio_agent_wasm_config_conversion_count",
                "Number of WasmPlugin conversions, by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let conversion_ms = Histogram::with_opts(
            HistogramOpts::new(
                "istio_agent_wasm_config_conversion_duration",
                "Time to convert a WasmPlugin, in milliseconds",
            )
            // Istio's buckets: 1, 2, 4, ..., 16384 ms.
            .buckets((0..15).map(|i| f64::from(1u32 << i)).collect()),
        )
        .expect("static metric definition");
        for r in ConversionResult::ALL {
            conversion.with_label_values(&[r.as_str()]);
        }
        // Expose every label value from the start, as dashboards expect zeros, not gaps.
        for hit in ["true", "false"] {
            lookup.with_label_values(&[hit]);
        }
        for r in REMOTE_FETCH_RESULTS {
            remote_fetch.with_label_values(&[r]);
        }
        Self {
            conversion,
            conversion_ms,
            lookup,
            entries,
            remote_fetch,
            duration,
            bytes,
        }
    }

    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.conversion.clone()))?;
        registry.register(Box::new(self.conversion_ms.clone()))?;
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
