//! Harness for wasmgate's end-to-end tests: the real `wasmgate` binary on loopback, a temp config
//! directory, in-test upstreams, and clients. Every wait is bounded and polls instead of sleeping.

#![forbid(unsafe_code)]

pub mod cli;
pub mod raw;
pub mod registry;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use upstream::Upstream;

/// Generous bound for anything that should be quick (a loaded 2-core CI machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `wasmgate` binary: `$WASMGATE_BIN`, else `<target>/debug/wasmgate` next to the test's `deps/`.
pub fn wasmgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/debug/deps/<test>-<hash>  ->  <target>/debug/wasmgate
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps");
    let bin = profile_dir.join("wasmgate");
    assert!(
        bin.exists(),
        "{} not found: build it first: cargo build -p wasmgate",
        bin.display()
    );
    bin
}

/// A free loopback port (bound then released; the gateway binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A temporary config directory.
pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file atomically (write to a hidden temp name, then rename), as editors and
    /// `kubectl`-style tools do, so the watcher never reads half a file.
    pub fn write(&self, name: &str, contents: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).expect("write config");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename config");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove config");
    }
}

impl Default for ConfigDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `wasmgate run`. Stopped with SIGINT on drop (then killed if it lingers).
pub struct Gateway {
    child: Option<Child>,
    pub admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// The module cache of [`Gateway::start_with_cache`], removed after the gateway stopped.
    _cache: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts `wasmgate run` on `dir` and waits until `/ready` answers 200.
    pub async fn start(dir: &ConfigDir) -> Self {
        Self::start_with(dir, &[]).await
    }

    pub async fn start_with(dir: &ConfigDir, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config-dir".into(),
            dir.path().display().to_string(),
        ];
        args.extend(["--listen-address", "127.0.0.1"].map(String::from));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::launch(&args).await
    }

    /// [`Gateway::start_with`] and a module cache of its own (`--cache-dir`), so plugin tests
    /// neither share modules nor touch the user's cache.
    pub async fn start_with_cache(dir: &ConfigDir, extra: &[&str]) -> Self {
        let cache = tempfile::tempdir().expect("cache dir");
        let mut args = vec!["--cache-dir", cache.path().to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        let mut gw = Self::start_with(dir, &args).await;
        gw._cache = Some(cache);
        gw
    }

    /// Starts `wasmgate <args>` with a free admin port, a short grace period, JSON access logs and two
    /// workers (unless `args` has `--threads`),
    /// and waits until `/ready` answers 200.
    pub async fn launch(args: &[String]) -> Self {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = Command::new(wasmgate_bin());
        cmd.args(args)
            .args(["--admin-addr", &admin.to_string(), "--grace-period", "2"])
            .args(["--access-log", "json"])
            // Two workers unless the test sets its own count (clap refuses a repeated flag).
            .args(if args.iter().any(|a| a == "--threads") {
                &[][..]
            } else {
                &["--threads", "2"][..]
            })
            .env(
                "RUST_LOG",
                std::env::var("WASMGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wasmgate");
        let stderr = capture(child.stderr.take().expect("stderr"));
        let stdout = capture(child.stdout.take().expect("stdout"));
        let mut gw = Self {
            child: Some(child),
            admin,
            stderr,
            stdout,
            _cache: None,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&mut self) {
        let client = client();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "wasmgate exited early ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            if let Ok(r) = client
                .get(format!("http://{}/ready", self.admin))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "wasmgate not ready after {PATIENCE:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the gateway wrote to stderr so far (logs).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Everything written to stdout so far (access log lines).
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// GET an admin path; returns (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .expect("admin request");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    pub async fn config_dump(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/config_dump").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    /// The current config generation (increases with every applied reload).
    pub async fn generation(&self) -> u64 {
        self.config_dump().await["generation"].as_u64().unwrap_or(0)
    }

    /// Sends a signal (`INT`, `TERM`) with the `kill` utility.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit; returns its success, or `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.success());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("INT");
        if self.wait_exit(Duration::from_secs(10)).is_none()
            && let Some(mut c) = self.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- wasmgate stderr ---\n{}", self.stderr());
        }
    }
}

fn capture(mut r: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = b.lock() {
                s.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
    });
    buf
}

/// An HTTP/1.1 client without proxies, with bounded timeouts.
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PATIENCE)
        .build()
        .expect("client")
}

/// An HTTP/2 client speaking h2c (prior knowledge) on plaintext.
pub fn h2c_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PATIENCE)
        .build()
        .expect("client")
}

/// rustls needs a process-wide crypto provider; ring, as the gateway uses.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Gateway with one HTTP listener named `http` on `port`.
pub fn gateway_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n"
    )
}

/// A Service whose endpoints are the given addresses.
pub fn service_yaml(name: &str, port: u16, endpoints: &[SocketAddr]) -> String {
    let eps: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations:\n    wasmgate.io/endpoints: \"{}\"\nspec:\n  ports:\n  - port: {port}\n",
        eps.join(",")
    )
}
