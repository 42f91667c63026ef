//! Upstream connections for the HTTP/1 proxy loop: connecting, and each worker's pool of idle
//! keep-alive connections.
//!
//! Pingora's connector pool is costly per request: releasing a connection spawns a task that
//! watches it while idle, reusing one calls `getpeername` to check the descriptor, and the pool is
//! one mutex-guarded LRU for all threads. A connection here lives on the worker whose runtime
//! registered its socket (see `workers.rs`), so each worker keeps its own plain map, and liveness
//! comes from the readiness tokio already records: taking and returning a connection costs no
//! task, no shared lock and, in the common case, no syscall.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::limits;

/// An upstream TCP connection (TCP_NODELAY on) as Pingora's HTTP/1 client drives it.
///
/// Writes are buffered until the client flushes, for the reason `server/coalesce.rs` gives for
/// downstream streams: Pingora's writer is built for a buffered transport, and without a buffer
/// each of its writes (a chunk's size line, data and CRLF) is its own `send`. The buffer lives
/// here rather than in a `Coalesced<UpstreamIo>` because the pool, which gets the connection back
/// as a `Stream`, must reach the socket, and `Coalesced` keeps its inner stream to itself.
#[derive(Debug)]
pub struct UpstreamIo {
    io: BufWriter<TcpStream>,
    peer: SocketAddr,
    digest: Arc<SocketDigest>,
    established: SystemTime,
    establishment: Duration,
}

/// Connects to `addr` within `timeout`.
///
/// Errors are classified as Pingora's own connector does (`connectors/l4.rs`,
/// `protocols/l4/ext.rs::wrap_os_connect_error`), with [`ErrorSource::Upstream`], so
/// `errors::response_for` answers 503: `ConnectRefused`, `ConnectTimedout`, `ConnectNoRoute`
/// (network or host unreachable), `ConnectError` (anything else the connect reports). Failures
/// that are ours rather than the upstream's (no socket, e.g. out of descriptors; no local port or
/// address) are `InternalError`, as in Pingora, from [`ErrorSource::Internal`] (a 500).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Stream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| {
        Error::create(
            ErrorType::InternalError,
            ErrorSource::Internal,
            Some(format!("creating a socket to connect to {addr}").into()),
            Some(e.into()),
        )
    })?;
    let started = Instant::now();
    let tcp = match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let etype = connect_error_type(&e);
            let source = if etype == ErrorType::InternalError {
                ErrorSource::Internal
            } else {
                ErrorSource::Upstream
            };
            let context = format!("connecting to {addr}");
            return Err(Error::create(
                etype,
                source,
                Some(context.into()),
                Some(e.into()),
            ));
        }
        Err(elapsed) => {
            let context = format!("timeout {timeout:?} connecting to {addr}");
            return Err(Error::create(
                ErrorType::ConnectTimedout,
                ErrorSource::Upstream,
                Some(context.into()),
                Some(elapsed.into()),
            ));
        }
    };
    let establishment = started.elapsed();
    tcp.set_nodelay(true).map_err(|e| {
        Error::create(
            ErrorType::ConnectError,
            ErrorSource::Upstream,
            Some(format!("setting TCP_NODELAY on the connection to {addr}").into()),
            Some(e.into()),
        )
    })?;
    // The peer address is known, so logging it never costs a `getpeername`; the local address is
    // looked up (once per connection, by the digest) only if something asks for it.
    let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(addr)));
    Ok(Box::new(UpstreamIo {
        io: BufWriter::with_capacity(limits::UPSTREAM_WRITE_BUFFER, tcp),
        peer: addr,
        digest: Arc::new(digest),
        established: SystemTime::now(),
        establishment,
    }))
}

/// Pingora's classification of a failed `connect()` (`wrap_os_connect_error`; the bind errors it
/// then turns into `InternalError` in `connectors/l4.rs`).
fn connect_error_type(e: &io::Error) -> ErrorType {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => ErrorType::ConnectRefused,
        TimedOut => ErrorType::ConnectTimedout,
        NetworkUnreachable | HostUnreachable => ErrorType::ConnectNoRoute,
        AddrNotAvailable | PermissionDenied | AddrInUse => ErrorType::InternalError,
        _ => ErrorType::ConnectError,
    }
}

impl UpstreamIo {
    /// Whether this idle connection can carry another request: the upstream has not closed it and
    /// has sent nothing (bytes on an idle HTTP/1 connection mean it is out of step).
    ///
    /// No syscall unless tokio has seen the socket become readable. tokio 1.54.1:
    /// - the I/O driver dispatches every epoll event to the socket's readiness bits whether or not
    ///   a task waits on it (`runtime/io/driver.rs` 212-226 and `dispatch_event` 353-360:
    ///   `set_readiness(curr | ready)`, then `wake` whatever waiters there are, possibly none);
    /// - mio registers sockets edge-triggered with `EPOLLIN | EPOLLRDHUP`
    ///   (mio 1.2.4 `sys/unix/selector/epoll.rs` 130-133), and a FIN or RST arrives as
    ///   `READ_CLOSED` (`io/ready.rs::from_mio` 79-81), which `Interest::READABLE` includes
    ///   (`io/interest.rs::mask` 260);
    /// - `try_read` returns `WouldBlock` from those bits alone when they show nothing, without
    ///   calling `recv` (`runtime/io/registration.rs::try_io` 199-204), and when `recv` says
    ///   `WouldBlock` it clears them (207-209), so a stale readiness costs one syscall, once.
    ///
    /// Readiness is as fresh as the worker's last driver turn (it turns whenever the worker runs
    /// out of tasks, and every 61 task polls when busy). A close that lands after it is found
    /// when the request is written or its response read, as with any pool.
    fn is_reusable(&self) -> bool {
        match self.io.get_ref().try_read(&mut [0; 1]) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // 0: the upstream closed; 1: it sent bytes nobody asked for.
            Ok(_) => false,
        }
    }
}

