//! The gateway's own error replies (404 no route, 500 no usable backend, 503 unreachable backend,
//! 504 route timeout) go
//! through the response callbacks of the plugins whose request headers ran, as Envoy's local
//! replies go through its encoder filters: a `header-append` plugin decorates them, on the own
//! HTTP/1 engine, on `--http1-engine pingora` and on HTTP/2 (h2c). A plugin that never saw the
//! request does not; one that traps there follows its fail strategy.

use std::time::Duration;

use wasmgate_e2e::raw::Conn;
use wasmgate_e2e::upstream::refused_addr;
use wasmgate_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

const NATIVE: &[&str] = &[];
const PINGORA: &[&str] = &["--http1-engine", "pingora"];

fn dist(name: &str) -> String {
    format!(
        "file://{}/../plugins/dist/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A `header-append` WasmPlugin adding `header: value` to responses; `extra` is more spec YAML.
fn appender(name: &str, header: &str, value: &str, extra: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: {}\n  pluginConfig: {{{header}: {value}}}\n{extra}",
        dist("header-append")
    )
}

/// A `hostile` WasmPlugin (misbehaves as the request's `x-hostile` header says).
fn hostile(strategy: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: hostile}}\nspec:\n  url: {}\n  phase: STATS\n  failStrategy: {strategy}\n",
        dist("hostile")
    )
}

const ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /up}}]
    backendRefs: [{name: up, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /down}}]
    backendRefs: [{name: down, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: slow, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /drained}}]
    backendRefs: [{name: up, port: 80, weight: 0}]
"#;

struct Setup {
    port: u16,
    gw: Gateway,
    _dir: ConfigDir,
    _ups: (Upstream, Upstream),
}

