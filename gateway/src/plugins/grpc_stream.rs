//! gRPC streams plugins open (`proxy_grpc_stream`), and unary calls (`proxy_grpc_call`) as a
//! stream of one message: one HTTP/2 (h2c, prior knowledge) request to a backend address per
//! stream, `POST /{service}/{method}`, 5-byte length-prefixed messages both ways. Statuses follow Envoy's gRPC async client (`AsyncStreamImpl`): a failure before the
//! response headers is 14 UNAVAILABLE, a reset after them 13 INTERNAL, a body that ends without
//! trailers 2 UNKNOWN, a non-200 response without `grpc-status` 1 CANCELLED.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use wasmgate_runtime::{
    CallCompletion, CallResponse, GrpcCall, GrpcStream, GrpcStreamEvents, GrpcStreamSink,
    HeaderList,
};

use crate::backends::Backend;
use crate::limits::{
    GRPC_STREAM_MAX_MESSAGE_BYTES, PLUGIN_PAUSE_TIMEOUT, UPSTREAM_CONNECT_TIMEOUT,
};

/// gRPC status codes used here (grpc/doc/statuscodes.md).
const CANCELLED: u32 = 1;
const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const RESOURCE_EXHAUSTED: u32 = 8;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// Starts the stream's task on `tokio` (the worker whose plugin opened it, so its events are
/// delivered there) and returns the plugin's side of it.
pub fn open(
    tokio: &tokio::runtime::Handle,
    backend: Arc<Backend>,
    stream: GrpcStream,
    events: GrpcStreamEvents,
) -> Box<dyn GrpcStreamSink> {
    let (commands, rx) = mpsc::unbounded_channel();
    tokio.spawn(run(backend, stream, rx, Some(events)));
    Box::new(Sink { commands })
}

/// A unary call as Envoy's `AsyncRequestImpl`: the message with END_STREAM, then success only with
/// status 0 and a message (status 0 without one is 13 INTERNAL); the timeout (default
/// `PLUGIN_PAUSE_TIMEOUT`) is 4 DEADLINE_EXCEEDED. The answer goes to `done` on `tokio`'s thread.
pub fn call(
    tokio: &tokio::runtime::Handle,
    backend: Arc<Backend>,
    call: GrpcCall,
    done: CallCompletion,
) {
    let (commands, rx) = mpsc::unbounded_channel();
    let _ = commands.send(Command::Message(frame(&call.message), true));
    let mut initial_metadata = call.initial_metadata;
    // The deadline travels with the call, as Envoy's async client sends it, so the server can
    // give up when the caller has.
    if let Some(t) = call.timeout
        && initial_metadata.get("grpc-timeout").is_none()
    {
        initial_metadata.push("grpc-timeout", grpc_timeout(t));
    }
    let stream = GrpcStream {
        upstream: call.upstream,
        service: call.service,
        method: call.method,
        initial_metadata,
    };
    // As HTTP calls: a call without a timeout is still bounded, by how long a plugin may pause.
    let timeout = call.timeout.unwrap_or(PLUGIN_PAUSE_TIMEOUT);
    tokio.spawn(async move {
        // The sender lives as long as the call: dropping it would reset the stream.
        let _commands = commands;
        let mut unary = Unary::default();
        let finished = tokio::time::timeout(timeout, run(backend, stream, rx, &mut unary))
            .await
            .is_ok();
        let mut response = unary.response;
        if !finished {
            response.grpc_status = DEADLINE_EXCEEDED;
            response.grpc_message = "deadline exceeded".into();
        } else if response.grpc_status == 0 && unary.messages != 1 {
            response.grpc_status = INTERNAL;
            response.grpc_message.clear();
        }
        done.complete(response);
    });
}

/// Where a stream's events go: the plugin's stream, or a unary call's answer.
trait Report {
    fn initial_metadata(&mut self, metadata: HeaderList);
    fn message(&mut self, message: Vec<u8>);
    fn trailing_metadata(&mut self, metadata: HeaderList);
    fn close(&mut self, status: u32, message: &str);
}

