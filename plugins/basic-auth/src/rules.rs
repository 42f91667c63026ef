//! Configuration and decision logic, free of host calls so it is unit-tested on the host.
//!
//! Follows istio-ecosystem/wasm-extensions `extensions/basic_auth/plugin.cc` rule for rule: same fields, same
//! errors, same matching order, same messages.

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Realm sent in `WWW-Authenticate` when the configuration names none (Istio's default).
pub const DEFAULT_REALM: &str = "istio";

/// Response-code details of the 401 when the request carries no `Basic` credentials.
pub const DETAILS_NO_CREDENTIALS: &str =
    "Request denied by Basic Auth check. No Basic Authentication information found.";
/// Response-code details of the 401 when the credentials are not among the configured ones.
pub const DETAILS_INVALID_CREDENTIALS: &str =
    "Request denied by Basic Auth check. Invalid username and/or password";

/// A parsed plugin configuration. The default (empty configuration) protects nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub realm: String,
    pub rules: Vec<Rule>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            realm: DEFAULT_REALM.to_string(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Empty: every host.
    pub hosts: Vec<Pattern>,
    pub path: Pattern,
    pub methods: Vec<String>,
    /// Accepted `Authorization: Basic <value>` values, exactly as they must appear after `Basic `.
    pub credentials: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Prefix(String),
    Exact(String),
    Suffix(String),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
            Pattern::Exact(p) => value == p,
            Pattern::Suffix(p) => value.ends_with(p.as_str()),
        }
    }

    /// Istio's host syntax: `*x` is a suffix match, `x*` a prefix match, anything else exact.
    fn host(spec: &str) -> Pattern {
        if let Some(rest) = spec.strip_prefix('*') {
            Pattern::Suffix(rest.to_string())
        } else if let Some(rest) = spec.strip_suffix('*') {
            Pattern::Prefix(rest.to_string())
        } else {
            Pattern::Exact(spec.to_string())
        }
    }
}

/// Why a configuration was refused. The message is what `on_configure` logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Answer 401 with these response-code details.
    Deny(&'static str),
}

impl Config {
    /// Parses the plugin configuration. Empty bytes mean "no rules" (Istio accepts a size-0 configuration).
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.is_empty() {
            return Ok(Config::default());
        }
        let json: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                return err(format!(
                    "cannot parse plugin configuration JSON string: {e}"
                ))
            }
        };
        let Value::Object(top) = json else {
            return err("cannot parse plugin configuration JSON string: not a JSON object");
        };
        let mut config = Config::default();
        for (i, rule) in array_field(&top, "basic_auth_rules")?.iter().enumerate() {
            let rule = Rule::parse(rule)
                .map_err(|e| ConfigError(format!("basic_auth_rules[{i}]: {e}")))?;
            config.rules.push(rule);
        }
        if let Some(realm) = top.get("realm") {
            match realm.as_str() {
                Some(realm) => config.realm = realm.to_string(),
                None => return err("cannot parse realm in plugin configuration: not a string"),
            }
        }
        Ok(config)
    }

    /// Decides on a request from its `:method`, `:path` (raw, query included), `:authority` and
    /// `authorization` header values (each empty when absent, as the C++ SDK reads them).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        authority: &str,
        authorization: &str,
    ) -> Decision {
        let host = strip_port(authority);
        for rule in self
            .rules
            .iter()
            .filter(|r| r.methods.iter().any(|m| m == method))
        {
            if !rule.host_matches(host) || !rule.path.matches(path) {
                continue;
            }
            let Some(presented) = authorization.strip_prefix("Basic ") else {
                return Decision::Deny(DETAILS_NO_CREDENTIALS);
            };
            if !rule.credentials.contains(presented) {
                return Decision::Deny(DETAILS_INVALID_CREDENTIALS);
            }
        }
        Decision::Allow
    }

    /// The `WWW-Authenticate` value of a 401. Istio leaves the realm unquoted.
    pub fn www_authenticate(&self) -> String {
        format!("Basic realm={}", self.realm)
    }
}

