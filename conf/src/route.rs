//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`, `v1beta1`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::duration::GatewayDuration;
use crate::limits::*;
use crate::meta::ObjectMeta;
use crate::validate::{Problems, check_hostname, is_dns_subdomain, is_header_name};

/// An `HTTPRoute`. After parsing, every rule has at least one match (a rule written without
/// matches gets the Gateway API default, `PathPrefix /`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpRoute {
    pub metadata: ObjectMeta,
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
    /// Accepted, ignored (experimental).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default_gateways: Option<serde_json::Value>,
}

/// The Gateway (and optionally listener) a route attaches to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    #[serde(default = "default_gateway_group")]
    pub group: String,
    #[serde(default = "default_gateway_kind")]
    pub kind: String,
    /// Defaults to the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    /// A listener name of the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A listener port of the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

fn default_gateway_group() -> String {
    GATEWAY_API_GROUP.to_owned()
}
fn default_gateway_kind() -> String {
    "Gateway".to_owned()
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Never empty after parsing (see [`HttpRoute`]).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Accepted, ignored (experimental).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<serde_json::Value>,
    /// Accepted, ignored (experimental).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Defaults to `PathPrefix /`.
    #[serde(default)]
    pub path: PathMatch,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HeaderMatch>,
    /// An HTTP method (`GET`, `POST`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default, rename = "type")]
    pub match_type: PathMatchType,
    #[serde(default = "default_path")]
    pub value: String,
}

fn default_path() -> String {
    "/".to_owned()
}

impl Default for PathMatch {
    fn default() -> Self {
        Self {
            match_type: PathMatchType::PathPrefix,
            value: default_path(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PathMatchType {
    /// Matches path segments: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    #[default]
    PathPrefix,
    Exact,
    RegularExpression,
}

/// A header or query parameter match (same shape in the Gateway API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    #[serde(default, rename = "type")]
    pub match_type: StringMatchType,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StringMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// A route filter. Exactly the field named by `filter_type` is set (validated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub filter_type: FilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(
        default,
        rename = "urlRewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<UrlRewrite>,
    /// Not supported yet (validation error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<serde_json::Value>,
    /// Not supported yet (validation error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<serde_json::Value>,
    /// Not supported yet (validation error; experimental upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<serde_json::Value>,
    /// Not supported yet (validation error; experimental upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
    ExtensionRef,
    #[serde(rename = "CORS")]
    Cors,
    ExternalAuth,
}

impl FilterType {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterType::RequestHeaderModifier => "RequestHeaderModifier",
            FilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
            FilterType::RequestRedirect => "RequestRedirect",
            FilterType::UrlRewrite => "URLRewrite",
            FilterType::RequestMirror => "RequestMirror",
            FilterType::ExtensionRef => "ExtensionRef",
            FilterType::Cors => "CORS",
            FilterType::ExternalAuth => "ExternalAuth",
        }
    }
}

/// `set` replaces, `add` appends, `remove` deletes (header names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`; default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), and the extended 303, 307, 308.
    #[serde(default = "default_redirect_status")]
    pub status_code: u16,
}

