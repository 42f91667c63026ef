//! `wasmgate demo` protects /productpage with the basic-auth plugin, as Istio's Bookinfo example.

use wasmgate_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_basic_auth_401_then_200_with_credentials() {
    let port = free_port();
    let gw = Gateway::launch(&[
        "demo".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--listen-address".to_owned(),
        "127.0.0.1".to_owned(),
    ])
    .await;
    let url = format!("http://127.0.0.1:{port}/productpage");
    let c = client();
    // Ready means the plugin is loaded: the very first request is checked.
    let r = c.get(&url).send().await.expect("productpage");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=istio");
    for auth in ["Basic YWRtaW4zOmFkbWluMw==", "Basic b2s6dGVzdA=="] {
        let r = c
            .get(&url)
            .header("authorization", auth)
            .send()
            .await
            .expect("productpage");
        assert_eq!(r.status(), 200, "{auth}");
        assert!(
            r.text()
                .await
                .expect("body")
                .contains("<title>Simple Bookstore App</title>")
        );
    }
    let r = c
        .get(&url)
        .header("authorization", "Basic d3Jvbmc6cGFzcw==")
        .send()
        .await
        .expect("productpage");
    assert_eq!(r.status(), 401);
    // Other paths are not protected.
    let r = c
        .get(format!("http://127.0.0.1:{port}/api/v1/products"))
        .send()
        .await
        .expect("products");
    assert_eq!(r.status(), 200);
    let out = eventually(PATIENCE, "demo instructions", || async {
        let o = gw.stdout();
        o.contains("YWRtaW4zOmFkbWluMw==").then_some(o)
    })
    .await;
    assert!(out.contains("401"), "{out}");
}
