//! Last-good semantics across reloads: what the gateway relies on.

use std::sync::Arc;

use wasmgate_conf::*;

use crate::support::{apply, lines};

const GW: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
";

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path:?}}}}}]
    backendRefs: [{{name: backend, port: 80}}]
"
    )
}

fn route_path(s: &Snapshot, name: &str) -> Option<String> {
    s.routes
        .get(&NamespacedName::new("default", name))
        .map(|r| r.spec.rules[0].matches[0].path.value.clone())
}

#[test]
fn invalid_edit_keeps_the_last_good_version() {
    let mut store = ConfigStore::new();
    let routes = format!("{}---\n{}", route("a", "/a"), route("b", "/b"));
    let (s1, r1) = apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &routes)]);
    assert!(r1.is_ok(), "{:?}", lines(&r1.errors));
    assert_eq!(s1.generation, 1);
    let seq_a = s1.routes[&NamespacedName::new("default", "a")].seq;

    // Route a becomes invalid, route b changes validly.
    let routes = format!("{}---\n{}", route("a", "no-slash"), route("b", "/b2"));
    let (s2, r2) = apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &routes)]);
    assert_eq!(s2.generation, 2);
    assert_eq!(
        route_path(&s2, "a").as_deref(),
        Some("/a"),
        "invalid version must not replace the good one"
    );
    assert_eq!(route_path(&s2, "b").as_deref(), Some("/b2"));
    assert_eq!(
        lines(&r2.errors),
        [
            r#"routes.yaml[doc 0] HTTPRoute default/a: spec.rules[0].matches[0].path.value: must start with "/""#
        ]
    );
    assert_eq!(s2.rejected.len(), 1);
    let rej = &s2.rejected[0];
    assert_eq!(
        rej.key,
        Some(ResourceKey::new(Kind::HttpRoute, "default", "a"))
    );
    assert!(rej.kept_last_good);
    assert_eq!(
        r2.updated,
        [ResourceKey::new(Kind::HttpRoute, "default", "b")]
    );
    // The kept version is the same object, with its seq.
    assert!(Arc::ptr_eq(
        &s1.routes[&NamespacedName::new("default", "a")].resource,
        &s2.routes[&NamespacedName::new("default", "a")].resource
    ));
    assert_eq!(s2.routes[&NamespacedName::new("default", "a")].seq, seq_a);

    assert_eq!(r2.new_errors, r2.errors);
    // The same broken file again: same errors, none new.
    let (_, again) = apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &routes)]);
    assert_eq!(
        (again.errors.len(), again.new_errors.len(), again.changed),
        (1, 0, false)
    );

    // Fixing it takes the new version in force and clears the rejection.
    let routes = format!("{}---\n{}", route("a", "/a2"), route("b", "/b2"));
    let (s3, r3) = apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &routes)]);
    assert!(r3.is_ok());
    assert_eq!(route_path(&s3, "a").as_deref(), Some("/a2"));
    assert!(s3.rejected.is_empty());
    assert_eq!(
        s3.routes[&NamespacedName::new("default", "a")].seq,
        seq_a,
        "seq is stable across updates"
    );
}

#[test]
fn invalid_first_version_is_not_in_force() {
    let (s, r) = apply(&mut ConfigStore::new(), &[("r.yaml", &route("a", "bad"))]);
    assert!(s.routes.is_empty());
    assert!(!s.rejected[0].kept_last_good);
    assert_eq!(r.errors.len(), 1);
}

#[test]
fn yaml_syntax_error_keeps_every_resource_of_the_file() {
    let mut store = ConfigStore::new();
    let routes = format!("{}---\n{}", route("a", "/a"), route("b", "/b"));
    let (s1, _) = apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &routes)]);
    let broken = format!("{}---\nkind: [unclosed\n", route("a", "/changed"));
    let (s2, r2) = apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &broken)]);
    assert_eq!(route_path(&s2, "a").as_deref(), Some("/a"));
    assert_eq!(route_path(&s2, "b").as_deref(), Some("/b"));
    assert_eq!(s2.routes, s1.routes);
    assert_eq!(r2.errors.len(), 1);
    let e = &r2.errors[0];
    assert_eq!(
        (e.document, e.resource.as_deref(), e.field.as_deref()),
        (None, None, None)
    );
    assert!(
        e.to_string().starts_with("routes.yaml: invalid YAML: "),
        "{e}"
    );
    assert!(
        e.message.contains("at line 10 column 7"),
        "names line and column: {e}"
    );
    assert!(s2.rejected[0].kept_last_good);
}

