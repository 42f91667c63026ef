//! Backends: where a `backendRef` sends traffic. A name resolves through a `Service` resource when
//! there is one (ExternalName host, or the `wasmgate.io/endpoints` annotation), else by DNS.
//! Addresses are refreshed by a background task, never on the request path; requests pick an
//! address round robin from the current list.

mod resolve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;

pub use resolve::{resolve_unresolved, spawn_refresher};

/// Identity of a backend: the referenced name, its namespace and the port from the backendRef.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendKey {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// Where a backend's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AddressSource {
    /// Resolve `host:port` by DNS (a backendRef name without a Service, or an ExternalName).
    Dns { host: String, port: u16 },
    /// A fixed list of `host:port` targets (the endpoints annotation); host names are resolved too.
    Endpoints(Vec<(String, u16)>),
}

/// One backend. Shared by every rule that references it and kept across reloads while referenced,
/// so its resolved addresses and round-robin position survive config changes.
#[derive(Debug)]
pub struct Backend {
    pub key: BackendKey,
    pub source: AddressSource,
    /// Labels of the backend: the Service's, or `app: <name>` when there is no Service
    /// (WasmPlugin selectors match on them in the plugin-chain issue).
    pub labels: Vec<(String, String)>,
    addrs: ArcSwap<Vec<SocketAddr>>,
    next: AtomicUsize,
    /// The last resolution error, shown in `/config_dump`.
    last_error: Mutex<Option<String>>,
}

