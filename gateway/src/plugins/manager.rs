//! The versions of each WasmPlugin in force, and the background work that makes new ones ready.
//!
//! The compiler calls [`PluginManager::resolve`] for every WasmPlugin of a snapshot. A resource
//! is keyed by everything that affects its plugin (namespace, name, spec, HOST env values, pull
//! secret), so an unchanged resource gets the very same [`Active`] — VMs and root-context state
//! kept — across reloads of unrelated resources. A new key starts a background task: fetch
//! (through the fetcher, for every scheme), compile, and `Plugin::load` (the canary: VM start and
//! configure in every slot). Meanwhile the previous version stays in force (or, for a new plugin,
//! the plugin is not in the chain yet). When the task ends, [`PluginManager::changed`] fires and
//! the reloader compiles again with the same snapshot, which then picks the new version up.
//!
//! Failures: a configure/load failure keeps the old version; with no old version the plugin
//! follows its `failStrategy` (`FAIL_OPEN` skipped, else deny-all 403). A fetch failure is also
//! retried in the background with backoff (beyond Istio), so it recovers without a config change.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;
use wasmgate_conf as conf;
use wasmgate_fetcher::{
    Backoff, BackoffConfig, ConversionResult, DockerConfig, Fetcher, ModuleRequest, PullPolicy,
};
use wasmgate_runtime::{FailStrategy, Plugin, PluginOptions, Runtime};

use crate::limits;

/// Settings of the plugin machinery, from the command line.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Module cache directory (`--cache-dir`).
    pub cache_dir: PathBuf,
    /// Registries reached without TLS verification / over plain HTTP (`--insecure-registries`).
    pub insecure_registries: Vec<String>,
    /// Extra PEM roots for registries and HTTPS module URLs (`--ca-bundle`).
    pub ca_bundle: Option<PathBuf>,
    /// Largest module accepted (`--max-module-size`).
    pub max_module_size: u64,
    /// VMs per plugin: the proxy's worker threads.
    pub slots: usize,
}

/// One plugin version in force: loaded, canaried, shared by every chain that runs it.
pub struct Active {
    /// `<namespace>.<name>`, the plugin name the module sees.
    pub name: Arc<str>,
    pub key: u64,
    pub plugin: Plugin,
    /// `sha256:<hex>` of the OCI manifest, else of the module.
    pub digest: String,
    pub phase: &'static str,
    pub priority: Option<i32>,
}

/// A plugin that must answer its traffic with Istio's deny-all (module unavailable, FAIL_CLOSE).
pub struct DenyAll {
    pub name: Arc<str>,
    /// Requests denied; read by the metrics collector.
    pub denied: AtomicU64,
}

/// What the compiler puts in a chain for one WasmPlugin.
#[derive(Clone)]
pub enum Resolved {
    Run(Arc<Active>),
    DenyAll(Arc<DenyAll>),
    /// Not in the chain: FAIL_OPEN after a failure, or a new plugin still fetching.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    /// Digest of the version actually serving when a newer one is pending or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    serving_digest: Option<String>,
}

