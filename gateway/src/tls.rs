//! Downstream TLS: rustls server configs built from `kubernetes.io/tls` Secrets, with ALPN h2 and
//! http/1.1. Several HTTPS listeners on one port pick their certificate by SNI.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::routing::host::HostPattern;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.crt: {0}")]
    Cert(String),
    #[error("tls.key: {0}")]
    Key(String),
    #[error("certificate and key do not match or are unsupported: {0}")]
    Pair(String),
}

/// Parses a PEM certificate chain and private key into a signing key for rustls.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Cert("no CERTIFICATE block found".into()));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Key(format!("invalid PEM: {e}")))?
        .ok_or_else(|| TlsError::Key("no PRIVATE KEY block found".into()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(Arc::new(ck))
}

/// Certificates of one port, chosen by SNI: the most specific matching listener hostname, else the
/// first listener's certificate (clients without SNI, or a name no listener claims).
#[derive(Debug)]
pub struct SniResolver {
    /// Sorted most specific first.
    certs: Vec<(HostPattern, Arc<CertifiedKey>)>,
}

impl SniResolver {
    pub fn new(mut certs: Vec<(HostPattern, Arc<CertifiedKey>)>) -> Self {
        certs.sort_by_key(|c| std::cmp::Reverse(c.0.rank()));
        Self { certs }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        if let Some(name) = sni
            && let Some((_, k)) = self.certs.iter().find(|(h, _)| h.matches(&name))
        {
            return Some(k.clone());
        }
        self.certs.first().map(|(_, k)| k.clone())
    }
}

/// A rustls server config for one HTTPS port, offering h2 then http/1.1 by ALPN.
pub fn server_config(certs: Vec<(HostPattern, Arc<CertifiedKey>)>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certs)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A change detector for a port's certificates (not a security digest): hostnames and chains.
pub fn fingerprint(certs: &[(HostPattern, Arc<CertifiedKey>)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (host, key) in certs {
        host.hash(&mut h);
        for c in &key.cert {
            c.as_ref().hash(&mut h);
        }
    }
    h.finish()
}
