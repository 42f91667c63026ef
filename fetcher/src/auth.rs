//! Registry credentials: a `kubernetes.io/dockerconfigjson` pull secret or the docker config
//! file (istio-wasm.md §2.9).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::error::FetchError;
use crate::options::DockerConfigSource;

/// Docker Hub's canonical credential key, as docker/cli and go-containerregistry use it.
const DOCKER_HUB_KEY: &str = "index.docker.io";

/// Username ACR and others expect with an identity (refresh) token in basic authentication.
const TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// A parsed docker `config.json` / `.dockerconfigjson`. `Debug` shows only registry names.
#[derive(Clone, Default)]
pub struct DockerConfig {
    /// Normalised registry host → credential.
    auths: BTreeMap<String, Credential>,
}

#[derive(Clone, Default, Deserialize)]
struct RawEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

#[derive(Clone)]
enum Credential {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, Option<RawEntry>>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("registries", &self.auths.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DockerConfig {
    /// Parses docker config JSON (`{"auths": {"<registry>": {"auth": base64(user:pass)} |
    /// {"username", "password"} | {"identitytoken"} | {"registrytoken"}}}`). An empty entry means
    /// anonymous; a `null` entry is an error, as in docker/cli. Errors never quote the input.
    pub fn from_json(json: &[u8], origin: &str) -> Result<Self, FetchError> {
        let bad = |reason: String| FetchError::Credentials {
            origin: origin.to_owned(),
            reason,
        };
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| {
            // serde's message can quote the offending value; keep only the position.
            bad(format!(
                "not docker config JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let mut auths = BTreeMap::new();
        for (key, entry) in raw.auths {
            let entry = entry.ok_or_else(|| bad(format!("entry for {key:?} is null")))?;
            let credential = if let Some(token) = entry.registrytoken.filter(|t| !t.is_empty()) {
                Credential::Bearer(token)
            } else if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
                // The token request is a GET (no OAuth2 refresh-token grant); registries that
                // issue identity tokens (ACR) accept them as the password of basic auth there.
                let user = entry
                    .username
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| TOKEN_USERNAME.to_owned());
                Credential::Basic(user, token)
            } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad(format!("\"auth\" of {key:?} is not base64")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| bad(format!("\"auth\" of {key:?} is not UTF-8")))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad(format!("\"auth\" of {key:?} is not user:password")))?;
                Credential::Basic(user.to_owned(), pass.to_owned())
            } else if let Some(user) = entry.username.filter(|u| !u.is_empty()) {
                Credential::Basic(user, entry.password.unwrap_or_default())
            } else {
                Credential::Anonymous
            };
            auths.insert(normalize_registry(&key), credential);
        }
        Ok(Self { auths })
    }

    /// Reads and parses a docker config file; `Ok(None)` when it does not exist.
    pub fn from_file(path: &Path) -> Result<Option<Self>, FetchError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_json(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FetchError::Credentials {
                origin: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// A config with one basic-auth entry, e.g. from `wasmgate push --username --password-stdin`.
    pub fn basic(registry: &str, username: &str, password: &str) -> Self {
        let mut auths = BTreeMap::new();
        auths.insert(
            normalize_registry(registry),
            Credential::Basic(username.to_owned(), password.to_owned()),
        );
        Self { auths }
    }

    /// Registries this config has entries for (normalised host names).
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }

    /// The credential for `registry` (`host[:port]`), if the config has an entry for it.
    pub(crate) fn resolve(&self, registry: &str) -> Option<RegistryAuth> {
        self.auths
            .get(&normalize_registry(registry))
            .map(|c| match c {
                Credential::Anonymous => RegistryAuth::Anonymous,
                Credential::Basic(u, p) => RegistryAuth::Basic(u.clone(), p.clone()),
                Credential::Bearer(t) => RegistryAuth::Bearer(t.clone()),
            })
    }
}

/// `https://index.docker.io/v1/`, `docker.io`, `registry-1.docker.io` → `index.docker.io`;
/// `http://host:5000/v2/` → `host:5000`.
fn normalize_registry(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB_KEY.to_owned()
        }
        _ => host,
    }
}

/// The docker config file to read when a request has no pull secret.
pub(crate) fn docker_config_path(source: &DockerConfigSource) -> Option<PathBuf> {
    match source {
        DockerConfigSource::Disabled => None,
        DockerConfigSource::File(p) => Some(p.clone()),
        DockerConfigSource::Environment => match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
            _ => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".docker").join("config.json")),
        },
    }
}

/// Credentials for `registry`: the pull secret's entry (anonymous when it has none, as Istio's
/// keychain), else the docker config file's, else anonymous.
pub(crate) fn credentials_for(
    registry: &str,
    pull_secret: Option<&DockerConfig>,
    source: &DockerConfigSource,
) -> Result<RegistryAuth, FetchError> {
    if let Some(secret) = pull_secret {
        return Ok(secret.resolve(registry).unwrap_or(RegistryAuth::Anonymous));
    }
    let Some(path) = docker_config_path(source) else {
        return Ok(RegistryAuth::Anonymous);
    };
    Ok(DockerConfig::from_file(&path)?
        .and_then(|c| c.resolve(registry))
        .unwrap_or(RegistryAuth::Anonymous))
}

/// A stable, non-reversible name for a credential, to key per-credential registry clients.
pub(crate) fn fingerprint(auth: &RegistryAuth) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match auth {
        RegistryAuth::Anonymous => h.update(b"anonymous"),
        RegistryAuth::Basic(u, p) => {
            h.update(b"basic\0");
            h.update(u.as_bytes());
            h.update(b"\0");
            h.update(p.as_bytes());
        }
        RegistryAuth::Bearer(t) => {
            h.update(b"bearer\0");
            h.update(t.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_entry_kinds_and_redacts() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpzM2NyZXQ="},
            "127.0.0.1:5000":{"username":"bob","password":"hunter2"},
            "acr.example":{"identitytoken":"tok-xyz"},
            "anon.example":{}
        }}"#;
        let c = DockerConfig::from_json(json, "test").unwrap();
        assert_eq!(
            c.resolve("docker.io"),
            Some(RegistryAuth::Basic("user".into(), "s3cret".into()))
        );
        assert_eq!(
            c.resolve("127.0.0.1:5000"),
            Some(RegistryAuth::Basic("bob".into(), "hunter2".into()))
        );
        assert_eq!(
            c.resolve("acr.example"),
            Some(RegistryAuth::Basic(TOKEN_USERNAME.into(), "tok-xyz".into()))
        );
        assert_eq!(c.resolve("anon.example"), Some(RegistryAuth::Anonymous));
        assert_eq!(c.resolve("other"), None);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("s3cret") && !dbg.contains("tok-xyz"));
    }

    #[test]
    fn errors_do_not_quote_secrets() {
        let err =
            DockerConfig::from_json(br#"{"auths":{"h":{"auth":"hunter2!!"}}}"#, "secret ns/x")
                .unwrap_err()
                .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = DockerConfig::from_json(br#"{"auths":{"h":{"password":hunter2}}}"#, "x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(DockerConfig::from_json(br#"{"auths":{"h":null}}"#, "x").is_err());
    }
}
