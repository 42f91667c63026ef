//! The seam between the shared handler (`handler.rs`) and the HTTP engines: what the handler needs
//! of the client's side of a request. Our HTTP/1 session (`h1/session.rs`) and pingora-core's
//! [`ServerSession`] (HTTP/2 and h2c through pingora-proxy, or HTTP/1 with
//! `--http1-engine pingora`) both provide it, so routing, plugins, errors, metrics and the access
//! log are written once.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

pub trait Downstream: Send {
    fn req_header(&self) -> &RequestHeader;
    /// Plugins edit the request in place: the upstream request is built from it.
    fn req_header_mut(&mut self) -> &mut RequestHeader;
    /// Whether the request has no body, as its header says.
    fn is_body_empty(&mut self) -> bool;
    fn write_response_header(
        &mut self,
        resp: Box<ResponseHeader>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// A piece of the response body; `end`: the last one (it may be empty).
    fn write_response_body(
        &mut self,
        data: Bytes,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The response header written, if any.
    fn response_written(&self) -> Option<&ResponseHeader>;
    /// The connection closes after this response.
    fn disable_keepalive(&mut self);
    fn is_http2(&self) -> bool;
    fn client_addr(&self) -> Option<SocketAddr>;
    /// The listener's address the client connected to.
    fn server_addr(&self) -> Option<SocketAddr>;
    fn body_bytes_sent(&self) -> usize;
    fn body_bytes_read(&self) -> usize;
}

impl Downstream for ServerSession {
    fn req_header(&self) -> &RequestHeader {
        ServerSession::req_header(self)
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        ServerSession::req_header_mut(self)
    }

    fn is_body_empty(&mut self) -> bool {
        ServerSession::is_body_empty(self)
    }

    fn write_response_header(
        &mut self,
        resp: Box<ResponseHeader>,
    ) -> impl Future<Output = Result<()>> + Send {
        ServerSession::write_response_header(self, resp)
    }

    fn write_response_body(
        &mut self,
        data: Bytes,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        ServerSession::write_response_body(self, data, end)
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        ServerSession::response_written(self)
    }

    fn disable_keepalive(&mut self) {
        self.set_keepalive(None);
    }

    fn is_http2(&self) -> bool {
        ServerSession::is_http2(self)
    }

    fn client_addr(&self) -> Option<SocketAddr> {
        ServerSession::client_addr(self)?.as_inet().copied()
    }

    fn server_addr(&self) -> Option<SocketAddr> {
        ServerSession::server_addr(self)?.as_inet().copied()
    }

    fn body_bytes_sent(&self) -> usize {
        ServerSession::body_bytes_sent(self)
    }

    fn body_bytes_read(&self) -> usize {
        ServerSession::body_bytes_read(self)
    }
}
