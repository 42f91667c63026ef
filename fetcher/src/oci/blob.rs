//! Downloading one blob through the guarded client, bounded by the module size limit and
//! checked against the manifest's size and digest.

use oci_client::Reference;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::body::{check_digest, expect_ok, read_body};
use super::errors::Stage;
use super::{OciFetcher, Transport, v2_url};
use crate::error::FetchError;
use crate::location::OciLocation;
use crate::options::FetcherOptions;
use crate::transport::with_retries;

impl OciFetcher {
    /// Streams one blob with retries, verifying its digest and bounding its size.
    pub(super) async fn blob(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
        layer: &OciDescriptor,
    ) -> Result<Vec<u8>, FetchError> {
        let what = format!("{} blob {}", loc.reference.whole(), layer.digest);
        let limit = opts.max_module_size;
        if layer.size < 0 || layer.size as u64 > limit {
            return Err(FetchError::TooLarge { url: what, limit });
        }
        let what = what.as_str();
        with_retries(opts, what, move || {
            self.with_registry(opts, &loc.registry, move |transport| {
                self.download_blob(transport, &loc.reference, auth, layer, limit, what)
            })
        })
        .await
    }

    /// One GET of a blob through the guarded client: every connection, the registry's and each
    /// redirect's (object storage), is checked by the guard. Credentials go to the registry
    /// only: reqwest drops `Authorization` on a redirect to another host. The descriptor's
    /// `urls` (foreign layers) are not followed.
    async fn download_blob(
        &self,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        layer: &OciDescriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, FetchError> {
        let stage = Stage::Blob;
        let url = v2_url(transport, reference, &format!("blobs/{}", layer.digest));
        let resp = self
            .send(stage, transport, reference, auth, what, &url, None)
            .await?;
        let resp = expect_ok(stage, resp, what, &url).await?;
        let data = read_body(stage, resp, limit, what).await?;
        if data.len() as u64 != layer.size as u64 {
            return Err(FetchError::Download {
                url: what.to_owned(),
                status: None,
                detail: format!(
                    "blob has {} bytes, the manifest says {}",
                    data.len(),
                    layer.size
                ),
            });
        }
        check_digest(&data, &layer.digest).map_err(|e| stage.registry(what, e))?;
        Ok(data)
    }
}
