//! HTTPRoutes (as parsed and validated by `conf`) to routing entries: attachment to listeners,
//! hostname intersection, matches, filters, backends and timeouts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;
use wasmgate_conf as conf;

use super::filters::{self, HeaderModifier, PathModifier, Redirect, RuleFilters, UrlRewrite};
use super::host::HostPattern;
use super::matcher::{self, HeaderMatch, PathMatch, QueryMatch, RouteMatch, ValueMatch};
use super::precedence::Precedence;
use super::{Entry, Rule};
use crate::backends::{Backend, WeightedBackends};
use crate::metrics::Metrics;

/// A Gateway listener routes can attach to.
#[derive(Debug, Clone)]
pub struct ListenerRef {
    pub gateway_namespace: String,
    pub gateway: String,
    pub name: String,
    pub port: u16,
    pub hostname: HostPattern,
    /// Which routes may attach (namespaces, kinds).
    pub allowed_routes: conf::AllowedRoutes,
}

/// A route with its age for precedence: `(unix seconds, nanos, first-seen sequence)`, from
/// `metadata.creationTimestamp` when set, else the time the gateway first saw the route.
pub struct RouteInput<'a> {
    pub route: &'a conf::HttpRoute,
    pub age: (i64, u32, u64),
    /// The labels of the route's namespace (`allowedRoutes.namespaces.selector` reads them).
    pub namespace_labels: BTreeMap<String, String>,
}

/// Why (part of) a route does not serve; shown in `/config_dump` and logged.
#[derive(Debug, Clone, Serialize)]
pub struct RouteProblem {
    pub route: String,
    pub field: String,
    pub message: String,
}

/// Where a route attached, for `/config_dump`.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub route: String,
    pub gateway: String,
    pub listener: String,
    pub port: u16,
    pub hostnames: Vec<String>,
}

/// The result of [`compile_routes`].
#[derive(Default)]
pub struct CompiledRoutes {
    pub entries: Vec<(u16, Entry)>,
    pub attachments: Vec<Attachment>,
    pub problems: Vec<RouteProblem>,
}

/// Resolves a backendRef of a route (`namespace`, `name`) to a shared backend, or explains why it
/// is refused (its share of the rule's requests then gets a 500).
pub type BackendFn<'a> =
    dyn FnMut(&str, &str, &conf::HttpBackendRef) -> Result<Arc<Backend>, String> + 'a;

