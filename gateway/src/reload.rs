//! Live reload: conf's directory watch (coalesced over [`limits::RELOAD_WINDOW`]) ⇒ conf's last-good store ⇒ [`config::compile`]
//! ⇒ one atomic swap of the compiled snapshot ⇒ listeners reconciled.
//!
//! Invalid edits never reach the gateway: conf keeps the last good version of each resource and
//! reports the rejected one, which we log, count and show in `/config_dump`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use parking_lot::Mutex;
use wasmgate_conf::{self as conf, ConfigStore, ReloadReport, Snapshot, SourceFile};

use crate::backends::{self, Backends};
use crate::config::{self, CompileOptions, Resources, SharedConfig};
use crate::limits;
use crate::metrics::{Metrics, ReloadResult};
use crate::server::DumpState;
use crate::server::listeners::ListenerManager;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A watched directory (`wasmgate run --config-dir`).
    Dir(PathBuf),
    /// Fixed files (`wasmgate demo`): loaded once, never watched.
    Embedded(Vec<(PathBuf, String)>),
}

/// Owns the conf store and applies reloads. One reload at a time (callers hold it in a mutex).
pub struct Reloader {
    /// Start-up: configurations are compiled but no port opens until the plugins settled (see
    /// [`Reloader::open_ports`]), as Envoy warms a listener until its filters' configs arrive.
    /// A port opened earlier would serve requests without the plugins still loading.
    warming: bool,
    source: ConfigSource,
    store: ConfigStore,
    backends: Arc<Backends>,
    live: SharedConfig,
    listeners: Arc<ListenerManager>,
    metrics: Arc<Metrics>,
    options: CompileOptions,
    generation: u64,
    dump: DumpState,
    ignored_logged: HashSet<(String, String, String, String)>,
    /// Warnings already logged: every reload reports all of them again, a user needs each once.
    warnings_logged: HashSet<String>,
    /// The snapshot in force, compiled again when a plugin finishes loading in the background.
    last: Option<Arc<Snapshot>>,
}

impl Reloader {
    pub fn new(
        source: ConfigSource,
        backends: Arc<Backends>,
        live: SharedConfig,
        listeners: Arc<ListenerManager>,
        metrics: Arc<Metrics>,
        options: CompileOptions,
    ) -> Self {
        Self {
            source,
            warming: true,
            store: ConfigStore::new(),
            backends,
            live,
            listeners,
            metrics,
            options,
            generation: 0,
            dump: Arc::new(Mutex::new(serde_json::Value::Null)),
            ignored_logged: HashSet::new(),
            warnings_logged: HashSet::new(),
            last: None,
        }
    }

    /// The `/config_dump` resources section, updated by every reload.
    pub fn dump_handle(&self) -> DumpState {
        self.dump.clone()
    }

