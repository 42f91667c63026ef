//! `http://` and `file://` modules against a scripted server on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use support::*;
use wasmgate_fetcher::{FetchError, ModuleRequest};

fn req(url: String) -> ModuleRequest {
    ModuleRequest::new(url, "default.plugin")
}

#[tokio::test]
async fn serves_wasm_wasm_gz_and_tar_gz_with_checksum_of_unboxed_module() -> anyhow::Result<()> {
    let m = module("http-formats");
    let (wasm, gz, tgz) = (m.clone(), gzip(&m), gzip(&tar_of(&[("dir/any.wasm", &m)])));
    let server = HttpServer::start(vec![
        ("/p.wasm", route(move |_| Reply::ok(wasm.clone()))),
        ("/p.wasm.gz", route(move |_| Reply::ok(gz.clone()))),
        ("/p.tar.gz", route(move |_| Reply::ok(tgz.clone()))),
    ])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    for path in ["/p.wasm", "/p.wasm.gz", "/p.tar.gz"] {
        let mut r = req(server.url(path));
        r.sha256 = Some(sha256_hex(&m));
        let got = f.fetch(&r).await?;
        assert_eq!(&*got.bytes, &m[..], "{path}");
        assert_eq!(got.wasm_sha256, sha256_hex(&m));
        assert!(got.path.starts_with(cache.path()));
        assert_eq!(std::fs::read(&got.path)?, m);
    }
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        3.0
    );
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "false"))
        ),
        3.0
    );
    // Three URLs, one module file.
    assert_eq!(metric(&reg, "istio_agent_wasm_cache_entries", None), 1.0);

    // Second round: all from the cache, no new request.
    for path in ["/p.wasm", "/p.wasm.gz", "/p.tar.gz"] {
        f.fetch(&req(server.url(path))).await?;
        assert_eq!(server.hits(path), 1, "{path}");
    }
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "true"))
        ),
        3.0
    );
    Ok(())
}

#[tokio::test]
async fn retries_503_then_succeeds() -> anyhow::Result<()> {
    let m = module("retry");
    let server = HttpServer::start(vec![(
        "/m.wasm",
        route(move |n| {
            if n < 2 {
                Reply::status(503)
            } else {
                Reply::ok(m.clone())
            }
        }),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    f.fetch(&req(server.url("/m.wasm"))).await?;
    assert_eq!(server.hits("/m.wasm"), 3);
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn gives_up_after_max_attempts_of_5xx() -> anyhow::Result<()> {
    let server = HttpServer::start(vec![("/m.wasm", route(|_| Reply::status(500)))]).await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    let err = f.fetch(&req(server.url("/m.wasm"))).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Download {
                status: Some(500),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.hits("/m.wasm"), 5);
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "download_failure"))
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn client_errors_and_501_stop_at_once() -> anyhow::Result<()> {
    let server = HttpServer::start(vec![
        ("/gone.wasm", route(|_| Reply::status(404))),
        ("/denied.wasm", route(|_| Reply::status(403))),
        ("/nope.wasm", route(|_| Reply::status(501))),
    ])
    .await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    // A retry would take at least 5 s: finishing fast proves there was none.
    opts.backoff.initial = Duration::from_secs(5);
    let (f, _) = fetcher(opts);
    for (path, code) in [
        ("/gone.wasm", 404),
        ("/denied.wasm", 403),
        ("/nope.wasm", 501),
    ] {
        let started = Instant::now();
        let err = f.fetch(&req(server.url(path))).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Download { status: Some(c), .. } if c == code),
            "{err}"
        );
        assert!(err.to_string().contains(&code.to_string()), "{err}");
        assert_eq!(server.hits(path), 1, "{path}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    Ok(())
}

#[tokio::test]
async fn truncated_body_is_retried_and_never_cached() -> anyhow::Result<()> {
    let m = module_with_payload(&[7u8; 4096]);
    let m2 = m.clone();
    let server = HttpServer::start(vec![
        (
            "/always-short.wasm",
            route(move |_| Reply {
                truncate_to: Some(100),
                ..Reply::ok(m2.clone())
            }),
        ),
        (
            "/short-once.wasm",
            route(move |n| Reply {
                truncate_to: (n == 0).then_some(100),
                ..Reply::ok(m.clone())
            }),
        ),
    ])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    let err = f
        .fetch(&req(server.url("/always-short.wasm")))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Download { .. }), "{err}");
    assert_eq!(server.hits("/always-short.wasm"), 5);
    assert_eq!(metric(&reg, "istio_agent_wasm_cache_entries", None), 0.0);
    f.fetch(&req(server.url("/short-once.wasm"))).await?;
    assert_eq!(server.hits("/short-once.wasm"), 2);
    Ok(())
}

#[tokio::test]
async fn slow_server_times_out_per_request() -> anyhow::Result<()> {
    let m = module("slow");
    let server = HttpServer::start(vec![(
        "/slow.wasm",
        route(move |_| Reply {
            delay: Duration::from_secs(3),
            ..Reply::ok(m.clone())
        }),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.request_timeout = Duration::from_millis(300);
    opts.max_attempts = 2;
    let (f, _) = fetcher(opts);
    let started = Instant::now();
    let err = f.fetch(&req(server.url("/slow.wasm"))).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.hits("/slow.wasm"), 2);
    Ok(())
}

#[tokio::test]
async fn overall_deadline_bounds_the_retries() -> anyhow::Result<()> {
    let server = HttpServer::start(vec![("/m.wasm", route(|_| Reply::status(503)))]).await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.backoff.initial = Duration::from_secs(2);
    opts.backoff.max = Duration::from_secs(2);
    opts.fetch_timeout = Duration::from_millis(800);
    let (f, _) = fetcher(opts);
    let started = Instant::now();
    let err = f.fetch(&req(server.url("/m.wasm"))).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}

#[tokio::test]
async fn oversized_module_and_gzip_bomb_stop_at_the_limit() -> anyhow::Result<()> {
    let big = module_with_payload(&vec![1u8; 128 * 1024]);
    let bomb = gzip(&module_with_payload(&vec![0u8; 32 << 20]));
    assert!(bomb.len() < 100 * 1024);
    let tar_bomb = gzip(&tar_of(&[(
        "plugin.wasm",
        &module_with_payload(&vec![0u8; 32 << 20]),
    )]));
    let server = HttpServer::start(vec![
        ("/big.wasm", route(move |_| Reply::ok(big.clone()))),
        ("/bomb.wasm.gz", route(move |_| Reply::ok(bomb.clone()))),
        ("/bomb.tar.gz", route(move |_| Reply::ok(tar_bomb.clone()))),
    ])
    .await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.max_module_size = 64 * 1024;
    let (f, reg) = fetcher(opts);
    for path in ["/big.wasm", "/bomb.wasm.gz", "/bomb.tar.gz"] {
        let err = f.fetch(&req(server.url(path))).await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 65536, .. }),
            "{path}: {err}"
        );
        assert!(err.to_string().contains("size limit"), "{err}");
        assert_eq!(server.hits(path), 1, "not retried: {path}");
    }
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "download_failure"))
        ),
        3.0
    );
    assert_eq!(metric(&reg, "istio_agent_wasm_cache_entries", None), 0.0);
    Ok(())
}

