//! What the gateway does with a request, phase by phase, whichever HTTP engine carries it:
//! pingora-proxy for HTTP/2 and h2c (`proxy.rs`), our own loop for HTTP/1 (`h1/`). Both give it
//! the client's side of the request as a [`Downstream`], so routing, plugins, errors, metrics and
//! the access log are written once, here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::downstream::Downstream;
use super::errors;
use crate::access_log::{self, AccessRecord};
use crate::backends::{Backend, NoBackend};
use crate::config::{CompiledConfig, SharedConfig};
use crate::limits;
use crate::metrics::Metrics;
use crate::plugins::filter::{self, ChainRun};
use crate::plugins::{Chain, ChainLink, PluginManager};
use crate::routing::filters::{HeaderSink, RedirectInput};
use crate::routing::host::normalize_host;
use crate::routing::{RequestView, Rule};

/// The gateway's request handler: what both engines share.
#[derive(Clone)]
pub struct Gateway {
    pub config: SharedConfig,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    /// `--idle-timeout`: how long a connection may take to send its next request header.
    pub idle_timeout: Duration,
}

/// Per-request state. The config snapshot is taken once when the request starts and kept to the
/// end, so a reload never changes the routing of a request in flight.
pub struct RequestCtx {
    config: Arc<CompiledConfig>,
    start: Instant,
    rule: Option<Arc<Rule>>,
    matched_prefix_len: Option<usize>,
    backend: Option<Arc<Backend>>,
    pub upstream: Option<SocketAddr>,
    connect_attempts: usize,
    /// The WasmPlugin chain of this request, once its request headers ran (`None`: no plugin).
    wasm: Option<Box<ChainRun>>,
    /// A plugin answered the request itself: nothing else may be written.
    pub replied: bool,
}

impl RequestCtx {
    /// Whether plugins run on this request, and so see its response body.
    pub fn has_plugins(&self) -> bool {
        self.wasm.is_some()
    }
}

// Pingora requires the CTX to be Send + Sync; keep that a compile-time fact.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RequestCtx>();
};

/// Where and how to reach the upstream for one attempt.
pub struct UpstreamTarget {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// Bound on each upstream read and write: what remains of the route timeout.
    pub io_timeout: Option<Duration>,
}

/// A plugin's local reply was written: the request ends without another response.
pub const PLUGIN_REPLIED: pingora_error::ErrorType =
    pingora_error::ErrorType::new_code("PluginReplied", 0);

