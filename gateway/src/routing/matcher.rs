//! Compiled HTTPRoute matches: path, headers, query parameters, method. All of one match must hold.

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// A compiled path match. Prefixes match on `/` segment boundaries.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing `/` (except the root `/`), so `/abc/` and `/abc` behave alike.
    Prefix(String),
    /// Anchored: the whole path must match.
    Regex(Regex),
}

impl PathMatch {
    pub fn prefix(p: &str) -> Self {
        let trimmed = p.trim_end_matches('/');
        Self::Prefix(if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => {
                p == "/"
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            Self::Regex(r) => r.is_match(path),
        }
    }

    /// Length of the prefix this match consumed (for `ReplacePrefixMatch`); `None` if not a prefix.
    pub fn prefix_len(&self) -> Option<usize> {
        match self {
            Self::Prefix(p) if p == "/" => Some(0),
            Self::Prefix(p) => Some(p.len()),
            _ => None,
        }
    }
}

/// A value match on a header or query parameter.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => e == v,
            Self::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Query parameter names are compared case-sensitively (Gateway API).
    pub name: String,
    pub value: ValueMatch,
}

/// One `HTTPRouteMatch`. An absent `matches` list compiles to a single `PathPrefix /`.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub method: Option<Method>,
}

impl RouteMatch {
    pub fn any() -> Self {
        Self {
            path: PathMatch::prefix("/"),
            headers: vec![],
            query: vec![],
            method: None,
        }
    }

    /// `path` excludes the query string; `query` is the raw query (without `?`).
    pub fn matches(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> bool {
        if let Some(m) = &self.method
            && m != method
        {
            return false;
        }
        if !self.path.matches(path) {
            return false;
        }
        for h in &self.headers {
            // Several lines of one header are joined with "," as HTTP allows; one line is the norm.
            let mut values = headers.get_all(&h.name).iter();
            let Some(first) = values.next() else {
                return false;
            };
            let ok = match values.next() {
                None => first.to_str().is_ok_and(|v| h.value.matches(v)),
                Some(second) => {
                    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
                    for v in std::iter::once(second).chain(values) {
                        joined.push(',');
                        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    h.value.matches(&joined)
                }
            };
            if !ok {
                return false;
            }
        }
        for q in &self.query {
            // The first occurrence of a repeated parameter counts (Gateway API: implementation
            // specific; Envoy does the same).
            let found = query.and_then(|qs| {
                qs.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == q.name).then_some(v)
                })
            });
            match found {
                Some(v) if q.value.matches(&percent_decode(v)) => {}
                _ => return false,
            }
        }
        true
    }
}

/// Decodes `%XX` and `+` in a query value; borrows when there is nothing to decode.
fn percent_decode(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.bytes().any(|b| b == b'%' || b == b'+') {
        return std::borrow::Cow::Borrowed(v);
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Compiles a route regex anchored to the whole value, with a bounded program size.
pub fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(crate::limits::REGEX_SIZE_LIMIT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let p = PathMatch::prefix("/abc");
        assert!(p.matches("/abc"));
        assert!(p.matches("/abc/"));
        assert!(p.matches("/abc/def"));
        assert!(!p.matches("/abcd"));
        let p = PathMatch::prefix("/abc/");
        assert!(p.matches("/abc"));
        assert!(p.matches("/abc/def"));
        assert!(!p.matches("/abcd"));
        assert!(PathMatch::prefix("/").matches("/anything"));
    }

    #[test]
    fn regex_is_anchored() {
        let p = PathMatch::Regex(anchored_regex("/v[0-9]+/.*").unwrap());
        assert!(p.matches("/v1/x"));
        assert!(!p.matches("/api/v1/x"));
    }

    #[test]
    fn headers_query_and_method_all_must_hold() {
        let m = RouteMatch {
            path: PathMatch::prefix("/"),
            headers: vec![HeaderMatch {
                name: HeaderName::from_static("x-env"),
                value: ValueMatch::Exact("canary".into()),
            }],
            query: vec![QueryMatch {
                name: "v".into(),
                value: ValueMatch::Regex(anchored_regex("[0-9]+").unwrap()),
            }],
            method: Some(Method::POST),
        };
        let mut h = HeaderMap::new();
        h.insert("x-env", "canary".parse().unwrap());
        assert!(m.matches(&Method::POST, "/x", Some("a=1&v=42"), &h));
        assert!(!m.matches(&Method::GET, "/x", Some("v=42"), &h));
        assert!(!m.matches(&Method::POST, "/x", Some("v=abc"), &h));
        assert!(!m.matches(&Method::POST, "/x", None, &h));
        assert!(!m.matches(&Method::POST, "/x", Some("v=42"), &HeaderMap::new()));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