impl Report for Option<GrpcStreamEvents> {
    fn initial_metadata(&mut self, metadata: HeaderList) {
        if let Some(e) = self {
            e.initial_metadata(metadata);
        }
    }

    fn message(&mut self, message: Vec<u8>) {
        if let Some(e) = self {
            e.message(message);
        }
    }

    fn trailing_metadata(&mut self, metadata: HeaderList) {
        if let Some(e) = self {
            e.trailing_metadata(metadata);
        }
    }

    fn close(&mut self, status: u32, message: &str) {
        if let Some(e) = self.take() {
            e.close(status, message);
        }
    }
}

#[derive(Default)]
struct Unary {
    response: CallResponse,
    messages: usize,
}

impl Report for &mut Unary {
    fn initial_metadata(&mut self, metadata: HeaderList) {
        self.response.headers = metadata;
    }

    fn message(&mut self, message: Vec<u8>) {
        self.messages += 1;
        self.response.body = message;
    }

    fn trailing_metadata(&mut self, metadata: HeaderList) {
        self.response.trailers = metadata;
    }

    fn close(&mut self, status: u32, message: &str) {
        self.response.grpc_status = status;
        self.response.grpc_message = message.to_owned();
    }
}

enum Command {
    /// A framed message; `true` half-closes after it.
    Message(Bytes, bool),
    HalfClose,
}

/// The runtime's handle on the stream. Dropping it closes the command channel, which the task
/// takes as a reset.
struct Sink {
    commands: mpsc::UnboundedSender<Command>,
}

impl GrpcStreamSink for Sink {
    fn send(&mut self, message: Vec<u8>, end_stream: bool) {
        // A send error means the task ended (the stream is over): nothing to deliver to.
        let _ = self
            .commands
            .send(Command::Message(frame(&message), end_stream));
    }

    fn close(&mut self) {
        let _ = self.commands.send(Command::HalfClose);
    }
}

/// gRPC framing: compression flag 0, 4-byte big-endian length, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// The request body: framed messages as the plugin sends them; END_STREAM when the sender drops.
struct Outgoing(mpsc::UnboundedReceiver<Bytes>);

impl Body for Outgoing {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Applies one command from the plugin to the request body. `false`: the sink was dropped, the
/// stream must be reset (returning drops the request and response, and hyper sends RST_STREAM).
fn apply(command: Option<Command>, body: &mut Option<mpsc::UnboundedSender<Bytes>>) -> bool {
    match command {
        Some(Command::Message(message, end_stream)) => {
            if let Some(tx) = body {
                let _ = tx.send(message);
            }
            if end_stream {
                *body = None;
            }
            true
        }
        Some(Command::HalfClose) => {
            *body = None;
            true
        }
        None => false,
    }
}

async fn run(
    backend: Arc<Backend>,
    stream: GrpcStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut events: impl Report,
) {
    let (body_tx, body_rx) = mpsc::unbounded_channel();
    let mut body_tx = Some(body_tx);
    let upstream = backend.key.name.clone();
    let request = request(&backend, stream, Outgoing(body_rx));
    tokio::pin!(request);
    let response = loop {
        tokio::select! {
            command = commands.recv() => if !apply(command, &mut body_tx) { return },
            response = &mut request => break response,
        }
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%upstream, error = %e, "plugin gRPC stream failed before headers");
            events.close(
                UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
            );
            return;
        }
    };
    let (parts, mut body) = response.into_parts();
    let metadata = header_list(Some(parts.status.as_str()), &parts.headers);
    let grpc_status = parts.headers.get("grpc-status").is_some();
    if body.is_end_stream() {
        // Trailers-only: the headers are the trailing metadata (initial metadata is empty).
        events.initial_metadata(HeaderList::new());
        if parts.status != http::StatusCode::OK && !grpc_status {
            events.close(CANCELLED, "");
            return;
        }
        let (status, message) = grpc_status_of(&parts.headers);
        events.trailing_metadata(metadata);
        events.close(status, &message);
        return;
    }
    events.initial_metadata(metadata);
    if parts.status != http::StatusCode::OK {
        events.close(CANCELLED, "");
        return;
    }
    let mut received = BytesMut::new();
    loop {
        let frame = tokio::select! {
            command = commands.recv() => {
                if !apply(command, &mut body_tx) {
                    return;
                }
                continue;
            }
            frame = body.frame() => frame,
        };
        match frame {
            None => {
                events.close(UNKNOWN, "");
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(%upstream, error = %e, "plugin gRPC stream reset");
                events.close(INTERNAL, "");
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    received.extend_from_slice(&data);
                    loop {
                        match next_message(&mut received) {
                            Ok(Some(message)) => events.message(message),
                            Ok(None) => break,
                            Err((status, message)) => {
                                events.close(status, &message);
                                return;
                            }
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let (status, message) = grpc_status_of(&trailers);
                        events.trailing_metadata(header_list(None, &trailers));
                        events.close(status, &message);
                        return;
                    }
                }
            },
        }
    }
}