impl Gateway {
    pub fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            config: self.config.load_full(),
            start: Instant::now(),
            rule: None,
            matched_prefix_len: None,
            backend: None,
            upstream: None,
            connect_attempts: 0,
            wasm: None,
            replied: false,
        }
    }

    /// Routes the request. `Ok(true)`: the response is written (a redirect or a plugin's reply).
    pub async fn route<D: Downstream>(&self, ds: &mut D, ctx: &mut RequestCtx) -> Result<bool> {
        let port = local_port(ds);
        let req = ds.req_header();
        let host = normalize_host(request_host(req));
        let view = RequestView {
            port,
            host: &host,
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
        };
        let scheme = if ctx.config.is_tls_port(port) {
            "https"
        } else {
            "http"
        };
        let Some(entry) = ctx.config.routes.lookup(&view) else {
            let explain = format!("no route for {host}{}", view.path);
            // Gateway-wide plugins still run before the 404.
            let chain = ctx.config.unrouted_chains.get(&port).cloned();
            let not_found = Error::e_explain(errors::NO_ROUTE, explain);
            return plugins_then(ds, ctx, chain, scheme, not_found).await;
        };
        let rule = entry.rule.clone();
        let chains = entry.chains.clone();
        ctx.matched_prefix_len = entry.matcher.path.prefix_len();

        if let Some(redirect) = &rule.filters.redirect {
            let location = redirect.location(&RedirectInput {
                scheme,
                host: &host,
                listener_port: port,
                path: view.path,
                query: view.query,
                matched_prefix_len: ctx.matched_prefix_len,
            });
            let mut resp = ResponseHeader::build(redirect.status, Some(2))?;
            resp.insert_header(http::header::LOCATION, location)?;
            resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
            rule.filters
                .response_headers
                .apply(&mut PingoraHeaders(&mut resp));
            ctx.rule = Some(rule);
            ds.write_response_header(Box::new(resp)).await?;
            ds.write_response_body(Bytes::new(), true).await?;
            return Ok(true);
        }

        let backend = match rule.backends.pick() {
            Ok(b) => b,
            Err(why) => {
                let message = match why {
                    NoBackend::ZeroWeight => {
                        format!("route {} has no backend with weight > 0", rule.route)
                    }
                    NoBackend::Refused(why) => format!("route {}: {why}", rule.route),
                };
                ctx.rule = Some(rule);
                // The plugins of the gateway and the route still run before the 500.
                let chain = chains.as_ref().and_then(|c| c.for_no_backend()).cloned();
                let no_backend = Error::e_explain(errors::NO_BACKEND, message);
                return plugins_then(ds, ctx, chain, scheme, no_backend).await;
            }
        };
        let chain = chains
            .as_ref()
            .and_then(|c| c.for_backend(backend))
            .cloned();
        ctx.backend = Some(backend.clone());
        ctx.rule = Some(rule);
        plugins_then(ds, ctx, chain, scheme, Ok(false)).await
    }

    /// One chunk of the request body through the plugins. `body` is what goes upstream (`None`:
    /// nothing now, a plugin buffers it).
    pub async fn request_body<D: Downstream>(
        &self,
        ds: &mut D,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(run) = ctx.wasm.as_mut().filter(|r| !r.no_request_body) else {
            return Ok(());
        };
        let timeout = pause_timeout(ctx.rule.as_deref(), ctx.start);
        let mut data = body.take().unwrap_or_default();
        let mut reply = None;
        for s in run.streams.iter_mut() {
            let mut out = s.on_request_body(&mut data, end_of_stream);
            if out.local_reply.is_none() && out.action == wasmgate_runtime::Action::Pause {
                if !end_of_stream {
                    // The runtime keeps the chunk; the next one is offered together with it.
                    return Ok(());
                }
                // Paused at the end of the body (e.g. waiting on an HTTP call): wait for it.
                out = tokio::time::timeout(timeout, s.resumed())
                    .await
                    .map_err(|_| {
                        Error::explain(errors::REQUEST_TIMEOUT, "plugin held the request body")
                    })?;
                if out.local_reply.is_none() {
                    data = s.take_buffered_request_body();
                }
            }
            if out.local_reply.is_some() {
                reply = out.local_reply;
                break;
            }
        }
        if let Some(reply) = reply {
            send_local_reply(ds, ctx, reply).await?;
            return Error::e_explain(PLUGIN_REPLIED, "a plugin answered the request");
        }
        // An empty chunk is not forwarded: it would end a chunked body early.
        *body = (!data.is_empty()).then_some(data);
        Ok(())
    }

    /// The upstream address and timeouts for the next connect attempt.
    pub fn upstream(&self, ctx: &mut RequestCtx) -> Result<UpstreamTarget> {
        ctx.connect_attempts += 1;
        let backend = ctx
            .backend
            .as_ref()
            .ok_or_else(|| Error::explain(errors::NO_BACKEND, "no backend selected"))?;
        let Some(addr) = backend.pick() else {
            return Error::e_explain(
                errors::BACKEND_UNRESOLVED,
                format!(
                    "backend {}:{} has no address",
                    backend.key.name, backend.key.port
                ),
            );
        };
        let timeout = ctx
            .rule
            .as_ref()
            .and_then(|r| r.upstream_timeout(|| ctx.start.elapsed()));
        if timeout == Some(Duration::ZERO) {
            return Error::e_explain(errors::REQUEST_TIMEOUT, "route request timeout expired");
        }
        ctx.upstream = Some(addr);
        Ok(UpstreamTarget {
            addr,
            connect_timeout: timeout.map_or(limits::UPSTREAM_CONNECT_TIMEOUT, |t| {
                t.min(limits::UPSTREAM_CONNECT_TIMEOUT)
            }),
            io_timeout: timeout,
        })
    }

    /// After a failed connect: whether to try again (another address of the backend may be up;
    /// [`Gateway::upstream`] picks the next one).
    pub fn retry_connect(&self, ctx: &RequestCtx) -> bool {
        let others = ctx
            .backend
            .as_ref()
            .is_some_and(|b| b.addresses().len() > 1);
        others && ctx.connect_attempts < limits::MAX_CONNECT_ATTEMPTS
    }

    /// The route's rewrites and header filters on the request that goes upstream.
    /// Whether [`upstream_request`](Self::upstream_request) would change the request: the
    /// route rewrites it or edits its headers.
    pub fn edits_upstream_request(&self, ctx: &RequestCtx) -> bool {
        ctx.rule.as_ref().is_some_and(|rule| {
            rule.filters.rewrite.is_some() || !rule.filters.request_headers.is_empty()
        })
    }

    pub fn upstream_request(&self, upstream: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
        let Some(rule) = &ctx.rule else { return Ok(()) };
        if let Some(rw) = &rule.filters.rewrite {
            if let Some(host) = &rw.hostname {
                upstream.insert_header(http::header::HOST, host.clone())?;
            }
            if let Some(pm) = &rw.path {
                let new_path = pm.apply(upstream.uri.path(), ctx.matched_prefix_len);
                let pq = match upstream.uri.query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                let uri = http::Uri::builder()
                    .path_and_query(pq)
                    .build()
                    .map_err(|e| {
                        Error::because(
                            pingora_error::ErrorType::InternalError,
                            "rewritten path is not a valid URI",
                            e,
                        )
                    })?;
                upstream.set_uri(uri);
            }
        }
        rule.filters
            .request_headers
            .apply(&mut PingoraHeaders(upstream));
        Ok(())
    }

    /// Whether [`response_headers`](Self::response_headers) reads or edits more of the
    /// response than its framing: the route's response filters or a plugin do.
    pub fn edits_response_headers(&self, ctx: &RequestCtx) -> bool {
        ctx.has_plugins()
            || ctx
                .rule
                .as_ref()
                .is_some_and(|rule| !rule.filters.response_headers.is_empty())
    }

    /// The route's response header filters, then the plugins' response-header callbacks, then
    /// the framing the downstream can take (see [`fit_framing`]).
    pub async fn response_headers<D: Downstream>(
        &self,
        ds: &mut D,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(rule) = &ctx.rule
            && !rule.filters.response_headers.is_empty()
        {
            rule.filters
                .response_headers
                .apply(&mut PingoraHeaders(resp));
        }
        if let Some(run) = ctx.wasm.as_mut() {
            let timeout = pause_timeout(ctx.rule.as_deref(), ctx.start);
            run_response_headers(run, resp, false, timeout).await?;
        }
        fit_framing(ds, resp);
        Ok(())
    }

    /// One chunk of the response body through the plugins, in reverse chain order.
    pub fn response_body(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(run) = ctx.wasm.as_mut() else {
            return Ok(());
        };
        if run.replace_body.is_some() {
            *body = if end_of_stream {
                run.replace_body.take()
            } else {
                None
            };
            return Ok(());
        }
        if let Some(reply) =
            filter::body_chunk(run.streams.iter_mut().rev(), body, end_of_stream, false)
        {
            // Headers are gone already; Envoy resets the stream in this case.
            tracing::debug!(
                status = reply.status,
                "plugin local reply after response headers: stream reset"
            );
            return Error::e_explain(PLUGIN_REPLIED, "plugin local reply after response headers");
        }
        Ok(())
    }

    /// The one place errors become responses (see [`errors::response_for`]). Returns the status
    /// the client got (0: none) and whether the downstream connection may serve another request.
    ///
    /// As Envoy's `sendLocalReply` from its router: the reply goes through the response
    /// callbacks of the plugins whose request headers ran (see [`send_reply`]), so they can
    /// decorate a 404, 503 or 504 as any response. Nothing is written after the response header
    /// went out (Envoy resets the stream then), nor after a plugin's own reply.
    pub async fn fail<D: Downstream>(
        &self,
        ds: &mut D,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> (u16, bool) {
        if ctx.replied {
            return (0, false);
        }
        let (code, text, reuse) = errors::response_for(e);
        let route = ctx.rule.as_ref().map_or("", |r| &r.route);
        if code == 404 {
            tracing::debug!(error = %e, "no route");
        } else if code >= 500 {
            tracing::warn!(status = code, route, upstream = ?ctx.upstream, error = %e, "request failed");
        }
        if code == 0 {
            return (0, reuse);
        }
        if ds
            .response_written()
            .is_some_and(|r| !r.status.is_informational() || r.status == 101)
        {
            return (code, false);
        }
        if !reuse {
            // As Pingora's error writer: after an upstream failure the connection is not reused.
            ds.disable_keepalive();
        }
        let resp = match errors::reply_header(code, text) {
            Ok(resp) => resp,
            Err(be) => {
                tracing::debug!(status = code, error = %be, "no error response for this status");
                return (0, false);
            }
        };
        if let Err(we) = send_reply(ds, ctx, resp, errors::body(text)).await {
            tracing::debug!(error = %we, "failed to send error response");
        }
        match ds.response_written() {
            Some(r) => (r.status.as_u16(), reuse),
            None => (0, false),
        }
    }

    /// The end of a request: the plugins' log callbacks, metrics and the access log.
    pub fn log<D: Downstream>(&self, ds: &D, ctx: &mut RequestCtx) {
        if let Some(mut run) = ctx.wasm.take() {
            for s in &mut run.streams {
                s.on_log();
            }
        }
        let status = ds.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        let route = ctx.rule.as_deref().map(|r| &*r.route);
        match ctx.rule.as_ref().and_then(|r| r.ok_counter.as_ref()) {
            Some(ok) if status == 200 => ok.inc(),
            _ => self.metrics.request_done(route, status),
        }
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
        if self.access_log {
            let req = ds.req_header();
            let upstream = ctx.upstream.map(|a| a.to_string());
            access_log::emit(&AccessRecord {
                method: req.method.as_str(),
                path: req.uri.path_and_query().map_or("", |p| p.as_str()),
                host: request_host(req),
                status,
                route: route.unwrap_or(""),
                upstream: upstream.as_deref().unwrap_or(""),
                duration_us: elapsed.as_micros() as u64,
                bytes_sent: ds.body_bytes_sent(),
                bytes_received: ds.body_bytes_read(),
            });
        }
    }
}

