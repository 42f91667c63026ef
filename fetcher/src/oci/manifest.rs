//! Resolving a reference to its image manifest: through a multi-arch index if needed, each
//! manifest checked as oci-client checks it (digest, schema version, media type).

use oci_client::Reference;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, ImageIndexEntry,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageManifest, OciManifest,
};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::body::{check_digest, expect_ok, read_body};
use super::errors::Stage;
use super::{OciFetcher, Transport, v2_url};
use crate::error::FetchError;
use crate::location::OciLocation;
use crate::options::{FetcherOptions, MAX_MANIFEST_SIZE};
use crate::transport::with_retries;

/// The manifest kinds a pull accepts (oci-client's list).
const MANIFEST_TYPES: [&str; 4] = [
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
];

/// The manifest a reference resolved to.
pub(crate) struct Resolved {
    pub manifest: OciImageManifest,
    /// `sha256:<hex>` of the image manifest (Istio's checksum for OCI).
    pub digest: String,
    /// `sha256:<hex>` of the index the reference named, for multi-arch references.
    pub index_digest: Option<String>,
}

/// The start of a manifest, checked before it is parsed (as oci-client does).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: i32,
    media_type: Option<String>,
}

/// Picks a usable manifest from a multi-arch index: a wasm/wasi platform, else linux/amd64
/// (go-containerregistry's default, which Istio uses), else the first entry.
pub(super) fn pick_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    let platform = |e: &ImageIndexEntry| {
        e.platform
            .as_ref()
            .map(|p| (p.os.to_string(), p.architecture.to_string()))
    };
    entries
        .iter()
        .find(|e| {
            platform(e).is_some_and(|(os, arch)| os.starts_with("wasi") || arch.starts_with("wasm"))
        })
        .or_else(|| {
            entries
                .iter()
                .find(|e| platform(e).is_some_and(|(os, arch)| os == "linux" && arch == "amd64"))
        })
        .or_else(|| entries.first())
        .map(|e| e.digest.clone())
}

impl OciFetcher {
    /// Fetches and resolves the manifest (through an index if needed), with retries.
    pub(crate) async fn resolve(
        &self,
        opts: &FetcherOptions,
        loc: &OciLocation,
        auth: &RegistryAuth,
    ) -> Result<Resolved, FetchError> {
        let shown_owned = loc.reference.whole();
        let shown = shown_owned.as_str();
        with_retries(opts, shown, move || {
            self.with_registry(opts, &loc.registry, move |transport| async move {
                let reference = &loc.reference;
                let (manifest, digest) = self.manifest(transport, reference, auth, shown).await?;
                let index = match manifest {
                    OciManifest::Image(m) => {
                        return Ok(Resolved {
                            manifest: m,
                            digest,
                            index_digest: None,
                        });
                    }
                    OciManifest::ImageIndex(index) => index,
                };
                let chosen =
                    pick_platform(&index.manifests).ok_or_else(|| FetchError::Manifest {
                        reference: shown.to_owned(),
                        status: Some(200),
                        detail: "the image index lists no manifests".to_owned(),
                    })?;
                let inner_reference = reference.clone_with_digest(chosen);
                let (inner, inner_digest) = self
                    .manifest(transport, &inner_reference, auth, shown)
                    .await?;
                match inner {
                    OciManifest::Image(m) => Ok(Resolved {
                        manifest: m,
                        digest: inner_digest,
                        index_digest: Some(digest),
                    }),
                    OciManifest::ImageIndex(_) => Err(FetchError::Manifest {
                        reference: shown.to_owned(),
                        status: Some(200),
                        detail: "nested image indexes are not supported".to_owned(),
                    }),
                }
            })
        })
        .await
    }

    /// One GET of a manifest, checked as oci-client checks it: against the reference's digest
    /// and the `Docker-Content-Digest` header, schema version 2 and a known media type. Returns
    /// the manifest and its digest.
    async fn manifest(
        &self,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        shown: &str,
    ) -> Result<(OciManifest, String), FetchError> {
        let stage = Stage::Manifest;
        let tag = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = v2_url(transport, reference, &format!("manifests/{tag}"));
        let accept = MANIFEST_TYPES.join(", ");
        let resp = self
            .send(
                stage,
                transport,
                reference,
                auth,
                shown,
                &url,
                Some(&accept),
            )
            .await?;
        let resp = expect_ok(stage, resp, shown, &url).await?;
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let body = read_body(stage, resp, MAX_MANIFEST_SIZE, shown).await?;
        // The header, when present, is the canonical digest (oci-client's `validate_digest`).
        let mut digest = None;
        for expected in [reference.digest(), header_digest.as_deref()]
            .into_iter()
            .flatten()
        {
            check_digest(&body, expected).map_err(|e| stage.registry(shown, e))?;
            digest = Some(expected.to_owned());
        }
        let digest = digest.unwrap_or_else(|| crate::cache::sha256_prefixed(&body));
        let unusable = |e| stage.registry(shown, e);
        let versioned: Versioned = serde_json::from_slice(&body)
            .map_err(|e| unusable(OciDistributionError::VersionedParsingError(e.to_string())))?;
        if versioned.schema_version != 2 {
            return Err(unusable(
                OciDistributionError::UnsupportedSchemaVersionError(versioned.schema_version),
            ));
        }
        if let Some(media_type) = versioned.media_type
            && !MANIFEST_TYPES.contains(&media_type.as_str())
        {
            return Err(unusable(OciDistributionError::UnsupportedMediaTypeError(
                media_type,
            )));
        }
        let manifest = serde_json::from_slice(&body)
            .map_err(|e| unusable(OciDistributionError::ManifestParsingError(e.to_string())))?;
        Ok((manifest, digest))
    }
}
