//! Hostnames of listeners and routes: exact names and `*.suffix` wildcards (Gateway API semantics:
//! a wildcard matches one or more leading labels, never the bare suffix).

use std::fmt;

/// A hostname a listener or route accepts. `Any` is an absent hostname (matches every host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com` so a suffix test is one `ends_with`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a Gateway API hostname; case-insensitive, so stored lowercase.
    pub fn parse(s: &str) -> Self {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s == "*" {
            Self::Any
        } else if let Some(suffix) = s.strip_prefix('*') {
            Self::Wildcard(suffix.to_owned())
        } else {
            Self::Exact(s)
        }
    }

    /// Whether a request host (lowercase, port stripped) is accepted.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h == host,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    /// The hostname both accept, per the Gateway API listener/route intersection rules:
    /// the more specific of the two when one contains the other, else `None` (not attached).
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        use HostPattern::*;
        match (self, other) {
            (Any, x) | (x, Any) => Some(x.clone()),
            (Exact(a), Exact(b)) => (a == b).then(|| self.clone()),
            (Exact(a), w @ Wildcard(_)) | (w @ Wildcard(_), Exact(a)) => {
                w.matches(a).then(|| Exact(a.clone()))
            }
            (Wildcard(a), Wildcard(b)) => {
                if a.ends_with(b.as_str()) {
                    Some(self.clone())
                } else if b.ends_with(a.as_str()) {
                    Some(other.clone())
                } else {
                    None
                }
            }
        }
    }

    /// Specificity for hostname precedence: exact names first, then longer wildcards, `Any` last.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(h) => (2, h.len()),
            Self::Wildcard(s) => (1, s.len()),
            Self::Any => (0, 0),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// The request's host: `Host` header (or the HTTP/2 `:authority`), port stripped, lowercased only
/// when needed (no allocation for the common all-lowercase case).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let no_port = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a trailing :port.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let no_port = no_port.strip_suffix('.').unwrap_or(no_port);
    if no_port.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(no_port.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(no_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_one_or_more_labels_not_the_suffix() {
        let w = HostPattern::parse("*.example.com");
        assert!(w.matches("foo.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("fooexample.com"));
    }

    #[test]
    fn intersection_keeps_the_more_specific() {
        let p = HostPattern::parse;
        assert_eq!(
            p("*.example.com").intersect(&p("foo.example.com")),
            Some(p("foo.example.com"))
        );
        assert_eq!(
            p("foo.example.com").intersect(&p("*.example.com")),
            Some(p("foo.example.com"))
        );
        assert_eq!(
            p("*.example.com").intersect(&p("*.a.example.com")),
            Some(p("*.a.example.com"))
        );
        assert_eq!(p("a.com").intersect(&p("b.com")), None);
        assert_eq!(p("*.a.com").intersect(&p("*.b.com")), None);
        assert_eq!(HostPattern::Any.intersect(&p("x.com")), Some(p("x.com")));
    }

    #[test]
    fn request_host_is_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com"), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
    }
}
