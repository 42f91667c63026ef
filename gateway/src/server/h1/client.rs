//! The upstream side of an HTTP/1 exchange: our own client session on a pooled connection.
//!
//! It replaced pingora-core's v1 client session, whose framing rules it keeps (ported from
//! `protocols/http/v1/client.rs` 0.9.1; the rules themselves are in [`framing`]), because per
//! request that session cost about a fifth of the gateway's instructions without doing anything
//! a proxy needs: a case-preserving copy of every response field name and a fresh allocation for
//! every value, a 4 KiB header buffer and a 64 KiB body buffer, eight kilobytes of header slots
//! zeroed for the parser, a boxed digest, and a response header the proxy then copied once more to
//! drop the case map. Here the response is parsed once, into the `http` map the handler uses, its
//! values pointing into the read buffer; body pieces are split off that buffer without a copy.
//! A response nothing but its framing is read from keeps only its framing fields in that map;
//! the others pass to the client from the buffer (`wire::PassedFields`).
//!
//! Each wait is bounded by what remains of the route timeout, on the worker's own tokio timer:
//! pingora-core's timer is a boxed future registered in one process-wide, lock-guarded map, about
//! 1,300 instructions per wait that does not complete at once.

use std::future::Future;
use std::mem::MaybeUninit;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{StatusCode, Version, header};
use pingora_core::protocols::Stream;
use pingora_error::{Error, ErrorType, ErrorType::*, OrErr, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;

use super::body::{Decoded, Decoder, Encoder};
use super::framing::{self, Present};
use super::wire::{self, Head, PassedFields};
use crate::limits;

/// One request and its response on an upstream connection.
pub struct Upstream {
    io: Stream,
    /// Bytes read and not yet consumed: the rest of a response header, body not yet relayed, and
    /// anything the upstream sent past the response (which makes the connection unusable).
    buf: BytesMut,
    io_timeout: Option<Duration>,
    request: Sent,
    writer: Encoder,
    response: Option<ResponseHeader>,
    /// `None` until a final (non-1xx) response header is read.
    reader: Option<Decoder>,
    /// A 101 answered the request's `Upgrade`: the connection now carries other bytes.
    upgraded: bool,
    /// The downstream side of an upgraded connection started sending (its bytes go as they are).
    upgrade_body_started: bool,
    /// The response body runs until the upstream closes: the connection cannot be reused.
    close_delimited: bool,
    /// The final response lets the connection be reused, by its status, version and `Connection`
    /// (decided when it is read: the proxy takes the header away).
    response_keeps_alive: bool,
    /// Response fields may pass through beside the header's map (see [`PassedFields`]).
    pass_fields: bool,
    passed: Option<PassedFields>,
}

/// A request header as it goes on the wire, with what the session needs to know of it.
#[derive(Debug, PartialEq)]
pub struct RequestHead {
    pub wire: Vec<u8>,
    /// How its body is framed.
    pub writer: Encoder,
    pub sent: Sent,
}

impl RequestHead {
    /// `req` on the wire ([`request_head`]), its body framed as its fields say: requests are never
    /// close-delimited, so without `Transfer-Encoding: chunked` or a valid `Content-Length` the
    /// body is empty (RFC 9112 §6.3).
    pub fn of(req: &RequestHeader) -> Result<Self> {
        let writer = if framing::is_chunked(&req.headers) {
            Encoder::Chunked
        } else {
            Encoder::Length(request_body_length(&req.headers))
        };
        Ok(Self {
            wire: request_head(req)?,
            writer,
            sent: Sent {
                head: req.method == http::Method::HEAD,
                upgrade: req.version == Version::HTTP_11
                    && req.headers.contains_key(header::UPGRADE),
                close: framing::connection_keepalive(&req.headers) == Some(false),
            },
        })
    }
}

/// The length of a request body that is not chunked: its `Content-Length`, or none.
pub fn request_body_length(headers: &http::HeaderMap) -> u64 {
    match framing::content_length(headers) {
        Ok(Some(n)) => n as u64,
        _ => 0,
    }
}

/// What the response's framing and the connection's reuse depend on in the request written.
#[derive(Debug, Default, PartialEq)]
pub struct Sent {
    pub head: bool,
    pub upgrade: bool,
    /// The request said `Connection: close`.
    pub close: bool,
}

impl Upstream {
    /// A session on `io`, a connection from `upstream::connect` or the pool; each wait bounded by
    /// `io_timeout` (`None`: unbounded).
    pub fn new(io: Stream, io_timeout: Option<Duration>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            io_timeout,
            request: Sent::default(),
            writer: Encoder::Done,
            response: None,
            reader: None,
            upgraded: false,
            upgrade_body_started: false,
            close_delimited: false,
            response_keeps_alive: false,
            pass_fields: false,
            passed: None,
        }
    }

    /// Nothing will read or edit the response's fields but those its framing depends on: the
    /// others may pass through as they came ([`take_passed_fields`]) rather than into the
    /// header's map. Not for an upgrade, whose `101` the proxy checks field by field.
    ///
    /// [`take_passed_fields`]: Self::take_passed_fields
    pub fn pass_fields_through(&mut self) {
        self.pass_fields = true;
    }

    /// The fields of the last response header read that are not in its map.
    pub fn take_passed_fields(&mut self) -> Option<PassedFields> {
        self.passed.take()
    }

    /// Writes a request header (tests build it; the exchange writes a [`RequestHead`]).
    #[cfg(test)]
    pub async fn write_request_header(&mut self, req: Box<RequestHeader>) -> Result<()> {
        self.write_head(RequestHead::of(&req)?).await
    }

    /// Writes the request header (buffered: it leaves with the body or [`finish_body`]).
    ///
    /// [`finish_body`]: Self::finish_body
    pub async fn write_head(&mut self, head: RequestHead) -> Result<()> {
        self.writer = head.writer;
        self.request = head.sent;
        let t = self.io_timeout;
        bounded(t, WriteTimedout, "writing the request header", async {
            self.io
                .write_all(&head.wire)
                .await
                .or_err(WriteError, "while writing the request header")
        })
        .await
    }

    /// Writes a piece of the request body, framed (see [`Encoder::frame`]), and sends it.
    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        let t = self.io_timeout;
        bounded(t, WriteTimedout, "writing the request body", async {
            let mut size_line = [0; 18];
            let framed = self.writer.frame(data, &mut size_line);
            if framed.len == 0 {
                return Ok(());
            }
            wire::write_pieces(&mut self.io, &framed.wire, "while writing the request body")
                .await?;
            self.io
                .flush()
                .await
                .or_err(WriteError, "while writing the request body")
        })
        .await
    }

    /// Ends the request body (the last chunk of a chunked one) and sends what is buffered. A body
    /// shorter than its `Content-Length` is an error.
    pub async fn finish_body(&mut self) -> Result<()> {
        let t = self.io_timeout;
        let last = self.writer.finish("request").map_err(Error::into_up)?;
        bounded(t, WriteTimedout, "ending the request body", async {
            self.io
                .write_all(last)
                .await
                .or_err(WriteError, "while ending the request body")?;
            self.io
                .flush()
                .await
                .or_err(WriteError, "while sending the request")
        })
        .await?;
        // The downstream closed its side of an upgraded connection: the upstream's is over too
        // (pingora's `maybe_force_close_body_reader`).
        if self.upgraded && self.upgrade_body_started && !self.is_body_done() {
            self.reader = Some(Decoder::Done);
        }
        Ok(())
    }

    /// Reads a response header: an informational one (1xx but 101) or the final one. Call again
    /// after an informational one for the next.
    pub async fn read_response(&mut self) -> Result<()> {
        let t = self.io_timeout;
        let pass = self.pass_fields && !self.request.upgrade;
        self.response = None;
        bounded(t, ReadTimedout, "reading the response header", async {
            // Parsed into its place, as the session parses a request (see `Session::read_request`).
            let slot = &mut self.response;
            let read = wire::read_head(
                &mut self.io,
                &mut self.buf,
                limits::UPSTREAM_READ_BUFFER,
                limits::UPSTREAM_MAX_RESPONSE_HEADER,
                "response",
                |buf| parse_response(buf, pass, slot),
            );
            let ParsedResponse {
                length,
                present,
                passed,
            } = match read.await? {
                Head::Parsed(parsed) => parsed,
                Head::Ended {
                    already_read,
                    error,
                } => {
                    let doing = format!(
                        "while reading the response header, bytes already read: {already_read}"
                    );
                    let mut e = match error {
                        None => Error::explain(ConnectionClosed, doing),
                        Some(e) => Error::because(ReadError, doing, e),
                    };
                    // A pooled connection the upstream closed as it was taken: the caller may
                    // send the request again on a new one.
                    e.retry = RetryType::ReusedOnly;
                    return Err(e);
                }
            };
            let resp = self
                .response
                .as_ref()
                .expect("a response header was parsed");
            self.upgraded = self.request.upgrade && framing::accepts_upgrade(resp);
            self.response_keeps_alive = keeps_alive(resp, present);
            self.reader = body_decoder(resp, length, present, &self.request);
            self.close_delimited = matches!(self.reader, Some(Decoder::UntilClose));
            self.passed = passed;
            Ok(())
        })
        .await
    }

    /// The last response header read.
    pub fn resp_header(&self) -> Option<&ResponseHeader> {
        self.response.as_ref()
    }

    /// Takes the final response header, to send it downstream.
    pub fn take_resp_header(&mut self) -> Option<ResponseHeader> {
        self.response.take()
    }

    /// Whether the request written asked to upgrade the connection.
    pub fn is_upgrade_req(&self) -> bool {
        self.request.upgrade
    }

    /// Whether the whole response body has been read (true of one that has none).
    pub fn is_body_done(&self) -> bool {
        self.reader.as_ref().is_some_and(Decoder::is_done)
    }

    /// The next piece of the response body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let t = self.io_timeout;
        bounded(t, ReadTimedout, "reading the response body", async {
            let reader = self
                .reader
                .as_mut()
                .expect("a final response header was read");
            loop {
                match reader.decode(&mut self.buf)? {
                    Decoded::Data(data) => return Ok(Some(data)),
                    Decoded::End => return Ok(None),
                    Decoded::NeedMore => {
                        let n =
                            wire::fill(&mut self.io, &mut self.buf, limits::UPSTREAM_READ_BUFFER)
                                .await
                                .or_err(ReadError, "while reading the response body")?;
                        if n == 0 {
                            reader.at_eof()?;
                        }
                    }
                }
            }
        })
        .await
    }

    /// From here on the request side of an upgraded connection carries the downstream's bytes as
    /// they are (pingora's `maybe_upgrade_body_writer`).
    pub fn start_upgraded_body(&mut self) {
        if self.upgraded {
            self.upgrade_body_started = true;
            self.writer = Encoder::UntilClose;
        }
    }

    /// The connection, if it can carry another request: the response was read to its framed end
    /// with nothing after it, and neither side asked to close (pingora's `respect_keepalive` and
    /// `reuse`). Otherwise it is closed.
    pub fn into_reusable(mut self) -> Option<Stream> {
        let reusable = !self.upgraded
            && self.response_keeps_alive
            && !self.request.close
            && !self.close_delimited
            && self.is_body_done()
            && self.buf.is_empty();
        // Its read buffer is not pooled with it: an idle connection holds none.
        wire::release(&mut self.buf, limits::UPSTREAM_READ_BUFFER);
        reusable.then_some(self.io)
    }
}

