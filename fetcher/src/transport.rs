//! HTTP clients, retry loop and error text shared by the HTTP and OCI fetchers.

use std::future::Future;

use futures::StreamExt as _;
use tracing::debug;

use crate::backoff::Backoff;
use crate::error::FetchError;
use crate::guard::{Guard, GuardedResolver, Refused};
use crate::options::FetcherOptions;

/// Redirects followed for `http(s)://` modules and registry requests (Go's default).
const MAX_REDIRECTS: usize = 10;

/// The error and its causes on one line (reqwest's own message is only the outermost layer).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

/// A URL safe to print: any `user:password@` removed.
pub(crate) fn redact_url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

/// [`redact_url`] for a URL still in text form; text that does not parse is returned as is
/// (only `scheme://user:pass@host` forms can carry a password).
pub(crate) fn redact_str(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            redact_url(&parsed)
        }
        _ => url.to_owned(),
    }
}

/// PEM roots from the configured CA bundle, as reqwest certificates.
pub(crate) fn read_ca_bundle(opts: &FetcherOptions) -> Result<Vec<u8>, FetchError> {
    match &opts.ca_bundle {
        None => Ok(Vec::new()),
        Some(path) => std::fs::read(path)
            .map_err(|e| FetchError::Setup(format!("reading CA bundle {}: {e}", path.display()))),
    }
}

/// The [`FetchError::Blocked`] inside a failed request, if the guard refused a destination on
/// the way (a redirect hop, or a host that resolves only to refused addresses).
pub(crate) fn blocked(e: &reqwest::Error) -> Option<FetchError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(FetchError::Blocked {
                url: refused.target.clone(),
                reason: refused.reason.clone(),
            });
        }
        source = err.source();
    }
    None
}

/// The client for `http(s)://` modules and for every registry request wasmgate makes itself:
/// guarded resolver (every connection, including after redirects), guarded redirect policy
/// (literal IPs, which skip the resolver), extra roots.
pub(crate) fn http_client(
    opts: &FetcherOptions,
    guard: &Guard,
    ca_pem: &[u8],
    insecure: bool,
) -> Result<reqwest::Client, FetchError> {
    let redirect_guard = guard.clone();
    let mut builder = reqwest::Client::builder()
        .dns_resolver(GuardedResolver(guard.clone()))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            // Literal IPs never reach the resolver; check them here.
            let refused = attempt
                .url()
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse().ok())
                .and_then(|ip| redirect_guard.refuses(ip));
            match refused {
                Some(reason) => {
                    let target = redact_url(attempt.url());
                    attempt.error(Refused {
                        target,
                        reason: format!("redirect refused: {reason}"),
                    })
                }
                None => attempt.follow(),
            }
        }))
        .connect_timeout(opts.request_timeout)
        .timeout(opts.request_timeout)
        .danger_accept_invalid_certs(insecure);
    if !ca_pem.is_empty() {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| FetchError::Setup(format!("CA bundle: {}", error_chain(&e))))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| FetchError::Setup(format!("HTTP client: {}", error_chain(&e))))
}

/// Runs `op` up to `max_attempts` times, each bounded by `request_timeout`, sleeping with
/// backoff between attempts while the error is transient. Cancel-safe: dropping the future
/// stops at the next await.
pub(crate) async fn with_retries<T, F, Fut>(
    opts: &FetcherOptions,
    what: &str,
    mut op: F,
) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, FetchError>>,
{
    let mut backoff = Backoff::new(opts.backoff.clone());
    let attempts = opts.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let err = match tokio::time::timeout(opts.request_timeout, op()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => FetchError::Timeout {
                url: what.to_owned(),
                after: opts.request_timeout,
            },
        };
        if !err.is_transient() || attempt >= attempts {
            return Err(err);
        }
        let delay = backoff.next_delay();
        debug!(target: "wasmgate::fetcher", %what, attempt, ?delay, error = %err, "retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Reads a body stream, failing with `TooLarge` as soon as it passes `limit`.
pub(crate) async fn read_limited<S, E>(
    mut stream: S,
    declared_len: Option<u64>,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>, FetchError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if declared_len.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared_len.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Download {
            url: url.to_owned(),
            status: None,
            detail: format!("reading the body: {}", error_chain(&e)),
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    if let Some(n) = declared_len
        && out.len() as u64 != n
    {
        return Err(FetchError::Download {
            url: url.to_owned(),
            status: None,
            detail: format!("body truncated: got {} of {n} bytes", out.len()),
        });
    }
    Ok(out)
}
