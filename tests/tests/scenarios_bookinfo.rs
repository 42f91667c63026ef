//! Scenario 1, Istio's "Distributing WebAssembly Modules" (Bookinfo basic auth), end to end: the
//! YAML of `docker/bookinfo/config-offline/` as the compose demo mounts it, `basic-auth.wasm`
//! pushed with `wasmgate push` to a real `docker-registry`, in-test `productpage` and `reviews`.
//! Only the registry address, the listener port and the Services (where compose has DNS) differ.

use std::time::Duration;

use wasmgate_e2e::registry::Registry;
use wasmgate_e2e::*;

const WAIT: Duration = Duration::from_secs(60);
/// `admin3:admin3` and `ok:test`, the credentials of Istio's example.
const ADMIN3: &str = "Basic YWRtaW4zOmFkbWluMw==";
const OK_TEST: &str = "Basic b2s6dGVzdA==";
/// The waypoint plugin's own credentials (`1t-in3:admin3`).
const REVIEWS: &str = "Basic MXQtaW4zOmFkbWluMw==";

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The compose demo's file with the compose registry replaced by ours.
fn offline(name: &str, reg: &Registry) -> String {
    let yaml = repo_file(&format!("docker/bookinfo/config-offline/{name}"));
    assert!(
        yaml.contains("registry:5000"),
        "{name} pulls from the compose registry"
    );
    yaml.replace("registry:5000", &reg.host())
}

/// Moves the Gateway's 8080 listener to `port`.
fn listener_on(yaml: &str, port: u16) -> String {
    const LISTENER: &str = "    port: 8080\n    protocol: HTTP\n";
    assert!(yaml.contains(LISTENER), "{yaml}");
    yaml.replace(LISTENER, &format!("    port: {port}\n    protocol: HTTP\n"))
}

/// Bookinfo's Service, labelled as in Istio's sample, with an in-test endpoint.
fn service(name: &str, up: &Upstream) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\n  annotations:\n    wasmgate.io/endpoints: \"{}\"\nspec:\n  ports:\n  - port: 9080\n",
        up.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_basic_auth_and_the_reviews_waypoint_plugin() {
    let reg = Registry::start();
    let (_, digest) = reg.push_plugin("basic-auth", "basic-auth:v1");

    let productpage = Upstream::start("productpage").await;
    let reviews = Upstream::start("reviews").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "bookinfo-gateway.yaml",
        &listener_on(
            &repo_file("docker/bookinfo/config-offline/bookinfo-gateway.yaml"),
            port,
        ),
    );
    dir.write("basic-auth.yaml", &offline("basic-auth.yaml", &reg));
    dir.write(
        "reviews-waypoint.yaml",
        &offline("reviews-waypoint.yaml", &reg),
    );
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service("productpage", &productpage),
            service("reviews", &reviews)
        ),
    );
    let host = reg.host();
    let gw = Gateway::start_with_cache(&dir, &["--insecure-registries", host.as_str()]).await;
    let c = client();
    let get = |path: &str, auth: Option<&str>| {
        let mut req = c.get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    // Both plugins come from the registry: wait until both guard their paths.
    eventually(
        WAIT,
        "both basic-auth plugins fetched and running",
        || async {
            let dump = gw.config_dump().await;
            ["istio-system.basic-auth", "default.basic-auth-at-service"]
                .iter()
                .all(|n| dump["plugins"][n]["state"] == "running")
                .then_some(())
        },
    )
    .await;
    let dump = gw.config_dump().await;
    assert_eq!(
        dump["plugins"]["istio-system.basic-auth"]["digest"],
        digest.as_str(),
        "{dump}"
    );
    assert_eq!(dump["plugins"]["istio-system.basic-auth"]["phase"], "AUTHN");

    // Running in the admin API; in the served chains once the guarded paths answer 401.
    for path in ["/productpage", "/reviews/0"] {
        eventually(WAIT, "basic-auth in the served chain", || async {
            let r = get(path, None).await.ok()?;
            (r.status() == 401).then_some(())
        })
        .await;
    }
    let (productpage_hits, reviews_hits) = (productpage.hits(), reviews.hits());

    // /productpage without credentials: the plugin's 401, productpage never asked.
    let r = get("/productpage", None).await.expect("productpage");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=istio");
    assert_eq!(
        r.text().await.expect("body"),
        "",
        "Istio's module answers an empty body"
    );
    assert_eq!(productpage.hits(), productpage_hits);
    // Either credential of the example opens it.
    for auth in [ADMIN3, OK_TEST] {
        let r = get("/productpage", Some(auth)).await.expect("productpage");
        assert_eq!(r.status(), 200, "{auth}");
        assert_eq!(r.headers()["x-upstream"], "productpage");
    }
    assert_eq!(productpage.hits(), productpage_hits + 2);
    // Wrong credentials, and the waypoint plugin's credentials, do not.
    for auth in ["Basic d3Jvbmc6cGFzcw==", REVIEWS] {
        let r = get("/productpage", Some(auth)).await.expect("productpage");
        assert_eq!(r.status(), 401, "{auth}");
    }
    // The other Bookinfo paths are not guarded.
    for path in [
        "/api/v1/products",
        "/api/v1/products/0",
        "/static/style.css",
    ] {
        let r = get(path, None).await.expect("unguarded path");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-upstream"], "productpage", "{path}");
    }

    // Waypoint variant: the plugin targeting Service reviews guards /reviews/... with its own
    // credentials only.
    let r = get("/reviews/0", None).await.expect("reviews");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=istio");
    let r = get("/reviews/0", Some(ADMIN3)).await.expect("reviews");
    assert_eq!(
        r.status(),
        401,
        "the gateway-wide credentials do not open reviews"
    );
    assert_eq!(reviews.hits(), reviews_hits);
    let r = get("/reviews/0", Some(REVIEWS)).await.expect("reviews");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "reviews");
    let body: serde_json::Value = r.json().await.expect("echo JSON");
    assert_eq!(body["path"], "/reviews/0");
    assert_eq!(reviews.hits(), reviews_hits + 1);
}