/// Compiles every route against the listeners. Never fails as a whole: a part that cannot be used
/// is left out and reported in [`CompiledRoutes::problems`].
pub fn compile_routes(
    listeners: &[ListenerRef],
    routes: &[RouteInput<'_>],
    backend: &mut BackendFn<'_>,
    default_timeout: Option<Duration>,
    metrics: Option<&Metrics>,
) -> CompiledRoutes {
    let mut out = CompiledRoutes::default();
    for input in routes {
        compile_route(
            listeners,
            input,
            backend,
            default_timeout,
            metrics,
            &mut out,
        );
    }
    out
}

fn compile_route(
    listeners: &[ListenerRef],
    input: &RouteInput<'_>,
    backend: &mut BackendFn<'_>,
    default_timeout: Option<Duration>,
    metrics: Option<&Metrics>,
    out: &mut CompiledRoutes,
) {
    let route = input.route;
    let meta = &route.metadata;
    let route_name = format!("{}/{}", meta.namespace, meta.name);
    let problem = |out: &mut CompiledRoutes, field: String, message: String| {
        tracing::warn!(route = %route_name, %field, %message, "route problem");
        out.problems.push(RouteProblem {
            route: route_name.clone(),
            field,
            message,
        });
    };

    // (port, effective hostname) pairs this route serves, deduplicated across listeners.
    let route_hosts: Vec<HostPattern> = if route.spec.hostnames.is_empty() {
        vec![HostPattern::Any]
    } else {
        route
            .spec
            .hostnames
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect()
    };
    let mut targets: Vec<(u16, HostPattern)> = Vec::new();
    for (i, parent) in route.spec.parent_refs.iter().enumerate() {
        let ns = route.parent_namespace(parent);
        let mut attached = false;
        // Listeners whose allowedRoutes refuse the route, with why.
        let mut refusals = Vec::new();
        let mut admitting = 0;
        for l in listeners.iter().filter(|l| {
            l.gateway_namespace == ns
                && l.gateway == parent.name
                && parent.section_name.as_ref().is_none_or(|s| *s == l.name)
                && parent.port.is_none_or(|p| p == l.port)
        }) {
            if let Err(why) = l.allowed_routes.admits(
                ns,
                &meta.namespace,
                conf::allowed_routes::HTTP_ROUTE_KIND,
                &input.namespace_labels,
            ) {
                refusals.push(format!("listener {} ({why})", l.name));
                continue;
            }
            admitting += 1;
            let hosts: Vec<HostPattern> = route_hosts
                .iter()
                .filter_map(|h| h.intersect(&l.hostname))
                .collect();
            if hosts.is_empty() {
                continue;
            }
            attached = true;
            out.attachments.push(Attachment {
                route: route_name.clone(),
                gateway: format!("{ns}/{}", parent.name),
                listener: l.name.clone(),
                port: l.port,
                hostnames: hosts.iter().map(ToString::to_string).collect(),
            });
            for h in hosts {
                if !targets.contains(&(l.port, h.clone())) {
                    targets.push((l.port, h));
                }
            }
        }
        if !attached && admitting == 0 && !refusals.is_empty() {
            problem(
                out,
                format!("spec.parentRefs[{i}]"),
                format!(
                    "not attached: not allowed by Gateway {ns}/{} {}",
                    parent.name,
                    refusals.join(", ")
                ),
            );
        } else if !attached {
            problem(
                out,
                format!("spec.parentRefs[{i}]"),
                format!(
                    "not attached: no listener of Gateway {ns}/{}{}{} accepts this route's hostnames",
                    parent.name,
                    parent
                        .section_name
                        .as_ref()
                        .map(|s| format!(" named {s:?}"))
                        .unwrap_or_default(),
                    parent
                        .port
                        .map(|p| format!(" on port {p}"))
                        .unwrap_or_default(),
                ),
            );
        }
    }
    if targets.is_empty() {
        return;
    }

    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{ri}]");
        let compiled = match compile_rule(&route_name, ri, rule, meta, backend, default_timeout) {
            Ok(c) => c,
            Err((field, message)) => {
                problem(out, format!("{f}.{field}"), message);
                continue;
            }
        };
        for (field, message) in compiled.refused {
            problem(out, format!("{f}.{field}"), message);
        }
        let mut rule = compiled.rule;
        rule.ok_counter = metrics.map(|m| m.ok_counter(&route_name));
        let rule_arc = Arc::new(rule);
        for (mi, m) in compiled.matches.into_iter().enumerate() {
            for (port, host) in &targets {
                out.entries.push((
                    *port,
                    Entry {
                        precedence: Precedence::new(
                            host,
                            &m,
                            input.age,
                            route_name.clone(),
                            ri,
                            mi,
                        ),
                        host: host.clone(),
                        matcher: m.clone(),
                        rule: rule_arc.clone(),
                        chains: None,
                    },
                ));
            }
        }
    }
}

struct CompiledRule {
    rule: Rule,
    matches: Vec<RouteMatch>,
    /// backendRefs refused (the rule still serves; their share gets 500), to report.
    refused: Vec<FieldError>,
}

type FieldError = (String, String);