fn default_redirect_status() -> u16 {
    302
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifier {
    #[serde(rename = "type")]
    pub modifier_type: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    #[serde(default)]
    pub group: String,
    #[serde(default = "default_backend_kind")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// Defaults to the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Required for Service backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Relative weight, default 1; 0 means no traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Not supported yet (validation error when non-empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

fn default_backend_kind() -> String {
    "Service".to_owned()
}
fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// Whole request, downstream start to response end; `0s` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GatewayDuration>,
    /// One upstream attempt; `0s` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<GatewayDuration>,
}

impl HttpRouteTimeouts {
    /// `request` as a timeout (`None` when unset or `0s`).
    pub fn request_timeout(&self) -> Option<std::time::Duration> {
        self.request.as_ref().and_then(GatewayDuration::as_timeout)
    }

    /// `backendRequest` as a timeout (`None` when unset or `0s`).
    pub fn backend_request_timeout(&self) -> Option<std::time::Duration> {
        self.backend_request
            .as_ref()
            .and_then(GatewayDuration::as_timeout)
    }
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

// === impl HttpRoute ===

impl HttpRoute {
    /// Applies the Gateway API defaults that depend on other fields (a rule without matches).
    pub(crate) fn normalize(&mut self) {
        for rule in &mut self.spec.rules {
            if rule.matches.is_empty() {
                rule.matches.push(HttpRouteMatch::default());
            }
        }
    }

    /// The namespace a parentRef points into.
    pub fn parent_namespace<'a>(&'a self, parent: &'a ParentReference) -> &'a str {
        parent
            .namespace
            .as_deref()
            .unwrap_or(&self.metadata.namespace)
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        let spec = &self.spec;
        if spec.parent_refs.is_empty() {
            p.warn("spec.parentRefs", "empty: the route attaches to no Gateway");
        }
        p.max_items("spec.parentRefs", &spec.parent_refs, MAX_PARENT_REFS);
        for (i, r) in spec.parent_refs.iter().enumerate() {
            let f = format!("spec.parentRefs[{i}]");
            if r.group != GATEWAY_API_GROUP || r.kind != "Gateway" {
                p.error(
                    f.clone(),
                    format!(
                        "only Gateway parents are supported (got group {:?}, kind {:?})",
                        r.group, r.kind
                    ),
                );
            }
            if r.name.is_empty() {
                p.error(format!("{f}.name"), "required");
            }
            if let Some(s) = &r.section_name
                && !is_dns_subdomain(s)
            {
                p.error(
                    format!("{f}.sectionName"),
                    format!("invalid section name {s:?}"),
                );
            }
            if r.port == Some(0) {
                p.error(format!("{f}.port"), "must be between 1 and 65535");
            }
        }
        p.max_items("spec.hostnames", &spec.hostnames, MAX_ROUTE_HOSTNAMES);
        for (i, h) in spec.hostnames.iter().enumerate() {
            check_hostname(p, &format!("spec.hostnames[{i}]"), h, true);
        }
        p.max_items("spec.rules", &spec.rules, MAX_RULES);
        let mut rule_names = HashSet::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            if let Some(name) = &rule.name
                && !rule_names.insert(name.as_str())
            {
                p.error(format!("{f}.name"), format!("duplicate rule name {name:?}"));
            }
            rule.validate(p, &f);
        }
        if spec.use_default_gateways.is_some() {
            p.ignored("spec.useDefaultGateways");
        }
    }
}

// === impl HttpRouteRule ===

impl HttpRouteRule {
    fn validate(&self, p: &mut Problems, f: &str) {
        if let Some(name) = &self.name
            && !is_dns_subdomain(name)
        {
            p.error(format!("{f}.name"), format!("invalid rule name {name:?}"));
        }
        p.max_items(&format!("{f}.matches"), &self.matches, MAX_MATCHES);
        for (i, m) in self.matches.iter().enumerate() {
            m.validate(p, &format!("{f}.matches[{i}]"));
        }
        p.max_items(&format!("{f}.filters"), &self.filters, MAX_FILTERS);
        validate_filters(p, &format!("{f}.filters"), &self.filters);
        let count = |t: FilterType| self.filters.iter().filter(|x| x.filter_type == t).count();
        if count(FilterType::RequestRedirect) > 0 && count(FilterType::UrlRewrite) > 0 {
            p.error(
                format!("{f}.filters"),
                "may specify either RequestRedirect or URLRewrite, but not both",
            );
        }
        if count(FilterType::RequestRedirect) > 0 && !self.backend_refs.is_empty() {
            p.error(
                format!("{f}.backendRefs"),
                "must be empty when a RequestRedirect filter is used",
            );
        }
        // ReplacePrefixMatch needs exactly one PathPrefix match to know which prefix to replace.
        let replaces_prefix = self.filters.iter().any(|x| {
            let path = match x.filter_type {
                FilterType::RequestRedirect => {
                    x.request_redirect.as_ref().and_then(|r| r.path.as_ref())
                }
                FilterType::UrlRewrite => x.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
                _ => None,
            };
            path.is_some_and(|m| m.modifier_type == PathModifierType::ReplacePrefixMatch)
        });
        if replaces_prefix
            && !(self.matches.len() == 1
                && self.matches[0].path.match_type == PathMatchType::PathPrefix)
        {
            p.error(
                format!("{f}.matches"),
                "a filter with path.type ReplacePrefixMatch requires exactly one match, of path type PathPrefix",
            );
        }
        p.max_items(
            &format!("{f}.backendRefs"),
            &self.backend_refs,
            MAX_BACKEND_REFS,
        );
        for (i, b) in self.backend_refs.iter().enumerate() {
            b.validate(p, &format!("{f}.backendRefs[{i}]"));
        }
        if let Some(t) = &self.timeouts
            && let (Some(req), Some(backend)) = (t.request_timeout(), t.backend_request_timeout())
            && backend > req
        {
            p.error(
                format!("{f}.timeouts.backendRequest"),
                "must not be longer than timeouts.request",
            );
        }
        if self.retry.is_some() {
            p.ignored(format!("{f}.retry"));
        }
        if self.session_persistence.is_some() {
            p.ignored(format!("{f}.sessionPersistence"));
        }
    }
}

// === impl HttpRouteMatch ===

impl HttpRouteMatch {
    fn validate(&self, p: &mut Problems, f: &str) {
        let pf = format!("{f}.path.value");
        let v = &self.path.value;
        match self.path.match_type {
            PathMatchType::PathPrefix | PathMatchType::Exact => {
                if !v.starts_with('/') {
                    p.error(pf, "must start with \"/\"");
                } else if v.len() > MAX_PATH_LEN {
                    p.error(pf, format!("must be at most {MAX_PATH_LEN} characters"));
                } else if let Some(bad) = ["//", "/./", "/../", "%2f", "%2F", "#"]
                    .into_iter()
                    .find(|s| v.contains(s))
                {
                    p.error(pf, format!("must not contain {bad:?}"));
                } else if v.ends_with("/..") || v.ends_with("/.") {
                    p.error(pf, "must not end with \"/..\" or \"/.\"");
                }
            }
            PathMatchType::RegularExpression => check_regex(p, &pf, v),
        }
        p.max_items(&format!("{f}.headers"), &self.headers, MAX_HEADER_MATCHES);
        let mut names = HashSet::new();
        for (i, h) in self.headers.iter().enumerate() {
            let hf = format!("{f}.headers[{i}]");
            if !is_header_name(&h.name) {
                p.error(
                    format!("{hf}.name"),
                    format!("invalid header name {:?}", h.name),
                );
            } else if !names.insert(h.name.to_ascii_lowercase()) {
                p.error(
                    format!("{hf}.name"),
                    format!(
                        "duplicate header match {:?} (names are case-insensitive)",
                        h.name
                    ),
                );
            }
            check_match_value(p, &hf, h);
        }
        p.max_items(
            &format!("{f}.queryParams"),
            &self.query_params,
            MAX_QUERY_MATCHES,
        );
        let mut names = HashSet::new();
        for (i, q) in self.query_params.iter().enumerate() {
            let qf = format!("{f}.queryParams[{i}]");
            if q.name.is_empty() || q.name.len() > 256 {
                p.error(format!("{qf}.name"), "must be 1 to 256 characters");
            } else if !names.insert(q.name.as_str()) {
                p.error(
                    format!("{qf}.name"),
                    format!("duplicate query parameter match {:?}", q.name),
                );
            }
            check_match_value(p, &qf, q);
        }
        if let Some(m) = &self.method
            && !METHODS.contains(&m.as_str())
        {
            p.error(
                format!("{f}.method"),
                format!("unsupported method {m:?} (one of {})", METHODS.join(", ")),
            );
        }
    }
}

fn check_match_value(p: &mut Problems, f: &str, m: &HeaderMatch) {
    let vf = format!("{f}.value");
    if m.value.len() > MAX_HEADER_VALUE_LEN {
        p.error(
            vf,
            format!("must be at most {MAX_HEADER_VALUE_LEN} characters"),
        );
    } else if m.match_type == StringMatchType::RegularExpression {
        check_regex(p, &vf, &m.value);
    }
}

fn check_regex(p: &mut Problems, f: &str, re: &str) {
    if let Err(e) = regex::Regex::new(re) {
        // regex's message spans several lines with a caret diagram; keep the last line (the reason).
        let msg = e.to_string();
        let reason = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(&msg)
            .trim();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        p.error(f, format!("invalid regular expression: {reason}"));
    }
}

fn validate_filters(p: &mut Problems, f: &str, filters: &[HttpRouteFilter]) {
    let mut seen = HashSet::new();
    for (i, filter) in filters.iter().enumerate() {
        let ff = format!("{f}[{i}]");
        filter.validate(p, &ff);
        let t = filter.filter_type;
        if matches!(
            t,
            FilterType::RequestHeaderModifier
                | FilterType::ResponseHeaderModifier
                | FilterType::RequestRedirect
                | FilterType::UrlRewrite
        ) && !seen.insert(t)
        {
            p.error(
                format!("{ff}.type"),
                format!("{} filter cannot be repeated", t.as_str()),
            );
        }
    }
}

// === impl HttpRouteFilter ===

impl HttpRouteFilter {
    fn validate(&self, p: &mut Problems, f: &str) {
        let fields: [(FilterType, &str, bool); 8] = [
            (
                FilterType::RequestHeaderModifier,
                "requestHeaderModifier",
                self.request_header_modifier.is_some(),
            ),
            (
                FilterType::ResponseHeaderModifier,
                "responseHeaderModifier",
                self.response_header_modifier.is_some(),
            ),
            (
                FilterType::RequestRedirect,
                "requestRedirect",
                self.request_redirect.is_some(),
            ),
            (
                FilterType::UrlRewrite,
                "urlRewrite",
                self.url_rewrite.is_some(),
            ),
            (
                FilterType::RequestMirror,
                "requestMirror",
                self.request_mirror.is_some(),
            ),
            (
                FilterType::ExtensionRef,
                "extensionRef",
                self.extension_ref.is_some(),
            ),
            (FilterType::Cors, "cors", self.cors.is_some()),
            (
                FilterType::ExternalAuth,
                "externalAuth",
                self.external_auth.is_some(),
            ),
        ];
        for (t, name, present) in fields {
            if t == self.filter_type && !present {
                p.error(
                    format!("{f}.{name}"),
                    format!("required for filter type {}", t.as_str()),
                );
            } else if t != self.filter_type && present {
                p.error(
                    format!("{f}.{name}"),
                    format!("must not be set when type is {}", self.filter_type.as_str()),
                );
            }
        }
        match self.filter_type {
            FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
                let (m, name) = match self.filter_type {
                    FilterType::RequestHeaderModifier => {
                        (&self.request_header_modifier, "requestHeaderModifier")
                    }
                    _ => (&self.response_header_modifier, "responseHeaderModifier"),
                };
                if let Some(m) = m {
                    m.validate(p, &format!("{f}.{name}"));
                }
            }
            FilterType::RequestRedirect => {
                if let Some(r) = &self.request_redirect {
                    r.validate(p, &format!("{f}.requestRedirect"));
                }
            }
            FilterType::UrlRewrite => {
                if let Some(r) = &self.url_rewrite {
                    if let Some(h) = &r.hostname {
                        check_hostname(p, &format!("{f}.urlRewrite.hostname"), h, false);
                    }
                    if let Some(m) = &r.path {
                        m.validate(p, &format!("{f}.urlRewrite.path"));
                    }
                }
            }
            t @ (FilterType::RequestMirror
            | FilterType::ExtensionRef
            | FilterType::Cors
            | FilterType::ExternalAuth) => {
                p.error(
                    format!("{f}.type"),
                    format!("filter type {} is not supported yet", t.as_str()),
                );
            }
        }
    }
}

