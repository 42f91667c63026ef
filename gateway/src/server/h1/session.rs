//! The client's side of an HTTP/1 connection: our own server session, one per connection.
//!
//! It replaced pingora-core's v1 server session, whose checks and framing it keeps (ported from
//! `protocols/http/v1/server.rs` 0.9.1; framing rules in [`framing`] and [`body`]), because per
//! request that session cost about as much as the rest of the gateway's HTTP/1 path together:
//! a case-preserving copy of every field name, a boxed request header, a fresh session with its
//! own buffers for every request on a kept-alive connection, a header buffer allocated for every
//! response. Here one session lives as long as the connection: the request is parsed once into
//! the `http` map the handler uses, its values pointing into the read buffer; body pieces are
//! split off that buffer without a copy; and what a client sent past one request (pipelined
//! requests, RFC 9112 §9.3.2) stays in the buffer for the next.
//!
//! Waits are not bounded here: the time for a request header is the connection loop's keep-alive
//! timeout (`h1::serve`), and, as pingora-core's session had none by default, reading a body or
//! writing a response has none either.

use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri, Version, header};
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::http::{ServerSession, authority};
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::{SocketDigest, Stream};
use pingora_error::{Error, ErrorType::*, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;

use super::body::{Decoded, Decoder, Encoder};
use super::framing::{self, Present};
use super::sanitize;
use super::wire::{self, Head, PassedFields};
use crate::limits;
use crate::server::downstream::Downstream;

/// An HTTP/1 connection from a client, serving one request at a time.
pub struct Session {
    io: Stream,
    digest: Option<Arc<SocketDigest>>,
    /// Bytes read and not yet consumed: the rest of a request header, body not yet relayed, and
    /// any request pipelined after it.
    buf: BytesMut,
    request: Option<RequestHeader>,
    reader: Decoder,
    /// The request had no body (neither `Content-Length` above 0 nor chunked).
    body_empty: bool,
    /// The final response header written (or a `100 Continue`, until the final one).
    response: Option<ResponseHeader>,
    writer: Encoder,
    /// The connection may carry another request after this one.
    keepalive: bool,
    /// A 101 accepted the request's `Upgrade`: the connection now carries other bytes.
    upgraded: bool,
    body_sent: usize,
    body_read: usize,
    /// The response header's wire form, kept to reuse its allocation.
    head: Vec<u8>,
}

impl Session {
    pub fn new(io: Stream) -> Self {
        Self {
            digest: io.get_socket_digest(),
            io,
            buf: BytesMut::new(),
            request: None,
            reader: Decoder::Done,
            body_empty: true,
            response: None,
            writer: Encoder::Done,
            keepalive: false,
            upgraded: false,
            body_sent: 0,
            body_read: 0,
            head: Vec::new(),
        }
    }

    /// Reads the next request header. `Ok(false)`: the client closed the connection (or it
    /// failed) before sending a byte of it, the normal end of a kept-alive connection. An
    /// `InvalidHTTPHeader` error deserves a 400.
    pub async fn read_request(&mut self) -> Result<bool> {
        self.request = None;
        self.response = None;
        self.reader = Decoder::Done;
        self.writer = Encoder::Done;
        self.upgraded = false;
        self.body_sent = 0;
        self.body_read = 0;
        if !self.buf.is_empty() {
            // A pipelined request is parsed without a read: count it against the task's budget,
            // so a client pipelining many cannot starve the worker's other connections.
            tokio::task::consume_budget().await;
        }
        // The request is parsed into its place in the session: a request header is about 350
        // bytes, and passing it out by value would copy it at each step.
        let slot = &mut self.request;
        let read = wire::read_head(
            &mut self.io,
            &mut self.buf,
            limits::DOWNSTREAM_READ_BUFFER,
            limits::DOWNSTREAM_MAX_REQUEST_HEADER,
            "request",
            |buf| parse_request(buf, slot),
        );
        let started = match read.await {
            Ok(Head::Parsed(present)) => self.start(present),
            Err(e) => Err(e),
            Ok(Head::Ended {
                already_read: 0, ..
            }) => return Ok(false),
            Ok(Head::Ended {
                already_read,
                error: None,
            }) => Error::e_explain(
                ConnectionClosed,
                format!("while reading request headers, bytes already read: {already_read}"),
            ),
            Ok(Head::Ended { error: Some(e), .. }) => {
                Error::e_because(ReadError, "while reading request headers", e)
            }
        };
        if started.is_err() {
            // Refused: no request is being served.
            self.request = None;
        }
        started.map(|()| true)
    }

    /// Starts serving the request just parsed, whose header carries the framing fields
    /// `present`: its framing, whether the connection stays, and pingora-core's checks
    /// (`read_request`, then `validate_request`).
    fn start(&mut self, present: Present) -> Result<()> {
        let req = self.request.as_mut().expect("a request header was parsed");
        let has_te = present.transfer_encoding;
        let chunked = present.is_chunked(&req.headers);
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which goes; §6.1: the
        // connection must then close after the response.
        let both = has_te && present.content_length;
        if both {
            req.remove_header(&header::CONTENT_LENGTH);
        }
        self.keepalive = !both
            && present
                .connection_keepalive(&req.headers)
                .unwrap_or(req.version == Version::HTTP_11);
        // pingora-core's `validate_request_authority`, which for an origin-form target (the
        // common case) comes down to checking `Host` alone, without a second lookup of it.
        if req.method != Method::CONNECT
            && req.uri.authority().is_none()
            && req.raw_path().first() == Some(&b'/')
        {
            sanitize::single_plain_host(req)?;
        } else {
            authority::validate_request_authority(req)?;
        }
        let length = present.body_length(&req.headers)?;
        if has_te {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            if req.version == Version::HTTP_10 {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    "HTTP/1.0 requests cannot include Transfer-Encoding header",
                );
            }
            // §6.3: a request whose final coding is not chunked cannot be framed.
            if !chunked {
                return Error::e_explain(InvalidHTTPHeader, "non-chunked final Transfer-Encoding");
            }
        }
        // Requests are never close-delimited: with neither field the body is empty (§6.3).
        self.reader = if chunked {
            Decoder::chunked()
        } else {
            Decoder::length(length.unwrap_or(0))
        };
        self.body_empty = self.reader.is_done();
        Ok(())
    }

    fn req(&self) -> &RequestHeader {
        self.request.as_ref().expect("a request header was read")
    }

    pub fn is_body_done(&self) -> bool {
        self.reader.is_done()
    }

    /// The next piece of the request body (after a 101, of the client's upgraded stream);
    /// `None` at its end. Cancel-safe: a piece is taken from the buffer only when returned.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.reader.decode(&mut self.buf)? {
                Decoded::Data(data) => {
                    self.body_read += data.len();
                    return Ok(Some(data));
                }
                Decoded::End => return Ok(None),
                Decoded::NeedMore => {
                    let n = wire::fill(&mut self.io, &mut self.buf, limits::DOWNSTREAM_READ_BUFFER)
                        .await
                        .or_err(ReadError, "while reading the request body")?;
                    if n == 0 {
                        self.reader.at_eof()?;
                    }
                }
            }
        }
    }

    /// `100 Continue`, unless a response was already written.
    pub async fn write_continue_response(&mut self) -> Result<()> {
        if self.response.is_some() {
            return Ok(());
        }
        self.write_response_header(Box::new(ResponseHeader::build_no_case(100, Some(0))?))
            .await
    }

    /// Writes a response header: an informational one (1xx but 101), which may come more than
    /// once, or the final one. Adds `Date` and `Connection` to the final one, and decides the
    /// body's framing from its fields (`prepare_response_header`, `init_body_writer`).
    pub async fn write_response_header(&mut self, resp: Box<ResponseHeader>) -> Result<()> {
        self.write_response_header_passing(resp, None).await
    }

    /// [`write_response_header`](Self::write_response_header) with fields that passed beside
    /// the header's map (see [`PassedFields`]), written after the map's.
    pub async fn write_response_header_passing(
        &mut self,
        resp: Box<ResponseHeader>,
        passed: Option<&PassedFields>,
    ) -> Result<()> {
        if let Some(sent) = &self.response
            && (!sent.status.is_informational() || self.upgraded)
        {
            tracing::warn!("response header already sent, cannot send again");
            return Ok(());
        }
        let status = resp.status;
        let info = status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS;
        // A response before the request's body was read to its end: the rest of it would be
        // taken for the next request.
        if !self.reader.is_done() {
            self.keepalive = false;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            self.keepalive = false;
        }
        if !info {
            if self.is_upgrade(&resp) {
                // From here on the client's bytes go through as they are, to the end (pingora
                // switches at once, as nginx does, rather than after a request body).
                self.upgraded = true;
                self.reader = Decoder::UntilClose;
                self.writer = Encoder::UntilClose;
            } else {
                self.writer = self.body_encoder(&resp);
            }
            if self.writer == Encoder::UntilClose {
                self.keepalive = false;
            }
        }
        // A final header gets the gateway's `Date` and `Connection` in place of any it has.
        let connection: &[u8] = if self.keepalive {
            b"keep-alive"
        } else {
            b"close"
        };
        let date = (!status.is_informational()).then(get_cached_date);
        let ours = date.as_ref().map(|date| (date.as_bytes(), connection));
        response_head(&resp, passed, ours, &mut self.head)?;
        self.io
            .write_all(&self.head)
            .await
            .or_err(WriteError, "writing response header")?;
        // A body with a length leaves with the header (it is less likely to be real-time); an
        // informational header, a chunked or close-delimited body's, or one with no body, the
        // client should see now.
        if info || !matches!(self.writer, Encoder::Length(left) if left > 0) {
            self.flush().await?;
        }
        self.response = Some(*resp);
        Ok(())
    }

    /// How the body of `resp` goes on the wire (pingora's `init_body_writer`).
    fn body_encoder(&self, resp: &ResponseHeader) -> Encoder {
        if matches!(
            resp.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        ) || self
            .request
            .as_ref()
            .is_some_and(|r| r.method == Method::HEAD)
        {
            return Encoder::Length(0);
        }
        if framing::is_chunked(&resp.headers) {
            return Encoder::Chunked;
        }
        match framing::content_length(&resp.headers) {
            Ok(Some(n)) => Encoder::Length(n as u64),
            // No length, or one that cannot be trusted: the body ends with the connection.
            _ => Encoder::UntilClose,
        }
    }

    /// Whether `resp` accepts an upgrade the request asked for.
    pub fn is_upgrade(&self, resp: &ResponseHeader) -> bool {
        // The response first: the request's map is asked only for a 101.
        framing::accepts_upgrade(resp)
            && self.request.as_ref().is_some_and(|req| {
                req.version == Version::HTTP_11 && req.headers.contains_key(header::UPGRADE)
            })
    }

    /// Writes a piece of the response body, framed (see [`Encoder::frame`]). A chunk, or bytes
    /// without framing, leave at once; a body with a length leaves with its last byte, or as the
    /// write buffer fills.
    async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        let mut size_line = [0; 18];
        let framed = self.writer.frame(data, &mut size_line);
        if framed.len == 0 {
            return Ok(());
        }
        wire::write_pieces(&mut self.io, &framed.wire, "while writing body").await?;
        self.body_sent += framed.len;
        match self.writer {
            Encoder::Length(left) if left > 0 => Ok(()),
            _ => self.flush().await,
        }
    }

    /// Ends the response body (the last chunk of a chunked one) and sends what is buffered. A
    /// body shorter than its `Content-Length` is an error. After an upgrade the client's side is
    /// over too (pingora's `maybe_force_close_body_reader`).
    pub async fn finish_body(&mut self) -> Result<()> {
        let last = self.writer.finish("response")?;
        self.io
            .write_all(last)
            .await
            .or_err(WriteError, "while writing body")?;
        self.flush().await?;
        if self.upgraded {
            self.reader = Decoder::Done;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.io.flush().await.or_err(WriteError, "flushing body")
    }

    /// Answers a request the gateway could not read (`400` for a malformed header) with
    /// pingora-core's canned response, and closes after it.
    pub async fn respond_error(&mut self, code: u16) -> Result<()> {
        self.keepalive = false;
        self.write_response_header(Box::new(ServerSession::generate_error(code)))
            .await?;
        self.finish_body().await
    }

    /// The end of a request. `Ok(true)`: the connection can carry the next one; the rest of the
    /// request body, if any, was read and dropped (`finish`, then `reuse`). Otherwise the
    /// connection is shut down.
    pub async fn finish(&mut self) -> Result<bool> {
        // A response body already ended was flushed then (`Encoder::Done`): not twice.
        if self.writer != Encoder::Done {
            self.finish_body().await?;
        }
        if !self.keepalive {
            self.shutdown().await;
            return Ok(false);
        }
        while self.read_request_body().await?.is_some() {}
        // As nginx's keep-alive: a connection waiting for its next request holds no read buffer
        // (the next read takes a new one), nor the request header, whose values point into it.
        self.request = None;
        self.response = None;
        if self.buf.is_empty() {
            wire::release(&mut self.buf, limits::DOWNSTREAM_READ_BUFFER);
        }
        Ok(true)
    }

    /// Flushes what was written and closes the connection.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

impl Downstream for Session {
    fn req_header(&self) -> &RequestHeader {
        self.req()
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.request.as_mut().expect("a request header was read")
    }

    fn is_body_empty(&mut self) -> bool {
        self.body_empty
    }

    fn write_response_header(
        &mut self,
        resp: Box<ResponseHeader>,
    ) -> impl Future<Output = Result<()>> + Send {
        Session::write_response_header(self, resp)
    }

    async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if !data.is_empty() {
            self.write_body(&data).await?;
        }
        if end {
            self.finish_body().await?;
        }
        Ok(())
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_ref()
    }

    fn disable_keepalive(&mut self) {
        self.keepalive = false;
    }

    fn is_http2(&self) -> bool {
        false
    }

    fn client_addr(&self) -> Option<SocketAddr> {
        inet(self.digest.as_ref()?.peer_addr())
    }

    fn server_addr(&self) -> Option<SocketAddr> {
        inet(self.digest.as_ref()?.local_addr())
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }
}

