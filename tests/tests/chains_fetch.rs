//! Plugin modules fetched through the fetcher by the running gateway: `oci://` from Debian's real
//! `docker-registry` on loopback (anonymous, and basic auth through an `imagePullSecret`), and
//! `http://` from a plain server — never blocking the routes meanwhile.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_e2e::cli::Cli;
use wasmgate_e2e::registry::Registry;
use wasmgate_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

fn dist_path(name: &str) -> String {
    format!("{}/../plugins/dist/{name}.wasm", env!("CARGO_MANIFEST_DIR"))
}

fn route() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 80}]\n".to_owned()
}

fn appender(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: {url}\n  pluginConfig: {{x-{name}: fetched}}\n{extra}"
    )
}

/// A minimal HTTP/1.1 server answering every request with `body`; returns its address.
async fn serve_bytes(body: Vec<u8>) -> std::net::SocketAddr {
    let (_, released) = tokio::sync::watch::channel(true);
    serve_bytes_when(body, released, None).await
}

/// [`serve_bytes`], answering only once `released` is `true`; each request read is reported on
/// `asked` first.
async fn serve_bytes_when(
    body: Vec<u8>,
    released: tokio::sync::watch::Receiver<bool>,
    asked: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (body, mut released, asked) = (body.clone(), released.clone(), asked.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                if let Some(asked) = asked {
                    let _ = asked.send(());
                }
                let _ = released.wait_for(|r| *r).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    addr
}

fn push(reg: &Registry, repo_tag: &str, auth: Option<&str>) -> String {
    let url = reg.url(repo_tag);
    let mut args = vec!["push".to_owned(), dist_path("header-append"), url.clone()];
    let mut stdin = Vec::new();
    if let Some(pw) = auth {
        args.extend(["--username", "alice", "--password-stdin"].map(str::to_owned));
        stdin = pw.as_bytes().to_vec();
    }
    let out = Cli::new(args)
        .stdin(stdin)
        .env("WASMGATE_INSECURE_REGISTRIES", reg.host())
        .run();
    assert_eq!(out.code, 0, "{}", out.all());
    out.stdout.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_over_oci_with_and_without_credentials_and_over_http() {
    let open = Registry::start();
    let private = Registry::start_with_basic_auth("alice", "pw-4711");
    let digest = push(&open, "plugins/append:v1", None);
    push(&private, "private/append:v1", Some("pw-4711"));
    let http = serve_bytes(std::fs::read(dist_path("header-append")).expect("module")).await;

    let up = Upstream::start("a").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("services.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write("route.yaml", &route());
    let hex = digest.trim_start_matches("sha256:");
    dir.write(
        "oci.yaml",
        &appender(
            "oci",
            &open.url("plugins/append:v1"),
            &format!("  sha256: {hex}\n"),
        ),
    );
    dir.write(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\": {{\"{}\": {{\"username\": \"alice\", \"password\": \"pw-4711\"}}}}}}'\n",
            private.host()
        ),
    );
    dir.write(
        "private.yaml",
        &appender(
            "private",
            &private.url("private/append:v1"),
            "  imagePullSecret: regcred\n",
        ),
    );
    dir.write(
        "http.yaml",
        &appender("http", &format!("http://{http}/append.wasm"), ""),
    );
    let insecure = format!("{},{}", open.host(), private.host());
    let gw = Gateway::start_with_cache(&dir, &["--insecure-registries", &insecure]).await;
    eventually(WAIT, "all three fetched plugins run", || async {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .ok()?;
        let h = r.headers();
        (r.status() == 200
            && ["x-oci", "x-private", "x-http"]
                .iter()
                .all(|n| h.get(*n).is_some_and(|v| v == "fetched")))
        .then_some(())
    })
    .await;
    let dump = gw.config_dump().await;
    assert_eq!(
        dump["plugins"]["default.oci"]["digest"],
        digest.as_str(),
        "{dump}"
    );
    let (_, m) = gw.admin_get("/metrics").await;
    assert!(
        m.contains("istio_agent_wasm_remote_fetch_count{result=\"success\"}"),
        "{m}"
    );
    assert!(
        m.contains("istio_agent_wasm_config_conversion_count{result=\"success\"}"),
        "{m}"
    );
    // The secret's password never shows.
    assert!(!dump.to_string().contains("pw-4711"));
    assert!(!gw.stderr().contains("pw-4711"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_comes_back_heals_the_plugin_in_the_background() {
    // A port with no registry yet: fetches fail, FAIL_OPEN skips the plugin, routes serve.
    let reg_port = free_port();
    let up = Upstream::start("a").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("services.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write("route.yaml", &route());
    dir.write(
        "p.yaml",
        &appender(
            "late",
            &format!("oci://127.0.0.1:{reg_port}/plugins/late:v1"),
            "  failStrategy: FAIL_OPEN\n",
        ),
    );
    let gw = Gateway::start_with_cache(&dir, &["--insecure-registries", "*"]).await;
    let r = client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-late").is_none());
    eventually(WAIT, "fetch failure shown", || async {
        let d = gw.config_dump().await;
        d["plugins"]["default.late"]["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("skipped"))
            .then_some(())
    })
    .await;
    // The registry comes up on that port with the module.
    let reg = Registry::start_on_port(reg_port);
    push(&reg, "plugins/late:v1", None);
    eventually(WAIT, "plugin healed", || async {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .ok()?;
        r.headers()
            .get("x-late")
            .is_some_and(|v| v == "fetched")
            .then_some(())
    })
    .await;
}

/// At startup no port opens while a plugin is still loading (as Envoy warms a listener until its
/// filters' configs arrive): a request served then would skip the plugin, an auth bypass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_open_only_once_the_plugins_at_startup_are_loaded() {
    // A module server that holds its answer until released.
    let (release, released) = tokio::sync::watch::channel(false);
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel::<()>();
    let module = std::fs::read(dist_path("header-append")).expect("module");
    let http = serve_bytes_when(module, released, Some(asked_tx)).await;

    let up = Upstream::start("a").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("services.yaml", &service_yaml("a", 80, &[up.addr]));
    dir.write("route.yaml", &route());
    dir.write(
        "http.yaml",
        &appender("http", &format!("http://{http}/append.wasm"), ""),
    );
    let start = tokio::spawn(async move {
        let gw = Gateway::start_with(&dir, &[]).await;
        (gw, dir)
    });
    tokio::time::timeout(WAIT, asked.recv())
        .await
        .expect("the gateway fetches the module")
        .expect("asked");
    // The configuration is compiled and the fetch is held: the port must still be closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the port accepted a connection before the plugin was loaded"
    );
    release.send(true).expect("release");
    let (_gw, _dir) = start.await.expect("gateway started");
    // Ready: the very first request runs the plugin.
    let r = client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-http"], "fetched");
}