#[tokio::test]
async fn checksum_mismatch_names_both_digests() -> anyhow::Result<()> {
    let m = module("mismatch");
    let m2 = m.clone();
    let server = HttpServer::start(vec![("/m.wasm", route(move |_| Reply::ok(m2.clone())))]).await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    let wrong = "0".repeat(64);
    let mut r = req(server.url("/m.wasm"));
    r.sha256 = Some(wrong.clone());
    let err = f.fetch(&r).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::ChecksumMismatch { .. }));
    assert!(
        text.contains(&wrong) && text.contains(&sha256_hex(&m)),
        "{text}"
    );
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "checksum_mismatched"))
        ),
        1.0
    );
    assert_eq!(metric(&reg, "istio_agent_wasm_cache_entries", None), 0.0);
    Ok(())
}

#[tokio::test]
async fn non_wasm_body_is_refused() -> anyhow::Result<()> {
    let server = HttpServer::start(vec![(
        "/page.wasm",
        route(|_| Reply::ok(b"<html>not a module</html>".to_vec())),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    let err = f.fetch(&req(server.url("/page.wasm"))).await.unwrap_err();
    assert!(matches!(err, FetchError::InvalidModule { .. }), "{err}");
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "fetch_failure"))
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_fetches_share_one_download() -> anyhow::Result<()> {
    let m = module("shared");
    let m2 = m.clone();
    let server = HttpServer::start(vec![(
        "/shared.wasm",
        route(move |_| Reply {
            delay: Duration::from_millis(300),
            ..Reply::ok(m2.clone())
        }),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    let url = server.url("/shared.wasm");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let f = f.clone();
            let r = ModuleRequest::new(url.clone(), format!("ns.p{i}"));
            tokio::spawn(async move { f.fetch(&r).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(&*t.await??.bytes, &m[..]);
    }
    assert_eq!(server.hits("/shared.wasm"), 1);
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "true"))
        ),
        7.0
    );
    Ok(())
}

#[tokio::test]
async fn cancelled_fetch_leaves_nothing_and_can_be_retried() -> anyhow::Result<()> {
    let m = module("cancel");
    let m2 = m.clone();
    let server = HttpServer::start(vec![(
        "/c.wasm",
        route(move |n| Reply {
            delay: if n == 0 {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            },
            ..Reply::ok(m2.clone())
        }),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, _) = fetcher(options(cache.path()));
    let r = req(server.url("/c.wasm"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), f.fetch(&r))
            .await
            .is_err()
    );
    let modules: Vec<_> = std::fs::read_dir(cache.path().join("modules"))?.collect();
    assert!(modules.is_empty(), "no partial file after cancellation");
    assert_eq!(&*f.fetch(&r).await?.bytes, &m[..]);
    Ok(())
}

#[tokio::test]
async fn always_refetches_http_only_when_the_resource_version_changes() -> anyhow::Result<()> {
    let (v1, v2) = (module("v1"), module("v2"));
    let server = HttpServer::start(vec![(
        "/moving.wasm",
        route(move |n| Reply::ok(if n == 0 { v1.clone() } else { v2.clone() })),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, _) = fetcher(options(cache.path()));
    let mut r = req(server.url("/moving.wasm"));
    r.pull_policy = wasmgate_fetcher::PullPolicy::Always;
    r.resource_version = "1".into();
    assert_eq!(&*f.fetch(&r).await?.bytes, &module("v1")[..]);
    assert_eq!(&*f.fetch(&r).await?.bytes, &module("v1")[..]);
    assert_eq!(server.hits("/moving.wasm"), 1);
    r.resource_version = "2".into();
    assert_eq!(&*f.fetch(&r).await?.bytes, &module("v2")[..]);
    assert_eq!(server.hits("/moving.wasm"), 2);
    Ok(())
}

#[tokio::test]
async fn blocked_destinations_are_refused_before_any_connection() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.blocked_cidrs = vec!["127.0.0.2/32".parse()?];
    let (f, _) = fetcher(opts);
    for url in [
        "http://169.254.169.254/latest/meta-data/x.wasm",
        "http://[fe80::1]/x.wasm",
        "http://metadata.google.internal/x.wasm",
        "http://127.0.0.2:9/x.wasm",
        "oci://169.254.169.254/repo:v1",
    ] {
        let err = f.fetch(&req(url.to_owned())).await.unwrap_err();
        assert!(matches!(err, FetchError::Blocked { .. }), "{url}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn file_urls_and_unsupported_schemes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m = module("file");
    let good = dir.path().join("good.wasm");
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&good, &m)?;
    std::fs::write(&bad, b"#!/bin/sh\necho no\n")?;
    let (f, _) = fetcher(options(&dir.path().join("cache")));

    let got = f.fetch(&req(format!("file://{}", good.display()))).await?;
    assert_eq!(&*got.bytes, &m[..]);
    assert_eq!(got.path, good);
    let mut pinned = req(format!("file://{}", good.display()));
    pinned.sha256 = Some(sha256_hex(&m));
    f.fetch(&pinned).await?;
    pinned.sha256 = Some("1".repeat(64));
    assert!(matches!(
        f.fetch(&pinned).await,
        Err(FetchError::ChecksumMismatch { .. })
    ));

    let err = f
        .fetch(&req(format!("file://{}", bad.display())))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::InvalidModule { .. }), "{err}");
    let err = f
        .fetch(&req(format!(
            "file://{}/missing.wasm",
            dir.path().display()
        )))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::File { .. }), "{err}");
    let err = f
        .fetch(&req("ftp://127.0.0.1/x.wasm".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Url { .. }) && err.to_string().contains("unsupported"),
        "{err}"
    );
    let mut bad_sum = req("http://127.0.0.1:9/x.wasm".into());
    bad_sum.sha256 = Some("xyz".into());
    assert!(matches!(
        f.fetch(&bad_sum).await,
        Err(FetchError::Url { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_slow_module_does_not_delay_another() -> anyhow::Result<()> {
    let (slow, fast) = (module("slow-one"), module("fast-one"));
    let server = HttpServer::start(vec![
        (
            "/slow.wasm",
            route(move |_| Reply {
                delay: Duration::from_secs(3),
                ..Reply::ok(slow.clone())
            }),
        ),
        ("/fast.wasm", route(move |_| Reply::ok(fast.clone()))),
    ])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, _) = fetcher(options(cache.path()));
    let slow_task = {
        let (f, r) = (f.clone(), req(server.url("/slow.wasm")));
        tokio::spawn(async move { f.fetch(&r).await })
    };
    // Wait until the slow download is in flight.
    while server.hits("/slow.wasm") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    f.fetch(&req(server.url("/fast.wasm"))).await?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!slow_task.is_finished());
    slow_task.await??;
    Ok(())
}

#[tokio::test]
async fn passwords_in_http_urls_stay_out_of_errors() -> anyhow::Result<()> {
    let server = HttpServer::start(vec![(
        "/page.wasm",
        route(|_| Reply::ok(b"<html>not a module</html>".to_vec())),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (f, _) = fetcher(options(cache.path()));
    let url = format!("http://user:hunter2@{}/page.wasm", server.addr);
    let err = f.fetch(&req(url.clone())).await.unwrap_err();
    assert!(matches!(err, FetchError::InvalidModule { .. }), "{err}");
    assert!(
        !err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{err}"
    );
    let mut bad = req(url);
    bad.sha256 = Some("nothex".into());
    let err = f.fetch(&bad).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    Ok(())
}

#[tokio::test]
async fn conversion_metrics_have_istio_names() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_config_conversion_count",
            Some(("result", "success"))
        ),
        0.0
    );
    f.record_conversion(
        wasmgate_fetcher::ConversionResult::Success,
        Duration::from_millis(3),
    );
    f.record_conversion(
        wasmgate_fetcher::ConversionResult::FetchFailure,
        Duration::from_millis(5),
    );
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_config_conversion_count",
            Some(("result", "success"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_config_conversion_count",
            Some(("result", "fetch_failure"))
        ),
        1.0
    );
    assert_eq!(
        metric(&reg, "istio_agent_wasm_config_conversion_duration", None),
        2.0
    );
    let text = prometheus::TextEncoder::new().encode_to_string(&reg.gather())?;
    assert!(
        text.contains("istio_agent_wasm_config_conversion_duration_bucket{le=\"4\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("istio_agent_wasm_cache_lookup_count{hit=\"false\"} 0"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn two_fetchers_sharing_a_cache_dir_race_safely() -> anyhow::Result<()> {
    let m = module_with_payload(&[4u8; 256 * 1024]);
    let m2 = m.clone();
    let server = HttpServer::start(vec![(
        "/race.wasm",
        route(move |_| Reply {
            delay: Duration::from_millis(100),
            ..Reply::ok(m2.clone())
        }),
    )])
    .await;
    let cache = tempfile::tempdir()?;
    let (a, _) = fetcher(options(cache.path()));
    let (b, _) = fetcher(options(cache.path()));
    let r = req(server.url("/race.wasm"));
    let (ra, rb) = tokio::join!(a.fetch(&r), b.fetch(&r));
    let (ma, mb) = (ra?, rb?);
    assert_eq!(ma.path, mb.path);
    assert_eq!(std::fs::read(&ma.path)?, m);
    let files: Vec<_> =
        std::fs::read_dir(cache.path().join("modules"))?.collect::<Result<_, _>>()?;
    assert_eq!(files.len(), 1, "one file, no temp leftovers: {files:?}");
    // A third instance starts warm from whichever index was written last.
    let (c, reg) = fetcher(options(cache.path()));
    c.fetch(&r).await?;
    assert_eq!(server.hits("/race.wasm"), 2);
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_cache_lookup_count",
            Some(("hit", "true"))
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn an_altered_cache_file_is_fetched_again() -> anyhow::Result<()> {
    let m = module("tamper");
    let m2 = m.clone();
    let server = HttpServer::start(vec![("/t.wasm", route(move |_| Reply::ok(m2.clone())))]).await;
    let cache = tempfile::tempdir()?;
    let (f, reg) = fetcher(options(cache.path()));
    let r = req(server.url("/t.wasm"));
    let first = f.fetch(&r).await?;
    std::fs::write(&first.path, b"\0asm\x01\0\0\0tampered")?;
    let again = f.fetch(&r).await?;
    assert_eq!(&*again.bytes, &m[..]);
    assert_eq!(std::fs::read(&again.path)?, m);
    assert_eq!(server.hits("/t.wasm"), 2);
    assert_eq!(
        metric(
            &reg,
            "istio_agent_wasm_remote_fetch_count",
            Some(("result", "success"))
        ),
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn the_purge_task_runs_by_itself() -> anyhow::Result<()> {
    let m = module("purge-task");
    let server = HttpServer::start(vec![("/p.wasm", route(move |_| Reply::ok(m.clone())))]).await;
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.purge_interval = Duration::from_millis(100);
    opts.module_expiry = Duration::from_millis(300);
    let (f, reg) = fetcher(opts);
    let got = f.fetch(&req(server.url("/p.wasm"))).await?;
    let task = f.spawn_purge_task();
    // The purge removes the file, then updates the gauge: wait for both (a loaded machine can
    // run this test between the two).
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.path.exists() || metric(&reg, "istio_agent_wasm_cache_entries", None) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "purge task never removed {} (cache_entries {})",
            got.path.display(),
            metric(&reg, "istio_agent_wasm_cache_entries", None)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The task ends once the fetcher is gone.
    drop(f);
    tokio::time::timeout(Duration::from_secs(5), task).await??;
    Ok(())
}
