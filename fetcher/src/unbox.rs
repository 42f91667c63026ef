//! Getting the module out of gzip and tar wrappers without trusting their sizes.

use std::io::{self, Read};

use flate2::read::GzDecoder;
use serde::Deserialize;

use crate::error::FetchError;

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The legacy ServiceMeshExtension `manifest.yaml` is a few lines; refuse anything bigger.
const MAX_LEGACY_MANIFEST: u64 = 64 * 1024;

/// Istio's `isValidWasmBinary`: at least 8 bytes starting with `\0asm`.
pub(crate) fn is_wasm(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *WASM_MAGIC
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[..2] == GZIP_MAGIC
}

/// POSIX tar: `ustar` at offset 257.
fn is_tar(bytes: &[u8]) -> bool {
    bytes.len() > 262 && &bytes[257..262] == b"ustar"
}

/// A reader that fails once more than `limit` bytes came out of it, so a gzip or tar bomb is
/// stopped at the limit instead of filling memory or disk.
struct Limited<R> {
    inner: R,
    remaining: u64,
}

#[derive(Debug)]
struct LimitExceeded;
impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit exceeded")
    }
}
impl std::error::Error for LimitExceeded {}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            return Err(io::Error::other(LimitExceeded));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn limited<R: Read>(inner: R, limit: u64) -> Limited<R> {
    Limited {
        inner,
        remaining: limit,
    }
}

/// Maps an I/O error while decoding: the limit becomes `TooLarge`, anything else a corrupt
/// archive.
fn decode_error(url: &str, limit: u64, what: &str, e: io::Error) -> FetchError {
    let over = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<LimitExceeded>().is_some());
    if over {
        FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        }
    } else {
        FetchError::InvalidModule {
            url: url.to_owned(),
            reason: format!("corrupt {what}: {e}"),
        }
    }
}

fn gunzip(data: &[u8], limit: u64, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    limited(GzDecoder::new(data), limit)
        .read_to_end(&mut out)
        .map_err(|e| decode_error(url, limit, "gzip stream", e))?;
    Ok(out)
}

/// Istio's `unboxIfPossible`: a Wasm module is returned as is; gzip is unpacked; a tar yields its
/// first regular file; repeat. Anything else is returned unchanged (the caller then checks the
/// magic).
pub(crate) fn unbox_if_possible(
    mut data: Vec<u8>,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>, FetchError> {
    // Each round strips one wrapper; real modules have at most two (tar.gz).
    for _ in 0..8 {
        if is_wasm(&data) {
            return Ok(data);
        } else if is_gzip(&data) {
            data = gunzip(&data, limit, url)?;
        } else if is_tar(&data) {
            match first_tar_file(&data, limit, url)? {
                Some(file) => data = file,
                None => return Ok(data),
            }
        } else {
            return Ok(data);
        }
    }
    Ok(data)
}

fn first_tar_file(data: &[u8], limit: u64, url: &str) -> Result<Option<Vec<u8>>, FetchError> {
    let mut archive = tar::Archive::new(data);
    let entries = archive
        .entries()
        .map_err(|e| decode_error(url, limit, "tar", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| decode_error(url, limit, "tar", e))?;
        if entry.header().entry_type().is_file() {
            return read_entry(entry, limit, url).map(Some);
        }
    }
    Ok(None)
}

fn read_entry<R: Read>(
    mut entry: tar::Entry<'_, R>,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>, FetchError> {
    if entry.header().size().unwrap_or(u64::MAX) > limit {
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        });
    }
    let mut out = Vec::new();
    (&mut entry)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| decode_error(url, limit, "tar entry", e))?;
    Ok(out)
}

#[derive(Deserialize)]
struct LegacyManifest {
    module: String,
}

