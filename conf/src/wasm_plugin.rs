//! Istio `WasmPlugin` (`extensions.istio.io/v1alpha1`): every field of the API, validated as
//! istiod and the CRD's CEL rules do (see `shared/reference/istio-wasm.md` §1).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::*;
use crate::meta::ObjectMeta;
use crate::validate::{Problems, check_labels, label_key_problem};

/// A `WasmPlugin`. After parsing, a deprecated `targetRef` is also present in `targetRefs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WasmPlugin {
    pub metadata: ObjectMeta,
    pub spec: WasmPluginSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    /// Labels of the workloads (gateway or backends) the plugin applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated singular form; merged into `target_refs` at parse time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Required. `oci://`, `file://`, `http://`, `https://`; no scheme means `oci://`.
    #[serde(default)]
    pub url: String,
    /// Lowercase hex SHA-256 of the module (or, for OCI, the manifest digest); empty = unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Name of a `kubernetes.io/dockerconfigjson` Secret in the plugin's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Accepted, unused (as in Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
    /// Any JSON object; see [`WasmPluginSpec::plugin_config_json`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<serde_json::Value>,
    /// The root id (`plugin_root_id`); empty when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(default)]
    pub phase: PluginPhase,
    /// Higher runs first within a phase; unset sorts as `i32::MIN` (after every explicit priority).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int32_value"
    )]
    pub priority: Option<i32>,
    #[serde(default)]
    pub fail_strategy: FailStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    /// Traffic passes the plugin if it matches any selector; empty = all traffic.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<TrafficSelector>,
    #[serde(default, rename = "type")]
    pub plugin_type: PluginType,
}

/// `istio.type.v1beta1.WorkloadSelector`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Every selector label is present with the same value in `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `istio.type.v1beta1.PolicyTargetReference`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// Must be empty (cross-namespace references are not supported, as in Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

// === impl PolicyTargetReference ===

impl PolicyTargetReference {
    /// `gateway.networking.k8s.io/Gateway`: the gateway named `name`.
    pub fn is_gateway(&self) -> bool {
        self.group == crate::route::GATEWAY_API_GROUP && self.kind == "Gateway"
    }

    /// `gateway.networking.k8s.io/GatewayClass`: gateways whose `gatewayClassName` is `name`.
    pub fn is_gateway_class(&self) -> bool {
        self.group == crate::route::GATEWAY_API_GROUP && self.kind == "GatewayClass"
    }

    /// core `Service`: requests routed to that backend.
    pub fn is_service(&self) -> bool {
        (self.group.is_empty() || self.group == "core") && self.kind == "Service"
    }

    /// `gateway.networking.k8s.io/HTTPRoute` (beyond Istio): requests matched by that route.
    pub fn is_http_route(&self) -> bool {
        self.group == crate::route::GATEWAY_API_GROUP && self.kind == "HTTPRoute"
    }

    /// `networking.istio.io/ServiceEntry`: accepted; nothing in wasmgate is a ServiceEntry.
    pub fn is_service_entry(&self) -> bool {
        self.group == "networking.istio.io" && self.kind == "ServiceEntry"
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value_from: EnvValueSource,
    /// Only with `valueFrom: INLINE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSelector {
    #[serde(default)]
    pub mode: WorkloadMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSelector>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
}

/// A protobuf enum as protojson reads it: the value's name, or its number.
macro_rules! proto_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:literal, $text:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The proto name (as written in YAML).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The proto number.
            pub fn number(self) -> i32 {
                match self { $($name::$variant => $num,)+ }
            }

            fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            fn from_number(n: i64) -> Option<Self> {
                match n { $($num => Some($name::$variant),)+ _ => None }
            }

            const NAMES: &'static [&'static str] = &[$($text),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match NameOrNumber::deserialize(d)? {
                    NameOrNumber::Name(s) => $name::from_name(&s).ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "unknown value {s:?} (one of {})",
                            $name::NAMES.join(", ")
                        ))
                    }),
                    NameOrNumber::Number(n) => $name::from_number(n).ok_or_else(|| {
                        serde::de::Error::custom(format!("unknown enum number {n}"))
                    }),
                    NameOrNumber::Null => Ok($name::default()),
                }
            }
        }
    };
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Name(String),
    Number(i64),
    Null,
}

proto_enum! {
    /// `PullPolicy`. Which one applies is the fetcher's business (digest pinned ⇒ IfNotPresent, `:latest` ⇒ Always).
    PullPolicy {
        #[default]
        Unspecified = 0, "UNSPECIFIED_POLICY";
        IfNotPresent = 1, "IfNotPresent";
        Always = 2, "Always";
    }
}

