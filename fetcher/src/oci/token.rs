//! Credentials on every GET of a pull, as oci-client adds them: a given bearer token, basic
//! credentials, or a pull token from the challenge's realm, cached per registry, repository
//! and credential, and replaced once when the registry refuses it.

use std::time::{Duration, Instant};

use oci_client::Reference;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::body::read_body;
use super::challenge::Challenge;
use super::errors::Stage;
use super::{OciFetcher, Transport, lock};
use crate::auth::fingerprint;
use crate::error::FetchError;
use crate::options::{DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_RESPONSE};

/// Whose pull token it is: a token is scoped to one repository and issued for one credential.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct TokenKey {
    registry: String,
    repository: String,
    /// [`fingerprint`] of the credential the token was issued for.
    auth: String,
}

/// A token server's answer (Docker token authentication spec).
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl OciFetcher {
    /// GETs `url` of `reference`'s repository with the registry's credentials. A cached token
    /// the registry no longer accepts (401) is replaced once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        stage: Stage,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        what: &str,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, FetchError> {
        let client = self.guarded_client(transport.insecure);
        let request = || {
            let r = client.get(url);
            match accept {
                Some(a) => r.header(reqwest::header::ACCEPT, a),
                None => r,
            }
        };
        let (authorized, cached) = self
            .authorize(request(), stage, transport, reference, auth, what)
            .await?;
        let resp = authorized
            .send()
            .await
            .map_err(|e| stage.send_error(what, e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED || !cached {
            return Ok(resp);
        }
        lock(&self.tokens).remove(&token_key(reference, auth));
        let (authorized, _) = self
            .authorize(request(), stage, transport, reference, auth, what)
            .await?;
        authorized
            .send()
            .await
            .map_err(|e| stage.send_error(what, e))
    }

    /// Adds the registry's credentials to a request for `reference`, as oci-client would: a
    /// given bearer token as is; basic credentials when the registry asks for basic; else a
    /// pull token from the challenge's realm (cached until shortly before it expires). Also
    /// says whether the token came from the cache.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        stage: Stage,
        transport: Transport,
        reference: &Reference,
        auth: &RegistryAuth,
        what: &str,
    ) -> Result<(reqwest::RequestBuilder, bool), FetchError> {
        if let RegistryAuth::Bearer(token) = auth {
            return Ok((request.bearer_auth(token), false));
        }
        let registry = reference.resolve_registry();
        let challenge = self.challenge(registry, transport).await?;
        let (realm, service) = match (challenge, auth) {
            (Challenge::Basic, RegistryAuth::Basic(user, pass)) => {
                return Ok((request.basic_auth(user, Some(pass)), false));
            }
            (Challenge::None | Challenge::Basic, _) => return Ok((request, false)),
            (Challenge::Bearer { realm, service }, _) => (realm, service),
        };
        let key = token_key(reference, auth);
        let cached = lock(&self.tokens)
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(token, _)| token.clone());
        if let Some(token) = cached {
            return Ok((request.bearer_auth(token), true));
        }
        let mut query = vec![(
            "scope",
            format!("repository:{}:pull", reference.repository()),
        )];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut ask = self
            .guarded_client(transport.insecure)
            .get(&realm)
            .query(&query);
        if let RegistryAuth::Basic(user, pass) = auth {
            ask = ask.basic_auth(user, Some(pass));
        }
        let resp = ask.send().await.map_err(|e| stage.send_error(what, e))?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let detail = format!("the token server answered {status}");
            let e = if status.is_server_error() {
                OciDistributionError::ServerError {
                    code: status.as_u16(),
                    url: realm,
                    message: detail,
                }
            } else {
                OciDistributionError::AuthenticationFailure(detail)
            };
            return Err(stage.registry(what, e));
        }
        let body = read_body(stage, resp, MAX_TOKEN_RESPONSE, what).await?;
        let not_a_token = |detail: String| FetchError::Auth {
            reference: what.to_owned(),
            detail: format!("the token server's answer is not a token: {detail}"),
        };
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| not_a_token(e.to_string()))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| not_a_token("no token".to_owned()))?;
        // Stop using it a little early: a token that expires in flight costs a failed request.
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .mul_f64(0.9);
        lock(&self.tokens).insert(key, (token.clone(), Instant::now() + lifetime));
        Ok((request.bearer_auth(token), false))
    }
}

fn token_key(reference: &Reference, auth: &RegistryAuth) -> TokenKey {
    TokenKey {
        registry: reference.resolve_registry().to_owned(),
        repository: reference.repository().to_owned(),
        auth: fingerprint(auth),
    }
}
