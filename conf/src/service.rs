//! Core `v1` Service: a backend's addresses and labels.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::ENDPOINTS_ANNOTATION;
use crate::meta::ObjectMeta;
use crate::validate::{Problems, check_labels, is_dns_subdomain};

/// A `Service`. Its addresses come from `spec.externalName` (type `ExternalName`) or from the
/// `wasmgate.io/endpoints` annotation; its `metadata.labels` are the backend's labels for
/// WasmPlugin selectors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `ExternalName`, `NodePort`, `LoadBalancer` (the last two act as ClusterIP).
    #[serde(default = "default_service_type", rename = "type")]
    pub service_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Accepted; pods do not exist here, endpoints come from the annotation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,

    // Accepted, not acted on.
    #[serde(default, skip_serializing, rename = "clusterIP")]
    pub cluster_ip: Option<serde_json::Value>,
    #[serde(default, skip_serializing, rename = "clusterIPs")]
    pub cluster_ips: Option<serde_json::Value>,
    #[serde(default, skip_serializing, rename = "externalIPs")]
    pub external_ips: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub session_affinity: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub session_affinity_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub load_balancer_source_ranges: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub load_balancer_class: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub external_traffic_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub internal_traffic_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub health_check_node_port: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub publish_not_ready_addresses: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub ip_families: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub ip_family_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub allocate_load_balancer_node_ports: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub traffic_distribution: Option<serde_json::Value>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            service_type: default_service_type(),
            external_name: None,
            ports: Vec::new(),
            selector: BTreeMap::new(),
            cluster_ip: None,
            cluster_ips: None,
            external_ips: None,
            session_affinity: None,
            session_affinity_config: None,
            load_balancer_ip: None,
            load_balancer_source_ranges: None,
            load_balancer_class: None,
            external_traffic_policy: None,
            internal_traffic_policy: None,
            health_check_node_port: None,
            publish_not_ready_addresses: None,
            ip_families: None,
            ip_family_policy: None,
            allocate_load_balancer_node_ports: None,
            traffic_distribution: None,
        }
    }
}

fn default_service_type() -> String {
    SERVICE_TYPE_CLUSTER_IP.to_owned()
}

pub const SERVICE_TYPE_CLUSTER_IP: &str = "ClusterIP";
pub const SERVICE_TYPE_EXTERNAL_NAME: &str = "ExternalName";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// Port on the endpoints; defaults to `port`. A named port is accepted but cannot be resolved
    /// without pods, so it acts as `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// `TCP` (default), `UDP`, `SCTP`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn default_protocol() -> String {
    "TCP".to_owned()
}

/// Kubernetes `IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// One `host:port` endpoint from the `wasmgate.io/endpoints` annotation. `host` is an IP address
/// or a DNS name (resolved by the gateway).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses one `host:port` (`[v6]:port` for IPv6).
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("invalid endpoint {s:?}: expected [ipv6]:port"))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("invalid endpoint {s:?}: bad IPv6 address"))?;
        (host, port)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("invalid endpoint {s:?}: expected host:port"))?
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid endpoint {s:?}: port must be 1..65535"))?;
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    if !is_ip && !is_dns_name(host) {
        return Err(format!(
            "invalid endpoint {s:?}: host must be an IP address or a DNS name"
        ));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

// Case-insensitive and underscore-tolerant: docker-compose service names are DNS names here.
fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

// === impl Service ===

impl Service {
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.metadata.labels
    }

    pub fn is_external_name(&self) -> bool {
        self.spec.service_type == SERVICE_TYPE_EXTERNAL_NAME
    }

    /// Endpoints from the `wasmgate.io/endpoints` annotation (empty when absent). Entries are
    /// validated when the Service is loaded, so a Service in a snapshot has only good entries.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.metadata
            .annotations
            .get(ENDPOINTS_ANNOTATION)
            .map(|list| {
                list.split(',')
                    .filter(|e| !e.trim().is_empty())
                    .filter_map(|e| parse_endpoint(e).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The port named `port` of `spec.ports` (matching `port`, not `targetPort`).
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.spec.ports.iter().find(|p| p.port == port)
    }

    /// The endpoint port for a backendRef's `port`: `targetPort` if numeric, else `port` itself.
    pub fn target_port(&self, port: u16) -> u16 {
        match self.port(port).and_then(|p| p.target_port.as_ref()) {
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|n| *n != 0).unwrap_or(port),
            _ => port,
        }
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        // Service names are DNS-1035 labels (they become DNS names): a letter first, no dots.
        let n = self.metadata.name.as_bytes();
        if !n.is_empty()
            && crate::validate::is_dns_subdomain(&self.metadata.name)
            && (n.len() > 63 || !n[0].is_ascii_lowercase() || n.contains(&b'.'))
        {
            p.error(
                "metadata.name",
                format!(
                    "invalid Service name {:?}: must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter, at most 63)",
                    self.metadata.name
                ),
            );
        }
        let spec = &self.spec;
        match (spec.service_type.as_str(), &spec.external_name) {
            (SERVICE_TYPE_EXTERNAL_NAME, None) => p.error("spec.externalName", "required for type ExternalName"),
            (SERVICE_TYPE_EXTERNAL_NAME, Some(n)) if !is_dns_name(n) => {
                p.error("spec.externalName", format!("invalid DNS name {n:?}"))
            }
            ("ClusterIP" | "NodePort" | "LoadBalancer" | SERVICE_TYPE_EXTERNAL_NAME, _) => {}
            (other, _) => p.error(
                "spec.type",
                format!("unknown service type {other:?} (ClusterIP, ExternalName, NodePort or LoadBalancer)"),
            ),
        }
        let mut names = std::collections::HashSet::new();
        for (i, port) in spec.ports.iter().enumerate() {
            let f = format!("spec.ports[{i}]");
            if port.port == 0 {
                p.error(format!("{f}.port"), "must be between 1 and 65535");
            }
            if let Some(name) = &port.name
                && !names.insert(name.as_str())
            {
                p.error(format!("{f}.name"), format!("duplicate port name {name:?}"));
            }
            match &port.target_port {
                Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                    p.error(format!("{f}.targetPort"), "must be between 1 and 65535")
                }
                Some(IntOrString::String(s)) if !is_dns_subdomain(s) => p.error(
                    format!("{f}.targetPort"),
                    format!("invalid port name {s:?}"),
                ),
                _ => {}
            }
            if !matches!(port.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                p.error(
                    format!("{f}.protocol"),
                    format!("unknown protocol {:?} (TCP, UDP or SCTP)", port.protocol),
                );
            }
        }
        check_labels(p, "spec.selector", &spec.selector);
        if let Some(list) = self.metadata.annotations.get(ENDPOINTS_ANNOTATION) {
            let field = format!("metadata.annotations[{ENDPOINTS_ANNOTATION}]");
            for entry in list.split(',').filter(|e| !e.trim().is_empty()) {
                if let Err(e) = parse_endpoint(entry) {
                    p.error(field.clone(), e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("127.0.0.1:9080").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 9080
            }
        );
        assert_eq!(
            parse_endpoint(" productpage:9080").unwrap().host,
            "productpage"
        );
        assert_eq!(parse_endpoint("[::1]:80").unwrap().host, "::1");
        assert_eq!(parse_endpoint("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse_endpoint("127.0.0.1").is_err());
        assert!(parse_endpoint("host:0").is_err());
        assert!(parse_endpoint("host:99999").is_err());
        assert!(parse_endpoint("bad host:80").is_err());
    }
}