#[test]
fn unreadable_file_keeps_its_resources() {
    let mut store = ConfigStore::new();
    apply(&mut store, &[("gw.yaml", GW)]);
    let (s, r) = store.apply(vec![SourceFile {
        path: "gw.yaml".into(),
        contents: Err("cannot read file: denied".into()),
    }]);
    assert!(s.gateway("default", "gw").is_some());
    assert_eq!(lines(&r.errors), ["gw.yaml: cannot read file: denied"]);
}

#[test]
fn deleting_a_file_or_a_document_removes_its_resources() {
    let mut store = ConfigStore::new();
    let routes = format!("{}---\n{}", route("a", "/a"), route("b", "/b"));
    apply(&mut store, &[("gw.yaml", GW), ("routes.yaml", &routes)]);
    let (s, r) = apply(
        &mut store,
        &[("gw.yaml", GW), ("routes.yaml", &route("b", "/b"))],
    );
    assert_eq!(route_path(&s, "a"), None);
    assert_eq!(
        r.removed,
        [ResourceKey::new(Kind::HttpRoute, "default", "a")]
    );
    // b moved from document 1 to document 0.
    assert_eq!(s.routes[&NamespacedName::new("default", "b")].document, 0);
    let (s, r) = apply(&mut store, &[("routes.yaml", &route("b", "/b"))]);
    assert!(s.gateways.is_empty());
    assert_eq!(
        r.removed,
        [ResourceKey::new(Kind::Gateway, "default", "gw")]
    );
    // The route now names a missing Gateway: a warning, not an error.
    assert!(r.is_ok());
    assert_eq!(
        lines(&r.warnings),
        [
            "routes.yaml[doc 0] HTTPRoute default/b: spec.parentRefs[0]: Gateway default/gw not found (yet)"
        ]
    );
}

#[test]
fn duplicates_first_file_by_name_wins() {
    let mut store = ConfigStore::new();
    let (s, r) = apply(
        &mut store,
        &[
            ("b.yaml", &route("x", "/from-b")),
            ("a.yaml", &route("x", "/from-a")),
            ("gw.yaml", GW),
        ],
    );
    assert_eq!(route_path(&s, "x").as_deref(), Some("/from-a"));
    assert_eq!(
        lines(&r.errors),
        [
            "b.yaml[doc 0] HTTPRoute default/x: duplicate HTTPRoute default/x: already defined in a.yaml[doc 0]; the first file by name wins"
        ]
    );
    // Same file twice.
    let twice = format!("{}---\n{}", route("x", "/1"), route("x", "/2"));
    let (s, r) = apply(&mut store, &[("a.yaml", &twice), ("gw.yaml", GW)]);
    assert_eq!(route_path(&s, "x").as_deref(), Some("/1"));
    assert_eq!(
        lines(&r.errors),
        [
            "a.yaml[doc 1] HTTPRoute default/x: duplicate HTTPRoute default/x: already defined in document 0 of this file"
        ]
    );
    // Same name, different kind or namespace: not duplicates.
    let other_ns = route("x", "/ns").replace(
        "metadata: {name: x}",
        "metadata: {name: x, namespace: other}",
    );
    let (s, r) = apply(
        &mut store,
        &[
            ("a.yaml", &route("x", "/1")),
            ("b.yaml", &other_ns),
            ("gw.yaml", GW),
        ],
    );
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    assert_eq!(s.routes.len(), 2);
}

#[test]
fn generation_increments_only_on_change() {
    let mut store = ConfigStore::new();
    assert_eq!(store.snapshot().generation, 0);
    let (s1, r1) = apply(&mut store, &[]);
    assert_eq!(
        (s1.generation, r1.changed),
        (1, true),
        "the first load is a change even when empty"
    );
    let (s2, _) = apply(&mut store, &[("gw.yaml", GW)]);
    assert_eq!(s2.generation, 2);
    let (s3, r3) = apply(&mut store, &[("gw.yaml", GW)]);
    assert_eq!((s3.generation, r3.changed), (2, false));
    assert!(
        Arc::ptr_eq(&s2, &s3),
        "an unchanged reload hands back the same snapshot"
    );
    let (s4, _) = apply(&mut store, &[("gw.yaml", &GW.replace("8080", "8081"))]);
    assert_eq!(s4.generation, 3);
    // A rejected edit is a change too (the rejection is new), though the gateway stays.
    let (s5, _) = apply(&mut store, &[("gw.yaml", &GW.replace("8080", "0"))]);
    assert_eq!(s5.generation, 4);
    assert_eq!(s5.gateways, s4.gateways);
}

