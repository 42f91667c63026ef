//! Core `v1` `Namespace`: only its labels matter to wasmgate (a listener's
//! `allowedRoutes.namespaces.selector` selects namespaces by them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validate::{Problems, is_dns_label};

/// The label Kubernetes puts on every namespace (since 1.21), set to its name. wasmgate gives it
/// to every namespace too, with or without a `Namespace` resource, so the usual
/// `matchLabels: {kubernetes.io/metadata.name: team-a}` selects `team-a`.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A `Namespace`. Cluster-scoped: its key has an empty namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Namespace {
    pub metadata: ObjectMeta,
    pub spec: NamespaceSpec,
}

/// Accepted, ignored (namespace finalizers mean nothing outside Kubernetes).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
}

/// The labels a namespace is selected by: its `Namespace` resource's labels (none without one)
/// plus [`NAMESPACE_NAME_LABEL`].
pub fn namespace_labels(name: &str, namespace: Option<&Namespace>) -> BTreeMap<String, String> {
    let mut labels = namespace
        .map(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
    labels
}

// === impl Namespace ===

impl Namespace {
    pub(crate) fn validate(&self, p: &mut Problems) {
        // Namespace names are DNS labels (no dots), stricter than other object names.
        if !self.metadata.name.is_empty()
            && !is_dns_label(&self.metadata.name, crate::limits::MAX_NAMESPACE_LEN)
        {
            p.error(
                "metadata.name",
                format!(
                    "invalid namespace name {:?}: must be a lowercase RFC 1123 label",
                    self.metadata.name
                ),
            );
        }
        if let Some(v) = self.metadata.labels.get(NAMESPACE_NAME_LABEL)
            && *v != self.metadata.name
        {
            p.error(
                format!("metadata.labels.{NAMESPACE_NAME_LABEL}"),
                format!("must equal the namespace name {:?}", self.metadata.name),
            );
        }
        if self.spec.finalizers.is_some() {
            p.ignored("spec.finalizers");
        }
    }
}