/// `grpc-timeout` for `t`, as Envoy's `Common::toGrpcTimeout`: whole milliseconds, in the
/// smallest of ms, s, min, h that fits the header's 8 digits (clipped at 99999999 h).
fn grpc_timeout(t: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let mut value = t.as_millis();
    let mut units = ['m', 'S', 'M', 'H'].into_iter().peekable();
    let mut unit = units.next().expect("units");
    if value > MAX {
        value /= 1000;
        unit = units.next().expect("units");
    }
    while value > MAX {
        match units.next() {
            Some(next) => {
                value /= 60;
                unit = next;
            }
            None => value = MAX,
        }
    }
    format!("{value}{unit}")
}

thread_local! {
    /// This worker's HTTP/2 connections to plugins' gRPC upstreams, one per address, shared by
    /// every call and stream to it (HTTP/2 multiplexes them, as Envoy's gRPC client shares its
    /// cluster's connections): a connection and a handshake per call would cost a round trip and
    /// a socket each. Per worker, because a connection's task runs on the runtime that opened it.
    static CONNECTIONS: RefCell<HashMap<SocketAddr, SendRequest<Outgoing>>> =
        RefCell::new(HashMap::new());
}

/// A ready HTTP/2 connection to `addr`: this worker's open one, else a new one (kept for the
/// next call). One the upstream closed is replaced.
async fn connection(addr: SocketAddr) -> anyhow::Result<SendRequest<Outgoing>> {
    let open = CONNECTIONS.with(|c| c.borrow().get(&addr).filter(|s| !s.is_closed()).cloned());
    if let Some(mut sender) = open
        && sender.ready().await.is_ok()
    {
        return Ok(sender);
    }
    let tcp = tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(addr),
    )
    .await??;
    tcp.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    CONNECTIONS.with(|c| {
        let mut open = c.borrow_mut();
        // Entries of connections that ended (the upstream closed them, or they failed) go when a
        // new one is made, so addresses no longer called do not accumulate dead entries.
        open.retain(|_, s| !s.is_closed());
        open.insert(addr, sender.clone());
    });
    Ok(sender)
}

