//! Address resolution for backends, off the request path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::{AddressSource, Backend, BackendKey, Backends};

/// Addresses known without DNS (IP literals); `None` if some target needs a lookup.
pub(super) fn literal_addresses(source: &AddressSource) -> Option<Vec<SocketAddr>> {
    let targets: Vec<(&str, u16)> = match source {
        AddressSource::Dns { host, port } => vec![(host.as_str(), *port)],
        AddressSource::Endpoints(t) => t.iter().map(|(h, p)| (h.as_str(), *p)).collect(),
    };
    targets
        .into_iter()
        .map(|(h, p)| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, p))
        })
        .collect()
}

/// Resolves one backend now and stores the result. A failed lookup keeps the previous addresses
/// (a DNS hiccup must not take a healthy backend down) and records the error.
pub async fn resolve(backend: &Backend) {
    if let Some(addrs) = literal_addresses(&backend.source) {
        backend.set_addresses(addrs);
        return;
    }
    let targets: Vec<(String, u16)> = match &backend.source {
        AddressSource::Dns { host, port } => vec![(host.clone(), *port)],
        AddressSource::Endpoints(t) => t.clone(),
    };
    let mut all = Vec::new();
    let mut error = None;
    for (host, port) in targets {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(it) => all.extend(it),
            Err(e) => error = Some(format!("resolving {host}:{port}: {e}")),
        }
    }
    if let Some(e) = &error {
        tracing::warn!(backend = %backend.key.name, error = %e, "backend resolution failed");
    }
    *backend.last_error.lock() = error;
    if !all.is_empty() {
        backend.set_addresses(all);
    }
}

/// Resolves every backend that has no address yet (called by reload before a swap), waiting at
/// most `timeout` for those `wait_for` selects, so a new route's backend is usable the moment the
/// route is. The others (only plugins call them) resolve in the background and do not hold the
/// reload up; one already tried is left to the periodic refresh, so a name that resolves nowhere
/// is not looked up again at every reload (a config rewritten every 100 ms reloads that often).
pub async fn resolve_unresolved(
    backends: &Backends,
    timeout: Duration,
    wait_for: impl Fn(&BackendKey) -> bool,
) {
    let (waited, background): (Vec<Arc<Backend>>, Vec<Arc<Backend>>) = backends
        .all()
        .into_iter()
        .filter(|b| b.addresses().is_empty())
        .partition(|b| wait_for(&b.key));
    for b in background.into_iter().filter(|b| b.last_error().is_none()) {
        tokio::spawn(async move { resolve(&b).await });
    }
    let work = futures_lite_join(waited);
    let _ = tokio::time::timeout(timeout, work).await;
}

async fn futures_lite_join(pending: Vec<Arc<Backend>>) {
    let mut set = tokio::task::JoinSet::new();
    for b in pending {
        set.spawn(async move { resolve(&b).await });
    }
    while set.join_next().await.is_some() {}
}

/// Re-resolves every backend every `every`, for the life of the process.
pub fn spawn_refresher(backends: Arc<Backends>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for b in backends.all() {
                resolve(&b).await;
            }
        }
    })
}
