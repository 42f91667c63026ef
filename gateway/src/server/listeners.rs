//! Gateway listeners that follow live reload.
//!
//! Why our own accept loops: Pingora's `Server` only takes listening services before
//! `run_forever`, so a listener added to a Gateway resource later could not be served without a
//! restart. Pingora documents the alternative we use (`pingora_proxy::http_proxy`): one `HttpProxy`
//! app, fed accepted streams through its `ServerApp::process_new` entry point, which does the h2c
//! preface check, ALPN h2 and HTTP/1.1 keep-alive exactly as Pingora's own listeners do. TLS is
//! Pingora's rustls `Acceptor`, built from in-memory Secrets. So the HTTP engine, upstream pool and
//! error handling stay Pingora's; only "which ports are open" is ours.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{ALPN, GetSocketDigest, SocketDigest, Ssl, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::coalesce::Coalesced;
use super::handler::Gateway;
use crate::config::PortListener;
use crate::limits;
use crate::metrics::Metrics;

/// State shared by every accept loop and connection task.
pub struct Shared {
    /// pingora-proxy: HTTP/2 and h2c, and HTTP/1 when `http1` is `None`.
    pub app: Arc<HttpProxy<Gateway>>,
    /// The handler for our own HTTP/1 engine (`--http1-engine native`).
    pub http1: Option<Gateway>,
    /// Pingora's shutdown signal: once `true`, sessions stop keeping connections alive.
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<AtomicUsize>,
}

struct Running {
    tls: Arc<ArcSwapOption<Acceptor>>,
    /// Identity of the certificates in force (`None` for plain HTTP), to keep the acceptor when
    /// a reload did not change them.
    tls_id: Option<u64>,
    stop: watch::Sender<bool>,
}

/// The state of one port, for `/config_dump`.
#[derive(Debug, Clone, Serialize)]
pub struct PortStatus {
    pub port: u16,
    pub tls: bool,
    pub listeners: Vec<String>,
    /// `serving`, or the bind error.
    pub state: String,
}

/// Opens, updates and closes listening sockets to match the config in force.
pub struct ListenerManager {
    bind_ip: IpAddr,
    shared: Arc<Shared>,
    /// Every worker accepts on every port (see `workers.rs`).
    workers: Vec<Handle>,
    running: Mutex<HashMap<u16, Running>>,
    status: Mutex<Vec<PortStatus>>,
}

impl ListenerManager {
    pub fn new(bind_ip: IpAddr, shared: Arc<Shared>, workers: Vec<Handle>) -> Self {
        Self {
            bind_ip,
            shared,
            workers,
            running: Mutex::new(HashMap::new()),
            status: Mutex::new(Vec::new()),
        }
    }

    /// Makes the open ports exactly `desired`: binds new ports, swaps TLS settings of kept ones,
    /// and stops accepting on removed ones (their open connections finish normally).
    /// A port that cannot be bound is logged and reported in [`Self::status`]; others still open.
    pub async fn reconcile(&self, desired: &[PortListener]) {
        let mut statuses = Vec::with_capacity(desired.len());
        let wanted: HashMap<u16, &PortListener> = desired.iter().map(|p| (p.port, p)).collect();
        {
            let mut running = self.running.lock();
            running.retain(|port, r| {
                let keep = wanted.contains_key(port);
                if !keep {
                    tracing::info!(port, "listener removed: no longer accepting");
                    let _ = r.stop.send(true);
                }
                keep
            });
        }
        for spec in desired {
            let state = self.ensure(spec).await;
            statuses.push(PortStatus {
                port: spec.port,
                tls: spec.tls.is_some(),
                listeners: spec.names.clone(),
                state,
            });
        }
        *self.status.lock() = statuses;
    }