fn compile_rule(
    route_name: &str,
    index: usize,
    rule: &conf::HttpRouteRule,
    route: &conf::ObjectMeta,
    backend: &mut BackendFn<'_>,
    default_timeout: Option<Duration>,
) -> Result<CompiledRule, FieldError> {
    let matches = if rule.matches.is_empty() {
        vec![RouteMatch::any()]
    } else {
        rule.matches
            .iter()
            .enumerate()
            .map(|(i, m)| compile_match(m).map_err(|(f, e)| (format!("matches[{i}].{f}"), e)))
            .collect::<Result<Vec<_>, _>>()?
    };
    let filters = compile_filters(&rule.filters)?;

    // Gateway API: an invalid backendRef does not drop the rule; the requests that would have
    // gone to it get a 500, in proportion to its weight.
    let mut refs = Vec::with_capacity(rule.backend_refs.len());
    let mut refused = Vec::new();
    let mut refused_weights = Vec::new();
    for (i, r) in rule.backend_refs.iter().enumerate() {
        match backend(&route.namespace, &route.name, r) {
            Ok(b) => refs.push((b, r.weight)),
            Err(e) => {
                refused_weights.push((Arc::from(e.as_str()), r.weight));
                refused.push((
                    format!("backendRefs[{i}]"),
                    format!("{e}; requests for this backend get 500"),
                ));
            }
        }
    }
    // An explicit "0s" disables a timeout; an absent `request` keeps the default.
    let request_timeout = match rule.timeouts.as_ref().and_then(|t| t.request.as_ref()) {
        Some(_) => rule.timeouts.as_ref().and_then(|t| t.request_timeout()),
        None => default_timeout,
    };
    let backend_timeout = rule
        .timeouts
        .as_ref()
        .and_then(|t| t.backend_request_timeout());
    Ok(CompiledRule {
        rule: Rule {
            route: Arc::from(route_name),
            rule_index: index,
            filters,
            backends: WeightedBackends::with_refused(refs, refused_weights),
            request_timeout,
            backend_timeout,
            ok_counter: None,
        },
        matches,
        refused,
    })
}

fn compile_match(m: &conf::HttpRouteMatch) -> Result<RouteMatch, FieldError> {
    let path = match m.path.match_type {
        conf::PathMatchType::Exact => PathMatch::Exact(m.path.value.clone()),
        conf::PathMatchType::PathPrefix => PathMatch::prefix(&m.path.value),
        conf::PathMatchType::RegularExpression => PathMatch::Regex(
            matcher::anchored_regex(&m.path.value)
                .map_err(|e| ("path.value".to_owned(), e.to_string()))?,
        ),
    };
    let value =
        |kind: conf::StringMatchType, v: &str, f: String| -> Result<ValueMatch, FieldError> {
            Ok(match kind {
                conf::StringMatchType::Exact => ValueMatch::Exact(v.to_owned()),
                conf::StringMatchType::RegularExpression => {
                    ValueMatch::Regex(matcher::anchored_regex(v).map_err(|e| (f, e.to_string()))?)
                }
            })
        };
    let mut headers = Vec::with_capacity(m.headers.len());
    let mut seen = HashSet::new();
    for (i, h) in m.headers.iter().enumerate() {
        let name = header_name(&h.name).map_err(|e| (format!("headers[{i}].name"), e))?;
        // Gateway API: later matches for an already-matched header name are ignored.
        if seen.insert(name.clone()) {
            headers.push(HeaderMatch {
                name,
                value: value(h.match_type, &h.value, format!("headers[{i}].value"))?,
            });
        }
    }
    let mut query = Vec::with_capacity(m.query_params.len());
    let mut seen = HashSet::new();
    for (i, q) in m.query_params.iter().enumerate() {
        if seen.insert(q.name.clone()) {
            query.push(QueryMatch {
                name: q.name.clone(),
                value: value(q.match_type, &q.value, format!("queryParams[{i}].value"))?,
            });
        }
    }
    let method = match &m.method {
        Some(s) => Some(
            Method::from_bytes(s.as_bytes()).map_err(|e| ("method".to_owned(), e.to_string()))?,
        ),
        None => None,
    };
    Ok(RouteMatch {
        path,
        headers,
        query,
        method,
    })
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
        .map_err(|e| format!("invalid header name {s:?}: {e}"))
}

fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|e| format!("invalid header value: {e}"))
}