/// How the body of `resp`, the answer to `request`, is framed (RFC 9112 §6.3, in pingora's
/// order); `None` for an informational response, which has none and precedes the final one.
/// `length`: its `Content-Length`, as [`parse_response`] found it; `present`: its framing fields.
fn body_decoder(
    resp: &ResponseHeader,
    length: Option<usize>,
    present: Present,
    request: &Sent,
) -> Option<Decoder> {
    Some(match resp.status.as_u16() {
        101 if request.upgrade => Decoder::UntilClose,
        100..=199 if resp.status != StatusCode::SWITCHING_PROTOCOLS => return None,
        204 | 304 => Decoder::Done,
        _ if request.head => Decoder::Done,
        _ if present.is_chunked(&resp.headers) => Decoder::chunked(),
        _ => length.map_or(Decoder::UntilClose, Decoder::length),
    })
}

/// Whether the response lets the connection carry another request: not a 101, not HTTP/1.0 with
/// a `Transfer-Encoding` (RFC 9112 §6.1), and `Connection: keep-alive`, or HTTP/1.1 without
/// `Connection: close`. `present`: its framing fields.
fn keeps_alive(resp: &ResponseHeader, present: Present) -> bool {
    resp.status != StatusCode::SWITCHING_PROTOCOLS
        && !(resp.version == Version::HTTP_10 && present.transfer_encoding)
        && present
            .connection_keepalive(&resp.headers)
            .unwrap_or(resp.version == Version::HTTP_11)
}

