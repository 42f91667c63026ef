//! One file's text in, typed and validated documents out. No filesystem here: tests feed strings.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ConfigError;
use crate::gateway::{Gateway, GatewaySpec};
use crate::meta::{DEFAULT_NAMESPACE, Kind, NamespacedName, ObjectMeta, ResourceKey};
use crate::namespace::{Namespace, NamespaceSpec};
use crate::reference_grant::{ReferenceGrant, ReferenceGrantSpec};
use crate::route::{HttpRoute, HttpRouteSpec};
use crate::secret::{Secret, SecretDocument};
use crate::service::{Service, ServiceSpec};
use crate::service_mesh_extension::{ServiceMeshExtensionSpec, translate as translate_sme};
use crate::validate::{Problems, check_metadata};
use crate::wasm_plugin::{WasmPlugin, WasmPluginSpec};

/// A resource of a kind wasmgate acts on.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived parse output; boxing would only complicate matching"
)]
pub enum Resource {
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    Service(Service),
    Secret(Secret),
    WasmPlugin(WasmPlugin),
    ReferenceGrant(ReferenceGrant),
    Namespace(Namespace),
}

impl Resource {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Gateway(r) => &r.metadata,
            Resource::HttpRoute(r) => &r.metadata,
            Resource::Service(r) => &r.metadata,
            Resource::Secret(r) => &r.metadata,
            Resource::WasmPlugin(r) => &r.metadata,
            Resource::ReferenceGrant(r) => &r.metadata,
            Resource::Namespace(r) => &r.metadata,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Resource::Gateway(_) => Kind::Gateway,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::Service(_) => Kind::Service,
            Resource::Secret(_) => Kind::Secret,
            Resource::WasmPlugin(_) => Kind::WasmPlugin,
            Resource::ReferenceGrant(_) => Kind::ReferenceGrant,
            Resource::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn key(&self) -> ResourceKey {
        let m = self.metadata();
        ResourceKey::new(self.kind(), &m.namespace, &m.name)
    }
}

/// What one YAML document turned out to be.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived parse output; boxing would only complicate matching"
)]
pub enum Document {
    /// A kind wasmgate understands, valid: `warnings` are non-fatal notes (ignored fields, deprecations).
    Valid {
        resource: Resource,
        warnings: Vec<ConfigError>,
    },
    /// A kind wasmgate understands, with at least one error. `key` names it so the last good version
    /// can stay in force.
    Invalid {
        key: ResourceKey,
        errors: Vec<ConfigError>,
        warnings: Vec<ConfigError>,
    },
    /// Not a resource at all, or one that cannot be identified (no `kind`, no `metadata.name`, ...).
    Unidentified { errors: Vec<ConfigError> },
    /// A kind (or apiVersion) wasmgate does not act on. Never an error.
    Ignored(IgnoredDocument),
}

/// A document of a kind wasmgate does not act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IgnoredDocument {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Why, for the log line.
    pub reason: String,
}

/// A parsed file: `(document index, document)` for every non-empty document.
pub type ParsedFile = Vec<(usize, Document)>;