fn compile_header_modifier(
    m: &conf::HeaderModifier,
    f: &str,
) -> Result<HeaderModifier, FieldError> {
    let pair =
        |h: &conf::HttpHeader, field: String| -> Result<(HeaderName, HeaderValue), FieldError> {
            Ok((
                header_name(&h.name).map_err(|e| (format!("{field}.name"), e))?,
                header_value(&h.value).map_err(|e| (format!("{field}.value"), e))?,
            ))
        };
    Ok(HeaderModifier {
        set: m
            .set
            .iter()
            .enumerate()
            .map(|(i, h)| pair(h, format!("{f}.set[{i}]")))
            .collect::<Result<_, _>>()?,
        add: m
            .add
            .iter()
            .enumerate()
            .map(|(i, h)| pair(h, format!("{f}.add[{i}]")))
            .collect::<Result<_, _>>()?,
        remove: m
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| header_name(n).map_err(|e| (format!("{f}.remove[{i}]"), e)))
            .collect::<Result<_, _>>()?,
    })
}

fn path_modifier(p: &conf::PathModifier, f: &str) -> Result<PathModifier, FieldError> {
    match p.modifier_type {
        conf::PathModifierType::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(PathModifier::ReplaceFullPath)
            .ok_or_else(|| (format!("{f}.replaceFullPath"), "required".to_owned())),
        conf::PathModifierType::ReplacePrefixMatch => p
            .replace_prefix_match
            .clone()
            .map(PathModifier::ReplacePrefixMatch)
            .ok_or_else(|| (format!("{f}.replacePrefixMatch"), "required".to_owned())),
    }
}

fn compile_filters(list: &[conf::HttpRouteFilter]) -> Result<RuleFilters, FieldError> {
    let mut out = RuleFilters::default();
    for (i, flt) in list.iter().enumerate() {
        let f = format!("filters[{i}]");
        match flt.filter_type {
            conf::FilterType::RequestHeaderModifier => {
                if let Some(m) = &flt.request_header_modifier {
                    merge(
                        &mut out.request_headers,
                        compile_header_modifier(m, &format!("{f}.requestHeaderModifier"))?,
                    );
                }
            }
            conf::FilterType::ResponseHeaderModifier => {
                if let Some(m) = &flt.response_header_modifier {
                    merge(
                        &mut out.response_headers,
                        compile_header_modifier(m, &format!("{f}.responseHeaderModifier"))?,
                    );
                }
            }
            conf::FilterType::RequestRedirect => {
                if let Some(r) = &flt.request_redirect {
                    let ff = format!("{f}.requestRedirect");
                    out.redirect = Some(Redirect {
                        scheme: r.scheme.as_ref().map(|s| s.to_ascii_lowercase()),
                        hostname: r.hostname.clone(),
                        path: r
                            .path
                            .as_ref()
                            .map(|p| path_modifier(p, &format!("{ff}.path")))
                            .transpose()?,
                        port: r.port,
                        status: StatusCode::from_u16(r.status_code)
                            .map_err(|e| (format!("{ff}.statusCode"), e.to_string()))?,
                    });
                }
            }
            conf::FilterType::UrlRewrite => {
                if let Some(r) = &flt.url_rewrite {
                    let ff = format!("{f}.urlRewrite");
                    out.rewrite = Some(UrlRewrite {
                        hostname: r
                            .hostname
                            .as_deref()
                            .map(header_value)
                            .transpose()
                            .map_err(|e| (format!("{ff}.hostname"), e))?,
                        path: r
                            .path
                            .as_ref()
                            .map(|p| path_modifier(p, &format!("{ff}.path")))
                            .transpose()?,
                    });
                }
            }
            other => {
                return Err((
                    f,
                    format!("filter type {} is not supported", other.as_str()),
                ));
            }
        }
    }
    Ok(out)
}

fn merge(into: &mut filters::HeaderModifier, from: filters::HeaderModifier) {
    into.set.extend(from.set);
    into.add.extend(from.add);
    into.remove.extend(from.remove);
}