fn inet(addr: Option<&PingoraAddr>) -> Option<SocketAddr> {
    addr?.as_inet().copied()
}

/// Parses a request header at the start of `buf` into `slot`, and removes it from there; the
/// framing fields it carries, or `None` if it is not complete yet. Field values point into the
/// buffer's memory (no copy). A request line with bytes httparse refuses in its target (spaces,
/// quotes) is taken with them percent-encoded, as pingora-core does.
fn parse_request(buf: &mut BytesMut, slot: &mut Option<RequestHeader>) -> Result<Option<Present>> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() };
        limits::DOWNSTREAM_MAX_REQUEST_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_request_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            if matches!(e, httparse::Error::Token | httparse::Error::Version)
                && let Some(escaped) = escape_illegal_request_line(buf)
            {
                *buf = escaped;
                return parse_request(buf, slot);
            }
            return Error::e_explain(
                InvalidHTTPHeader,
                format!(
                    "invalid request header ({e}): {}",
                    buf[..buf.len().min(256)].escape_ascii()
                ),
            );
        }
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .or_err(InvalidHTTPHeader, "invalid method")?;
    parts.version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let base = buf.as_ptr() as usize;
    let path = wire::offsets(base, parsed.path.expect("complete").as_bytes());
    let fields = wire::field_offsets(base, parsed.headers)?;
    let head: Bytes = buf.split_to(len).freeze();
    let present = wire::append_fields(&mut parts.headers, &head, fields);
    // No map of field-name case: pingora-core writes well-known names capitalized, the rest in
    // lower case (see `sanitize::without_case`).
    let req = slot.insert(RequestHeader::from(parts));
    set_target(req, &head, path)?;
    Ok(Some(present))
}

