//! The compiled configuration: everything a request needs, built from the resources in force by
//! one function, [`compile`], and published as an immutable snapshot (`ArcSwap`).
//!
//! WasmPlugin chains are part of the snapshot: [`compile`] asks the
//! [`PluginManager`] what runs for each WasmPlugin (loading new
//! versions in the background, off this path) and gives every (port, rule, backend) its chain.
//! Requests take the whole snapshot once, so they finish on the chains they started with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use wasmgate_conf as conf;

use crate::backends::{AddressSource, Backend, BackendKey, Backends};
use crate::plugins::chain::{self, Candidate, Target};
use crate::plugins::{PluginManager, PortChains};
use crate::routing::Entry;
use crate::routing::RouteTable;
use crate::routing::compile::{Attachment, ListenerRef, RouteInput, RouteProblem, compile_routes};
use crate::routing::host::HostPattern;
use crate::tls;

/// The live configuration, swapped atomically on reload.
pub type SharedConfig = Arc<ArcSwap<CompiledConfig>>;

/// One listening port and what serves on it.
#[derive(Debug, Clone)]
pub struct PortListener {
    pub port: u16,
    /// Present for HTTPS ports.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Identifies the certificates (hostnames and chains) so an unchanged port keeps its acceptor.
    pub tls_id: u64,
    /// `namespace/gateway/listener` of every Gateway listener on this port.
    pub names: Vec<String>,
}

/// Everything compiled from one version of the config directory.
#[derive(Default)]
pub struct CompiledConfig {
    /// Increases by one per successful compile; 0 is the empty config before the first load.
    pub generation: u64,
    pub routes: RouteTable,
    pub listeners: Vec<PortListener>,
    /// For `/config_dump`.
    pub attachments: Vec<Attachment>,
    pub problems: Vec<RouteProblem>,
    /// Per port, the chain of gateway-wide plugins for requests no route matches (they run
    /// before the 404, as Envoy's filters run before its router).
    pub unrouted_chains: HashMap<u16, crate::plugins::Chain>,
    /// The backends the routes use (the others are only for plugins' calls).
    pub routed: HashSet<BackendKey>,
}

impl CompiledConfig {
    pub fn is_tls_port(&self, port: u16) -> bool {
        self.listeners
            .iter()
            .any(|l| l.port == port && l.tls.is_some())
    }
}

/// The resources in force, as the compiler reads them.
#[derive(Default)]
pub struct Resources<'a> {
    pub gateways: Vec<&'a conf::Gateway>,
    /// Each route with its precedence age (see [`RouteInput::age`]).
    pub routes: Vec<(&'a conf::HttpRoute, (i64, u32, u64))>,
    pub services: HashMap<(&'a str, &'a str), &'a conf::Service>,
    pub secrets: HashMap<(&'a str, &'a str), &'a conf::Secret>,
    /// WasmPlugins in Istio's chain order (`Snapshot::wasm_plugins_in_order`).
    pub wasm_plugins: Vec<&'a conf::WasmPlugin>,
    /// Cross-namespace backendRefs and certificateRefs need one of these.
    pub reference_grants: Vec<&'a conf::ReferenceGrant>,
    /// By name; `allowedRoutes.namespaces.selector` matches their labels.
    pub namespaces: HashMap<&'a str, &'a conf::Namespace>,
}

impl Resources<'_> {
    fn reference_permitted(&self, from: &conf::ObjectRef<'_>, to: &conf::ObjectRef<'_>) -> bool {
        conf::reference_permitted(self.reference_grants.iter().copied(), from, to)
    }
}

/// Settings of the compiler that come from the command line.
#[derive(Clone)]
pub struct CompileOptions {
    /// Route timeout when a rule sets none.
    pub default_timeout: Option<Duration>,
    /// Where per-route metric handles are resolved (none in pure tests).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Loads WasmPlugins (none in pure tests: no chains are built).
    pub plugins: Option<Arc<PluginManager>>,
    /// `--label` flags: labels of this gateway beyond the Gateway resources' own.
    pub gateway_labels: Vec<(String, String)>,
}

