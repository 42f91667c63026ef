//! What pingora-proxy 0.9.1 does to the headers when it proxies HTTP/1 to HTTP/1 with the
//! default `HttpUpstreamRequestPolicy` (strip hop-by-hop and `Connection`-nominated fields,
//! reject malformed nominations, forward only WebSocket upgrades). pingora-proxy keeps these
//! functions `pub(crate)`; our HTTP/1 loop drives its own sessions (`session.rs`, `client.rs`),
//! so it must call these ports at the points pingora calls the originals:
//!
//! ```text
//! request:  before_filter -> upstream_request_filter -> after_filter -> write_head
//! response: read header -> downstream_response -> response_filter -> after_response_filter
//!           -> write_response_header (every header, 1xx included)
//! ```
//!
//! A request no route filter edits (the common case) skips the copy those three steps edit:
//! [`direct_head`] writes what they would send straight from the downstream header, and a
//! differential test (`sanitize/direct_tests.rs`) holds the two to the same result.
//!
//! Errors carry the source pingora gives them, so `errors::response_for` answers as it does
//! today: a bad downstream `Connection` header is 400, a filter that leaves an invalid authority
//! is 500, an upstream 101 the downstream did not ask for is 502.
//!
//! Line references are to pingora-proxy 0.9.1 unless they name pingora-core.

use http::header::{self, HeaderName};
use http::{Method, StatusCode, Version};
use pingora_core::protocols::http::authority::{
    RawTargetAuthority, raw_target_authority, validate_request_authority,
};
use pingora_core::protocols::http::v1::common::is_upgrade_req;
use pingora_error::{Error, ErrorType::InvalidHTTPHeader, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::body::Encoder;
use super::client::{RequestHead, Sent, request_body_length, request_line};
use super::wire;

/// pingora's own bound on `Connection` tokens (proxy_common.rs:21), not one of our tunables:
/// the 10th token fails the request, so changing it would change which requests get a 400.
const MAX_CONNECTION_NOMINATIONS: usize = 10;
const KEEP_ALIVE: &str = "keep-alive";
const PROXY_CONNECTION: &str = "proxy-connection";
const HTTP2_SETTINGS: &str = "http2-settings";

/// Builds the upstream request header from the downstream one. Call it after `request_filter`
/// (and its plugins) are done with the downstream header, right before the gateway's
/// `upstream_request_filter`. pingora does this once the upstream connection is up, but nothing
/// here depends on the connection.
///
/// Mirrors `proxy_1to1` (proxy_h1.rs:48-71) for an HTTP/1 downstream: clone, speak HTTP/1.1,
/// then `sanitize_h1_upstream_request` with the standard policy. (The Host synthesis at lines
/// 55-63 is for HTTP/2 downstreams only.) `Expect`, `Content-Length` and every end-to-end field
/// are forwarded untouched; body framing is settled in [`after_filter`].
///
/// # Errors
///
/// `InvalidHTTPHeader` from the downstream (400, as pingora's `into_down` at line 70) when the
/// `Connection` header nominates 10 or more fields, a pseudo-header, `Host`, `X-Forwarded-For`,
/// `X-Forwarded-Host` or `X-Forwarded-Proto`, or a token that is not an RFC 9110 `token`.
pub fn before_filter(downstream: &RequestHeader) -> Result<Box<RequestHeader>> {
    let websocket = is_websocket_upgrade(downstream);
    let mut req = Box::new(without_case(downstream)?);
    req.set_version(Version::HTTP_11);
    sanitize(&mut req, websocket).map_err(Error::into_down)?;
    Ok(req)
}

/// Finishes the upstream request header after the gateway's `upstream_request_filter`, right
/// before the header is written (`RequestHead::of`).
///
/// - `downstream`: the downstream request header [`before_filter`] cloned; pingora records
///   whether it had a `Host` before the filter runs (proxy_h1.rs:50).
/// - `downstream_has_body`: `!is_body_empty()` on the downstream v1 server session, which
///   pingora asks at this point (proxy_h1.rs:112).
///
/// Mirrors proxy_h1.rs:92-114: a `Host` set by the filter is carried into the URI or
/// absolute-form target (`reconcile_upstream_authority`); `Host` is restored from the
/// authority if the filter deleted it, unless the downstream was a Host-less origin-form
/// request such as HTTP/1.0's; the result must pass pingora-core's `validate_request_authority`;
/// a body with neither `Content-Length` nor `Transfer-Encoding` is sent chunked.
///
/// # Errors
///
/// `InvalidHTTPHeader` from inside the gateway (500, pingora's `into_in`) when the filtered
/// request has userinfo in `Host`, a `Host` that is not a valid authority, two `Host` fields,
/// or a `Host` that disagrees with the target.
pub fn after_filter(
    req: &mut RequestHeader,
    downstream: &RequestHeader,
    downstream_has_body: bool,
) -> Result<()> {
    reconcile_upstream_authority(req).map_err(Error::into_in)?;
    let target_has_authority = raw_target_authority(req.raw_path()).authority().is_some();
    if downstream.headers.contains_key(header::HOST)
        || req.uri.authority().is_some()
        || target_has_authority
    {
        set_h1_host_from_authority(req).map_err(Error::into_in)?;
    }
    validate_request_authority(req).map_err(Error::into_in)?;
    finalize_framing(req, downstream_has_body)
}

/// The upstream request header the general way, as pingora-proxy builds it: [`before_filter`]
/// on a copy of `downstream`, `Expect` left out if `drop_expect` (the gateway answers
/// `100-continue` itself), the gateway's `filter`, then [`after_filter`].
pub fn general_head(
    downstream: &RequestHeader,
    has_body: bool,
    drop_expect: bool,
    filter: impl FnOnce(&mut RequestHeader) -> Result<()>,
) -> Result<RequestHead> {
    let mut req = before_filter(downstream)?;
    if drop_expect {
        req.remove_header(&header::EXPECT);
    }
    filter(&mut req)?;
    after_filter(&mut req, downstream, has_body)?;
    RequestHead::of(&req)
}

/// The upstream request header written straight from the downstream one, for a request no
/// gateway filter edits: what [`general_head`] would send, without the copy of the header it
/// edits (the copy, its hop-by-hop removals and its drop were a tenth of the gateway's
/// instructions per request). `drop_expect`: leave `Expect` out (the gateway answers
/// `100-continue` itself). `host_checked`: `Host` is as the session checked it when the request
/// came (no plugin ran on the request), so it need not be checked again.
///
/// `None` when the request needs the general path: a target with an authority, which
/// [`after_filter`] reconciles with `Host`; a WebSocket upgrade, whose handshake is rewritten;
/// or a header keeping its names' case. Fields keep their order (the general path's removals
/// move the last field into the gap); each name's values keep theirs, and names are written
/// as there, well-known ones capitalized.
///
/// # Errors
///
/// As [`before_filter`] for a bad `Connection` header, and as [`after_filter`] for a `Host` that
/// is not a valid single authority (which only a plugin's edit can produce).
pub fn direct_head(
    downstream: &RequestHeader,
    has_body: bool,
    drop_expect: bool,
    host_checked: bool,
) -> Result<Option<RequestHead>> {
    if downstream.uri.authority().is_some()
        || !matches!(
            raw_target_authority(downstream.raw_path()),
            RawTargetAuthority::None
        )
        || downstream.method == Method::CONNECT
        || is_websocket_upgrade(downstream)
        || downstream.has_case()
    {
        return Ok(None);
    }
    let nominated = ConnectionNominations::parse(downstream).map_err(Error::into_down)?;
    if !host_checked {
        single_plain_host(downstream).map_err(Error::into_in)?;
    }
    let mut head = request_line(&downstream.method, downstream.raw_path(), Version::HTTP_11)?;
    let mut has_length = false;
    downstream.map(|name, value| {
        let name = wire::name_bytes(&name);
        if is_hop_by_hop(name)
            || nominated.nominates(name)
            || (drop_expect && name.eq_ignore_ascii_case(b"expect"))
        {
            return Ok(());
        }
        has_length |= name.eq_ignore_ascii_case(b"content-length");
        wire::put_field(&mut head, name, value.as_bytes());
        Ok(())
    })?;
    // `finalize_framing`: the downstream's `Transfer-Encoding` was left out as hop-by-hop.
    let writer = if has_body && !has_length {
        head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        Encoder::Chunked
    } else if has_length {
        Encoder::Length(request_body_length(&downstream.headers))
    } else {
        Encoder::Length(0)
    };
    head.extend_from_slice(b"\r\n");
    Ok(Some(RequestHead {
        wire: head,
        writer,
        sent: Sent {
            head: downstream.method == Method::HEAD,
            // `Upgrade` and `Connection` are hop-by-hop: neither is sent.
            upgrade: false,
            close: false,
        },
    }))
}

/// What `after_filter` checks of an origin-form request's `Host` (neither added nor replaced
/// without an authority to take it from): pingora-core's `validate_request_authority` comes down
/// to this when the target has no authority and the method is not CONNECT. The session makes
/// this check when the request comes (`Session::start`); a plugin may have edited `Host` since.
pub(super) fn single_plain_host(req: &RequestHeader) -> Result<()> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Error::e_explain(InvalidHTTPHeader, "multiple Host header fields");
    }
    if host.is_some_and(|host| host.as_bytes().contains(&b'@')) {
        return Error::e_explain(InvalidHTTPHeader, "userinfo in Host header");
    }
    Ok(())
}