/// Connects, opens the HTTP/2 stream and waits for the response headers.
async fn request(
    backend: &Backend,
    stream: GrpcStream,
    body: Outgoing,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let addr = backend
        .pick()
        .ok_or_else(|| anyhow::anyhow!("backend has no address"))?;
    let mut sender = connection(addr).await?;
    // Envoy's `:authority` for a cluster is the cluster name; an Istio cluster name
    // (`outbound|PORT||HOST`) is no valid authority, so the backend's name stands in for it.
    let path = format!("/{}/{}", stream.service, stream.method);
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(stream.upstream.as_str())
        .path_and_query(path.as_str())
        .build()
        .or_else(|_| {
            http::Uri::builder()
                .scheme("http")
                .authority(backend.key.name.as_str())
                .path_and_query(path.as_str())
                .build()
        })?;
    let mut req = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers");
    for (k, v) in stream.initial_metadata.iter() {
        if k.starts_with(b":") {
            continue;
        }
        match (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            (Ok(k), Ok(v)) => req = req.header(k, v),
            _ => tracing::debug!("plugin gRPC stream: invalid metadata dropped"),
        }
    }
    Ok(sender.send_request(req.body(body)?).await?)
}

/// The next complete message of `buf`, if any. `Err`: the stream must end with that status.
fn next_message(buf: &mut BytesMut) -> Result<Option<Vec<u8>>, (u32, String)> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flags = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > GRPC_STREAM_MAX_MESSAGE_BYTES {
        return Err((
            RESOURCE_EXHAUSTED,
            format!("gRPC message of {len} bytes exceeds {GRPC_STREAM_MAX_MESSAGE_BYTES}"),
        ));
    }
    // Envoy's gRPC client does not decompress: a compressed message is an error.
    if flags != 0 && len > 0 {
        return Err((INTERNAL, String::new()));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).to_vec()))
}

/// `grpc-status` (2 UNKNOWN when absent or malformed, as Envoy) and the percent-decoded
/// `grpc-message`.
fn grpc_status_of(headers: &http::HeaderMap) -> (u32, String) {
    let status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(UNKNOWN);
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    (status, message)
}

/// gRPC's `grpc-message` encoding: `%XX` for bytes outside printable ASCII and `%` itself.
fn percent_decode(v: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && let (Some(h), Some(l)) = (
                v.get(i + 1).copied().and_then(hex),
                v.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_list(status: Option<&str>, headers: &http::HeaderMap) -> HeaderList {
    let mut list = HeaderList::new();
    if let Some(status) = status {
        list.push(":status", status);
    }
    for (k, v) in headers {
        list.push(k.as_str(), v.as_bytes());
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_as_envoy_writes_them() {
        let cases = [
            (Duration::from_millis(0), "0m"),
            (Duration::from_micros(5_500), "5m"),
            (Duration::from_secs(5), "5000m"),
            (Duration::from_millis(99_999_999), "99999999m"),
            (Duration::from_millis(100_000_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666666M"),
            (Duration::from_secs(6_000_000_000), "1666666H"),
            (Duration::from_secs(u64::MAX), "99999999H"),
        ];
        for (t, want) in cases {
            assert_eq!(grpc_timeout(t), want, "{t:?}");
        }
    }

    #[test]
    fn messages_are_split_at_frame_boundaries_and_bounded() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b"one"));
        buf.extend_from_slice(&frame(b""));
        let two = frame(b"two");
        buf.extend_from_slice(&two[..4]);
        assert_eq!(next_message(&mut buf), Ok(Some(b"one".to_vec())));
        assert_eq!(next_message(&mut buf), Ok(Some(Vec::new())));
        assert_eq!(next_message(&mut buf), Ok(None));
        buf.extend_from_slice(&two[4..]);
        assert_eq!(next_message(&mut buf), Ok(Some(b"two".to_vec())));
        assert!(buf.is_empty());

        buf.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(next_message(&mut buf).unwrap_err().0, RESOURCE_EXHAUSTED);
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 1, b'x'][..]);
        assert_eq!(next_message(&mut compressed).unwrap_err().0, INTERNAL);
    }

    #[test]
    fn grpc_status_and_percent_encoded_message() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_status_of(&h), (UNKNOWN, String::new()));
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert(
            "grpc-message",
            "not%20found%3A %E2%9C%93%zz".parse().unwrap(),
        );
        assert_eq!(
            grpc_status_of(&h),
            (5, "not found: \u{2713}%zz".to_string())
        );
    }
}