/// The request line and fields as they go on the wire: well-known names capitalized, the others
/// as the `http` map keeps them (lowercase), as pingora-core writes a header without its case map.
pub(super) fn request_head(req: &RequestHeader) -> Result<Vec<u8>> {
    let mut wire = request_line(&req.method, req.raw_path(), req.version)?;
    req.header_to_h1_wire(&mut wire);
    wire.extend_from_slice(b"\r\n");
    Ok(wire)
}

/// A request line, in a buffer with room for the fields that follow.
pub(super) fn request_line(
    method: &http::Method,
    path: &[u8],
    version: Version,
) -> Result<Vec<u8>> {
    // RFC 9112 §3.2: no NUL, LF, CR or SP in the request target.
    if path.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r' | b' ')) {
        return Error::e_explain(
            InvalidHTTPHeader,
            "request target contains forbidden delimiter bytes",
        );
    }
    let version: &[u8] = match version {
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_11 => b"HTTP/1.1",
        Version::HTTP_09 => b"HTTP/0.9",
        v => return Error::e_explain(InvalidHTTPHeader, format!("cannot send {v:?} as HTTP/1")),
    };
    let mut wire = Vec::with_capacity(512);
    wire.extend_from_slice(method.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(path);
    wire.push(b' ');
    wire.extend_from_slice(version);
    wire.extend_from_slice(b"\r\n");
    Ok(wire)
}