/// Prepares an upstream response header for the downstream. Call it on every header the
/// upstream sends (1xx included), after any `upstream_response_filter` and before the gateway's
/// `response_filter`.
///
/// - `end_of_stream`: the response has no body to follow (`is_body_done()` on the v1 client
///   session right after the header was read, as `read_response_task` reports it).
/// - `upstream_is_upgrade_req`: `is_upgrade_req()` on the v1 client session (pingora-core
///   v1/common.rs:190 on the request written upstream; pingora records it at proxy_h1.rs:116).
///
/// Mirrors `h1_response_filter` (proxy_h1.rs:874-953): a 101 is refused unless both sides'
/// requests were upgrades, and a response that would be close-delimited is sent chunked as
/// HTTP/1.1 so the downstream connection can be kept. The server session (`session.rs`, as
/// pingora-core's did) then adds `Date` and `Connection` and picks the body framing in
/// `write_response_header`.
///
/// # Errors
///
/// `InvalidHTTPHeader` from the upstream (502, pingora's `into_up` at line 876) for a 101
/// whose upgrade state does not match.
pub fn downstream_response(
    resp: &mut ResponseHeader,
    end_of_stream: bool,
    downstream: &RequestHeader,
    upstream_is_upgrade_req: bool,
) -> Result<()> {
    reject_mismatched_101(resp, downstream, upstream_is_upgrade_req).map_err(Error::into_up)?;
    let no_body = downstream.method == Method::HEAD
        || matches!(
            resp.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    // The lookups last, `Content-Length` first: most responses have it.
    if !no_body
        && !end_of_stream
        && !resp.status.is_informational()
        && !resp.headers.contains_key(header::CONTENT_LENGTH)
        && !resp.headers.contains_key(header::TRANSFER_ENCODING)
    {
        // HTTP/1.0 has no chunked encoding.
        resp.set_version(Version::HTTP_11);
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// Checks the header the gateway's `response_filter` produced, before it is written
/// downstream: a filter must not turn a response into a 101 the two sides did not both ask for.
///
/// Mirrors proxy_h1.rs:958-962 (and the same check after the downstream modules at
/// lib.rs:787, which is this one again since our modules change nothing).
///
/// # Errors
///
/// `InvalidHTTPHeader` from inside the gateway (500, pingora's `into_in`).
pub fn after_response_filter(
    resp: &ResponseHeader,
    downstream: &RequestHeader,
    upstream_is_upgrade_req: bool,
) -> Result<()> {
    reject_mismatched_101(resp, downstream, upstream_is_upgrade_req).map_err(Error::into_in)
}

/// Whether pingora forwards this downstream request's upgrade: HTTP/1.1 with an `Upgrade`
/// field whose first value is `websocket` in any case. Every other upgrade is stripped.
///
/// Mirrors `is_websocket_upgrade_request` (proxy_common.rs:82), called on the downstream header.
pub fn is_websocket_upgrade(downstream: &RequestHeader) -> bool {
    downstream.version == Version::HTTP_11
        && downstream
            .headers
            .get(header::UPGRADE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// `sanitize_h1_upstream_request` (proxy_common.rs:331) with the standard policy: strip the
/// fields the downstream's `Connection` nominates, then the standard hop-by-hop fields, then
/// put back a normalized WebSocket handshake.
fn sanitize(req: &mut RequestHeader, websocket: bool) -> Result<()> {
    let nominated: [Option<HeaderName>; MAX_CONNECTION_NOMINATIONS] = {
        let nominations = ConnectionNominations::parse(req)?;
        let mut names = nominations.names();
        std::array::from_fn(|_| names.next())
    };
    for name in nominated.iter().flatten() {
        req.remove_header(name);
    }
    // pingora's WebSocketOnly arm removes Connection, Upgrade and HTTP2-Settings once more;
    // the hop-by-hop strip has already removed all three.
    strip_hop_by_hop(req);
    if websocket {
        req.insert_header(header::CONNECTION, "Upgrade")?;
        req.insert_header(header::UPGRADE, "websocket")?;
    }
    Ok(())
}

/// The standard hop-by-hop fields, lower case (`strip_standard_hop_by_hop_headers`,
/// proxy_common.rs:178).
const HOP_BY_HOP: [&str; 10] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "connection",
    "upgrade",
    HTTP2_SETTINGS,
];

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.len() == name.len() && h.as_bytes().eq_ignore_ascii_case(name))
}

/// `strip_standard_hop_by_hop_headers` (proxy_common.rs:178).
fn strip_hop_by_hop(req: &mut RequestHeader) {
    // One pass finds the ones present: removing a name costs two hashed lookups (the header map
    // and pingora's case map) even when it is absent, and most requests carry one of the ten at
    // most (`Connection`).
    let mut present = [false; 10];
    for name in req.headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| name.as_str() == *h) {
            present[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        req.remove_header(*name);
    }
}

/// The fields a `Connection` header nominates, borrowed from its values in a fixed array, so
/// the common request pays neither an allocation nor a `HeaderName` per token.
/// `ConnectionNominations` (proxy_common.rs:89-176) with malformed tokens rejected.
struct ConnectionNominations<'a> {
    tokens: [&'a [u8]; MAX_CONNECTION_NOMINATIONS],
    len: usize,
}

impl<'a> ConnectionNominations<'a> {
    fn parse(req: &'a RequestHeader) -> Result<Self> {
        let mut nominations = Self {
            tokens: [&[]; MAX_CONNECTION_NOMINATIONS],
            len: 0,
        };
        let tokens = req
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|token| !token.is_empty());
        for (count, token) in tokens.enumerate() {
            // Bounded so a long Connection header cannot cost unbounded work per request.
            if count + 1 >= MAX_CONNECTION_NOMINATIONS {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    "too many Connection header nominations",
                );
            }
            if token.starts_with(b":") {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    "protected header cannot be nominated by the Connection header",
                );
            }
            // Checked here, not left to `HeaderName::from_bytes`, which accepts some non-token
            // bytes: `Connection: "X-Forwarded-For"` must not slip past the protected check.
            // A name is at most `u16::MAX` bytes, as `HeaderName` takes it.
            if !token.iter().copied().all(is_tchar) || token.len() > usize::from(u16::MAX) {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    "invalid token nominated by the Connection header",
                );
            }
            // In any case, so casing cannot evade the protected check.
            if [
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
            ]
            .iter()
            .any(|protected| token.eq_ignore_ascii_case(protected.as_bytes()))
            {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    "protected header cannot be nominated by the Connection header",
                );
            }
            nominations.tokens[count] = token;
            nominations.len += 1;
        }
        Ok(nominations)
    }

    /// Whether `name` (in any case) is nominated.
    fn nominates(&self, name: &[u8]) -> bool {
        self.tokens[..self.len]
            .iter()
            .any(|token| token.eq_ignore_ascii_case(name))
    }

    /// The nominated names, owned so that `req` can be edited: every token is a `tchar` run no
    /// longer than a name may be, which `HeaderName` always takes.
    fn names(&self) -> impl Iterator<Item = HeaderName> + use<'_> {
        self.tokens[..self.len]
            .iter()
            .filter_map(|token| HeaderName::from_bytes(token).ok())
    }
}

