//! The HTTP/1 engine: our own proxy loop, server session and client.
//!
//! Why not pingora-proxy for HTTP/1 too: measured per request at saturation, its generic
//! machinery cost about as much as everything else together (a copy of the request header, two
//! channels and a joined pair of futures per request, a timer per upstream I/O even without a
//! timeout, boxed callbacks, and a connection pool that spawns a task for every connection it
//! takes back and asks the kernel for the peer of every connection it hands out). A prototype of
//! this loop served 1.7× the requests per second of the same gateway on pingora-proxy. The
//! sessions on both sides then became our own too (see [`session`] and [`client`] for why).
//! Routing, plugins, errors and logging are the shared handler (`handler.rs`), so both engines
//! behave the same. HTTP/2 and h2c stay on pingora-proxy
//! (`proxy.rs`); `--http1-engine pingora` sends HTTP/1 there as well.
//!
//! - [`session`]: the client's side of the connection, our own HTTP/1 server session.
//! - [`exchange`]: one request, from the downstream session to the upstream and back.
//! - [`client`]: the upstream side of it, our own HTTP/1 client (framing in [`framing`] and
//!   [`body`], shared with [`session`]), each wait bounded by the route timeout on the worker's timer.
//! - [`sanitize`]: what pingora-proxy does to a request before it goes upstream (hop-by-hop
//!   fields, `Connection` nominations, WebSocket upgrades, framing), ported.
//! - [`upstream`]: upstream connections and the per-worker idle pool.
//! - [`wire`]: what both sessions do with a connection's bytes (reading heads, writing pieces).

mod body;
mod client;
mod exchange;
mod framing;
pub mod sanitize;
mod session;
pub mod upstream;
mod wire;

#[cfg(test)]
mod pass_through_tests;

use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_error::ErrorType;

use self::session::Session;
use super::downstream::Downstream;
use super::handler::Gateway;

/// Serves HTTP/1 requests on `stream` until the client or the gateway closes the connection.
/// A request in progress when `shutdown` turns `true` is finished, without keep-alive.
pub async fn serve(gw: &Gateway, stream: Stream, shutdown: &ShutdownWatch) {
    // One wait for the shutdown per connection, not per request: each new wait takes the watch's
    // lock, which every connection of every worker shares. It is only polled by the select below,
    // which returns as soon as it completes.
    let mut watch = shutdown.clone();
    let closing = watch.changed();
    tokio::pin!(closing);
    // The keep-alive timeout: the next request's header must have arrived within
    // `--idle-timeout` of the end of the previous one (of the connection's start, for the
    // first). Not pingora-core's: it armed a timer in one process-wide, lock-guarded map for
    // every read that waits, which on a kept-alive connection is every request, and a header
    // trickling in a byte per read never expired it. One timer per connection instead, moved on
    // only when it fires.
    let idle = tokio::time::sleep(gw.idle_timeout);
    tokio::pin!(idle);
    let mut idle_since = tokio::time::Instant::now();
    let mut ds = Session::new(stream);
    loop {
        let read = {
            let read = ds.read_request();
            tokio::pin!(read);
            loop {
                tokio::select! {
                    // Biased: a request already buffered is served before a shutdown closes the
                    // connection.
                    biased;
                    r = &mut read => break r,
                    _ = &mut closing => return,
                    _ = &mut idle => {
                        let deadline = idle_since + gw.idle_timeout;
                        if tokio::time::Instant::now() >= deadline {
                            tracing::debug!("keep-alive timeout: no request header in time");
                            return;
                        }
                        idle.as_mut().reset(deadline);
                    }
                }
            }
        };
        match read {
            Ok(true) => {}
            // The client closed a kept-alive connection: the normal end.
            Ok(false) => return,
            Err(e) => {
                if *e.etype() == ErrorType::InvalidHTTPHeader {
                    tracing::debug!(error = %e, "bad request header");
                    let _ = ds.respond_error(400).await;
                }
                ds.shutdown().await;
                return;
            }
        }
        if *shutdown.borrow() {
            ds.disable_keepalive();
        }
        if !exchange::serve_request(gw, &mut ds).await {
            // Not `finish`: after a failure mid-response it would end a chunked body with its
            // last chunk, and the client would take a cut response for a whole one. Shutting down
            // flushes what was written and closes.
            ds.shutdown().await;
            return;
        }
        idle_since = tokio::time::Instant::now();
        if !matches!(ds.finish().await, Ok(true)) {
            return;
        }
    }
}