/// Parses every document of one file. `Err` is a file-level failure (YAML syntax, naming the line
/// and column): the caller keeps the file's last good resources.
pub fn parse_file(file: &Path, contents: &str) -> Result<ParsedFile, ConfigError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(contents).enumerate() {
        let mut value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| ConfigError::file(file, format!("invalid YAML: {e}")))?;
        value
            .apply_merge()
            .map_err(|e| ConfigError::file(file, format!("invalid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        out.push((index, parse_document(file, index, value)));
    }
    Ok(out)
}

/// Parses one document given as a YAML value.
pub fn parse_document(file: &Path, index: usize, value: serde_yaml::Value) -> Document {
    let err = |resource: Option<String>, field: Option<&str>, msg: String| {
        ConfigError::at(file, Some(index), resource, field.map(str::to_owned), msg)
    };
    let Some(map) = value.as_mapping() else {
        return Document::Unidentified {
            errors: vec![err(
                None,
                None,
                "document must be a mapping with apiVersion and kind".into(),
            )],
        };
    };
    let text = |k: &str| {
        map.get(k)
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned)
    };
    let meta = map.get("metadata");
    let meta_text = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned)
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let name = meta_text("name").unwrap_or_default();
    // An empty namespace means the default one, as in `kubectl apply`.
    let namespace = meta_text("namespace")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let (api_version, kind) = match (api_version, kind) {
        (Some(a), Some(k)) if !a.is_empty() && !k.is_empty() => (a, k),
        (a, k) => {
            let mut errors = Vec::new();
            let label = (!name.is_empty()).then(|| format!("{namespace}/{name}"));
            if a.is_none_or(|a| a.is_empty()) {
                errors.push(err(label.clone(), Some("apiVersion"), "required".into()));
            }
            if k.is_none_or(|k| k.is_empty()) {
                errors.push(err(label, Some("kind"), "required".into()));
            }
            return Document::Unidentified { errors };
        }
    };
    let Some(known) = Kind::from_type_meta(&api_version, &kind) else {
        let reason = if [
            "Gateway",
            "HTTPRoute",
            "Service",
            "Secret",
            "WasmPlugin",
            "ReferenceGrant",
            "Namespace",
        ]
        .contains(&kind.as_str())
        {
            format!("apiVersion {api_version} of {kind} is not supported")
        } else {
            format!("kind {kind} is not used by wasmgate")
        };
        return Document::Ignored(IgnoredDocument {
            api_version,
            kind,
            namespace,
            name,
            reason,
        });
    };
    // A cluster-scoped object (a Namespace) is in no namespace; one given is ignored (warned below).
    let given_namespace = meta_text("namespace").filter(|n| !n.is_empty());
    let namespace = if known.is_cluster_scoped() {
        String::new()
    } else {
        namespace
    };
    if name.is_empty() {
        let label = if known.is_cluster_scoped() {
            format!("{kind} (unnamed)")
        } else {
            format!("{kind} (unnamed, namespace {namespace})")
        };
        return Document::Unidentified {
            errors: vec![err(Some(label), Some("metadata.name"), "required".into())],
        };
    }
    let label = format!("{kind} {}", NamespacedName::new(&namespace, &name));
    // A ServiceMeshExtension is served as the WasmPlugin it translates to: same identity.
    let key_kind = if known == Kind::ServiceMeshExtension {
        Kind::WasmPlugin
    } else {
        known
    };
    let key = ResourceKey::new(key_kind, &namespace, &name);
    let mut p = Problems::default();
    let resource = match known {
        Kind::Gateway => typed::<GatewaySpec>(value, &mut p, true).map(|(metadata, spec)| {
            let r = Gateway { metadata, spec };
            r.validate(&mut p);
            Resource::Gateway(r)
        }),
        Kind::HttpRoute => typed::<HttpRouteSpec>(value, &mut p, true).map(|(metadata, spec)| {
            let mut r = HttpRoute { metadata, spec };
            r.normalize();
            r.validate(&mut p);
            Resource::HttpRoute(r)
        }),
        Kind::Service => typed::<ServiceSpec>(value, &mut p, false).map(|(metadata, spec)| {
            let r = Service { metadata, spec };
            r.validate(&mut p);
            Resource::Service(r)
        }),
        Kind::WasmPlugin => typed::<WasmPluginSpec>(value, &mut p, true).map(|(metadata, spec)| {
            let mut r = WasmPlugin { metadata, spec };
            r.validate(&mut p);
            r.normalize();
            Resource::WasmPlugin(r)
        }),
        Kind::Secret => {
            let doc = deserialize::<SecretDocument>(value, &mut p);
            // serde quotes the offending value ("invalid type: string \"...\""): in a Secret that
            // may be the secret itself.
            for (_, msg) in &mut p.errors {
                *msg = redact_values(msg);
            }
            doc.map(|doc| {
                let r: Secret = doc.into_secret(&mut p);
                r.validate(&mut p);
                Resource::Secret(r)
            })
        }
        Kind::ReferenceGrant => {
            typed::<ReferenceGrantSpec>(value, &mut p, true).map(|(metadata, spec)| {
                let r = ReferenceGrant { metadata, spec };
                r.validate(&mut p);
                Resource::ReferenceGrant(r)
            })
        }
        Kind::Namespace => typed::<NamespaceSpec>(value, &mut p, false).map(|(metadata, spec)| {
            if given_namespace.is_some() {
                p.warn(
                    "metadata.namespace",
                    "ignored: a Namespace is cluster-scoped",
                );
            }
            let r = Namespace {
                metadata: ObjectMeta {
                    namespace: String::new(),
                    ..metadata
                },
                spec,
            };
            r.validate(&mut p);
            Resource::Namespace(r)
        }),
        Kind::ServiceMeshExtension => {
            typed::<ServiceMeshExtensionSpec>(value, &mut p, true).map(|(metadata, spec)| {
                let mut r = translate_sme(metadata, spec, &mut p);
                r.normalize();
                Resource::WasmPlugin(r)
            })
        }
    };
    if let Some(r) = &resource {
        check_metadata(&mut p, r.metadata(), r.kind().is_cluster_scoped());
    }
    // serde's errors come first; drop later ones about the same fields (their value was removed).
    let n = p.serde_fields.len().min(p.errors.len());
    let later: Vec<(String, String)> = p.errors.drain(n..).collect();
    p.errors.extend(
        later
            .into_iter()
            .filter(|(f, _)| !p.serde_fields.iter().any(|sf| overlaps(f, sf))),
    );
    let to_errors = |list: Vec<(String, String)>| {
        list.into_iter()
            .map(|(field, msg)| err(Some(label.clone()), Some(field.as_str()), msg))
            .collect::<Vec<_>>()
    };
    let errors = to_errors(p.errors);
    let warnings = to_errors(p.warnings);
    match resource {
        Some(resource) if errors.is_empty() => Document::Valid { resource, warnings },
        _ => Document::Invalid {
            key,
            errors,
            warnings,
        },
    }
}

