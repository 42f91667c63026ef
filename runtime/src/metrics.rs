//! Metrics: the ones plugins define (`proxy_define_metric`) and the runtime's own per-plugin
//! stats. Both are snapshots the gateway reads and exports to Prometheus.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::abi::{MetricKind, Status};
use crate::types::FailAction;

/// Envoy's default histogram bucket bounds (in the plugin's own unit, usually milliseconds).
pub const HISTOGRAM_BOUNDS: [u64; 19] = [
    0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
];

/// A metric defined by a plugin. Metrics are process-wide by name, as Envoy's stats: every VM
/// (one per worker) that defines `requests_total` increments the same counter.
pub struct GuestMetric {
    pub kind: MetricKind,
    pub name: String,
    value: AtomicI64,
    histogram: Mutex<Histogram>,
}

#[derive(Default, Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Count per bucket of [`HISTOGRAM_BOUNDS`] (value ≤ bound), plus one overflow bucket.
    pub buckets: Vec<u64>,
    pub sum: u64,
    pub count: u64,
}

impl GuestMetric {
    pub(crate) fn increment(&self, delta: i64) -> Result<(), Status> {
        match self.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            // Counters only go up, as in Envoy.
            MetricKind::Counter if delta < 0 => Err(Status::BadArgument),
            _ => {
                self.value.fetch_add(delta, Relaxed);
                Ok(())
            }
        }
    }

    pub(crate) fn record(&self, value: u64) {
        match self.kind {
            MetricKind::Histogram => {
                let mut h = self.histogram.lock();
                if h.buckets.is_empty() {
                    h.buckets = vec![0; HISTOGRAM_BOUNDS.len() + 1];
                }
                let i = HISTOGRAM_BOUNDS.partition_point(|&b| b < value);
                h.buckets[i] += 1;
                h.sum = h.sum.wrapping_add(value);
                h.count += 1;
            }
            _ => self.value.store(value as i64, Relaxed),
        }
    }

    pub(crate) fn get(&self) -> Result<u64, Status> {
        match self.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(self.value.load(Relaxed) as u64),
        }
    }
}

/// A plugin-defined metric's current value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
    Histogram(Histogram),
}

#[derive(Default)]
pub(crate) struct MetricRegistry {
    metrics: Mutex<HashMap<String, Arc<GuestMetric>>>,
}

impl MetricRegistry {
    /// Redefining a name with the same kind returns the same metric; another kind is refused.
    pub fn define(&self, kind: MetricKind, name: &str) -> Result<Arc<GuestMetric>, Status> {
        let mut metrics = self.metrics.lock();
        let metric = metrics.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(GuestMetric {
                kind,
                name: name.to_owned(),
                value: AtomicI64::new(0),
                histogram: Mutex::new(Histogram::default()),
            })
        });
        if metric.kind != kind {
            return Err(Status::BadArgument);
        }
        Ok(metric.clone())
    }

    pub fn snapshot(&self) -> BTreeMap<String, MetricValue> {
        self.metrics
            .lock()
            .values()
            .map(|m| {
                let v = match m.kind {
                    MetricKind::Counter => MetricValue::Counter(m.value.load(Relaxed) as u64),
                    MetricKind::Gauge => MetricValue::Gauge(m.value.load(Relaxed)),
                    MetricKind::Histogram => MetricValue::Histogram(m.histogram.lock().clone()),
                };
                (m.name.clone(), v)
            })
            .collect()
    }
}

/// Bucket upper bounds (seconds) of the callback-time histogram in [`PluginStats`].
pub const CALLBACK_SECONDS_BOUNDS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0,
];

pub(crate) struct PluginStatsInner {
    /// Per worker slot: every guest call writes these, so each slot has its own cache line(s)
    /// and two workers never write the same one (shared counters cost a cache-line transfer
    /// per call with two workers). Summed when read.
    calls: Box<[CachePadded<CallStats>]>,
    pub traps: AtomicU64,
    pub limit_exceeded: AtomicU64,
    pub fail_closed: AtomicU64,
    pub fail_opened: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub reload_backoffs: AtomicU64,
    pub local_replies: Mutex<BTreeMap<u16, u64>>,
}

