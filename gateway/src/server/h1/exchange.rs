//! One HTTP/1 request → upstream → response exchange, in sequence, on one task.
//!
//! pingora-proxy runs the two directions as a joined pair of futures linked by channels, so a
//! request body and a response can flow at the same time. For HTTP/1 that buys nothing in the
//! common case and costs a channel pair, a join and a header clone per request; here the request
//! (header, then body) goes out first and the response comes back after, the way nginx proxies
//! HTTP/1 (it even buffers the whole request body first). Upgraded connections (WebSocket) are
//! the exception: both directions are copied at once (see [`tunnel`]).

use bytes::Bytes;
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::v1::common::is_expect_continue_req;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::RequestHeader;

use super::client::Upstream;
use super::session::Session;
use super::{sanitize, upstream};
use crate::server::downstream::Downstream;
use crate::server::handler::{Gateway, RequestCtx, UpstreamTarget};

/// Serves the request `ds` has read, to its end. Returns whether the downstream connection may
/// serve another request.
pub async fn serve_request(gw: &Gateway, ds: &mut Session) -> bool {
    let mut ctx = gw.new_ctx();
    let reuse = match proxy(gw, ds, &mut ctx).await {
        Ok(reuse) => reuse,
        Err(e) => gw.fail(ds, &e, &mut ctx).await.1,
    };
    gw.log(ds, &mut ctx);
    reuse
}

async fn proxy(gw: &Gateway, ds: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    if ds.req_header().method == http::Method::CONNECT {
        // As pingora-proxy: CONNECT changes message framing and is not proxied.
        ds.respond_error(405).await?;
        return Ok(false);
    }
    if gw.route(ds, ctx).await? {
        return Ok(true);
    }
    let has_body = !ds.is_body_empty();
    let mut target = gw.upstream(ctx)?;
    // A pooled connection first. The upstream may have closed it as it was taken (the pool's
    // liveness check cannot see a close still in flight): as Go's HTTP client does, a request
    // without a body that is safe to repeat is then sent again on a new connection. (One
    // `Upstream`, built in place: it is large, and moving it costs a copy each time.)
    let pooled = upstream::with_pool(|p| p.take(target.addr));
    let reused = pooled.is_some();
    let stream = match pooled {
        Some(stream) => stream,
        None => connect(gw, ctx, &mut target).await?,
    };
    let mut us = session(stream, &target);
    let request_sent = match send_request(gw, ds, &mut us, ctx, has_body).await {
        Ok(complete) => complete,
        Err(e) if reused && !has_body && is_idempotent(ds.req_header()) && !is_timeout(&e) => {
            tracing::debug!(upstream = %target.addr, error = %e, "pooled connection failed; sending again");
            let stream = connect(gw, ctx, &mut target).await?;
            us = session(stream, &target);
            send_request(gw, ds, &mut us, ctx, has_body).await?
        }
        Err(e) => return Err(e),
    };

    // Without pingora's map of header-name case (see `sanitize::without_case`), and with the
    // standard reason phrase, as Envoy answers.
    let mut resp = Box::new(us.take_resp_header().expect("read by send_request"));
    let passed = us.take_passed_fields();
    let upgrade_req = us.is_upgrade_req();
    sanitize::downstream_response(&mut resp, us.is_body_done(), ds.req_header(), upgrade_req)?;
    gw.response_headers(ds, &mut resp, ctx).await?;
    sanitize::after_response_filter(&resp, ds.req_header(), upgrade_req)?;
    let upgrade = ds.is_upgrade(&resp);
    if !request_sent {
        // The rest of the request body is still coming: the connection cannot carry another.
        ds.disable_keepalive();
    }
    ds.write_response_header_passing(resp, passed.as_ref())
        .await
        .map_err(Error::into_down)?;
    if upgrade {
        tunnel(ds, &mut us).await?;
        return Ok(false);
    }
    forward_response_body(gw, ds, &mut us, ctx).await?;

    // A connection whose request body was cut short (the upstream answered early) is not in step.
    if request_sent && let Some(stream) = us.into_reusable() {
        upstream::with_pool(|p| p.put(target.addr, stream));
    }
    Ok(true)
}

/// Writes the request (header, then body) and reads the response header. The upstream request
/// is built from the downstream one, which the plugins have already edited in place, so sending
/// it again on another connection builds the same request. `Ok(false)`: the upstream answered
/// before it took the whole body (e.g. 413, then closed); that answer is relayed, as pingora-proxy
/// does, and the request is not complete on that connection.
async fn send_request(
    gw: &Gateway,
    ds: &mut Session,
    us: &mut Upstream,
    ctx: &mut RequestCtx,
    has_body: bool,
) -> Result<bool> {
    // The gateway answers `Expect: 100-continue` itself (see `forward_request_body`).
    let drop_expect = has_body && is_expect_continue_req(ds.req_header());
    let direct = if gw.edits_upstream_request(ctx) {
        None
    } else {
        sanitize::direct_head(ds.req_header(), has_body, drop_expect, !ctx.has_plugins())?
    };
    let head = match direct {
        Some(head) => head,
        None => sanitize::general_head(ds.req_header(), has_body, drop_expect, |req| {
            gw.upstream_request(req, ctx)
        })?,
    };
    us.write_head(head).await?;
    if !gw.edits_response_headers(ctx) {
        us.pass_fields_through();
    }
    if has_body && let Err(e) = forward_request_body(gw, ds, us, ctx).await {
        if *e.esource() != ErrorSource::Upstream {
            return Err(e);
        }
        return match read_final_response(us).await {
            Ok(()) => Ok(false),
            Err(_) => Err(e),
        };
    }
    us.finish_body().await?;
    read_final_response(us).await?;
    Ok(true)
}

