//! `/metrics` for plugins, read at scrape time from the runtime's counters (`Plugin::stats()`,
//! `Runtime::metrics()`): nothing is done on the request path for them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricType};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use wasmgate_runtime::{CALLBACK_SECONDS_BOUNDS, HISTOGRAM_BOUNDS, MetricValue};

use super::PluginManager;

/// The collector registered in the gateway's registry.
pub struct PluginCollector {
    manager: Arc<PluginManager>,
    descs: Vec<Desc>,
}

struct Families {
    invocations: IntCounterVec,
    local_replies: IntCounterVec,
    traps: IntCounterVec,
    fail_actions: IntCounterVec,
    vms: IntGaugeVec,
    memory: IntGaugeVec,
    deny_all: IntCounterVec,
}

fn families() -> Families {
    let c = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l).expect("static");
    let g = |n: &str, h: &str, l: &[&str]| IntGaugeVec::new(Opts::new(n, h), l).expect("static");
    Families {
        invocations: c(
            "wasmgate_plugin_invocations_total",
            "Guest callbacks run, per plugin.",
            &["plugin"],
        ),
        local_replies: c(
            "wasmgate_plugin_local_replies_total",
            "Local replies sent by a plugin (or its fail strategy), by status.",
            &["plugin", "code"],
        ),
        traps: c(
            "wasmgate_plugin_traps_total",
            "Traps (including exceeded limits), per plugin.",
            &["plugin"],
        ),
        fail_actions: c(
            "wasmgate_plugin_fail_strategy_total",
            "Fail strategy applications, per plugin and action (close, open, reload, reload_failure, reload_backoff).",
            &["plugin", "action"],
        ),
        vms: g("wasmgate_plugin_vms", "Live VMs, per plugin.", &["plugin"]),
        memory: g(
            "wasmgate_plugin_memory_bytes",
            "Linear memory of a plugin's VMs.",
            &["plugin"],
        ),
        deny_all: c(
            "wasmgate_plugin_deny_all_total",
            "Requests denied (403) because a FAIL_CLOSE plugin's module is unavailable.",
            &["plugin"],
        ),
    }
}

impl Families {
    fn all(&self) -> Vec<&dyn Collector> {
        vec![
            &self.invocations,
            &self.local_replies,
            &self.traps,
            &self.fail_actions,
            &self.vms,
            &self.memory,
            &self.deny_all,
        ]
    }
}

impl PluginCollector {
    pub fn new(manager: Arc<PluginManager>) -> Self {
        let f = families();
        let descs = f
            .all()
            .into_iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Self { manager, descs }
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Collector for PluginCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = families();
        let (active, denies) = self.manager.snapshot();
        let mut callbacks = Vec::new();
        for a in &active {
            let s = a.plugin.stats();
            let p = &*a.name;
            f.invocations.with_label_values(&[p]).inc_by(s.invocations);
            f.traps.with_label_values(&[p]).inc_by(s.traps);
            for (code, n) in &s.local_replies {
                f.local_replies
                    .with_label_values(&[p, &code.to_string()])
                    .inc_by(*n);
            }
            for (action, n) in [
                ("close", s.fail_closed),
                ("open", s.fail_opened),
                ("reload", s.reloads),
                ("reload_failure", s.reload_failures),
                ("reload_backoff", s.reload_backoffs),
            ] {
                f.fail_actions.with_label_values(&[p, action]).inc_by(n);
            }
            callbacks.push(histogram_metric(
                &[("plugin", p)],
                &CALLBACK_SECONDS_BOUNDS,
                &s.callback_seconds_buckets,
                s.callback_seconds_sum,
            ));
            f.vms.with_label_values(&[p]).set(s.vms as i64);
            f.memory.with_label_values(&[p]).set(s.memory_bytes as i64);
        }
        for d in &denies {
            f.deny_all
                .with_label_values(&[&d.name])
                .inc_by(d.denied.load(Ordering::Relaxed));
        }
        let mut out: Vec<MetricFamily> = f.all().into_iter().flat_map(|c| c.collect()).collect();
        if !callbacks.is_empty() {
            out.push(histogram_family(
                "wasmgate_plugin_callback_seconds",
                "Time spent in each guest callback, per plugin.",
                callbacks,
            ));
        }
        out.extend(guest_metrics(&self.manager));
        out
    }
}

/// Plugin-defined metrics (`proxy_define_metric`), named as the plugin named them (sanitized).
fn guest_metrics(manager: &PluginManager) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    for (name, value) in manager.runtime().metrics() {
        let n = sanitize(&name);
        let help = "Defined by a Wasm plugin.";
        let families = match value {
            MetricValue::Counter(v) => IntCounterVec::new(Opts::new(&n, help), &[]).map(|m| {
                m.with_label_values(&[] as &[&str]).inc_by(v);
                m.collect()
            }),
            MetricValue::Gauge(v) => IntGaugeVec::new(Opts::new(&n, help), &[]).map(|m| {
                m.with_label_values(&[] as &[&str]).set(v);
                m.collect()
            }),
            MetricValue::Histogram(h) => {
                let bounds: Vec<f64> = HISTOGRAM_BOUNDS.iter().map(|b| *b as f64).collect();
                let m = histogram_metric(&[], &bounds, &h.buckets, h.sum as f64);
                Ok(vec![histogram_family(&n, help, vec![m])])
            }
        };
        match families {
            Ok(f) => out.extend(f),
            Err(e) => tracing::debug!(metric = %name, error = %e, "plugin metric not exported"),
        }
    }
    out
}

/// One histogram sample from per-bucket counts (not cumulative; one more than `bounds`: the
/// overflow bucket), as the runtime keeps them.
fn histogram_metric(labels: &[(&str, &str)], bounds: &[f64], counts: &[u64], sum: f64) -> Metric {
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(bound, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let total: u64 = counts.iter().sum();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(total);
    h.set_sample_sum(sum);
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_owned());
                l.set_value((*v).to_owned());
                l
            })
            .collect(),
    );
    m.set_histogram(h);
    m
}

fn histogram_family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(MetricType::HISTOGRAM);
    f.set_metric(metrics);
    f
}
