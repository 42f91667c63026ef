//! Cross-namespace rules of the Gateway API on real sockets: a listener's `allowedRoutes` decides
//! which namespaces' routes it serves (default `Same`; `All`; `Selector` on `Namespace` labels),
//! and a `ReferenceGrant` is required for a backendRef or a certificateRef into another namespace.
//! Grants and labels are followed live: removing one revokes what it allowed.

use std::net::SocketAddr;

use rcgen::{CertificateParams, KeyPair};
use wasmgate_e2e::*;

fn gateway(port: u16, allowed: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\n\
         spec:\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n{allowed}"
    )
}

/// `a` Service in `namespace`, pointing at `addr`.
fn service_in(namespace: &str, addr: SocketAddr) -> String {
    service_yaml("a", 80, &[addr]).replace(
        "metadata:\n  name: a\n",
        &format!("metadata:\n  name: a\n  namespace: {namespace}\n"),
    )
}

/// `(status, x-upstream)`, or `None` when the connection fails.
async fn get(port: u16) -> Option<(u16, String)> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .ok()?;
    let up = r
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Some((r.status().as_u16(), up))
}

async fn wait_status(port: u16, status: u16, what: &str) {
    eventually(PATIENCE, what, || async {
        get(port).await.filter(|(s, _)| *s == status).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_routes_decide_which_namespaces_attach() {
    let port = free_port();
    let up = Upstream::start("a").await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway(port, ""));
    dir.write("svc.yaml", &service_in("apps", up.addr));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: apps}\n\
         spec:\n  parentRefs: [{name: gw, namespace: infra}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    // `validate` reports the refusal as a warning; the directory is valid.
    let out = wasmgate_e2e::cli::wasmgate(["validate".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("warning: ")
            && out.stderr.contains(
                "HTTPRoute apps/r: spec.parentRefs[0]: not allowed by Gateway infra/gw \
             listener http (allowedRoutes.namespaces.from: Same)"
            ),
        "{}",
        out.all()
    );
    let gw = Gateway::start(&dir).await;

    // Default `from: Same`: the route in `apps` is not served, and the refusal is reported.
    assert_eq!(
        get(port).await,
        Some((404, String::new())),
        "{}",
        gw.stderr()
    );
    let dump = gw.config_dump().await;
    let refusal = "not attached: not allowed by Gateway infra/gw listener http (allowedRoutes.namespaces.from: Same)";
    assert!(
        dump["problems"].as_array().unwrap().iter().any(|p| {
            p["route"] == "apps/r" && p["field"] == "spec.parentRefs[0]" && p["message"] == refusal
        }),
        "{}",
        dump["problems"]
    );
    let warned = "route.yaml[doc 0] HTTPRoute apps/r: spec.parentRefs[0]: not allowed by Gateway infra/gw \
                  listener http (allowedRoutes.namespaces.from: Same)";
    assert!(gw.stderr().contains(warned), "{}", gw.stderr());

    // `from: Selector`: served once the route's Namespace carries the selected label ...
    let g = gw.generation().await;
    dir.write(
        "gateway.yaml",
        &gateway(
            port,
            "    allowedRoutes:\n      namespaces:\n        from: Selector\n        \
             selector: {matchLabels: {shared-gateway-access: \"true\"}}\n",
        ),
    );
    eventually(PATIENCE, "the Gateway edit applied", || async {
        (gw.generation().await > g).then_some(())
    })
    .await;
    assert_eq!(
        get(port).await.map(|r| r.0),
        Some(404),
        "no Namespace: no labels"
    );
    let namespace = |access: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n  labels: {{shared-gateway-access: \"{access}\"}}\n"
        )
    };
    dir.write("ns.yaml", &namespace("true"));
    wait_status(port, 200, "the labelled namespace's route served").await;
    assert_eq!(get(port).await, Some((200, "a".to_owned())));
    // ... and no longer once the label changes.
    dir.write("ns.yaml", &namespace("false"));
    wait_status(port, 404, "the route withdrawn with the label").await;

    // `from: All`.
    dir.write(
        "gateway.yaml",
        &gateway(port, "    allowedRoutes: {namespaces: {from: All}}\n"),
    );
    wait_status(port, 200, "every namespace allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_in_another_namespace_needs_a_reference_grant() {
    let port = free_port();
    let up = Upstream::start("a").await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway(port, ""));
    dir.write("svc.yaml", &service_in("backends", up.addr));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: infra}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, namespace: backends, port: 80}]\n",
    );
    let gw = Gateway::start(&dir).await;

    // The rule matches, and answers 500 for its refused backend (Gateway API, RefNotPermitted).
    assert_eq!(get(port).await.map(|r| r.0), Some(500), "{}", gw.stderr());
    assert!(
        gw.stderr().contains(
            "HTTPRoute infra/r: spec.rules[0].backendRefs[0]: Service backends/a is in another namespace and no \
             ReferenceGrant in backends allows references to it from HTTPRoutes in infra (RefNotPermitted)"
        ),
        "{}",
        gw.stderr()
    );

    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {name: routes-from-infra, namespace: backends}\nspec:\n  \
                 from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]\n  \
                 to: [{group: \"\", kind: Service, name: a}]\n";
    dir.write("grant.yaml", grant);
    wait_status(port, 200, "the granted backend served").await;
    assert_eq!(get(port).await, Some((200, "a".to_owned())));

    // Removing the grant revokes it.
    dir.remove("grant.yaml");
    wait_status(port, 500, "the backend refused again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_in_another_namespace_needs_a_reference_grant() {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["secure.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let (https, http) = (free_port(), free_port());
    let up = Upstream::start("a").await;
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\n\
             spec:\n  listeners:\n  - name: https\n    port: {https}\n    protocol: HTTPS\n    tls:\n      \
             certificateRefs: [{{name: cert, namespace: certs}}]\n"
        ),
    );
    // A second Gateway keeps the process serving something while the first one is refused.
    dir.write("other.yaml", &gateway_yaml("plain", http));
    dir.write(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: certs}}\ntype: kubernetes.io/tls\n\
             stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&cert.pem()),
            indent(&key.serialize_pem())
        ),
    );
    dir.write("svc.yaml", &service_in("infra", up.addr));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: infra}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    let gw = Gateway::start(&dir).await;

    install_crypto();
    let ca = reqwest::Certificate::from_pem(cert.pem().as_bytes()).expect("ca");
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().expect("addr");
    let https_get = || async {
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca.clone()])
            .resolve("secure.test", addr)
            .timeout(PATIENCE)
            .build()
            .expect("client")
            .get(format!("https://secure.test:{https}/"))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };

    // Without a grant the Gateway is rejected: its HTTPS port is not served.
    assert_eq!(https_get().await, None, "{}", gw.stderr());
    assert!(
        gw.stderr().contains(
            "Gateway infra/gw: spec.listeners[0].tls.certificateRefs[0]: Secret certs/cert is in another namespace \
             and no ReferenceGrant in certs allows references to it from Gateways in infra (RefNotPermitted)"
        ),
        "{}",
        gw.stderr()
    );

    dir.write(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: gateways, namespace: certs}\n\
         spec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  \
         to: [{group: \"\", kind: Secret}]\n",
    );
    eventually(PATIENCE, "HTTPS served with the grant", || async {
        https_get().await.filter(|s| *s == 200)
    })
    .await;

    // Revoked: conf keeps the last good Gateway, the gateway stops serving its listener.
    dir.remove("grant.yaml");
    eventually(PATIENCE, "the HTTPS listener closed", || async {
        https_get().await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        get(http).await.map(|r| r.0),
        Some(404),
        "the other Gateway still serves"
    );
}