impl Backend {
    fn new(key: BackendKey, source: AddressSource, labels: Vec<(String, String)>) -> Self {
        let initial = resolve::literal_addresses(&source).unwrap_or_default();
        Self {
            key,
            source,
            labels,
            addrs: ArcSwap::from_pointee(initial),
            next: AtomicUsize::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The next address, round robin; `None` when nothing is resolved (the request gets a 503).
    pub fn pick(&self) -> Option<SocketAddr> {
        let addrs = self.addrs.load();
        match addrs.len() {
            0 => None,
            1 => Some(addrs[0]),
            n => Some(addrs[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    pub fn addresses(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }

    fn set_addresses(&self, mut new: Vec<SocketAddr>) {
        new.sort();
        new.dedup();
        if **self.addrs.load() != new {
            tracing::info!(backend = %self.key.name, port = self.key.port, addresses = ?new, "backend addresses changed");
            self.addrs.store(Arc::new(new));
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// Every backend referenced by the config in force.
#[derive(Default)]
pub struct Backends {
    map: Mutex<HashMap<BackendKey, Arc<Backend>>>,
}

impl Backends {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The backend for `key`, reusing the existing one when its address source and labels are
    /// unchanged (so a reload keeps resolved addresses).
    pub fn get_or_create(
        &self,
        key: BackendKey,
        source: AddressSource,
        labels: Vec<(String, String)>,
    ) -> Arc<Backend> {
        let mut map = self.map.lock();
        if let Some(b) = map.get(&key)
            && b.source == source
            && b.labels == labels
        {
            return b.clone();
        }
        let b = Arc::new(Backend::new(key.clone(), source, labels));
        map.insert(key, b.clone());
        b
    }

    /// Forgets backends no longer referenced (requests still holding them finish normally).
    pub fn retain(&self, keep: &std::collections::HashSet<BackendKey>) {
        self.map.lock().retain(|k, _| keep.contains(k));
    }

    pub fn all(&self) -> Vec<Arc<Backend>> {
        let mut v: Vec<_> = self.map.lock().values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}

/// A rule's `backendRefs` with their weights.
#[derive(Debug, Clone, Default)]
pub struct WeightedBackends {
    refs: Vec<(Arc<Backend>, u32)>,
    total: u64,
    /// backendRefs that cannot be used (e.g. to another namespace without a ReferenceGrant), with
    /// why and their weight: the Gateway API answers their share of the requests with a 500.
    refused: Vec<(Arc<str>, u32)>,
    refused_total: u64,
}

/// Why [`WeightedBackends::pick`] chose no backend; both answer 500 (Gateway API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBackend<'a> {
    /// No backendRefs, or every weight is 0.
    ZeroWeight,
    /// The request fell on the share of a refused backendRef (the reason).
    Refused(&'a str),
}

impl WeightedBackends {
    pub fn new(refs: Vec<(Arc<Backend>, u32)>) -> Self {
        Self::with_refused(refs, Vec::new())
    }

    /// Usable backends, and refused backendRefs `(reason, weight)` that keep their share.
    pub fn with_refused(refs: Vec<(Arc<Backend>, u32)>, refused: Vec<(Arc<str>, u32)>) -> Self {
        let total = refs.iter().map(|(_, w)| u64::from(*w)).sum();
        let refused_total = refused.iter().map(|(_, w)| u64::from(*w)).sum();
        Self {
            refs,
            total,
            refused,
            refused_total,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// A backend chosen in proportion to its weight, among usable and refused backendRefs alike.
    /// `Err` when every weight is 0 (or there are no backendRefs), or the choice fell on a
    /// refused backendRef: the Gateway API then requires a 500.
    pub fn pick(&self) -> Result<&Arc<Backend>, NoBackend<'_>> {
        let all = self.total + self.refused_total;
        if all == 0 {
            return Err(NoBackend::ZeroWeight);
        }
        if self.refused_total == 0 && self.refs.len() == 1 {
            return Ok(&self.refs[0].0);
        }
        let mut x = rand::random_range(0..all);
        for (b, w) in &self.refs {
            let w = u64::from(*w);
            if x < w {
                return Ok(b);
            }
            x -= w;
        }
        for (why, w) in &self.refused {
            let w = u64::from(*w);
            if x < w {
                return Err(NoBackend::Refused(why));
            }
            x -= w;
        }
        Err(NoBackend::ZeroWeight)
    }

    /// The usable backends.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Backend>, u32)> {
        self.refs.iter().map(|(b, w)| (b, *w))
    }

    /// The refused backendRefs: `(reason, weight)`.
    pub fn refused(&self) -> impl Iterator<Item = (&str, u32)> {
        self.refused.iter().map(|(why, w)| (&**why, *w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, addr: &str) -> Arc<Backend> {
        let (h, p) = addr.rsplit_once(':').unwrap();
        Arc::new(Backend::new(
            BackendKey {
                namespace: "default".into(),
                name: name.into(),
                port: p.parse().unwrap(),
            },
            AddressSource::Endpoints(vec![(h.into(), p.parse().unwrap())]),
            vec![],
        ))
    }

    #[test]
    fn weight_zero_is_never_picked_and_all_zero_picks_nothing() {
        let a = backend("a", "127.0.0.1:1");
        let b = backend("b", "127.0.0.1:2");
        let w = WeightedBackends::new(vec![(a.clone(), 0), (b.clone(), 5)]);
        for _ in 0..200 {
            assert_eq!(w.pick().unwrap().key.name, "b");
        }
        assert_eq!(
            WeightedBackends::new(vec![(a, 0), (b, 0)]).pick().err(),
            Some(NoBackend::ZeroWeight)
        );
    }

    #[test]
    fn a_refused_backend_keeps_its_share_and_gets_none() {
        let a = backend("a", "127.0.0.1:1");
        let w = WeightedBackends::with_refused(vec![(a, 1)], vec![(Arc::from("no grant"), 1)]);
        let n = 2000;
        let refused = (0..n)
            .filter(|_| w.pick().err() == Some(NoBackend::Refused("no grant")))
            .count();
        assert!((700..1300).contains(&refused), "{refused}");
        let only = WeightedBackends::with_refused(vec![], vec![(Arc::from("no grant"), 1)]);
        assert_eq!(only.pick().err(), Some(NoBackend::Refused("no grant")));
    }

    #[test]
    fn weights_split_traffic() {
        let a = backend("a", "127.0.0.1:1");
        let b = backend("b", "127.0.0.1:2");
        let w = WeightedBackends::new(vec![(a, 1), (b, 3)]);
        let n = 4000;
        let a_hits = (0..n).filter(|_| w.pick().unwrap().key.name == "a").count();
        assert!((700..1300).contains(&a_hits), "{a_hits}");
    }

    #[test]
    fn literal_endpoints_resolve_immediately_and_round_robin() {
        let b = Arc::new(Backend::new(
            BackendKey {
                namespace: "d".into(),
                name: "x".into(),
                port: 80,
            },
            AddressSource::Endpoints(vec![("127.0.0.1".into(), 1), ("127.0.0.2".into(), 2)]),
            vec![],
        ));
        let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap().port()).collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }
}
