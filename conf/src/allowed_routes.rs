//! A Gateway listener's `allowedRoutes`: which routes may attach to it, by namespace and kind.
//!
//! As the Gateway API specifies: `namespaces.from` is `Same` by default (only routes in the
//! Gateway's namespace), `All`, or `Selector` (routes in namespaces whose labels the `selector`
//! matches; see [`crate::namespace_labels`]). `kinds` defaults to the kinds of the listener's
//! protocol; wasmgate serves `HTTPRoute` on `HTTP` and `HTTPS` listeners, and leaves any other
//! listed kind out with a warning (the Gateway API's `InvalidRouteKinds`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_ROUTE_KINDS;
use crate::route::GATEWAY_API_GROUP;
use crate::selector::LabelSelector;
use crate::validate::Problems;

/// The one route kind wasmgate serves.
pub const HTTP_ROUTE_KIND: &str = "HTTPRoute";

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    #[serde(default)]
    pub namespaces: RouteNamespaces,
    /// Empty: the kinds of the listener's protocol (`HTTPRoute`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    #[serde(default)]
    pub from: FromNamespaces,
    /// Required when `from` is `Selector`; ignored otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FromNamespaces {
    /// Routes in every namespace.
    All,
    /// Routes in the Gateway's namespace only (the default).
    #[default]
    Same,
    /// Routes in the namespaces `selector` selects.
    Selector,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteGroupKind {
    #[serde(default = "default_group")]
    pub group: String,
    pub kind: String,
}

fn default_group() -> String {
    GATEWAY_API_GROUP.to_owned()
}

/// Why a listener refuses a route; `Display` names the field that refuses it, e.g.
/// `allowedRoutes.namespaces.from: Same`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAllowed {
    /// `from: Same` and the route is in another namespace.
    OtherNamespace,
    /// `from: Selector` and the selector does not select the route's namespace.
    NotSelected { namespace: String },
    /// `kinds` does not list the route's kind.
    Kind { kind: String },
}

// === impl AllowedRoutes ===

