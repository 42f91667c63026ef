//! Maistra's `ServiceMeshExtension` (`maistra.io/v1`, and `v1alpha1` of Maistra 2.0), the predecessor of `WasmPlugin`: accepted,
//! translated to its WasmPlugin equivalent (with a deprecation warning) as Maistra's migration
//! guide maps it, and printable as WasmPlugin YAML (`wasmgate convert`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::meta::ObjectMeta;
use crate::parse::{Document, Resource};
use crate::validate::Problems;
use crate::wasm_plugin::{PluginPhase, PullPolicy, WasmPlugin, WasmPluginSpec, WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMeshExtensionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<SmeWorkloadSelector>,
    /// Any JSON object (a string holding a JSON object is accepted, as Maistra 1.x wrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// OCI image reference of the module (no scheme).
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// `PreAuthN`, `PostAuthN`, `PreAuthZ`, `PostAuthZ`, `PreStats`, `PostStats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Accepted (newer Maistra releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmeWorkloadSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

/// Maistra's phase table: Pre/PostAuthN, Pre/PostAuthZ, Pre/PostStats onto WasmPlugin's phases.
pub fn translate_phase(phase: &str) -> Option<PluginPhase> {
    Some(match phase {
        "PreAuthN" => PluginPhase::Authn,
        "PostAuthN" | "PreAuthZ" => PluginPhase::Authz,
        "PostAuthZ" | "PreStats" => PluginPhase::Stats,
        "PostStats" => PluginPhase::Unspecified,
        _ => return None,
    })
}

/// The WasmPlugin a ServiceMeshExtension stands for. Problems are reported with the
/// ServiceMeshExtension's field names.
pub(crate) fn translate(
    metadata: ObjectMeta,
    sme: ServiceMeshExtensionSpec,
    p: &mut Problems,
) -> WasmPlugin {
    if sme.image.is_empty() {
        p.error("spec.image", "required");
    }
    let phase = match sme.phase.as_deref() {
        None => PluginPhase::Unspecified,
        Some(s) => translate_phase(s).unwrap_or_else(|| {
            p.error(
                "spec.phase",
                format!("unknown phase {s:?} (PreAuthN, PostAuthN, PreAuthZ, PostAuthZ, PreStats or PostStats)"),
            );
            PluginPhase::Unspecified
        }),
    };
    let image_pull_policy = match sme.image_pull_policy.as_deref() {
        None | Some("") => PullPolicy::Unspecified,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        Some("Always") => PullPolicy::Always,
        Some(other) => {
            p.error(
                "spec.imagePullPolicy",
                format!("{other:?} has no WasmPlugin equivalent (IfNotPresent or Always)"),
            );
            PullPolicy::Unspecified
        }
    };
    if sme.image_pull_secrets.len() > 1 {
        p.warn(
            "spec.imagePullSecrets",
            "WasmPlugin takes one pull secret: only the first is used",
        );
    }
    let plugin_config = match sme.config {
        None => None,
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => None,
        Some(serde_json::Value::String(s)) => match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(v @ serde_json::Value::Object(_)) => Some(v),
            _ => {
                p.error(
                    "spec.config",
                    "a string config must hold a JSON object to become WasmPlugin pluginConfig",
                );
                None
            }
        },
        Some(v) => Some(v),
    };
    let image = sme.image;
    let url = if image.is_empty() || image.contains("://") {
        image
    } else {
        format!("oci://{image}")
    };
    let spec = WasmPluginSpec {
        selector: sme.workload_selector.map(|s| WorkloadSelector {
            match_labels: s.labels,
        }),
        url,
        sha256: sme.sha256,
        image_pull_policy,
        image_pull_secret: sme.image_pull_secrets.into_iter().next().map(|r| r.name),
        plugin_config,
        phase,
        priority: sme.priority,
        ..WasmPluginSpec::default()
    };
    let plugin = WasmPlugin { metadata, spec };
    let mut wp = Problems::default();
    plugin.validate(&mut wp);
    let rename = |field: String| {
        for (from, to) in [
            ("spec.selector.matchLabels", "spec.workloadSelector.labels"),
            ("spec.pluginConfig", "spec.config"),
            ("spec.url", "spec.image"),
            ("spec.imagePullSecret", "spec.imagePullSecrets[0].name"),
        ] {
            if let Some(rest) = field.strip_prefix(from) {
                return format!("{to}{rest}");
            }
        }
        field
    };
    // An empty image is already reported as spec.image.
    for (f, m) in wp.errors {
        if !(f == "spec.url" && plugin.spec.url.is_empty()) {
            p.error(rename(f), m);
        }
    }
    for (f, m) in wp.warnings {
        p.warn(rename(f), m);
    }
    p.warn(
        "kind",
        format!(
            "ServiceMeshExtension is deprecated: served as WasmPlugin {}/{} (`wasmgate convert` prints it)",
            plugin.metadata.namespace, plugin.metadata.name
        ),
    );
    plugin
}

/// `wasmgate convert FILE`: the WasmPlugin YAML of every ServiceMeshExtension in `contents`
/// (documents separated by `---`). Errors name the ServiceMeshExtension's fields; a file without
/// any ServiceMeshExtension is an error too.
pub fn convert_service_mesh_extensions(
    file: &Path,
    contents: &str,
) -> Result<String, Vec<ConfigError>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(contents).enumerate() {
        let mut value = serde_yaml::Value::deserialize(doc)
            .and_then(|mut v| v.apply_merge().map(|()| v))
            .map_err(|e| vec![ConfigError::file(file, format!("invalid YAML: {e}"))])?;
        let field = |k: &str| {
            value
                .get(k)
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or("")
        };
        let is_sme = crate::meta::Kind::from_type_meta(field("apiVersion"), field("kind"))
            == Some(crate::meta::Kind::ServiceMeshExtension);
        if !is_sme {
            continue;
        }
        match crate::parse::parse_document(file, index, std::mem::take(&mut value)) {
            Document::Valid {
                resource: Resource::WasmPlugin(w),
                ..
            } => out.push(wasm_plugin_yaml(&w)),
            Document::Invalid { errors: e, .. } | Document::Unidentified { errors: e } => {
                errors.extend(e)
            }
            Document::Valid { .. } | Document::Ignored(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if out.is_empty() {
        return Err(vec![ConfigError::file(
            file,
            "no ServiceMeshExtension (maistra.io/v1) in this file",
        )]);
    }
    Ok(out.join("---\n"))
}

fn wasm_plugin_yaml(w: &WasmPlugin) -> String {
    use serde_json::{Map, Value, json};
    let mut meta = Map::new();
    meta.insert("name".into(), json!(w.metadata.name));
    meta.insert("namespace".into(), json!(w.metadata.namespace));
    if !w.metadata.labels.is_empty() {
        meta.insert("labels".into(), json!(w.metadata.labels));
    }
    if !w.metadata.annotations.is_empty() {
        meta.insert("annotations".into(), json!(w.metadata.annotations));
    }
    let mut spec = match serde_json::to_value(&w.spec) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // Leave out enum fields at their defaults, as a user would write it.
    for (field, default) in [
        ("imagePullPolicy", "UNSPECIFIED_POLICY"),
        ("phase", "UNSPECIFIED_PHASE"),
        ("failStrategy", "FAIL_CLOSE"),
        ("type", "UNSPECIFIED_PLUGIN_TYPE"),
    ] {
        if spec.get(field) == Some(&json!(default)) {
            spec.remove(field);
        }
    }
    let doc = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta,
        "spec": spec,
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}
