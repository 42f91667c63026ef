//! Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1 for end-to-end tests, with
//! optional htpasswd basic auth. Storage in a temp dir; the process is killed on drop.
//! (The recipe of `../shared/reference/test-infra.md`, as in `fetcher/tests/support`.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{PATIENCE, free_port};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Every manifest media type a Wasm module may be pushed as: the registry answers 404 (OCI) or
/// 400 (Docker v2) to a manifest GET without a matching `Accept`.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json";

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    basic_auth: Option<(String, String)>,
    child: Option<Child>,
}

impl Registry {
    /// Starts an anonymous registry and waits until it listens.
    pub fn start() -> Self {
        Self::start_with(None, None, None)
    }

    /// Starts a registry that requires `user`/`password` (bcrypt htpasswd, from `apache2-utils`).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user.to_owned(), password.to_owned())), None, None)
    }

    /// Starts a registry speaking only HTTPS with this certificate chain and key (PEM). rustls
    /// refuses a self-signed CA:TRUE certificate as a server's: sign a leaf with a test CA.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(None, Some((cert_pem, key_pem)), None)
    }

    /// Starts an anonymous registry on a given port (e.g. one a gateway already fails to reach).
    pub fn start_on_port(port: u16) -> Self {
        Self::start_with(None, None, Some(port))
    }

    fn start_with(
        basic_auth: Option<(String, String)>,
        tls: Option<(&str, &str)>,
        port: Option<u16>,
    ) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run `apt-get install -y docker-registry apache2-utils`"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = port.unwrap_or_else(free_port);
        let mut yaml = format!(
            "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: 127.0.0.1:{port}, secret: wasmgate-e2e}}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&c, cert).expect("write cert");
            std::fs::write(&k, key).expect("write key");
            // Appended to the `http:` mapping above.
            yaml = yaml.replace(
                "secret: wasmgate-e2e}",
                &format!(
                    "secret: wasmgate-e2e, tls: {{certificate: {}, key: {}}}}}",
                    c.display(),
                    k.display()
                ),
            );
        }
        if let Some((user, password)) = &basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd missing: `apt-get install -y apache2-utils`");
            assert!(out.status.success(), "htpasswd failed");
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout).expect("write htpasswd");
            yaml.push_str(&format!(
                "auth: {{htpasswd: {{realm: wasmgate-e2e, path: {}}}}}\n",
                path.display()
            ));
        }
        let config = dir.path().join("registry.yml");
        std::fs::write(&config, yaml).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start docker-registry");
        let reg = Self {
            port,
            dir,
            basic_auth,
            child: Some(child),
        };
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}: {}",
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// `127.0.0.1:<port>`, as `--insecure-registries` and docker config keys name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:<port>/<repo_tag>`.
    pub fn url(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// Pushes our built `plugins/dist/<plugin>.wasm` to `repo_tag` with `wasmgate push` (as the
    /// compose demos do) and returns its URL and the manifest digest the command printed.
    pub fn push_plugin(&self, plugin: &str, repo_tag: &str) -> (String, String) {
        let module = format!(
            "{}/../plugins/dist/{plugin}.wasm",
            env!("CARGO_MANIFEST_DIR")
        );
        let url = self.url(repo_tag);
        let out = crate::cli::Cli::new(["push", module.as_str(), url.as_str()])
            .env("WASMGATE_INSECURE_REGISTRIES", self.host())
            .run();
        assert_eq!(out.code, 0, "{}", out.all());
        let digest = out.stdout.trim().to_owned();
        assert!(digest.starts_with("sha256:"), "{}", out.all());
        (url, digest)
    }

    /// The registry's own `Docker-Content-Digest` of `repo:reference` (HEAD of the manifest;
    /// plain-HTTP registries only).
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> String {
        let mut req = crate::client()
            .head(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.host()
            ))
            .header("accept", MANIFEST_ACCEPT);
        if let Some((user, password)) = &self.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await.expect("manifest HEAD");
        assert_eq!(resp.status(), 200, "manifest {repo}:{reference}");
        resp.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .expect("Docker-Content-Digest header")
            .to_owned()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
