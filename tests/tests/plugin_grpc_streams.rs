//! gRPC streams from plugins (`proxy_grpc_stream`, `proxy_grpc_send`, `proxy_grpc_close`,
//! `proxy_grpc_cancel`) and unary calls (`proxy_grpc_call`) against a real HTTP/2 gRPC server on
//! loopback, driven by the `hostcalls` plugin's `grpc-stream`, `grpc-stream-cancel` and
//! `grpc-call` scenarios.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::mpsc;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wasmgate_e2e::upstream::refused_addr;
use wasmgate_e2e::*;

/// What the server saw of each stream, in order: `path`, `x-from`, `msg:<m>` per message, then
/// `end` (the client half-closed) or `reset` (the client reset the stream).
type Log = Arc<Mutex<Vec<Vec<String>>>>;

fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// A bidirectional echo service on h2c: initial metadata `x-server-md: m1`, one `echo:<m>` per
/// message as it arrives, and when the client half-closes, trailers `grpc-status: 0`,
/// `grpc-message: all done` (percent-encoded) and `x-server-trailer: t`. The third stream is
/// refused with a trailers-only response: `grpc-status: 7`, `grpc-message: denied!`.
/// Each request is logged with its path, `x-from`, `content-type` and `grpc-timeout` (if any).
/// Also returns the number of connections it accepted.
async fn grpc_server(log: Log) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(req, log.clone()));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

type Reply = BoxBody<Bytes, Infallible>;

async fn echo(req: http::Request<Incoming>, log: Log) -> Result<http::Response<Reply>, Infallible> {
    let index = {
        let mut log = log.lock().unwrap();
        let from = req
            .headers()
            .get("x-from")
            .map_or("", |v| v.to_str().unwrap_or(""));
        let content_type = req
            .headers()
            .get("content-type")
            .map_or("", |v| v.to_str().unwrap_or(""));
        let mut entry = vec![
            req.uri().path().to_string(),
            format!("x-from:{from}"),
            format!("content-type:{content_type}"),
        ];
        if let Some(t) = req.headers().get("grpc-timeout") {
            entry.push(format!("grpc-timeout:{}", t.to_str().unwrap_or("")));
        }
        log.push(entry);
        log.len() - 1
    };
    if index == 2 {
        return Ok(http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "7")
            .header("grpc-message", "denied%21")
            .header("x-server-trailer", "t")
            .body(Empty::new().boxed())
            .unwrap());
    }
    let (tx, rx) = mpsc::unbounded();
    let mut body = req.into_body();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    buf.extend_from_slice(&data);
                    while buf.len() >= 5 {
                        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                        if buf.len() < 5 + len {
                            break;
                        }
                        buf.advance(5);
                        let m = buf.split_to(len);
                        let m = String::from_utf8_lossy(&m).into_owned();
                        log.lock().unwrap()[index].push(format!("msg:{m}"));
                        let _ = tx
                            .unbounded_send(Ok(Frame::data(frame(format!("echo:{m}").as_bytes()))));
                    }
                }
                Some(Err(_)) => {
                    log.lock().unwrap()[index].push("reset".into());
                    return;
                }
                None => {
                    log.lock().unwrap()[index].push("end".into());
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("grpc-message", "all%20done".parse().unwrap());
                    trailers.insert("x-server-trailer", "t".parse().unwrap());
                    let _ = tx.unbounded_send(Ok(Frame::trailers(trailers)));
                    return;
                }
            }
        }
    });
    Ok(http::Response::builder()
        .header("content-type", "application/grpc")
        .header("x-server-md", "m1")
        .body(StreamBody::new(rx).boxed())
        .unwrap())
}

