//! Write coalescing for accepted connections.
//!
//! Pingora's HTTP/1 writer is built for a buffered transport: it writes the response header and
//! a known-length body as separate writes and flushes once, when the response is complete (and
//! flushes after every chunk of a chunked or close-delimited body, so streaming is not delayed).
//! Pingora's own listeners give each accepted stream a write buffer for that, but the call that
//! does it (`Stream::set_buffer`) is crate-private, and a stream made with `From<TcpStream>` has
//! none, so every write was its own `send`: two per small response instead of one. On loopback a
//! `send` also pays for waking the receiver, and the bench measured it as the largest single cost.
//! [`Coalesced`] puts the buffer back, above TLS too, so a small response is one TLS record and
//! one `send`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// A stream whose writes are buffered until Pingora flushes (see the module docs).
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: BufWriter<S>,
}

impl<S: AsyncWrite> Coalesced<S> {
    pub fn new(stream: S, capacity: usize) -> Self {
        Self {
            inner: BufWriter::with_capacity(capacity, stream),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // BufWriter flushes what it holds before shutting the stream down.
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: AsyncWrite + Unpin + Send> Shutdown for Coalesced<S> {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.inner).await {
            tracing::debug!(error = %e, "failed to shut the connection down");
        }
    }
}

impl<S: AsyncWrite + UniqueID> UniqueID for Coalesced<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().id()
    }
}

impl<S: AsyncWrite + Ssl> Ssl for Coalesced<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ref().get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ref().get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.get_ref().selected_alpn_proto()
    }
}

impl<S: AsyncWrite + GetTimingDigest> GetTimingDigest for Coalesced<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_ref().get_timing_digest()
    }
    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_ref().get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_ref().get_write_pending_time()
    }
}

impl<S: AsyncWrite + GetProxyDigest> GetProxyDigest for Coalesced<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_ref().get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.get_mut().set_proxy_digest(digest);
    }
}

impl<S: AsyncWrite + GetSocketDigest> GetSocketDigest for Coalesced<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_ref().get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.get_mut().set_socket_digest(digest);
    }
}

#[async_trait]
impl<S: AsyncWrite + Peek + Send> Peek for Coalesced<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.get_mut().try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write that reaches the "socket".
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn header_and_small_body_leave_in_one_write_at_flush() {
        let mut s = Coalesced::new(Socket::default(), 4096);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n")
            .await
            .unwrap();
        s.write_all(b"ok\n").await.unwrap();
        assert!(
            s.inner.get_ref().writes.is_empty(),
            "nothing sent before the flush"
        );
        s.flush().await.unwrap();
        let writes = &s.inner.get_ref().writes;
        assert_eq!(writes.len(), 1);
        assert!(writes[0].ends_with(b"\r\n\r\nok\n"));
    }

    #[tokio::test]
    async fn a_write_larger_than_the_buffer_goes_straight_out() {
        let mut s = Coalesced::new(Socket::default(), 16);
        s.write_all(b"head").await.unwrap();
        s.write_all(&[b'x'; 100]).await.unwrap();
        s.flush().await.unwrap();
        let writes = &s.inner.get_ref().writes;
        assert_eq!(writes.iter().map(Vec::len).collect::<Vec<_>>(), [4, 100]);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered() {
        let mut s = Coalesced::new(Socket::default(), 4096);
        s.write_all(b"last bytes").await.unwrap();
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        assert_eq!(s.inner.get_ref().writes, [b"last bytes".to_vec()]);
    }
}
