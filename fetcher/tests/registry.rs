//! OCI modules against Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use support::*;
use wasmgate_fetcher::{
    DockerConfig, DockerConfigSource, FetchError, ModuleRequest, PullPolicy, PushFormat,
};

fn req(url: String) -> ModuleRequest {
    ModuleRequest::new(url, "default.plugin")
}

/// Options trusting a plain-HTTP registry on loopback (listed insecure, as operators would).
fn opts_for(cache: &std::path::Path, reg: &Registry) -> wasmgate_fetcher::FetcherOptions {
    let mut o = options(cache);
    o.insecure_registries = vec![reg.host()];
    o
}

#[tokio::test]
async fn pushed_artifact_and_image_are_fetched_by_tag_and_digest() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let (f, metrics) = fetcher(opts_for(cache.path(), &reg));
    for (format, repo) in [
        (PushFormat::Artifact, "wasm/artifact:v1"),
        (PushFormat::Image, "wasm/image:v1"),
    ] {
        let m = module(repo);
        let digest = f.push(&m, &reg.url(repo), format, None).await?;
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let got = f.fetch(&req(reg.url(repo))).await?;
        assert_eq!(&*got.bytes, &m[..], "{format:?}");
        assert_eq!(got.manifest_digest.as_deref(), Some(digest.as_str()));
        assert_eq!(got.wasm_sha256, sha256_hex(&m));
        // The digest `push` printed is what users put in `sha256`.
        let mut pinned = req(reg.url(repo));
        pinned.sha256 = Some(hex.to_owned());
        assert_eq!(&*f.fetch(&pinned).await?.bytes, &m[..]);
    }
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "true"))
        ),
        2.0
    );
    assert_eq!(
        metric(&metrics, "istio_agent_wasm_cache_entries", None),
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn every_format_pushed_by_raw_http_is_understood() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let raw = RawPusher::new(&reg);
    let cache = tempfile::tempdir()?;
    let (f, metrics) = fetcher(opts_for(cache.path(), &reg));

    let docker = module("docker");
    raw.image(
        "f/docker",
        "v1",
        DOCKER_MANIFEST,
        DOCKER_CONFIG,
        &[
            (
                DOCKER_LAYER_GZIP,
                gzip(&tar_of(&[("base.txt", b"base layer")])),
            ),
            (
                DOCKER_LAYER_GZIP,
                gzip(&tar_of(&[("etc/x", b"x"), ("plugin.wasm", &docker)])),
            ),
        ],
    )
    .await?;
    let oci = module("oci");
    raw.image(
        "f/oci",
        "v1",
        OCI_MANIFEST,
        OCI_CONFIG,
        &[(OCI_LAYER_GZIP, gzip(&tar_of(&[("plugin.wasm", &oci)])))],
    )
    .await?;
    let artifact = module("artifact");
    raw.image(
        "f/artifact",
        "v1",
        OCI_MANIFEST,
        WASM_CONFIG,
        &[
            (WASM_CONFIG, br#"{"type":"envoy_proxy"}"#.to_vec()),
            (WASM_LAYER, artifact.clone()),
        ],
    )
    .await?;
    let legacy = module("servicemeshextension");
    raw.image(
        "f/legacy",
        "v1",
        OCI_MANIFEST,
        OCI_CONFIG,
        &[(
            OCI_LAYER_GZIP,
            gzip(&tar_of(&[
                (
                    "manifest.yaml",
                    b"schemaVersion: 1\nname: header-append\nmodule: extension.wasm\n",
                ),
                ("extension.wasm", &legacy),
            ])),
        )],
    )
    .await?;
    for (repo, want) in [
        ("f/docker:v1", &docker),
        ("f/oci:v1", &oci),
        ("f/artifact:v1", &artifact),
        ("f/legacy:v1", &legacy),
    ] {
        let got = f.fetch(&req(reg.url(repo))).await?;
        assert_eq!(&*got.bytes, &want[..], "{repo}");
    }

    // A multi-arch index resolves to its wasm entry; the index digest pins it too.
    let other = module("linux-amd64");
    let amd64 = raw
        .image(
            "f/multi",
            "amd64",
            DOCKER_MANIFEST,
            DOCKER_CONFIG,
            &[(DOCKER_LAYER_GZIP, gzip(&tar_of(&[("plugin.wasm", &other)])))],
        )
        .await?;
    let wasm_mod = module("wasi-wasm");
    let wasi = raw
        .image(
            "f/multi",
            "wasi",
            OCI_MANIFEST,
            WASM_CONFIG,
            &[
                (WASM_CONFIG, b"{}".to_vec()),
                (WASM_LAYER, wasm_mod.clone()),
            ],
        )
        .await?;
    let (amd64_len, wasi_len) = (
        raw_manifest_len(&reg, "f/multi", "amd64").await?,
        raw_manifest_len(&reg, "f/multi", "wasi").await?,
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": format!("sha256:{amd64}"), "size": amd64_len, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": format!("sha256:{wasi}"), "size": wasi_len, "platform": {"architecture": "wasm", "os": "wasip1"}},
        ],
    });
    let index_digest = raw.manifest("f/multi", "v1", &index).await?;
    let got = f.fetch(&req(reg.url("f/multi:v1"))).await?;
    assert_eq!(&*got.bytes, &wasm_mod[..]);
    assert_eq!(
        got.manifest_digest.as_deref(),
        Some(format!("sha256:{wasi}").as_str())
    );
    let got = f
        .fetch(&req(reg.url(&format!("f/multi@sha256:{index_digest}"))))
        .await?;
    assert_eq!(&*got.bytes, &wasm_mod[..]);

    // Not a Wasm image: an uncompressed tar layer is refused (as Istio), naming the formats.
    raw.image(
        "f/plain-tar",
        "v1",
        OCI_MANIFEST,
        OCI_CONFIG,
        &[(OCI_LAYER_TAR, tar_of(&[("plugin.wasm", &module("tar"))]))],
    )
    .await?;
    let err = f.fetch(&req(reg.url("f/plain-tar:v1"))).await.unwrap_err();
    assert!(matches!(err, FetchError::InvalidModule { .. }), "{err}");
    assert!(err.to_string().contains("Wasm artifact"), "{err}");
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "fetch_failure"))
        ),
        1.0
    );
    Ok(())
}