/// Gateway `gw`; `/up` → an echo upstream, `/down` → an address refusing connections, `/slow` →
/// an echo upstream with a 300 ms route timeout, `/drained` → no usable backend (weight 0); nothing else is routed. Plus `plugins`.
async fn setup(plugins: &[(&str, String)], args: &[&str]) -> Setup {
    let port = free_port();
    let dir = ConfigDir::new();
    let (up, slow) = (Upstream::start("up").await, Upstream::start("slow").await);
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "services.yaml",
        &[
            service_yaml("up", 80, &[up.addr]),
            service_yaml("down", 80, &[refused_addr()]),
            service_yaml("slow", 80, &[slow.addr]),
        ]
        .join("---\n"),
    );
    dir.write("routes.yaml", ROUTES);
    for (name, text) in plugins {
        dir.write(name, text);
    }
    let gw = Gateway::start_with_cache(&dir, args).await;
    Setup {
        port,
        gw,
        _dir: dir,
        _ups: (up, slow),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(c: &reqwest::Client, port: u16, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = c.get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

/// Waits until `header` shows on answers for `path`: the plugin adding it runs there.
async fn wait_header(c: &reqwest::Client, port: u16, path: &str, header: &str) {
    eventually(WAIT, &format!("{header} on {path}"), || async {
        get(c, port, path, &[])
            .await
            .headers
            .contains_key(header)
            .then_some(())
    })
    .await;
}

/// The access log line of the request for `path` (one request per path in these tests).
async fn access_line(gw: &Gateway, path: &str) -> serde_json::Value {
    let needle = format!("\"path\":\"{path}\"");
    let line = eventually(WAIT, &format!("an access log line for {path}"), || async {
        gw.stdout()
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_owned)
    })
    .await;
    serde_json::from_str(&line).expect("json access line")
}

async fn error_replies_are_decorated(args: &[&str], c: reqwest::Client) {
    let s = setup(
        &[("p.yaml", appender("deco", "x-decorated", "yes", ""))],
        args,
    )
    .await;
    wait_header(&c, s.port, "/up", "x-decorated").await;

    let r = get(&c, s.port, "/nowhere", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (404, "no route\n"));
    assert_eq!(r.headers["x-decorated"], "yes", "404: {:?}", r.headers);
    assert_eq!(r.headers["content-length"], "9");

    let r = get(&c, s.port, "/down", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "upstream unavailable\n"));
    assert_eq!(r.headers["x-decorated"], "yes", "503: {:?}", r.headers);

    let r = get(&c, s.port, "/slow", &[("x-delay-ms", "5000")]).await;
    assert_eq!((r.status, r.body.as_str()), (504, "upstream timeout\n"));
    assert_eq!(r.headers["x-decorated"], "yes", "504: {:?}", r.headers);

    let r = get(&c, s.port, "/drained", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.headers["x-decorated"], "yes", "500: {:?}", r.headers);

    // Metrics and the access log count what the client got.
    for (path, status) in [
        ("/nowhere", 404),
        ("/down", 503),
        ("/slow", 504),
        ("/drained", 500),
    ] {
        assert_eq!(access_line(&s.gw, path).await["status"], status, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_pass_the_plugins_on_the_own_http1_engine() {
    error_replies_are_decorated(NATIVE, client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_pass_the_plugins_on_the_pingora_http1_engine() {
    error_replies_are_decorated(PINGORA, client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_pass_the_plugins_over_h2c() {
    error_replies_are_decorated(NATIVE, h2c_client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_never_saw_the_request_do_not_see_its_error_reply() {
    // `deco` applies to all traffic; `routed` only to requests its HTTPRoute matched.
    let routed = appender(
        "routed",
        "x-routed",
        "yes",
        "  targetRefs: [{kind: HTTPRoute, group: gateway.networking.k8s.io, name: r}]\n",
    );
    let s = setup(
        &[
            ("p.yaml", appender("deco", "x-decorated", "yes", "")),
            ("q.yaml", routed),
        ],
        NATIVE,
    )
    .await;
    let c = client();
    wait_header(&c, s.port, "/up", "x-routed").await;
    wait_header(&c, s.port, "/nowhere", "x-decorated").await;

    // The route's plugin saw the request to /down: it sees the 503 too.
    let r = get(&c, s.port, "/down", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-routed"], "yes");
    assert_eq!(r.headers["x-decorated"], "yes");

    // No usable backend: the route's plugins still run before the 500.
    let r = get(&c, s.port, "/drained", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.headers["x-routed"], "yes");
    assert_eq!(r.headers["x-decorated"], "yes");

    // No route: only the gateway-wide plugin ran.
    let r = get(&c, s.port, "/nowhere", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["x-decorated"], "yes");
    assert!(!r.headers.contains_key("x-routed"), "{:?}", r.headers);

    // A request that cannot be parsed reaches no plugin.
    let mut conn = Conn::connect(("127.0.0.1", s.port)).await.expect("connect");
    let resp = conn
        .expect(b"this is not an http request line\r\nHost: x\r\n\r\n", 400)
        .await;
    assert!(!resp.head.has("x-decorated"), "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_reaches_no_plugin_on_the_pingora_engine() {
    let s = setup(
        &[("p.yaml", appender("deco", "x-decorated", "yes", ""))],
        PINGORA,
    )
    .await;
    let c = client();
    wait_header(&c, s.port, "/nowhere", "x-decorated").await;
    let mut conn = Conn::connect(("127.0.0.1", s.port)).await.expect("connect");
    let resp = conn
        .expect(b"this is not an http request line\r\nHost: x\r\n\r\n", 400)
        .await;
    assert!(!resp.head.has("x-decorated"), "{resp:?}");
}

/// `deco` (AUTHN: first in the chain, so last on the response) and `hostile` (STATS) on all
/// traffic; returns the answer to an unrouted request whose `hostile` traps on the 404's headers.
async fn trap_on_a_404(strategy: &str) -> (Answer, Setup) {
    let s = setup(
        &[
            (
                "p.yaml",
                appender("deco", "x-decorated", "yes", "  phase: AUTHN\n"),
            ),
            ("h.yaml", hostile(strategy)),
        ],
        NATIVE,
    )
    .await;
    let c = client();
    wait_header(&c, s.port, "/nowhere-warmup", "x-decorated").await;
    eventually(WAIT, "hostile loaded", || async {
        let (_, m) = s.gw.admin_get("/metrics").await;
        m.contains("wasmgate_plugin_vms{plugin=\"default.hostile\"}")
            .then_some(())
    })
    .await;
    let r = get(
        &c,
        s.port,
        "/nowhere-trap",
        &[("x-hostile", "panic_in=on_response_headers")],
    )
    .await;
    (r, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_trap_on_an_error_reply_answers_503_and_stops_the_chain() {
    let (r, s) = trap_on_a_404("FAIL_CLOSE").await;
    // Envoy's failStream while the 404 goes through the filters: its 503 goes out directly.
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!r.headers.contains_key("x-decorated"), "{:?}", r.headers);
    assert_eq!(access_line(&s.gw, "/nowhere-trap").await["status"], 503);
    // The gateway goes on serving.
    let r = get(&client(), s.port, "/up", &[]).await;
    assert!(r.status == 200 || r.status == 503, "{}", r.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_open_trap_on_an_error_reply_skips_the_plugin() {
    let (r, s) = trap_on_a_404("FAIL_OPEN").await;
    assert_eq!((r.status, r.body.as_str()), (404, "no route\n"));
    assert_eq!(r.headers["x-decorated"], "yes", "{:?}", r.headers);
    assert_eq!(access_line(&s.gw, "/nowhere-trap").await["status"], 404);
}
