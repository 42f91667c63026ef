//! Pure helpers: configuration, property value rendering, counters in shared data. Unit-tested on the host.

use serde::Deserialize;

/// Plugin configuration; every field optional. See README.md.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Tick period in milliseconds set in `on_configure`; 0 = no ticks.
    pub tick_ms: u64,
    /// Name of the shared queue registered in `on_configure`; none = no queue.
    pub queue: Option<String>,
    /// Named upstream of the `http-call` scenario (a request header `x-upstream` overrides it).
    pub upstream: Option<String>,
    /// Named upstream of the `grpc-call` and `grpc-stream` scenarios.
    pub grpc_upstream: Option<String>,
    /// Log every callback at info level as `hostcalls: <callback> <context_id>`.
    pub log_lifecycle: bool,
    /// The root context's `on_done` answers false, and the next tick calls `proxy_done`.
    pub defer_done: bool,
}

pub const DEFAULT_UPSTREAM: &str = "hostcalls-upstream";
pub const DEFAULT_GRPC_UPSTREAM: &str = "hostcalls-grpc";

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !json.is_object() {
            return Err("configuration must be a JSON object".into());
        }
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    pub fn upstream(&self) -> &str {
        self.upstream.as_deref().unwrap_or(DEFAULT_UPSTREAM)
    }

    pub fn grpc_upstream(&self) -> &str {
        self.grpc_upstream
            .as_deref()
            .unwrap_or(DEFAULT_GRPC_UPSTREAM)
    }
}

/// How a property's bytes are shown in a response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// int64/uint64, duration and timestamp: 8 bytes little-endian, shown in decimal.
    Int,
    /// 1 byte, shown as `true`/`false`.
    Bool,
}

/// The properties the `properties` scenario reads, with their Envoy types.
pub const PROPERTIES: &[(&str, Kind)] = &[
    ("request.path", Kind::Text),
    ("request.url_path", Kind::Text),
    ("request.host", Kind::Text),
    ("request.scheme", Kind::Text),
    ("request.method", Kind::Text),
    ("request.protocol", Kind::Text),
    ("request.query", Kind::Text),
    ("request.id", Kind::Text),
    ("request.useragent", Kind::Text),
    ("request.time", Kind::Int),
    ("request.headers.x-test", Kind::Text),
    ("source.address", Kind::Text),
    ("source.port", Kind::Int),
    ("destination.address", Kind::Text),
    ("destination.port", Kind::Int),
    ("connection.id", Kind::Int),
    ("connection.mtls", Kind::Bool),
    ("plugin_name", Kind::Text),
    ("plugin_root_id", Kind::Text),
    ("plugin_vm_id", Kind::Text),
    ("xds.cluster_name", Kind::Text),
    ("xds.route_name", Kind::Text),
    ("xds.node.id", Kind::Text),
    ("node.id", Kind::Text),
];

/// Splits a dotted property name into path segments. `request.headers.<name>` keeps the header name whole.
pub fn property_path(name: &str) -> Vec<&str> {
    if let Some(header) = name.strip_prefix("request.headers.") {
        return vec!["request", "headers", header];
    }
    name.split('.').collect()
}

/// The response header that echoes a property: `x-prop-` + the name with `.` and `_` as `-`.
pub fn property_header(name: &str) -> String {
    format!("x-prop-{}", name.replace(['.', '_'], "-"))
}

/// Renders a property value; a value of the wrong size for its kind is shown as `<bad-size:N>`.
pub fn render_property(kind: Kind, bytes: &[u8]) -> String {
    match kind {
        Kind::Text => String::from_utf8_lossy(bytes).into_owned(),
        Kind::Int => match <[u8; 8]>::try_from(bytes) {
            Ok(raw) => i64::from_le_bytes(raw).to_string(),
            Err(_) => format!("<bad-size:{}>", bytes.len()),
        },
        Kind::Bool => match bytes {
            [0] => "false".into(),
            [1] => "true".into(),
            _ => format!("<bad-size:{}>", bytes.len()),
        },
    }
}

/// Reads a decimal counter kept in shared data; missing or garbled counts as 0.
pub fn parse_counter(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// ASCII upper-casing that keeps the length, so in-place chunk rewrites need no content-length change.
pub fn shout(bytes: &[u8]) -> Vec<u8> {
    bytes.to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_errors() {
        let c = Config::parse(b"").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.upstream(), "hostcalls-upstream");
        assert_eq!(c.grpc_upstream(), "hostcalls-grpc");
        let c = Config::parse(
            br#"{"tick_ms": 10, "queue": "q", "upstream": "u", "log_lifecycle": true}"#,
        )
        .unwrap();
        assert_eq!(
            (c.tick_ms, c.queue.as_deref(), c.upstream(), c.log_lifecycle),
            (10, Some("q"), "u", true)
        );
        assert!(Config::parse(b"[]").is_err());
        assert!(Config::parse(br#"{"tick": 1}"#).is_err());
    }

    #[test]
    fn property_paths_and_headers() {
        assert_eq!(property_path("request.path"), ["request", "path"]);
        assert_eq!(property_path("plugin_name"), ["plugin_name"]);
        assert_eq!(property_path("xds.node.id"), ["xds", "node", "id"]);
        assert_eq!(
            property_path("request.headers.x-a.b"),
            ["request", "headers", "x-a.b"]
        );
        assert_eq!(
            property_header("request.url_path"),
            "x-prop-request-url-path"
        );
        assert_eq!(property_header("plugin_vm_id"), "x-prop-plugin-vm-id");
    }

    #[test]
    fn property_rendering_follows_envoy_serialization() {
        assert_eq!(render_property(Kind::Text, b"/x?y"), "/x?y");
        assert_eq!(render_property(Kind::Int, &8080i64.to_le_bytes()), "8080");
        assert_eq!(render_property(Kind::Int, b"80"), "<bad-size:2>");
        assert_eq!(render_property(Kind::Bool, &[1]), "true");
        assert_eq!(render_property(Kind::Bool, &[0]), "false");
    }

    #[test]
    fn counters_and_shouting() {
        assert_eq!(parse_counter(None), 0);
        assert_eq!(parse_counter(Some(b"41")), 41);
        assert_eq!(parse_counter(Some(b"x")), 0);
        assert_eq!(shout(b"abc-1"), b"ABC-1");
    }
}