/// An RFC 9110 §5.6.2 `tchar`. `is_tchar` (proxy_common.rs:61).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// `Host` from the URI or absolute-form authority: one matching `Host` stays, anything else is
/// replaced; without an authority an existing `Host` stays, else an empty one is added (HTTP/1.1
/// requires the field). `set_h1_host_from_authority` (proxy_common.rs:203).
fn set_h1_host_from_authority(req: &mut RequestHeader) -> Result<()> {
    let authority = req
        .uri
        .authority()
        .map(|authority| authority.as_str().as_bytes())
        .or_else(|| raw_target_authority(req.raw_path()).authority());
    let Some(authority) = authority else {
        if req.headers.contains_key(header::HOST) {
            return Ok(());
        }
        return req.insert_header(header::HOST, "");
    };
    if authority.contains(&b'@') {
        return Error::e_explain(InvalidHTTPHeader, "userinfo in request authority");
    }
    let mut hosts = req.headers.get_all(header::HOST).iter();
    if hosts
        .next()
        .is_some_and(|host| host.as_bytes() == authority)
        && hosts.next().is_none()
    {
        return Ok(());
    }
    let host = http::HeaderValue::from_bytes(authority)
        .or_err(InvalidHTTPHeader, "invalid authority for Host header")?;
    req.insert_header(header::HOST, host)
}

