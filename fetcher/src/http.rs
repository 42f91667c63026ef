//! `http://` and `https://` modules (istio-wasm.md §2.6).

use crate::error::FetchError;
use crate::guard::Guard;
use crate::options::FetcherOptions;
use crate::transport::{blocked, error_chain, http_client, read_limited, redact_url, with_retries};
use crate::unbox::unbox_if_possible;

/// Two clients built once: one verifying certificates, one for insecure-listed hosts.
pub(crate) struct HttpFetcher {
    verified: reqwest::Client,
    insecure: reqwest::Client,
}

impl HttpFetcher {
    pub(crate) fn new(
        opts: &FetcherOptions,
        guard: &Guard,
        ca_pem: &[u8],
    ) -> Result<Self, FetchError> {
        Ok(Self {
            verified: http_client(opts, guard, ca_pem, false)?,
            insecure: http_client(opts, guard, ca_pem, true)?,
        })
    }

    /// The two guarded clients, shared with the registry pulls.
    pub(crate) fn clients(&self) -> (reqwest::Client, reqwest::Client) {
        (self.verified.clone(), self.insecure.clone())
    }

    /// Downloads with retries and returns the unboxed module bytes (not yet checked for the
    /// Wasm magic).
    pub(crate) async fn fetch(
        &self,
        opts: &FetcherOptions,
        guard: &Guard,
        url: &reqwest::Url,
    ) -> Result<Vec<u8>, FetchError> {
        let shown = redact_url(url);
        let host = url.host_str().unwrap_or_default();
        guard
            .check_host(&shown, host, url.port_or_known_default().unwrap_or(443))
            .await?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let client = if opts.is_insecure(&authority) {
            &self.insecure
        } else {
            &self.verified
        };
        let limit = opts.max_module_size;
        let body = with_retries(opts, &shown, || async {
            let resp = client.get(url.clone()).send().await.map_err(|e| {
                blocked(&e).unwrap_or_else(|| FetchError::Download {
                    url: shown.clone(),
                    status: None,
                    detail: error_chain(&e.without_url()),
                })
            })?;
            let status = resp.status();
            if status != reqwest::StatusCode::OK {
                return Err(FetchError::Download {
                    url: shown.clone(),
                    status: Some(status.as_u16()),
                    detail: format!("server answered {status}"),
                });
            }
            let declared = resp.content_length();
            read_limited(resp.bytes_stream(), declared, limit, &shown).await
        })
        .await?;
        unbox_if_possible(body, limit, &shown)
    }
}
