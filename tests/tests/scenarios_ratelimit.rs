//! Scenario 2, Tetrate's Wasm rate-limiting tutorial, end to end: the YAML of
//! `docker/ratelimit/config-offline/` as the compose demo mounts it, our `rate-limit.wasm` pushed
//! with `wasmgate push` to a real `docker-registry`, an in-test `httpbin`, one worker thread as the
//! compose file runs it (the tutorial's bucket lives in each VM, one VM per worker).

use std::time::{Duration, Instant};

use wasmgate_e2e::registry::Registry;
use wasmgate_e2e::*;

const WAIT: Duration = Duration::from_secs(60);
/// Triples tried before giving up: a triple that straddles a refill proves nothing and is retried.
const ATTEMPTS: usize = 5;

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What one response showed.
#[derive(Debug)]
struct Seen {
    status: u16,
    who_am_i: Option<String>,
    injected_by: Option<String>,
    powered_by: Option<String>,
    body: String,
}

async fn get(c: &reqwest::Client, url: &str) -> Seen {
    let r = c.get(url).send().await.expect("request");
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, who_am_i, injected_by, powered_by) = (
        r.status().as_u16(),
        h("who-am-i"),
        h("injected-by"),
        h("powered-by"),
    );
    Seen {
        status,
        who_am_i,
        injected_by,
        powered_by,
        body: r.text().await.unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_requests_250ms_apart_answer_200_200_403() {
    let reg = Registry::start();
    reg.push_plugin("rate-limit", "rate-limit:v1");

    let httpbin = Upstream::start("httpbin").await;
    let port = free_port();
    let dir = ConfigDir::new();
    const LISTENER: &str = "    port: 8080\n    protocol: HTTP\n";
    let gateway = repo_file("docker/ratelimit/config-offline/httpbin-gateway.yaml");
    assert!(gateway.contains(LISTENER), "{gateway}");
    dir.write(
        "httpbin-gateway.yaml",
        &gateway.replace(LISTENER, &format!("    port: {port}\n    protocol: HTTP\n")),
    );
    let plugin = repo_file("docker/ratelimit/config-offline/rate-limit.yaml");
    assert!(plugin.contains("registry:5000"), "{plugin}");
    dir.write(
        "rate-limit.yaml",
        &plugin.replace("registry:5000", &reg.host()),
    );
    // Where compose resolves `httpbin` by DNS; labelled as the tutorial's httpbin workload.
    dir.write(
        "services.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  labels: {{app: httpbin}}\n  annotations:\n    wasmgate.io/endpoints: \"{}\"\nspec:\n  ports:\n  - port: 8080\n",
            httpbin.addr
        ),
    );
    let host = reg.host();
    // One worker, as the compose file runs it: the tutorial's bucket lives in each VM.
    let gw = Gateway::start_with_cache(
        &dir,
        &["--threads", "1", "--insecure-registries", host.as_str()],
    )
    .await;
    // Wait on the admin API, not on requests: those would spend tokens.
    eventually(WAIT, "rate-limit fetched and running", || async {
        let dump = gw.config_dump().await;
        (dump["plugins"]["default.rate-limit"]["state"] == "running").then_some(())
    })
    .await;

    let c = client();
    let url = format!("http://127.0.0.1:{port}/get");
    // Running in the admin API; in the served chain once a response carries its header (this
    // spends tokens: each triple below starts after a refill).
    eventually(WAIT, "rate-limit in the served chain", || async {
        get(&c, &url).await.who_am_i.map(|_| ())
    })
    .await;
    for attempt in 1..=ATTEMPTS {
        // A full bucket: more than a second since the last refill.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let start = Instant::now();
        let mut seen = Vec::new();
        for i in 0..3 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen.push(get(&c, &url).await);
        }
        // The gateway saw the three requests within this span: under a second, the bucket
        // cannot have refilled between the first and the third.
        let span = start.elapsed();
        let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
        if span >= Duration::from_millis(1000) {
            eprintln!("attempt {attempt}: the triple took {span:?} ({statuses:?}); again");
            continue;
        }
        assert_eq!(statuses, [200, 200, 403], "{seen:#?}");
        for s in &seen {
            assert_eq!(s.who_am_i.as_deref(), Some("wasm-extension"), "{s:?}");
            assert_eq!(s.injected_by.as_deref(), Some("istio-api!"), "{s:?}");
        }
        assert_eq!(seen[0].powered_by, None);
        assert_eq!(seen[2].powered_by.as_deref(), Some("proxy-wasm-go-sdk!!"));
        assert_eq!(seen[2].body, "rate limited, wait and retry.");
        assert!(
            seen[0].body.contains("\"upstream\":\"httpbin\""),
            "{seen:?}"
        );
        // A second later the bucket is full again.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let again = get(&c, &url).await;
        assert_eq!(again.status, 200, "{again:?}");
        return;
    }
    panic!("no triple of requests fit in one second in {ATTEMPTS} attempts");
}