/// Sets the request's target, the bytes of `head` at `path`. An origin-form target (the common
/// case) becomes the `Uri`'s path and query sharing `head`'s memory, checked by `http` as
/// pingora-core checks it; anything else, and a target that check refuses (not UTF-8, say),
/// takes pingora-core's `set_raw_path`, which copies the target into a `Uri` built anew (about
/// 500 instructions more) and keeps the raw bytes where they differ.
fn set_target(req: &mut RequestHeader, head: &Bytes, path: Range<usize>) -> Result<()> {
    if head[path.clone()].first() == Some(&b'/')
        && let Ok(path_and_query) = PathAndQuery::from_maybe_shared(head.slice(path.clone()))
    {
        req.set_uri(Uri::from(path_and_query));
        return Ok(());
    }
    req.set_raw_path(&head[path])
}

/// A copy of `buf` with the request line's target percent-encoded where httparse refuses it;
/// `None` when that changes nothing (pingora-core's `escape_illegal_request_line`).
fn escape_illegal_request_line(buf: &[u8]) -> Option<BytesMut> {
    use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
    static REQUEST_LINE: LazyLock<regex::bytes::Regex> = LazyLock::new(|| {
        regex::bytes::Regex::new(r"^\w+ (?P<uri>.+) HTTP/\d(?:\.\d)?").expect("valid")
    });
    // The bytes httparse refuses in a target (WHATWG's query set, almost, and `{}`).
    const REFUSED: &AsciiSet = &CONTROLS.add(b' ').add(b'<').add(b'>').add(b'"');
    let uri = REQUEST_LINE.captures(buf)?.name("uri")?;
    let mut escaped = BytesMut::with_capacity(buf.len() + 32);
    escaped.extend_from_slice(&buf[..uri.start()]);
    for piece in percent_encode(uri.as_bytes(), REFUSED) {
        escaped.extend_from_slice(piece.as_bytes());
    }
    if escaped.len() == uri.end() {
        return None;
    }
    escaped.extend_from_slice(&buf[uri.end()..]);
    Some(escaped)
}