proto_enum! {
    /// `PluginPhase`: chain order AUTHN → AUTHZ → STATS → UNSPECIFIED (last, before routing).
    PluginPhase {
        #[default]
        Unspecified = 0, "UNSPECIFIED_PHASE";
        Authn = 1, "AUTHN";
        Authz = 2, "AUTHZ";
        Stats = 3, "STATS";
    }
}

proto_enum! {
    /// `FailStrategy`.
    FailStrategy {
        #[default]
        FailClose = 0, "FAIL_CLOSE";
        FailOpen = 1, "FAIL_OPEN";
        FailReload = 2, "FAIL_RELOAD";
    }
}

proto_enum! {
    /// `EnvValueSource`.
    EnvValueSource {
        #[default]
        Inline = 0, "INLINE";
        Host = 1, "HOST";
    }
}

proto_enum! {
    /// `WorkloadMode`. Gateways are CLIENT.
    WorkloadMode {
        #[default]
        Undefined = 0, "UNDEFINED";
        Client = 1, "CLIENT";
        Server = 2, "SERVER";
        ClientAndServer = 3, "CLIENT_AND_SERVER";
    }
}

proto_enum! {
    /// `PluginType`. Unspecified means HTTP.
    PluginType {
        #[default]
        Unspecified = 0, "UNSPECIFIED_PLUGIN_TYPE";
        Http = 1, "HTTP";
        Network = 2, "NETWORK";
    }
}

impl PluginPhase {
    /// Position in the chain: AUTHN 0, AUTHZ 1, STATS 2, unspecified 3 (last).
    pub fn chain_rank(self) -> u8 {
        match self {
            PluginPhase::Authn => 0,
            PluginPhase::Authz => 1,
            PluginPhase::Stats => 2,
            PluginPhase::Unspecified => 3,
        }
    }
}

/// `google.protobuf.Int32Value` as protojson reads it: a number or a numeric string.
fn int32_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(i64),
        S(String),
    }
    let v = match Option::<V>::deserialize(d)? {
        None => return Ok(None),
        Some(V::N(n)) => n,
        Some(V::S(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| serde::de::Error::custom(format!("not an integer: {s:?}")))?,
    };
    i32::try_from(v)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{v} is out of range for a 32-bit integer")))
}

/// URL schemes a WasmPlugin may use.
pub const URL_SCHEMES: [&str; 4] = ["oci", "file", "http", "https"];

// === impl WasmPlugin ===

impl WasmPlugin {
    /// The plugin name the module sees (`plugin_name` property): `<namespace>.<name>`.
    pub fn plugin_identity(&self) -> String {
        format!("{}.{}", self.metadata.namespace, self.metadata.name)
    }