    async fn ensure(&self, spec: &PortListener) -> String {
        {
            let mut running = self.running.lock();
            if let Some(r) = running.get_mut(&spec.port) {
                let same = r.tls_id == spec.tls.as_ref().map(|_| spec.tls_id);
                if !same {
                    r.tls.store(
                        spec.tls
                            .clone()
                            .map(|c| Arc::new(Acceptor::from_server_config(c))),
                    );
                    r.tls_id = spec.tls.as_ref().map(|_| spec.tls_id);
                    tracing::info!(
                        port = spec.port,
                        tls = spec.tls.is_some(),
                        "listener TLS settings updated"
                    );
                }
                return "serving".into();
            }
        }
        let addr = SocketAddr::new(self.bind_ip, spec.port);
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind listener");
                return format!("bind {addr}: {e}");
            }
        };
        tracing::info!(%addr, tls = spec.tls.is_some(), listeners = ?spec.names, "listening");
        let tls = Arc::new(ArcSwapOption::new(
            spec.tls
                .clone()
                .map(|c| Arc::new(Acceptor::from_server_config(c))),
        ));
        let (stop, stop_rx) = watch::channel(false);
        for worker in &self.workers {
            // Each worker polls its own descriptor of the one socket from its own event loop.
            let socket = match listener.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot share the listener with a worker");
                    let _ = stop.send(true);
                    return format!("listen {addr}: {e}");
                }
            };
            worker.spawn(accept_loop(
                socket,
                tls.clone(),
                stop_rx.clone(),
                self.shared.clone(),
            ));
        }
        self.running.lock().insert(
            spec.port,
            Running {
                tls,
                tls_id: spec.tls.as_ref().map(|_| spec.tls_id),
                stop,
            },
        );
        "serving".into()
    }

    /// Stops accepting on every port (shutdown).
    pub fn close_all(&self) {
        for (_, r) in self.running.lock().drain() {
            let _ = r.stop.send(true);
        }
    }

    pub fn status(&self) -> Vec<PortStatus> {
        self.status.lock().clone()
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted gateway must rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(limits::LISTEN_BACKLOG)?;
    // Made non-blocking by tokio, and the flag is shared by every duplicate of the descriptor.
    listener.into_std()
}

/// Accepts connections on one worker until the port is removed or the gateway stops.
async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Arc<ArcSwapOption<Acceptor>>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener with a worker");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let shared = shared.clone();
                    let tls = tls.load_full();
                    tokio::spawn(serve_connection(tcp, peer, tls, shared));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(limits::ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }
    // Dropping the listener closes the port.
}

/// Counts a connection while it lives (for `wasmgate_active_connections` and graceful shutdown).
struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.connections.fetch_add(1, Ordering::AcqRel);
        shared.metrics.active_connections.inc();
        Self(shared)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.active_connections.dec();
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<Acceptor>>,
    shared: Arc<Shared>,
) {
    let guard = ConnGuard::new(shared);
    let local = tcp.local_addr().ok();
    let _ = tcp.set_nodelay(true);
    let mut l4: L4Stream = tcp.into();
    // What Pingora's own listener records, so the proxy sees client and local addresses.
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    let _ = digest.local_addr.set(local.map(Into::into));
    l4.set_socket_digest(digest);

    let shared = &guard.0;
    let (stream, h2): (Stream, bool) = match tls {
        None => {
            // h2c needs a look at the first bytes, which only our own engine makes worthwhile:
            // pingora-proxy peeks for itself.
            let h2 = match &shared.http1 {
                Some(gw) => match sniff_h2c(&mut l4, gw.idle_timeout).await {
                    Some(h2) => h2,
                    None => return,
                },
                None => false,
            };
            (
                Box::new(Coalesced::new(l4, limits::DOWNSTREAM_WRITE_BUFFER)),
                h2,
            )
        }
        Some(acceptor) => {
            match tokio::time::timeout(limits::TLS_HANDSHAKE_TIMEOUT, acceptor.tls_handshake(l4))
                .await
            {
                Ok(Ok(s)) => {
                    let h2 = matches!(s.selected_alpn_proto(), Some(ALPN::H2));
                    (
                        Box::new(Coalesced::new(s, limits::DOWNSTREAM_WRITE_BUFFER)),
                        h2,
                    )
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    match &shared.http1 {
        Some(gateway) if !h2 => super::h1::serve(gateway, stream, &shared.shutdown).await,
        _ => {
            shared.app.process_new(stream, &shared.shutdown).await;
        }
    }
}

/// Whether a plain connection starts with the HTTP/2 preface (h2c with prior knowledge). Reads only
/// until the bytes differ from the preface (an HTTP/1 request differs at its first byte), so a
/// request shorter than the preface is not kept waiting, as it is by pingora's own check, which
/// waits for 24 bytes. What was read is put back for the engine. `None`: the client sent nothing
/// within `idle_timeout` (`--idle-timeout`), or closed.
async fn sniff_h2c(l4: &mut L4Stream, idle_timeout: Duration) -> Option<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    let read = tokio::time::timeout(idle_timeout, async {
        while n < PREFACE.len() && buf[..n] == PREFACE[..n] {
            match l4.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(got) => n += got,
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        tracing::debug!("connection closed or idle before its first request");
        return None;
    }
    l4.rewind(&buf[..n]);
    Some(buf == *PREFACE)
}
