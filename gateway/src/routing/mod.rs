//! The routing table: HTTPRoute rules compiled per listening port and ordered by Gateway API
//! precedence. Pure data and functions; no sockets, no Pingora, unit-tested on its own.

pub mod compile;
pub mod filters;
pub mod host;
pub mod matcher;
pub mod precedence;

#[cfg(test)]
mod tests;

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

use crate::backends::WeightedBackends;
use filters::RuleFilters;
use host::HostPattern;
use matcher::RouteMatch;
use precedence::Precedence;

/// One HTTPRoute rule, compiled. Shared (`Arc`) by every entry that routes to it.
///
/// This is the unit the plugin-chain issue extends: a rule's WasmPlugin chain will live here,
/// built at compile time, so a request that matched a rule runs exactly that rule's chain.
#[derive(Debug)]
pub struct Rule {
    /// `namespace/name` of the HTTPRoute; the `route` label of metrics and access logs.
    pub route: Arc<str>,
    pub rule_index: usize,
    pub filters: RuleFilters,
    pub backends: WeightedBackends,
    /// `timeouts.request`: the whole request, from its start (default `--upstream-timeout`;
    /// `None` when disabled with `0s`).
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`: one upstream attempt (`None` when unset or `0s`).
    pub backend_timeout: Option<Duration>,
    /// `wasmgate_requests_total{route, code="200"}`, pre-resolved (absent in pure tests).
    pub ok_counter: Option<prometheus::IntCounter>,
}

/// One (hostname, match) pair of a rule, in precedence order within its port.
#[derive(Debug)]
pub struct Entry {
    pub host: HostPattern,
    pub matcher: RouteMatch,
    pub rule: Arc<Rule>,
    pub precedence: Precedence,
    /// WasmPlugin chains of this rule on this entry's port, per backend; `None` when no plugin
    /// applies (such routes pay nothing for plugins).
    pub chains: Option<Arc<crate::plugins::PortChains>>,
}

/// The entries of one listening port (every Gateway listener bound to that port).
#[derive(Debug, Default)]
pub struct PortRoutes {
    /// Sorted by [`Precedence`]: the first entry that matches wins.
    pub entries: Vec<Entry>,
}

/// Routes of every port. Immutable once built; a reload builds a new one.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// FxHash: looked up on every request, keyed by our own listener ports.
    pub ports: FxHashMap<u16, PortRoutes>,
}

/// What a request is routed on.
pub struct RequestView<'a> {
    pub port: u16,
    /// Normalized with [`host::normalize_host`].
    pub host: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl Rule {
    /// The upstream wait allowed now, for a request that started `elapsed()` ago: what remains
    /// of the request timeout, bounded by the backend request timeout. `Some(ZERO)` means
    /// expired. The clock is read only for a route with a request timeout.
    pub fn upstream_timeout(&self, elapsed: impl FnOnce() -> Duration) -> Option<Duration> {
        let remaining = self.request_timeout.map(|t| t.saturating_sub(elapsed()));
        match (remaining, self.backend_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl RouteTable {
    pub fn from_entries(entries: impl IntoIterator<Item = (u16, Entry)>) -> Self {
        let mut ports: FxHashMap<u16, PortRoutes> = FxHashMap::default();
        for (port, e) in entries {
            ports.entry(port).or_default().entries.push(e);
        }
        for p in ports.values_mut() {
            p.entries.sort_by(|a, b| a.precedence.cmp(&b.precedence));
        }
        Self { ports }
    }

    /// The highest-precedence entry matching the request, or `None` (404).
    pub fn lookup(&self, req: &RequestView<'_>) -> Option<&Entry> {
        self.ports.get(&req.port)?.entries.iter().find(|e| {
            e.host.matches(req.host)
                && e.matcher
                    .matches(req.method, req.path, req.query, req.headers)
        })
    }

    pub fn entry_count(&self) -> usize {
        self.ports.values().map(|p| p.entries.len()).sum()
    }
}