impl AllowedRoutes {
    /// Whether a route of `kind` (in the Gateway API group) in `route_namespace` may attach to a
    /// listener of a Gateway in `gateway_namespace`. `namespace_labels` are the route namespace's
    /// labels (see [`crate::namespace_labels`]); only `from: Selector` reads them.
    pub fn admits(
        &self,
        gateway_namespace: &str,
        route_namespace: &str,
        kind: &str,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Result<(), NotAllowed> {
        let kind_listed = (self.kinds.is_empty() && kind == HTTP_ROUTE_KIND)
            || self
                .kinds
                .iter()
                .any(|k| k.group == GATEWAY_API_GROUP && k.kind == kind);
        if !kind_listed {
            return Err(NotAllowed::Kind {
                kind: kind.to_owned(),
            });
        }
        match self.namespaces.from {
            FromNamespaces::All => Ok(()),
            FromNamespaces::Same if gateway_namespace == route_namespace => Ok(()),
            FromNamespaces::Same => Err(NotAllowed::OtherNamespace),
            // Validation requires a selector with `Selector`; a missing one selects nothing.
            FromNamespaces::Selector => match &self.namespaces.selector {
                Some(s) if s.matches(namespace_labels) => Ok(()),
                _ => Err(NotAllowed::NotSelected {
                    namespace: route_namespace.to_owned(),
                }),
            },
        }
    }

    pub(crate) fn validate(&self, p: &mut Problems, f: &str) {
        let nf = format!("{f}.namespaces");
        match (&self.namespaces.from, &self.namespaces.selector) {
            (FromNamespaces::Selector, None) => p.error(
                format!("{nf}.selector"),
                "required when namespaces.from is Selector",
            ),
            (FromNamespaces::Selector, Some(s)) => s.validate(p, &format!("{nf}.selector")),
            (from, Some(_)) => p.warn(
                format!("{nf}.selector"),
                format!("ignored: namespaces.from is {from:?}, not Selector"),
            ),
            (_, None) => {}
        }
        p.max_items(&format!("{f}.kinds"), &self.kinds, MAX_ROUTE_KINDS);
        // As the Gateway API asks (the listener's `InvalidRouteKinds`): a kind the gateway does
        // not serve is left out and the listener goes on with the others, so a Gateway written
        // for several implementations (`[HTTPRoute, GRPCRoute]`) still serves its HTTPRoutes.
        let mut served = self.kinds.is_empty();
        for (i, k) in self.kinds.iter().enumerate() {
            if k.group == GATEWAY_API_GROUP && k.kind == HTTP_ROUTE_KIND {
                served = true;
            } else {
                p.warn(
                    format!("{f}.kinds[{i}]"),
                    format!(
                        "route kind {:?} (group {:?}) is not served (only HTTPRoute, group {GATEWAY_API_GROUP}): left out",
                        k.kind, k.group
                    ),
                );
            }
        }
        if !served {
            p.warn(
                format!("{f}.kinds"),
                "lists no kind wasmgate serves: no route attaches to this listener",
            );
        }
    }
}

impl fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAllowed::OtherNamespace => f.write_str("allowedRoutes.namespaces.from: Same"),
            NotAllowed::NotSelected { namespace } => write!(
                f,
                "allowedRoutes.namespaces.selector does not select namespace {namespace}"
            ),
            NotAllowed::Kind { kind } => write!(f, "allowedRoutes.kinds does not include {kind}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;
    use crate::selector::tests::labels;

    #[test]
    fn from_same_all_and_selector() {
        let none = labels(&[]);
        let same = AllowedRoutes::default();
        assert_eq!(same.admits("gw", "gw", HTTP_ROUTE_KIND, &none), Ok(()));
        assert_eq!(
            same.admits("gw", "apps", HTTP_ROUTE_KIND, &none),
            Err(NotAllowed::OtherNamespace)
        );
        let all = AllowedRoutes {
            namespaces: RouteNamespaces {
                from: FromNamespaces::All,
                selector: None,
            },
            kinds: vec![],
        };
        assert_eq!(all.admits("gw", "apps", HTTP_ROUTE_KIND, &none), Ok(()));
        let selected = AllowedRoutes {
            namespaces: RouteNamespaces {
                from: FromNamespaces::Selector,
                selector: Some(LabelSelector {
                    match_labels: labels(&[("shared-gateway-access", "true")]),
                    ..LabelSelector::default()
                }),
            },
            kinds: vec![],
        };
        let access = labels(&[("shared-gateway-access", "true")]);
        assert_eq!(
            selected.admits("gw", "apps", HTTP_ROUTE_KIND, &access),
            Ok(())
        );
        let refused = selected.admits("gw", "gw", HTTP_ROUTE_KIND, &none);
        assert_eq!(
            refused.unwrap_err().to_string(),
            "allowedRoutes.namespaces.selector does not select namespace gw",
            "a selector applies to the Gateway's own namespace too"
        );
    }

    #[test]
    fn kinds_default_to_http_route() {
        let none = labels(&[]);
        assert!(
            AllowedRoutes::default()
                .admits("a", "a", "GRPCRoute", &none)
                .is_err()
        );
        let listed = AllowedRoutes {
            kinds: vec![RouteGroupKind {
                group: GATEWAY_API_GROUP.into(),
                kind: HTTP_ROUTE_KIND.into(),
            }],
            ..AllowedRoutes::default()
        };
        assert_eq!(listed.admits("a", "a", HTTP_ROUTE_KIND, &none), Ok(()));
        assert_eq!(
            listed
                .admits("a", "a", "TLSRoute", &none)
                .unwrap_err()
                .to_string(),
            "allowedRoutes.kinds does not include TLSRoute"
        );
    }

    fn kind(kind: &str) -> RouteGroupKind {
        RouteGroupKind {
            group: GATEWAY_API_GROUP.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn kinds_not_served_are_left_out_with_a_warning() {
        let none = labels(&[]);
        let mixed = AllowedRoutes {
            kinds: vec![kind("GRPCRoute"), kind(HTTP_ROUTE_KIND)],
            ..AllowedRoutes::default()
        };
        let mut p = Problems::default();
        mixed.validate(&mut p, "l");
        assert!(p.errors.is_empty(), "{p:?}");
        assert_eq!(p.warnings.len(), 1, "{p:?}");
        assert_eq!(p.warnings[0].0, "l.kinds[0]");
        assert_eq!(mixed.admits("a", "a", HTTP_ROUTE_KIND, &none), Ok(()));

        let unserved = AllowedRoutes {
            kinds: vec![kind("GRPCRoute")],
            ..AllowedRoutes::default()
        };
        let mut p = Problems::default();
        unserved.validate(&mut p, "l");
        assert!(p.errors.is_empty(), "{p:?}");
        assert!(
            p.warnings
                .iter()
                .any(|(f, m)| f == "l.kinds" && m.contains("no route attaches")),
            "{p:?}"
        );
        assert!(unserved.admits("a", "a", HTTP_ROUTE_KIND, &none).is_err());
    }
}
