//! Admin endpoints, `wasmgate validate`, graceful shutdown.

use std::process::Command;
use std::time::Duration;

use wasmgate_e2e::*;

async fn one_route_setup() -> (u16, ConfigDir, Upstream, Gateway) {
    let port = free_port();
    let dir = ConfigDir::new();
    let up = Upstream::start("a").await;
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("svc.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n",
    );
    let gw = Gateway::start(&dir).await;
    (port, dir, up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_readiness_metrics_and_config() {
    let (port, _dir, _up, gw) = one_route_setup().await;
    assert_eq!(gw.admin_get("/ready").await.0, 200);
    assert_eq!(gw.admin_get("/healthz").await, (200, "ok\n".into()));
    for _ in 0..3 {
        assert_eq!(
            client()
                .get(format!("http://127.0.0.1:{port}/m"))
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
    }
    assert_eq!(
        client()
            .get(format!("http://127.0.0.1:{port}/m"))
            .header("host", "x")
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    let (status, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"wasmgate_requests_total{code="200",route="default/r"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasmgate_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wasmgate_config_reloads_total{result="success"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("wasmgate_active_connections"), "{metrics}");

    let dump = gw.config_dump().await;
    let routes = dump["routes"].as_array().expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r["route"] == "default/r" && r["port"] == port),
        "{dump}"
    );
    assert!(
        dump["resources"]["inForce"]["routes"]
            .to_string()
            .contains("route.yaml"),
        "source file shown"
    );
    assert!(
        dump["listeners"].to_string().contains("serving"),
        "{}",
        dump["listeners"]
    );

    // The access log is one JSON line per request on stdout.
    let line = eventually(PATIENCE, "an access log line", || async {
        gw.stdout()
            .lines()
            .find(|l| l.contains("\"path\":\"/m\""))
            .map(str::to_owned)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("json access line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "default/r");
    assert_eq!(v["method"], "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let (port, _dir, _up, mut gw) = one_route_setup().await;
    let slow = tokio::spawn(async move {
        client()
            .get(format!("http://127.0.0.1:{port}/slow"))
            .header("x-delay-ms", "800")
            .send()
            .await
    });
    // Let the request reach the upstream before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    let r = slow
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(r.status(), 200);
    let exited = tokio::task::spawn_blocking(move || {
        let ok = gw.wait_exit(Duration::from_secs(15));
        (ok, gw.stderr())
    })
    .await
    .expect("join");
    assert_eq!(
        exited.0,
        Some(true),
        "exits 0 within the grace period:\n{}",
        exited.1
    );
    assert!(exited.1.contains("shutting down"), "{}", exited.1);
}

#[test]
fn validate_reports_every_problem_with_file_and_field() {
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", 8080));
    dir.write(
        "bad.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: no-slash}}]\n    backendRefs: [{name: a, port: 80}]\n",
    );
    dir.write(
        "listener.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw2}\nspec:\n  listeners:\n  - name: web\n    port: 80\n    protocol: UDP\n",
    );
    let out = Command::new(wasmgate_bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("run validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("bad.yaml") && text.contains("spec.rules[0].matches[0].path.value"),
        "{text}"
    );
    assert!(
        text.contains("listener.yaml") && text.contains("spec.listeners[0].protocol"),
        "{text}"
    );

    dir.remove("bad.yaml");
    dir.remove("listener.yaml");
    let out = Command::new(wasmgate_bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("run validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("valid") && text.contains("1 Gateway"),
        "{text}"
    );
}