async fn raw_manifest_len(reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<usize> {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v2/{repo}/manifests/{tag}", reg.host()))
        .header("accept", format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))
        .send()
        .await?;
    Ok(resp.bytes().await?.len())
}

#[tokio::test]
async fn checksums_manifest_digest_module_digest_url_digest_and_mismatch() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let (f, metrics) = fetcher(opts_for(cache.path(), &reg));
    let m = module("checksums");
    let digest = f
        .push(&m, &reg.url("c/m:v1"), PushFormat::Artifact, None)
        .await?;
    let manifest_hex = digest.trim_start_matches("sha256:").to_owned();

    let mut r = req(reg.url("c/m:v1"));
    r.sha256 = Some(manifest_hex.clone());
    f.fetch(&r).await?;
    // Beyond Istio: the module's own digest is accepted too.
    let fresh = tempfile::tempdir()?;
    let (f2, metrics2) = fetcher(opts_for(fresh.path(), &reg));
    r.sha256 = Some(sha256_hex(&m));
    assert_eq!(&*f2.fetch(&r).await?.bytes, &m[..]);

    let wrong = "e".repeat(64);
    r.sha256 = Some(wrong.clone());
    let err = f2.fetch(&r).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{text}");
    assert!(
        text.contains(&wrong) && text.contains(&manifest_hex),
        "{text}"
    );
    assert_eq!(
        metric(
            &metrics2,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "checksum_mismatched"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        1.0
    );

    // `@sha256:` in the URL: fetched and verified; a digest the registry lacks fails cleanly.
    let pinned = f2
        .fetch(&req(reg.url(&format!("c/m@sha256:{manifest_hex}"))))
        .await?;
    assert_eq!(&*pinned.bytes, &m[..]);
    let err = f2
        .fetch(&req(reg.url(&format!("c/m@sha256:{}", "a".repeat(64)))))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Manifest {
                status: Some(404),
                ..
            }
        ),
        "{err}"
    );
    // A URL digest that disagrees with `sha256` is refused.
    let mut both = req(reg.url(&format!("c/m@sha256:{manifest_hex}")));
    both.sha256 = Some(wrong.clone());
    let fresh2 = tempfile::tempdir()?;
    let (f3, m3) = fetcher(opts_for(fresh2.path(), &reg));
    assert!(matches!(
        f3.fetch(&both).await,
        Err(FetchError::ChecksumMismatch { .. })
    ));
    assert_eq!(
        metric(
            &m3,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "checksum_mismatched"))
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn tag_moved_with_always_and_if_not_present() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let (f, metrics) = fetcher(opts_for(cache.path(), &reg));
    let (v1, v2) = (module("tag-v1"), module("tag-v2"));
    f.push(&v1, &reg.url("t/m:stable"), PushFormat::Image, None)
        .await?;
    f.push(&v1, &reg.url("t/m:latest"), PushFormat::Image, None)
        .await?;

    let mut keep = req(reg.url("t/m:stable"));
    keep.resource = "ns.keep".into();
    keep.pull_policy = PullPolicy::IfNotPresent;
    keep.resource_version = "1".into();
    let mut always = req(reg.url("t/m:stable"));
    always.resource = "ns.always".into();
    always.pull_policy = PullPolicy::Always;
    always.resource_version = "1".into();
    let mut latest = req(reg.url("t/m:latest"));
    latest.resource = "ns.latest".into();
    latest.resource_version = "1".into();
    for r in [&keep, &always, &latest] {
        assert_eq!(&*f.fetch(r).await?.bytes, &v1[..]);
    }

    // The tags move.
    f.push(&v2, &reg.url("t/m:stable"), PushFormat::Image, None)
        .await?;
    f.push(&v2, &reg.url("t/m:latest"), PushFormat::Image, None)
        .await?;
    let before = metric(
        &metrics,
        "istio_agent_wasm_cache_lookup_count",
        Some(("hit", "false")),
    );
    // Same resource versions: everyone keeps v1, no network.
    for r in [&keep, &always, &latest] {
        assert_eq!(&*f.fetch(r).await?.bytes, &v1[..]);
    }
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "false"))
        ),
        before
    );
    // The WasmPlugins change: Always and :latest pull v2, IfNotPresent keeps v1.
    for r in [&mut keep, &mut always, &mut latest] {
        r.resource_version = "2".into();
    }
    assert_eq!(&*f.fetch(&keep).await?.bytes, &v1[..]);
    assert_eq!(&*f.fetch(&always).await?.bytes, &v2[..]);
    assert_eq!(&*f.fetch(&latest).await?.bytes, &v2[..]);
    // A sha256 always uses the cache, even under Always with a new version.
    let mut pinned = always.clone();
    pinned.sha256 = Some(sha256_hex(&v1));
    pinned.resource_version = "3".into();
    let hits = metric(
        &metrics,
        "istio_agent_wasm_cache_lookup_count",
        Some(("hit", "true")),
    );
    assert_eq!(&*f.fetch(&pinned).await?.bytes, &v1[..]);
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "true"))
        ),
        hits + 1.0
    );
    Ok(())
}

