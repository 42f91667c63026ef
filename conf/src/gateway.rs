//! Gateway API `Gateway` (`gateway.networking.k8s.io/v1`, `v1beta1`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::allowed_routes::AllowedRoutes;
use crate::limits::{MAX_CERTIFICATE_REFS, MAX_LISTENERS};
use crate::meta::ObjectMeta;
use crate::validate::{Problems, check_hostname, is_dns_subdomain};

/// A `Gateway`: the listeners wasmgate binds. Its `metadata.labels` are the gateway's labels for
/// WasmPlugin `selector.matchLabels` targeting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gateway {
    pub metadata: ObjectMeta,
    pub spec: GatewaySpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Accepted (required upstream, optional here); wasmgate is the only class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_class_name: Option<String>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Accepted, ignored (the bind address is `--listen-address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<serde_json::Value>,
    /// Accepted, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<serde_json::Value>,
    /// Accepted, ignored (newer/experimental Gateway API fields).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "backendTLS"
    )]
    pub backend_tls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_scope: Option<serde_json::Value>,
}

/// One listener: a port, a protocol (`HTTP` or `HTTPS`) and an optional hostname.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    /// Only requests for this host (or, for `*.example.com`, its subdomains) use this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub port: u16,
    /// `HTTP` or `HTTPS` (`TLS`, `TCP`, `UDP` and custom protocols are rejected as not supported).
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Which routes may attach (default: HTTPRoutes in the Gateway's namespace).
    #[serde(default)]
    pub allowed_routes: AllowedRoutes,
}

/// `PROTOCOL_HTTP` / `PROTOCOL_HTTPS`: the listener protocols wasmgate serves.
pub const PROTOCOL_HTTP: &str = "HTTP";
pub const PROTOCOL_HTTPS: &str = "HTTPS";
/// The only TLS mode wasmgate serves.
pub const TLS_MODE_TERMINATE: &str = "Terminate";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// `Terminate` (default); `Passthrough` is rejected as not supported.
    #[serde(default = "default_tls_mode")]
    pub mode: String,
    #[serde(default)]
    pub certificate_refs: Vec<SecretObjectReference>,
    /// Accepted, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
    /// Accepted, ignored (client certificate validation is not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_validation: Option<serde_json::Value>,
}

fn default_tls_mode() -> String {
    TLS_MODE_TERMINATE.to_owned()
}

/// A reference to a `Secret` holding a certificate and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default = "default_secret_kind")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// Defaults to the Gateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_secret_kind() -> String {
    "Secret".to_owned()
}

// === impl Gateway ===

impl Gateway {
    /// The listener named `name` (an HTTPRoute parentRef's `sectionName`).
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.spec.listeners.iter().find(|l| l.name == name)
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        let spec = &self.spec;
        if spec.listeners.is_empty() {
            p.error("spec.listeners", "must have at least 1 item");
        }
        p.max_items("spec.listeners", &spec.listeners, MAX_LISTENERS);
        let mut names = HashSet::new();
        let mut combos = HashSet::new();
        // One socket serves one protocol: HTTP and HTTPS listeners cannot share a port.
        let mut port_protocols = std::collections::HashMap::new();
        for (i, l) in spec.listeners.iter().enumerate() {
            let f = format!("spec.listeners[{i}]");
            if let Some(first) = port_protocols.insert(l.port, l.protocol.as_str())
                && first != l.protocol
            {
                p.error(
                    format!("{f}.protocol"),
                    format!(
                        "port {} already has a listener of protocol {first} (protocol conflict)",
                        l.port
                    ),
                );
                port_protocols.insert(l.port, first);
            }
        }
        for (i, l) in spec.listeners.iter().enumerate() {
            let f = format!("spec.listeners[{i}]");
            l.validate(p, &f);
            if !l.name.is_empty() && !names.insert(l.name.as_str()) {
                p.error(
                    format!("{f}.name"),
                    format!(
                        "duplicate listener name {:?}: listener names must be unique",
                        l.name
                    ),
                );
            }
            if !combos.insert((
                l.port,
                l.protocol.as_str(),
                l.hostname.as_deref().unwrap_or(""),
            )) {
                p.error(
                    f,
                    "combination of port, protocol and hostname must be unique for each listener",
                );
            }
        }
        for (field, present) in [
            ("spec.addresses", spec.addresses.is_some()),
            ("spec.infrastructure", spec.infrastructure.is_some()),
            ("spec.backendTLS", spec.backend_tls.is_some()),
            ("spec.allowedListeners", spec.allowed_listeners.is_some()),
            ("spec.tls", spec.tls.is_some()),
            ("spec.defaultScope", spec.default_scope.is_some()),
        ] {
            if present {
                p.ignored(field);
            }
        }
    }
}

// === impl Listener ===

impl Listener {
    pub fn is_https(&self) -> bool {
        self.protocol == PROTOCOL_HTTPS
    }

    fn validate(&self, p: &mut Problems, f: &str) {
        if self.name.is_empty() {
            p.error(format!("{f}.name"), "required");
        } else if !is_dns_subdomain(&self.name) {
            p.error(
                format!("{f}.name"),
                format!("invalid listener name {:?}: must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.')", self.name),
            );
        }
        if self.port == 0 {
            p.error(format!("{f}.port"), "must be between 1 and 65535");
        }
        if let Some(host) = &self.hostname {
            check_hostname(p, &format!("{f}.hostname"), host, true);
        }
        match (self.protocol.as_str(), &self.tls) {
            (PROTOCOL_HTTP, None) => {}
            (PROTOCOL_HTTP, Some(_)) => p.error(
                format!("{f}.tls"),
                "must not be specified for protocol HTTP",
            ),
            (PROTOCOL_HTTPS, None) => p.error(format!("{f}.tls"), "required for protocol HTTPS"),
            (PROTOCOL_HTTPS, Some(tls)) => tls.validate(p, &format!("{f}.tls")),
            (other, _) => p.error(
                format!("{f}.protocol"),
                format!("protocol {other:?} is not supported (supported: HTTP, HTTPS)"),
            ),
        }
        self.allowed_routes
            .validate(p, &format!("{f}.allowedRoutes"));
    }
}

// === impl ListenerTls ===

impl ListenerTls {
    fn validate(&self, p: &mut Problems, f: &str) {
        if self.mode != TLS_MODE_TERMINATE {
            p.error(
                format!("{f}.mode"),
                format!(
                    "TLS mode {:?} is not supported (supported: Terminate)",
                    self.mode
                ),
            );
        }
        if self.certificate_refs.is_empty() {
            p.error(
                format!("{f}.certificateRefs"),
                "must have at least 1 item when mode is Terminate",
            );
        }
        p.max_items(
            &format!("{f}.certificateRefs"),
            &self.certificate_refs,
            MAX_CERTIFICATE_REFS,
        );
        for (i, r) in self.certificate_refs.iter().enumerate() {
            let rf = format!("{f}.certificateRefs[{i}]");
            if !(r.group.is_empty() || r.group == "core") || r.kind != "Secret" {
                p.error(
                    rf.clone(),
                    format!("only core Secrets are supported as certificateRefs (got group {:?}, kind {:?})", r.group, r.kind),
                );
            }
            if r.name.is_empty() {
                p.error(format!("{rf}.name"), "required");
            } else if !is_dns_subdomain(&r.name) {
                p.error(format!("{rf}.name"), format!("invalid name {:?}", r.name));
            }
        }
        if self.options.is_some() {
            p.ignored(format!("{f}.options"));
        }
        if self.frontend_validation.is_some() {
            p.ignored(format!("{f}.frontendValidation"));
        }
    }
}
