//! The serving process: a tokio runtime, the Pingora proxy app, live listeners, the admin server,
//! config reload, background DNS refresh, and graceful shutdown.
//!
//! Pingora's `Server` is not used (see `listeners.rs` for why), so neither is its shutdown, which
//! waits up to 300 s after SIGTERM: ours stops accepting at once, tells Pingora's sessions to stop
//! keeping connections alive, and waits at most `--grace-period` for open connections to finish.

mod coalesce;
pub mod downstream;
pub mod errors;
pub mod h1;
pub mod handler;
pub mod listeners;
pub mod proxy;
pub mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::server::configuration::ServerConf;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::backends::{self, Backends};
use crate::cli::{AccessLogFormat, Http1Engine, ServeArgs};
use crate::config::{CompileOptions, CompiledConfig};
use crate::limits;
use crate::metrics::Metrics;
use crate::plugins::PluginManager;
use crate::plugins::host::GatewayHost;
use crate::plugins::stats::PluginCollector;
use crate::reload::{ConfigSource, Reloader};
use handler::Gateway;
use listeners::{ListenerManager, Shared};
use wasmgate_fetcher::{Fetcher, FetcherOptions};
use wasmgate_runtime::{Runtime, RuntimeOptions};
use workers::Workers;

/// Runs the gateway until SIGTERM/SIGINT, then drains for at most the grace period.
/// `on_ready` runs once the first configuration is live (the demo prints its instructions there).
///
/// Connections are served by `--threads` workers, one single-threaded runtime each (see
/// `workers.rs`); everything else (reloads, fetches, the admin server) runs on this thread.
pub fn run(
    source: ConfigSource,
    args: &ServeArgs,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let workers = Workers::start(threads)?;
    // The control runtime (reloads, plugin loads, admin) runs on this thread, with a capped pool
    // of blocking threads. Both keep its memory flat across hot swaps: a multi-thread runtime
    // whose reload ran in `block_in_place` handed its core to another thread at every reload, and
    // an uncapped blocking pool spawns a thread whenever a blocking task (a plugin load, a module
    // read) is queued before the previous one's thread is back to idle, which a busy machine makes
    // likely. Threads seldom idle long enough to exit while swaps go on, so their number (each
    // with its stack and its own allocator heap, ≈ 0.5 MiB) ratcheted up under load.
    let control = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(limits::CONTROL_BLOCKING_THREADS)
        .thread_name("wasmgate-control")
        .enable_all()
        .build()
        .context("building the control runtime")?;
    let served = control.block_on(serve(
        source,
        args.clone(),
        workers.handles().to_vec(),
        on_ready,
    ));
    workers.stop();
    control.shutdown_timeout(Duration::from_millis(100));
    served
}

