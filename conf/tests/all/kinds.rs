//! Every kind parsed from realistic YAML (Istio's and the Gateway API's own samples).

use std::time::Duration;

use wasmgate_conf::*;

use crate::support::{apply, fixtures, lines};

fn valid_snapshot() -> std::sync::Arc<Snapshot> {
    let mut store = ConfigStore::new();
    let (snap, report) = store.reload(&fixtures().join("valid"));
    assert!(
        report.errors.is_empty(),
        "valid fixtures have errors:\n{}",
        lines(&report.errors).join("\n")
    );
    snap
}

#[test]
fn valid_fixtures_load_with_every_kind() {
    let s = valid_snapshot();
    assert_eq!(s.generation, 1);
    assert_eq!(s.gateways.len(), 2);
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.services.len(), 2);
    assert_eq!(s.secrets.len(), 2);
    assert_eq!(s.wasm_plugins.len(), 6);
    assert!(s.rejected.is_empty());
    let mut ignored: Vec<_> = s
        .ignored
        .iter()
        .map(|i| format!("{} {}", i.kind, i.name))
        .collect();
    ignored.sort();
    assert_eq!(
        ignored,
        [
            "Deployment productpage-v1",
            "DestinationRule reviews",
            "ServiceAccount bookinfo-productpage",
            "ServiceAccount httpbin",
            "VirtualService bookinfo"
        ]
    );
    // Document indexes count empty documents too (demo-misc.yaml has an empty second document).
    let dr = s
        .ignored
        .iter()
        .find(|i| i.kind == "DestinationRule")
        .unwrap();
    assert_eq!(
        (dr.file.file_name().unwrap().to_str().unwrap(), dr.document),
        ("demo-misc.yaml", 2)
    );
}

#[test]
fn bookinfo_gateway_and_route() {
    let s = valid_snapshot();
    let gw = s.gateway("default", "bookinfo-gateway").unwrap();
    assert_eq!(gw.source.file_name().unwrap(), "bookinfo-gateway.yaml");
    assert_eq!(gw.document, 0);
    assert_eq!(gw.spec.gateway_class_name.as_deref(), Some("istio"));
    let l = &gw.spec.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.port, l.protocol.as_str(), l.is_https()),
        ("http", 80, "HTTP", false)
    );

    let route = &s.routes[&NamespacedName::new("default", "bookinfo")];
    assert_eq!(route.document, 1);
    assert_eq!(route.spec.parent_refs[0].name, "bookinfo-gateway");
    assert_eq!(route.spec.parent_refs[0].kind, "Gateway");
    assert_eq!(route.spec.parent_refs[0].group, "gateway.networking.k8s.io");
    let rule = &route.spec.rules[0];
    let paths: Vec<_> = rule
        .matches
        .iter()
        .map(|m| (m.path.match_type, m.path.value.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (PathMatchType::Exact, "/productpage"),
            (PathMatchType::PathPrefix, "/static"),
            (PathMatchType::Exact, "/login"),
            (PathMatchType::Exact, "/logout"),
            (PathMatchType::PathPrefix, "/api/v1/products"),
        ]
    );
    let b = &rule.backend_refs[0];
    assert_eq!(
        (b.name.as_str(), b.port, b.weight, b.kind.as_str()),
        ("productpage", Some(9080), 1, "Service")
    );
}