/// Builds the routing table, listeners and TLS configs. Never fails: unusable parts are left out
/// and listed in [`CompiledConfig::problems`] (conf has already rejected invalid resources).
pub fn compile(
    res: &Resources<'_>,
    backends: &Backends,
    opts: &CompileOptions,
    generation: u64,
) -> CompiledConfig {
    let mut problems = Vec::new();
    let (listener_refs, listeners) = compile_listeners(res, &mut problems);

    let routes: Vec<RouteInput<'_>> = res
        .routes
        .iter()
        .map(|(route, age)| {
            let ns = route.metadata.namespace.as_str();
            RouteInput {
                route,
                age: *age,
                namespace_labels: conf::namespace_labels(ns, res.namespaces.get(ns).copied()),
            }
        })
        .collect();
    let mut used = HashSet::new();
    let mut backend_fn =
        |ns: &str, route: &str, r: &conf::HttpBackendRef| -> Result<Arc<Backend>, String> {
            let b = backend_for(res, backends, ns, route, r)?;
            used.insert(b.key.clone());
            Ok(b)
        };
    let compiled = compile_routes(
        &listener_refs,
        &routes,
        &mut backend_fn,
        opts.default_timeout,
        opts.metrics.as_deref(),
    );
    let routed = used.clone();
    call_backends(res, backends, &mut used);
    backends.retain(&used);
    problems.extend(compiled.problems);
    let mut entries = compiled.entries;
    let mut unrouted_chains = HashMap::new();
    if let Some(mgr) = &opts.plugins {
        unrouted_chains = attach_chains(
            res,
            mgr,
            opts,
            &listener_refs,
            &compiled.attachments,
            &mut entries,
        );
    }

    CompiledConfig {
        generation,
        routes: RouteTable::from_entries(entries),
        listeners,
        attachments: compiled.attachments,
        problems,
        unrouted_chains,
        routed,
    }
}

/// Resolves every WasmPlugin (starting background loads) and gives each (port, rule) its chains.
fn attach_chains(
    res: &Resources<'_>,
    mgr: &Arc<PluginManager>,
    opts: &CompileOptions,
    listeners: &[ListenerRef],
    attachments: &[Attachment],
    entries: &mut [(u16, Entry)],
) -> HashMap<u16, crate::plugins::Chain> {
    let candidates: Vec<Candidate<'_>> = res
        .wasm_plugins
        .iter()
        .map(|wp| {
            let secret = wp.spec.image_pull_secret.as_deref().and_then(|name| {
                res.secrets
                    .get(&(wp.metadata.namespace.as_str(), name))
                    .and_then(|s| s.docker_config_json())
                    .map(|b| b.expose())
            });
            Candidate {
                plugin: wp,
                resolved: mgr.resolve(wp, secret),
            }
        })
        .collect();
    mgr.retain(
        &res.wasm_plugins
            .iter()
            .map(|wp| wp.plugin_identity())
            .collect(),
    );
    if candidates.is_empty() {
        return HashMap::new();
    }
    // Gateway labels: Istio's default, then the resource's, then the flags.
    let gateway_labels = |gw: &conf::Gateway| {
        let mut l = BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]);
        l.extend(gw.metadata.labels.clone());
        l.extend(opts.gateway_labels.iter().cloned());
        l
    };
    let mut memo: HashMap<(u16, *const crate::routing::Rule), Option<Arc<PortChains>>> =
        HashMap::new();
    for (port, entry) in entries.iter_mut() {
        let key = (*port, Arc::as_ptr(&entry.rule));
        let chains = memo
            .entry(key)
            .or_insert_with(|| {
                let rule = &entry.rule;
                let gateways: Vec<(String, String, BTreeMap<String, String>)> = attachments
                    .iter()
                    .filter(|a| a.port == *port && *a.route == *rule.route)
                    .filter_map(|a| {
                        let (ns, name) = a.gateway.split_once('/')?;
                        let gw = res
                            .gateways
                            .iter()
                            .find(|g| g.metadata.namespace == ns && g.metadata.name == name)?;
                        Some((ns.to_owned(), name.to_owned(), gateway_labels(gw)))
                    })
                    .collect();
                let build = |backend: Option<(&Backend, &BTreeMap<String, String>)>| {
                    chain::build(
                        &candidates,
                        &Target {
                            port: *port,
                            gateways: &gateways,
                            route: Some(&rule.route),
                            backend,
                        },
                    )
                };
                let by_backend: Vec<_> = rule
                    .backends
                    .iter()
                    .map(|(b, _)| {
                        let labels: BTreeMap<String, String> = b.labels.iter().cloned().collect();
                        (b.clone(), build(Some((b, &labels))))
                    })
                    .collect();
                let without_backend = build(None);
                (!without_backend.is_empty() || by_backend.iter().any(|(_, c)| !c.is_empty())).then(
                    || {
                        Arc::new(PortChains {
                            by_backend,
                            without_backend,
                        })
                    },
                )
            })
            .clone();
        entry.chains = chains;
    }
    // Requests no route matches: gateway-wide plugins of the port's gateways.
    let mut unrouted = HashMap::new();
    for l in listeners {
        if unrouted.contains_key(&l.port) {
            continue;
        }
        let gateways: Vec<(String, String, BTreeMap<String, String>)> = res
            .gateways
            .iter()
            .filter(|g| {
                listeners.iter().any(|o| {
                    o.port == l.port
                        && o.gateway == g.metadata.name
                        && o.gateway_namespace == g.metadata.namespace
                })
            })
            .map(|g| {
                (
                    g.metadata.namespace.clone(),
                    g.metadata.name.clone(),
                    gateway_labels(g),
                )
            })
            .collect();
        let chain = chain::build(
            &candidates,
            &Target {
                port: l.port,
                gateways: &gateways,
                route: None,
                backend: None,
            },
        );
        if !chain.is_empty() {
            unrouted.insert(l.port, chain);
        }
    }
    unrouted
}