// === impl HeaderModifier ===

impl HeaderModifier {
    fn validate(&self, p: &mut Problems, f: &str) {
        for (list, name) in [(&self.set, "set"), (&self.add, "add")] {
            p.max_items(&format!("{f}.{name}"), list, MAX_HEADER_MODIFIERS);
            let mut names = HashSet::new();
            for (i, h) in list.iter().enumerate() {
                let hf = format!("{f}.{name}[{i}].name");
                if !is_header_name(&h.name) {
                    p.error(hf, format!("invalid header name {:?}", h.name));
                } else if !names.insert(h.name.to_ascii_lowercase()) {
                    p.error(
                        hf,
                        format!("duplicate header {:?} (names are case-insensitive)", h.name),
                    );
                }
                if h.value.len() > MAX_HEADER_VALUE_LEN
                    || h.value.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0)
                {
                    p.error(
                        format!("{f}.{name}[{i}].value"),
                        format!("must be at most {MAX_HEADER_VALUE_LEN} characters without CR, LF or NUL"),
                    );
                }
            }
        }
        p.max_items(&format!("{f}.remove"), &self.remove, MAX_HEADER_MODIFIERS);
        let mut names = HashSet::new();
        for (i, h) in self.remove.iter().enumerate() {
            let hf = format!("{f}.remove[{i}]");
            if !is_header_name(h) {
                p.error(hf, format!("invalid header name {h:?}"));
            } else if !names.insert(h.to_ascii_lowercase()) {
                p.error(
                    hf,
                    format!("duplicate header {h:?} (names are case-insensitive)"),
                );
            }
        }
    }
}

