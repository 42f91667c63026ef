//! Gateway API `ReferenceGrant` (`gateway.networking.k8s.io/v1beta1`, also `v1` and `v1alpha2`):
//! the owner of a namespace allows references into it from other namespaces.
//!
//! wasmgate requires one for the two cross-namespace references it acts on, exactly as the Gateway
//! API does: an HTTPRoute `backendRef` to a Service in another namespace (without a grant the
//! backend is refused: its share of requests gets 500), and a Gateway listener's TLS
//! `certificateRef` to a Secret in another namespace (without a grant the listener is not served).
//! Removing a grant revokes the access at the next reload.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_REFERENCE_GRANT_FROM, MAX_REFERENCE_GRANT_TO};
use crate::meta::ObjectMeta;
use crate::route::GATEWAY_API_GROUP;
use crate::validate::{Problems, is_dns_label, is_dns_subdomain};

/// A `ReferenceGrant`: references from any `spec.from` entry to any `spec.to` entry (in the grant's
/// own namespace) are allowed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceGrant {
    pub metadata: ObjectMeta,
    pub spec: ReferenceGrantSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    /// The trusted referrers (ORed).
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may reference in this namespace (ORed).
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// A kind of referrer in a namespace. `group` is required, as upstream (`""` is the core group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// A kind of referent in the grant's namespace; every object of that kind unless `name` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantTo {
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One end of a reference: an object's group (`""` or `"core"` for the core group), kind,
/// namespace and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Whether `from` may reference `to`: always within one namespace; across namespaces only when a
/// grant in `to`'s namespace allows it.
pub fn reference_permitted<'g>(
    grants: impl IntoIterator<Item = &'g ReferenceGrant>,
    from: &ObjectRef<'_>,
    to: &ObjectRef<'_>,
) -> bool {
    from.namespace == to.namespace || grants.into_iter().any(|g| g.permits(from, to))
}

/// A Gateway as the referrer.
pub fn gateway_ref<'a>(namespace: &'a str, name: &'a str) -> ObjectRef<'a> {
    ObjectRef {
        group: GATEWAY_API_GROUP,
        kind: "Gateway",
        namespace,
        name,
    }
}

/// An HTTPRoute as the referrer.
pub fn http_route_ref<'a>(namespace: &'a str, name: &'a str) -> ObjectRef<'a> {
    ObjectRef {
        group: GATEWAY_API_GROUP,
        kind: "HTTPRoute",
        namespace,
        name,
    }
}

/// What a refused reference reports, e.g. `Service backends/api is in another namespace and no
/// ReferenceGrant in backends allows references to it from HTTPRoutes in apps (RefNotPermitted)`.
pub fn not_permitted(from: &ObjectRef<'_>, to: &ObjectRef<'_>) -> String {
    format!(
        "{} {}/{} is in another namespace and no ReferenceGrant in {} allows references to it from {}s in {} (RefNotPermitted)",
        to.kind, to.namespace, to.name, to.namespace, from.kind, from.namespace
    )
}

/// `""` and `"core"` both name the core API group.
fn same_group(a: &str, b: &str) -> bool {
    let core = |g: &str| g.is_empty() || g == "core";
    a == b || (core(a) && core(b))
}

// === impl ReferenceGrant ===