    /// Reads the source, and when anything changed compiles and swaps in the new config.
    pub async fn reload(&mut self) {
        let (snapshot, report) = match &self.source {
            // A handful of small files, read on the control thread as the compile below runs
            // there: not in `block_in_place`, whose hand-off moved the control runtime to another
            // thread at every reload (see `server::run`).
            ConfigSource::Dir(dir) => self.store.reload(dir),
            ConfigSource::Embedded(files) => self.store.apply(
                files
                    .iter()
                    .map(|(p, t)| SourceFile::new(p.clone(), t.clone()))
                    .collect(),
            ),
        };
        self.log_report(&snapshot, &report);
        let result = if report.errors.is_empty() {
            ReloadResult::Success
        } else {
            ReloadResult::Rejected
        };
        self.metrics.reload(result);

        if report.changed || self.generation == 0 {
            self.apply(&snapshot).await;
        }
        self.last = Some(snapshot.clone());
        *self.dump.lock() = serde_json::json!({
            "snapshotGeneration": snapshot.generation,
            "lastReload": {
                "result": result.as_str(),
                "added": report.added,
                "updated": report.updated,
                "removed": report.removed,
                "errors": report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
            "inForce": &*snapshot,
        });
    }

    /// Ends start-up: applies the snapshot in force again, opening its ports.
    pub async fn open_ports(&mut self) {
        self.warming = false;
        self.reapply().await;
    }

    /// Compiles the snapshot in force again: a plugin became ready (or failed) in the background.
    pub async fn reapply(&mut self) {
        if let Some(s) = self.last.clone() {
            self.apply(&s).await;
        }
    }

    async fn apply(&mut self, snapshot: &Snapshot) {
        self.generation += 1;
        let res = resources(snapshot);
        let compiled = config::compile(&res, &self.backends, &self.options, self.generation);
        // New backends get their addresses before their routes go live (DNS off the request path).
        backends::resolve_unresolved(&self.backends, limits::INITIAL_RESOLVE_TIMEOUT, |k| {
            compiled.routed.contains(k)
        })
        .await;
        let listeners = compiled.listeners.clone();
        let entries = compiled.routes.entry_count();
        // Swap first, then open ports: a new port's routes exist before it accepts a connection.
        self.live.store(Arc::new(compiled));
        if !self.warming {
            self.listeners.reconcile(&listeners).await;
        }
        tracing::info!(
            generation = self.generation,
            routes = entries,
            ports = ?listeners.iter().map(|l| l.port).collect::<Vec<_>>(),
            "configuration applied"
        );
    }

    fn log_report(&mut self, snapshot: &Snapshot, report: &ReloadReport) {
        for e in &report.errors {
            tracing::error!(error = %e, "config rejected (last good version stays in force)");
        }
        // Warnings (deprecations such as ServiceMeshExtension, accepted-but-ignored fields,
        // dangling references) are worth seeing, but once each, not on every reload.
        for w in &report.warnings {
            let text = w.to_string();
            if !self.warnings_logged.contains(&text) {
                tracing::warn!(warning = %text, "config warning");
                self.warnings_logged.insert(text);
            }
        }
        for i in &snapshot.ignored {
            let key = (
                i.kind.clone(),
                i.namespace.clone(),
                i.name.clone(),
                i.api_version.clone(),
            );
            if self.ignored_logged.insert(key) {
                tracing::info!(kind = %i.kind, name = %format!("{}/{}", i.namespace, i.name), file = %i.file.display(), reason = %i.reason, "ignored resource");
            }
        }
    }

    /// Watches the config directory (if any) and reloads at most one window after each change.
    pub fn spawn_watch(this: Arc<tokio::sync::Mutex<Self>>) {
        let plugins_changed = this
            .try_lock()
            .ok()
            .and_then(|r| r.options.plugins.as_ref().map(|p| p.changed()));
        if let Some(changed) = plugins_changed {
            let this = this.clone();
            tokio::spawn(async move {
                loop {
                    changed.notified().await;
                    this.lock().await.reapply().await;
                }
            });
        }
        tokio::spawn(async move {
            let dir = match &this.lock().await.source {
                ConfigSource::Dir(d) => d.clone(),
                ConfigSource::Embedded(_) => return,
            };
            let notify = Arc::new(tokio::sync::Notify::new());
            let n = notify.clone();
            // The watcher calls back on its own thread; Notify coalesces bursts into one reload.
            // Kept for the life of the loop: dropping it stops the watcher.
            let _watch = match conf::watch(&dir, limits::RELOAD_WINDOW, move || n.notify_one()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch the config directory; live reload is off");
                    return;
                }
            };
            loop {
                notify.notified().await;
                this.lock().await.reload().await;
            }
        });
    }
}

/// The compiler's view of a snapshot.
pub fn resources(s: &Snapshot) -> Resources<'_> {
    let age = |created: std::time::SystemTime, seq: u64| {
        let d = created.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
            seq,
        )
    };
    Resources {
        gateways: s.gateways.values().map(|g| &*g.resource).collect(),
        routes: s
            .routes
            .values()
            .map(|r| (&*r.resource, age(r.created(), r.seq)))
            .collect(),
        services: s
            .services
            .iter()
            .map(|(k, v)| ((k.namespace.as_str(), k.name.as_str()), &*v.resource))
            .collect(),
        secrets: s
            .secrets
            .iter()
            .map(|(k, v)| ((k.namespace.as_str(), k.name.as_str()), &*v.resource))
            .collect(),
        wasm_plugins: s
            .wasm_plugins_in_order()
            .into_iter()
            .map(|w| &*w.resource)
            .collect(),
        reference_grants: s.reference_grants.values().map(|g| &*g.resource).collect(),
        namespaces: s
            .namespaces
            .iter()
            .map(|(k, v)| (k.name.as_str(), &*v.resource))
            .collect(),
    }
}
