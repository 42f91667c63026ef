//! The admin server: `/ready`, `/healthz`, `/metrics`, `/config_dump`.
//!
//! A small hyper server of its own rather than a Pingora service: it must run before the first
//! config is live (to answer `/ready` with 503), it must not share ports or connection limits with
//! the Gateway listeners, and it never proxies, so Pingora's proxy machinery would only add weight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Produces the `/config_dump` document on demand.
pub type DumpFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Set once the first configuration is live (listeners bound, routes swapped in).
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub dump: DumpFn,
}

/// Binds the admin address (an error here is fatal: the operator asked for this address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until `stop` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(crate::limits::ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no configuration live yet\n",
                )
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(state.metrics.render())))
            .unwrap_or_default(),
        "/config_dump" => {
            let body = serde_json::to_vec_pretty(&(state.dump)()).unwrap_or_default();
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /ready, /healthz, /metrics, /config_dump\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}