struct PingoraHeaders<'a, T>(&'a mut T);

/// The route filters' header edits on Pingora's request and response headers, which have the
/// same methods but no common trait.
macro_rules! pingora_header_sink {
    ($($header:ty),*) => {$(
        impl HeaderSink for PingoraHeaders<'_, $header> {
            fn set(&mut self, n: &http::HeaderName, v: &http::HeaderValue) {
                let _ = self.0.insert_header(n.clone(), v.clone());
            }
            fn append(&mut self, n: &http::HeaderName, v: &http::HeaderValue) {
                let _ = self.0.append_header(n.clone(), v.clone());
            }
            fn remove(&mut self, n: &http::HeaderName) {
                self.0.remove_header(n);
            }
        }
    )*};
}
pingora_header_sink!(RequestHeader, ResponseHeader);

/// An HTTP/1.0 client cannot decode a chunked body (RFC 9112 §6.1), which pingora would pass on
/// or even create: it gets the body as it comes, ended by the gateway closing the connection. A
/// response body with neither a length nor chunking is always ended that way, and pingora-core
/// does not turn keep-alive off for it by itself.
fn fit_framing<D: Downstream>(ds: &mut D, resp: &mut ResponseHeader) {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    if ds.is_http2() {
        return;
    }
    if ds.req_header().version == http::Version::HTTP_10 {
        resp.remove_header(&TRANSFER_ENCODING);
    }
    let bodiless = resp.status.is_informational()
        || resp.status == http::StatusCode::NO_CONTENT
        || resp.status == http::StatusCode::NOT_MODIFIED
        || ds.req_header().method == http::Method::HEAD;
    // `Content-Length` first: most responses have it, and a lookup that misses costs the most.
    if !bodiless
        && !resp.headers.contains_key(CONTENT_LENGTH)
        && !resp.headers.contains_key(TRANSFER_ENCODING)
    {
        ds.disable_keepalive();
    }
}