/// Idle keep-alive connections of one worker, by upstream address. Not `Sync`: each worker thread
/// has its own (see [`with_pool`]), because a connection may only be used on the runtime whose
/// driver registered its socket.
#[derive(Debug)]
pub struct Pool {
    // FxHash: the pool is looked up twice per request and its keys are not attacker-chosen.
    idle: RefCell<FxHashMap<SocketAddr, VecDeque<Idle>>>,
    idle_timeout: Duration,
    per_address: usize,
}

/// One pooled connection. Each address's queue is in the order connections were returned, so the
/// most recently used is at the back and the first to expire at the front.
#[derive(Debug)]
struct Idle {
    io: Box<UpstreamIo>,
    since: Instant,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    /// A pool with the gateway's limits: [`limits::UPSTREAM_IDLE_TIMEOUT`] and
    /// [`limits::UPSTREAM_KEEPALIVE_POOL`] connections per address.
    pub fn new() -> Self {
        Self::with_limits(
            limits::UPSTREAM_IDLE_TIMEOUT,
            limits::UPSTREAM_KEEPALIVE_POOL,
        )
    }

    /// A pool closing connections idle for `idle_timeout` or longer and keeping at most
    /// `per_address` idle connections per upstream address.
    pub fn with_limits(idle_timeout: Duration, per_address: usize) -> Self {
        Self {
            idle: RefCell::default(),
            idle_timeout,
            per_address,
        }
    }

    /// An idle connection to `addr` that can carry a request, the most recently used first (so
    /// a steady load keeps reusing a warm few and lets the rest expire). Connections found
    /// expired or closed on the way are closed.
    pub fn take(&self, addr: SocketAddr) -> Option<Stream> {
        let mut idle = self.idle.borrow_mut();
        let queue = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = queue.pop_back() {
            if now.duration_since(conn.since) >= self.idle_timeout {
                // The newest is expired, so all older ones are too.
                queue.clear();
                return None;
            }
            if conn.io.is_reusable() {
                return Some(conn.io);
            }
        }
        None
    }

    /// Keeps `stream`, a connection to `addr` whose last response was read in full (what
    /// `HttpSession::reuse` returns), for a later [`take`](Self::take). The oldest idle connection
    /// to `addr` is closed past the per-address limit. A stream that did not come from
    /// [`connect`], is not connected to `addr`, or still holds unsent bytes is closed instead.
    pub fn put(&self, addr: SocketAddr, stream: Stream) {
        let Ok(io) = stream.into_any().downcast::<UpstreamIo>() else {
            return;
        };
        if io.peer != addr || !io.io.buffer().is_empty() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let queue = idle.entry(addr).or_default();
        queue.push_back(Idle {
            io,
            since: Instant::now(),
        });
        while queue.len() > self.per_address {
            queue.pop_front();
        }
    }

    /// Closes every idle connection that expired or that the upstream closed, and forgets
    /// addresses left with none. Without it a connection to an address no longer taken from
    /// would stay open (holding a descriptor in CLOSE_WAIT once the upstream closes it): run it
    /// periodically on every worker, see [`sweep_periodically`].
    pub fn sweep(&self) {
        let now = Instant::now();
        self.idle.borrow_mut().retain(|_, queue| {
            queue.retain(|c| now.duration_since(c.since) < self.idle_timeout && c.io.is_reusable());
            !queue.is_empty()
        });
    }

    /// Idle connections held, for all addresses.
    pub fn len(&self) -> usize {
        self.idle.borrow().values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

thread_local! {
    static POOL: Pool = Pool::new();
}

/// Runs `f` with the calling thread's pool: on a worker, that worker's. Do not call it again from
/// inside `f` with a `take`/`put` pending on the outer call (the pool is a `RefCell`).
pub fn with_pool<R>(f: impl FnOnce(&Pool) -> R) -> R {
    POOL.with(f)
}

/// Sweeps the calling worker's pool every [`limits::UPSTREAM_POOL_SWEEP_INTERVAL`], forever.
/// Spawn it once on each worker's runtime (a task per worker, not per connection).
pub async fn sweep_periodically() {
    let mut tick = tokio::time::interval(limits::UPSTREAM_POOL_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        with_pool(Pool::sweep);
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // BufWriter sends what it holds before shutting the socket down.
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for UpstreamIo {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.io).await {
            tracing::debug!(error = %e, peer = %self.peer, "failed to shut the upstream connection down");
        }
    }
}

impl UniqueID for UpstreamIo {
    fn id(&self) -> UniqueIDType {
        self.io.get_ref().as_raw_fd()
    }
}

/// Plain TCP: no TLS.
impl Ssl for UpstreamIo {}

impl GetTimingDigest for UpstreamIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            establishment_duration: Some(self.establishment),
            offload_wait_duration: None,
        })]
    }
}

/// Never through a CONNECT proxy.
impl GetProxyDigest for UpstreamIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for UpstreamIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.digest = Arc::new(digest);
    }
}

/// Peeking serves protocol detection on accepted connections; an upstream never needs it.
impl Peek for UpstreamIo {}

#[cfg(test)]
mod tests;
