//! The routing table compiled from YAML (through conf's store, as at runtime), without sockets.

use std::time::Duration;

use http::{HeaderMap, Method};
use wasmgate_conf::{ConfigStore, SourceFile};

use super::RequestView;
use crate::backends::Backends;
use crate::config::{CompileOptions, CompiledConfig, compile};
use crate::reload::resources;

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  listeners:
  - {name: plain, port: 80, protocol: HTTP}
  - {name: wild, port: 81, protocol: HTTP, hostname: "*.example.com"}
  - {name: other, port: 82, protocol: HTTP}
"#;

fn build(routes: &str) -> CompiledConfig {
    let mut store = ConfigStore::new();
    let (snap, report) = store.apply(vec![
        SourceFile::new("gw.yaml", GATEWAY),
        SourceFile::new("routes.yaml", routes),
    ]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let opts = CompileOptions {
        metrics: None,
        default_timeout: Some(Duration::from_secs(15)),
        plugins: None,
        gateway_labels: Vec::new(),
    };
    compile(&resources(&snap), &Backends::new(), &opts, 1)
}

/// `(route, rule index)` of the entry a request matches.
fn hit(
    cfg: &CompiledConfig,
    port: u16,
    host: &str,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<(String, usize)> {
    let (path, query) = uri
        .split_once('?')
        .map_or((uri, None), |(p, q)| (p, Some(q)));
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let view = RequestView {
        port,
        host,
        method: &method,
        path,
        query,
        headers: &h,
    };
    cfg.routes
        .lookup(&view)
        .map(|e| (e.rule.route.to_string(), e.rule.rule_index))
}

fn route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n{spec}---\n"
    )
}

#[test]
fn parent_refs_attach_by_section_name_and_port() {
    let mut y = route(
        "by-section",
        "  parentRefs: [{name: gw, sectionName: plain}]\n  rules:\n  - backendRefs: [{name: a, port: 1}]\n",
    );
    y.push_str(&route(
        "by-port",
        "  parentRefs: [{name: gw, port: 82}]\n  rules:\n  - backendRefs: [{name: a, port: 1}]\n",
    ));
    y.push_str(&route("nowhere", "  parentRefs: [{name: gw, sectionName: missing}]\n  rules:\n  - backendRefs: [{name: a, port: 1}]\n"));
    let cfg = build(&y);
    let get = |port| hit(&cfg, port, "x.example.com", Method::GET, "/", &[]).map(|h| h.0);
    assert_eq!(get(80).as_deref(), Some("default/by-section"));
    assert_eq!(get(81), None);
    assert_eq!(get(82).as_deref(), Some("default/by-port"));
    assert!(
        cfg.problems
            .iter()
            .any(|p| p.route == "default/nowhere" && p.field == "spec.parentRefs[0]"),
        "{:?}",
        cfg.problems
    );
}

#[test]
fn listener_hostname_intersects_route_hostnames() {
    let mut y = route(
        "named",
        "  parentRefs: [{name: gw, sectionName: wild}]\n  hostnames: [foo.example.com, other.org]\n  rules:\n  - backendRefs: [{name: a, port: 1}]\n",
    );
    y.push_str(&route("any", "  parentRefs: [{name: gw, sectionName: wild}]\n  rules:\n  - backendRefs: [{name: a, port: 1}]\n"));
    let cfg = build(&y);
    let get = |host| hit(&cfg, 81, host, Method::GET, "/", &[]).map(|h| h.0);
    assert_eq!(
        get("foo.example.com").as_deref(),
        Some("default/named"),
        "exact beats the listener wildcard"
    );
    assert_eq!(
        get("bar.example.com").as_deref(),
        Some("default/any"),
        "no hostnames: the listener's"
    );
    assert_eq!(get("other.org"), None, "outside the listener hostname");
    assert_eq!(get("example.com"), None);
}

#[test]
fn precedence_within_and_across_routes() {
    let y = route(
        "r",
        r#"  parentRefs: [{name: gw, sectionName: plain}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: PathPrefix, value: /a/b}}]
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: Exact, value: /a/b}}]
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: PathPrefix, value: /a}, method: DELETE}]
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: PathPrefix, value: /a}, headers: [{name: x, value: "1"}]}]
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: RegularExpression, value: "/re/.*"}}]
    backendRefs: [{name: a, port: 1}]