#[test]
fn https_gateway_with_tls_secret() {
    let s = valid_snapshot();
    let gw = s.gateway("web", "https-gateway").unwrap();
    assert_eq!(gw.metadata.labels["istio"], "ingressgateway");
    assert_eq!(gw.metadata.resource_version.as_deref(), Some("12345"));
    assert_eq!(gw.metadata.generation, Some(3));
    assert_eq!(
        gw.metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .unix_seconds,
        1_714_557_600
    );
    let l = gw.listener("https").unwrap();
    assert!(l.is_https());
    assert_eq!(l.hostname.as_deref(), Some("*.example.com"));
    let tls = l.tls.as_ref().unwrap();
    assert_eq!(tls.mode, "Terminate");
    assert_eq!(tls.certificate_refs[0].name, "example-cert");
    assert_eq!(tls.certificate_refs[0].kind, "Secret");

    let secret = s.secret("web", "example-cert").unwrap();
    assert!(secret.is_tls());
    let (crt, key) = secret.tls_pair().unwrap();
    assert!(
        crt.expose()
            .starts_with(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    );
    assert!(key.expose().starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
}

#[test]
fn route_with_every_filter_and_timeouts() {
    let s = valid_snapshot();
    let r = &s.routes[&NamespacedName::new("web", "httpbin")];
    assert_eq!(r.spec.hostnames, ["httpbin.example.com"]);
    assert_eq!(r.spec.parent_refs[0].section_name.as_deref(), Some("https"));
    let rule = &r.spec.rules[0];
    assert_eq!(rule.name.as_deref(), Some("headers"));
    let m = &rule.matches[0];
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(m.headers[0].match_type, StringMatchType::Exact);
    assert_eq!(m.headers[1].match_type, StringMatchType::RegularExpression);
    assert_eq!(m.query_params[0].name, "debug");
    let types: Vec<_> = rule.filters.iter().map(|f| f.filter_type).collect();
    assert_eq!(
        types,
        [
            FilterType::RequestHeaderModifier,
            FilterType::ResponseHeaderModifier,
            FilterType::UrlRewrite
        ]
    );
    let rhm = rule.filters[0].request_header_modifier.as_ref().unwrap();
    assert_eq!(
        (rhm.set[0].name.as_str(), rhm.set[0].value.as_str()),
        ("x-env", "canary")
    );
    assert_eq!(rhm.remove, ["x-drop"]);
    let rw = rule.filters[2].url_rewrite.as_ref().unwrap();
    assert_eq!(rw.hostname.as_deref(), Some("backend.internal"));
    let path = rw.path.as_ref().unwrap();
    assert_eq!(path.modifier_type, PathModifierType::ReplacePrefixMatch);
    assert_eq!(path.replace_prefix_match.as_deref(), Some("/anything"));
    assert_eq!(
        rule.backend_refs
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        [90, 10]
    );
    let t = rule.timeouts.as_ref().unwrap();
    assert_eq!(t.request_timeout(), Some(Duration::from_secs(10)));
    assert_eq!(
        t.backend_request_timeout(),
        Some(Duration::from_millis(500))
    );

    let redirect = &r.spec.rules[1];
    let rr = redirect.filters[0].request_redirect.as_ref().unwrap();
    assert_eq!(rr.scheme.as_deref(), Some("https"));
    assert_eq!(rr.status_code, 301);
    assert_eq!(rr.port, Some(443));
    assert_eq!(
        rr.path.as_ref().unwrap().replace_full_path.as_deref(),
        Some("/new")
    );

    // A rule without matches gets the default match PathPrefix "/".
    let catch_all = &r.spec.rules[2];
    assert_eq!(catch_all.matches.len(), 1);
    assert_eq!(
        catch_all.matches[0].path,
        PathMatch {
            match_type: PathMatchType::PathPrefix,
            value: "/".into()
        }
    );
    assert_eq!(
        catch_all.timeouts.as_ref().unwrap().request_timeout(),
        Some(Duration::from_secs(3720))
    );
}

#[test]
fn services_with_endpoints_and_external_name() {
    let s = valid_snapshot();
    let pp = s.service("default", "productpage").unwrap();
    assert_eq!(pp.labels()["app"], "productpage");
    assert_eq!(pp.spec.service_type, "ClusterIP");
    assert_eq!(
        pp.endpoints(),
        [
            Endpoint {
                host: "127.0.0.1".into(),
                port: 9080
            },
            Endpoint {
                host: "productpage.local".into(),
                port: 9080
            }
        ]
    );
    assert_eq!(pp.target_port(9080), 9080);
    let reviews = s.service("default", "reviews").unwrap();
    assert!(reviews.is_external_name());
    assert_eq!(
        reviews.spec.external_name.as_deref(),
        Some("reviews.bookinfo.svc.cluster.local")
    );
    assert_eq!(reviews.target_port(9080), 9081);
    assert!(reviews.endpoints().is_empty());
}

#[test]
fn istio_basic_auth_wasm_plugin() {
    let s = valid_snapshot();
    let p = &s.wasm_plugins[&NamespacedName::new("istio-system", "basic-auth")];
    assert_eq!(p.plugin_identity(), "istio-system.basic-auth");
    assert_eq!(
        p.spec.selector.as_ref().unwrap().match_labels["istio"],
        "ingressgateway"
    );
    assert_eq!(
        p.spec.url_with_scheme(),
        "oci://ghcr.io/istio-ecosystem/wasm-extensions/basic_auth:1.12.0"
    );
    assert_eq!(p.spec.url_scheme(), "oci");
    assert_eq!(p.spec.phase, PluginPhase::Authn);
    assert_eq!(p.spec.priority, None);
    assert_eq!(p.spec.effective_priority(), i32::MIN);
    assert_eq!(p.spec.fail_strategy, FailStrategy::FailClose);
    assert_eq!(p.spec.image_pull_policy, PullPolicy::Unspecified);
    assert_eq!(p.spec.root_id(), "");
    assert_eq!(
        p.spec.plugin_config_json(),
        r#"{"basic_auth_rules":[{"credentials":["ok:test","YWRtaW4zOmFkbWluMw=="],"prefix":"/productpage","request_methods":["GET","POST"]}]}"#
    );
    assert!(p.spec.matches_gateway_port(80));

    let waypoint = &s.wasm_plugins[&NamespacedName::new("default", "basic-auth-at-reviews")];
    let r = &waypoint.spec.target_refs[0];
    assert_eq!(
        (r.group.as_str(), r.kind.as_str(), r.name.as_str()),
        ("", "Service", "reviews")
    );

    let rl = &s.wasm_plugins[&NamespacedName::new("default", "wasm-example")];
    assert_eq!(rl.spec.plugin_config_json(), "");
    assert_eq!(
        rl.spec.selector.as_ref().unwrap().match_labels["app"],
        "httpbin"
    );
}

#[test]
fn wasm_plugin_with_every_field() {
    let s = valid_snapshot();
    let p = &s.wasm_plugins[&NamespacedName::new("web", "everything")];
    let spec = &p.spec;
    assert_eq!(spec.target_refs.len(), 2);
    assert_eq!(spec.target_refs[1].kind, "HTTPRoute");
    assert_eq!(
        spec.url_with_scheme(),
        "oci://registry.example.com/plugins/headers:1.0"
    );
    assert_eq!(
        spec.sha256(),
        Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(spec.image_pull_policy, PullPolicy::Always);
    assert_eq!(spec.image_pull_secret.as_deref(), Some("registry-creds"));
    assert_eq!(spec.verification_key.as_deref(), Some("unused"));
    // Keys sorted, compact, integral floats without fraction: what istiod hands to Envoy.
    assert_eq!(
        spec.plugin_config_json(),
        r#"{"a":{"y":true,"z":[1,2.5,"x"]},"b":1}"#
    );
    assert_eq!(spec.root_id(), "headers_root");
    assert_eq!(spec.phase, PluginPhase::Authz, "phase: 2 is AUTHZ");
    assert_eq!(spec.priority, Some(10));
    assert_eq!(spec.fail_strategy, FailStrategy::FailOpen);
    assert_eq!(spec.inline_env().collect::<Vec<_>>(), [("MODE", "strict")]);
    assert_eq!(spec.host_env_keys().collect::<Vec<_>>(), ["POD_NAME"]);
    assert_eq!(spec.match_[0].mode, WorkloadMode::Client);
    assert!(spec.matches_gateway_port(8443));
    assert!(!spec.matches_gateway_port(8080));
    assert_eq!(spec.plugin_type, PluginType::Http);
    assert!(
        s.secret("web", "registry-creds")
            .unwrap()
            .is_docker_config_json()
    );

    let legacy = &s.wasm_plugins[&NamespacedName::new("web", "legacy-target")];
    assert_eq!(
        legacy.spec.target_refs,
        [legacy.spec.target_ref.clone().unwrap()],
        "targetRef merged into targetRefs"
    );
    assert_eq!(legacy.spec.url_scheme(), "file");
    assert_eq!(
        legacy.spec.priority,
        Some(-5),
        "Int32Value accepts a numeric string"
    );
    assert_eq!(
        legacy.spec.fail_strategy,
        FailStrategy::FailReload,
        "enum by number"
    );
    assert!(
        s.warnings.iter().any(|w| w
            .to_string()
            .ends_with("WasmPlugin web/legacy-target: spec.targetRef: deprecated: use targetRefs")),
        "{:?}",
        lines(&s.warnings)
    );
}

#[test]
fn wasm_plugins_sort_in_istio_chain_order() {
    let yaml = |name: &str, extra: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\n{extra}spec:\n  url: oci://r/p:1\n"
        )
    };
    let docs = [
        yaml("unset-prio-stats", "").replace("url:", "phase: STATS\n  url:"),
        yaml("no-phase", ""),
        yaml("authn-low", "").replace("url:", "phase: AUTHN\n  priority: -100\n  url:"),
        yaml("authn-high", "").replace("url:", "phase: AUTHN\n  priority: 100\n  url:"),
        yaml("authn-unset", "").replace("url:", "phase: AUTHN\n  url:"),
        yaml(
            "authz-old",
            "  creationTimestamp: \"2020-01-01T00:00:00Z\"\n",
        )
        .replace("url:", "phase: AUTHZ\n  url:"),
        yaml(
            "authz-new",
            "  creationTimestamp: \"2021-01-01T00:00:00Z\"\n",
        )
        .replace("url:", "phase: AUTHZ\n  url:"),
        yaml(
            "authz-a-new-name",
            "  creationTimestamp: \"2021-01-01T00:00:00Z\"\n",
        )
        .replace("url:", "phase: AUTHZ\n  url:"),
    ]
    .join("---\n");
    let (s, report) = apply(&mut ConfigStore::new(), &[("p.yaml", &docs)]);
    assert!(report.errors.is_empty(), "{:?}", lines(&report.errors));
    let order: Vec<_> = s
        .wasm_plugins_in_order()
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(
        order,
        [
            "authn-high",
            "authn-low",
            "authn-unset",
            "authz-old",
            "authz-a-new-name",
            "authz-new",
            "unset-prio-stats",
            "no-phase"
        ]
    );
}

#[test]
fn parse_file_reports_each_document() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    let docs = parse_file(std::path::Path::new("x.yaml"), text).unwrap();
    assert_eq!(docs.len(), 2);
    assert!(matches!(
        &docs[0],
        (
            0,
            Document::Valid {
                resource: Resource::Service(_),
                ..
            }
        )
    ));
    assert!(matches!(&docs[1], (2, Document::Ignored(d)) if d.kind == "Deployment"));
}