struct Entry {
    active: Option<Arc<Active>>,
    /// The key the latest config asks for, and what became of it.
    wanted: u64,
    wanted_error: Option<String>,
    /// The background task for `wanted` (fetch/load, with retries); `None` once it ended.
    task: Option<tokio::task::AbortHandle>,
    deny: Option<Arc<DenyAll>>,
    fail_strategy: conf::FailStrategy,
    phase: &'static str,
    priority: Option<i32>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Owns the runtime, the fetcher and the plugin versions in force. One per process.
pub struct PluginManager {
    runtime: Runtime,
    fetcher: Fetcher,
    entries: Mutex<HashMap<String, Entry>>,
    changed: Arc<Notify>,
}

impl PluginManager {
    pub fn new(runtime: Runtime, fetcher: Fetcher) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            fetcher,
            entries: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// Fires when a background load or fetch ended (the config should be compiled again).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// What to run for `wp` now; starts the background work for a version not ready yet.
    /// Needs a tokio runtime (it may spawn). `pull_secret` is the `.dockerconfigjson` of the
    /// plugin's `imagePullSecret`, when it names one.
    pub fn resolve(
        self: &Arc<Self>,
        wp: &conf::WasmPlugin,
        pull_secret: Option<&[u8]>,
    ) -> Resolved {
        let name = wp.plugin_identity();
        let spec = &wp.spec;
        let host_env: Vec<(String, String)> = spec
            .host_env_keys()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
            .collect();
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
            host_env.hash(&mut h);
            pull_secret.hash(&mut h);
            h.finish()
        };
        let mut entries = self.entries.lock();
        let e = entries.entry(name.clone()).or_insert_with(|| Entry {
            active: None,
            wanted: key.wrapping_add(1),
            wanted_error: None,
            task: None,
            deny: None,
            fail_strategy: spec.fail_strategy,
            phase: spec.phase.as_str(),
            priority: spec.priority,
        });
        e.fail_strategy = spec.fail_strategy;
        e.phase = spec.phase.as_str();
        e.priority = spec.priority;
        if e.active.as_ref().is_some_and(|a| a.key == key) {
            e.wanted = key;
            e.wanted_error = None;
            // Back to the version in force: a load of another version is no longer wanted.
            if let Some(t) = e.task.take() {
                t.abort();
            }
            return Resolved::Run(e.active.clone().expect("checked"));
        }
        if e.wanted != key {
            e.wanted = key;
            e.wanted_error = None;
            if let Some(t) = e.task.take() {
                t.abort();
            }
            if spec.plugin_type == conf::PluginType::Network {
                e.wanted_error = Some("type NETWORK is not supported yet".into());
                tracing::error!(plugin = %name, "WasmPlugin refused: type NETWORK is not supported yet");
            } else {
                e.task = Some(self.spawn_load(name.clone(), key, wp, pull_secret, host_env));
            }
        }
        if let Some(old) = &e.active {
            // A newer version is loading or failed: the old one stays in force.
            return Resolved::Run(old.clone());
        }
        if e.wanted_error.is_none() {
            return Resolved::Skip;
        }
        match spec.fail_strategy {
            conf::FailStrategy::FailOpen => Resolved::Skip,
            _ => Resolved::DenyAll(
                e.deny
                    .get_or_insert_with(|| {
                        Arc::new(DenyAll {
                            name: name.as_str().into(),
                            denied: AtomicU64::new(0),
                        })
                    })
                    .clone(),
            ),
        }
    }

    /// Forgets plugins whose resource is gone (their VMs go when the last chain using them does).
    pub fn retain(&self, names: &HashSet<String>) {
        self.entries.lock().retain(|n, _| names.contains(n));
    }