fn dist(name: &str) -> String {
    format!(
        "file://{}/../plugins/dist/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn get(port: u16, path: &str, test: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("x-test", test)
        .send()
        .await
        .expect("request");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_grpc_stream_sends_receives_closes_and_cancels() {
    let log: Log = Arc::default();
    let (grpc, connections) = grpc_server(log.clone()).await;
    let up = Upstream::start("a").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}---\n{}",
            service_yaml("a", 80, &[up.addr]),
            service_yaml("hostcalls-grpc", 50051, &[grpc]),
            service_yaml("grpc-down", 50052, &[refused_addr()])
        ),
    );
    // Route `r` runs the plugin against the echo server, route `down` against a refused address.
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /x}}]\n    backendRefs: [{name: a, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /grpc}}]\n    backendRefs: [{name: hostcalls-grpc, port: 50051}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: down}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /down}}]\n    backendRefs: [{name: a, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /grpc-down}}]\n    backendRefs: [{name: grpc-down, port: 50052}]\n",
    );
    let plugin = |name: &str, route: &str, config: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}}}\nspec:\n  url: {}\n  pluginConfig: {config}\n  targetRefs: [{{kind: HTTPRoute, group: gateway.networking.k8s.io, name: {route}}}]\n",
            dist("hostcalls")
        )
    };
    dir.write("hostcalls.yaml", &plugin("hostcalls", "r", "{}"));
    dir.write(
        "hostcalls-down.yaml",
        &plugin("hostcalls-down", "down", "{grpc_upstream: grpc-down}"),
    );
    // One worker, so every call and stream shares its connection pool.
    let _gw = Gateway::start_with_cache(&dir, &["--threads", "1"]).await;

    // Three messages then a half-close: each arrives in order, each echo comes back as its own
    // message, then trailing metadata and the status from the trailers.
    let (s, h, body) = get(port, "/x", "grpc-stream").await;
    assert_eq!(s, 200, "{body} {h:?}");
    let header = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("x-grpc-stream-initial").as_deref(), Some("m1"));
    assert_eq!(
        header("x-grpc-stream-token-matches").as_deref(),
        Some("true")
    );
    assert_eq!(
        header("x-grpc-stream-messages").as_deref(),
        Some("echo:one,echo:two,echo:three")
    );
    assert_eq!(header("x-grpc-stream-trailer").as_deref(), Some("t"));
    assert_eq!(header("x-grpc-stream-close").as_deref(), Some("0"));
    assert_eq!(
        header("x-grpc-stream-close-message").as_deref(),
        Some("all done")
    );
    assert_eq!(
        log.lock().unwrap()[0],
        [
            "/hostcalls.Echo/Stream",
            "x-from:hostcalls",
            "content-type:application/grpc",
            "msg:one",
            "msg:two",
            "msg:three",
            "end"
        ]
    );

    // Cancel at the first reply: the server sees the stream reset, not a half-close, and the
    // plugin gets no close callback.
    let (s, h, body) = get(port, "/x", "grpc-stream-cancel").await;
    assert_eq!(s, 200, "{body} {h:?}");
    assert_eq!(h["x-grpc-stream-messages"], "echo:one");
    assert_eq!(h["x-grpc-stream-cancelled"], "true");
    assert!(h.get("x-grpc-stream-close").is_none(), "{h:?}");
    eventually(PATIENCE, "the server sees the reset", || {
        let log = log.clone();
        async move {
            let log = log.lock().unwrap();
            (log.len() == 2 && log[1].last().map(String::as_str) == Some("reset"))
                .then(|| log[1].clone())
        }
    })
    .await;
    assert_eq!(log.lock().unwrap()[1][3], "msg:one");

    // Trailers-only refusal: empty initial metadata, the headers as trailing metadata, the status
    // and percent-decoded message from them, no message.
    let (s, h, body) = get(port, "/x", "grpc-stream").await;
    assert_eq!(s, 200, "{body} {h:?}");
    assert_eq!(h["x-grpc-stream-initial-count"], "0");
    assert_eq!(h["x-grpc-stream-trailer"], "t");
    assert_eq!(h["x-grpc-stream-messages"], "");
    assert_eq!(h["x-grpc-stream-close"], "7");
    assert_eq!(h["x-grpc-stream-close-message"], "denied!");

    // Nothing listens upstream: the stream closes with 14 UNAVAILABLE, no metadata before it.
    let (s, h, body) = get(port, "/down", "grpc-stream").await;
    assert_eq!(s, 200, "{body} {h:?}");
    assert_eq!(h["x-grpc-stream-close"], "14");
    assert!(h.get("x-grpc-stream-initial").is_none(), "{h:?}");

    // A unary call rides the same machinery: one message with END_STREAM, the echo back, status 0.
    let (s, h, body) = get(port, "/x", "grpc-call").await;
    assert_eq!(s, 200, "{body} {h:?}");
    assert_eq!(h["x-grpc-status"], "0");
    assert_eq!(h["x-grpc-body"], "echo:ping");
    assert_eq!(
        log.lock().unwrap()[3],
        [
            "/hostcalls.Echo/Ping",
            "x-from:hostcalls",
            "content-type:application/grpc",
            // The plugin's 5 s timeout, as Envoy sends it.
            "grpc-timeout:5000m",
            "msg:ping",
            "end"
        ]
    );
    let (s, _, body) = get(port, "/down", "grpc-call").await;
    assert_eq!(s, 503, "{body}");
    assert!(body.starts_with("grpc call failed: status 14"), "{body}");

    // Three streams and a call, one reset among them, all on one HTTP/2 connection.
    assert_eq!(log.lock().unwrap().len(), 4);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}
