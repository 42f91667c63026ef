//! Reading what a registry answers: whole bodies within a limit, errors from the start of
//! their bodies, and content checked against its digest.

use oci_client::errors::{DigestError, OciDistributionError};

use super::errors::{Stage, registry_answer};
use crate::error::FetchError;
use crate::options::MAX_ERROR_BODY;
use crate::transport::read_limited;

/// A whole (bounded) body; a body that breaks off is a transport failure of `stage`.
pub(super) async fn read_body(
    stage: Stage,
    resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    let declared = resp.content_length();
    read_limited(resp.bytes_stream(), declared, limit, what)
        .await
        .map_err(|e| match e {
            FetchError::Download {
                status: None,
                detail,
                ..
            } => stage.transport(what, detail),
            other => other,
        })
}

/// The answer if it is a 200; else the registry's error, classified from its status and the
/// start of its body as oci-client classifies it.
pub(super) async fn expect_ok(
    stage: Stage,
    resp: reqwest::Response,
    what: &str,
    url: &str,
) -> Result<reqwest::Response, FetchError> {
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        let body = error_body(resp).await;
        return Err(stage.registry(what, registry_answer(status, &body, url)));
    }
    Ok(resp)
}

/// The start of an error answer's body, for its message; a body that breaks off is cut there.
async fn error_body(resp: reqwest::Response) -> Vec<u8> {
    use futures::StreamExt as _;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    body
}

/// Checks content against a digest (`sha256:`, `sha384:` or `sha512:`, as oci-client).
pub(super) fn check_digest(data: &[u8], expected: &str) -> Result<(), OciDistributionError> {
    use sha2::Digest as _;
    let (algorithm, _) = expected.split_once(':').unwrap_or((expected, ""));
    let hex = match algorithm {
        "sha256" => hex::encode(sha2::Sha256::digest(data)),
        "sha384" => hex::encode(sha2::Sha384::digest(data)),
        "sha512" => hex::encode(sha2::Sha512::digest(data)),
        other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned()).into()),
    };
    let actual = format!("{algorithm}:{hex}");
    if actual != expected {
        return Err(DigestError::VerificationError {
            expected: expected.to_owned(),
            actual,
        }
        .into());
    }
    Ok(())
}
