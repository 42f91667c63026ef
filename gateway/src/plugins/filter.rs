//! The request path of a chain: Pingora headers ⇄ proxy-wasm header lists, and the per-request
//! state (one runtime `Stream` per plugin that ran). Request callbacks run in chain order,
//! response callbacks in reverse (Envoy runs encoder filters in reverse).

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use wasmgate_runtime::{Action, HeaderList, LocalReply, Outcome, Stream};

use super::chain::Chain;

/// Per-request plugin state, kept in the request context.
pub struct ChainRun {
    pub chain: Chain,
    /// Streams of the plugins whose request headers ran, in chain order.
    pub streams: Vec<Stream>,
    /// A response-path local reply replaces the upstream's body with this one.
    pub replace_body: Option<Bytes>,
    /// The request headers ended the stream: no request-body callbacks (as Envoy).
    pub no_request_body: bool,
}

impl ChainRun {
    pub fn new(chain: Chain) -> Self {
        let n = chain.len();
        Self {
            chain,
            streams: Vec::with_capacity(n),
            replace_body: None,
            no_request_body: false,
        }
    }
}

/// The request headers as proxy-wasm sees them, pseudo-headers first.
pub fn request_list(req: &RequestHeader, scheme: &str, authority: &str) -> HeaderList {
    let mut h = HeaderList::new();
    for (k, v) in request_pairs(req, scheme, authority) {
        h.push(k, v);
    }
    h
}

/// The pairs of [`request_list`], borrowed: what a plugin saw, to tell whether it changed it.
fn request_pairs<'a>(
    req: &'a RequestHeader,
    scheme: &'a str,
    authority: &'a str,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let pseudo: [(&[u8], &[u8]); 4] = [
        (b":method", req.method.as_str().as_bytes()),
        (
            b":path",
            req.uri
                .path_and_query()
                .map_or(b"/", |p| p.as_str().as_bytes()),
        ),
        (b":authority", authority.as_bytes()),
        (b":scheme", scheme.as_bytes()),
    ];
    pseudo.into_iter().chain(
        req.headers
            .iter()
            .filter(|(k, _)| *k != http::header::HOST)
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
    )
}

pub fn response_list(resp: &ResponseHeader) -> HeaderList {
    let mut h = HeaderList::new();
    for (k, v) in response_pairs(resp) {
        h.push(k, v);
    }
    h
}

fn response_pairs(resp: &ResponseHeader) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::once((&b":status"[..], resp.status.as_str().as_bytes())).chain(
        resp.headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
    )
}

/// Applies a plugin-edited request header list back to Pingora's header (its case map stays
/// right through `insert_header`/`append_header`/`remove_header`). `scheme` and `authority` are
/// what [`request_list`] was given. An untouched list costs one allocation-free comparison, so
/// the request path keeps no copy of what the plugins saw.
pub fn apply_request(req: &mut RequestHeader, scheme: &str, authority: &str, after: &HeaderList) {
    if after.iter().eq(request_pairs(req, scheme, authority)) {
        return;
    }
    if let Some(m) = after.get(":method")
        && m != req.method.as_str().as_bytes()
        && let Ok(m) = http::Method::from_bytes(m)
    {
        req.set_method(m);
    }
    if let Some(p) = after.get(":path")
        && Some(p) != req.uri.path_and_query().map(|p| p.as_str().as_bytes())
        && let Ok(uri) = http::Uri::try_from(p)
    {
        req.set_uri(uri);
    }
    if let Some(a) = after.get(":authority")
        && a != authority.as_bytes()
    {
        let _ = req.insert_header(http::header::HOST, a);
    }
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| **k != http::header::HOST)
        .cloned()
        .collect();
    for n in names {
        req.remove_header(&n);
    }
    for (k, v) in after.iter().filter(|(k, _)| !k.starts_with(b":")) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            if k == http::header::HOST {
                let _ = req.insert_header(k, v);
            } else {
                let _ = req.append_header(k, v);
            }
        }
    }
}

/// The response counterpart of [`apply_request`].
pub fn apply_response(resp: &mut ResponseHeader, after: &HeaderList) {
    if after.iter().eq(response_pairs(resp)) {
        return;
    }
    if let Some(s) = after.get(":status")
        && let Some(code) = std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
    {
        let _ = resp.set_status(code);
    }
    let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
    for n in names {
        resp.remove_header(&n);
    }
    for (k, v) in after.iter().filter(|(k, _)| !k.starts_with(b":")) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            let _ = resp.append_header(k, v);
        }
    }
}

/// The response header of a local reply, after the response-header callbacks of `streams`
/// (reverse order); returns it with the reply body after their body callbacks.
pub fn local_reply_response(streams: &mut [Stream], reply: LocalReply) -> (ResponseHeader, Bytes) {
    let mut list = HeaderList::new();
    list.push(":status", reply.status.to_string());
    for (k, v) in reply.headers.iter() {
        list.push(k, v);
    }
    if !reply.body.is_empty() && list.get("content-type").is_none() {
        list.push("content-type", "text/plain");
    }
    let mut body = Bytes::from(reply.body);
    for s in streams.iter_mut().rev() {
        let out = s.on_response_headers(&mut list, body.is_empty());
        if out.local_reply.is_some() {
            // A second local reply while sending one: Envoy ignores it too.
            break;
        }
    }
    if !body.is_empty() {
        for s in streams.iter_mut().rev() {
            let out = s.on_response_body(&mut body, true);
            if out.action == Action::Pause {
                body = s.take_buffered_response_body();
            }
        }
    }
    let status = list
        .get(":status")
        .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
        .unwrap_or(reply.status);
    let mut resp = ResponseHeader::build(status, Some(list.len() + 1)).expect("valid status");
    for (k, v) in list.iter().filter(|(k, _)| !k.starts_with(b":")) {
        if k.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            let _ = resp.append_header(k, v);
        }
    }
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len());
    (resp, body)
}

/// A deny-all reply: Istio's RBAC filter answer.
pub fn deny_all_reply() -> LocalReply {
    LocalReply {
        status: 403,
        details: "rbac_access_denied".into(),
        body: crate::limits::DENY_ALL_BODY.as_bytes().to_vec(),
        headers: HeaderList::new(),
        grpc_status: None,
    }
}

/// Runs one body chunk through `streams` (request: in order; response: reversed by the caller).
/// A plugin that pauses keeps the chunk (the runtime buffers it); at end of stream its buffered
/// data goes on. Returns the first local reply.
pub fn body_chunk<'a>(
    streams: impl Iterator<Item = &'a mut Stream>,
    body: &mut Option<Bytes>,
    eos: bool,
    request: bool,
) -> Option<LocalReply> {
    let mut data = body.take().unwrap_or_default();
    for s in streams {
        let out: Outcome = if request {
            s.on_request_body(&mut data, eos)
        } else {
            s.on_response_body(&mut data, eos)
        };
        if let Some(r) = out.local_reply {
            return Some(r);
        }
        if out.action == Action::Pause {
            if !eos {
                *body = None;
                return None;
            }
            data = if request {
                s.take_buffered_request_body()
            } else {
                s.take_buffered_response_body()
            };
        }
    }
    // An empty chunk is not forwarded: Pingora would try to write it to a finished body.
    *body = (!data.is_empty()).then_some(data);
    None
}