async fn serve(
    source: ConfigSource,
    args: ServeArgs,
    workers: Vec<tokio::runtime::Handle>,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
) -> anyhow::Result<()> {
    let threads = workers.len();
    let metrics = Arc::new(Metrics::new());
    let backends = Backends::new();
    let live = Arc::new(ArcSwap::from_pointee(CompiledConfig::default()));
    let ready = Arc::new(AtomicBool::new(false));

    let server_conf = Arc::new(ServerConf {
        threads,
        upstream_keepalive_pool_size: limits::UPSTREAM_KEEPALIVE_POOL,
        // Connect retries are decided per request in `fail_to_connect`.
        max_retries: limits::MAX_CONNECT_ATTEMPTS,
        ..ServerConf::default()
    });
    let gateway = Gateway {
        config: live.clone(),
        metrics: metrics.clone(),
        access_log: args.access_log != AccessLogFormat::Off,
        idle_timeout: args.idle_timeout,
    };
    let http1 = (args.http1_engine == Http1Engine::Native).then(|| gateway.clone());
    let mut proxy = pingora_proxy::http_proxy(&server_conf, gateway);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    let app = Arc::new(proxy);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        app: app.clone(),
        http1,
        shutdown: shutdown_rx.clone(),
        metrics: metrics.clone(),
        connections: Arc::new(AtomicUsize::new(0)),
    });
    let listeners = Arc::new(ListenerManager::new(
        args.listen_address,
        shared.clone(),
        workers,
    ));

    let plugins = plugin_manager(&args, threads, &backends, &metrics)?;
    let _purge = plugins.fetcher().spawn_purge_task();

    let reloader = Arc::new(tokio::sync::Mutex::new(Reloader::new(
        source,
        backends.clone(),
        live.clone(),
        listeners.clone(),
        metrics.clone(),
        CompileOptions {
            metrics: Some(metrics.clone()),
            default_timeout: Some(args.upstream_timeout).filter(|d| !d.is_zero()),
            plugins: Some(plugins.clone()),
            gateway_labels: args.labels.clone(),
        },
    )));
    let dump_state = reloader.lock().await.dump_handle();

    let admin_listener = admin::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin server on {}", args.admin_addr))?;
    tracing::info!(addr = %args.admin_addr, "admin server listening");
    let dump = {
        let plugins_dump = plugins.clone();
        let (live, backends, listeners, dump_state) = (
            live.clone(),
            backends.clone(),
            listeners.clone(),
            dump_state.clone(),
        );
        Arc::new(move || {
            let mut v = crate::config::dump(&live.load(), &backends);
            v["plugins"] = plugins_dump.dump();
            v["listeners"] = serde_json::to_value(listeners.status()).unwrap_or_default();
            v["resources"] = dump_state.lock().clone();
            v
        })
    };
    tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            ready: ready.clone(),
            metrics: metrics.clone(),
            dump,
        },
        shutdown_rx.clone(),
    ));

    // First load: compile and swap. Plugins load in the background; at startup only, wait for
    // them (bounded) before any port opens, so no request runs without the configured chains
    // and "ready" means they run.
    reloader.lock().await.reload().await;
    if plugins.loading() {
        plugins.settle(limits::STARTUP_PLUGIN_WAIT).await;
    }
    reloader.lock().await.open_ports().await;
    ready.store(true, Ordering::Release);
    tracing::info!(
        generation = live.load().generation,
        "first configuration live"
    );
    if let Some(f) = on_ready {
        f();
    }
    Reloader::spawn_watch(reloader.clone());
    backends::spawn_refresher(backends.clone(), Duration::from_secs(args.dns_refresh));

    let signal = wait_for_signal().await;
    tracing::info!(signal, grace_period_s = args.grace_period, "shutting down");
    ready.store(false, Ordering::Release);
    listeners.close_all();
    let _ = shutdown_tx.send(true);
    // Wakes idle keep-alive connections so they close now instead of at their timeout.
    ServerApp::cleanup(&*app).await;
    let deadline = Instant::now() + Duration::from_secs(args.grace_period);
    while shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = shared.connections.load(Ordering::Acquire);
    if left > 0 {
        tracing::warn!(
            connections = left,
            "grace period over; closing remaining connections"
        );
    } else {
        tracing::info!("all connections closed");
    }
    Ok(())
}

/// The runtime (one VM per worker thread per plugin), the fetcher and their metrics.
fn plugin_manager(
    args: &ServeArgs,
    threads: usize,
    backends: &Arc<Backends>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<PluginManager>> {
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let host = Arc::new(GatewayHost {
        backends: backends.clone(),
        tokio: tokio::runtime::Handle::current(),
        node_id: format!("wasmgate~{}", std::process::id()),
    });
    let runtime = Runtime::new(
        host,
        RuntimeOptions {
            slots: threads.max(1),
            cache_dir: Some(cache_dir.join("compiled")),
            ..RuntimeOptions::default()
        },
    )
    .context("starting the Wasm runtime")?;
    let mut fopts = FetcherOptions::new(cache_dir.join("modules"));
    fopts.insecure_registries = args.insecure_registries.clone();
    fopts.ca_bundle = args.ca_bundle.clone();
    fopts.max_module_size = args.max_module_size;
    let fetcher = Fetcher::new(fopts).context("opening the module cache")?;
    fetcher
        .register_metrics(metrics.registry())
        .context("registering fetcher metrics")?;
    let manager = PluginManager::new(runtime, fetcher);
    metrics.register(Box::new(PluginCollector::new(manager.clone())));
    Ok(manager)
}

/// `$XDG_CACHE_HOME/wasmgate`, else `~/.cache/wasmgate`, else `wasmgate-cache` in the temp dir.
fn default_cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".cache"))
        })
        .map_or_else(
            || std::env::temp_dir().join("wasmgate-cache"),
            |d| d.join("wasmgate"),
        )
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can still be stopped by SIGKILL; wait forever.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The `/config_dump` "resources" section, maintained by the reloader.
pub type DumpState = Arc<Mutex<serde_json::Value>>;
