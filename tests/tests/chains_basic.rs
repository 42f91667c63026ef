//! WasmPlugin chains on real traffic: order across phases and priorities, targeting, local
//! replies, fail strategies and Istio's basic-auth example, with the real plugins of
//! `plugins/dist/` loaded through `file://` URLs.

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

/// A header-append WasmPlugin adding `x-order: <value>`; `extra` is more spec YAML (2-space indent).
fn appender(name: &str, value: &str, extra: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: {}\n  pluginConfig: {{x-order: {value}}}\n{extra}",
        dist("header-append")
    )
}

struct Setup {
    port: u16,
    _dir: ConfigDir,
    gw: Gateway,
    _ups: (Upstream, Upstream),
}

/// Gateway `gw` (labels `team: edge`), Services `a` (labels `app: a`) and `b`, routes
/// `/a` → a, `/b` → b, plus `files`.
async fn setup(files: &[(&str, String)]) -> Setup {
    let port = free_port();
    let dir = ConfigDir::new();
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    dir.write(
        "gateway.yaml",
        &gateway_yaml("gw", port).replace("  name: gw\n", "  name: gw\n  labels: {team: edge}\n"),
    );
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("a", 80, &[a.addr])
                .replace("  name: a\n", "  name: a\n  labels: {app: a}\n"),
            service_yaml("b", 80, &[b.addr])
        ),
    );
    // /c goes to a backend with no Service resource (`localhost`), which carries `app: localhost`.
    let rc =
        route("rc", "/c", "localhost").replace("port: 80", &format!("port: {}", b.addr.port()));
    dir.write(
        "routes.yaml",
        &format!(
            "{}---\n{}---\n{rc}",
            route("ra", "/a", "a"),
            route("rb", "/b", "b")
        ),
    );
    for (name, text) in files {
        dir.write(name, text);
    }
    let gw = Gateway::start_with_cache(&dir, &[]).await;
    Setup {
        port,
        _dir: dir,
        gw,
        _ups: (a, b),
    }
}

struct Reply {
    status: u16,
    order: Vec<String>,
    body: String,
    headers: reqwest::header::HeaderMap,
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let order = headers
        .get_all("x-order")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect();
    Reply {
        status,
        order,
        body: r.text().await.unwrap_or_default(),
        headers,
    }
}