    /// Istio's chain order: phase (AUTHN, AUTHZ, STATS, unspecified), then priority descending
    /// (unset = `i32::MIN`), then `created` ascending, then name, then namespace. `created` is the
    /// creationTimestamp, or the first-seen time when absent (the caller supplies both).
    pub fn chain_order(
        a: (&WasmPlugin, std::time::SystemTime),
        b: (&WasmPlugin, std::time::SystemTime),
    ) -> Ordering {
        let (pa, pb) = (&a.0.spec, &b.0.spec);
        pa.phase
            .chain_rank()
            .cmp(&pb.phase.chain_rank())
            .then_with(|| pb.effective_priority().cmp(&pa.effective_priority()))
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.0.metadata.name.cmp(&b.0.metadata.name))
            .then_with(|| a.0.metadata.namespace.cmp(&b.0.metadata.namespace))
    }

    /// Merges the deprecated `targetRef` into `targetRefs` (istiod's translation).
    pub(crate) fn normalize(&mut self) {
        if self.spec.target_refs.is_empty()
            && let Some(r) = &self.spec.target_ref
        {
            self.spec.target_refs.push(r.clone());
        }
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        let spec = &self.spec;
        // Called on the resource as written, before `normalize` merges targetRef into targetRefs.
        let set = [
            spec.selector.is_some(),
            spec.target_ref.is_some(),
            !spec.target_refs.is_empty(),
        ];
        if set.iter().filter(|x| **x).count() > 1 {
            p.error(
                "spec",
                "only one of selector, targetRef or targetRefs can be set",
            );
        }
        if let Some(sel) = &spec.selector {
            validate_selector(p, "spec.selector.matchLabels", &sel.match_labels);
        }
        if let Some(r) = &spec.target_ref {
            p.warn("spec.targetRef", "deprecated: use targetRefs");
            validate_target_ref(p, "spec.targetRef", r);
        }
        p.max_items("spec.targetRefs", &spec.target_refs, MAX_TARGET_REFS);
        for (i, r) in spec.target_refs.iter().enumerate() {
            validate_target_ref(p, &format!("spec.targetRefs[{i}]"), r);
        }
        validate_url(p, &spec.url);
        if let (Some(sha), Some((_, digest))) = (spec.sha256(), spec.url.split_once("@sha256:"))
            && sha != digest
        {
            p.error("spec.sha256", "does not match the @sha256: digest in url");
        }
        if let Some(sha) = &spec.sha256
            && !(sha.is_empty()
                || (sha.len() == 64 && sha.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))))
        {
            p.error(
                "spec.sha256",
                "must be 64 lowercase hex characters (or empty)",
            );
        }
        if let Some(s) = &spec.image_pull_secret
            && (s.is_empty() || s.len() > MAX_IMAGE_PULL_SECRET_LEN)
        {
            p.error(
                "spec.imagePullSecret",
                format!("must be 1 to {MAX_IMAGE_PULL_SECRET_LEN} characters"),
            );
        }
        if let Some(n) = &spec.plugin_name
            && (n.is_empty() || n.len() > MAX_PLUGIN_NAME_LEN)
        {
            p.error(
                "spec.pluginName",
                format!("must be 1 to {MAX_PLUGIN_NAME_LEN} characters"),
            );
        }
        if let Some(c) = &spec.plugin_config
            && !c.is_object()
        {
            p.error("spec.pluginConfig", "must be an object");
        }
        if spec.verification_key.is_some() {
            p.ignored("spec.verificationKey");
        }
        if let Some(vm) = &spec.vm_config {
            validate_env(p, &vm.env);
        }
        for (i, m) in spec.match_.iter().enumerate() {
            for (j, port) in m.ports.iter().enumerate() {
                if !(1..=65535).contains(&port.number) {
                    p.error(
                        format!("spec.match[{i}].ports[{j}].number"),
                        "must be between 1 and 65535",
                    );
                }
            }
        }
    }
}

fn validate_selector(p: &mut Problems, field: &str, labels: &BTreeMap<String, String>) {
    if labels.len() > MAX_SELECTOR_LABELS {
        p.error(
            field,
            format!("must have at most {MAX_SELECTOR_LABELS} entries"),
        );
    }
    for (k, v) in labels {
        // Istio's messages first, then the general Kubernetes label syntax.
        if k.is_empty() {
            p.error(field, "empty key is not supported in selector");
        } else if k.contains('*') || v.contains('*') {
            p.error(
                format!("{field}.{k}"),
                "wildcard is not supported in selector",
            );
        } else if label_key_problem(k).is_some() || !crate::validate::is_label_value(v) {
            check_labels(p, field, &BTreeMap::from([(k.clone(), v.clone())]));
        }
    }
}

fn validate_target_ref(p: &mut Problems, f: &str, r: &PolicyTargetReference) {
    const SUPPORTED: [(&str, &str); 6] = [
        ("", "Service"),
        ("core", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
        // Beyond Istio: a route as target.
        ("gateway.networking.k8s.io", "HTTPRoute"),
    ];
    if r.kind.is_empty() {
        p.error(format!("{f}.kind"), "required");
    } else if r.kind.len() > MAX_POLICY_REF_KIND_LEN {
        p.error(
            format!("{f}.kind"),
            format!("must be at most {MAX_POLICY_REF_KIND_LEN} characters"),
        );
    } else if !SUPPORTED.contains(&(r.group.as_str(), r.kind.as_str())) {
        p.error(
            f,
            format!(
                "unsupported target (group {:?}, kind {:?}): supported are core/Service, networking.istio.io/ServiceEntry, \
                 gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass, gateway.networking.k8s.io/HTTPRoute",
                r.group, r.kind
            ),
        );
    }
    if r.group.len() > MAX_POLICY_REF_GROUP_LEN {
        p.error(
            format!("{f}.group"),
            format!("must be at most {MAX_POLICY_REF_GROUP_LEN} characters"),
        );
    }
    if r.name.is_empty() {
        p.error(format!("{f}.name"), "required");
    } else if r.name.len() > MAX_POLICY_REF_NAME_LEN {
        p.error(
            format!("{f}.name"),
            format!("must be at most {MAX_POLICY_REF_NAME_LEN} characters"),
        );
    }
    if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
        p.error(
            format!("{f}.namespace"),
            "cross namespace referencing is not currently supported",
        );
    }
}

