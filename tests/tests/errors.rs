//! Backend failures: refused ⇒ 503, slow ⇒ 504 (route timeout), each with a short body and a log line.

use wasmgate_e2e::upstream::refused_addr;
use wasmgate_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_is_503_and_slow_backend_is_504() {
    let port = free_port();
    let dir = ConfigDir::new();
    let slow = Upstream::start("slow").await;
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("down", 80, &[refused_addr()]),
            service_yaml("slow", 80, &[slow.addr])
        ),
    );
    dir.write(
        "route.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /down}}]
    backendRefs: [{name: down, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: slow, port: 80}]
"#,
    );
    let gw = Gateway::start(&dir).await;
    let c = client();

    let r = c
        .get(format!("http://127.0.0.1:{port}/down"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.expect("body"), "upstream unavailable\n");

    let r = c
        .get(format!("http://127.0.0.1:{port}/slow"))
        .header("x-delay-ms", "3000")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 504);
    assert_eq!(r.text().await.expect("body"), "upstream timeout\n");

    // Fast requests on the same route still pass.
    let r = c
        .get(format!("http://127.0.0.1:{port}/slow"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    let logs = eventually(PATIENCE, "error log lines", || async {
        let l = gw.stderr();
        (l.contains("status=503") && l.contains("status=504")).then_some(l)
    })
    .await;
    assert!(logs.contains("default/r"), "log names the route:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let port = free_port();
    let dir = ConfigDir::new();
    let up = Upstream::start("a").await;
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("svc.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    let _gw = Gateway::start(&dir).await;
    for _ in 0..30 {
        // A new client each time: new downstream connections, yet the upstream one is pooled.
        let r = client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
    }
    assert_eq!(up.hits(), 30);
    assert!(
        (1..=3).contains(&up.connections()),
        "{} upstream connections for 30 sequential requests",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_names_resolve_by_dns_or_external_name() {
    // `localhost` stands for a docker-compose service name: no Service resource, resolved by DNS.
    let port = free_port();
    let dir = ConfigDir::new();
    let up = Upstream::start("dns").await;
    let up_port = up.addr.port();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "svc.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ext}}\nspec:\n  type: ExternalName\n  externalName: localhost\n  ports: [{{port: {up_port}}}]\n"
        ),
    );
    dir.write(
        "route.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /dns}}}}]\n    backendRefs: [{{name: localhost, port: {up_port}}}]\n  - matches: [{{path: {{type: PathPrefix, value: /ext}}}}]\n    backendRefs: [{{name: ext, port: {up_port}}}]\n"
        ),
    );
    let gw = Gateway::start(&dir).await;
    for path in ["/dns", "/ext"] {
        let r = client()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{path}: {}", gw.stderr());
        assert_eq!(r.headers()["x-upstream"], "dns");
    }
    let dump = gw.config_dump().await;
    let backends = dump["backends"].to_string();
    assert!(
        backends.contains(&format!("127.0.0.1:{up_port}")),
        "resolved address shown: {backends}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_address_is_skipped_when_the_backend_has_others() {
    let port = free_port();
    let dir = ConfigDir::new();
    let (u1, u2) = (Upstream::start("one").await, Upstream::start("two").await);
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "svc.yaml",
        &service_yaml("multi", 80, &[u1.addr, refused_addr(), u2.addr]),
    );
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: multi, port: 80}]\n",
    );
    let gw = Gateway::start(&dir).await;
    for _ in 0..12 {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{}", gw.stderr());
    }
    // Round robin over the live addresses.
    assert!(
        u1.hits() >= 3 && u2.hits() >= 3,
        "one={} two={}",
        u1.hits(),
        u2.hits()
    );
}
