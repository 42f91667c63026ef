//! Routing by path, header, method, host and query; precedence; weights; filters; 404.

use std::collections::HashMap;

use serde_json::Value;
use wasmgate_e2e::*;

/// One gateway on a free port, upstreams `a`, `b`, `c` behind Services, and `routes` (YAML).
struct Setup {
    port: u16,
    gw: Gateway,
    _dir: ConfigDir,
    _ups: Vec<Upstream>,
}

async fn setup(routes: &str) -> Setup {
    let port = free_port();
    let dir = ConfigDir::new();
    let mut ups = Vec::new();
    let mut services = String::new();
    for name in ["a", "b", "c"] {
        let u = Upstream::start(name).await;
        services.push_str(&service_yaml(name, 80, &[u.addr]));
        services.push_str("---\n");
        ups.push(u);
    }
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("services.yaml", &services);
    dir.write("routes.yaml", routes);
    let gw = Gateway::start(&dir).await;
    Setup {
        port,
        gw,
        _dir: dir,
        _ups: ups,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a request and returns (status, upstream name or "", echoed JSON).
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, Value) {
        let mut req = client().request(method.parse().expect("method"), self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let upstream = json["upstream"].as_str().unwrap_or("").to_owned();
        (status, upstream, json)
    }

    async fn upstream_of(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let (status, up, body) = self.send(method, path, headers).await;
        assert_eq!(
            status,
            200,
            "{method} {path} {headers:?}: {body}\n{}",
            self.gw.stderr()
        );
        up
    }
}

const ROUTE_HEAD: &str =
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: ";

fn route(name: &str, body: &str) -> String {
    format!("{ROUTE_HEAD}{name}\nspec:\n  parentRefs:\n  - name: gw\n{body}---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_header_method_and_query() {
    let routes = route(
        "r",
        r#"  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
    backendRefs: [{name: a, port: 80}]
  - matches:
    - path: {type: Exact, value: /api/exact}
    backendRefs: [{name: b, port: 80}]
  - matches:
    - path: {type: RegularExpression, value: "/re/[0-9]+"}
    backendRefs: [{name: c, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /h}
      headers: [{name: X-Env, value: canary}]
    backendRefs: [{name: b, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /h}
    backendRefs: [{name: a, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /m}
      method: POST
    backendRefs: [{name: c, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /m}
    backendRefs: [{name: a, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /q}
      queryParams: [{name: v, value: "2"}]
    backendRefs: [{name: b, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /q}
    backendRefs: [{name: a, port: 80}]
"#,
    );
    let s = setup(&routes).await;
    assert_eq!(s.upstream_of("GET", "/api", &[]).await, "a");
    assert_eq!(s.upstream_of("GET", "/api/x/y", &[]).await, "a");
    assert_eq!(
        s.upstream_of("GET", "/api/exact", &[]).await,
        "b",
        "exact beats prefix"
    );
    assert_eq!(s.upstream_of("GET", "/api/exact/more", &[]).await, "a");
    assert_eq!(s.upstream_of("GET", "/re/123", &[]).await, "c");
    assert_eq!(
        s.send("GET", "/re/12x", &[]).await.0,
        404,
        "regex is anchored"
    );
    assert_eq!(
        s.send("GET", "/apix", &[]).await.0,
        404,
        "prefix on segment boundary"
    );
    assert_eq!(
        s.upstream_of("GET", "/h", &[("x-env", "canary")]).await,
        "b"
    );
    assert_eq!(s.upstream_of("GET", "/h", &[("x-env", "prod")]).await, "a");
    assert_eq!(s.upstream_of("GET", "/h", &[]).await, "a");
    assert_eq!(s.upstream_of("POST", "/m", &[]).await, "c");
    assert_eq!(s.upstream_of("GET", "/m", &[]).await, "a");
    assert_eq!(s.upstream_of("GET", "/q?x=1&v=2", &[]).await, "b");
    assert_eq!(s.upstream_of("GET", "/q?v=3", &[]).await, "a");
    let (status, _, body) = s.send("GET", "/nothing", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body, Value::String("no route\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_hostname_exact_then_wildcard() {
    let mut routes = route(
        "exact",
        "  hostnames: [foo.example.com]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    routes.push_str(&route(
        "wild",
        "  hostnames: [\"*.example.com\"]\n  rules:\n  - backendRefs: [{name: b, port: 80}]\n",
    ));
    routes.push_str(&route(
        "other",
        "  hostnames: [other.test]\n  rules:\n  - backendRefs: [{name: c, port: 80}]\n",
    ));
    let s = setup(&routes).await;
    assert_eq!(
        s.upstream_of("GET", "/", &[("host", "foo.example.com")])
            .await,
        "a"
    );
    assert_eq!(
        s.upstream_of("GET", "/", &[("host", "FOO.example.com:8080")])
            .await,
        "a"
    );
    assert_eq!(
        s.upstream_of("GET", "/", &[("host", "bar.example.com")])
            .await,
        "b"
    );
    assert_eq!(
        s.upstream_of("GET", "/", &[("host", "a.b.example.com")])
            .await,
        "b"
    );
    assert_eq!(
        s.upstream_of("GET", "/", &[("host", "other.test")]).await,
        "c"
    );
    assert_eq!(
        s.send("GET", "/", &[("host", "example.com")]).await.0,
        404,
        "wildcard needs a label"
    );
    assert_eq!(s.send("GET", "/", &[("host", "unknown.test")]).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_follows_the_gateway_api() {
    // Across routes: longest prefix, then method, then header count, then query count, then the
    // oldest route (creationTimestamp), then name order.
    let mut routes = format!(
        "{ROUTE_HEAD}newer\n  creationTimestamp: \"2024-02-01T00:00:00Z\"\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /tie}}}}]\n    backendRefs: [{{name: b, port: 80}}]\n---\n"
    );
    routes.push_str(&format!(
        "{ROUTE_HEAD}older\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /tie}}}}]\n    backendRefs: [{{name: a, port: 80}}]\n---\n"
    ));
    routes.push_str(&route(
        "specific",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /p}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /p/longer}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /k}, headers: [{name: x-a, value: "1"}]}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /k}, headers: [{name: x-a, value: "1"}, {name: x-b, value: "1"}]}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /k}, method: GET}]
    backendRefs: [{name: c, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /qq}, queryParams: [{name: a, value: "1"}]}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /qq}, queryParams: [{name: a, value: "1"}, {name: b, value: "1"}]}]
    backendRefs: [{name: b, port: 80}]
"#,
    ));
    let s = setup(&routes).await;
    assert_eq!(s.upstream_of("GET", "/p/x", &[]).await, "a");
    assert_eq!(
        s.upstream_of("GET", "/p/longer/x", &[]).await,
        "b",
        "longest prefix wins"
    );
    // Method match outranks header matches.
    assert_eq!(
        s.upstream_of("GET", "/k", &[("x-a", "1"), ("x-b", "1")])
            .await,
        "c"
    );
    assert_eq!(
        s.upstream_of("POST", "/k", &[("x-a", "1"), ("x-b", "1")])
            .await,
        "b",
        "most headers"
    );
    assert_eq!(s.upstream_of("POST", "/k", &[("x-a", "1")]).await, "a");
    assert_eq!(
        s.upstream_of("GET", "/qq?a=1&b=1", &[]).await,
        "b",
        "most query params"
    );
    assert_eq!(s.upstream_of("GET", "/qq?a=1", &[]).await, "a");
    assert_eq!(
        s.upstream_of("GET", "/tie", &[]).await,
        "a",
        "oldest route wins a tie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_and_zero_gets_none() {
    let routes = route(
        "w",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: a, port: 80, weight: 1}, {name: b, port: 80, weight: 3}, {name: c, port: 80, weight: 0}]
  - matches: [{path: {type: PathPrefix, value: /zero}}]
    backendRefs: [{name: a, port: 80, weight: 0}]
