//! The validation collector and the small syntax checks shared by several kinds.

use std::collections::BTreeMap;

use crate::limits::{MAX_LABEL_NAME_LEN, MAX_LABEL_VALUE_LEN, MAX_NAME_LEN};

/// Problems found in one document: errors reject the document, warnings are reported and the
/// document is used. Field paths are relative to the document root (`spec.rules[0]...`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Problems {
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
    /// Fields serde already reported (see `parse::deserialize`).
    pub serde_fields: Vec<String>,
}

impl Problems {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push((field.into(), message.into()));
    }

    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((field.into(), message.into()));
    }

    /// A field of an upstream API that wasmgate accepts but does not act on.
    pub fn ignored(&mut self, field: impl Into<String>) {
        self.warn(field, "accepted but ignored by wasmgate");
    }

    /// Checks a list length against an upstream bound.
    pub fn max_items<T>(&mut self, field: &str, items: &[T], max: usize) {
        if items.len() > max {
            self.error(field, format!("must have at most {max} items"));
        }
    }
}

/// DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
pub(crate) fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters (Kubernetes object names).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.split('.').all(|l| is_dns_label(l, 63))
}

/// A Gateway API `Hostname`: a DNS subdomain, optionally prefixed by `*.`; IP addresses are not hostnames.
pub(crate) fn check_hostname(p: &mut Problems, field: &str, host: &str, allow_wildcard: bool) {
    let bare = if allow_wildcard {
        host.strip_prefix("*.").unwrap_or(host)
    } else {
        host
    };
    if host.len() > crate::limits::MAX_HOSTNAME_LEN || !is_dns_subdomain(bare) {
        let wildcard = if allow_wildcard {
            " (a leading \"*.\" wildcard is allowed)"
        } else {
            ""
        };
        p.error(
            field,
            format!("invalid hostname {host:?}: must be a lowercase RFC 1123 DNS name{wildcard}"),
        );
    } else if host.parse::<std::net::Ipv4Addr>().is_ok() {
        p.error(
            field,
            format!("invalid hostname {host:?}: IP addresses are not allowed"),
        );
    }
}

/// An HTTP header name (RFC 7230 token).
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// The metadata checks every resource gets. A cluster-scoped one has an empty namespace.
pub(crate) fn check_metadata(
    p: &mut Problems,
    meta: &crate::meta::ObjectMeta,
    cluster_scoped: bool,
) {
    if meta.name.is_empty() {
        p.error("metadata.name", "required");
    } else if !is_dns_subdomain(&meta.name) {
        p.error(
            "metadata.name",
            format!(
                "invalid name {:?}: must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.')",
                meta.name
            ),
        );
    }
    if !cluster_scoped && !is_dns_label(&meta.namespace, crate::limits::MAX_NAMESPACE_LEN) {
        p.error(
            "metadata.namespace",
            format!(
                "invalid namespace {:?}: must be a lowercase RFC 1123 label",
                meta.namespace
            ),
        );
    }
    check_labels(p, "metadata.labels", &meta.labels);
}

/// Kubernetes label syntax: key `[prefix/]name`, value empty or alphanumeric-bounded, both ≤ 63.
pub(crate) fn check_labels(p: &mut Problems, field: &str, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        if let Some(why) = label_key_problem(key) {
            p.error(
                format!("{field}.{key}"),
                format!("invalid label key: {why}"),
            );
        }
        if !is_label_value(value) {
            p.error(
                format!("{field}.{key}"),
                format!(
                    "invalid label value {value:?}: at most {MAX_LABEL_VALUE_LEN} characters, alphanumeric at both ends, \
                     '-', '_' and '.' inside"
                ),
            );
        }
    }
}

pub(crate) fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Some(format!("prefix {prefix:?} must be a DNS subdomain"));
    }
    if name.is_empty() || name.len() > MAX_LABEL_NAME_LEN || !is_label_word(name) {
        return Some(format!(
            "name {name:?} must be 1 to {MAX_LABEL_NAME_LEN} characters, alphanumeric at both ends, '-', '_' and '.' inside"
        ));
    }
    None
}

pub(crate) fn is_label_value(v: &str) -> bool {
    v.is_empty() || (v.len() <= MAX_LABEL_VALUE_LEN && is_label_word(v))
}

fn is_label_word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("bookinfo-gateway.v1"));
        assert!(!is_dns_subdomain("Bookinfo"));
        assert!(!is_dns_subdomain("-x"));
        assert!(!is_dns_subdomain(""));
        assert!(is_dns_label("istio-system", 63));
        assert!(!is_dns_label("a.b", 63));
        assert!(is_header_name("x-request-id"));
        assert!(!is_header_name("bad header"));
        assert!(label_key_problem("app.kubernetes.io/name").is_none());
        assert!(label_key_problem("istio").is_none());
        assert!(label_key_problem("*").is_some());
        assert!(label_key_problem("").is_some());
        assert!(is_label_value(""));
        assert!(!is_label_value("a*"));
    }

    #[test]
    fn hostnames() {
        let check = |h: &str, wild| {
            let mut p = Problems::default();
            check_hostname(&mut p, "f", h, wild);
            p.errors.is_empty()
        };
        assert!(check("bookinfo.example.com", false));
        assert!(check("*.example.com", true));
        assert!(!check("*.example.com", false));
        assert!(!check("10.0.0.1", false));
        assert!(!check("Example.com", false));
    }
}