/// Parses a response header at the start of `buf` into `slot`, and removes it from there; `None`
/// if it is not complete yet. Field values point into the buffer's memory (no copy). With the
/// header, its body's `Content-Length` (`None` when absent or overridden by
/// `Transfer-Encoding`), and, if `pass` and they can, the fields left out of its map.
fn parse_response(
    buf: &mut BytesMut,
    pass: bool,
    slot: &mut Option<ResponseHeader>,
) -> Result<Option<ParsedResponse>> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() };
        limits::UPSTREAM_MAX_RESPONSE_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    // As pingora-core's client.
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Error::e_explain(
                InvalidHTTPHeader,
                format!(
                    "invalid response header ({e}): {}",
                    buf[..buf.len().min(256)].escape_ascii()
                ),
            );
        }
    };
    let (mut resp, _) = http::Response::new(()).into_parts();
    resp.status = StatusCode::from_u16(parsed.code.expect("complete"))
        .or_err(InvalidHTTPHeader, "invalid response status")?;
    resp.version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let base = buf.as_ptr() as usize;
    let mut passed = (pass && wire::can_pass(parsed.headers)).then(Vec::new);
    let fields = match passed.as_mut() {
        Some(passed) => wire::split_field_offsets(base, parsed.headers, passed),
        None => wire::field_offsets(base, parsed.headers)?,
    };
    let head: Bytes = buf.split_to(len).freeze();
    let mut present = wire::append_fields(&mut resp.headers, &head, fields);
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which must then go.
    if present.transfer_encoding && present.content_length {
        resp.headers.remove(header::CONTENT_LENGTH);
        present.content_length = false;
    }
    let length = present.body_length(&resp.headers)?;
    // The standard reason phrase, as Envoy answers, and no map of field-name case (pingora-core
    // writes well-known names capitalized, the rest lowercase).
    *slot = Some(ResponseHeader::from(resp));
    Ok(Some(ParsedResponse {
        length,
        present,
        passed: passed.map(|spans| PassedFields::new(head, spans)),
    }))
}

/// What [`parse_response`] found of a response header, beside the header itself.
struct ParsedResponse {
    /// Its body's length, from `Content-Length` (none when `Transfer-Encoding` overrides it).
    length: Option<usize>,
    /// The framing fields it carries.
    present: Present,
    /// The fields that passed beside its map.
    passed: Option<PassedFields>,
}

/// `io` within `t`, as an upstream error either way (a timeout is `timed_out` while `doing`, as
/// pingora-core's own).
///
/// The timer starts only if `io` does not end at once: most waits do (a write into the
/// connection's buffer, a send the kernel takes, a body already read), and a timer costs a clock
/// read and a place in the worker's timer wheel, which it must leave again.
async fn bounded<T>(
    t: Option<Duration>,
    timed_out: ErrorType,
    doing: &str,
    io: impl Future<Output = Result<T>>,
) -> Result<T> {
    let done = match t {
        None => io.await,
        Some(t) => {
            let mut io = std::pin::pin!(io);
            match std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
                Poll::Ready(done) => done,
                Poll::Pending => match tokio::time::timeout(t, io).await {
                    Ok(done) => done,
                    Err(_) => Error::e_explain(timed_out, format!("while {doing}, timeout: {t:?}")),
                },
            }
        }
    };
    done.map_err(Error::into_up)
}

#[cfg(test)]
mod tests;
