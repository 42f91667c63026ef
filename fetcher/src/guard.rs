//! Refusing fetches to link-local and cloud-metadata addresses (Istio's `pkg/wasm/ssrf.go`):
//! a WasmPlugin author must not be able to make the gateway read instance credentials.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::error::FetchError;

/// Metadata host names refused whatever they resolve to.
const BLOCKED_HOSTS: &[&str] = &["metadata.google.internal", "metadata.goog"];

/// Cloud metadata addresses outside link-local: Alibaba (100.100.100.200) and AWS IPv6.
const METADATA_ADDRS: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// The set of refused destinations. Loopback and private addresses are allowed, as in Istio.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    extra: Arc<Vec<IpNet>>,
}

impl Guard {
    pub(crate) fn new(extra: Vec<IpNet>) -> Self {
        Self {
            extra: Arc::new(extra),
        }
    }

    /// Why `ip` is refused, if it is.
    pub(crate) fn refuses(&self, ip: IpAddr) -> Option<String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if link_local {
            return Some(format!("{ip} is a link-local address"));
        }
        if METADATA_ADDRS.contains(&ip) {
            return Some(format!("{ip} is a cloud metadata address"));
        }
        self.extra
            .iter()
            .find(|net| net.contains(&ip))
            .map(|net| format!("{ip} is in the blocked network {net}"))
    }

    /// Checks a host (name or literal) and, for names, every address it resolves to.
    pub(crate) async fn check_host(
        &self,
        url: &str,
        host: &str,
        port: u16,
    ) -> Result<(), FetchError> {
        let blocked = |reason: String| FetchError::Blocked {
            url: url.to_owned(),
            reason,
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if BLOCKED_HOSTS.contains(&bare.to_ascii_lowercase().as_str()) {
            return Err(blocked(format!("{bare} is a cloud metadata host")));
        }
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match self.refuses(ip) {
                Some(reason) => Err(blocked(reason)),
                None => Ok(()),
            };
        }
        // Resolution failures are left to the request itself, which reports them with context.
        if let Ok(addrs) = tokio::net::lookup_host((bare, port)).await {
            for addr in addrs {
                if let Some(reason) = self.refuses(addr.ip()) {
                    return Err(blocked(format!("{bare} resolves to {reason}")));
                }
            }
        }
        Ok(())
    }
}

/// A destination refused while a request was under way (by [`GuardedResolver`] or a guarded
/// redirect policy). It travels in reqwest's error chain, so callers can turn it back into
/// [`FetchError::Blocked`] naming what was refused (see `transport::blocked`).
#[derive(Debug, thiserror::Error)]
#[error("refusing {target}: {reason}")]
pub(crate) struct Refused {
    /// The redirect target URL, or the host name being resolved.
    pub target: String,
    pub reason: String,
}

/// reqwest resolver that drops refused addresses at connect time, so a DNS answer that changes
/// between the check and the connection (rebinding) is still refused, and so is every host a
/// redirect leads to.
#[derive(Clone)]
pub(crate) struct GuardedResolver(pub(crate) Guard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if BLOCKED_HOSTS.contains(&host.to_ascii_lowercase().as_str()) {
                let reason = format!("{host} is a cloud metadata host");
                return Err(Box::new(Refused {
                    target: host,
                    reason,
                }) as _);
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.refuses(a.ip()).is_none())
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                let reason = guard.refuses(addrs[0].ip()).unwrap_or_default();
                let reason = format!("{host} resolves to {reason}");
                return Err(Box::new(Refused {
                    target: host,
                    reason,
                }) as _);
            }
            let iter: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_link_local_and_metadata_allows_private_and_loopback() {
        let g = Guard::new(vec!["10.1.0.0/16".parse().unwrap()]);
        for bad in [
            "169.254.169.254",
            "169.254.170.2",
            "fe80::1",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "10.1.2.3",
        ] {
            assert!(g.refuses(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for ok in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "8.8.8.8",
        ] {
            assert!(g.refuses(ok.parse().unwrap()).is_none(), "{ok}");
        }
    }
}
