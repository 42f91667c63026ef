//! The gateway side of the runtime's [`Host`] seam: logs through `tracing`, HTTP calls to the
//! gateway's backends on tokio, gRPC streams ([`super::grpc_stream`]), and host-level properties.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wasmgate_runtime::{
    CallCompletion, CallResponse, GrpcCall, GrpcStream, GrpcStreamEvents, GrpcStreamSink,
    HeaderList, Host, HttpCall, LogLevel, Status,
};

use crate::backends::{Backend, Backends};

/// The gateway's [`Host`]. Needs a tokio runtime handle for calls dispatched from the runtime's
/// timer thread (`proxy_on_tick`), which is not a tokio thread.
pub struct GatewayHost {
    pub backends: Arc<Backends>,
    pub tokio: tokio::runtime::Handle,
    /// `xds.node.id`.
    pub node_id: String,
}

impl Host for GatewayHost {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Trace => tracing::trace!(target: "wasm", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "wasm", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "wasm", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "wasm", plugin, "{message}"),
            _ => tracing::error!(target: "wasm", plugin, "{message}"),
        }
    }

    fn property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        match path {
            [b"xds", b"node", b"id"] | [b"node", b"id"] => Some(self.node_id.clone().into_bytes()),
            [b"xds", b"node", b"cluster"] | [b"node", b"cluster"] => Some(b"wasmgate".to_vec()),
            _ => None,
        }
    }

    fn dispatch_http_call(&self, call: HttpCall, done: CallCompletion) -> Result<(), Status> {
        let backend = find_upstream(&self.backends, &call.upstream).ok_or(Status::BadArgument)?;
        // On the worker whose plugin made the call, so the answer does not cross threads; the
        // control runtime when the call comes from the timer thread (`proxy_on_tick`).
        let tokio = tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.tokio.clone());
        tokio.spawn(async move {
            let timeout = call.timeout.unwrap_or(crate::limits::PLUGIN_PAUSE_TIMEOUT);
            match tokio::time::timeout(timeout, http_call(&backend, call)).await {
                Ok(Ok(resp)) => done.complete(resp),
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %backend.key.name, error = %e, "plugin http call failed");
                    done.fail();
                }
                Err(_) => done.fail(),
            }
        });
        Ok(())
    }

    fn dispatch_grpc_call(&self, call: GrpcCall, done: CallCompletion) -> Result<(), Status> {
        let backend = find_upstream(&self.backends, &call.upstream).ok_or(Status::BadArgument)?;
        // On the worker whose plugin made the call, as HTTP calls.
        let tokio = tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.tokio.clone());
        super::grpc_stream::call(&tokio, backend, call, done);
        Ok(())
    }

    fn open_grpc_stream(
        &self,
        stream: GrpcStream,
        events: GrpcStreamEvents,
    ) -> Result<Box<dyn GrpcStreamSink>, Status> {
        let backend =
            find_upstream(&self.backends, &stream.upstream).ok_or(Status::InternalFailure)?;
        // On the worker whose plugin opened the stream, so its events are delivered there.
        let tokio = tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.tokio.clone());
        Ok(super::grpc_stream::open(&tokio, backend, stream, events))
    }
}

/// Resolves an upstream as plugins name it: a backend name, `name:port`, or Istio's cluster name
/// `outbound|PORT||HOST` (HOST's first label is the name, e.g. `httpbin.default.svc.cluster.local`).
pub fn find_upstream(backends: &Backends, upstream: &str) -> Option<Arc<Backend>> {
    let (name, port, ns) = if let Some(rest) = upstream.strip_prefix("outbound|") {
        let mut parts = rest.splitn(3, '|');
        let port: u16 = parts.next()?.parse().ok()?;
        let _subset = parts.next()?;
        let host = parts.next()?.trim_start_matches('|');
        let mut labels = host.split('.');
        let name = labels.next()?;
        (
            name.to_owned(),
            Some(port),
            labels.next().map(str::to_owned),
        )
    } else if let Some((n, p)) = upstream.rsplit_once(':') {
        (n.to_owned(), Some(p.parse().ok()?), None)
    } else {
        (upstream.to_owned(), None, None)
    };
    let mut all = backends.all();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all.into_iter().find(|b| {
        b.key.name == name
            && port.is_none_or(|p| p == b.key.port)
            && ns.as_deref().is_none_or(|n| n == b.key.namespace)
    })
}

/// The client of plugins' HTTP calls on this thread: keep-alive connections pooled per upstream
/// address, as Envoy's cluster pools serve them, so a plugin that calls out on every request (an
/// authorization service, say) does not open a connection for each. One per thread, because each
/// worker runs its own runtime and a pooled connection's task lives on the runtime that opened it.
fn call_client() -> Client<HttpConnector, Full<Bytes>> {
    thread_local! {
        static CLIENT: Client<HttpConnector, Full<Bytes>> = {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(crate::limits::UPSTREAM_CONNECT_TIMEOUT));
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(crate::limits::UPSTREAM_IDLE_TIMEOUT)
                .pool_max_idle_per_host(crate::limits::UPSTREAM_KEEPALIVE_POOL)
                .build(connector)
        };
    }
    CLIENT.with(Client::clone)
}

async fn http_call(backend: &Backend, call: HttpCall) -> anyhow::Result<CallResponse> {
    let addr = backend
        .pick()
        .ok_or_else(|| anyhow::anyhow!("backend has no address"))?;
    let h = &call.headers;
    let method = h.get(":method").unwrap_or(b"GET");
    let path = std::str::from_utf8(h.get(":path").unwrap_or(b"/"))?;
    // The address in the URI picks the pooled connection; the request line carries the path.
    let uri: http::Uri = format!("http://{addr}{path}").parse()?;
    let mut req = http::Request::builder()
        .method(http::Method::from_bytes(method)?)
        .uri(uri);
    if let Some(a) = h.get(":authority") {
        req = req.header(http::header::HOST, a);
    }
    for (k, v) in h.iter().filter(|(k, _)| !k.starts_with(b":")) {
        req = req.header(k, v);
    }
    let resp = call_client()
        .request(req.body(Full::new(Bytes::from(call.body)))?)
        .await?;
    let mut headers = HeaderList::new();
    headers.push(":status", resp.status().as_str());
    for (k, v) in resp.headers() {
        headers.push(k.as_str(), v.as_bytes());
    }
    let collected = resp.into_body().collect().await?;
    let trailers = collected
        .trailers()
        .map(|t| {
            t.iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Ok(CallResponse {
        headers,
        body: collected.to_bytes().to_vec(),
        trailers,
        ..CallResponse::default()
    })
}
