//! `wasmgate push` and `wasmgate pull` against Debian's real `docker-registry` on 127.0.0.1:
//! both formats, the digest the registry computes, `--sha256` match and mismatch, basic auth
//! with `--password-stdin`, a docker config file, and a wrong password.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmgate_e2e::cli::{Cli, wasmgate};
use wasmgate_e2e::registry::Registry;

fn dist(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(name)
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

/// The value after `key` on its line of `pull`'s report.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
}

#[tokio::test]
async fn push_then_pull_both_formats_with_the_registrys_digest() {
    let reg = Registry::start();
    let module = dist("header-append.wasm");
    let module_sha = sha256_of(&module);
    let work = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for (format, repo, tag) in [
        ("artifact", "plugins/header-append", "artifact"),
        ("image", "plugins/header-append", "image"),
    ] {
        let url = reg.url(&format!("{repo}:{tag}"));
        let out = Cli::new(["push", module.to_str().unwrap(), &url, "--format", format])
            .env("WASMGATE_INSECURE_REGISTRIES", reg.host())
            .run();
        assert_eq!(out.code, 0, "{format}: {}", out.all());
        let printed = out.stdout.trim();
        assert_eq!(
            printed,
            reg.manifest_digest(repo, tag).await,
            "{format}: stdout is exactly the registry's Docker-Content-Digest"
        );
        let hex = printed.strip_prefix("sha256:").expect("sha256: digest");
        assert!(
            out.stderr.contains(&format!("sha256: {hex}")),
            "{}",
            out.stderr
        );
        digests.push(printed.to_owned());

        // Pulled through the gateway's fetcher: same bytes, both digests.
        let file = work.path().join(format!("{format}.wasm"));
        let out = wasmgate([
            "pull",
            &url,
            "-o",
            file.to_str().unwrap(),
            "--insecure-registries",
            &reg.host(),
        ]);
        assert_eq!(out.code, 0, "{format}: {}", out.all());
        assert_eq!(field(&out.stdout, "module sha256:"), module_sha);
        assert_eq!(field(&out.stdout, "manifest digest:"), printed);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(&module).unwrap()
        );

        // --sha256 as a WasmPlugin pins it: the manifest digest (with or without the prefix) or,
        // beyond Istio, the module's own digest.
        for pin in [hex, printed, module_sha.as_str()] {
            let out = wasmgate([
                "pull",
                &url,
                "--sha256",
                pin,
                "--insecure-registries",
                &reg.host(),
            ]);
            assert_eq!(out.code, 0, "{format} --sha256 {pin}: {}", out.all());
        }

        // A mismatch fails, names both digests, and writes nothing.
        let wrong = "0".repeat(64);
        let refused = work.path().join("refused.wasm");
        let out = wasmgate([
            "pull",
            &url,
            "--sha256",
            &wrong,
            "-o",
            refused.to_str().unwrap(),
            "--insecure-registries",
            &reg.host(),
        ]);
        assert_eq!(out.code, 1, "{format}: {}", out.all());
        assert!(out.stderr.contains(&wrong), "{}", out.stderr);
        assert!(out.stderr.contains(hex), "{}", out.stderr);
        assert!(out.stderr.contains("does not match"), "{}", out.stderr);
        assert!(!refused.exists());
    }
    assert_ne!(
        digests[0], digests[1],
        "artifact and image are different manifests"
    );

    // The image format is deterministic: pushing again gives the same digest.
    let out = Cli::new([
        "push",
        module.to_str().unwrap(),
        &reg.url("plugins/header-append:image-again"),
        "--format",
        "image",
    ])
    .env("WASMGATE_INSECURE_REGISTRIES", reg.host())
    .run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.trim(), digests[1]);

    // Not a module: refused before anything is sent.
    let out = wasmgate([
        "push",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        &reg.url("x/y:z"),
        "--insecure-registries",
        &reg.host(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("Wasm magic"), "{}", out.stderr);
}

#[tokio::test]
async fn basic_auth_with_password_stdin_docker_config_and_a_wrong_password() {
    const PASSWORD: &str = "Sup3r-s3cret-pw";
    const WRONG: &str = "n0t-the-pw-4711";
    let reg = Registry::start_with_basic_auth("alice", PASSWORD);
    let module = dist("rate-limit.wasm");
    let url = reg.url("private/rate-limit:v1");
    let insecure = ["--insecure-registries".to_owned(), reg.host()];

    // Anonymous: refused.
    let out = wasmgate(
        ["push", module.to_str().unwrap(), url.as_str()]
            .into_iter()
            .map(str::to_owned)
            .chain(insecure.clone()),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("pushing to"), "{}", out.stderr);

    // --username with --password-stdin (a trailing newline, as `echo` writes it).
    let push_args = [
        "push",
        module.to_str().unwrap(),
        url.as_str(),
        "--username",
        "alice",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["--password-stdin".to_owned()])
    .chain(insecure.clone());
    let out = Cli::new(push_args).stdin(format!("{PASSWORD}\n")).run();
    assert_eq!(out.code, 0, "{}", out.all());
    let digest = out.stdout.trim().to_owned();
    assert_eq!(
        digest,
        reg.manifest_digest("private/rate-limit", "v1").await
    );
    assert!(!out.all().contains(PASSWORD));

    // A wrong password: a clear refusal, quickly (4xx is not retried), the password nowhere.
    let started = std::time::Instant::now();
    let pull_args = |extra: &[&str]| {
        ["pull", url.as_str()]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .chain(insecure.clone())
            .collect::<Vec<_>>()
    };
    let out = Cli::new(pull_args(&["--username", "alice", "--password-stdin"]))
        .stdin(WRONG)
        .run();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("registry refused access to"),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains(WRONG), "{}", out.all());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // The right one.
    let out = Cli::new(pull_args(&["--username", "alice", "--password-stdin"]))
        .stdin(PASSWORD)
        .run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(field(&out.stdout, "manifest digest:"), digest);
    assert_eq!(field(&out.stdout, "module sha256:"), sha256_of(&module));
    assert!(!out.all().contains(PASSWORD));

    // Without flags, the docker config file's entry, as `docker login` writes it.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        serde_json::json!({"auths": {reg.host(): {"username": "alice", "password": PASSWORD}}})
            .to_string(),
    )
    .unwrap();
    let out = Cli::new(pull_args(&[]))
        .env("DOCKER_CONFIG", docker.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(field(&out.stdout, "manifest digest:"), digest);

    // --password-stdin without --username is a usage error; so is an empty password.
    let out = wasmgate(pull_args(&["--password-stdin"]));
    assert_eq!(out.code, 2, "{}", out.all());
    let out = Cli::new(pull_args(&["--username", "alice", "--password-stdin"]))
        .stdin("\n")
        .run();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no password"), "{}", out.stderr);
}

