//! Cross-namespace rules across resources: listeners' `allowedRoutes` (with `Namespace` labels)
//! and `ReferenceGrant`s for backendRefs and certificateRefs.

use wasmgate_conf::*;

use crate::support::{apply, lines};

fn gateway(allowed: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  listeners:
  - name: http
    port: 8080
    protocol: HTTP
{allowed}"
    )
}

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - backendRefs: [{name: api, port: 80}]
";

fn warnings(files: &[(&str, &str)]) -> Vec<String> {
    let (s, report) = apply(&mut ConfigStore::new(), files);
    assert!(report.is_ok(), "{:?}", lines(&report.errors));
    assert!(
        s.routes.contains_key(&NamespacedName::new("apps", "r")),
        "a refused attachment is a warning: the route stays in force"
    );
    lines(&report.warnings)
}

#[test]
fn a_route_from_another_namespace_is_refused_under_the_default_same() {
    let gw = gateway("");
    assert_eq!(
        warnings(&[("gw.yaml", &gw), ("route.yaml", ROUTE)]),
        [
            "route.yaml[doc 0] HTTPRoute apps/r: spec.parentRefs[0]: not allowed by Gateway infra/gw listener http \
             (allowedRoutes.namespaces.from: Same): the route serves nothing there"
        ]
    );
    let same = gateway("    allowedRoutes: {namespaces: {from: Same}}\n");
    assert_eq!(
        warnings(&[("gw.yaml", &same), ("route.yaml", ROUTE)]).len(),
        1
    );
    let all = gateway("    allowedRoutes: {namespaces: {from: All}}\n");
    assert!(warnings(&[("gw.yaml", &all), ("route.yaml", ROUTE)]).is_empty());
}

#[test]
fn a_selector_matches_namespace_labels() {
    let gw = gateway(
        "    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {shared-gateway-access: \"true\"}
",
    );
    let ns = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n  labels: {{shared-gateway-access: {value:?}}}\n"
        )
    };
    let granted = ns("true");
    assert!(
        warnings(&[
            ("gw.yaml", &gw),
            ("ns.yaml", &granted),
            ("route.yaml", ROUTE)
        ])
        .is_empty()
    );
    let refused = [
        "route.yaml[doc 0] HTTPRoute apps/r: spec.parentRefs[0]: not allowed by Gateway infra/gw listener http \
         (allowedRoutes.namespaces.selector does not select namespace apps): the route serves nothing there",
    ];
    let other = ns("false");
    assert_eq!(
        warnings(&[("gw.yaml", &gw), ("ns.yaml", &other), ("route.yaml", ROUTE)]),
        refused
    );
    // Without a Namespace resource, a namespace has no labels.
    assert_eq!(
        warnings(&[("gw.yaml", &gw), ("route.yaml", ROUTE)]),
        refused
    );
    // ... but the name label Kubernetes sets on every namespace.
    let by_name = gateway(
        "    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [apps, web]}]
",
    );
    assert!(warnings(&[("gw.yaml", &by_name), ("route.yaml", ROUTE)]).is_empty());
}

#[test]
fn namespaces_are_cluster_scoped_and_keyed_by_name() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: a}}\n";
    let (s, report) = apply(&mut ConfigStore::new(), &[("ns.yaml", ns)]);
    assert!(report.is_ok() && report.warnings.is_empty());
    assert_eq!(
        report.added,
        [ResourceKey::new(Kind::Namespace, "", "apps")]
    );
    assert_eq!(
        ResourceKey::new(Kind::Namespace, "", "apps").to_string(),
        "Namespace apps"
    );
    let labels = s.namespace_labels("apps");
    assert_eq!(labels["team"], "a");
    assert_eq!(labels[NAMESPACE_NAME_LABEL], "apps");
    assert_eq!(
        s.namespace_labels("elsewhere")
            .into_iter()
            .collect::<Vec<_>>(),
        [(NAMESPACE_NAME_LABEL.to_owned(), "elsewhere".to_owned())]
    );
}

const CROSS_BACKEND: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - backendRefs: [{name: api, namespace: backends, port: 80}]
";