/// Drops the values serde quotes in its messages (`string "x"`, `integer `5``, ...).
fn redact_values(msg: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r#"(string|integer|floating point|boolean|character|bytes) (?:"(?:[^"\\]|\\.)*"|`[^`]*`)"#,
        )
        .unwrap_or_else(|e| panic!("static regex: {e}"))
    });
    re.replace_all(msg, "$1 (value hidden)").into_owned()
}

/// The shape shared by every kind with a `spec`. `status` is accepted and dropped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TypedDocument<S> {
    #[allow(
        dead_code,
        reason = "read before deserializing; declared so deny_unknown_fields accepts it"
    )]
    api_version: String,
    #[allow(
        dead_code,
        reason = "read before deserializing; declared so deny_unknown_fields accepts it"
    )]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[serde(default)]
    #[allow(dead_code, reason = "accepted and ignored")]
    status: Option<serde::de::IgnoredAny>,
}

fn typed<S: DeserializeOwned + Default>(
    value: serde_yaml::Value,
    p: &mut Problems,
    spec_required: bool,
) -> Option<(ObjectMeta, S)> {
    let doc = deserialize::<TypedDocument<S>>(value, p)?;
    let spec = match doc.spec {
        Some(spec) => spec,
        None if spec_required => {
            p.error("spec", "required");
            return None;
        }
        None => S::default(),
    };
    Some((doc.metadata.normalized(), spec))
}