#[test]
fn https_listener_needs_a_tls_secret() {
    let gw = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  listeners:
  - name: https
    port: 8443
    protocol: HTTPS
    tls:
      certificateRefs: [{name: cert}]
";
    let secret = "apiVersion: v1
kind: Secret
metadata: {name: cert}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nAA==\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN EC PRIVATE KEY-----\\nAA==\\n-----END EC PRIVATE KEY-----\\n\"
";
    let mut store = ConfigStore::new();
    let (s, r) = apply(&mut store, &[("gw.yaml", gw)]);
    assert!(s.gateways.is_empty());
    assert_eq!(
        lines(&r.errors),
        [
            "gw.yaml[doc 0] Gateway default/gw: spec.listeners[0].tls.certificateRefs[0]: Secret default/cert not found"
        ]
    );
    let (s, r) = apply(&mut store, &[("gw.yaml", gw), ("secret.yaml", secret)]);
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    assert!(s.gateway("default", "gw").is_some());
    // The Secret goes away: the gateway version in force stays (it is the last good one), the
    // error is reported.
    let (s, r) = apply(&mut store, &[("gw.yaml", gw)]);
    assert!(s.gateway("default", "gw").is_some());
    assert_eq!(r.errors.len(), 1);
    assert!(s.rejected[0].kept_last_good);
}

#[test]
fn document_without_kind_keeps_what_was_at_its_place() {
    let mut store = ConfigStore::new();
    apply(
        &mut store,
        &[("r.yaml", &route("a", "/a")), ("gw.yaml", GW)],
    );
    let no_kind = route("a", "/new").replace("kind: HTTPRoute\n", "");
    let (s, r) = apply(&mut store, &[("r.yaml", &no_kind), ("gw.yaml", GW)]);
    assert_eq!(route_path(&s, "a").as_deref(), Some("/a"));
    assert_eq!(
        lines(&r.errors),
        ["r.yaml[doc 0] default/a: kind: required"]
    );
}

#[test]
fn validate_dir_returns_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gw.yaml"), GW).unwrap();
    std::fs::write(dir.path().join("r.yml"), route("a", "/a")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "{{{").unwrap();
    let snap = validate_dir(dir.path()).unwrap();
    assert_eq!((snap.gateways.len(), snap.routes.len()), (1, 1));

    std::fs::write(
        dir.path().join("bad.yaml"),
        format!("{}---\n{}", route("b", "x"), route("c", "y")),
    )
    .unwrap();
    let errors = validate_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0]
            .to_string()
            .contains("bad.yaml[doc 0] HTTPRoute default/b"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1]
            .to_string()
            .contains("bad.yaml[doc 1] HTTPRoute default/c"),
        "{}",
        errors[1]
    );

    let missing = validate_dir(&dir.path().join("nope")).unwrap_err();
    assert!(
        missing[0].message.starts_with("cannot read directory"),
        "{}",
        missing[0]
    );
}

#[test]
fn snapshot_serializes_for_config_dump() {
    let (s, _) = apply(
        &mut ConfigStore::new(),
        &[("gw.yaml", GW), ("r.yaml", &route("a", "bad"))],
    );
    let json: serde_json::Value = serde_json::to_value(&*s).unwrap();
    assert_eq!(json["generation"], 1);
    let gw = &json["gateways"]["default/gw"];
    assert_eq!(
        gw["source"], "gw.yaml",
        "gateways keyed by namespace/name: {json}"
    );
    assert_eq!(gw["resource"]["spec"]["listeners"][0]["port"], 8080);
    assert_eq!(
        json["rejected"][0]["errors"][0]["field"],
        "spec.rules[0].matches[0].path.value"
    );
}

#[test]
fn gateways_sharing_a_port_with_different_protocols_are_reported() {
    let https = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw2}
spec:
  listeners:
  - name: https
    port: 8080
    protocol: HTTPS
    tls:
      certificateRefs: [{name: cert}]
---
apiVersion: v1
kind: Secret
metadata: {name: cert}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nAA==\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\nAA==\\n-----END PRIVATE KEY-----\\n\"
";
    let (s, r) = apply(
        &mut ConfigStore::new(),
        &[("gw.yaml", GW), ("gw2.yaml", https)],
    );
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    assert_eq!(s.gateways.len(), 2);
    assert_eq!(
        lines(&r.warnings),
        [
            "gw2.yaml[doc 0] Gateway default/gw2: spec.listeners[0].protocol: port 8080 is already served as HTTP by Gateway default/gw: this listener conflicts"
        ]
    );
}