#[tokio::test]
async fn basic_auth_with_pull_secret_docker_config_and_wrong_password() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup {
        basic_auth: Some(("alice".into(), "s3cret-pw".into())),
        ..RegistrySetup::default()
    })?;
    let cache = tempfile::tempdir()?;
    let secret_json = |pw: &str| {
        serde_json::json!({"auths": {reg.host(): {"username": "alice", "password": pw}}})
            .to_string()
    };
    let good = DockerConfig::from_json(secret_json("s3cret-pw").as_bytes(), "test")?;
    let bad = DockerConfig::from_json(secret_json("not-the-pw").as_bytes(), "test")?;
    let mut opts = opts_for(cache.path(), &reg);
    // A retry would wait at least 5 s: a quick failure proves a refusal is not retried.
    opts.backoff.initial = Duration::from_secs(5);
    let (f, metrics) = fetcher(opts.clone());

    let m = module("private");
    let err = f
        .push(&m, &reg.url("p/m:v1"), PushFormat::Artifact, None)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Push { .. }), "{err}");
    f.push(&m, &reg.url("p/m:v1"), PushFormat::Artifact, Some(&good))
        .await?;

    let started = Instant::now();
    let err = f.fetch(&req(reg.url("p/m:v1"))).await.unwrap_err();
    assert!(matches!(err, FetchError::Auth { .. }), "anonymous: {err}");
    let mut wrong = req(reg.url("p/m:v1"));
    wrong.pull_secret = Some(bad);
    let err = f.fetch(&wrong).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Auth { .. }),
        "wrong password: {err}"
    );
    assert!(!err.to_string().contains("not-the-pw") && !format!("{err:?}").contains("not-the-pw"));
    assert!(!format!("{wrong:?}").contains("not-the-pw"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no retries: {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "manifest_failure"))
        ),
        2.0
    );

    let mut right = req(reg.url("p/m:v1"));
    right.pull_secret = Some(good);
    assert_eq!(&*f.fetch(&right).await?.bytes, &m[..]);

    // Without a secret, the docker config file's entry (`auth` = base64 user:pass).
    let docker_dir = tempfile::tempdir()?;
    let config = docker_dir.path().join("config.json");
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw");
    std::fs::write(
        &config,
        serde_json::json!({"auths": {format!("http://{}", reg.host()): {"auth": auth}}})
            .to_string(),
    )?;
    let cache2 = tempfile::tempdir()?;
    let mut opts2 = opts_for(cache2.path(), &reg);
    opts2.docker_config = DockerConfigSource::File(config);
    let (f2, _) = fetcher(opts2);
    assert_eq!(&*f2.fetch(&req(reg.url("p/m:v1"))).await?.bytes, &m[..]);
    Ok(())
}

