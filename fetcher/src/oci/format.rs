//! Which layer holds the module: Istio's format order (Docker image, OCI image, Wasm
//! artifact), decided from the manifest's media types before any blob is downloaded.

use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::manifest::Resolved;
use super::{DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_LAYER_GZIP, OciFetcher, WASM_LAYER};
use crate::error::FetchError;
use crate::location::OciLocation;
use crate::options::FetcherOptions;
use crate::unbox::module_from_tar_gz;

impl OciFetcher {
    /// Downloads the layer holding the module and extracts it, per Istio's format order:
    /// Docker image, OCI image, Wasm artifact.
    pub(crate) async fn module(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
        resolved: &Resolved,
    ) -> Result<Vec<u8>, FetchError> {
        let shown = loc.reference.whole();
        let m = &resolved.manifest;
        let limit = opts.max_module_size;
        let last = m.layers.last();
        let is_docker = m.media_type.as_deref() == Some(DOCKER_MANIFEST);
        let mut failures = Vec::new();

        // 1. Docker image (only for a Docker manifest), 2. OCI image: the last layer must be a
        // gzipped tar holding plugin.wasm.
        let docker = is_docker.then_some(("Docker image", DOCKER_LAYER_GZIP));
        for (kind, want) in docker.into_iter().chain([("OCI image", OCI_LAYER_GZIP)]) {
            match last {
                Some(l) if l.media_type == want => {
                    let layer = self.blob(opts, loc, auth, l).await?;
                    return module_from_tar_gz(&layer, limit, &shown);
                }
                Some(l) => failures.push(format!(
                    "{kind}: last layer has media type {:?}, want {want:?}",
                    l.media_type
                )),
                None => failures.push(format!("{kind}: no layers")),
            }
        }
        // 3. Wasm artifact: the raw module in the layer of the proxy-wasm media type. Istio
        // wants exactly two layers; beyond Istio, any manifest with exactly one such layer.
        let wasm_layers: Vec<&OciDescriptor> = m
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER)
            .collect();
        match wasm_layers.as_slice() {
            [l] => return self.blob(opts, loc, auth, l).await,
            [] => failures.push(format!(
                "Wasm artifact: no layer of media type {WASM_LAYER:?}"
            )),
            _ => failures.push(format!(
                "Wasm artifact: several layers of media type {WASM_LAYER:?}"
            )),
        }
        Err(FetchError::InvalidModule {
            url: shown,
            reason: format!(
                "not a Wasm image in any supported format: {}",
                failures.join("; ")
            ),
        })
    }
}