/// A port being assembled: HTTPS?, listener names, certificates by hostname.
type PortBuild = (
    bool,
    Vec<String>,
    Vec<(HostPattern, Arc<rustls::sign::CertifiedKey>)>,
);

fn compile_listeners(
    res: &Resources<'_>,
    problems: &mut Vec<RouteProblem>,
) -> (Vec<ListenerRef>, Vec<PortListener>) {
    let mut refs = Vec::new();
    // BTreeMap for a stable order in dumps and logs.
    let mut ports: BTreeMap<u16, PortBuild> = BTreeMap::new();
    let mut gateways = res.gateways.clone();
    gateways.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for gw in gateways {
        let ns = &gw.metadata.namespace;
        let gname = format!("{ns}/{}", gw.metadata.name);
        for (i, l) in gw.spec.listeners.iter().enumerate() {
            let field = format!("spec.listeners[{i}]");
            let mut problem = |message: String| {
                tracing::warn!(gateway = %gname, listener = %l.name, %message, "listener not served");
                problems.push(RouteProblem {
                    route: format!("Gateway {gname}"),
                    field: field.clone(),
                    message,
                });
            };
            let hostname = l
                .hostname
                .as_deref()
                .map_or(HostPattern::Any, HostPattern::parse);
            let cert = if l.is_https() {
                match listener_cert(res, ns, &gw.metadata.name, l) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        problem(e);
                        continue;
                    }
                }
            } else {
                None
            };
            let entry = ports
                .entry(l.port)
                .or_insert_with(|| (l.is_https(), Vec::new(), Vec::new()));
            if entry.0 != l.is_https() {
                problem(format!(
                    "port {} is already served as {} by another listener",
                    l.port,
                    if entry.0 { "HTTPS" } else { "HTTP" }
                ));
                continue;
            }
            entry.1.push(format!("{gname}/{}", l.name));
            if let Some(c) = cert {
                entry.2.push((hostname.clone(), c));
            }
            refs.push(ListenerRef {
                gateway_namespace: ns.clone(),
                gateway: gw.metadata.name.clone(),
                name: l.name.clone(),
                port: l.port,
                hostname,
                allowed_routes: l.allowed_routes.clone(),
            });
        }
    }
    let listeners = ports
        .into_iter()
        .map(|(port, (https, names, certs))| PortListener {
            port,
            tls_id: tls::fingerprint(&certs),
            tls: https.then(|| tls::server_config(certs)),
            names,
        })
        .collect();
    (refs, listeners)
}

