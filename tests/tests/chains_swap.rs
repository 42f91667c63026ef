//! Hot swap of WasmPlugin chains: no failed request under load while plugins are rewritten, a
//! refused configuration keeps the old version, an unchanged plugin keeps its VMs across an
//! unrelated swap, and a module that fails to load recovers in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmgate_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn dist(name: &str) -> String {
    format!(
        "file://{}/../plugins/dist/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn route(name: &str, prefix: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

fn plugin(name: &str, url: &str, config: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: {url}\n  pluginConfig: {config}\n"
    )
}

struct Setup {
    port: u16,
    dir: ConfigDir,
    gw: Gateway,
    _up: Upstream,
}

async fn setup(files: &[(&str, String)]) -> Setup {
    let port = free_port();
    let dir = ConfigDir::new();
    let up = Upstream::start("a").await;
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("services.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write("routes.yaml", &route("ra", "/", "a"));
    for (name, text) in files {
        dir.write(name, text);
    }
    let gw = Gateway::start_with_cache(&dir, &[]).await;
    Setup {
        port,
        dir,
        gw,
        _up: up,
    }
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap) {
    let mut req = client().get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.headers().clone())
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_swaps_under_load_fail_no_request() {
    let s = setup(&[(
        "p.yaml",
        plugin("tag", &dist("header-append"), "{x-version: v0}"),
    )])
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, port) = (stop.clone(), ok.clone(), s.port);
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.get(format!("http://127.0.0.1:{port}/x")).send().await {
                    Ok(r) if r.status() == 200 && r.headers().contains_key("x-version") => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => errors.push(format!("status {} {:?}", r.status(), r.headers())),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        }));
    }
    for i in 1..=10 {
        let v = format!("v{i}");
        s.dir.write(
            "p.yaml",
            &plugin(
                "tag",
                &dist("header-append"),
                &format!("{{x-version: {v}}}"),
            ),
        );
        eventually(WAIT, &format!("x-version {v}"), || async {
            let (_, h) = get(s.port, "/x", &[]).await;
            (header(&h, "x-version") == v).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.expect("worker"));
    }
    assert!(
        errors.is_empty(),
        "{} failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too few requests: {}",
        ok.load(Ordering::Relaxed)
    );
    // Old versions are released: one plugin with its 2 VMs remains.
    let (_, m) = s.gw.admin_get("/metrics").await;
    assert_eq!(
        metric(&m, "wasmgate_plugin_vms{plugin=\"default.tag\"}"),
        Some(2.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_configuration_keeps_the_old_version() {
    let good = r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"], "credentials": ["ok:test"]}]}"#;
    let bad = r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": [], "credentials": ["ok:test"]}]}"#;
    let s = setup(&[("auth.yaml", plugin("auth", &dist("basic-auth"), good))]).await;
    assert_eq!(get(s.port, "/x", &[]).await.0, 401);
    assert_eq!(
        get(s.port, "/x", &[("authorization", "Basic b2s6dGVzdA==")])
            .await
            .0,
        200
    );
    s.dir
        .write("auth.yaml", &plugin("auth", &dist("basic-auth"), bad));
    let state = eventually(WAIT, "the refused version in config_dump", || async {
        let d = s.gw.config_dump().await;
        let st = d["plugins"]["default.auth"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        st.contains("new version failed").then_some(st)
    })
    .await;
    assert!(
        state.contains("configure") || state.contains("Configure"),
        "{state}"
    );
    // The old version still guards the route.
    assert_eq!(get(s.port, "/x", &[]).await.0, 401);
    assert_eq!(
        get(s.port, "/x", &[("authorization", "Basic b2s6dGVzdA==")])
            .await
            .0,
        200
    );
    assert!(
        s.gw.stderr().contains("plugin load failed"),
        "{}",
        s.gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_plugin_keeps_its_vms_across_an_unrelated_swap() {
    let s = setup(&[(
        "hc.yaml",
        plugin("hostcalls", &dist("hostcalls"), "{log_lifecycle: false}"),
    )])
    .await;
    for _ in 0..5 {
        assert_eq!(get(s.port, "/x", &[("x-test", "time")]).await.0, 200);
    }
    let before = {
        let (_, m) = s.gw.admin_get("/metrics").await;
        metric(
            &m,
            "wasmgate_plugin_invocations_total{plugin=\"default.hostcalls\"}",
        )
        .expect("counter")
    };
    assert!(before >= 5.0);
    // An unrelated resource changes: another plugin comes and the route is rewritten.
    let g = s.gw.generation().await;
    s.dir.write(
        "other.yaml",
        &plugin("other", &dist("header-append"), "{x-other: yes}"),
    );
    s.dir.write(
        "routes.yaml",
        &route("ra", "/", "a").replace("PathPrefix, value: /", "PathPrefix, value: /x"),
    );
    eventually(WAIT, "other plugin live", || async {
        let (_, h) = get(s.port, "/x", &[]).await;
        (header(&h, "x-other") == "yes" && s.gw.generation().await > g).then_some(())
    })
    .await;
    let (_, m) = s.gw.admin_get("/metrics").await;
    let after = metric(
        &m,
        "wasmgate_plugin_invocations_total{plugin=\"default.hostcalls\"}",
    )
    .expect("counter");
    // Same Plugin: its counters go on (a reloaded plugin would start again from 0 and restart its VMs).
    assert!(after > before, "before {before}, after {after}");
    let starts = s.gw.stderr().matches("hostcalls: on_vm_start").count();
    assert_eq!(
        starts,
        2,
        "VMs started once per worker slot only:\n{}",
        s.gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_appears_later_is_picked_up_without_a_config_change() {
    let modules = tempfile::tempdir().expect("dir");
    let path = modules.path().join("late.wasm");
    let url = format!("file://{}", path.display());
    let s = setup(&[("late.yaml", plugin("late", &url, "{x-late: here}"))]).await;
    // FAIL_CLOSE (default): deny-all while the module is missing.
    let (status, _) = get(s.port, "/x", &[]).await;
    assert_eq!(status, 403);
    let src = dist("header-append");
    std::fs::copy(src.trim_start_matches("file://"), &path).expect("copy module");
    eventually(WAIT, "background retry loads the module", || async {
        let (st, h) = get(s.port, "/x", &[]).await;
        (st == 200 && header(&h, "x-late") == "here").then_some(())
    })
    .await;
    let d = s.gw.config_dump().await;
    assert_eq!(d["plugins"]["default.late"]["state"], "running", "{d}");
}