#[test]
fn route_without_parents_is_a_warning() {
    let r = route("a", "/a").replace("  parentRefs: [{name: gw}]\n", "");
    let (s, report) = apply(&mut ConfigStore::new(), &[("r.yaml", &r)]);
    assert!(report.is_ok());
    assert_eq!(s.routes.len(), 1);
    assert_eq!(
        lines(&report.warnings),
        [
            "r.yaml[doc 0] HTTPRoute default/a: spec.parentRefs: empty: the route attaches to no Gateway"
        ]
    );
}

#[test]
fn yaml_alias_bombs_are_refused_not_expanded() {
    // "Billion laughs": 9 levels of 9 aliases.
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    doc.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n");
    let start = std::time::Instant::now();
    let (_, r) = apply(&mut ConfigStore::new(), &[("bomb.yaml", &doc)]);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(r.errors.len(), 1, "{:?}", lines(&r.errors));
    assert!(
        r.errors[0].message.starts_with("invalid YAML: "),
        "{}",
        r.errors[0]
    );
}

#[test]
fn oversized_and_vanished_files() {
    let dir = tempfile::tempdir().unwrap();
    let big = "# padding\n".repeat((limits::MAX_FILE_BYTES as usize / 10) + 1);
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("nowhere.yaml", dir.path().join("dangling.yaml")).unwrap();
    let errors = validate_dir(dir.path()).unwrap_err();
    assert_eq!(
        errors.len(),
        1,
        "the dangling symlink counts as deleted: {:?}",
        lines(&errors)
    );
    assert!(
        errors[0].message.starts_with("file too large: "),
        "{}",
        errors[0]
    );
}

#[test]
fn duplicate_takes_over_when_the_winner_goes_and_broken_files_keep_their_claim() {
    let mut store = ConfigStore::new();
    let (s, _) = apply(
        &mut store,
        &[
            ("a.yaml", &route("x", "/a")),
            ("b.yaml", &route("x", "/b")),
            ("gw.yaml", GW),
        ],
    );
    assert_eq!(route_path(&s, "x").as_deref(), Some("/a"));
    // a.yaml breaks: its X stays (last good), and still wins over b.yaml's.
    let (s, r) = apply(
        &mut store,
        &[
            ("a.yaml", "kind: [broken"),
            ("b.yaml", &route("x", "/b")),
            ("gw.yaml", GW),
        ],
    );
    assert_eq!(route_path(&s, "x").as_deref(), Some("/a"));
    assert_eq!(r.errors.len(), 2, "{:?}", lines(&r.errors));
    assert!(
        r.errors[0].to_string().starts_with("a.yaml: invalid YAML"),
        "{:?}",
        lines(&r.errors)
    );
    assert!(
        r.errors[1]
            .to_string()
            .contains("b.yaml[doc 0] HTTPRoute default/x: duplicate"),
        "{:?}",
        lines(&r.errors)
    );
    // a.yaml goes away: b.yaml's version takes over.
    let (s, r) = apply(
        &mut store,
        &[("b.yaml", &route("x", "/b")), ("gw.yaml", GW)],
    );
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    let x = &s.routes[&NamespacedName::new("default", "x")];
    assert_eq!(x.spec.rules[0].matches[0].path.value, "/b");
    assert_eq!(x.source, std::path::Path::new("b.yaml"));
    assert_eq!(
        r.updated,
        [ResourceKey::new(Kind::HttpRoute, "default", "x")]
    );
}

#[test]
fn route_hostnames_must_meet_a_listener_hostname() {
    let gw = GW.replace(
        "{name: http, port: 8080, protocol: HTTP}",
        "{name: http, port: 8080, protocol: HTTP, hostname: \"*.example.com\"}",
    );
    let ok = route("a", "/").replace("spec:\n", "spec:\n  hostnames: [\"www.example.com\"]\n");
    let miss = route("b", "/").replace(
        "spec:\n",
        "spec:\n  hostnames: [\"www.example.org\", \"example.com\"]\n",
    );
    let (s, r) = apply(
        &mut ConfigStore::new(),
        &[("gw.yaml", &gw), ("a.yaml", &ok), ("b.yaml", &miss)],
    );
    assert!(r.is_ok());
    assert_eq!(s.routes.len(), 2, "a warning, not an error");
    assert_eq!(
        lines(&r.warnings),
        [
            "b.yaml[doc 0] HTTPRoute default/b: spec.hostnames: no hostname intersects a listener hostname of Gateway default/gw: the route serves nothing there"
        ]
    );
}
