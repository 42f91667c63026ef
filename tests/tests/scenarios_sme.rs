//! Scenario 3, migration from Maistra's ServiceMeshExtension, end to end: an SME in the config
//! dir (its module pushed with `wasmgate push` to a real `docker-registry`) is served as its
//! WasmPlugin equivalent with a deprecation warning in the log; `wasmgate convert` prints that
//! WasmPlugin, and a fresh gateway given only the printed YAML behaves the same.

use std::time::Duration;

use wasmgate_e2e::cli::wasmgate;
use wasmgate_e2e::registry::Registry;
use wasmgate_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Maistra 2.x docs' header-append example, the image in our registry.
fn sme(registry: &str) -> String {
    format!(
        r#"apiVersion: maistra.io/v1
kind: ServiceMeshExtension
metadata:
  name: header-append
  namespace: default
spec:
  workloadSelector:
    labels:
      app: httpbin
  config:
    first-header: some-value
    another-header: another-value
  image: {registry}/maistra/header-append:2.1
  phase: PostAuthN
  priority: 100
"#
    )
}

/// The httpbin gateway of the rate-limit demo on `port`, and the labelled httpbin Service.
fn httpbin_config(dir: &ConfigDir, port: u16, httpbin: &Upstream) {
    const LISTENER: &str = "    port: 8080\n    protocol: HTTP\n";
    let gateway = repo_file("docker/ratelimit/config-offline/httpbin-gateway.yaml");
    assert!(gateway.contains(LISTENER), "{gateway}");
    dir.write(
        "httpbin-gateway.yaml",
        &gateway.replace(LISTENER, &format!("    port: {port}\n    protocol: HTTP\n")),
    );
    dir.write(
        "services.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  labels: {{app: httpbin}}\n  annotations:\n    wasmgate.io/endpoints: \"{}\"\nspec:\n  ports:\n  - port: 8080\n",
            httpbin.addr
        ),
    );
}

/// Status and the two configured headers of `GET /headers` once the plugin is in the served
/// chain, and the plugin's `/config_dump` entry.
async fn appended(gw: &Gateway, port: u16) -> (u16, String, String, serde_json::Value) {
    eventually(WAIT, "header-append fetched and running", || async {
        (gw.config_dump().await["plugins"]["default.header-append"]["state"] == "running")
            .then_some(())
    })
    .await;
    let seen = eventually(WAIT, "header-append in the served chain", || async {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/headers"))
            .send()
            .await
            .ok()?;
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(r.headers()["x-upstream"], "httpbin");
        Some((
            r.status().as_u16(),
            h("first-header")?,
            h("another-header")?,
        ))
    })
    .await;
    (
        seen.0,
        seen.1,
        seen.2,
        gw.config_dump().await["plugins"]["default.header-append"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_mesh_extension_serves_as_its_wasm_plugin_and_convert_prints_it() {
    let reg = Registry::start();
    let (url, digest) = reg.push_plugin("header-append", "maistra/header-append:2.1");
    let httpbin = Upstream::start("httpbin").await;
    let cache = tempfile::tempdir().expect("cache");
    let host = reg.host();
    let flags = [
        "--cache-dir",
        cache.path().to_str().expect("utf-8"),
        "--insecure-registries",
        host.as_str(),
    ];

    // 1. The ServiceMeshExtension itself, served with a deprecation warning.
    let sme_dir = ConfigDir::new();
    let port = free_port();
    httpbin_config(&sme_dir, port, &httpbin);
    sme_dir.write("header-append-sme.yaml", &sme(&reg.host()));
    let gw = Gateway::start_with(&sme_dir, &flags).await;
    let (status, first, another, plugin) = appended(&gw, port).await;
    assert_eq!(
        (status, first.as_str(), another.as_str()),
        (200, "some-value", "another-value")
    );
    assert_eq!(plugin["digest"], digest.as_str(), "{plugin}");
    assert_eq!(plugin["phase"], "AUTHZ", "PostAuthN → AUTHZ: {plugin}");
    assert_eq!(plugin["priority"], 100, "{plugin}");
    let log = gw.stderr();
    assert!(
        log.contains(
            "ServiceMeshExtension is deprecated: served as WasmPlugin default/header-append"
        ),
        "{log}"
    );
    drop(gw);

    // 2. `wasmgate convert` prints the WasmPlugin equivalent.
    let sme_file = sme_dir.path().join("header-append-sme.yaml");
    let out = wasmgate(["convert".as_ref(), sme_file.as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("deprecated"), "{}", out.stderr);
    let wp: serde_yaml::Value = serde_yaml::from_str(&out.stdout).expect("one YAML document");
    assert_eq!(wp["kind"], "WasmPlugin", "{}", out.stdout);
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(wp["spec"]["url"].as_str(), Some(url.as_str()));
    assert_eq!(wp["spec"]["phase"], "AUTHZ");
    assert_eq!(wp["spec"]["selector"]["matchLabels"]["app"], "httpbin");

    // 3. A fresh config dir with that YAML instead of the SME: the same behaviour, no warning.
    let wp_dir = ConfigDir::new();
    let port2 = free_port();
    httpbin_config(&wp_dir, port2, &httpbin);
    wp_dir.write("header-append.yaml", &out.stdout);
    let gw = Gateway::start_with(&wp_dir, &flags).await;
    let (status2, first2, another2, plugin2) = appended(&gw, port2).await;
    assert_eq!((status2, first2, another2), (status, first, another));
    assert_eq!(plugin2, plugin, "same module, phase and priority");
    assert!(
        !gw.stderr().contains("ServiceMeshExtension"),
        "{}",
        gw.stderr()
    );
}