/// Extracts the module from a gzipped tar image layer: the first entry named `plugin.wasm`
/// (Istio's Docker and OCI image formats). Beyond Istio: when there is none, a legacy
/// ServiceMeshExtension layer's `manifest.yaml` names the module file.
pub(crate) fn module_from_tar_gz(
    layer: &[u8],
    limit: u64,
    url: &str,
) -> Result<Vec<u8>, FetchError> {
    let mut legacy_module: Option<String> = None;
    if let Some(found) = scan_tar_gz(layer, limit, url, |path, entry| {
        let base = basename(path);
        if base == "plugin.wasm" {
            return Ok(Some(read_entry(entry, limit, url)?));
        }
        if legacy_module.is_none() && (base == "manifest.yaml" || base == "manifest.yml") {
            let mut text = Vec::new();
            entry
                .take(MAX_LEGACY_MANIFEST)
                .read_to_end(&mut text)
                .map_err(|e| decode_error(url, limit, "manifest.yaml", e))?;
            if let Ok(m) = serde_yaml::from_slice::<LegacyManifest>(&text) {
                legacy_module = Some(m.module);
            }
        }
        Ok(None)
    })? {
        return Ok(found);
    }
    let Some(module) = legacy_module else {
        return Err(FetchError::InvalidModule {
            url: url.to_owned(),
            reason: "the image layer holds no plugin.wasm (nor a manifest.yaml naming the module)"
                .to_owned(),
        });
    };
    let wanted = module.trim_start_matches("./").to_owned();
    scan_tar_gz(layer, limit, url, |path, entry| {
        if path.trim_start_matches("./") == wanted || basename(path) == wanted {
            return Ok(Some(read_entry(entry, limit, url)?));
        }
        Ok(None)
    })?
    .ok_or_else(|| FetchError::InvalidModule {
        url: url.to_owned(),
        reason: format!("manifest.yaml names module {module:?}, which the layer does not hold"),
    })
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Walks the regular files of a gzipped tar, stopping at the first `Some` from `visit`. The
/// decompressed stream as a whole is bounded by `limit` plus tar overhead, so skipping a huge
/// entry cannot take unbounded time.
fn scan_tar_gz<F>(
    layer: &[u8],
    limit: u64,
    url: &str,
    mut visit: F,
) -> Result<Option<Vec<u8>>, FetchError>
where
    F: FnMut(
        &str,
        tar::Entry<'_, Limited<GzDecoder<&[u8]>>>,
    ) -> Result<Option<Vec<u8>>, FetchError>,
{
    // Headers and padding of a reasonable layer are far below one extra limit's worth.
    let stream_limit = limit.saturating_mul(2);
    let mut archive = tar::Archive::new(limited(GzDecoder::new(layer), stream_limit));
    let entries = archive
        .entries()
        .map_err(|e| decode_error(url, limit, "image layer", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| decode_error(url, limit, "image layer", e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(found) = visit(&path, entry)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn unboxes_gzip_and_tar() {
        assert_eq!(
            unbox_if_possible(MODULE.to_vec(), 100, "u").unwrap(),
            MODULE
        );
        assert_eq!(unbox_if_possible(gz(MODULE), 100, "u").unwrap(), MODULE);
        let tgz = gz(&tar_of(&[("a/x.wasm", MODULE)]));
        assert_eq!(unbox_if_possible(tgz, 1 << 20, "u").unwrap(), MODULE);
    }

    #[test]
    fn gzip_bomb_stops_at_limit() {
        let bomb = gz(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 100_000);
        let err = unbox_if_possible(bomb, 1 << 20, "u").unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn plugin_wasm_and_legacy_manifest() {
        let layer = gz(&tar_of(&[("README", b"hi"), ("plugin.wasm", MODULE)]));
        assert_eq!(module_from_tar_gz(&layer, 1 << 20, "u").unwrap(), MODULE);
        let legacy = gz(&tar_of(&[
            (
                "manifest.yaml",
                b"schemaVersion: 1\nname: x\nmodule: ext.wasm\n",
            ),
            ("ext.wasm", MODULE),
        ]));
        assert_eq!(module_from_tar_gz(&legacy, 1 << 20, "u").unwrap(), MODULE);
        let none = gz(&tar_of(&[("other.wasm", MODULE)]));
        assert!(matches!(
            module_from_tar_gz(&none, 1 << 20, "u"),
            Err(FetchError::InvalidModule { .. })
        ));
        let big = gz(&tar_of(&[("plugin.wasm", &vec![0u8; 2 << 20])]));
        assert!(matches!(
            module_from_tar_gz(&big, 1 << 20, "u"),
            Err(FetchError::TooLarge { .. })
        ));
    }
}