"#,
    ) + &route(
        "b-same",
        "  parentRefs: [{name: gw, sectionName: plain}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: a, port: 1}]\n",
    );
    let cfg = build(&y);
    let rule = |m: Method, uri: &str, h: &[(&str, &str)]| hit(&cfg, 80, "h", m, uri, h).unwrap();
    assert_eq!(
        rule(Method::GET, "/a/b", &[]),
        ("default/r".into(), 2),
        "exact first"
    );
    assert_eq!(
        rule(Method::GET, "/a/b/c", &[]),
        ("default/r".into(), 1),
        "longest prefix"
    );
    assert_eq!(
        rule(Method::DELETE, "/a/x", &[("x", "1")]),
        ("default/r".into(), 3),
        "method over headers"
    );
    assert_eq!(
        rule(Method::GET, "/a/x", &[("x", "1")]),
        ("default/r".into(), 4)
    );
    assert_eq!(
        rule(Method::GET, "/re/x", &[]),
        ("default/r".into(), 5),
        "regex over a catch-all prefix"
    );
    // Equal matches in two routes seen at the same time: first-seen order, then name.
    assert_eq!(rule(Method::GET, "/zzz", &[]).0, "default/r");
}

#[test]
fn timeouts_default_and_explicit_zero() {
    let y = route(
        "t",
        r#"  parentRefs: [{name: gw, sectionName: plain}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /default}}]
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: PathPrefix, value: /both}}]
    timeouts: {request: 2s, backendRequest: 500ms}
    backendRefs: [{name: a, port: 1}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    timeouts: {request: 0s}
    backendRefs: [{name: a, port: 1}]
"#,
    );
    let cfg = build(&y);
    let timeout = |uri: &str| {
        let view = RequestView {
            port: 80,
            host: "h",
            method: &Method::GET,
            path: uri,
            query: None,
            headers: &HeaderMap::new(),
        };
        let rule = &cfg.routes.lookup(&view).unwrap().rule;
        (
            rule.request_timeout,
            rule.backend_timeout,
            rule.upstream_timeout(|| Duration::from_millis(1800)),
        )
    };
    let (s, ms) = (Duration::from_secs, Duration::from_millis);
    assert_eq!(timeout("/default"), (Some(s(15)), None, Some(ms(13_200))));
    assert_eq!(
        timeout("/both"),
        (Some(s(2)), Some(ms(500)), Some(ms(200))),
        "what remains of the request"
    );
    assert_eq!(timeout("/none"), (None, None, None));
}

/// Compiles `files` (name, YAML) through conf's store, as at runtime; conf errors are allowed
/// (a refused certificateRef is one), the gateway must still refuse what conf kept in force.
fn build_files(files: &[(&str, &str)]) -> CompiledConfig {
    let mut store = ConfigStore::new();
    let (snap, _) = store.apply(
        files
            .iter()
            .map(|(name, text)| SourceFile::new(*name, *text))
            .collect(),
    );
    let opts = CompileOptions {
        metrics: None,
        default_timeout: None,
        plugins: None,
        gateway_labels: Vec::new(),
    };
    compile(&resources(&snap), &Backends::new(), &opts, 1)
}

fn infra_gateway(allowed: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\n\
         spec:\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n{allowed}"
    )
}

const APPS_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - backendRefs: [{name: a, port: 1}]
";

fn served(cfg: &CompiledConfig) -> Option<String> {
    hit(cfg, 80, "h", Method::GET, "/", &[]).map(|h| h.0)
}

#[test]
fn allowed_routes_gate_attachment_by_namespace() {
    let same = build_files(&[("gw.yaml", &infra_gateway("")), ("r.yaml", APPS_ROUTE)]);
    assert_eq!(served(&same), None, "default from: Same");
    let problem = same
        .problems
        .iter()
        .find(|p| p.route == "apps/r")
        .expect("the refusal is reported");
    assert_eq!(problem.field, "spec.parentRefs[0]");
    assert_eq!(
        problem.message,
        "not attached: not allowed by Gateway infra/gw listener http (allowedRoutes.namespaces.from: Same)"
    );

    let all = infra_gateway("    allowedRoutes: {namespaces: {from: All}}\n");
    let all = build_files(&[("gw.yaml", &all), ("r.yaml", APPS_ROUTE)]);
    assert_eq!(served(&all).as_deref(), Some("apps/r"));
    assert!(all.problems.is_empty(), "{:?}", all.problems);

    let selector = infra_gateway(
        "    allowedRoutes:\n      namespaces:\n        from: Selector\n        selector: {matchLabels: {gateway: shared}}\n",
    );
    let labelled =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {gateway: shared}}\n";
    let cfg = build_files(&[
        ("gw.yaml", &selector),
        ("ns.yaml", labelled),
        ("r.yaml", APPS_ROUTE),
    ]);
    assert_eq!(served(&cfg).as_deref(), Some("apps/r"));
    let unlabelled = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n";
    let cfg = build_files(&[
        ("gw.yaml", &selector),
        ("ns.yaml", unlabelled),
        ("r.yaml", APPS_ROUTE),
    ]);
    assert_eq!(served(&cfg), None);
    assert!(
        cfg.problems[0]
            .message
            .ends_with("(allowedRoutes.namespaces.selector does not select namespace apps)"),
        "{:?}",
        cfg.problems
    );
}