"#,
    );
    let s = setup(&routes).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *counts
            .entry(s.upstream_of("GET", "/split", &[]).await)
            .or_default() += 1;
    }
    let (a, b, c) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
        counts.get("c").copied().unwrap_or(0),
    );
    assert_eq!(c, 0, "weight 0 is never picked: {counts:?}");
    // Expected 50/150; bounds are ~5 standard deviations wide.
    assert!(
        (20..=85).contains(&a) && (115..=180).contains(&b),
        "{counts:?}"
    );
    let (status, _, body) = s.send("GET", "/zero", &[]).await;
    assert_eq!(status, 500, "all weights 0 ⇒ 500: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_modify_headers_redirect_and_rewrite() {
    let routes = route(
        "f",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: new}]
        add: [{name: x-add, value: added}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-resp, value: "yes"}]
        remove: [x-upstream]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example.com, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
  - matches: [{path: {type: PathPrefix, value: /rw}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /fixed}}
    backendRefs: [{name: c, port: 80}]
"#,
    );
    let s = setup(&routes).await;

    let (status, up, body) = s
        .send(
            "GET",
            "/hdr",
            &[("x-set", "old"), ("x-add", "first"), ("x-remove", "gone")],
        )
        .await;
    assert_eq!((status, up.as_str()), (200, "a"), "{body}");
    let h = &body["headers"];
    assert_eq!(h["x-set"], "new");
    assert_eq!(h["x-add"], "first,added");
    assert!(h.get("x-remove").is_none(), "{h}");
    let resp = client().get(s.url("/hdr")).send().await.expect("request");
    assert_eq!(resp.headers()["x-resp"], "yes");
    assert!(resp.headers().get("x-upstream").is_none());

    let resp = client()
        .get(s.url("/old/page?q=1"))
        .header("host", "site.test")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        "https://new.example.com/new/page?q=1"
    );
    let resp = client()
        .get(s.url("/moved/x"))
        .header("host", "site.test")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        format!("http://site.test:{}/elsewhere", s.port)
    );

    let (status, up, body) = s.send("GET", "/rw/items?id=7", &[]).await;
    assert_eq!((status, up.as_str()), (200, "b"), "{body}");
    assert_eq!(body["path"], "/v2/items");
    assert_eq!(body["query"], "id=7");
    assert_eq!(body["headers"]["host"], "backend.internal");
    let (_, up, body) = s.send("GET", "/full/a/b", &[]).await;
    assert_eq!(up, "c");
    assert_eq!(body["path"], "/fixed");
}