#[tokio::test]
async fn tls_registry_with_a_custom_ca() -> anyhow::Result<()> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmgate test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
    let reg = Registry::start(RegistrySetup {
        tls: Some((leaf.pem(), leaf_key.serialize_pem())),
        ..RegistrySetup::default()
    })?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem())?;

    let mut opts = options(&dir.path().join("cache"));
    opts.ca_bundle = Some(ca_path);
    let (f, _) = fetcher(opts);
    let m = module("tls");
    let digest = f
        .push(&m, &reg.url("s/m:v1"), PushFormat::Artifact, None)
        .await?;
    let mut r = req(reg.url("s/m:v1"));
    r.sha256 = Some(digest.trim_start_matches("sha256:").to_owned());
    assert_eq!(&*f.fetch(&r).await?.bytes, &m[..]);

    // Without the CA the registry is not trusted, and that is not retried into a storm.
    let mut untrusting = options(&dir.path().join("cache2"));
    untrusting.max_attempts = 1;
    let (f2, _) = fetcher(untrusting);
    let err = f2.fetch(&req(reg.url("s/m:v1"))).await.unwrap_err();
    assert!(matches!(err, FetchError::Manifest { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // Listed as insecure, verification is skipped.
    let mut insecure = options(&dir.path().join("cache3"));
    insecure.insecure_registries = vec!["*".into()];
    let (f3, _) = fetcher(insecure);
    assert_eq!(&*f3.fetch(&req(reg.url("s/m:v1"))).await?.bytes, &m[..]);
    Ok(())
}

#[tokio::test]
async fn registry_down_then_back() -> anyhow::Result<()> {
    let mut reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let (f, metrics) = fetcher(opts_for(cache.path(), &reg));
    let m = module("flaky-registry");
    f.push(&m, &reg.url("d/m:v1"), PushFormat::Artifact, None)
        .await?;
    reg.stop();
    let err = f.fetch(&req(reg.url("d/m:v1"))).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(err, FetchError::Manifest { status: None, .. }),
        "{err}"
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "manifest_failure"))
        ),
        1.0
    );
    reg.restart()?;
    assert_eq!(&*f.fetch(&req(reg.url("d/m:v1"))).await?.bytes, &m[..]);
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn truncated_blob_is_refused_and_not_cached() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let mut opts = opts_for(cache.path(), &reg);
    opts.max_attempts = 2;
    let (f, metrics) = fetcher(opts);
    let m = module_with_payload(&[9u8; 8192]);
    f.push(&m, &reg.url("b/m:v1"), PushFormat::Artifact, None)
        .await?;
    let blob = reg.blob_path(&sha256_hex(&m));
    let data = std::fs::read(&blob)?;
    std::fs::write(&blob, &data[..data.len() / 2])?;
    let err = f.fetch(&req(reg.url("b/m:v1"))).await.unwrap_err();
    assert!(matches!(err, FetchError::Download { .. }), "{err}");
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "download_failure"))
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "istio_agent_wasm_cache_entries", None),
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn oversized_module_and_gzip_bomb_layer_are_refused() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let raw = RawPusher::new(&reg);
    let cache = tempfile::tempdir()?;
    let mut opts = opts_for(cache.path(), &reg);
    opts.max_module_size = 64 * 1024;
    let (f, metrics) = fetcher(opts);
    f.push(
        &module_with_payload(&vec![3u8; 256 * 1024]),
        &reg.url("z/big:v1"),
        PushFormat::Artifact,
        None,
    )
    .await?;
    let bomb = gzip(&tar_of(&[(
        "plugin.wasm",
        &module_with_payload(&vec![0u8; 16 << 20]),
    )]));
    raw.image(
        "z/bomb",
        "v1",
        OCI_MANIFEST,
        OCI_CONFIG,
        &[(OCI_LAYER_GZIP, bomb)],
    )
    .await?;
    for repo in ["z/big:v1", "z/bomb:v1"] {
        let started = Instant::now();
        let err = f.fetch(&req(reg.url(repo))).await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 65536, .. }),
            "{repo}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "download_failure"))
        ),
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn warm_cache_survives_a_restart_with_the_registry_stopped() -> anyhow::Result<()> {
    let mut reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let opts = opts_for(cache.path(), &reg);
    let (m1, m2) = (module("restart-digest"), module("restart-tag"));
    let digest;
    {
        let (f, _) = fetcher(opts.clone());
        digest = f
            .push(&m1, &reg.url("r/one:v1"), PushFormat::Artifact, None)
            .await?;
        f.push(&m2, &reg.url("r/two:v1"), PushFormat::Image, None)
            .await?;
        f.fetch(&req(reg.url(&format!("r/one@{digest}")))).await?;
        f.fetch(&req(reg.url("r/two:v1"))).await?;
    }
    reg.stop();
    let (f, metrics) = fetcher(opts);
    assert_eq!(
        metric(&metrics, "istio_agent_wasm_cache_entries", None),
        2.0
    );
    let got = f.fetch(&req(reg.url(&format!("r/one@{digest}")))).await?;
    assert_eq!(&*got.bytes, &m1[..]);
    assert_eq!(got.manifest_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(&*f.fetch(&req(reg.url("r/two:v1"))).await?.bytes, &m2[..]);
    let mut pinned = req(reg.url("r/one:v1"));
    pinned.sha256 = Some(digest.trim_start_matches("sha256:").to_owned());
    assert_eq!(&*f.fetch(&pinned).await?.bytes, &m1[..]);
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "true"))
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "false"))
        ),
        0.0
    );
    for r in wasmgate_fetcher::REMOTE_FETCH_RESULTS {
        assert_eq!(
            metric(
                &metrics,
                "istio_agent_wasm_remote_fetch_count",
                Some(("result", r))
            ),
            0.0,
            "{r}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn purge_removes_expired_modules() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let cache = tempfile::tempdir()?;
    let mut opts = opts_for(cache.path(), &reg);
    opts.module_expiry = Duration::from_secs(1);
    let (f, metrics) = fetcher(opts);
    let m = module("purge");
    f.push(&m, &reg.url("x/m:v1"), PushFormat::Artifact, None)
        .await?;
    let got = f.fetch(&req(reg.url("x/m:v1"))).await?;
    assert!(got.path.exists());
    assert_eq!(f.purge_expired().await, 0, "fresh entries stay");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.purge_expired().await, 1);
    assert!(!got.path.exists());
    assert_eq!(
        metric(&metrics, "istio_agent_wasm_cache_entries", None),
        0.0
    );
    // The URL's remembered checksum went too: the next fetch goes to the registry.
    f.fetch(&req(reg.url("x/m:v1"))).await?;
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn bearer_token_registry_with_pull_secret_and_retries_on_503() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let front = TokenRegistry::start(&reg, "bob", "t0ken-pw", 2).await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.insecure_registries = vec![reg.host(), front.host()];
    let (f, metrics) = fetcher(opts);
    let m = module("bearer");
    // Pushed straight to the registry; pulled through the token front.
    let digest = f
        .push(&m, &reg.url("tok/m:v1"), PushFormat::Artifact, None)
        .await?;

    let err = f.fetch(&req(front.url("tok/m:v1"))).await.unwrap_err();
    assert!(matches!(err, FetchError::Auth { .. }), "anonymous: {err}");
    let mut wrong = req(front.url("tok/m:v1"));
    wrong.pull_secret = Some(DockerConfig::basic(&front.host(), "bob", "wrong"));
    assert!(matches!(
        f.fetch(&wrong).await,
        Err(FetchError::Auth { .. })
    ));
    assert_eq!(
        front
            .manifest_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let mut right = req(front.url("tok/m:v1"));
    right.pull_secret = Some(DockerConfig::basic(&front.host(), "bob", "t0ken-pw"));
    let got = f.fetch(&right).await?;
    assert_eq!(&*got.bytes, &m[..]);
    assert_eq!(got.manifest_digest.as_deref(), Some(digest.as_str()));
    // Two 503s, then the answer: three manifest requests, one fetch.
    assert_eq!(
        front
            .manifest_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    // One token each for the anonymous and the wrong attempt; then one, kept for the retried
    // manifest requests and the blob.
    assert_eq!(
        front
            .token_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "manifest_failure"))
        ),
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn token_realm_on_a_metadata_address_is_refused() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let front = TokenRegistry::start_with_realm(
        &reg,
        "bob",
        "pw",
        0,
        Some("http://169.254.169.254/latest/meta-data/iam".into()),
    )
    .await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.insecure_registries = vec![front.host()];
    let (f, _) = fetcher(opts);
    let mut r = req(front.url("tok/m:v1"));
    r.pull_secret = Some(DockerConfig::basic(&front.host(), "bob", "pw"));
    let err = f.fetch(&r).await.unwrap_err();
    assert!(matches!(err, FetchError::Blocked { .. }), "{err}");
    assert!(err.to_string().contains("token realm"), "{err}");
    Ok(())
}