/// Go's `isReplayable`: the safe methods, or a request its client marked with an idempotency key.
fn is_idempotent(req: &RequestHeader) -> bool {
    use http::Method;
    matches!(
        req.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || req.headers.contains_key("idempotency-key")
        || req.headers.contains_key("x-idempotency-key")
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout
    )
}

/// A new connection to `target`, or, as [`Gateway::retry_connect`] allows, to another address of
/// its backend: `target` is left naming the one connected.
async fn connect(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    target: &mut UpstreamTarget,
) -> Result<Stream> {
    loop {
        match upstream::connect(target.addr, target.connect_timeout).await {
            Ok(stream) => return Ok(stream),
            Err(e) if gw.retry_connect(ctx) => {
                tracing::debug!(upstream = %target.addr, error = %e, "upstream connect failed; trying another address");
                *target = gw.upstream(ctx)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Each wait on the upstream is bounded by what remains of the route timeout (see [`Upstream`]).
fn session(stream: Stream, target: &UpstreamTarget) -> Upstream {
    Upstream::new(stream, target.io_timeout)
}

/// Streams the request body upstream through the plugins. A client that sent
/// `Expect: 100-continue` gets `100 Continue` from the gateway first, the way nginx answers it:
/// forwarding `Expect` and relaying the upstream's `100`, as pingora-proxy does, needs both
/// directions at once.
async fn forward_request_body(
    gw: &Gateway,
    ds: &mut Session,
    us: &mut Upstream,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if is_expect_continue_req(ds.req_header()) {
        ds.write_continue_response()
            .await
            .map_err(Error::into_down)?;
    }
    loop {
        let mut chunk = ds.read_request_body().await.map_err(Error::into_down)?;
        let end = chunk.is_none() || ds.is_body_done();
        gw.request_body(ds, &mut chunk, end, ctx).await?;
        if let Some(data) = chunk {
            us.write_body(&data).await?;
        }
        if end {
            return Ok(());
        }
    }
}

/// Reads the response header. Informational ones (`100 Continue`, `103 Early Hints`) are
/// skipped: the gateway answered `Expect: 100-continue` itself.
pub(super) async fn read_final_response(us: &mut Upstream) -> Result<()> {
    loop {
        us.read_response().await?;
        let status = us.resp_header().map_or(0, |r| r.status.as_u16());
        if !(100..200).contains(&status) || status == 101 {
            return Ok(());
        }
    }
}

async fn forward_response_body(
    gw: &Gateway,
    ds: &mut Session,
    us: &mut Upstream,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if !ctx.has_plugins() {
        // No plugin sees the body: its pieces go down as they come.
        while !us.is_body_done() {
            match us.read_body().await? {
                Some(data) => ds
                    .write_response_body(data, false)
                    .await
                    .map_err(Error::into_down)?,
                None => break,
            }
        }
        ds.finish_body().await.map_err(Error::into_down)?;
        return Ok(());
    }
    loop {
        let mut chunk = if us.is_body_done() {
            None
        } else {
            us.read_body().await?
        };
        let end = chunk.is_none() || us.is_body_done();
        gw.response_body(&mut chunk, end, ctx)?;
        ds.write_response_body(chunk.unwrap_or_default(), end)
            .await
            .map_err(Error::into_down)?;
        if end {
            return Ok(());
        }
    }
}

/// Copies both directions of an upgraded connection until both have ended.
async fn tunnel(ds: &mut Session, us: &mut Upstream) -> Result<()> {
    us.start_upgraded_body();
    let (mut down_open, mut up_open) = (true, true);
    while down_open || up_open {
        // Both reads are cancel-safe (pingora-proxy selects over them the same way); writes run
        // to completion outside the select.
        tokio::select! {
            r = ds.read_request_body(), if down_open => match r.map_err(Error::into_down)? {
                Some(data) => {
                    us.write_body(&data).await?;
                }
                None => {
                    down_open = false;
                    us.finish_body().await?;
                }
            },
            r = us.read_body(), if up_open => match r? {
                Some(data) => ds.write_response_body(data, false).await.map_err(Error::into_down)?,
                None => {
                    up_open = false;
                    ds.write_response_body(Bytes::new(), true).await.map_err(Error::into_down)?;
                }
            },
        }
    }
    Ok(())
}
