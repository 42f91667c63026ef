//! The pingora-proxy engine: HTTP/2 and h2c connections (HTTP/1 has its own loop, `h1/`). Each
//! `ProxyHttp` phase calls the shared handler (`handler.rs`); what is left here is Pingora's
//! view of the upstream (`HttpPeer`, pooled per worker).

use std::time::Duration;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use super::handler::{Gateway, RequestCtx};
use crate::limits;

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        Gateway::new_ctx(self)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.route(&mut **session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.request_body(&mut **session, body, end_of_stream, ctx)
            .await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let target = self.upstream(ctx)?;
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        peer.options.connection_timeout = Some(target.connect_timeout);
        peer.options.read_timeout = target.io_timeout;
        peer.options.write_timeout = target.io_timeout;
        peer.options.idle_timeout = Some(limits::UPSTREAM_IDLE_TIMEOUT);
        // Idle upstream connections are pooled per worker: one reused from another worker would
        // be driven by that worker's event loop, and every read would wake a thread across cores.
        peer.group_key = super::workers::current().map_or(u64::MAX, |w| w as u64);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        e.set_retry(self.retry_connect(ctx));
        tracing::debug!(peer = %peer, error = %e, "upstream connect failed");
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_request(upstream, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.response_headers(&mut **session, resp, ctx).await
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.response_body(body, end_of_stream, ctx)?;
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (error_code, can_reuse_downstream) = self.fail(&mut **session, e, ctx).await;
        FailToProxy {
            error_code,
            can_reuse_downstream,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `fail` logs every failure once, with the route; Pingora's own line would repeat it.
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log(&**session, ctx);
    }
}