fn validate_url(p: &mut Problems, url: &str) {
    if url.is_empty() {
        p.error("spec.url", "required");
        return;
    }
    match url_scheme(url) {
        Some(s) if !URL_SCHEMES.contains(&s) => p.error(
            "spec.url",
            format!("url contains unsupported scheme: {s} (supported: oci, file, http, https)"),
        ),
        _ => {}
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.error(
            "spec.url",
            "must not contain whitespace or control characters",
        );
    }
}

/// The scheme of `url` (`None` when it has none, which means `oci`).
fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let valid = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

fn validate_env(p: &mut Problems, env: &[EnvVar]) {
    if env.len() > MAX_ENV_VARS {
        p.error(
            "spec.vmConfig.env",
            format!("must have at most {MAX_ENV_VARS} items"),
        );
    }
    let mut names = HashSet::new();
    for (i, e) in env.iter().enumerate() {
        let f = format!("spec.vmConfig.env[{i}]");
        let b = e.name.as_bytes();
        if e.name.is_empty() {
            p.error(format!("{f}.name"), "required");
        } else if e.name.len() > MAX_ENV_NAME_LEN
            || !(b[0].is_ascii_alphabetic() || b[0] == b'_')
            || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            p.error(
                format!("{f}.name"),
                format!("invalid env var name {:?}: must be a C identifier of at most {MAX_ENV_NAME_LEN} characters", e.name),
            );
        } else if !names.insert(e.name.as_str()) {
            p.error(
                format!("{f}.name"),
                format!("duplicate env var name {:?}", e.name),
            );
        }
        if let Some(v) = &e.value {
            if e.value_from != EnvValueSource::Inline {
                p.error(
                    format!("{f}.value"),
                    "may only be set when valueFrom is INLINE",
                );
            }
            if v.len() > MAX_ENV_VALUE_LEN {
                p.error(
                    format!("{f}.value"),
                    format!("must be at most {MAX_ENV_VALUE_LEN} characters"),
                );
            }
        }
    }
}

// === impl WasmPluginSpec ===

impl WasmPluginSpec {
    /// Neither `selector` nor `targetRefs`: the plugin applies to all traffic.
    pub fn is_untargeted(&self) -> bool {
        self.selector.is_none() && self.target_refs.is_empty() && self.target_ref.is_none()
    }

    /// `url` with `oci://` added when it has no scheme (Istio's default).
    pub fn url_with_scheme(&self) -> String {
        if url_scheme(&self.url).is_some() {
            self.url.clone()
        } else {
            format!("oci://{}", self.url)
        }
    }

    /// The effective scheme: `oci`, `file`, `http` or `https`.
    pub fn url_scheme(&self) -> &str {
        url_scheme(&self.url).unwrap_or("oci")
    }

    /// `sha256` when set and non-empty.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref().filter(|s| !s.is_empty())
    }

    /// The root id handed to the VM (`pluginName`, or "" when unset).
    pub fn root_id(&self) -> &str {
        self.plugin_name.as_deref().unwrap_or("")
    }

    /// Priority with Istio's default for unset: `i32::MIN`.
    pub fn effective_priority(&self) -> i32 {
        self.priority.unwrap_or(i32::MIN)
    }

    /// The configuration string `proxy_on_configure` receives, as istiod builds it: compact JSON
    /// with object keys sorted (protojson's Struct encoding), integral numbers without a fraction;
    /// "" when `pluginConfig` is absent or an empty object.
    pub fn plugin_config_json(&self) -> String {
        match &self.plugin_config {
            Some(config @ serde_json::Value::Object(m)) if !m.is_empty() => {
                let mut out = String::new();
                write_canonical_json(&mut out, config);
                out
            }
            _ => String::new(),
        }
    }

    /// `(name, value)` of the INLINE env vars (the VM's environment).
    pub fn inline_env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vm_config
            .iter()
            .flat_map(|vm| vm.env.iter())
            .filter(|e| e.value_from == EnvValueSource::Inline)
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
    }

    /// Names of the HOST env vars (copied from the gateway's own environment when present).
    pub fn host_env_keys(&self) -> impl Iterator<Item = &str> {
        self.vm_config
            .iter()
            .flat_map(|vm| vm.env.iter())
            .filter(|e| e.value_from == EnvValueSource::Host)
            .map(|e| e.name.as_str())
    }

    /// Whether the plugin applies on a gateway listener bound to `port` (Istio's `match`: a gateway
    /// is a CLIENT; no selectors = match; any selector matching = match).
    pub fn matches_gateway_port(&self, port: u16) -> bool {
        self.match_.is_empty()
            || self.match_.iter().any(|m| {
                m.mode != WorkloadMode::Server
                    && (m.ports.is_empty() || m.ports.iter().any(|p| p.number == u32::from(port)))
            })
    }
}