impl Rule {
    fn parse(value: &Value) -> Result<Rule, ConfigError> {
        let Value::Object(obj) = value else {
            return err("a rule must be a JSON object");
        };
        let mut paths = Vec::new();
        for (key, make) in [
            ("prefix", Pattern::Prefix as fn(String) -> Pattern),
            ("exact", Pattern::Exact),
            ("suffix", Pattern::Suffix),
        ] {
            if let Some(v) = obj.get(key) {
                match v.as_str() {
                    Some(s) => paths.push(make(s.to_string())),
                    None => return err(format!("failed to parse '{key}' field: not a string")),
                }
            }
        }
        if paths.len() != 1 {
            return err("exactly one of 'prefix', 'suffix', and 'exact' has to be present");
        }
        let path = paths.remove(0);

        let hosts = array_field(obj, "hosts")?
            .iter()
            .map(|h| h.as_str().map(Pattern::host).ok_or(()))
            .collect::<Result<Vec<_>, ()>>()
            .or_else(|()| err("failed to parse 'hosts': every host must be a string"))?;

        let methods = array_field(obj, "request_methods")?
            .iter()
            .map(|m| m.as_str().map(str::to_string).ok_or(()))
            .collect::<Result<Vec<_>, ()>>()
            .or_else(|()| {
                err("failed to parse 'request_methods': every method must be a string")
            })?;
        if methods.is_empty() {
            return err("at least one method has to be configured for a rule");
        }

        let mut credentials = BTreeSet::new();
        for c in array_field(obj, "credentials")? {
            let Some(c) = c.as_str() else {
                return err("failed to parse 'credentials': every credential must be a string");
            };
            credentials.insert(normalize_credential(c)?);
        }
        if credentials.is_empty() {
            return err("at least one credential has to be configured for a rule");
        }
        Ok(Rule {
            hosts,
            path,
            methods,
            credentials,
        })
    }

    fn host_matches(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|p| p.matches(host))
    }
}

/// A missing field is an empty array; a present field must be an array (Istio's `JsonArrayIterate`).
fn array_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ConfigError> {
    match obj.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => err(format!("failed to parse '{key}': not an array")),
    }
}

/// `user:pass` is stored base64-encoded with padding; anything else must already be base64 that decodes to
/// at least one byte, and is stored exactly as written (the client must then send it exactly so).
fn normalize_credential(c: &str) -> Result<String, ConfigError> {
    if c.contains(':') {
        return Ok(STANDARD.encode(c));
    }
    if decode_without_padding(c).is_none_or(|d| d.is_empty()) {
        return err(format!(
            "credential {c:?} is neither user:password nor valid base64"
        ));
    }
    Ok(c.to_string())
}

/// Envoy's `Base64::decodeWithoutPadding`: up to two trailing `=` are dropped, the rest must be canonical
/// unpadded base64.
fn decode_without_padding(s: &str) -> Option<Vec<u8>> {
    const UNPADDED: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let s = s
        .strip_suffix('=')
        .map_or(s, |s| s.strip_suffix('=').unwrap_or(s));
    UNPADDED.decode(s).ok()
}