#[test]
fn pull_reads_file_urls_through_the_same_checks() {
    let module = dist("basic-auth.wasm");
    let url = format!("file://{}", module.canonicalize().unwrap().display());
    let out = wasmgate(["pull", &url]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(field(&out.stdout, "module sha256:"), sha256_of(&module));
    assert!(!out.stdout.contains("manifest digest:"), "{}", out.stdout);
    let out = wasmgate(["pull", &url, "--sha256", &"f".repeat(64)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("does not match"), "{}", out.stderr);
}

#[test]
fn tls_registry_trusted_through_ca_bundle() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wasmgate e2e registry CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .unwrap();
    let reg = Registry::start_with_tls(&leaf.pem(), &leaf_key.serialize_pem());
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let ca_path = ca_file.to_str().unwrap();
    let module = dist("basic-auth.wasm");
    let url = reg.url("tls/basic-auth:v1");

    // Not listed insecure and not trusted: refused.
    let out = wasmgate(["push", module.to_str().unwrap(), &url]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );

    let out = wasmgate([
        "push",
        module.to_str().unwrap(),
        &url,
        "--ca-bundle",
        ca_path,
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let digest = out.stdout.trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let out = Cli::new(["pull", url.as_str()])
        .env("WASMGATE_CA_BUNDLE", &ca_file)
        .run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(field(&out.stdout, "manifest digest:"), digest);
    assert_eq!(field(&out.stdout, "module sha256:"), sha256_of(&module));
}
