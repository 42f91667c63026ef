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
    /// The response-header callbacks ran (or are running) for a response: a reply the gateway
    /// makes from then on goes out without them (Envoy's `sendDirectLocalReply`).
    pub response_started: bool,
}

impl ChainRun {
    pub fn new(chain: Chain) -> Self {
        let n = chain.len();
        Self {
            chain,
            streams: Vec::with_capacity(n),
            replace_body: None,
            no_request_body: false,
            response_started: false,
        }
    }
}

/// The request headers as proxy-wasm sees them, pseudo-headers first.
pub fn request_list(req: &RequestHeader, scheme: &str, authority: &str) -> HeaderList {
    sized_list(req.headers.len() + 4, request_pairs(req, scheme, authority))
}

/// Name and value bytes per header a list is first given room for: most request and response
/// headers are shorter.
const HEADER_BYTES_GUESS: usize = 48;

/// A header list of the `n` (or fewer) `pairs`, with room for a few added headers. Allocated
/// once at a guessed size, not measured first: a second walk over the header map cost more
/// than the rare regrowth of the buffer. Names are lower case (pseudo-headers and
/// `http::HeaderName`s), so they are not lowered again.
fn sized_list<'a>(n: usize, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> HeaderList {
    let mut h = HeaderList::with_capacity(n + 4, n * HEADER_BYTES_GUESS + 128);
    h.extend_lowercase(pairs);
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
    sized_list(resp.headers.len() + 1, response_pairs(resp))
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
    sync_headers(req, after);
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
    sync_headers(resp, after);
}

/// The headers of a Pingora request or response that a plugin's header list maps onto.
trait PluginVisible {
    /// In the order the plugin saw them (`Host` is `:authority` for requests, so not here).
    fn visible(&self) -> impl Iterator<Item = (&http::HeaderName, &http::HeaderValue)>;
    fn remove(&mut self, name: &http::HeaderName);
    /// Adds a header a plugin added; `name` is lower case, as header lists keep names.
    fn append(&mut self, name: &[u8], value: http::HeaderValue);
}

/// pingora-http's `append_header` parses the name it is given and, for a header that keeps a
/// map of header-name case, records the name there too, standard names capitalized: that takes
/// an `http::HeaderName`. A header without the map (what the HTTP/1 engine makes) takes the
/// name's bytes, which spares parsing the name twice and copying it once more per added header;
/// the wire is the same, since pingora capitalizes standard names itself when it has no map.
macro_rules! append_plugin_header {
    ($header:expr, $name:expr, $value:expr) => {{
        let _ = if $header.has_case() {
            match http::HeaderName::from_bytes($name) {
                Ok(name) => $header.append_header(name, $value),
                Err(_) => return,
            }
        } else {
            $header.append_header(Bytes::copy_from_slice($name), $value)
        };
    }};
}

impl PluginVisible for RequestHeader {
    fn visible(&self) -> impl Iterator<Item = (&http::HeaderName, &http::HeaderValue)> {
        self.headers
            .iter()
            .filter(|(k, _)| *k != http::header::HOST)
    }
    fn remove(&mut self, name: &http::HeaderName) {
        self.remove_header(name);
    }
    fn append(&mut self, name: &[u8], value: http::HeaderValue) {
        if name == http::header::HOST.as_str().as_bytes() {
            let _ = self.insert_header(http::header::HOST, value);
            return;
        }
        append_plugin_header!(self, name, value);
    }
}

impl PluginVisible for ResponseHeader {
    fn visible(&self) -> impl Iterator<Item = (&http::HeaderName, &http::HeaderValue)> {
        self.headers.iter()
    }
    fn remove(&mut self, name: &http::HeaderName) {
        self.remove_header(name);
    }
    fn append(&mut self, name: &[u8], value: http::HeaderValue) {
        append_plugin_header!(self, name, value);
    }
}

/// Makes `h` carry the non-pseudo headers of `after`, editing as little as possible. What a
/// plugin usually does, adding headers at the end, only appends them; otherwise the headers from
/// the first difference on are rewritten (all of them when a name there also occurs before it,
/// since removing a name removes every value of it). The result is what rewriting every header
/// would give: Pingora's map keeps the values of a name together, in order.
fn sync_headers(h: &mut impl PluginVisible, after: &HeaderList) {
    // Walked as iterators, not collected: what plugins usually do (append) then allocates
    // nothing here but the headers themselves.
    let wanted = || after.iter().filter(|(k, _)| !k.starts_with(b":"));
    let mut keep = h
        .visible()
        .zip(wanted())
        .take_while(|((k, v), (wk, wv))| k.as_str().as_bytes() == *wk && v.as_bytes() == *wv)
        .count();
    if h.visible()
        .skip(keep)
        .any(|(n, _)| h.visible().take(keep).any(|(m, _)| m == n))
    {
        keep = 0;
    }
    let mut stale: Vec<http::HeaderName> = Vec::new();
    for (n, _) in h.visible().skip(keep) {
        if !stale.contains(n) {
            stale.push(n.clone());
        }
    }
    for n in &stale {
        h.remove(n);
    }
    for (k, v) in wanted().skip(keep) {
        if let Ok(v) = http::HeaderValue::from_bytes(v) {
            h.append(k, v);
        }
    }
}

