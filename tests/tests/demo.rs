//! `wasmgate demo` works with nothing else running and no files.

use wasmgate_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_bookinfo_productpage() {
    let port = free_port();
    let gw = Gateway::launch(&[
        "demo".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--listen-address".to_owned(),
        "127.0.0.1".to_owned(),
    ])
    .await;
    let c = client();
    // /productpage is behind the demo's basic-auth plugin (Istio's example credentials).
    let r = c
        .get(format!("http://127.0.0.1:{port}/productpage"))
        .header("authorization", "Basic YWRtaW4zOmFkbWluMw==")
        .send()
        .await
        .expect("productpage");
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("<title>Simple Bookstore App</title>")
    );
    let r = c
        .get(format!("http://127.0.0.1:{port}/api/v1/products"))
        .send()
        .await
        .expect("products");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v[0]["title"], "The Comedy of Errors");
    assert_eq!(
        c.get(format!("http://127.0.0.1:{port}/static/x.css"))
            .send()
            .await
            .expect("static")
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("http://127.0.0.1:{port}/nothing-here"))
            .send()
            .await
            .expect("404")
            .status(),
        404
    );
    // The instructions name the commands to try.
    let out = eventually(PATIENCE, "demo instructions", || async {
        let o = gw.stdout();
        o.contains("curl").then_some(o)
    })
    .await;
    assert!(
        out.contains(&format!("http://127.0.0.1:{port}/productpage")),
        "{out}"
    );
}