impl ReferenceGrant {
    /// Whether this grant allows `from` to reference `to`.
    pub fn permits(&self, from: &ObjectRef<'_>, to: &ObjectRef<'_>) -> bool {
        self.metadata.namespace == to.namespace
            && self.spec.from.iter().any(|f| {
                same_group(&f.group, from.group)
                    && f.kind == from.kind
                    && f.namespace == from.namespace
            })
            && self.spec.to.iter().any(|t| {
                same_group(&t.group, to.group)
                    && t.kind == to.kind
                    && t.name.as_deref().is_none_or(|n| n == to.name)
            })
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        let spec = &self.spec;
        if spec.from.is_empty() {
            p.error("spec.from", "must have at least 1 item");
        }
        if spec.to.is_empty() {
            p.error("spec.to", "must have at least 1 item");
        }
        p.max_items("spec.from", &spec.from, MAX_REFERENCE_GRANT_FROM);
        p.max_items("spec.to", &spec.to, MAX_REFERENCE_GRANT_TO);
        for (i, f) in spec.from.iter().enumerate() {
            let field = format!("spec.from[{i}]");
            check_group_kind(p, &field, &f.group, &f.kind);
            if !is_dns_label(&f.namespace, crate::limits::MAX_NAMESPACE_LEN) {
                p.error(
                    format!("{field}.namespace"),
                    format!(
                        "invalid namespace {:?}: must be a lowercase RFC 1123 label",
                        f.namespace
                    ),
                );
            }
        }
        for (i, t) in spec.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            check_group_kind(p, &field, &t.group, &t.kind);
            if let Some(name) = &t.name
                && !is_dns_subdomain(name)
            {
                p.error(format!("{field}.name"), format!("invalid name {name:?}"));
            }
        }
    }
}

fn check_group_kind(p: &mut Problems, field: &str, group: &str, kind: &str) {
    if !(group.is_empty() || group == "core" || is_dns_subdomain(group)) {
        p.error(format!("{field}.group"), format!("invalid group {group:?}"));
    }
    let valid_kind = kind.len() <= 63
        && kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    if !valid_kind {
        p.error(format!("{field}.kind"), format!("invalid kind {kind:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const GATEWAY_GROUP: &str = GATEWAY_API_GROUP;

    fn grant(ns: &str, from: (&str, &str, &str), to: (&str, &str, Option<&str>)) -> ReferenceGrant {
        ReferenceGrant {
            metadata: ObjectMeta {
                name: "g".into(),
                namespace: ns.into(),
                ..ObjectMeta::default()
            },
            spec: ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom {
                    group: from.0.into(),
                    kind: from.1.into(),
                    namespace: from.2.into(),
                }],
                to: vec![ReferenceGrantTo {
                    group: to.0.into(),
                    kind: to.1.into(),
                    name: to.2.map(str::to_owned),
                }],
            },
        }
    }

    fn r<'a>(group: &'a str, kind: &'a str, namespace: &'a str, name: &'a str) -> ObjectRef<'a> {
        ObjectRef {
            group,
            kind,
            namespace,
            name,
        }
    }

    #[test]
    fn grants_match_group_kind_namespace_and_optional_name() {
        let route = r(GATEWAY_GROUP, "HTTPRoute", "apps", "r");
        let svc = r("", "Service", "backends", "api");
        let any = grant(
            "backends",
            (GATEWAY_GROUP, "HTTPRoute", "apps"),
            ("", "Service", None),
        );
        assert!(any.permits(&route, &svc));
        assert!(any.permits(&route, &r("core", "Service", "backends", "other")));
        let named = grant(
            "backends",
            (GATEWAY_GROUP, "HTTPRoute", "apps"),
            ("", "Service", Some("api")),
        );
        assert!(named.permits(&route, &svc));
        assert!(!named.permits(&route, &r("", "Service", "backends", "db")));
        // Another referrer namespace, kind or group; a referent in another namespace.
        assert!(!any.permits(&r(GATEWAY_GROUP, "HTTPRoute", "other", "r"), &svc));
        assert!(!any.permits(&r(GATEWAY_GROUP, "GRPCRoute", "apps", "r"), &svc));
        assert!(!any.permits(&r("", "HTTPRoute", "apps", "r"), &svc));
        assert!(!any.permits(&route, &r("", "Service", "elsewhere", "api")));
        assert!(!any.permits(&route, &r("", "Secret", "backends", "api")));
        // Same namespace never needs one.
        assert!(reference_permitted(
            [],
            &route,
            &r("", "Service", "apps", "x")
        ));
        assert!(!reference_permitted([], &route, &svc));
        assert!(reference_permitted([&any], &route, &svc));
    }
}