fn grant(from_kind: &str, from_ns: &str, to_kind: &str, to_name: Option<&str>) -> String {
    let name = to_name.map(|n| format!(", name: {n}")).unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: allow, namespace: backends}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}]
  to: [{{group: \"\", kind: {to_kind}{name}}}]
"
    )
}

#[test]
fn a_cross_namespace_backend_ref_needs_a_reference_grant() {
    let gw = gateway("    allowedRoutes: {namespaces: {from: All}}\n");
    let refused = [
        "route.yaml[doc 0] HTTPRoute apps/r: spec.rules[0].backendRefs[0]: Service backends/api is in another \
         namespace and no ReferenceGrant in backends allows references to it from HTTPRoutes in apps \
         (RefNotPermitted); requests for this backend get 500",
    ];
    assert_eq!(
        warnings(&[("gw.yaml", &gw), ("route.yaml", CROSS_BACKEND)]),
        refused
    );
    for ok in [
        grant("HTTPRoute", "apps", "Service", None),
        grant("HTTPRoute", "apps", "Service", Some("api")),
    ] {
        assert!(
            warnings(&[
                ("gw.yaml", &gw),
                ("grant.yaml", &ok),
                ("route.yaml", CROSS_BACKEND)
            ])
            .is_empty(),
            "{ok}"
        );
    }
    for wrong in [
        grant("HTTPRoute", "apps", "Service", Some("db")),
        grant("HTTPRoute", "web", "Service", None),
        grant("Gateway", "apps", "Service", None),
        grant("HTTPRoute", "apps", "Secret", None),
    ] {
        assert_eq!(
            warnings(&[
                ("gw.yaml", &gw),
                ("grant.yaml", &wrong),
                ("route.yaml", CROSS_BACKEND)
            ]),
            refused,
            "{wrong}"
        );
    }
}

const TLS_SECRET: &str = "apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: backends}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"
";

const HTTPS_GW: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  listeners:
  - name: https
    port: 8443
    protocol: HTTPS
    tls:
      certificateRefs: [{name: cert, namespace: backends}]
";

#[test]
fn a_cross_namespace_certificate_ref_needs_a_reference_grant() {
    let mut store = ConfigStore::new();
    let (s, report) = apply(
        &mut store,
        &[("gw.yaml", HTTPS_GW), ("secret.yaml", TLS_SECRET)],
    );
    assert_eq!(
        lines(&report.errors),
        [
            "gw.yaml[doc 0] Gateway infra/gw: spec.listeners[0].tls.certificateRefs[0]: Secret backends/cert is in \
             another namespace and no ReferenceGrant in backends allows references to it from Gateways in infra \
             (RefNotPermitted)"
        ]
    );
    assert!(s.gateways.is_empty(), "the Gateway version is rejected");

    let ok = grant("Gateway", "infra", "Secret", Some("cert"));
    let files = [
        ("gw.yaml", HTTPS_GW),
        ("secret.yaml", TLS_SECRET),
        ("grant.yaml", ok.as_str()),
    ];
    let (s, report) = apply(&mut store, &files);
    assert!(report.is_ok(), "{:?}", lines(&report.errors));
    assert!(s.gateways.contains_key(&NamespacedName::new("infra", "gw")));

    // The grant goes away: reported again, the last good Gateway stays in force (as when its
    // Secret goes away), and the gateway refuses the listener when it compiles (see its tests).
    let (s, report) = apply(&mut store, &files[..2]);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].message.ends_with("(RefNotPermitted)"),
        "{:?}",
        report.errors
    );
    assert!(s.gateways.contains_key(&NamespacedName::new("infra", "gw")));
    assert_eq!(
        report.removed,
        [ResourceKey::new(Kind::ReferenceGrant, "backends", "allow")]
    );
}

#[test]
fn reference_grant_versions_parse() {
    for version in ["v1", "v1beta1", "v1alpha2"] {
        let text = grant("HTTPRoute", "apps", "Service", None).replace(
            "gateway.networking.k8s.io/v1beta1",
            &format!("gateway.networking.k8s.io/{version}"),
        );
        let (s, report) = apply(&mut ConfigStore::new(), &[("g.yaml", &text)]);
        assert!(report.is_ok(), "{version}: {:?}", lines(&report.errors));
        assert_eq!(s.reference_grants.len(), 1, "{version}");
    }
}

#[test]
fn a_route_allowed_by_one_of_the_listeners_is_not_reported() {
    let gw = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  listeners:
  - {name: open, port: 80, protocol: HTTP, hostname: a.test, allowedRoutes: {namespaces: {from: All}}}
  - {name: closed, port: 81, protocol: HTTP, hostname: b.test}
";
    assert!(warnings(&[("gw.yaml", gw), ("route.yaml", ROUTE)]).is_empty());
    // Hostnames are checked against the listeners that allow the route only.
    let on_closed = ROUTE.replace("  rules:", "  hostnames: [b.test]\n  rules:");
    assert_eq!(
        warnings(&[("gw.yaml", gw), ("route.yaml", &on_closed)]),
        [
            "route.yaml[doc 0] HTTPRoute apps/r: spec.hostnames: no hostname intersects a listener hostname of \
             Gateway infra/gw: the route serves nothing there"
        ]
    );
}