#[test]
fn a_route_attaches_to_the_listeners_that_allow_it() {
    let two = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\n\
               spec:\n  listeners:\n  - {name: open, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n\
               \x20 - {name: closed, port: 81, protocol: HTTP}\n";
    let cfg = build_files(&[("gw.yaml", two), ("r.yaml", APPS_ROUTE)]);
    assert_eq!(served(&cfg).as_deref(), Some("apps/r"));
    assert_eq!(hit(&cfg, 81, "h", Method::GET, "/", &[]), None);
    assert!(cfg.problems.is_empty(), "attached somewhere: not a problem");
}

const CROSS_BACKEND: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: api, namespace: backends, port: 1}]
";

const BACKEND_GRANT: &str = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: \"\", kind: Service}]
";

#[test]
fn a_cross_namespace_backend_without_a_grant_answers_500() {
    let gw = infra_gateway("");
    let view = RequestView {
        port: 80,
        host: "h",
        method: &Method::GET,
        path: "/",
        query: None,
        headers: &HeaderMap::new(),
    };
    let cfg = build_files(&[("gw.yaml", &gw), ("r.yaml", CROSS_BACKEND)]);
    let rule = &cfg
        .routes
        .lookup(&view)
        .expect("the rule still matches")
        .rule;
    let refused = rule.backends.pick().expect_err("no backend");
    assert!(
        matches!(refused, crate::backends::NoBackend::Refused(why) if why.contains("RefNotPermitted")),
        "{refused:?}"
    );
    assert_eq!(cfg.problems.len(), 1);
    assert_eq!(cfg.problems[0].field, "spec.rules[0].backendRefs[0]");

    let cfg = build_files(&[
        ("gw.yaml", &gw),
        ("grant.yaml", BACKEND_GRANT),
        ("r.yaml", CROSS_BACKEND),
    ]);
    let rule = &cfg.routes.lookup(&view).unwrap().rule;
    assert_eq!(rule.backends.pick().unwrap().key.namespace, "backends");
    assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
}

#[test]
fn a_cross_namespace_certificate_without_a_grant_is_not_served() {
    // Kept in force by conf as the last good version after its grant went away: the gateway
    // must refuse the listener itself.
    let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\n\
              spec:\n  listeners:\n  - name: https\n    port: 443\n    protocol: HTTPS\n    tls:\n      \
              certificateRefs: [{name: cert, namespace: certs}]\n";
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: certs}\ntype: kubernetes.io/tls\n\
                  stringData:\n  tls.crt: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"\n  \
                  tls.key: \"-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"\n";
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\n\
                 spec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  \
                 to: [{group: \"\", kind: Secret}]\n";
    let mut store = ConfigStore::new();
    let files = |with_grant: bool| {
        let mut v = vec![
            SourceFile::new("gw.yaml", gw),
            SourceFile::new("secret.yaml", secret),
        ];
        if with_grant {
            v.push(SourceFile::new("grant.yaml", grant));
        }
        v
    };
    let opts = CompileOptions {
        metrics: None,
        default_timeout: None,
        plugins: None,
        gateway_labels: Vec::new(),
    };
    let (snap, report) = store.apply(files(true));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let cfg = compile(&resources(&snap), &Backends::new(), &opts, 1);
    // With the grant, the reference is followed (and this fake PEM is what fails).
    assert!(
        !cfg.problems[0].message.contains("RefNotPermitted"),
        "{:?}",
        cfg.problems
    );
    let (snap, _) = store.apply(files(false));
    assert_eq!(snap.gateways.len(), 1, "last good version kept by conf");
    let cfg = compile(&resources(&snap), &Backends::new(), &opts, 2);
    assert!(cfg.listeners.is_empty(), "the listener is not served");
    assert_eq!(cfg.problems[0].route, "Gateway infra/gw");
    assert!(
        cfg.problems[0].message.starts_with(
            "tls.certificateRefs[0]: Secret certs/cert is in another namespace and no ReferenceGrant in certs"
        ),
        "{:?}",
        cfg.problems
    );
}
