//! Core `v1` Secret, with values that never print.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::meta::ObjectMeta;
use crate::validate::Problems;

/// Secret type of TLS certificate + key (`tls.crt`, `tls.key`).
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";
/// Secret type of registry credentials (`.dockerconfigjson`).
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// Bytes of a Secret. `Debug`, `Display` and `Serialize` print `<redacted N bytes>`, never the value;
/// the only way to the bytes is [`SecretBytes::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

// === impl SecretBytes ===

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret value. Call only where the value is used (TLS, registry auth), never to log.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A core `v1` Secret. `data` holds the decoded `data` merged with `stringData` (which wins, as in
/// Kubernetes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Secret {
    pub metadata: ObjectMeta,
    /// `type`, default `Opaque`.
    #[serde(rename = "type")]
    pub secret_type: String,
    pub data: BTreeMap<String, SecretBytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

// === impl Secret ===

impl Secret {
    pub fn get(&self, key: &str) -> Option<&SecretBytes> {
        self.data.get(key)
    }

    pub fn is_tls(&self) -> bool {
        self.secret_type == SECRET_TYPE_TLS
    }

    pub fn is_docker_config_json(&self) -> bool {
        self.secret_type == SECRET_TYPE_DOCKER_CONFIG_JSON
    }

    /// `tls.crt` and `tls.key` (PEM) of a `kubernetes.io/tls` Secret.
    pub fn tls_pair(&self) -> Option<(&SecretBytes, &SecretBytes)> {
        Some((
            self.data.get(TLS_CERT_KEY)?,
            self.data.get(TLS_PRIVATE_KEY_KEY)?,
        ))
    }

    /// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret.
    pub fn docker_config_json(&self) -> Option<&SecretBytes> {
        self.data.get(DOCKER_CONFIG_JSON_KEY)
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        for key in self.data.keys() {
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            {
                p.error(
                    format!("data[{key}]"),
                    "key must consist of alphanumeric characters, '-', '_' or '.'",
                );
            }
        }
        match self.secret_type.as_str() {
            SECRET_TYPE_TLS => {
                self.require_pem(
                    p,
                    TLS_CERT_KEY,
                    |s| s.contains("-----BEGIN CERTIFICATE-----"),
                    "CERTIFICATE",
                );
                self.require_pem(
                    p,
                    TLS_PRIVATE_KEY_KEY,
                    |s| s.contains("-----BEGIN ") && s.contains("PRIVATE KEY-----"),
                    "PRIVATE KEY",
                );
            }
            SECRET_TYPE_DOCKER_CONFIG_JSON => match self.data.get(DOCKER_CONFIG_JSON_KEY) {
                None => p.error(
                    format!("data[{DOCKER_CONFIG_JSON_KEY}]"),
                    "required for type kubernetes.io/dockerconfigjson",
                ),
                Some(v) => match serde_json::from_slice::<serde_json::Value>(v.expose()) {
                    // serde_json's message names line/column only, never the content.
                    Err(e) => p.error(
                        format!("data[{DOCKER_CONFIG_JSON_KEY}]"),
                        format!("not valid JSON: {e}"),
                    ),
                    Ok(json) if !json.get("auths").is_some_and(|a| a.is_object()) => p.error(
                        format!("data[{DOCKER_CONFIG_JSON_KEY}]"),
                        "must be a JSON object with an \"auths\" object",
                    ),
                    Ok(_) => {}
                },
            },
            // Kubernetes' own checks for the other built-in types.
            "kubernetes.io/dockercfg" => match self.data.get(".dockercfg") {
                None => p.error(
                    "data[.dockercfg]",
                    "required for type kubernetes.io/dockercfg",
                ),
                Some(v)
                    if !serde_json::from_slice::<serde_json::Value>(v.expose())
                        .is_ok_and(|j| j.is_object()) =>
                {
                    p.error("data[.dockercfg]", "must be a JSON object")
                }
                Some(_) => {}
            },
            "kubernetes.io/basic-auth"
                if !self.data.contains_key("username") && !self.data.contains_key("password") =>
            {
                p.error(
                    "data",
                    "type kubernetes.io/basic-auth requires username or password",
                );
            }
            "kubernetes.io/ssh-auth" if !self.data.contains_key("ssh-privatekey") => {
                p.error(
                    "data[ssh-privatekey]",
                    "required for type kubernetes.io/ssh-auth",
                );
            }
            _ => {}
        }
    }

    fn require_pem(&self, p: &mut Problems, key: &str, check: impl Fn(&str) -> bool, block: &str) {
        let field = format!("data[{key}]");
        if p.errors.iter().any(|(f, _)| *f == field) {
            return; // already reported (bad base64)
        }
        match self.data.get(key) {
            None => p.error(field, format!("required for type {SECRET_TYPE_TLS}")),
            Some(v) if !check(&String::from_utf8_lossy(v.expose())) => {
                p.error(field, format!("must contain a PEM {block} block"))
            }
            Some(_) => {}
        }
    }
}

/// The document as written; turned into [`Secret`] by decoding `data`. Not `Debug`: it holds values.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SecretDocument {
    #[allow(
        dead_code,
        reason = "checked before deserializing; present so that deny_unknown_fields accepts it"
    )]
    api_version: String,
    #[allow(
        dead_code,
        reason = "checked before deserializing; present so that deny_unknown_fields accepts it"
    )]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, rename = "type")]
    secret_type: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, SecretText>,
    #[serde(default)]
    string_data: BTreeMap<String, SecretText>,
    #[serde(default)]
    immutable: Option<bool>,
}

impl SecretDocument {
    /// Decodes `data` (base64) and merges `stringData` over it. Bad base64 is reported naming the
    /// key and the offset, never the content.
    pub(crate) fn into_secret(self, p: &mut Problems) -> Secret {
        let mut data = BTreeMap::new();
        for (key, SecretText(text)) in self.data {
            // Kubernetes' base64 is standard with padding; tolerate line breaks as `kubectl` output has none
            // but hand-written multi-line YAML scalars may.
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
                Ok(bytes) => {
                    data.insert(key, SecretBytes(bytes));
                }
                Err(e) => p.error(
                    format!("data[{key}]"),
                    format!("invalid base64: {}", describe_base64_error(&e)),
                ),
            }
        }
        for (key, SecretText(text)) in self.string_data {
            data.insert(key, SecretBytes(text.into_bytes()));
        }
        Secret {
            metadata: self.metadata.normalized(),
            secret_type: self
                .secret_type
                .unwrap_or_else(|| SECRET_TYPE_OPAQUE.to_owned()),
            data,
            immutable: self.immutable,
        }
    }
}

// base64's Display for InvalidByte prints the byte, which is part of the secret.
fn describe_base64_error(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("invalid character at offset {offset}")
        }
        base64::DecodeError::InvalidLength(_) => "invalid length".to_owned(),
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("invalid last symbol at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "invalid padding".to_owned(),
    }
}

/// A string value of `data`/`stringData`. Its deserializer's errors never include the value.
struct SecretText(String);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretText, E> {
                Ok(SecretText(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<SecretText, E> {
                Ok(SecretText(String::new()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretText, E> {
                Err(E::custom("must be a string (quote the value)"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretText, E> {
                Err(E::custom("must be a string (quote the value)"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretText, E> {
                Err(E::custom("must be a string (quote the value)"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretText, E> {
                Err(E::custom("must be a string (quote the value)"))
            }
        }
        d.deserialize_any(V)
    }
}