    fn spawn_load(
        self: &Arc<Self>,
        name: String,
        key: u64,
        wp: &conf::WasmPlugin,
        pull_secret: Option<&[u8]>,
        host_env: Vec<(String, String)>,
    ) -> tokio::task::AbortHandle {
        let spec = &wp.spec;
        let url = spec.url_with_scheme();
        let remote = !url.starts_with("file://");
        let secret = pull_secret.and_then(|json| {
            DockerConfig::from_json(json, &format!("imagePullSecret of {name}"))
                .inspect_err(|e| tracing::warn!(plugin = %name, error = %e, "unusable pull secret"))
                .ok()
        });
        let req = ModuleRequest {
            url,
            sha256: spec.sha256().map(str::to_owned),
            pull_policy: match spec.image_pull_policy {
                conf::PullPolicy::Unspecified => PullPolicy::Unspecified,
                conf::PullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
                conf::PullPolicy::Always => PullPolicy::Always,
            },
            pull_secret: secret,
            resource: name.clone(),
            resource_version: wp
                .metadata
                .resource_version
                .clone()
                .unwrap_or_else(|| format!("{key:016x}")),
        };
        let mut env: Vec<(String, String)> = spec
            .inline_env()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.extend(host_env);
        let options = PluginOptions {
            name: name.clone(),
            root_id: spec.root_id().to_owned(),
            configuration: spec.plugin_config_json().into_bytes(),
            env,
            fail_strategy: match spec.fail_strategy {
                conf::FailStrategy::FailClose => FailStrategy::FailClose,
                conf::FailStrategy::FailOpen => FailStrategy::FailOpen,
                conf::FailStrategy::FailReload => FailStrategy::FailReload,
            },
            ..PluginOptions::default()
        };
        let (phase, priority) = (spec.phase.as_str(), spec.priority);
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(BackoffConfig {
                initial: limits::PLUGIN_FETCH_RETRY_INITIAL,
                max: limits::PLUGIN_FETCH_RETRY_MAX,
                ..BackoffConfig::default()
            });
            loop {
                let started = Instant::now();
                let module = match this.fetcher.fetch(&req).await {
                    Ok(m) => m,
                    Err(e) => {
                        this.fetcher
                            .record_conversion(ConversionResult::FetchFailure, started.elapsed());
                        let delay = backoff.next_delay();
                        tracing::error!(plugin = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "module fetch failed");
                        this.failed(&name, key, format!("fetch: {e}"));
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                };
                let digest = module
                    .manifest_digest
                    .clone()
                    .unwrap_or_else(|| format!("sha256:{}", module.wasm_sha256));
                let rt = this.runtime.clone();
                let opts = options.clone();
                let loaded = tokio::task::spawn_blocking(move || {
                    let m = rt.load_module(&module.bytes)?;
                    Plugin::load(&rt, &m, opts)
                })
                .await;
                match loaded {
                    Ok(Ok(plugin)) => {
                        this.fetcher.record_conversion(
                            if remote {
                                ConversionResult::Success
                            } else {
                                ConversionResult::NoRemoteLoad
                            },
                            started.elapsed(),
                        );
                        tracing::info!(plugin = %name, %digest, "plugin ready");
                        this.installed(Arc::new(Active {
                            name: name.as_str().into(),
                            key,
                            plugin,
                            digest,
                            phase,
                            priority,
                        }));
                    }
                    Ok(Err(e)) => {
                        this.fetcher
                            .record_conversion(ConversionResult::MarshalFailure, started.elapsed());
                        tracing::error!(plugin = %name, error = %e, "plugin load failed (previous version, if any, stays in force)");
                        this.failed(&name, key, format!("load: {e}"));
                    }
                    Err(e) => this.failed(&name, key, format!("load task: {e}")),
                }
                return;
            }
        })
        .abort_handle()
    }

    fn installed(&self, active: Arc<Active>) {
        {
            let mut entries = self.entries.lock();
            let Some(e) = entries.get_mut(&*active.name) else {
                return;
            };
            if e.wanted != active.key {
                return;
            }
            e.active = Some(active);
            e.wanted_error = None;
            e.task = None;
            e.deny = None;
        }
        self.changed.notify_one();
    }

    fn failed(&self, name: &str, key: u64, error: String) {
        {
            let mut entries = self.entries.lock();
            let Some(e) = entries.get_mut(name) else {
                return;
            };
            if e.wanted != key || e.wanted_error.as_deref() == Some(&error) {
                return;
            }
            e.wanted_error = Some(error);
        }
        self.changed.notify_one();
    }

    /// Whether some plugin is still fetching or loading its first attempt.
    pub fn loading(&self) -> bool {
        self.entries.lock().values().any(|e| {
            e.wanted_error.is_none() && e.active.as_ref().is_none_or(|a| a.key != e.wanted)
        })
    }

    /// Waits (bounded) until no plugin is loading: used once at startup so the first
    /// configuration reported ready already runs its plugins (as Envoy warms a listener).
    pub async fn settle(&self, timeout: std::time::Duration) {
        let deadline = Instant::now() + timeout;
        while self.loading() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `/config_dump` state of every plugin by name.
    pub fn dump(&self) -> serde_json::Value {
        let entries = self.entries.lock();
        let mut names: Vec<_> = entries.keys().collect();
        names.sort();
        let mut out = serde_json::Map::new();
        for n in names {
            let e = &entries[n];
            let serving = e.active.as_ref();
            let status = if serving.is_some_and(|a| a.key == e.wanted) {
                Status {
                    state: "running".into(),
                    error: None,
                    digest: serving.map(|a| a.digest.clone()),
                    serving_digest: None,
                }
            } else {
                let state = match (&e.wanted_error, serving) {
                    (None, Some(_)) => "running (new version fetching)".to_owned(),
                    (None, None) => "fetching".to_owned(),
                    (Some(err), Some(_)) => format!("running (new version failed: {err})"),
                    (Some(err), None) => match e.fail_strategy {
                        conf::FailStrategy::FailOpen => format!("skipped (failed: {err})"),
                        _ => format!("deny-all (failed: {err})"),
                    },
                };
                Status {
                    state,
                    error: e.wanted_error.clone(),
                    digest: None,
                    serving_digest: serving.map(|a| a.digest.clone()),
                }
            };
            let mut v = serde_json::to_value(status).unwrap_or_default();
            v["phase"] = e.phase.into();
            v["priority"] = e.priority.into();
            out.insert(n.clone(), v);
        }
        serde_json::Value::Object(out)
    }

    /// Every plugin version in force and every deny-all, for the metrics collector.
    pub fn snapshot(&self) -> (Vec<Arc<Active>>, Vec<Arc<DenyAll>>) {
        let entries = self.entries.lock();
        (
            entries.values().filter_map(|e| e.active.clone()).collect(),
            entries.values().filter_map(|e| e.deny.clone()).collect(),
        )
    }

    /// Counts a deny-all answer.
    pub fn count_deny(d: &DenyAll) {
        d.denied.fetch_add(1, Ordering::Relaxed);
    }
}