/// A listener that only counts the connections it accepts: the stand-in for a refused address.
async fn counting_listener(ip: &str) -> anyhow::Result<(std::net::SocketAddr, CountedTask)> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(sock);
        }
    });
    Ok((addr, CountedTask { count, task }))
}

struct CountedTask {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountedTask {
    fn connections(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountedTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn blob_and_manifest_redirects_to_a_refused_address_are_blocked_without_connecting()
-> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    // The refused address is a loopback one we listen on, blocked by configuration, so a
    // connection the guard failed to stop would be seen.
    let (refused, listener) = counting_listener("127.0.0.2").await?;
    let m = module("redirected");
    for (part, redirected_path) in [
        ("/blobs/", "/v2/tok/m/blobs/sha256:"),
        ("/manifests/", "/v2/tok/m/manifests/v1"),
    ] {
        let front =
            TokenRegistry::start_redirecting(&reg, "bob", "pw", part, format!("http://{refused}"))
                .await;
        let cache = tempfile::tempdir()?;
        let mut opts = options(cache.path());
        opts.insecure_registries = vec![reg.host(), front.host()];
        opts.blocked_cidrs = vec!["127.0.0.2/32".parse()?];
        let (f, metrics) = fetcher(opts);
        f.push(&m, &reg.url("tok/m:v1"), PushFormat::Artifact, None)
            .await?;

        let mut r = req(front.url("tok/m:v1"));
        r.pull_secret = Some(DockerConfig::basic(&front.host(), "bob", "pw"));
        let err = f.fetch(&r).await.unwrap_err();
        let FetchError::Blocked { url, reason } = &err else {
            panic!("{part}: want Blocked, got {err}");
        };
        assert!(
            url.starts_with(&format!("http://{refused}{redirected_path}")),
            "{part}: {err}"
        );
        assert!(reason.contains("127.0.0.2/32"), "{part}: {err}");
        assert_eq!(
            listener.connections(),
            0,
            "{part}: the refused address was dialled"
        );
        // Refused is final: no retries.
        let (manifests, blobs) = (
            front
                .manifest_requests
                .load(std::sync::atomic::Ordering::SeqCst),
            front
                .blob_requests
                .load(std::sync::atomic::Ordering::SeqCst),
        );
        match part {
            "/blobs/" => assert_eq!((manifests, blobs), (1, 1), "{part}"),
            _ => assert_eq!((manifests, blobs), (1, 0), "{part}"),
        }
        assert_eq!(
            metric(&metrics, "istio_agent_wasm_cache_entries", None),
            0.0
        );
    }
    Ok(())
}

#[tokio::test]
async fn blob_redirect_to_allowed_storage_is_followed_and_verified() -> anyhow::Result<()> {
    let reg = Registry::start(RegistrySetup::default())?;
    let m = module("stored elsewhere");
    let layer_path = format!("/v2/tok/m/blobs/sha256:{}", sha256_hex(&m));
    // "Object storage": answers the blob path with corrupted bytes of the right length twice
    // (one fetch and its retry), then with the module.
    let (good, mut bad) = (m.clone(), m.clone());
    *bad.last_mut().unwrap() ^= 1;
    let storage = HttpServer::start(vec![(
        layer_path.as_str(),
        route(move |n| Reply::ok(if n < 2 { bad.clone() } else { good.clone() })),
    )])
    .await;
    let front =
        TokenRegistry::start_redirecting(&reg, "bob", "pw", "/blobs/", storage.url("")).await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.insecure_registries = vec![reg.host(), front.host()];
    opts.blocked_cidrs = vec!["127.0.0.2/32".parse()?];
    opts.max_attempts = 2;
    let (f, metrics) = fetcher(opts);
    f.push(&m, &reg.url("tok/m:v1"), PushFormat::Artifact, None)
        .await?;
    let mut r = req(front.url("tok/m:v1"));
    r.pull_secret = Some(DockerConfig::basic(&front.host(), "bob", "pw"));

    // Bytes that do not match the manifest's digest: refused after the retry, not cached.
    let err = f.fetch(&r).await.unwrap_err();
    assert!(matches!(err, FetchError::Download { .. }), "{err}");
    assert!(err.to_string().contains("digest"), "{err}");
    assert_eq!(storage.hits(&layer_path), 2);
    assert_eq!(
        metric(&metrics, "istio_agent_wasm_cache_entries", None),
        0.0
    );

    let got = f.fetch(&r).await?;
    assert_eq!(&*got.bytes, &m[..]);
    assert_eq!(storage.hits(&layer_path), 3);
    Ok(())
}
