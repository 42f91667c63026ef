//! The registry's authentication challenge on `/v2/` (distribution's token authentication),
//! asked once per registry, with the token realm checked against the guard before any token
//! request goes to it.

use super::errors::Stage;
use super::{OciFetcher, Transport, lock};
use crate::error::FetchError;

/// How a registry asks for credentials on `/v2/` (distribution's token authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    /// No `WWW-Authenticate`: anonymous access.
    None,
    /// Anything but a usable bearer challenge: basic credentials, as oci-client falls back.
    Basic,
    /// Ask `realm` for a token.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl OciFetcher {
    /// The registry's authentication challenge, asked once per registry through the guarded
    /// client. A realm that is not http(s) or points at a refused address is refused here
    /// (Istio's SSRF guard on token realms), before any token request, ours or oci-client's
    /// when pushing.
    pub(super) async fn challenge(
        &self,
        registry: &str,
        transport: Transport,
    ) -> Result<Challenge, FetchError> {
        let key = (registry.to_owned(), transport.plain_http);
        if let Some(known) = lock(&self.challenges).get(&key) {
            return Ok(known.clone());
        }
        let url = format!("{}://{registry}/v2/", transport.scheme());
        let resp = self
            .guarded_client(transport.insecure)
            .get(&url)
            .send()
            .await
            .map_err(|e| Stage::Manifest.send_error(registry, e))?;
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map_or(Challenge::None, parse_challenge);
        if let Challenge::Bearer { realm, .. } = &challenge {
            let blocked = |reason: String| FetchError::Blocked {
                url: registry.to_owned(),
                reason,
            };
            let parsed = reqwest::Url::parse(realm)
                .map_err(|_| blocked(format!("token realm {realm:?} is not a URL")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(blocked(format!("token realm {realm:?} is not http(s)")));
            }
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port_or_known_default().unwrap_or(443);
            self.guard
                .check_host(realm, host, port)
                .await
                .map_err(|e| match e {
                    FetchError::Blocked { reason, .. } => {
                        blocked(format!("token realm {realm}: {reason}"))
                    }
                    other => other,
                })?;
        }
        lock(&self.challenges).insert(key, challenge.clone());
        Ok(challenge)
    }
}

/// A `WWW-Authenticate` header as oci-client reads it: a bearer challenge with a realm, else
/// basic credentials.
fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Basic;
    }
    match auth_param(params, "realm") {
        Some(realm) => Challenge::Bearer {
            realm,
            service: auth_param(params, "service"),
        },
        None => Challenge::Basic,
    }
}

/// The value of `name` in a challenge's `k=v, k="v"` list.
fn auth_param(params: &str, name: &str) -> Option<String> {
    let lower = params.to_ascii_lowercase();
    let key = format!("{name}=");
    let start = lower.match_indices(&key).find_map(|(i, _)| {
        let before = lower[..i].trim_end();
        (before.is_empty() || before.ends_with(',')).then_some(i + key.len())
    })?;
    let rest = &params[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split(',').next()?,
    };
    Some(value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse_challenge("bearer service=x, Realm=http://h/t"),
            Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("x".into())
            }
        );
        // A key inside another parameter's value is not the parameter.
        assert_eq!(
            parse_challenge(r#"Bearer service="realm=no",realm="http://h/t""#),
            Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("realm=no".into())
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="registry""#),
            Challenge::Basic
        );
        assert_eq!(parse_challenge("Bearer service=x"), Challenge::Basic);
    }
}