// === impl RequestRedirect ===

impl RequestRedirect {
    fn validate(&self, p: &mut Problems, f: &str) {
        if let Some(s) = &self.scheme
            && s != "http"
            && s != "https"
        {
            p.error(
                format!("{f}.scheme"),
                format!("unsupported scheme {s:?} (http or https)"),
            );
        }
        if let Some(h) = &self.hostname {
            check_hostname(p, &format!("{f}.hostname"), h, false);
        }
        if let Some(m) = &self.path {
            m.validate(p, &format!("{f}.path"));
        }
        if self.port == Some(0) {
            p.error(format!("{f}.port"), "must be between 1 and 65535");
        }
        if !matches!(self.status_code, 301 | 302 | 303 | 307 | 308) {
            p.error(
                format!("{f}.statusCode"),
                format!(
                    "unsupported status code {} (301, 302, 303, 307 or 308)",
                    self.status_code
                ),
            );
        }
    }
}

// === impl PathModifier ===

impl PathModifier {
    fn validate(&self, p: &mut Problems, f: &str) {
        let (wanted, wanted_name, other, other_name, type_name) = match self.modifier_type {
            PathModifierType::ReplaceFullPath => (
                &self.replace_full_path,
                "replaceFullPath",
                &self.replace_prefix_match,
                "replacePrefixMatch",
                "ReplaceFullPath",
            ),
            PathModifierType::ReplacePrefixMatch => (
                &self.replace_prefix_match,
                "replacePrefixMatch",
                &self.replace_full_path,
                "replaceFullPath",
                "ReplacePrefixMatch",
            ),
        };
        match wanted {
            None => p.error(
                format!("{f}.{wanted_name}"),
                format!("required when type is {type_name}"),
            ),
            Some(v) if !v.starts_with('/') => {
                p.error(format!("{f}.{wanted_name}"), "must start with \"/\"")
            }
            Some(v) if v.len() > MAX_PATH_LEN => p.error(
                format!("{f}.{wanted_name}"),
                format!("must be at most {MAX_PATH_LEN} characters"),
            ),
            Some(_) => {}
        }
        if other.is_some() {
            p.error(
                format!("{f}.{other_name}"),
                format!("must not be set when type is {type_name}"),
            );
        }
    }
}

// === impl HttpBackendRef ===

impl HttpBackendRef {
    /// The namespace of the referenced Service.
    pub fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(route_namespace)
    }

    fn validate(&self, p: &mut Problems, f: &str) {
        if !(self.group.is_empty() || self.group == "core") || self.kind != "Service" {
            p.error(
                f,
                format!(
                    "only core Service backends are supported (got group {:?}, kind {:?})",
                    self.group, self.kind
                ),
            );
        }
        if self.name.is_empty() {
            p.error(format!("{f}.name"), "required");
        } else if !is_dns_subdomain(&self.name) {
            p.error(format!("{f}.name"), format!("invalid name {:?}", self.name));
        }
        match self.port {
            None => p.error(format!("{f}.port"), "required for Service backends"),
            Some(0) => p.error(format!("{f}.port"), "must be between 1 and 65535"),
            Some(_) => {}
        }
        if self.weight > MAX_BACKEND_WEIGHT {
            p.error(
                format!("{f}.weight"),
                format!("must be between 0 and {MAX_BACKEND_WEIGHT}"),
            );
        }
        if !self.filters.is_empty() {
            p.error(
                format!("{f}.filters"),
                "backendRef filters are not supported yet",
            );
        }
    }
}