/// A plugin's local reply as a response header and body, before any response callback (the
/// handler runs those: `send_reply`).
pub fn local_reply_response(reply: LocalReply) -> (ResponseHeader, Bytes) {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 2))
        .expect("the runtime checks the status");
    for (k, v) in reply.headers.iter() {
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
    if !reply.body.is_empty() && !resp.headers.contains_key(http::header::CONTENT_TYPE) {
        let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/plain");
    }
    (resp, Bytes::from(reply.body))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/p?q=1", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn pairs(req: &RequestHeader) -> Vec<(String, String)> {
        req.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    /// Applies `edit` to the list a plugin would see and checks the result against rewriting
    /// every header, the straightforward way.
    fn check(headers: &[(&str, &str)], edit: impl FnOnce(&mut HeaderList)) {
        let mut req = request(headers);
        let mut list = request_list(&req, "http", "example.com");
        edit(&mut list);
        apply_request(&mut req, "http", "example.com", &list);

        let mut expected = request(&[]);
        for (k, v) in list.iter().filter(|(k, _)| !k.starts_with(b":")) {
            expected
                .append_header(String::from_utf8(k.to_vec()).unwrap(), v)
                .unwrap();
        }
        assert_eq!(pairs(&req), pairs(&expected));
    }

    const BASE: &[(&str, &str)] = &[("a", "1"), ("b", "2"), ("c", "3")];

    #[test]
    fn an_untouched_list_changes_nothing() {
        check(BASE, |_| {});
    }

    #[test]
    fn headers_added_at_the_end_are_appended() {
        check(BASE, |l| {
            l.push("x-new", "1");
            l.push("x-new", "2");
        });
    }

    #[test]
    fn a_replaced_or_removed_header_in_the_middle_rewrites_the_rest() {
        check(BASE, |l| l.replace("b", "changed"));
        check(BASE, |l| l.remove("b"));
        check(BASE, |l| l.remove("c"));
    }

    #[test]
    fn a_name_that_repeats_before_the_difference_is_rewritten_whole() {
        let headers = &[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")];
        check(headers, |l| l.remove("c"));
        check(headers, |l| l.replace("c", "x"));
        check(headers, |l| l.push("a", "5"));
    }

    #[test]
    fn pseudo_headers_set_method_path_and_host() {
        let mut req = request(BASE);
        let mut list = request_list(&req, "http", "example.com");
        list.replace(":method", "POST");
        list.replace(":path", "/other");
        list.replace(":authority", "api.example.com");
        apply_request(&mut req, "http", "example.com", &list);
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.uri.path(), "/other");
        assert_eq!(req.headers["host"], "api.example.com");
        assert_eq!(pairs(&request(BASE))[..], pairs(&req)[..3]);
    }

    /// Headers added to a request or response without pingora's case map go in by their bytes:
    /// the result, and what goes on the wire, must be what adding them by `HeaderName` gives.
    #[test]
    fn added_headers_are_the_same_with_or_without_a_case_map() {
        let wire = |with_case: bool| {
            let mut resp = if with_case {
                ResponseHeader::build(200, None).unwrap()
            } else {
                ResponseHeader::build_no_case(200, None).unwrap()
            };
            resp.append_header(http::header::SERVER, "up").unwrap();
            let mut list = response_list(&resp);
            list.push("content-type", "text/plain");
            list.push("x-powered-by", "wasm");
            list.push("x-bad name", "dropped");
            list.push("x-powered-by", "more");
            apply_response(&mut resp, &list);
            let mut buf = Vec::new();
            resp.header_to_h1_wire(&mut buf);
            (pairs_of(&resp.headers), String::from_utf8(buf).unwrap())
        };
        let (with_case, without_case) = (wire(true), wire(false));
        assert_eq!(
            with_case.0,
            [
                ("server", "up"),
                ("content-type", "text/plain"),
                ("x-powered-by", "wasm"),
                ("x-powered-by", "more")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(with_case, without_case);

        let mut req = RequestHeader::build_no_case("GET", b"/", None).unwrap();
        let mut list = request_list(&req, "http", "example.com");
        list.push("x-added", "1");
        list.push("host", "other.example");
        apply_request(&mut req, "http", "example.com", &list);
        assert_eq!(req.headers["host"], "other.example");
        assert_eq!(req.headers["x-added"], "1");
    }

    fn pairs_of(headers: &http::HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn response_headers_follow_the_same_rules() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("server", "up").unwrap();
        resp.append_header("content-type", "text/plain").unwrap();
        let mut list = response_list(&resp);
        list.push("x-powered-by", "wasm");
        list.replace(":status", "201");
        apply_response(&mut resp, &list);
        assert_eq!(resp.status.as_u16(), 201);
        let got: Vec<_> = resp.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, ["server", "content-type", "x-powered-by"]);
    }
}
