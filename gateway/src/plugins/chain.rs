//! Targeting (Istio's, plus HTTPRoute targetRefs) and the chains precomputed per
//! (listener port, route rule, backend), so the request path only indexes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use wasmgate_conf as conf;

use super::manager::{Active, DenyAll, Resolved};
use crate::backends::Backend;

/// One step of a chain.
#[derive(Clone)]
pub enum ChainLink {
    Run(Arc<Active>),
    /// 403 `RBAC: access denied` (FAIL_CLOSE plugin whose module is unavailable).
    DenyAll(Arc<DenyAll>),
}

/// The plugins of one request, in order (Istio's: phase, priority, age, name, namespace).
pub type Chain = Arc<[ChainLink]>;

/// The chains of one (port, rule): one per backend of the rule (backend selectors and Service
/// targetRefs make them differ), and one for a request the rule has no backend for.
pub struct PortChains {
    pub by_backend: Vec<(Arc<Backend>, Chain)>,
    /// The plugins targeting the gateway or the route: they run before the rule's 500, as
    /// Envoy's filters run before its router answers.
    pub without_backend: Chain,
}

impl std::fmt::Debug for PortChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortChains")
            .field("backends", &self.by_backend.len())
            .finish_non_exhaustive()
    }
}

impl PortChains {
    /// The chain for the picked backend (empty if the backend is unknown, which cannot happen for
    /// a backend picked from the same rule).
    pub fn for_backend(&self, b: &Arc<Backend>) -> Option<&Chain> {
        self.by_backend
            .iter()
            .find(|(x, _)| Arc::ptr_eq(x, b))
            .map(|(_, c)| c)
            .filter(|c| !c.is_empty())
    }

    /// The chain for a request the rule has no usable backend for.
    pub fn for_no_backend(&self) -> Option<&Chain> {
        Some(&self.without_backend).filter(|c| !c.is_empty())
    }
}

/// A WasmPlugin with what the manager resolved for it.
pub struct Candidate<'a> {
    pub plugin: &'a conf::WasmPlugin,
    pub resolved: Resolved,
}

/// Where a request runs: what targeting compares against.
pub struct Target<'a> {
    pub port: u16,
    /// `(namespace, name, labels)` of the Gateways whose listeners on `port` carry the route.
    pub gateways: &'a [(String, String, BTreeMap<String, String>)],
    /// `namespace/name` of the HTTPRoute; `None` for requests no route matched.
    pub route: Option<&'a str>,
    /// The backend and its labels; `None` for requests no route matched.
    pub backend: Option<(&'a Backend, &'a BTreeMap<String, String>)>,
}

/// Istio's root namespace: a WasmPlugin there applies in every namespace.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Whether `wp` applies to requests at `t`. As Istio, a plugin outside the root namespace only
/// applies to workloads of its own namespace: the Gateway's, or (for backend targeting) the
/// backend's.
pub fn applies(wp: &conf::WasmPlugin, t: &Target<'_>) -> bool {
    let spec = &wp.spec;
    if !spec.matches_gateway_port(t.port) {
        return false;
    }
    let plugin_ns = &wp.metadata.namespace;
    let root = plugin_ns == ROOT_NAMESPACE;
    let gateway_in_scope = |gns: &str| root || plugin_ns == gns;
    let backend_in_scope = t
        .backend
        .is_some_and(|(b, _)| root || *plugin_ns == b.key.namespace);
    if spec.is_untargeted() {
        return t.gateways.iter().any(|(gns, _, _)| gateway_in_scope(gns)) || backend_in_scope;
    }
    if !spec.target_refs.is_empty() {
        return spec.target_refs.iter().any(|r| {
            let ns = r.namespace.as_deref().unwrap_or(plugin_ns);
            if r.is_gateway() {
                t.gateways
                    .iter()
                    .any(|(gns, g, _)| gns == ns && *g == r.name)
            } else if r.is_service() {
                t.backend
                    .is_some_and(|(b, _)| b.key.namespace == ns && b.key.name == r.name)
            } else if r.is_http_route() {
                t.route
                    .is_some_and(|route| route.split_once('/') == Some((ns, r.name.as_str())))
            } else {
                false
            }
        });
    }
    match &spec.selector {
        Some(sel) => {
            t.gateways
                .iter()
                .any(|(gns, _, labels)| gateway_in_scope(gns) && sel.matches(labels))
                || (backend_in_scope && t.backend.is_some_and(|(_, l)| sel.matches(l)))
        }
        None => true,
    }
}

/// The chain for one target: candidates in order, filtered by targeting, skipped ones left out.
pub fn build(candidates: &[Candidate<'_>], t: &Target<'_>) -> Chain {
    candidates
        .iter()
        .filter(|c| applies(c.plugin, t))
        .filter_map(|c| match &c.resolved {
            Resolved::Run(a) => Some(ChainLink::Run(a.clone())),
            Resolved::DenyAll(d) => Some(ChainLink::DenyAll(d.clone())),
            Resolved::Skip => None,
        })
        .collect()
}

/// One chain step as `/config_dump` shows it.
#[derive(Serialize)]
pub struct DumpLink {
    pub plugin: String,
    pub phase: &'static str,
    pub priority: Option<i32>,
    pub digest: Option<String>,
    pub state: &'static str,
}

pub fn dump_chain(c: &Chain) -> Vec<DumpLink> {
    c.iter()
        .map(|l| match l {
            ChainLink::Run(a) => DumpLink {
                plugin: a.name.to_string(),
                phase: a.phase,
                priority: a.priority,
                digest: Some(a.digest.clone()),
                state: if a.plugin.failure().is_some() {
                    "failed"
                } else {
                    "running"
                },
            },
            ChainLink::DenyAll(d) => DumpLink {
                plugin: d.name.to_string(),
                phase: "",
                priority: None,
                digest: None,
                state: "deny-all",
            },
        })
        .collect()
}
