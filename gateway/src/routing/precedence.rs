//! The order in which route matches are tried, exactly as the Gateway API HTTPRouteRule doc says:
//! 1. the most specific hostname (exact, then the longest wildcard, then none);
//! 2. "Exact" path match over "Prefix"; among prefixes the most characters;
//! 3. a method match; 4. the most header matches; 5. the most query-param matches;
//! 6. ties: the oldest route (creationTimestamp, else first-seen order), then "namespace/name"
//!    alphabetically, then rule order, then match order within the rule.
//!
//! `RegularExpression` paths are not ranked by the spec (implementation specific): we put them after
//! `Exact` and before every prefix, so a catch-all `PathPrefix /` never shadows a regex.

use std::cmp::Ordering;

use super::host::HostPattern;
use super::matcher::{PathMatch, RouteMatch};

/// A sort key: smaller sorts first (tried first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precedence {
    host: (u8, usize),
    path_kind: u8,
    path_len: usize,
    has_method: bool,
    headers: usize,
    query: usize,
    /// Creation order of the route: `(unix seconds, nanos, first-seen sequence)`.
    pub age: (i64, u32, u64),
    pub route_name: String,
    pub rule_index: usize,
    pub match_index: usize,
}

impl Precedence {
    pub fn new(
        host: &HostPattern,
        m: &RouteMatch,
        age: (i64, u32, u64),
        route_name: String,
        rule_index: usize,
        match_index: usize,
    ) -> Self {
        let (path_kind, path_len) = match &m.path {
            PathMatch::Exact(p) => (3, p.len()),
            PathMatch::Regex(r) => (2, r.as_str().len()),
            PathMatch::Prefix(p) => (1, p.len()),
        };
        Self {
            host: host.rank(),
            path_kind,
            path_len,
            has_method: m.method.is_some(),
            headers: m.headers.len(),
            query: m.query.len(),
            age,
            route_name,
            rule_index,
            match_index,
        }
    }
}

impl Ord for Precedence {
    fn cmp(&self, o: &Self) -> Ordering {
        // Specificity descending, then age/name/index ascending.
        o.host
            .cmp(&self.host)
            .then(o.path_kind.cmp(&self.path_kind))
            .then(o.path_len.cmp(&self.path_len))
            .then(o.has_method.cmp(&self.has_method))
            .then(o.headers.cmp(&self.headers))
            .then(o.query.cmp(&self.query))
            .then(self.age.cmp(&o.age))
            .then(self.route_name.cmp(&o.route_name))
            .then(self.rule_index.cmp(&o.rule_index))
            .then(self.match_index.cmp(&o.match_index))
    }
}

impl PartialOrd for Precedence {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