fn listener_cert(
    res: &Resources<'_>,
    gateway_ns: &str,
    gateway: &str,
    l: &conf::Listener,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let tls = l.tls.as_ref().ok_or("HTTPS listener without tls")?;
    let r = tls
        .certificate_refs
        .first()
        .ok_or("tls.certificateRefs is empty")?;
    let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
    let to = conf::ObjectRef {
        group: "",
        kind: "Secret",
        namespace: ns,
        name: &r.name,
    };
    let from = conf::gateway_ref(gateway_ns, gateway);
    if !res.reference_permitted(&from, &to) {
        return Err(format!(
            "tls.certificateRefs[0]: {}",
            conf::not_permitted(&from, &to)
        ));
    }
    let secret = res
        .secrets
        .get(&(ns, r.name.as_str()))
        .ok_or_else(|| format!("tls.certificateRefs[0]: Secret {ns}/{} not found", r.name))?;
    let (crt, key) = secret
        .tls_pair()
        .ok_or_else(|| format!("Secret {ns}/{} has no tls.crt and tls.key", r.name))?;
    tls::certified_key(crt.expose(), key.expose())
        .map_err(|e| format!("Secret {ns}/{}: {e}", r.name))
}

/// Resolves a backendRef: through a Service resource when one exists, else the name by DNS. A
/// Service in another namespace needs a ReferenceGrant there.
fn backend_for(
    res: &Resources<'_>,
    backends: &Backends,
    route_ns: &str,
    route: &str,
    r: &conf::HttpBackendRef,
) -> Result<Arc<Backend>, String> {
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Service" {
        return Err(format!(
            "backend kind {:?} (group {:?}) is not supported; use a Service",
            r.kind, r.group
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(route_ns);
    let from = conf::http_route_ref(route_ns, route);
    let to = conf::ObjectRef {
        group: &r.group,
        kind: &r.kind,
        namespace: ns,
        name: &r.name,
    };
    if !res.reference_permitted(&from, &to) {
        return Err(conf::not_permitted(&from, &to));
    }
    let port = r.port.ok_or("port is required")?;
    let key = BackendKey {
        namespace: ns.to_owned(),
        name: r.name.clone(),
        port,
    };
    let (source, labels) = match res.services.get(&(ns, r.name.as_str())) {
        Some(svc) => service_source(svc, port),
        None => (
            AddressSource::Dns {
                host: r.name.clone(),
                port,
            },
            vec![("app".to_owned(), r.name.clone())],
        ),
    };
    Ok(backends.get_or_create(key, source, labels))
}

/// Where port `port` of `svc` is and the labels plugins' selectors see: its endpoints, else its
/// ExternalName, else its own name by DNS (at the target port).
fn service_source(svc: &conf::Service, port: u16) -> (AddressSource, Vec<(String, String)>) {
    let labels = svc
        .labels()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let eps = svc.endpoints();
    let source = if svc.is_external_name() {
        AddressSource::Dns {
            host: svc.spec.external_name.clone().unwrap_or_default(),
            port,
        }
    } else if !eps.is_empty() {
        AddressSource::Endpoints(eps.into_iter().map(|e| (e.host, e.port)).collect())
    } else {
        AddressSource::Dns {
            host: svc.metadata.name.clone(),
            port: svc.target_port(port),
        }
    };
    (source, labels)
}

/// Backends for plugins' HTTP and gRPC calls beyond the routes' own: every port of every Service
/// that says where it is (`wasmgate.io/endpoints` or `type: ExternalName`), as Envoy has a cluster
/// for each service, routed or not. A Service that says nothing is only looked up by DNS when a
/// route uses it: without Kubernetes' DNS, most such names (from manifests dropped in whole)
/// resolve nowhere, and each would be looked up and warned about every `--dns-refresh`.
fn call_backends(res: &Resources<'_>, backends: &Backends, used: &mut HashSet<BackendKey>) {
    for ((ns, name), svc) in &res.services {
        if !svc.is_external_name() && svc.endpoints().is_empty() {
            continue;
        }
        for p in &svc.spec.ports {
            let key = BackendKey {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
                port: p.port,
            };
            if used.contains(&key) {
                continue;
            }
            let (source, labels) = service_source(svc, p.port);
            used.insert(backends.get_or_create(key, source, labels).key.clone());
        }
    }
}

/// The compiled part of `/config_dump`.
pub fn dump(cfg: &CompiledConfig, backends: &Backends) -> serde_json::Value {
    #[derive(Serialize)]
    struct RouteEntry<'a> {
        port: u16,
        host: String,
        route: &'a str,
        rule: usize,
        #[serde(rename = "match")]
        matcher: String,
        backends: Vec<String>,
        request_timeout_ms: Option<u128>,
        backend_timeout_ms: Option<u128>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        chains: Vec<serde_json::Value>,
    }
    let mut routes = Vec::new();
    let mut ports: Vec<_> = cfg.routes.ports.iter().collect();
    ports.sort_by_key(|(p, _)| **p);
    for (port, pr) in ports {
        for e in &pr.entries {
            routes.push(RouteEntry {
                port: *port,
                host: e.host.to_string(),
                route: &e.rule.route,
                rule: e.rule.rule_index,
                matcher: describe_match(&e.matcher),
                backends: e
                    .rule
                    .backends
                    .iter()
                    .map(|(b, w)| {
                        format!(
                            "{}/{}:{} weight={w}",
                            b.key.namespace, b.key.name, b.key.port
                        )
                    })
                    .chain(
                        e.rule
                            .backends
                            .refused()
                            .map(|(why, w)| format!("refused weight={w}: {why}")),
                    )
                    .collect(),
                request_timeout_ms: e.rule.request_timeout.map(|t| t.as_millis()),
                backend_timeout_ms: e.rule.backend_timeout.map(|t| t.as_millis()),
                chains: e
                    .chains
                    .iter()
                    .flat_map(|c| c.by_backend.iter())
                    .map(|(b, c)| {
                        serde_json::json!({
                            "backend": format!("{}/{}:{}", b.key.namespace, b.key.name, b.key.port),
                            "chain": chain::dump_chain(c),
                        })
                    })
                    .collect(),
            });
        }
    }
    let backend_list: Vec<_> = backends
        .all()
        .iter()
        .map(|b| {
            serde_json::json!({
                "backend": format!("{}/{}:{}", b.key.namespace, b.key.name, b.key.port),
                "source": b.source,
                "addresses": b.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "lastError": b.last_error(),
            })
        })
        .collect();
    serde_json::json!({
        "generation": cfg.generation,
        "routes": routes,
        "attachments": cfg.attachments,
        "problems": cfg.problems,
        "backends": backend_list,
    })
}

fn describe_match(m: &crate::routing::matcher::RouteMatch) -> String {
    use crate::routing::matcher::{PathMatch, ValueMatch};
    let mut s = match &m.path {
        PathMatch::Exact(p) => format!("path={p}"),
        PathMatch::Prefix(p) => format!("prefix={p}"),
        PathMatch::Regex(r) => format!("regex={}", r.as_str()),
    };
    if let Some(method) = &m.method {
        s.push_str(&format!(" method={method}"));
    }
    let v = |v: &ValueMatch| match v {
        ValueMatch::Exact(e) => e.clone(),
        ValueMatch::Regex(r) => format!("~{}", r.as_str()),
    };
    for h in &m.headers {
        s.push_str(&format!(" header:{}={}", h.name, v(&h.value)));
    }
    for q in &m.query {
        s.push_str(&format!(" query:{}={}", q.name, v(&q.value)));
    }
    s
}
