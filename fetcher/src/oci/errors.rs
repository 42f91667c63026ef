//! Failures of a registry request classified into `FetchError`, the way oci-client's errors
//! are: the stage that failed picks the variant (and so Istio's metric label), the registry's
//! status and error codes pick auth refusal or not.

use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};

use crate::error::FetchError;
use crate::transport::{blocked, error_chain};

/// Which request of a pull failed: decides the error's variant (and so Istio's metric label).
#[derive(Clone, Copy)]
pub(super) enum Stage {
    Manifest,
    Blob,
}

impl Stage {
    /// No answer, or a body that broke off: worth retrying.
    pub(super) fn transport(self, what: &str, detail: String) -> FetchError {
        match self {
            Stage::Manifest => FetchError::Manifest {
                reference: what.to_owned(),
                status: None,
                detail,
            },
            Stage::Blob => FetchError::Download {
                url: what.to_owned(),
                status: None,
                detail,
            },
        }
    }

    /// A failure the registry reported, classified as oci-client's errors are.
    pub(super) fn registry(self, what: &str, e: OciDistributionError) -> FetchError {
        match self {
            Stage::Manifest => manifest_error(what, e),
            Stage::Blob => download_error(what, e),
        }
    }

    /// A request that got no answer: refused by the guard (naming what it refused), or a
    /// transport failure.
    pub(super) fn send_error(self, what: &str, e: reqwest::Error) -> FetchError {
        blocked(&e).unwrap_or_else(|| self.transport(what, error_chain(&e.without_url())))
    }
}

/// A registry's answer other than 200 as oci-client reports it (`validate_registry_response`),
/// so it is classified the same way.
pub(super) fn registry_answer(
    status: reqwest::StatusCode,
    body: &[u8],
    url: &str,
) -> OciDistributionError {
    let url = url.to_owned();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return OciDistributionError::UnauthorizedError { url };
    }
    if status.is_success() {
        return OciDistributionError::SpecViolationError(format!(
            "expected HTTP status 200, got {status}"
        ));
    }
    if status.is_client_error()
        && let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(body)
    {
        return OciDistributionError::RegistryError { envelope, url };
    }
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url,
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

pub(super) fn is_transport(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::Manifest { status: None, .. }
            | FetchError::Download { status: None, .. }
            | FetchError::Push { .. }
    )
}

/// oci-client errors with their causes (registry URLs carry no credentials).
pub(super) fn oci_detail(e: &OciDistributionError) -> String {
    error_chain(e)
}

/// Classifies an oci-client error into (HTTP status if any, is it an auth refusal).
fn classify(e: &OciDistributionError) -> (Option<u16>, bool) {
    match e {
        OciDistributionError::UnauthorizedError { .. } => (Some(401), true),
        OciDistributionError::AuthenticationFailure(_) => (Some(401), true),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                (Some(401), true)
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                (Some(404), false)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                (Some(429), false)
            } else {
                (Some(400), false)
            }
        }
        OciDistributionError::ServerError { code, .. } => {
            (Some(*code), *code == 401 || *code == 403)
        }
        OciDistributionError::RequestError(r) => (r.status().map(|s| s.as_u16()), false),
        OciDistributionError::IoError(_) | OciDistributionError::DigestError(_) => (None, false),
        // Unparseable or unsupported answers: the registry answered, retrying will not help.
        _ => (Some(200), false),
    }
}

fn manifest_error(reference: &str, e: OciDistributionError) -> FetchError {
    let (status, auth) = classify(&e);
    if auth {
        return FetchError::Auth {
            reference: reference.to_owned(),
            detail: format!(
                "{} (check imagePullSecret or the docker config credentials)",
                oci_detail(&e)
            ),
        };
    }
    FetchError::Manifest {
        reference: reference.to_owned(),
        status,
        detail: oci_detail(&e),
    }
}

fn download_error(what: &str, e: OciDistributionError) -> FetchError {
    let (status, auth) = classify(&e);
    if auth {
        return FetchError::Auth {
            reference: what.to_owned(),
            detail: oci_detail(&e),
        };
    }
    FetchError::Download {
        url: what.to_owned(),
        status,
        detail: oci_detail(&e),
    }
}