/// Polls until `path` answers with the given `x-order` list (plugins load in the background).
async fn wait_order(port: u16, path: &str, want: &[&str]) {
    eventually(WAIT, &format!("{path} with x-order {want:?}"), || async {
        let r = get(port, path, &[]).await;
        (r.order == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_order_follows_phase_then_priority_and_response_runs_in_reverse() {
    // Chain order: authn(AUTHN) → authz-hi(AUTHZ, 10) → authz-lo(AUTHZ, 5) → authz-unset(AUTHZ)
    // → stats(STATS) → plain(no phase). Response callbacks run in reverse, so the response shows
    // the reverse of the chain.
    let s = setup(&[
        ("p1.yaml", appender("plain", "plain", "")),
        ("p2.yaml", appender("stats", "stats", "  phase: STATS\n")),
        (
            "p3.yaml",
            appender("authz-lo", "authz-lo", "  phase: AUTHZ\n  priority: 5\n"),
        ),
        (
            "p4.yaml",
            appender("authz-unset", "authz-unset", "  phase: AUTHZ\n"),
        ),
        (
            "p5.yaml",
            appender("authz-hi", "authz-hi", "  phase: AUTHZ\n  priority: 10\n"),
        ),
        (
            "p6.yaml",
            appender("authn", "authn", "  phase: AUTHN\n  priority: -100\n"),
        ),
    ])
    .await;
    wait_order(
        s.port,
        "/a",
        &[
            "plain",
            "stats",
            "authz-unset",
            "authz-lo",
            "authz-hi",
            "authn",
        ],
    )
    .await;
    // The dump shows the chain in request order, with digests and states.
    let dump = s.gw.config_dump().await;
    let chain: Vec<String> = dump["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["route"] == "default/ra")
        .expect("route ra")["chains"][0]["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .map(|l| {
            assert_eq!(l["state"], "running", "{l}");
            assert!(
                l["digest"].as_str().unwrap_or("").starts_with("sha256:"),
                "{l}"
            );
            l["plugin"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(
        chain,
        [
            "default.authn",
            "default.authz-hi",
            "default.authz-lo",
            "default.authz-unset",
            "default.stats",
            "default.plain"
        ]
    );
    // Plugin metrics are scraped from the runtime.
    let (_, metrics) = s.gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("wasmgate_plugin_invocations_total{plugin=\"default.authn\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasmgate_plugin_vms{plugin=\"default.authn\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("istio_agent_wasm_config_conversion_count"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeting_modes_select_the_right_traffic() {
    let s = setup(&[
        // Istio's default gateway label.
        (
            "t1.yaml",
            appender(
                "gw-default",
                "gw-default",
                "  selector: {matchLabels: {istio: ingressgateway}}\n",
            ),
        ),
        // The Gateway resource's own label.
        (
            "t2.yaml",
            appender(
                "gw-label",
                "gw-label",
                "  selector: {matchLabels: {team: edge}}\n",
            ),
        ),
        // A backend's Service label: only /a.
        (
            "t3.yaml",
            appender(
                "backend-a",
                "backend-a",
                "  selector: {matchLabels: {app: a}}\n",
            ),
        ),
        // A Service without labels has none: nothing matches `app: b`.
        (
            "t4.yaml",
            appender(
                "backend-b",
                "backend-b",
                "  selector: {matchLabels: {app: b}}\n",
            ),
        ),
        // A backend without a Service resource carries `app: <name>`: only /c.
        (
            "t11.yaml",
            appender(
                "backend-c",
                "backend-c",
                "  selector: {matchLabels: {app: localhost}}\n",
            ),
        ),
        // targetRefs.
        (
            "t5.yaml",
            appender(
                "ref-gw",
                "ref-gw",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
            ),
        ),
        (
            "t6.yaml",
            appender(
                "ref-svc",
                "ref-svc",
                "  targetRefs: [{kind: Service, group: \"\", name: b}]\n",
            ),
        ),
        (
            "t7.yaml",
            appender(
                "ref-route",
                "ref-route",
                "  targetRefs: [{kind: HTTPRoute, group: gateway.networking.k8s.io, name: ra}]\n",
            ),
        ),
        // The root namespace applies everywhere; another namespace only to its own workloads.
        (
            "t12.yaml",
            appender("root", "root", "")
                .replace("name: root}", "name: root, namespace: istio-system}"),
        ),
        (
            "t13.yaml",
            appender("elsewhere", "elsewhere", "")
                .replace("name: elsewhere}", "name: elsewhere, namespace: other}"),
        ),
        // Nothing matches these.
        (
            "t8.yaml",
            appender(
                "other-gw",
                "other-gw",
                "  selector: {matchLabels: {istio: egressgateway}}\n",
            ),
        ),
        (
            "t9.yaml",
            format!(
                "{}  match: [{{ports: [{{number: 1}}]}}]\n",
                appender("other-port", "other-port", "")
            ),
        ),
        (
            "t10.yaml",
            format!(
                "{}  match: [{{mode: SERVER}}]\n",
                appender("server-only", "server-only", "")
            ),
        ),
    ])
    .await;
    // Same phase and priority: ordered by creation (first seen), then name. Compare as sets.
    let want_a = [
        "backend-a",
        "gw-default",
        "gw-label",
        "ref-gw",
        "ref-route",
        "root",
    ];
    let want_b = ["gw-default", "gw-label", "ref-gw", "ref-svc", "root"];
    let want_c = ["backend-c", "gw-default", "gw-label", "ref-gw", "root"];
    for (path, want) in [
        ("/a", &want_a[..]),
        ("/b", &want_b[..]),
        ("/c", &want_c[..]),
    ] {
        eventually(WAIT, &format!("{path} sees {want:?}"), || async {
            let mut got = get(s.port, path, &[]).await.order;
            got.sort();
            (got == *want).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reply_stops_later_plugins_and_earlier_ones_see_it() {
    let hostcalls = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: hostcalls}}\nspec:\n  url: {}\n  phase: AUTHZ\n",
        dist("hostcalls")
    );
    let s = setup(&[
        ("early.yaml", appender("early", "early", "  phase: AUTHN\n")),
        ("hostcalls.yaml", hostcalls),
        ("late.yaml", appender("late", "late", "  phase: STATS\n")),
    ])
    .await;
    wait_order(s.port, "/a", &["late", "early"]).await;
    let r = get(s.port, "/a", &[("x-test", "local-reply-request-headers")]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "local reply from request headers");
    assert_eq!(r.headers["x-local-reply"], "request-headers");
    // "late" never ran; "early" saw the local reply on its response path.
    assert_eq!(r.order, ["early"]);
    // Gateway-wide plugins run on requests no route matches, before the 404.
    let r = get(
        s.port,
        "/nowhere",
        &[("x-test", "local-reply-request-headers")],
    )
    .await;
    assert_eq!(r.status, 418);
    assert_eq!(get(s.port, "/nowhere", &[]).await.status, 404);
    // Request-header edits reach the upstream and response edits the client.
    let r = get(s.port, "/a", &[("x-test", "headers"), ("x-in", "v")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-got-x-in"], "v");
    assert_eq!(r.headers["x-seen-status"], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_module_fail_close_denies_and_fail_open_skips() {
    let missing = |name: &str, strategy: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: file:///nonexistent/{name}.wasm\n  failStrategy: {strategy}\n  targetRefs: [{{kind: Service, group: \"\", name: {}}}]\n",
            if strategy == "FAIL_CLOSE" { "a" } else { "b" }
        )
    };
    let s = setup(&[
        ("closed.yaml", missing("closed", "FAIL_CLOSE")),
        ("open.yaml", missing("open", "FAIL_OPEN")),
    ])
    .await;
    eventually(WAIT, "deny-all on /a", || async {
        let r = get(s.port, "/a", &[]).await;
        (r.status == 403).then_some(r)
    })
    .await;
    let r = get(s.port, "/a", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(get(s.port, "/b", &[]).await.status, 200);
    let dump = s.gw.config_dump().await;
    let closed = dump["plugins"]["default.closed"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(closed.starts_with("deny-all"), "{closed}");
    let open = dump["plugins"]["default.open"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(open.starts_with("skipped"), "{open}");
    let (_, metrics) = s.gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("wasmgate_plugin_deny_all_total{plugin=\"default.closed\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traps_follow_the_fail_strategy() {
    let hostile = |name: &str, strategy: &str, svc: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: {}\n  failStrategy: {strategy}\n  targetRefs: [{{kind: Service, group: \"\", name: {svc}}}]\n",
            dist("hostile")
        )
    };
    let reload = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: h-reload}}\nspec:\n  url: {}\n  failStrategy: FAIL_RELOAD\n  targetRefs: [{{kind: HTTPRoute, group: gateway.networking.k8s.io, name: rc}}]\n",
        dist("hostile")
    );
    let s = setup(&[
        ("close.yaml", hostile("h-close", "FAIL_CLOSE", "a")),
        ("open.yaml", hostile("h-open", "FAIL_OPEN", "b")),
        ("reload.yaml", reload),
    ])
    .await;
    let trap = [("x-hostile", "panic_in=on_request_headers")];
    // FAIL_CLOSE: a trapping request gets 503, and a failed VM answers 503 from then on. There
    // is one VM per worker thread, so trap until a clean request lands on a failed one.
    let r = get(s.port, "/a", &trap).await;
    assert_eq!(r.status, 503, "{}", r.body);
    eventually(WAIT, "clean requests refused by a failed VM", || async {
        if get(s.port, "/a", &[]).await.status == 503 {
            return Some(());
        }
        assert_eq!(get(s.port, "/a", &trap).await.status, 503);
        None
    })
    .await;
    // FAIL_OPEN: the trap skips the plugin; the request goes on.
    eventually(WAIT, "hostile loaded on /b", || async {
        let (_, m) = s.gw.admin_get("/metrics").await;
        m.contains("wasmgate_plugin_vms{plugin=\"default.h-open\"}")
            .then_some(())
    })
    .await;
    let r = get(s.port, "/b", &trap).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(s.port, "/b", &[]).await.status, 200);
    // FAIL_RELOAD: 503 for the trapping request, then a fresh VM serves again after the backoff.
    // There is one VM per worker: a clean request that lands on the healthy worker passes at once,
    // one on the failed worker gets 503 until its backoff passes and a fresh VM replaces it. So
    // wait for both: a reload counted, and clean requests passing.
    let r = get(s.port, "/c", &trap).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let reload_line =
        "wasmgate_plugin_fail_strategy_total{action=\"reload\",plugin=\"default.h-reload\"}";
    eventually(WAIT, "a fresh VM after the reload backoff", || async {
        let status = get(s.port, "/c", &[]).await.status;
        assert!(
            status == 200 || status == 503,
            "clean request on /c: {status}"
        );
        let (_, m) = s.gw.admin_get("/metrics").await;
        let reloads: f64 = m
            .lines()
            .find(|l| l.starts_with(reload_line))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        (status == 200 && reloads >= 1.0).then_some(())
    })
    .await;
}