fn write_canonical_json(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical_json(out, &m[k]);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(out, x);
            }
            out.push(']');
        }
        // protobuf Struct numbers are doubles; Go prints integral ones without a fraction.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => {
                out.push_str(&format!("{f:.0}"))
            }
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> WasmPluginSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn plugin_config_json_is_istiods() {
        let s = spec(
            "url: x\npluginConfig: {b: [1.0, 2.5, 1e21, -3], a: {d: null, c: \"\\u00e9<>\"}}\n",
        );
        assert_eq!(
            s.plugin_config_json(),
            r#"{"a":{"c":"é<>","d":null},"b":[1,2.5,1e+21,-3]}"#
        );
        assert_eq!(spec("url: x\npluginConfig: {}\n").plugin_config_json(), "");
        assert_eq!(spec("url: x\n").plugin_config_json(), "");
    }

    #[test]
    fn gateway_port_matching_follows_istio() {
        let any = spec("url: x\n");
        assert!(any.matches_gateway_port(1));
        let server_only = spec("url: x\nmatch: [{mode: SERVER}]\n");
        assert!(!server_only.matches_gateway_port(80), "gateways are CLIENT");
        let either = spec(
            "url: x\nmatch: [{mode: SERVER}, {mode: CLIENT_AND_SERVER, ports: [{number: 80}]}]\n",
        );
        assert!(either.matches_gateway_port(80));
        assert!(!either.matches_gateway_port(443));
        let undefined = spec("url: x\nmatch: [{mode: 0, ports: [{number: 443}]}]\n");
        assert!(undefined.matches_gateway_port(443));
    }

    #[test]
    fn target_ref_kinds() {
        let s = spec(
            "url: x\ntargetRefs:\n- {kind: Gateway, group: gateway.networking.k8s.io, name: a}\n\
             - {kind: Service, name: b}\n- {kind: Service, group: core, name: c}\n\
             - {kind: HTTPRoute, group: gateway.networking.k8s.io, name: d}\n\
             - {kind: GatewayClass, group: gateway.networking.k8s.io, name: e}\n\
             - {kind: ServiceEntry, group: networking.istio.io, name: f}\n",
        );
        let r = &s.target_refs;
        assert!(r[0].is_gateway() && !r[0].is_service());
        assert!(r[1].is_service() && r[2].is_service());
        assert!(r[3].is_http_route() && r[4].is_gateway_class() && r[5].is_service_entry());
        assert!(!s.is_untargeted());
        assert!(spec("url: x\n").is_untargeted());
        assert!(!spec("url: x\nselector: {matchLabels: {app: a}}\n").is_untargeted());
    }

    #[test]
    fn selectors_match_label_subsets() {
        let sel = spec("url: x\nselector: {matchLabels: {app: httpbin}}\n")
            .selector
            .unwrap();
        let labels = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(sel.matches(&labels(&[("app", "httpbin"), ("version", "v1")])));
        assert!(!sel.matches(&labels(&[("app", "reviews")])));
        assert!(!sel.matches(&labels(&[])));
        assert!(
            WorkloadSelector::default().matches(&labels(&[])),
            "an empty selector matches everything"
        );
    }

    #[test]
    fn urls_default_to_oci() {
        assert_eq!(
            spec("url: ghcr.io/a/b:1\n").url_with_scheme(),
            "oci://ghcr.io/a/b:1"
        );
        assert_eq!(spec("url: localhost:5000/a/b\n").url_scheme(), "oci");
        assert_eq!(spec("url: https://x/p.wasm\n").url_scheme(), "https");
        assert_eq!(
            spec("url: file:///p.wasm\n").url_with_scheme(),
            "file:///p.wasm"
        );
    }

    #[test]
    fn enums_read_names_numbers_and_null() {
        let s = spec(
            "url: x\nphase: 3\nfailStrategy: FAIL_RELOAD\nimagePullPolicy: IfNotPresent\ntype: null\n",
        );
        assert_eq!(s.phase, PluginPhase::Stats);
        assert_eq!(s.fail_strategy, FailStrategy::FailReload);
        assert_eq!(s.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(s.plugin_type, PluginType::Unspecified);
        assert_eq!(PluginPhase::Authz.number(), 2);
        assert_eq!(
            serde_json::to_string(&PluginPhase::Authz).unwrap(),
            "\"AUTHZ\""
        );
    }
}