#[test]
fn valid_fixtures_warn_only_about_ignored_and_deprecated_fields() {
    let s = valid_snapshot();
    let prefix = format!("{}/", fixtures().join("valid").display());
    let warnings: Vec<_> = lines(&s.warnings)
        .iter()
        .map(|w| w.replace(&prefix, ""))
        .collect();
    assert_eq!(
        warnings,
        [
            "header-append-sme.yaml[doc 0] ServiceMeshExtension istio-system/header-append: kind: ServiceMeshExtension is \
             deprecated: served as WasmPlugin istio-system/header-append (`wasmgate convert` prints it)",
            "plugins-full.yaml[doc 1] WasmPlugin web/everything: spec.verificationKey: accepted but ignored by wasmgate",
            "plugins-full.yaml[doc 2] WasmPlugin web/legacy-target: spec.targetRef: deprecated: use targetRefs",
        ]
    );
}

#[test]
fn service_mesh_extension_is_served_as_its_wasm_plugin() {
    let s = valid_snapshot();
    let p = &s.wasm_plugins[&NamespacedName::new("istio-system", "header-append")];
    assert_eq!(
        p.spec.selector.as_ref().unwrap().match_labels["app"],
        "httpbin"
    );
    assert_eq!(
        p.spec.url_with_scheme(),
        "oci://quay.io/maistra-dev/header-append-filter:2.1"
    );
    assert_eq!(p.spec.phase, PluginPhase::Stats, "PostAuthZ maps to STATS");
    assert_eq!(p.spec.priority, Some(100));
    assert_eq!(
        p.spec.plugin_config_json(),
        r#"{"another-header":"another-value","first-header":"some-value"}"#
    );
    assert!(
        lines(&s.warnings).iter().any(|w| w.ends_with(
            "ServiceMeshExtension istio-system/header-append: kind: ServiceMeshExtension is deprecated: served as \
             WasmPlugin istio-system/header-append (`wasmgate convert` prints it)"
        )),
        "{:?}",
        lines(&s.warnings)
    );
}

