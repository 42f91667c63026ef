//! `wasmgate convert`: Maistra ServiceMeshExtensions to WasmPlugin YAML that `wasmgate validate`
//! accepts; errors that name file and field.

use wasmgate_e2e::cli::{Cli, wasmgate};

/// As users have them: Maistra 2.x docs' header-append example, a second extension with a JSON
/// string config (Maistra 1.x style), a pull secret and policy, and an unrelated document.
const SMES: &str = r#"# Exported from an OpenShift Service Mesh 2.1 cluster.
apiVersion: maistra.io/v1
kind: ServiceMeshExtension
metadata:
  name: header-append
  namespace: bookinfo
spec:
  workloadSelector:
    labels:
      app: httpbin
  config:
    first-header: some-value
    another-header: another-value
  image: quay.io/maistra-dev/header-append-filter:2.1
  phase: PostAuthZ
  priority: 100
---
apiVersion: maistra.io/v1
kind: ServiceMeshExtension
metadata:
  name: auth
  namespace: bookinfo
spec:
  workloadSelector:
    labels:
      app: productpage
  config: '{"basic_auth_rules": [{"prefix": "/productpage", "request_methods": ["GET"], "credentials": ["ok:test"]}]}'
  image: registry.example.com/wasm/basic-auth:1.0
  imagePullPolicy: Always
  imagePullSecrets:
  - name: registry-creds
  phase: PreAuthN
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: bookinfo}
data: {a: b}
"#;

#[test]
fn converts_service_mesh_extensions_to_wasm_plugins_validate_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("smes.yaml");
    std::fs::write(&input, SMES).unwrap();
    let out = wasmgate(["convert".as_ref(), input.as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("deprecated"), "{}", out.stderr);
    assert!(out.stderr.contains("2 converted"), "{}", out.stderr);

    let docs: Vec<serde_yaml::Value> = out
        .stdout
        .split("---\n")
        .map(|d| serde_yaml::from_str(d).expect("each document is YAML"))
        .collect();
    assert_eq!(docs.len(), 2, "{}", out.stdout);
    let [append, auth] = &docs[..] else {
        unreachable!()
    };
    for d in &docs {
        assert_eq!(d["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(d["kind"], "WasmPlugin");
        assert_eq!(d["metadata"]["namespace"], "bookinfo");
    }
    assert_eq!(append["metadata"]["name"], "header-append");
    assert_eq!(
        append["spec"]["url"],
        "oci://quay.io/maistra-dev/header-append-filter:2.1"
    );
    assert_eq!(append["spec"]["phase"], "STATS", "PostAuthZ → STATS");
    assert_eq!(append["spec"]["priority"], 100);
    assert_eq!(append["spec"]["selector"]["matchLabels"]["app"], "httpbin");
    assert_eq!(append["spec"]["pluginConfig"]["first-header"], "some-value");
    assert_eq!(auth["spec"]["phase"], "AUTHN", "PreAuthN → AUTHN");
    assert_eq!(auth["spec"]["imagePullPolicy"], "Always");
    assert_eq!(auth["spec"]["imagePullSecret"], "registry-creds");
    assert_eq!(
        auth["spec"]["pluginConfig"]["basic_auth_rules"][0]["prefix"], "/productpage",
        "the JSON string config became a pluginConfig object"
    );

    // The printed YAML is a config directory wasmgate accepts as it is.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("wasmplugins.yaml"), &out.stdout).unwrap();
    let out = wasmgate(["validate".as_ref(), config.path().as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("2 WasmPlugin(s)"), "{}", out.stdout);

    // Standard input works too.
    let out = Cli::new(["convert", "-"]).stdin(SMES).run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.matches("kind: WasmPlugin").count(), 2);
}

#[test]
fn bad_extensions_fail_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.yaml");
    std::fs::write(
        &input,
        "apiVersion: maistra.io/v1\nkind: ServiceMeshExtension\nmetadata: {name: bad, namespace: bookinfo}\n\
         spec:\n  image: quay.io/x/y:1\n  phase: PreRouting\n  config: \"not json\"\n",
    )
    .unwrap();
    let out = wasmgate(["convert".as_ref(), input.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let file = input.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "{file}[doc 0] ServiceMeshExtension bookinfo/bad: spec.phase: unknown phase \"PreRouting\""
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("spec.config: a string config must hold a JSON object"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("2 problem(s)"), "{}", out.stderr);

    // Not YAML; no extension at all; no such file.
    std::fs::write(&input, "kind: [unclosed\n").unwrap();
    let out = wasmgate(["convert".as_ref(), input.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("invalid YAML"), "{}", out.stderr);
    std::fs::write(
        &input,
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
    )
    .unwrap();
    let out = wasmgate(["convert".as_ref(), input.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("no ServiceMeshExtension"),
        "{}",
        out.stderr
    );
    let out = wasmgate([
        "convert".as_ref(),
        dir.path().join("missing.yaml").as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("missing.yaml"), "{}", out.stderr);
}