/// Guest calls of one plugin in one worker slot: count, time, time histogram.
///
/// Only the thread that holds the slot's lock writes these (a VM runs only with its slot
/// locked; the canary of `Plugin::load`, which counts in slot 0, runs before any slot VM has the
/// plugin). So an increment is a load and a store, not an atomic read-modify-write: atomics
/// only so that `/metrics` can read them meanwhile.
#[derive(Default)]
struct CallStats {
    invocations: AtomicU64,
    nanos: AtomicU64,
    buckets: [AtomicU64; CALLBACK_SECONDS_BOUNDS.len() + 1],
}

impl PluginStatsInner {
    /// Stats for a plugin that runs in `slots` worker slots.
    pub fn new(slots: usize) -> Self {
        Self {
            calls: (0..slots.max(1)).map(|_| Default::default()).collect(),
            traps: Default::default(),
            limit_exceeded: Default::default(),
            fail_closed: Default::default(),
            fail_opened: Default::default(),
            reloads: Default::default(),
            reload_failures: Default::default(),
            reload_backoffs: Default::default(),
            local_replies: Default::default(),
        }
    }

    /// One guest call, made by the VM of worker slot `slot`, with that slot locked.
    pub fn callback(&self, slot: usize, took: Duration) {
        let calls = &self.calls[slot % self.calls.len()];
        let add = |counter: &AtomicU64, n: u64| {
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed)
        };
        add(&calls.invocations, 1);
        add(&calls.nanos, took.as_nanos() as u64);
        let secs = took.as_secs_f64();
        let i = CALLBACK_SECONDS_BOUNDS.partition_point(|&b| b < secs);
        add(&calls.buckets[i], 1);
    }

    pub fn local_reply(&self, status: u16) {
        *self.local_replies.lock().entry(status).or_default() += 1;
    }

    pub fn fail(&self, action: FailAction) {
        match action {
            FailAction::Closed => self.fail_closed.fetch_add(1, Relaxed),
            FailAction::Opened => self.fail_opened.fetch_add(1, Relaxed),
        };
    }
}

/// Per-plugin counters for `/metrics`, read with [`Plugin::stats`](crate::Plugin::stats).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginStats {
    /// Guest callbacks run (every `proxy_on_*` call).
    pub invocations: u64,
    /// Traps, including exceeded limits.
    pub traps: u64,
    /// Of which: memory or time limits exceeded.
    pub limit_exceeded: u64,
    /// Local replies sent, by status (the plugin's own and fail-close 503s).
    pub local_replies: BTreeMap<u16, u64>,
    /// Fail strategy applications.
    pub fail_closed: u64,
    pub fail_opened: u64,
    /// `FAIL_RELOAD`: fresh VMs created, failed attempts, and streams refused during backoff.
    pub reloads: u64,
    pub reload_failures: u64,
    pub reload_backoffs: u64,
    /// Time spent in guest callbacks: total, and counts per [`CALLBACK_SECONDS_BOUNDS`] bucket
    /// (last bucket = above the highest bound). Not cumulative.
    pub callback_seconds_sum: f64,
    pub callback_seconds_buckets: Vec<u64>,
    /// VMs currently live for this plugin (one per worker slot in use).
    pub vms: u64,
    /// Linear memory of those VMs, in bytes.
    pub memory_bytes: u64,
}

impl PluginStatsInner {
    pub fn snapshot(&self, vms: u64, memory_bytes: u64) -> PluginStats {
        let mut invocations = 0u64;
        let mut nanos = 0u64;
        let mut buckets = vec![0u64; CALLBACK_SECONDS_BOUNDS.len() + 1];
        for calls in self.calls.iter() {
            invocations = invocations.wrapping_add(calls.invocations.load(Relaxed));
            nanos = nanos.wrapping_add(calls.nanos.load(Relaxed));
            for (sum, b) in buckets.iter_mut().zip(&calls.buckets) {
                *sum = sum.wrapping_add(b.load(Relaxed));
            }
        }
        PluginStats {
            invocations,
            traps: self.traps.load(Relaxed),
            limit_exceeded: self.limit_exceeded.load(Relaxed),
            local_replies: self.local_replies.lock().clone(),
            fail_closed: self.fail_closed.load(Relaxed),
            fail_opened: self.fail_opened.load(Relaxed),
            reloads: self.reloads.load(Relaxed),
            reload_failures: self.reload_failures.load(Relaxed),
            reload_backoffs: self.reload_backoffs.load(Relaxed),
            callback_seconds_sum: nanos as f64 / 1e9,
            callback_seconds_buckets: buckets,
            vms,
            memory_bytes,
        }
    }
}