/// The status line and fields of `resp` as they go on the wire, into `out` (pingora-core's
/// `http_resp_header_to_buf`: well-known names capitalized, the others as the map keeps them).
fn response_head(
    resp: &ResponseHeader,
    passed: Option<&PassedFields>,
    date_and_connection: Option<(&[u8], &[u8])>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let version: &[u8] = match resp.version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        Version::HTTP_11 => b"HTTP/1.1 ",
        Version::HTTP_09 => b"HTTP/0.9 ",
        v => {
            return Error::e_explain(
                WriteError,
                format!("cannot send a {v:?} response as HTTP/1"),
            );
        }
    };
    out.clear();
    out.extend_from_slice(version);
    out.extend_from_slice(resp.status.as_str().as_bytes());
    out.push(b' ');
    if let Some(reason) = resp.get_reason_phrase() {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    // Written here rather than set in the map: two hashed inserts per response, for fields
    // nothing reads back.
    let replaced = |name: &[u8]| {
        date_and_connection.is_some()
            && (name.eq_ignore_ascii_case(b"date") || name.eq_ignore_ascii_case(b"connection"))
    };
    resp.map(|name, value| {
        let name = wire::name_bytes(&name);
        if !replaced(name) {
            wire::put_field(out, name, value.as_bytes());
        }
        Ok(())
    })?;
    for (name, value) in passed.iter().flat_map(|passed| passed.iter()) {
        if !replaced(name) {
            wire::put_field(out, name, value);
        }
    }
    if let Some((date, connection)) = date_and_connection {
        wire::put_field(out, b"Date", date);
        wire::put_field(out, b"Connection", connection);
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests;
