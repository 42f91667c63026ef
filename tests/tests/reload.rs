//! Live reload: swaps under load, invalid edits, deleted files, listeners added and removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmgate_e2e::*;

fn route_to(name: &str, prefix: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

struct Setup {
    port: u16,
    dir: ConfigDir,
    gw: Gateway,
    _ups: (Upstream, Upstream),
}

async fn setup() -> Setup {
    let port = free_port();
    let dir = ConfigDir::new();
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("a", 80, &[a.addr]),
            service_yaml("b", 80, &[b.addr])
        ),
    );
    dir.write("route.yaml", &route_to("r", "/", "a"));
    let gw = Gateway::start(&dir).await;
    Setup {
        port,
        dir,
        gw,
        _ups: (a, b),
    }
}

async fn get(port: u16, path: &str) -> Result<(u16, String), reqwest::Error> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await?;
    let status = r.status().as_u16();
    let up = r
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((status, up))
}

async fn wait_generation_above(gw: &Gateway, g: u64) -> u64 {
    eventually(PATIENCE, "config generation to advance", || async {
        let now = gw.generation().await;
        (now > g).then_some(now)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_swaps_under_load_fail_no_request() {
    let s = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen_b = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (stop, ok, failed, seen_b, port) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen_b.clone(),
            s.port,
        );
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.get(format!("http://127.0.0.1:{port}/x")).send().await {
                    Ok(r) if r.status() == 200 => {
                        if r.headers().get("x-upstream").is_some_and(|v| v == "b") {
                            seen_b.store(true, Ordering::Relaxed);
                        }
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        errors.push(format!("status {}", r.status()));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            errors
        }));
    }
    let mut generation = s.gw.generation().await;
    for i in 0..8 {
        let backend = if i % 2 == 0 { "b" } else { "a" };
        s.dir.write("route.yaml", &route_to("r", "/", backend));
        generation = wait_generation_above(&s.gw, generation).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.expect("worker"));
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        seen_b.load(Ordering::Relaxed),
        "the swapped-in route never served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_edit_keeps_the_old_route_and_shows_in_config_dump() {
    let s = setup().await;
    assert_eq!(get(s.port, "/x").await.expect("get"), (200, "a".into()));
    let before = s.gw.generation().await;
    // Invalid: a path value must start with "/"; the edit would also move traffic to b.
    s.dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: no-slash}}]\n    backendRefs: [{name: b, port: 80}]\n",
    );
    let dump = eventually(PATIENCE, "the rejected version in /config_dump", || async {
        let d = s.gw.config_dump().await;
        let rejected = d["resources"]["inForce"]["rejected"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!rejected.is_empty()).then_some(d)
    })
    .await;
    let text = dump["resources"]["inForce"]["rejected"].to_string();
    assert!(text.contains("route.yaml"), "{text}");
    assert!(
        text.contains("spec.rules[0].matches[0].path.value"),
        "{text}"
    );
    assert_eq!(
        get(s.port, "/x").await.expect("get"),
        (200, "a".into()),
        "last good route still serves"
    );
    let (_, metrics) = s.gw.admin_get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("wasmgate_config_reloads_total{result=\"rejected\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        s.gw.stderr().contains("config rejected"),
        "{}",
        s.gw.stderr()
    );
    // Fixing the file applies it.
    s.dir.write("route.yaml", &route_to("r", "/", "b"));
    wait_generation_above(&s.gw, before).await;
    eventually(PATIENCE, "the fixed route", || async {
        (get(s.port, "/x").await.ok()? == (200, "b".into())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_file_removes_its_routes() {
    let s = setup().await;
    s.dir.write("two.yaml", &route_to("two", "/two", "b"));
    eventually(PATIENCE, "route from two.yaml", || async {
        (get(s.port, "/two").await.ok()? == (200, "b".into())).then_some(())
    })
    .await;
    s.dir.remove("two.yaml");
    eventually(PATIENCE, "/two to fall back to the / route", || async {
        (get(s.port, "/two").await.ok()? == (200, "a".into())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_the_gateway_resource() {
    let s = setup().await;
    let extra = free_port();
    s.dir.write(
        "gateway.yaml",
        &format!(
            "{}  - name: extra\n    port: {extra}\n    protocol: HTTP\n",
            gateway_yaml("gw", s.port)
        ),
    );
    eventually(PATIENCE, "the added listener to serve", || async {
        (get(extra, "/x").await.ok()? == (200, "a".into())).then_some(())
    })
    .await;
    let dump = s.gw.config_dump().await;
    assert!(
        dump["listeners"].to_string().contains(&extra.to_string()),
        "{}",
        dump["listeners"]
    );
    s.dir.write("gateway.yaml", &gateway_yaml("gw", s.port));
    eventually(
        PATIENCE,
        "the removed listener to stop accepting",
        || async { get(extra, "/x").await.is_err().then_some(()) },
    )
    .await;
    assert_eq!(
        get(s.port, "/x").await.expect("get").0,
        200,
        "the kept listener still serves"
    );
}
