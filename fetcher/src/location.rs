//! Turning a WasmPlugin `url` into where to fetch from (istio-wasm.md §2.2, §2.4).

use std::path::PathBuf;

use oci_client::Reference;

use crate::error::FetchError;

/// Parsed module URL.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    Oci(OciLocation),
    Http(reqwest::Url),
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub(crate) struct OciLocation {
    pub reference: Reference,
    /// Hex of an `@sha256:` digest in the URL.
    pub url_digest: Option<String>,
    /// `host[:port]` as written, used for the insecure list and credentials.
    pub registry: String,
}

impl Location {
    pub(crate) fn parse(url: &str) -> Result<Self, FetchError> {
        let bad = |reason: &str| FetchError::Url {
            url: crate::transport::redact_str(url),
            reason: reason.to_owned(),
        };
        if url.trim().is_empty() {
            return Err(bad("empty"));
        }
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            // Istio: no scheme means oci.
            None => ("oci".to_owned(), url),
        };
        match scheme.as_str() {
            "oci" => {
                let reference: Reference = rest
                    .parse()
                    .map_err(|e| bad(&format!("not an OCI reference: {e}")))?;
                let url_digest = match reference.digest() {
                    Some(d) => match d.strip_prefix("sha256:") {
                        Some(hex) if is_sha256_hex(hex) => Some(hex.to_owned()),
                        _ => return Err(bad("only sha256 digests are supported")),
                    },
                    None => None,
                };
                let registry = reference.registry().to_owned();
                Ok(Location::Oci(OciLocation {
                    reference,
                    url_digest,
                    registry,
                }))
            }
            "http" | "https" => {
                let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
                if parsed.host_str().is_none() {
                    return Err(bad("no host"));
                }
                Ok(Location::Http(parsed))
            }
            // Beyond istio-agent (which never sees file://): read the path as written, relative
            // paths from the process's working directory.
            "file" => {
                if rest.is_empty() {
                    return Err(bad("no path"));
                }
                Ok(Location::File(PathBuf::from(rest)))
            }
            other => Err(bad(&format!(
                "unsupported Wasm module downloading URL scheme {other:?} (use oci://, http://, https:// or file://)"
            ))),
        }
    }

    /// Istio's `moduleNameFromURL`: OCI references without tag or digest, other URLs as written.
    pub(crate) fn module_name(&self, url: &str) -> String {
        match self {
            Location::Oci(oci) => format!(
                "oci://{}/{}",
                oci.reference.registry(),
                oci.reference.repository()
            ),
            _ => url.to_owned(),
        }
    }
}

/// Istio's `sha256` pattern: 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let hex = "a".repeat(64);
        match Location::parse(&format!("127.0.0.1:5000/ns/plug@sha256:{hex}")).unwrap() {
            Location::Oci(o) => {
                assert_eq!(o.registry, "127.0.0.1:5000");
                assert_eq!(o.url_digest.as_deref(), Some(hex.as_str()));
            }
            other => panic!("{other:?}"),
        }
        let loc = Location::parse("oci://ghcr.io/a/b:v1").unwrap();
        assert_eq!(loc.module_name("oci://ghcr.io/a/b:v1"), "oci://ghcr.io/a/b");
        assert!(matches!(
            Location::parse("https://h/x.wasm").unwrap(),
            Location::Http(_)
        ));
        assert!(matches!(
            Location::parse("file:///tmp/x.wasm").unwrap(),
            Location::File(p) if p == std::path::Path::new("/tmp/x.wasm")
        ));
        let err = Location::parse("ftp://h/x.wasm").unwrap_err().to_string();
        assert!(err.contains("unsupported"), "{err}");
        assert!(Location::parse("oci://h/x@sha256:abc").is_err());
    }
}
