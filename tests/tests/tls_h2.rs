//! HTTPS with a generated certificate (CA + leaf, as rustls requires), ALPN h2, and h2c.

use std::net::SocketAddr;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use wasmgate_e2e::*;

struct Pki {
    ca_pem: String,
    leaf_pem: String,
    leaf_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wasmgate test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["secure.test".to_owned(), "localhost".to_owned()])
        .expect("leaf params");
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .expect("leaf cert");
    Pki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        leaf_key_pem: leaf_key.serialize_pem(),
    }
}

fn secret_yaml(pki: &Pki) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cert}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&pki.leaf_pem),
        indent(&pki.leaf_key_pem)
    )
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_h1_and_alpn_h2_and_plain_serves_h2c() {
    let pki = pki();
    let (https_port, http_port) = (free_port(), free_port());
    let up = Upstream::start("a").await;
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  listeners:
  - name: https
    port: {https_port}
    protocol: HTTPS
    hostname: secure.test
    tls:
      certificateRefs: [{{name: cert}}]
  - name: http
    port: {http_port}
    protocol: HTTP
---
apiVersion: v1
kind: Secret
metadata: {{name: cert}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}"#,
            indent(&pki.leaf_pem),
            indent(&pki.leaf_key_pem)
        ),
    );
    dir.write("svc.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    let gw = Gateway::start(&dir).await;

    install_crypto();
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca");
    let addr: SocketAddr = format!("127.0.0.1:{https_port}").parse().expect("addr");
    let tls_client = |h2: bool| {
        let b = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca.clone()])
            .resolve("secure.test", addr)
            .timeout(PATIENCE);
        let b = if h2 { b } else { b.http1_only() };
        b.build().expect("client")
    };
    let url = format!("https://secure.test:{https_port}/hello");

    let r = tls_client(false).get(&url).send().await.expect("https h1");
    assert_eq!(r.status(), 200, "{}", gw.stderr());
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["path"], "/hello");

    let r = tls_client(true).get(&url).send().await.expect("https h2");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["upstream"], "a");

    // The HTTPS listener's hostname restricts it: another SNI/host gets no route.
    let other: SocketAddr = addr;
    let c = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca.clone()])
        .resolve("localhost", other)
        .timeout(PATIENCE)
        .build()
        .expect("client");
    let r = c
        .get(format!("https://localhost:{https_port}/hello"))
        .send()
        .await
        .expect("https other host");
    assert_eq!(r.status(), 404);

    let r = h2c_client()
        .get(format!("http://127.0.0.1:{http_port}/h2c"))
        .send()
        .await
        .expect("h2c");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["path"], "/h2c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_applies_to_new_connections() {
    let (old, new) = (pki(), pki());
    let port = free_port();
    let up = Upstream::start("a").await;
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  listeners:\n  - name: https\n    port: {port}\n    protocol: HTTPS\n    tls:\n      certificateRefs: [{{name: cert}}]\n"
        ),
    );
    dir.write("secret.yaml", &secret_yaml(&old));
    dir.write("svc.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    let gw = Gateway::start(&dir).await;
    install_crypto();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // A fresh client per request: a new connection, so a new handshake.
    let trusting = |p: &Pki| {
        let ca = reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).expect("ca");
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca])
            .resolve("localhost", addr)
            .timeout(PATIENCE)
            .build()
            .expect("client")
    };
    let url = format!("https://localhost:{port}/");
    assert_eq!(
        trusting(&old)
            .get(&url)
            .send()
            .await
            .expect("old cert")
            .status(),
        200,
        "{}",
        gw.stderr()
    );
    assert!(
        trusting(&new).get(&url).send().await.is_err(),
        "the new CA is not trusted yet"
    );
    dir.write("secret.yaml", &secret_yaml(&new));
    eventually(PATIENCE, "the rotated certificate", || async {
        trusting(&new)
            .get(&url)
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    assert!(
        trusting(&old).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
}
