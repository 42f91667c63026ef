//! `wasmgate push`: packaging a module as an image (Wasm artifact or Docker image) and
//! uploading it through oci-client, whose clients are kept per registry, transport and
//! credential.

use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;

use super::errors::oci_detail;
use super::manifest::pick_platform;
use super::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_MANIFEST, OciFetcher, WASM_CONFIG,
    WASM_LAYER, lock,
};
use crate::auth::fingerprint;
use crate::error::FetchError;
use crate::location::OciLocation;
use crate::options::FetcherOptions;
use crate::transport::error_chain;

/// Which oci-client push client serves a push (see `OciFetcher::clients`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    registry: String,
    plain_http: bool,
    insecure: bool,
    auth: String,
}

impl OciFetcher {
    fn client(&self, opts: &FetcherOptions, key: ClientKey) -> Result<Client, FetchError> {
        if let Some(c) = lock(&self.clients).get(&key) {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            protocol: if key.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: key.insecure,
            extra_root_certificates: self.ca.clone(),
            platform_resolver: Some(Box::new(pick_platform)),
            read_timeout: Some(opts.request_timeout),
            connect_timeout: Some(opts.request_timeout),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| FetchError::Setup(format!("registry client: {}", error_chain(&e))))?;
        lock(&self.clients).insert(key, client.clone());
        Ok(client)
    }

    /// Pushes `layers` + `config` and a manifest of `manifest_media_type`; returns the manifest
    /// digest.
    pub(crate) async fn push(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
        image: PushImage,
    ) -> Result<String, FetchError> {
        let shown_owned = loc.reference.whole();
        let shown = shown_owned.as_str();
        let push_err = move |e: OciDistributionError| FetchError::Push {
            reference: shown.to_owned(),
            detail: oci_detail(&e),
        };
        let manifest = serde_json::to_vec(&image.manifest).map_err(|e| FetchError::Push {
            reference: shown.to_owned(),
            detail: e.to_string(),
        })?;
        let digest = crate::cache::sha256_prefixed(&manifest);
        let content_type =
            http::HeaderValue::from_str(&image.media_type).map_err(|e| FetchError::Push {
                reference: shown.to_owned(),
                detail: e.to_string(),
            })?;
        let (image, manifest, content_type) = (&image, &manifest, &content_type);
        let insecure = opts.is_insecure(&loc.registry);
        self.with_registry(opts, &loc.registry, move |transport| {
            let reference = loc.reference.clone();
            let client = self.client(
                opts,
                ClientKey {
                    registry: loc.registry.clone(),
                    plain_http: transport.plain_http,
                    insecure,
                    auth: fingerprint(auth),
                },
            );
            async move {
                let client = client?;
                client
                    .store_auth_if_needed(reference.resolve_registry(), auth)
                    .await;
                for (data, desc) in &image.blobs {
                    client
                        .push_blob(&reference, data.clone(), &desc.digest)
                        .await
                        .map_err(push_err)?;
                }
                client
                    .push_manifest_raw(&reference, manifest.clone(), content_type.clone())
                    .await
                    .map_err(push_err)?;
                Ok(())
            }
        })
        .await?;
        Ok(digest)
    }
}

/// A built image ready to push.
pub(crate) struct PushImage {
    pub media_type: String,
    pub manifest: OciImageManifest,
    /// Every blob (layers and config) with its descriptor.
    pub blobs: Vec<(bytes::Bytes, OciDescriptor)>,
}

/// Builds the image `wasmgate push` uploads.
pub(crate) fn build_push_image(
    module: &[u8],
    format: crate::PushFormat,
) -> std::io::Result<PushImage> {
    use sha2::{Digest, Sha256};
    let desc = |media_type: &str, data: &[u8]| OciDescriptor {
        media_type: media_type.to_owned(),
        digest: crate::cache::sha256_prefixed(data),
        size: data.len() as i64,
        ..OciDescriptor::default()
    };
    match format {
        crate::PushFormat::Artifact => {
            // solo-io "oci" variant: the runtime config is both the manifest config and a layer,
            // so the manifest has the two layers istio-agent requires.
            let config = bytes::Bytes::from_static(
                br#"{"type":"envoy_proxy","abiVersions":["proxy_abi_version_0_2_1"],"config":{"rootIds":[]}}"#,
            );
            let wasm = bytes::Bytes::copy_from_slice(module);
            let config_desc = desc(WASM_CONFIG, &config);
            let layers = vec![config_desc.clone(), desc(WASM_LAYER, &wasm)];
            let manifest = OciImageManifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_owned()),
                config: config_desc.clone(),
                layers: layers.clone(),
                ..OciImageManifest::default()
            };
            Ok(PushImage {
                media_type: OCI_MANIFEST.to_owned(),
                manifest,
                blobs: vec![(config, config_desc), (wasm, layers[1].clone())],
            })
        }
        crate::PushFormat::Image => {
            let tar = {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_size(module.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, "plugin.wasm", module)?;
                b.into_inner()?
            };
            let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
            let layer = {
                use std::io::Write as _;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(&tar)?;
                gz.finish()?
            };
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }))?;
            let (layer, config) = (bytes::Bytes::from(layer), bytes::Bytes::from(config));
            let config_desc = desc(DOCKER_CONFIG, &config);
            let layer_desc = desc(DOCKER_LAYER_GZIP, &layer);
            let manifest = OciImageManifest {
                schema_version: 2,
                media_type: Some(DOCKER_MANIFEST.to_owned()),
                config: config_desc.clone(),
                layers: vec![layer_desc.clone()],
                ..OciImageManifest::default()
            };
            Ok(PushImage {
                media_type: DOCKER_MANIFEST.to_owned(),
                manifest,
                blobs: vec![(layer, layer_desc), (config, config_desc)],
            })
        }
    }
}