/// A copy of `downstream` without pingora's map of header-name case: the map is a second header
/// map that every copy, edit and write of the header pays for again. Names then go upstream as
/// pingora-core writes them without it, well-known ones capitalized (`Host`, `Content-Length`) and
/// the rest in lower case; Envoy, which does not keep case either, writes all in lower case. A
/// target the URI does not reproduce (absolute-form, not UTF-8) is kept as it came.
fn without_case(downstream: &RequestHeader) -> Result<RequestHeader> {
    let mut req = RequestHeader::from(downstream.as_owned_parts());
    if req.raw_path() != downstream.raw_path() {
        req.set_raw_path(downstream.raw_path())
            .map_err(Error::into_down)?;
    }
    Ok(req)
}

/// Carries a filter-chosen `Host` into the URI authority or absolute-form target; origin-form
/// and ambiguous targets are left for `validate_request_authority` to judge.
/// `reconcile_upstream_authority` (proxy_common.rs:262).
fn reconcile_upstream_authority(req: &mut RequestHeader) -> Result<()> {
    let Some(host) = req.headers.get(header::HOST) else {
        return Ok(());
    };
    if host.as_bytes().contains(&b'@') {
        return Error::e_explain(InvalidHTTPHeader, "userinfo in Host header");
    }

    if let Some(authority) = req.uri.authority() {
        // `set_uri` drops the raw target bytes: refuse rather than send a lossy path.
        if !req.raw_path_is_utf8() {
            return Error::e_explain(
                InvalidHTTPHeader,
                "non-UTF-8 path cannot be reconciled with URI authority",
            );
        }
        if host.as_bytes() == authority.as_str().as_bytes() {
            return Ok(());
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = req.uri.scheme().cloned();
        parts.authority = Some(parse_host_authority(host)?);
        parts.path_and_query = req.uri.path_and_query().cloned();
        let uri = http::Uri::from_parts(parts).map_err(|cause| {
            Error::because(
                InvalidHTTPHeader,
                "failed to apply Host override to URI authority",
                cause,
            )
        })?;
        req.set_uri(uri);
        return Ok(());
    }

    match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::None | RawTargetAuthority::AmbiguousAuthority => Ok(()),
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => {
            if host.as_bytes() == authority {
                return Ok(());
            }
            parse_host_authority(host)?;
            let target = [scheme, b"://", host.as_bytes(), path_and_query].concat();
            req.set_raw_path(&target)
        }
    }
}

/// `parse_host_authority` (proxy_common.rs:320).
fn parse_host_authority(host: &http::HeaderValue) -> Result<http::uri::Authority> {
    http::uri::Authority::try_from(host.as_bytes()).map_err(|cause| {
        Error::because(
            InvalidHTTPHeader,
            "invalid Host override for authority",
            cause,
        )
    })
}