/// serde with the failing field's path. serde stops at its first error; to report every typo at
/// once, the offending key is removed and deserialization retried (a missing field, or an error
/// inside a list item, ends the retries). The document is invalid either way: the retries only
/// find more problems, and their fields are recorded so `validate` does not report them twice.
fn deserialize<T: DeserializeOwned>(mut value: serde_yaml::Value, p: &mut Problems) -> Option<T> {
    for _ in 0..=MAX_SERDE_ERRORS {
        match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(v) => return Some(v),
            Err(e) => {
                let removable = remove_at(&mut value, e.path());
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let message = e.into_inner().to_string();
                let missing = message.starts_with("missing field");
                let (field, message) = refine(path, message);
                // A removed invalid value comes back as "missing": already reported.
                if missing && p.serde_fields.contains(&field) {
                    return None;
                }
                p.serde_fields.push(field.clone());
                p.error(field, message);
                if missing || !removable {
                    return None;
                }
            }
        }
    }
    None
}

/// Most serde errors reported for one document.
const MAX_SERDE_ERRORS: usize = 32;

/// Removes the mapping key `path` ends with. `false` when the path does not end with a key.
fn remove_at(value: &mut serde_yaml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        node = match (seg, node) {
            (Segment::Map { key }, serde_yaml::Value::Mapping(m)) => {
                match m.iter_mut().find(|(k, _)| key_matches(k, key)) {
                    Some((_, v)) => v,
                    None => return false,
                }
            }
            (Segment::Seq { index }, serde_yaml::Value::Sequence(s)) => match s.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    let serde_yaml::Value::Mapping(m) = node else {
        return false;
    };
    let Some(k) = m.keys().find(|k| key_matches(k, key)).cloned() else {
        return false;
    };
    m.remove(&k).is_some()
}

fn key_matches(k: &serde_yaml::Value, key: &str) -> bool {
    match k {
        serde_yaml::Value::String(s) => s == key,
        serde_yaml::Value::Number(n) => n.to_string() == key,
        serde_yaml::Value::Bool(b) => b.to_string() == key,
        _ => false,
    }
}

/// Whether `field` is `serde_field` or inside it.
fn overlaps(field: &str, serde_field: &str) -> bool {
    field
        .strip_prefix(serde_field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Moves the field name of serde's "unknown field `x`" / "missing field `x`" into the path.
fn refine(path: String, message: String) -> (String, String) {
    // serde_path_to_error already ends the path with an unknown field's name, not a missing one's.
    let join = |name: &str| {
        if path.is_empty() || path == name {
            name.to_owned()
        } else if path.ends_with(&format!(".{name}")) {
            path.clone()
        } else {
            format!("{path}.{name}")
        }
    };
    for (prefix, replacement) in [
        ("unknown field `", "unknown field"),
        ("missing field `", "required"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((name, tail)) = rest.split_once('`')
        {
            let tail = tail.trim_start_matches(',').trim();
            let message = if tail.is_empty() {
                replacement.to_owned()
            } else {
                format!("{replacement} ({tail})")
            };
            return (join(name), message);
        }
    }
    (
        if path.is_empty() {
            "(document)".to_owned()
        } else {
            path
        },
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_values_are_redacted() {
        assert_eq!(
            redact_values(r#"invalid type: string "hunter2 \"x\"", expected a map"#),
            "invalid type: string (value hidden), expected a map"
        );
        assert_eq!(
            redact_values("invalid type: integer `42`, expected a map"),
            "invalid type: integer (value hidden), expected a map"
        );
        assert_eq!(
            redact_values("missing field `name`"),
            "missing field `name`"
        );
    }

    #[test]
    fn refine_moves_field_names_into_the_path() {
        assert_eq!(
            refine(
                "spec.rules[0]".into(),
                "unknown field `matchs`, expected one of `name`, `matches`".into()
            ),
            (
                "spec.rules[0].matchs".into(),
                "unknown field (expected one of `name`, `matches`)".into()
            )
        );
        assert_eq!(
            refine("spec.listeners[0]".into(), "missing field `port`".into()),
            ("spec.listeners[0].port".into(), "required".into())
        );
        assert_eq!(
            refine(
                "spec.prots".into(),
                "unknown field `prots`, expected `ports`".into()
            ),
            (
                "spec.prots".into(),
                "unknown field (expected `ports`)".into()
            )
        );
        assert_eq!(
            refine(String::new(), "missing field `kind`".into()),
            ("kind".into(), "required".into())
        );
    }
}
