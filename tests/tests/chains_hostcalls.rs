//! The gateway's host services to plugins: HTTP calls to named upstreams (backend name,
//! `name:port`, Istio cluster names; unknown ⇒ BadArgument), properties, and refusal of
//! `type: NETWORK` plugins.

use std::time::Duration;

use wasmgate_e2e::*;

fn dist(name: &str) -> String {
    format!(
        "file://{}/../plugins/dist/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn get(port: u16, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().get(format!("http://127.0.0.1:{port}/x?q=1"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_properties_and_network_plugins() {
    let up = Upstream::start("a").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("services.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /x}}]\n    backendRefs: [{name: a, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /net}}]\n    backendRefs: [{name: a, port: 80}]\n",
    );
    dir.write(
        "hostcalls.yaml",
        &format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: hostcalls}}\nspec:\n  url: {}\n  targetRefs: [{{kind: HTTPRoute, group: gateway.networking.k8s.io, name: r}}]\n",
            dist("hostcalls")
        ),
    );
    let gw = Gateway::start_with_cache(&dir, &[]).await;

    let hits = up.hits();
    for upstream in ["a", "a:80", "outbound|80||a.default.svc.cluster.local"] {
        let (s, h, body) = get(port, &[("x-test", "http-call"), ("x-upstream", upstream)]).await;
        assert_eq!(s, 200, "{upstream}: {body}");
        assert_eq!(h["x-call-status"], "200", "{upstream}");
    }
    // Each call reached the upstream, plus the proxied requests themselves.
    assert!(up.hits() >= hits + 6, "{} -> {}", hits, up.hits());
    let (s, _, body) = get(port, &[("x-test", "http-call"), ("x-upstream", "nope")]).await;
    assert_eq!(s, 500);
    assert!(body.contains("BadArgument"), "{body}");

    let (s, h, _) = get(port, &[("x-test", "properties")]).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-prop-request-path"], "/x?q=1");
    assert_eq!(h["x-prop-plugin-name"], "default.hostcalls");
    assert_eq!(h["x-prop-xds-route-name"], "default/r");
    assert_eq!(h["x-prop-xds-cluster-name"], "a");

    // Plugin-defined metrics and per-plugin callback histograms on /metrics.
    let (s, h, _) = get(port, &[("x-test", "metrics")]).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-metric-gauge"], "40");
    let (_, m) = gw.admin_get("/metrics").await;
    for want in [
        "hostcalls_requests_total ",
        "hostcalls_gauge 40",
        "hostcalls_histogram_bucket{le=\"10\"} 1",
        "hostcalls_histogram_count 2",
        "wasmgate_plugin_callback_seconds_count{plugin=\"default.hostcalls\"}",
    ] {
        assert!(m.contains(want), "{want} missing in:\n{m}");
    }

    // Bodies: buffered request body, rewritten response body, local replies from later phases.
    let post = |test: &'static str| {
        client()
            .post(format!("http://127.0.0.1:{port}/x"))
            .header("x-test", test)
            .body("hello body")
            .send()
    };
    let r = post("request-body-buffer").await.expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-req-body"], "hello body");
    assert_eq!(r.headers()["x-req-body-size"], "10");
    let r = post("local-reply-request-body").await.expect("post");
    assert_eq!(r.status(), 418);
    assert_eq!(
        r.text().await.expect("body"),
        "local reply from request body"
    );
    let (s, _, body) = get(port, &[("x-test", "response-body-buffer")]).await;
    assert_eq!(s, 200);
    assert!(body.starts_with("hostcalls saw "), "{body}");
    assert!(body.contains("\"upstream\":\"a\""), "{body}");
    let (s, h, body) = get(port, &[("x-test", "local-reply-response-headers")]).await;
    assert_eq!(
        (s, body.as_str()),
        (418, "local reply from response headers")
    );
    assert_eq!(h["x-local-reply"], "response-headers");

    // type: NETWORK is refused: the plugin is marked failed and (FAIL_CLOSE) denies its traffic.
    dir.write(
        "net.yaml",
        &format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: net}}\nspec:\n  url: {}\n  type: NETWORK\n",
            dist("header-append")
        ),
    );
    let state = eventually(
        Duration::from_secs(30),
        "NETWORK plugin refused",
        || async {
            let d = gw.config_dump().await;
            let s = d["plugins"]["default.net"]["state"].as_str()?.to_owned();
            Some(s)
        },
    )
    .await;
    assert!(state.contains("NETWORK is not supported yet"), "{state}");
    let (s, _, body) = get(port, &[]).await;
    assert_eq!((s, body.as_str()), (403, "RBAC: access denied"));
}

/// Plugins' HTTP calls reuse kept-alive connections to the upstream they call, as Envoy's cluster
/// pools do: a plugin calling out on every request does not open a connection for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_http_calls_reuse_upstream_connections() {
    use wasmgate_e2e::raw::{RawUpstream, Reply, ok};
    let up = Upstream::start("a").await;
    let calls = RawUpstream::start(|_| Reply::Send(ok(b"pong"))).await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("a", 80, &[up.addr]),
            service_yaml("calls", 80, &[calls.addr])
        ),
    );
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    dir.write(
        "hostcalls.yaml",
        &format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: hostcalls}}\nspec:\n  url: {}\n",
            dist("hostcalls")
        ),
    );
    // One worker: every call comes from the same pool.
    let _gw = Gateway::start_with_cache(&dir, &["--threads", "1"]).await;
    eventually(PATIENCE, "the hostcalls plugin running", || async {
        let (_, h, _) = get(port, &[("x-test", "properties")]).await;
        h.contains_key("x-hostcalls").then_some(())
    })
    .await;

    for i in 0..5 {
        let (s, h, body) = get(port, &[("x-test", "http-call"), ("x-upstream", "calls")]).await;
        assert_eq!(s, 200, "call {i}: {body}");
        assert_eq!(h["x-call-status"], "200", "call {i}");
    }
    let seen = calls.seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        calls.connections(),
        1,
        "every call on one kept-alive connection"
    );
    assert!(
        seen.iter().all(|r| r.head.method() == "POST"
            && r.head.target() == "/hostcalls"
            && r.head.get("host") == Some("calls")),
        "{seen:?}"
    );
}