/// The request's host: the URI authority (HTTP/2, absolute-form) or the `Host` header.
fn request_host(req: &RequestHeader) -> &str {
    req.uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

fn local_port<D: Downstream>(ds: &D) -> u16 {
    ds.server_addr().map_or(0, |a| a.port())
}

/// How long a paused plugin may hold the request: what remains of the route timeout.
fn pause_timeout(rule: Option<&Rule>, start: Instant) -> Duration {
    rule.and_then(|r| r.request_timeout)
        .map_or(limits::PLUGIN_PAUSE_TIMEOUT, |t| {
            t.saturating_sub(start.elapsed())
        })
}

fn stream_info<D: Downstream>(ds: &D, ctx: &RequestCtx) -> wasmgate_runtime::StreamInfo {
    wasmgate_runtime::StreamInfo {
        source: ds.client_addr(),
        destination: ds.server_addr(),
        protocol: if ds.is_http2() { "HTTP/2" } else { "HTTP/1.1" }.into(),
        route_name: ctx.rule.as_ref().map(|r| r.route.clone()),
        cluster_name: ctx.backend.as_ref().map(|b| b.key.name.clone()),
        ..Default::default()
    }
}

/// Runs the request-header callbacks of the chain, in order. `Ok(true)`: a plugin (or deny-all)
/// answered and the response is written.
/// The request's plugins (`chain`, if any), then `router`'s answer unless a plugin answered the
/// request itself: Envoy's filters run before its router, whose 404 or 500 is then a response
/// like any other to them.
async fn plugins_then<D: Downstream>(
    ds: &mut D,
    ctx: &mut RequestCtx,
    chain: Option<Chain>,
    scheme: &str,
    router: Result<bool>,
) -> Result<bool> {
    if let Some(chain) = chain
        && run_request_chain(ds, ctx, chain, scheme).await?
    {
        return Ok(true);
    }
    router
}

async fn run_request_chain<D: Downstream>(
    ds: &mut D,
    ctx: &mut RequestCtx,
    chain: Chain,
    scheme: &str,
) -> Result<bool> {
    let info = Arc::new(stream_info(ds, ctx));
    let timeout = pause_timeout(ctx.rule.as_deref(), ctx.start);
    let host = normalize_host(request_host(ds.req_header())).into_owned();
    let mut headers = filter::request_list(ds.req_header(), scheme, &host);
    // A reference, kept to tell at the end whether a plugin edited the list (see `is_same`).
    let seen = headers.clone();
    let eos = ds.is_body_empty();
    ctx.wasm = Some(Box::new(ChainRun::new(chain.clone())));
    for link in chain.iter() {
        let run = ctx.wasm.as_mut().expect("set above");
        let a = match link {
            ChainLink::DenyAll(d) => {
                PluginManager::count_deny(d);
                send_local_reply(ds, ctx, filter::deny_all_reply()).await?;
                return Ok(true);
            }
            ChainLink::Run(a) => a,
        };
        run.streams.push(a.plugin.new_stream(info.clone()));
        let s = run.streams.last_mut().expect("pushed");
        let mut out = s.on_request_headers(&mut headers, eos);
        if out.local_reply.is_none() && out.action == wasmgate_runtime::Action::Pause {
            out = match tokio::time::timeout(timeout, s.resumed()).await {
                Ok(o) => o,
                Err(_) => {
                    return Error::e_explain(
                        errors::REQUEST_TIMEOUT,
                        format!("plugin {} held the request past the route timeout", a.name),
                    );
                }
            };
            if out.local_reply.is_none()
                && out.action == wasmgate_runtime::Action::Continue
                && let Some(h) = s.request_headers()
            {
                headers = h;
            }
        }
        if let Some(reply) = out.local_reply {
            send_local_reply(ds, ctx, reply).await?;
            return Ok(true);
        }
        if out.action == wasmgate_runtime::Action::Close {
            ctx.replied = true;
            return Error::e_explain(
                PLUGIN_REPLIED,
                format!("plugin {} closed the stream", a.name),
            );
        }
    }
    if !headers.is_same(&seen) {
        filter::apply_request(ds.req_header_mut(), scheme, &host, &headers);
    }
    if let Some(run) = ctx.wasm.as_mut() {
        run.no_request_body = eos;
    }
    Ok(false)
}

/// Sends a plugin's local reply (see [`send_reply`]).
async fn send_local_reply<D: Downstream>(
    ds: &mut D,
    ctx: &mut RequestCtx,
    reply: wasmgate_runtime::LocalReply,
) -> Result<()> {
    let (resp, body) = filter::local_reply_response(reply);
    send_reply(ds, ctx, resp, body).await
}

/// Sends a response the gateway made itself (an error) or a plugin asked for (a local reply),
/// as Envoy's `sendLocalReply`: through the response-header callbacks of the plugins whose
/// request headers ran, in reverse chain order, then their body callbacks. What follows Envoy:
/// - a plugin that never saw the request headers is not called (cpp-host's `onResponseHeaders`
///   skips a context that was never created);
/// - a local reply from a response-header callback (a fail-closed trap's 503 included) replaces
///   the response, and no plugin sees the new one (`sendDirectLocalReply`);
/// - once response callbacks ran for a response, a later reply goes out without them;
/// - a local reply from a body callback comes after Envoy sent the header: the stream is reset
///   (`Err(PLUGIN_REPLIED)`, nothing written).
///
/// `resp` carries everything but the body's length, which is set here from the final body.
/// Nothing else is written for the request afterwards (`ctx.replied`).
async fn send_reply<D: Downstream>(
    ds: &mut D,
    ctx: &mut RequestCtx,
    mut resp: ResponseHeader,
    body: Bytes,
) -> Result<()> {
    ctx.replied = true;
    let body = run_reply_callbacks(ctx, &mut resp, body).await?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    ds.write_response_header(Box::new(resp)).await?;
    ds.write_response_body(body, true).await
}

/// The plugin part of [`send_reply`]; returns the body to send.
async fn run_reply_callbacks(
    ctx: &mut RequestCtx,
    resp: &mut ResponseHeader,
    body: Bytes,
) -> Result<Bytes> {
    let timeout = pause_timeout(ctx.rule.as_deref(), ctx.start);
    let Some(run) = ctx.wasm.as_mut().filter(|r| !r.response_started) else {
        return Ok(body);
    };
    if let Err(e) = run_response_headers(run, resp, body.is_empty(), timeout).await {
        // A plugin held the reply past the route timeout: the timeout's reply goes out instead.
        let (code, text, _) = errors::response_for(&e);
        *resp = errors::reply_header(code, text)?;
        return Ok(errors::body(text));
    }
    if let Some(replaced) = run.replace_body.take() {
        return Ok(replaced);
    }
    if body.is_empty() {
        return Ok(body);
    }
    let mut body = Some(body);
    if let Some(reply) = filter::body_chunk(run.streams.iter_mut().rev(), &mut body, true, false) {
        tracing::debug!(
            status = reply.status,
            "plugin local reply from the body of a local reply: stream reset"
        );
        return Error::e_explain(PLUGIN_REPLIED, "plugin local reply after response headers");
    }
    Ok(body.unwrap_or_default())
}

/// Response-header callbacks, in reverse chain order. A local reply here replaces the response
/// (its body in `run.replace_body`); no plugin sees it.
async fn run_response_headers(
    run: &mut ChainRun,
    resp: &mut ResponseHeader,
    end_of_stream: bool,
    timeout: Duration,
) -> Result<()> {
    run.response_started = true;
    let mut list = filter::response_list(resp);
    let seen = list.clone();
    let n = run.streams.len();
    for i in (0..n).rev() {
        let s = &mut run.streams[i];
        let mut out = s.on_response_headers(&mut list, end_of_stream);
        if out.local_reply.is_none() && out.action == wasmgate_runtime::Action::Pause {
            out = tokio::time::timeout(timeout, s.resumed())
                .await
                .map_err(|_| Error::explain(errors::REQUEST_TIMEOUT, "plugin held the response"))?;
            if out.local_reply.is_none()
                && let Some(h) = s.response_headers()
            {
                list = h;
            }
        }
        if let Some(reply) = out.local_reply {
            let (mut new, body) = filter::local_reply_response(reply);
            new.insert_header(http::header::CONTENT_LENGTH, body.len())?;
            *resp = new;
            run.replace_body = Some(body);
            return Ok(());
        }
    }
    if !list.is_same(&seen) {
        filter::apply_response(resp, &list);
    }
    Ok(())
}