/// Drops a `:port` suffix from an authority, leaving a bracketed IPv6 literal intact (as Envoy's
/// `HeaderUtility::stripPortFromHost`, which Istio's plugin copies).
pub fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if authority.rfind(']').is_none_or(|close| close < colon) => {
            &authority[..colon]
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO_DOC: &str = r#"{"basic_auth_rules": [{"prefix": "/productpage", "request_methods": ["GET", "POST"],
        "credentials": ["ok:test", "YWRtaW4zOmFkbWluMw=="]}]}"#;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes())
    }

    #[test]
    fn istio_docs_example_protects_productpage() {
        let c = parse(ISTIO_DOC).unwrap();
        assert_eq!(c.realm, "istio");
        assert_eq!(c.www_authenticate(), "Basic realm=istio");
        assert_eq!(
            c.check("GET", "/productpage", "gw", ""),
            Decision::Deny(DETAILS_NO_CREDENTIALS)
        );
        assert_eq!(
            c.check("GET", "/productpage", "gw", "Basic YWRtaW4zOmFkbWluMw=="),
            Decision::Allow
        );
        // ok:test → b2s6dGVzdA==
        assert_eq!(
            c.check("POST", "/productpage?x=1", "gw", "Basic b2s6dGVzdA=="),
            Decision::Allow
        );
        assert_eq!(
            c.check("GET", "/productpage", "gw", "Basic b2s6d3Jvbmc="),
            Decision::Deny(DETAILS_INVALID_CREDENTIALS)
        );
        // Wrong scheme and lower-case scheme count as "no Basic information", as in Istio.
        assert_eq!(
            c.check("GET", "/productpage", "gw", "Bearer x"),
            Decision::Deny(DETAILS_NO_CREDENTIALS)
        );
        assert_eq!(
            c.check("GET", "/productpage", "gw", "basic b2s6dGVzdA=="),
            Decision::Deny(DETAILS_NO_CREDENTIALS)
        );
        // Other paths and other methods are untouched.
        assert_eq!(c.check("GET", "/static/x.css", "gw", ""), Decision::Allow);
        assert_eq!(c.check("DELETE", "/productpage", "gw", ""), Decision::Allow);
    }

    #[test]
    fn empty_configuration_allows_everything() {
        let c = Config::parse(b"").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.check("GET", "/", "h", ""), Decision::Allow);
        assert_eq!(
            parse("{}").unwrap().check("GET", "/", "h", ""),
            Decision::Allow
        );
    }

    #[test]
    fn exact_and_suffix_match_the_raw_path_with_query() {
        let c = parse(
            r#"{"realm": "r1", "basic_auth_rules": [
              {"exact": "/a", "request_methods": ["GET"], "credentials": ["u:p"]},
              {"suffix": ".json", "request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
        )
        .unwrap();
        assert_eq!(c.www_authenticate(), "Basic realm=r1");
        assert_eq!(
            c.check("GET", "/a", "h", ""),
            Decision::Deny(DETAILS_NO_CREDENTIALS)
        );
        assert_eq!(c.check("GET", "/a?q", "h", ""), Decision::Allow);
        assert_eq!(
            c.check("GET", "/x/data.json", "h", ""),
            Decision::Deny(DETAILS_NO_CREDENTIALS)
        );
        assert_eq!(c.check("GET", "/x/data.json?v=2", "h", ""), Decision::Allow);
    }

    #[test]
    fn every_matching_rule_must_accept_the_credentials() {
        let c = parse(
            r#"{"basic_auth_rules": [
              {"prefix": "/", "request_methods": ["GET"], "credentials": ["a:a"]},
              {"prefix": "/admin", "request_methods": ["GET"], "credentials": ["b:b"]}]}"#,
        )
        .unwrap();
        let a = format!("Basic {}", STANDARD.encode("a:a"));
        assert_eq!(c.check("GET", "/x", "h", &a), Decision::Allow);
        assert_eq!(
            c.check("GET", "/admin", "h", &a),
            Decision::Deny(DETAILS_INVALID_CREDENTIALS)
        );
    }

    #[test]
    fn hosts_match_by_prefix_suffix_exact_without_port() {
        let c = parse(
            r#"{"basic_auth_rules": [{"prefix": "/", "hosts": ["*.foo.com", "bar-*", "exact.io", "[::1]"],
                "request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
        )
        .unwrap();
        let denied = Decision::Deny(DETAILS_NO_CREDENTIALS);
        assert_eq!(c.check("GET", "/", "a.foo.com", ""), denied);
        assert_eq!(c.check("GET", "/", "a.foo.com:8080", ""), denied);
        assert_eq!(c.check("GET", "/", "bar-1:80", ""), denied);
        assert_eq!(c.check("GET", "/", "exact.io", ""), denied);
        assert_eq!(c.check("GET", "/", "[::1]:443", ""), denied);
        assert_eq!(c.check("GET", "/", "[::1]", ""), denied);
        assert_eq!(c.check("GET", "/", "exact.io.evil", ""), Decision::Allow);
        assert_eq!(c.check("GET", "/", "other.com", ""), Decision::Allow);
        assert_eq!(c.check("GET", "/", "[::2]:443", ""), Decision::Allow);
    }

    #[test]
    fn port_stripping_is_ipv6_aware() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[2001:db8::1]:80"), "[2001:db8::1]");
        assert_eq!(strip_port("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn credentials_are_normalized_like_istio() {
        let c = parse(
            r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"],
                "credentials": ["admin:admin", "YWRtaW4zOmFkbWluMw", "YWRtaW4yOmFkbWluMg=="]}]}"#,
        )
        .unwrap();
        let creds: Vec<_> = c.rules[0].credentials.iter().cloned().collect();
        assert_eq!(
            creds,
            [
                "YWRtaW46YWRtaW4=",
                "YWRtaW4yOmFkbWluMg==",
                "YWRtaW4zOmFkbWluMw"
            ]
        );
        // Unpadded base64 is stored as written, so only the unpadded form is accepted.
        assert_eq!(
            c.check("GET", "/", "h", "Basic YWRtaW4zOmFkbWluMw"),
            Decision::Allow
        );
        assert_eq!(
            c.check("GET", "/", "h", "Basic YWRtaW4zOmFkbWluMw=="),
            Decision::Deny(DETAILS_INVALID_CREDENTIALS)
        );
    }

    #[test]
    fn configuration_errors_are_refused_with_a_reason() {
        let cases = [
            ("not json", "cannot parse"),
            ("[1]", "not a JSON object"),
            (r#"{"basic_auth_rules": {}}"#, "not an array"),
            (r#"{"realm": 7}"#, "realm"),
            (
                r#"{"basic_auth_rules": [{"request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
                "exactly one",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "exact": "/", "request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
                "exactly one",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": 1, "request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
                "'prefix'",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "credentials": ["u:p"]}]}"#,
                "at least one method",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": [], "credentials": ["u:p"]}]}"#,
                "at least one method",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": [1], "credentials": ["u:p"]}]}"#,
                "request_methods",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"]}]}"#,
                "at least one credential",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"], "credentials": []}]}"#,
                "at least one credential",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"], "credentials": ["!!!"]}]}"#,
                "neither",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"], "credentials": [""]}]}"#,
                "neither",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "request_methods": ["GET"], "credentials": [5]}]}"#,
                "credentials",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "hosts": [1], "request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
                "hosts",
            ),
            (
                r#"{"basic_auth_rules": [{"prefix": "/", "hosts": "a", "request_methods": ["GET"], "credentials": ["u:p"]}]}"#,
                "hosts",
            ),
            (r#"{"basic_auth_rules": ["x"]}"#, "JSON object"),
        ];
        for (json, want) in cases {
            let e = parse(json).expect_err(json);
            assert!(e.0.contains(want), "{json}: {e} does not mention {want}");
        }
    }

    #[test]
    fn base64_decoding_follows_envoy() {
        assert_eq!(decode_without_padding("YWI=").unwrap(), b"ab");
        assert_eq!(decode_without_padding("YWI").unwrap(), b"ab");
        assert_eq!(decode_without_padding("YWJj=").unwrap(), b"abc");
        assert!(
            decode_without_padding("YWJ").is_none(),
            "non-canonical trailing bits"
        );
        assert!(decode_without_padding("Y").is_none());
        assert!(decode_without_padding("a b").is_none());
    }
}
