//! Compiled HTTPRoute filters: header modifiers, redirects and URL rewrites.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// `RequestHeaderModifier` / `ResponseHeaderModifier`: set (replace), add (append), remove.
#[derive(Debug, Clone, Default)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// The operations a header container offers; implemented for Pingora's request and response
/// headers (which keep header-name case) and for `http::HeaderMap` in tests.
pub trait HeaderSink {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue);
    fn append(&mut self, name: &HeaderName, value: &HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

impl HeaderSink for HeaderMap {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.insert(name.clone(), value.clone());
    }
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        HeaderMap::append(self, name.clone(), value.clone());
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
}

impl HeaderModifier {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies in the Gateway API order: set, then add, then remove.
    pub fn apply(&self, h: &mut impl HeaderSink) {
        for (n, v) in &self.set {
            h.set(n, v);
        }
        for (n, v) in &self.add {
            h.append(n, v);
        }
        for n in &self.remove {
            h.remove(n);
        }
    }
}

/// How a redirect or rewrite changes the path.
#[derive(Debug, Clone)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path matched by the rule's `PathPrefix`.
    ReplacePrefixMatch(String),
}

impl PathModifier {
    /// The new path. `matched_prefix_len` is how much of `path` the matching `PathPrefix` covered
    /// (`None` when the match was not a prefix: `ReplacePrefixMatch` then keeps the path).
    pub fn apply(&self, path: &str, matched_prefix_len: Option<usize>) -> String {
        match self {
            Self::ReplaceFullPath(p) => p.clone(),
            Self::ReplacePrefixMatch(replacement) => {
                let Some(n) = matched_prefix_len else {
                    return path.to_owned();
                };
                let rest = path.get(n..).unwrap_or("");
                let mut out = String::with_capacity(replacement.len() + rest.len());
                out.push_str(replacement);
                // "/foo" + "/bar" must give "/foo/bar", "/" + "/bar" must give "/bar", not "//bar".
                if out.ends_with('/') && rest.starts_with('/') {
                    out.pop();
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

/// `RequestRedirect`.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    pub status: StatusCode,
}

/// What a redirect needs to know about the request.
pub struct RedirectInput<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched_prefix_len: Option<usize>,
}

impl Redirect {
    /// The `Location` header value, per the Gateway API port rules: an explicit port wins; with an
    /// explicit scheme the scheme's well-known port; otherwise the listener's port. Well-known ports
    /// (80 for http, 443 for https) are left out of the URL.
    pub fn location(&self, r: &RedirectInput<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(r.scheme);
        let host = self.hostname.as_deref().unwrap_or(r.host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => p,
            (None, Some(s)) if s.eq_ignore_ascii_case("https") => 443,
            (None, Some(_)) => 80,
            (None, None) => r.listener_port,
        };
        let default_port = matches!((scheme, port), ("http", 80) | ("https", 443));
        let path = match &self.path {
            Some(m) => m.apply(r.path, r.matched_prefix_len),
            None => r.path.to_owned(),
        };
        let mut loc = format!("{scheme}://{host}");
        if !default_port {
            loc.push(':');
            loc.push_str(&port.to_string());
        }
        loc.push_str(&path);
        if let Some(q) = r.query {
            loc.push('?');
            loc.push_str(q);
        }
        loc
    }
}

/// `URLRewrite`.
#[derive(Debug, Clone, Default)]
pub struct UrlRewrite {
    pub hostname: Option<HeaderValue>,
    pub path: Option<PathModifier>,
}

/// Every filter of one rule, compiled and grouped by the phase it acts in.
#[derive(Debug, Clone, Default)]
pub struct RuleFilters {
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<UrlRewrite>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_match_keeps_segments() {
        let m = |r: &str, path: &str, n| {
            PathModifier::ReplacePrefixMatch(r.into()).apply(path, Some(n))
        };
        assert_eq!(m("/xyz", "/foo/bar", 4), "/xyz/bar");
        assert_eq!(m("/xyz/", "/foo/bar", 4), "/xyz/bar");
        assert_eq!(m("/", "/foo/bar", 4), "/bar");
        assert_eq!(m("/", "/foo", 4), "/");
        assert_eq!(m("/xyz", "/foo", 4), "/xyz");
        assert_eq!(m("/new", "/anything", 0), "/new/anything");
    }

    #[test]
    fn header_modifier_sets_adds_then_removes() {
        let hm = HeaderModifier {
            set: vec![(HeaderName::from_static("a"), HeaderValue::from_static("1"))],
            add: vec![(HeaderName::from_static("b"), HeaderValue::from_static("2"))],
            remove: vec![HeaderName::from_static("c")],
        };
        let mut h = HeaderMap::new();
        h.insert("a", "0".parse().unwrap());
        h.insert("b", "1".parse().unwrap());
        h.insert("c", "x".parse().unwrap());
        hm.apply(&mut h);
        assert_eq!(h.get("a").unwrap(), "1");
        assert_eq!(h.get_all("b").iter().count(), 2);
        assert!(h.get("c").is_none());
    }

    #[test]
    fn redirect_location_follows_port_rules() {
        let input = RedirectInput {
            scheme: "http",
            host: "example.com",
            listener_port: 8080,
            path: "/a",
            query: Some("x=1"),
            matched_prefix_len: None,
        };
        let r = |scheme: Option<&str>, port| Redirect {
            scheme: scheme.map(str::to_owned),
            hostname: None,
            path: None,
            port,
            status: StatusCode::FOUND,
        };
        assert_eq!(
            r(None, None).location(&input),
            "http://example.com:8080/a?x=1"
        );
        assert_eq!(
            r(Some("https"), None).location(&input),
            "https://example.com/a?x=1"
        );
        assert_eq!(
            r(Some("https"), Some(8443)).location(&input),
            "https://example.com:8443/a?x=1"
        );
        assert_eq!(
            r(None, Some(80)).location(&input),
            "http://example.com/a?x=1"
        );
    }
}