#[test]
fn convert_prints_the_wasm_plugin_yaml() {
    let path = fixtures().join("valid/header-append-sme.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let yaml = convert_service_mesh_extensions(&path, &text).unwrap();
    assert_eq!(
        yaml,
        "apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: header-append
  namespace: istio-system
spec:
  phase: STATS
  pluginConfig:
    another-header: another-value
    first-header: some-value
  priority: 100
  selector:
    matchLabels:
      app: httpbin
  url: oci://quay.io/maistra-dev/header-append-filter:2.1
"
    );
    // The printed YAML is a valid WasmPlugin with the same meaning.
    let (s, r) = apply(&mut ConfigStore::new(), &[("converted.yaml", &yaml)]);
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    let converted = &s.wasm_plugins[&NamespacedName::new("istio-system", "header-append")];
    let original =
        &valid_snapshot().wasm_plugins[&NamespacedName::new("istio-system", "header-append")];
    assert_eq!(converted.spec, original.spec);

    let errors = convert_service_mesh_extensions(
        std::path::Path::new("x.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
    )
    .unwrap_err();
    assert_eq!(
        lines(&errors),
        ["x.yaml: no ServiceMeshExtension (maistra.io/v1) in this file"]
    );
}

#[test]
fn service_mesh_extension_errors_name_its_own_fields() {
    let yaml = "apiVersion: maistra.io/v1
kind: ServiceMeshExtension
metadata: {name: bad}
spec:
  workloadSelector: {labels: {app: \"*\"}}
  config: \"not json\"
  phase: PreRouting
  imagePullPolicy: Never
";
    let errors =
        convert_service_mesh_extensions(std::path::Path::new("sme.yaml"), yaml).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "sme.yaml[doc 0] ServiceMeshExtension default/bad: spec.image: required",
            "sme.yaml[doc 0] ServiceMeshExtension default/bad: spec.phase: unknown phase \"PreRouting\" (PreAuthN, PostAuthN, PreAuthZ, PostAuthZ, PreStats or PostStats)",
            "sme.yaml[doc 0] ServiceMeshExtension default/bad: spec.imagePullPolicy: \"Never\" has no WasmPlugin equivalent (IfNotPresent or Always)",
            "sme.yaml[doc 0] ServiceMeshExtension default/bad: spec.config: a string config must hold a JSON object to become WasmPlugin pluginConfig",
            "sme.yaml[doc 0] ServiceMeshExtension default/bad: spec.workloadSelector.labels.app: wildcard is not supported in selector",
        ]
    );
}

#[test]
fn other_kinds_and_api_versions_are_ignored_with_a_reason() {
    let text = "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: HTTPRoute
metadata: {name: old, namespace: web}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec: {anything: [goes, here]}
---
apiVersion: v1
kind: List
items: []
";
    let (s, r) = apply(&mut ConfigStore::new(), &[("mixed.yaml", text)]);
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    let got: Vec<_> = s
        .ignored
        .iter()
        .map(|i| {
            format!(
                "{} {}/{} {}: {}",
                i.kind, i.namespace, i.name, i.document, i.reason
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "HTTPRoute web/old 0: apiVersion gateway.networking.k8s.io/v1alpha2 of HTTPRoute is not supported",
            "VirtualService default/vs 1: kind VirtualService is not used by wasmgate",
            "List default/ 2: kind List is not used by wasmgate",
        ]
    );
}

#[test]
fn maistra_2_0_service_mesh_extension_with_a_json_string_config() {
    // Maistra 2.0 wrote `maistra.io/v1alpha1` and a string config.
    let yaml = r#"apiVersion: maistra.io/v1alpha1
kind: ServiceMeshExtension
metadata: {name: header-append, namespace: istio-system}
spec:
  workloadSelector: {labels: {app: httpbin}}
  config: '{"x-test": "1"}'
  image: quay.io/maistra-dev/header-append-filter:latest
  phase: PreAuthN
  priority: 100
"#;
    let (s, r) = apply(&mut ConfigStore::new(), &[("sme.yaml", yaml)]);
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    let p = &s.wasm_plugins[&NamespacedName::new("istio-system", "header-append")];
    assert_eq!(p.spec.phase, PluginPhase::Authn);
    assert_eq!(p.spec.plugin_config_json(), r#"{"x-test":"1"}"#);
    assert_eq!(
        p.spec.url_with_scheme(),
        "oci://quay.io/maistra-dev/header-append-filter:latest"
    );
}
