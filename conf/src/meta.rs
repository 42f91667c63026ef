//! Kubernetes object metadata, resource kinds and keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The namespace a resource is in when `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `metadata` of every resource. Every standard Kubernetes `ObjectMeta` key is accepted; the ones
/// wasmgate does not act on (`uid`, `ownerReferences`, `managedFields`, ...) are kept opaque.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Required (validation error when empty).
    #[serde(default)]
    pub name: String,
    /// Defaults to [`DEFAULT_NAMESPACE`].
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 time; orders WasmPlugins with equal priority (Istio: oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
    /// Opaque; Istio hands it to the agent as `ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION` (pull policy).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,

    // Accepted, not acted on.
    #[serde(default, skip_serializing)]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing)]
    pub self_link: Option<String>,
    #[serde(default, skip_serializing)]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing)]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing)]
    pub owner_references: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub finalizers: Option<Vec<String>>,
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_json::Value>,
}

impl ObjectMeta {
    /// An empty `namespace` means the default one, as in `kubectl apply`.
    pub(crate) fn normalized(mut self) -> Self {
        if self.namespace.is_empty() {
            self.namespace = default_namespace();
        }
        self
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        S(String),
        I(i64),
        U(u64),
    }
    Ok(Option::<StrOrNum>::deserialize(d)?.map(|v| match v {
        StrOrNum::S(s) => s,
        StrOrNum::I(i) => i.to_string(),
        StrOrNum::U(u) => u.to_string(),
    }))
}

impl Default for ObjectMeta {
    fn default() -> Self {
        Self {
            name: String::new(),
            namespace: default_namespace(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            creation_timestamp: None,
            resource_version: None,
            generation: None,
            uid: None,
            generate_name: None,
            self_link: None,
            deletion_timestamp: None,
            deletion_grace_period_seconds: None,
            owner_references: None,
            finalizers: None,
            managed_fields: None,
        }
    }
}

/// An RFC 3339 instant (`2024-05-01T10:00:00Z`, fractions and offsets accepted), kept with its
/// original text. Ordered by the instant it denotes.
#[derive(Debug, Clone)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (UTC).
    pub unix_seconds: i64,
    pub nanos: u32,
    text: String,
}

// === impl Timestamp ===

impl Timestamp {
    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `t`/space separator accepted).
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = text.get(r)?;
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || min > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let frac = &text[start..i];
            if frac.is_empty() {
                return None;
            }
            let mut digits: String = frac.chars().take(9).collect();
            while digits.len() < 9 {
                digits.push('0');
            }
            nanos = digits.parse().ok()?;
        }
        let offset = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'+' { off } else { -off }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let unix_seconds = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
        Some(Self {
            unix_seconds,
            nanos,
            text: text.to_owned(),
        })
    }

    /// The text as written in the resource.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        (self.unix_seconds, self.nanos) == (other.unix_seconds, other.nanos)
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.unix_seconds, self.nanos).cmp(&(other.unix_seconds, other.nanos))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid RFC 3339 timestamp {text:?} (expected e.g. 2024-05-01T10:00:00Z)"
            ))
        })
    }
}

/// The kinds of resource wasmgate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Gateway,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    Service,
    Secret,
    WasmPlugin,
    ReferenceGrant,
    /// Cluster-scoped: keyed with an empty namespace.
    Namespace,
    /// `maistra.io/v1`: translated to the equivalent WasmPlugin (keyed as a WasmPlugin).
    ServiceMeshExtension,
}

// === impl Kind ===

impl Kind {
    /// The kind understood for an `apiVersion` + `kind` pair; `None` means "ignored".
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "Gateway") => {
                Some(Kind::Gateway)
            }
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
                Some(Kind::HttpRoute)
            }
            (
                "gateway.networking.k8s.io/v1"
                | "gateway.networking.k8s.io/v1beta1"
                | "gateway.networking.k8s.io/v1alpha2",
                "ReferenceGrant",
            ) => Some(Kind::ReferenceGrant),
            ("v1", "Namespace") => Some(Kind::Namespace),
            ("v1", "Service") => Some(Kind::Service),
            ("v1", "Secret") => Some(Kind::Secret),
            ("extensions.istio.io/v1alpha1", "WasmPlugin") => Some(Kind::WasmPlugin),
            ("maistra.io/v1" | "maistra.io/v1alpha1", "ServiceMeshExtension") => {
                Some(Kind::ServiceMeshExtension)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
            Kind::ServiceMeshExtension => "ServiceMeshExtension",
        }
    }
}

impl Kind {
    /// Whether objects of this kind live outside namespaces (their key's namespace is empty).
    pub fn is_cluster_scoped(self) -> bool {
        self == Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `namespace/name`. Serializes as that string (it keys the JSON maps of `/config_dump`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl Serialize for NamespacedName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object (empty namespace).
impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Identity of a resource: (kind, namespace, name). Two documents with the same key are duplicates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn namespaced_name(&self) -> NamespacedName {
        NamespacedName::new(&self.namespace, &self.name)
    }
}

/// `Kind namespace/name` (`Kind name` when cluster-scoped), the form used in errors and logs.
impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.namespaced_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_order_by_instant() {
        let a = Timestamp::parse("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(a.unix_seconds, 1_714_557_600);
        let b = Timestamp::parse("2024-05-01T12:00:00.5+02:00").unwrap();
        assert_eq!(b.unix_seconds, a.unix_seconds);
        assert_eq!(b.nanos, 500_000_000);
        assert!(a < b);
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z")
                .unwrap()
                .unix_seconds,
            0
        );
        assert_eq!(
            Timestamp::parse("2000-03-01T00:00:00Z")
                .unwrap()
                .unix_seconds,
            951_868_800
        );
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "yesterday",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn kinds_by_type_meta() {
        assert_eq!(
            Kind::from_type_meta("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
            Some(Kind::HttpRoute)
        );
        assert_eq!(
            Kind::from_type_meta("gateway.networking.k8s.io/v1alpha2", "HTTPRoute"),
            None
        );
        assert_eq!(Kind::from_type_meta("apps/v1", "Deployment"), None);
        assert_eq!(Kind::from_type_meta("v1", "Secret"), Some(Kind::Secret));
    }
}
