//! What a reload produces: the resources in force ([`Snapshot`]) and what changed ([`ReloadReport`]).

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::error::ConfigError;
use crate::gateway::Gateway;
use crate::meta::{NamespacedName, ObjectMeta, ResourceKey};
use crate::namespace::Namespace;
use crate::reference_grant::ReferenceGrant;
use crate::route::HttpRoute;
use crate::secret::Secret;
use crate::service::Service;
use crate::store::ConfigStore;
use crate::wasm_plugin::WasmPlugin;

/// A resource in force, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// Shared between snapshots while unchanged: `Arc::ptr_eq` tells "same version".
    pub resource: Arc<T>,
    pub source: PathBuf,
    /// 0-based YAML document index in `source`.
    pub document: usize,
    /// Assigned when the key first came into force; kept across updates. Breaks ties stably.
    pub seq: u64,
    /// When the key first came into force (fallback for a missing creationTimestamp).
    pub first_seen: SystemTime,
}

impl<T> Deref for Sourced<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.resource
    }
}

impl<T: HasMetadata> Sourced<T> {
    /// `metadata.creationTimestamp` if given, else the first-seen time (Istio's tie-break input).
    pub fn created(&self) -> SystemTime {
        match &self.resource.metadata().creation_timestamp {
            Some(ts) => {
                let secs = ts.unix_seconds;
                let nanos = std::time::Duration::from_nanos(u64::from(ts.nanos));
                if secs >= 0 {
                    UNIX_EPOCH + std::time::Duration::from_secs(secs.unsigned_abs()) + nanos
                } else {
                    UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs()) + nanos
                }
            }
            None => self.first_seen,
        }
    }
}

impl<T: Serialize> Serialize for Sourced<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Sourced", 5)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("document", &self.document)?;
        st.serialize_field("seq", &self.seq)?;
        let ms = self
            .first_seen
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        st.serialize_field("firstSeenUnixMs", &ms)?;
        st.serialize_field("resource", &*self.resource)?;
        st.end()
    }
}

/// Access to `metadata` for every kind.
pub trait HasMetadata {
    fn metadata(&self) -> &ObjectMeta;
}

macro_rules! has_metadata {
    ($($t:ty),*) => { $(impl HasMetadata for $t { fn metadata(&self) -> &ObjectMeta { &self.metadata } })* };
}
has_metadata!(
    Gateway,
    HttpRoute,
    Service,
    Secret,
    WasmPlugin,
    ReferenceGrant,
    Namespace
);

/// A document of a kind wasmgate does not act on (the gateway logs each once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ignored {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: PathBuf,
    pub document: usize,
    pub reason: String,
}

/// A version that was not taken into force, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// `None` when the document could not be identified (no kind, no name, not YAML).
    pub key: Option<ResourceKey>,
    pub file: PathBuf,
    pub document: Option<usize>,
    pub errors: Vec<ConfigError>,
    /// Whether an earlier good version of `key` stays in force (for a duplicate: `false`, the
    /// winning file's version is what is in force).
    pub kept_last_good: bool,
}

/// An immutable view of the configuration in force. Serializes to JSON for `/config_dump`
/// (Secret values print as `<redacted N bytes>`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Increments on every reload that changes anything in the snapshot; 0 before the first load.
    pub generation: u64,
    pub gateways: BTreeMap<NamespacedName, Sourced<Gateway>>,
    pub routes: BTreeMap<NamespacedName, Sourced<HttpRoute>>,
    pub services: BTreeMap<NamespacedName, Sourced<Service>>,
    pub secrets: BTreeMap<NamespacedName, Sourced<Secret>>,
    pub wasm_plugins: BTreeMap<NamespacedName, Sourced<WasmPlugin>>,
    pub reference_grants: BTreeMap<NamespacedName, Sourced<ReferenceGrant>>,
    /// Keyed with an empty namespace (cluster-scoped); see [`Snapshot::namespace_labels`].
    pub namespaces: BTreeMap<NamespacedName, Sourced<Namespace>>,
    pub ignored: Vec<Ignored>,
    pub rejected: Vec<Rejected>,
    /// Non-fatal notes: ignored fields, deprecations, dangling references.
    pub warnings: Vec<ConfigError>,
}

// Snapshots are published to request handlers on every thread.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Snapshot>();
    assert_send_sync::<ConfigStore>();
};

impl Snapshot {
    /// Every error of this snapshot (all rejected versions), in file order.
    pub fn errors(&self) -> Vec<ConfigError> {
        self.rejected
            .iter()
            .flat_map(|r| r.errors.iter().cloned())
            .collect()
    }

    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&Sourced<Gateway>> {
        self.gateways.get(&NamespacedName::new(namespace, name))
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Sourced<Service>> {
        self.services.get(&NamespacedName::new(namespace, name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Sourced<Secret>> {
        self.secrets.get(&NamespacedName::new(namespace, name))
    }

    /// The labels `allowedRoutes.namespaces.selector` sees for namespace `name`: its `Namespace`
    /// resource's labels (none without one) plus `kubernetes.io/metadata.name: <name>`.
    pub fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        let ns = self.namespaces.get(&NamespacedName::new("", name));
        crate::namespace::namespace_labels(name, ns.map(|n| &*n.resource))
    }

    /// Whether `from` may reference `to` (same namespace, or a ReferenceGrant allows it).
    pub fn reference_permitted(
        &self,
        from: &crate::reference_grant::ObjectRef<'_>,
        to: &crate::reference_grant::ObjectRef<'_>,
    ) -> bool {
        crate::reference_grant::reference_permitted(
            self.reference_grants.values().map(|g| &*g.resource),
            from,
            to,
        )
    }

    /// WasmPlugins in Istio's chain order (phase, priority descending with unset = `i32::MIN`,
    /// creation time, name, namespace; then first-seen sequence).
    pub fn wasm_plugins_in_order(&self) -> Vec<&Sourced<WasmPlugin>> {
        let mut v: Vec<_> = self.wasm_plugins.values().collect();
        v.sort_by(|a, b| {
            WasmPlugin::chain_order((&*a.resource, a.created()), (&*b.resource, b.created()))
                .then(a.seq.cmp(&b.seq))
        });
        v
    }

    pub(crate) fn same_content(&self, other: &Snapshot) -> bool {
        // Everything but the generation.
        self.gateways == other.gateways
            && self.routes == other.routes
            && self.services == other.services
            && self.secrets == other.secrets
            && self.wasm_plugins == other.wasm_plugins
            && self.reference_grants == other.reference_grants
            && self.namespaces == other.namespaces
            && self.ignored == other.ignored
            && self.rejected == other.rejected
            && self.warnings == other.warnings
    }
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Generation of the snapshot returned with this report.
    pub generation: u64,
    /// Whether the snapshot changed (and the generation incremented).
    pub changed: bool,
    pub added: Vec<ResourceKey>,
    pub updated: Vec<ResourceKey>,
    pub removed: Vec<ResourceKey>,
    /// Every error of this reload (equal to `snapshot.errors()`, plus a directory-level failure).
    /// A file that stays broken reports its errors on every reload.
    pub errors: Vec<ConfigError>,
    /// The errors of `errors` that the previous reload did not have: log these to say each once.
    pub new_errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl ReloadReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}