/// A body the filter left unframed goes chunked (its downstream `Transfer-Encoding` was
/// stripped as hop-by-hop). `finalize_h1_upstream_request_framing` (proxy_common.rs:383).
fn finalize_framing(req: &mut RequestHeader, downstream_has_body: bool) -> Result<()> {
    if downstream_has_body
        && !req.headers.contains_key(header::CONTENT_LENGTH)
        && !req.headers.contains_key(header::TRANSFER_ENCODING)
    {
        req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// A 101 switches protocols on both connections only if both requests asked to upgrade;
/// otherwise tunneled bytes would bypass request handling on one side.
/// `reject_mismatched_h1_upgrade_101` (lib.rs:1037).
fn reject_mismatched_101(
    resp: &ResponseHeader,
    downstream: &RequestHeader,
    upstream_is_upgrade_req: bool,
) -> Result<()> {
    if resp.status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(());
    }
    let downstream_is_upgrade_req = is_upgrade_req(downstream);
    if downstream_is_upgrade_req != upstream_is_upgrade_req {
        return Error::e_explain(
            InvalidHTTPHeader,
            format!(
                "received 101 response with mismatched upstream/downstream upgrade status: \
                 downstream_upgrade_req={downstream_is_upgrade_req}, \
                 upstream_upgrade_req={upstream_is_upgrade_req}"
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::downstream::Downstream;
    use crate::server::errors::response_for;
    use crate::server::h1::session::Session;
    use pingora_error::ErrorSource;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// `request_with_headers` from pingora's proxy_common.rs tests: `GET /` over HTTP/1.1.
    fn request_with_headers(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", Some(headers.len())).unwrap();
        request.set_version(Version::HTTP_11);
        for (name, value) in headers {
            request
                .append_header(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                )
                .unwrap();
        }
        request
    }

    fn response(status: u16, version: Version, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).unwrap();
        resp.set_version(version);
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    /// A downstream request as our HTTP/1 session (`session.rs`) parses it off the wire.
    /// Also returns the client's end, to read the response.
    async fn downstream(raw: &[u8]) -> (Session, DuplexStream) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(raw).await.unwrap();
        let mut session = Session::new(Box::new(server));
        assert!(session.read_request().await.unwrap());
        (session, client)
    }

    /// The bytes the upstream client (`client.rs`) puts on the wire for `req`.
    fn upstream_wire(req: Box<RequestHeader>) -> String {
        String::from_utf8(super::super::client::request_head(&req).unwrap()).unwrap()
    }

    /// Runs the whole request path with a filter in the middle, as the HTTP/1 loop will.
    async fn proxied_wire(raw: &[u8], filter: impl FnOnce(&mut RequestHeader)) -> String {
        let (mut session, _client) = downstream(raw).await;
        let mut req = before_filter(session.req_header()).unwrap();
        filter(&mut req);
        let has_body = !session.is_body_empty();
        after_filter(&mut req, session.req_header(), has_body).unwrap();
        upstream_wire(req)
    }

    // === ported from pingora-proxy 0.9.1 proxy_common.rs tests ===

    #[test]
    fn h1_host_is_copied_from_authority() {
        let request_with_uri = |uri: &str, host: Option<&str>| {
            let mut request = match host {
                Some(host) => request_with_headers(&[("Host", host)]),
                None => request_with_headers(&[]),
            };
            request.set_uri(uri.parse().unwrap());
            request
        };

        let mut request = request_with_uri("https://authority.example/test", None);
        set_h1_host_from_authority(&mut request).unwrap();
        assert_eq!(request.headers[header::HOST], "authority.example");

        let mut request = request_with_uri("https://authority.example/test", Some("host.example"));
        set_h1_host_from_authority(&mut request).unwrap();
        assert_eq!(request.headers[header::HOST], "authority.example");
        assert_eq!(request.headers.get_all(header::HOST).iter().count(), 1);

        let mut request = request_with_uri("/test", Some("host.example"));
        set_h1_host_from_authority(&mut request).unwrap();
        assert_eq!(request.headers[header::HOST], "host.example");

        let mut request = request_with_uri("/test", None);
        set_h1_host_from_authority(&mut request).unwrap();
        assert_eq!(request.headers[header::HOST], "");

        let mut request = request_with_uri("https://user@authority.example/test", None);
        let err = set_h1_host_from_authority(&mut request).unwrap_err();
        assert_eq!(err.etype(), &InvalidHTTPHeader);
    }

    #[test]
    fn the_upstream_copy_keeps_every_target_but_not_the_header_case() {
        for target in [
            &b"/path?q=1"[..],
            b"*",
            b"http://client.example/path?q=1",
            b"http://client.example/\xff",
            b"/caf\xc3\xa9/\xff",
        ] {
            let mut downstream = RequestHeader::build("GET", target, None).unwrap();
            downstream.append_header("X-Mixed-Case", "v").unwrap();
            let copy = without_case(&downstream).unwrap();
            assert_eq!(copy.raw_path(), downstream.raw_path(), "{target:?}");
            assert_eq!(copy.raw_path_is_utf8(), downstream.raw_path_is_utf8());
            assert_eq!(copy.uri, downstream.uri);
            assert_eq!(copy.headers["x-mixed-case"], "v");
            let mut wire = Vec::new();
            copy.header_to_h1_wire(&mut wire);
            let wire = String::from_utf8_lossy(&wire);
            assert!(wire.contains("x-mixed-case: v"), "{wire}");
        }
    }

    #[test]
    fn filter_host_override_updates_outbound_authority() {
        let mut request = request_with_headers(&[("Host", "origin.example")]);
        request.set_uri("https://client.example/path?q=1".parse().unwrap());
        reconcile_upstream_authority(&mut request).unwrap();
        assert_eq!(request.uri.authority().unwrap(), "origin.example");
        assert_eq!(request.uri.path_and_query().unwrap(), "/path?q=1");

        let mut userinfo = request_with_headers(&[("Host", "user@evil.example")]);
        userinfo.set_uri("https://client.example/path".parse().unwrap());
        assert!(reconcile_upstream_authority(&mut userinfo).is_err());

        let mut origin_form = request_with_headers(&[("Host", "origin.example")]);
        reconcile_upstream_authority(&mut origin_form).unwrap();
        assert!(origin_form.uri.authority().is_none());

        let mut absolute =
            RequestHeader::build("GET", b"http://client.example/path?q=1", None).unwrap();
        absolute
            .append_header(header::HOST, "origin.example")
            .unwrap();
        reconcile_upstream_authority(&mut absolute).unwrap();
        assert_eq!(absolute.raw_path(), b"http://origin.example/path?q=1");

        let mut non_utf8 =
            RequestHeader::build("GET", b"http://client.example/\xff", None).unwrap();
        non_utf8
            .append_header(header::HOST, "origin.example")
            .unwrap();
        reconcile_upstream_authority(&mut non_utf8).unwrap();
        assert_eq!(non_utf8.raw_path(), b"http://origin.example/\xff");
        assert!(!non_utf8.raw_path_is_utf8());

        let mut h2_deleted = request_with_headers(&[]);
        h2_deleted.set_uri("https://client.example/path".parse().unwrap());
        set_h1_host_from_authority(&mut h2_deleted).unwrap();
        h2_deleted.remove_header(&header::HOST);
        reconcile_upstream_authority(&mut h2_deleted).unwrap();
        set_h1_host_from_authority(&mut h2_deleted).unwrap();
        assert_eq!(h2_deleted.headers[header::HOST], "client.example");

        let mut h1_deleted = request_with_headers(&[("Host", "client.example")]);
        h1_deleted.remove_header(&header::HOST);
        reconcile_upstream_authority(&mut h1_deleted).unwrap();
        set_h1_host_from_authority(&mut h1_deleted).unwrap();
        assert_eq!(h1_deleted.headers[header::HOST], "");

        let mut absolute_deleted =
            RequestHeader::build("GET", b"http://client.example/path", None).unwrap();
        absolute_deleted
            .append_header(header::HOST, "client.example")
            .unwrap();
        absolute_deleted.remove_header(&header::HOST);
        reconcile_upstream_authority(&mut absolute_deleted).unwrap();
        set_h1_host_from_authority(&mut absolute_deleted).unwrap();
        assert_eq!(absolute_deleted.headers[header::HOST], "client.example");
    }

    // pingora tests these through its HTTP/2 sanitizer, which shares `ConnectionNominations` and
    // the hop-by-hop strip with the HTTP/1 one; here they go through `before_filter`.

    #[test]
    fn removes_connection_nominated_fields_by_default() {
        let request = request_with_headers(&[
            ("Connection", "X-Private-Hop, HTTP2-Settings"),
            ("X-Private-Hop", "secret"),
            ("HTTP2-Settings", "settings"),
            ("Proxy-Authorization", "secret"),
            ("TE", "trailers"),
            ("Trailer", "X-Trailer"),
        ]);
        let upstream = before_filter(&request).unwrap();
        for name in [
            "x-private-hop",
            "http2-settings",
            "proxy-authorization",
            "te",
            "trailer",
        ] {
            assert!(upstream.headers.get(name).is_none(), "{name} forwarded");
        }
    }

    #[test]
    fn removes_nominations_after_connection_self_nomination() {
        let request = request_with_headers(&[
            ("Connection", "Connection, X-Private-Hop"),
            ("X-Private-Hop", "secret"),
        ]);
        let upstream = before_filter(&request).unwrap();
        assert!(upstream.headers.get("connection").is_none());
        assert!(upstream.headers.get("x-private-hop").is_none());
    }

    #[test]
    fn rejects_excessive_unparseable_connection_nominations() {
        let request = request_with_headers(&[("Connection", "@, @, @, @, @, @, @, @, @, @")]);
        assert!(before_filter(&request).is_err());
    }

    #[test]
    fn connection_nomination_rejects_protected_header() {
        for token in [
            "Host",
            "x-forwarded-for",
            "X-Forwarded-For",
            "X-FORWARDED-HOST",
            "x-Forwarded-Proto",
        ] {
            let request = request_with_headers(&[("Connection", token)]);
            assert!(before_filter(&request).is_err(), "{token:?} accepted");
        }
    }

    #[test]
    fn connection_nomination_rejects_pseudo_header() {
        for token in [":authority", ":method", ":path"] {
            let request = request_with_headers(&[("Connection", token)]);
            assert!(before_filter(&request).is_err(), "{token:?} accepted");
        }
    }

    #[test]
    fn connection_nomination_rejects_malformed_token() {
        let request = request_with_headers(&[("Connection", "keep-alive, bad token")]);
        assert!(before_filter(&request).is_err());
    }

    #[test]
    fn connection_nomination_rejects_decorated_protected_header() {
        for token in [
            "\"X-Forwarded-For\"",
            "(X-Forwarded-For",
            "X-Forwarded-For)",
            "X-Forwarded-For/",
            "X-Forwarded-For:",
            "X -Forwarded-For",
            "@X-Forwarded-For",
        ] {
            let request =
                request_with_headers(&[("Connection", token), ("X-Forwarded-For", "6.6.6.6")]);
            assert!(before_filter(&request).is_err(), "{token:?} accepted");
        }
    }

    /// A `tchar`-decorated lookalike nominates a distinct field: accepted, the real one kept.
    #[test]
    fn connection_nomination_allows_tchar_decorated_lookalike() {
        for token in ["'X-Forwarded-For'", "X-Forwarded-For.", "!X-Forwarded-For"] {
            let request =
                request_with_headers(&[("Connection", token), ("X-Forwarded-For", "6.6.6.6")]);
            let upstream = before_filter(&request).unwrap();
            assert_eq!(upstream.headers["x-forwarded-for"], "6.6.6.6");
        }
    }

    // === ported from pingora-proxy 0.9.1 proxy_h1.rs tests ===

    fn websocket_request() -> RequestHeader {
        request_with_headers(&[
            ("Host", "example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
        ])
    }

    #[test]
    fn filter_created_101_with_upgrade_mismatch_is_internal() {
        let downstream = websocket_request();
        let resp = response(101, Version::HTTP_11, &[]);
        let err = after_response_filter(&resp, &downstream, false).unwrap_err();
        assert_eq!(err.etype(), &InvalidHTTPHeader);
        assert_eq!(err.esource(), &ErrorSource::Internal);
        assert_eq!(response_for(&err).0, 500);
    }

    #[test]
    fn upstream_101_with_upgrade_mismatch_is_upstream() {
        let downstream = websocket_request();
        let mut resp = response(101, Version::HTTP_11, &[]);
        let err = downstream_response(&mut resp, true, &downstream, false).unwrap_err();
        assert_eq!(err.etype(), &InvalidHTTPHeader);
        assert_eq!(err.esource(), &ErrorSource::Upstream);
        assert_eq!(response_for(&err).0, 502);
    }

    // === each rule ===

    #[test]
    fn hop_by_hop_fields_are_stripped_and_end_to_end_fields_kept() {
        let mut request = request_with_headers(&[
            ("Host", "example.com"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authorization", "Basic Zm9v"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("Expect", "100-continue"),
            ("Content-Length", "5"),
            ("X-Forwarded-For", "192.0.2.1"),
            ("Cookie", "a=b"),
        ]);
        request.set_version(Version::HTTP_10);
        let upstream = before_filter(&request).unwrap();
        assert_eq!(upstream.version, Version::HTTP_11);
        let mut kept: Vec<_> = upstream.headers.keys().map(|n| n.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                "content-length",
                "cookie",
                "expect",
                "host",
                "x-forwarded-for"
            ]
        );
        assert_eq!(upstream.headers[header::EXPECT], "100-continue");
    }

    #[test]
    fn nine_nominations_pass_and_the_tenth_fails() {
        let nine = "a, b, c, d, e, f, g, h, i";
        let mut request = request_with_headers(&[("Connection", nine), ("I", "1"), ("J", "1")]);
        let upstream = before_filter(&request).unwrap();
        assert!(upstream.headers.get("i").is_none());
        assert_eq!(upstream.headers["j"], "1");

        // Also when spread over two fields, and empty list elements do not count.
        request.append_header(header::CONNECTION, ", j,").unwrap();
        let err = before_filter(&request).unwrap_err();
        assert_eq!(err.etype(), &InvalidHTTPHeader);
    }

    #[test]
    fn websocket_upgrade_is_forwarded_normalized() {
        let request = request_with_headers(&[
            ("Host", "example.com"),
            ("Connection", "keep-alive, Upgrade, X-Hop"),
            ("Upgrade", "WebSocket"),
            ("X-Hop", "1"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ]);
        assert!(is_websocket_upgrade(&request));
        let upstream = before_filter(&request).unwrap();
        assert_eq!(upstream.headers[header::CONNECTION], "Upgrade");
        assert_eq!(upstream.headers[header::UPGRADE], "websocket");
        assert!(upstream.headers.get("x-hop").is_none());
        assert_eq!(upstream.headers["sec-websocket-version"], "13");
        assert!(is_upgrade_req(&upstream));
    }

    #[test]
    fn other_upgrades_are_not_forwarded() {
        let h2c = request_with_headers(&[("Connection", "Upgrade"), ("Upgrade", "h2c")]);
        let listed = request_with_headers(&[("Upgrade", "websocket, h2c")]);
        let mut http10 =
            request_with_headers(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        http10.set_version(Version::HTTP_10);
        for request in [h2c, listed, http10] {
            assert!(!is_websocket_upgrade(&request));
            let upstream = before_filter(&request).unwrap();
            assert!(upstream.headers.get(header::UPGRADE).is_none());
            assert!(upstream.headers.get(header::CONNECTION).is_none());
            assert!(!is_upgrade_req(&upstream));
        }
    }

    #[test]
    fn bad_connection_header_answers_400() {
        let request = request_with_headers(&[("Connection", "Host")]);
        let err = before_filter(&request).unwrap_err();
        assert_eq!(err.esource(), &ErrorSource::Downstream);
        assert_eq!(response_for(&err), (400, "bad request\n", false));
    }

    #[test]
    fn invalid_authority_left_by_the_filter_answers_500() {
        let downstream = request_with_headers(&[("Host", "example.com")]);
        let filters: [fn(&mut RequestHeader); 3] = [
            |req| {
                req.insert_header(header::HOST, "user@evil.example")
                    .unwrap()
            },
            |req| {
                req.append_header(header::HOST, "other.example").unwrap();
            },
            // Origin-form never parses Host; an absolute-form target has to carry it.
            |req| {
                req.set_raw_path(b"http://example.com/").unwrap();
                req.insert_header(header::HOST, "bad host").unwrap();
            },
        ];
        for (case, filter) in filters.into_iter().enumerate() {
            let mut req = before_filter(&downstream).unwrap();
            filter(&mut req);
            let err = after_filter(&mut req, &downstream, false).unwrap_err();
            assert_eq!(err.esource(), &ErrorSource::Internal, "case {case}");
            assert_eq!(response_for(&err).0, 500, "case {case}");
        }
    }

    #[test]
    fn filter_host_is_kept_for_origin_form() {
        let downstream = request_with_headers(&[("Host", "client.example")]);
        let mut req = before_filter(&downstream).unwrap();
        req.insert_header(header::HOST, "backend.internal").unwrap();
        after_filter(&mut req, &downstream, false).unwrap();
        assert_eq!(req.headers[header::HOST], "backend.internal");
        assert_eq!(req.raw_path(), b"/");
    }

    #[test]
    fn deleted_host_comes_back_empty_unless_there_was_none() {
        let downstream = request_with_headers(&[("Host", "client.example")]);
        let mut req = before_filter(&downstream).unwrap();
        req.remove_header(&header::HOST);
        after_filter(&mut req, &downstream, false).unwrap();
        assert_eq!(req.headers[header::HOST], "");

        let mut hostless = request_with_headers(&[]);
        hostless.set_version(Version::HTTP_10);
        let mut req = before_filter(&hostless).unwrap();
        after_filter(&mut req, &hostless, false).unwrap();
        assert!(req.headers.get(header::HOST).is_none());
    }

    #[test]
    fn body_framing_is_settled_after_the_filter() {
        let downstream = request_with_headers(&[("Transfer-Encoding", "chunked")]);
        let framed = |has_body: bool, filter: &dyn Fn(&mut RequestHeader)| {
            let mut req = before_filter(&downstream).unwrap();
            assert!(req.headers.get(header::TRANSFER_ENCODING).is_none());
            filter(&mut req);
            after_filter(&mut req, &downstream, has_body).unwrap();
            let te: Vec<_> = req
                .headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .collect();
            let cl = req.headers.get(header::CONTENT_LENGTH).cloned();
            (te.len(), cl)
        };
        assert_eq!(framed(true, &|_| {}), (1, None));
        assert_eq!(framed(false, &|_| {}), (0, None));
        let with_length =
            |r: &mut RequestHeader| r.insert_header(header::CONTENT_LENGTH, "3").unwrap();
        assert_eq!(
            framed(true, &with_length),
            (0, Some("3".try_into().unwrap()))
        );
        let with_te = |r: &mut RequestHeader| {
            r.insert_header(header::TRANSFER_ENCODING, "chunked")
                .unwrap()
        };
        assert_eq!(framed(true, &with_te), (1, None));
    }

    #[test]
    fn close_delimited_response_is_sent_chunked() {
        let get = request_with_headers(&[("Host", "example.com")]);
        let mut resp = response(200, Version::HTTP_10, &[("Server", "origin")]);
        downstream_response(&mut resp, false, &get, false).unwrap();
        assert_eq!(resp.version, Version::HTTP_11);
        assert_eq!(resp.headers[header::TRANSFER_ENCODING], "chunked");

        let mut head = get.clone();
        head.set_method(Method::HEAD);
        let unchanged = [
            (response(200, Version::HTTP_10, &[]), &head, false),
            (response(204, Version::HTTP_10, &[]), &get, false),
            (response(304, Version::HTTP_10, &[]), &get, false),
            (response(100, Version::HTTP_10, &[]), &get, false),
            (response(200, Version::HTTP_10, &[]), &get, true),
            (
                response(200, Version::HTTP_10, &[("Content-Length", "2")]),
                &get,
                false,
            ),
            (
                response(
                    200,
                    Version::HTTP_11,
                    &[("Transfer-Encoding", "gzip, chunked")],
                ),
                &get,
                false,
            ),
        ];
        for (mut resp, req, end) in unchanged {
            let before = format!("{resp:?}");
            downstream_response(&mut resp, end, req, false).unwrap();
            assert_eq!(format!("{resp:?}"), before);
        }
    }

    #[test]
    fn matching_101_passes_both_checks() {
        let downstream = websocket_request();
        let mut resp = response(101, Version::HTTP_11, &[("Upgrade", "websocket")]);
        downstream_response(&mut resp, false, &downstream, true).unwrap();
        after_response_filter(&resp, &downstream, true).unwrap();
        assert!(resp.headers.get(header::TRANSFER_ENCODING).is_none());

        // An upgrade the downstream asked for but the upstream request lost.
        let err = downstream_response(&mut resp, false, &downstream, false).unwrap_err();
        assert_eq!(err.esource(), &ErrorSource::Upstream);
    }

    // === on the wire, through our server session and upstream client ===

    #[tokio::test]
    async fn chunked_request_reaches_the_upstream_rechunked() {
        let wire = proxied_wire(
            b"POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\
              Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
              Expect: 100-continue\r\nX-Kept: 1\r\n\r\n",
            |_| {},
        )
        .await;
        assert_eq!(
            wire,
            // Removing fields reorders the rest (`HeaderMap` swap-removes), as it does in pingora.
            // Names go up without the client's case: well-known ones capitalized, others lower.
            "POST /up HTTP/1.1\r\nHost: example.com\r\nx-kept: 1\r\nexpect: 100-continue\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn hostless_http10_request_reaches_the_upstream_as_http11_without_host() {
        let wire = proxied_wire(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", |_| {}).await;
        assert_eq!(wire, "GET /x HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn absolute_form_target_follows_the_filter_host() {
        let wire = proxied_wire(
            b"GET http://client.example/p?q HTTP/1.1\r\nHost: client.example\r\n\r\n",
            |req| req.insert_header(header::HOST, "backend.example").unwrap(),
        )
        .await;
        assert_eq!(
            wire,
            "GET http://backend.example/p?q HTTP/1.1\r\nHost: backend.example\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn close_delimited_response_reaches_the_downstream_chunked() {
        let (mut session, mut client) =
            downstream(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").await;
        let mut resp = response(200, Version::HTTP_10, &[("Server", "origin")]);
        downstream_response(&mut resp, false, session.req_header(), false).unwrap();
        session.write_response_header(Box::new(resp)).await.unwrap();
        session
            .write_response_body(bytes::Bytes::from_static(b"hi"), true)
            .await
            .unwrap();
        drop(session);
        let mut wire = String::new();
        client.read_to_string(&mut wire).await.unwrap();
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        let mut fields: Vec<_> = lines.filter(|l| !l.starts_with("Date: ")).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "Connection: keep-alive",
                "Server: origin",
                "Transfer-Encoding: chunked"
            ]
        );
        assert_eq!(body, "2\r\nhi\r\n0\r\n\r\n");
    }
}

#[cfg(test)]
mod direct_tests;
