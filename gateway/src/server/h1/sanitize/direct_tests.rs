//! [`direct_head`] against the general path it stands in for: for every request it takes, the
//! same request line, the same fields (each name's values in the same order), the same body
//! framing and the same refusals.

use super::*;
use crate::server::downstream::Downstream;
use crate::server::h1::session::Session;
use pingora_core::protocols::http::v1::common::is_expect_continue_req;
use pingora_error::ErrorSource;
use tokio::io::AsyncWriteExt;

/// A head as a comparable value: the request line, then the fields sorted by name (a stable
/// sort: each name's values stay in order), then the framing.
fn reading(head: &RequestHead) -> String {
    let text = String::from_utf8_lossy(&head.wire);
    let mut lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines.pop(), Some(""), "ends with CRLF CRLF: {text}");
    assert_eq!(lines.pop(), Some(""), "ends with CRLF CRLF: {text}");
    let line = lines.remove(0);
    lines.sort_by_key(|field| {
        field
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    });
    format!(
        "{line}\n{}\n{:?} {:?}",
        lines.join("\n"),
        head.writer,
        head.sent
    )
}

fn outcome(head: Result<RequestHead>) -> String {
    match head {
        Ok(head) => reading(&head),
        Err(e) => format!("refused: {:?} from {:?}", e.etype(), e.esource()),
    }
}

/// What a plugin might have done to the request before it goes upstream.
type Edit = fn(&mut RequestHeader);

const EDITS: &[(&str, Edit)] = &[
    ("none", |_| {}),
    ("adds a field", |r| {
        r.append_header("x-added", "1").unwrap();
    }),
    ("adds a second Host", |r| {
        r.append_header("host", "b.test").unwrap();
    }),
    ("puts userinfo in Host", |r| {
        r.insert_header("host", "u@a.test").unwrap()
    }),
    ("removes Content-Length", |r| {
        r.remove_header("content-length");
    }),
    ("nominates a field", |r| {
        r.append_header("connection", "x-a").unwrap();
    }),
    ("nominates Host", |r| {
        r.insert_header("connection", "host").unwrap()
    }),
    ("sets the path", |r| {
        r.set_uri(http::Uri::from_static("/new?x=1"))
    }),
];

#[tokio::test]
async fn writes_what_the_general_path_writes() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /p?q=1 HTTP/1.0\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\nx-a: 3\r\nX-C: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x\r\nProxy-Authorization: b\r\nProxy-Authenticate: c\r\nProxy-Connection: keep-alive\r\nHTTP2-Settings: x\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-A, x-b\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: \"x\"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i,j\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: :path\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nok",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"GET /caf%C3%A9/?q=%ff&r HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b\"c HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9 \xff\r\n\r\n",
        // The general path's: an authority in the target, a WebSocket handshake.
        b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test/x HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ];
    let (mut direct, mut general_only, mut refused) = (0, 0, 0);
    for raw in cases {
        for (edit_name, edit) in EDITS {
            let (ours, mut client) = tokio::io::duplex(1 << 16);
            client.write_all(raw).await.unwrap();
            let mut ds = Session::new(Box::new(ours));
            assert!(ds.read_request().await.unwrap(), "{}", raw.escape_ascii());
            edit(ds.req_header_mut());
            let has_body = !ds.is_body_empty();
            let req = ds.req_header();
            let drop_expect = has_body && is_expect_continue_req(req);
            let what = format!("{} (edit: {edit_name})", raw.escape_ascii());
            let expected = general_head(req, has_body, drop_expect, |_| Ok(()));
            // Unedited, `Host` is as the session checked it.
            let host_checked = *edit_name == "none";
            match direct_head(req, has_body, drop_expect, host_checked) {
                Ok(None) => {
                    general_only += 1;
                    assert!(
                        req.raw_path().starts_with(b"http://") || is_websocket_upgrade(req),
                        "{what}: left to the general path"
                    );
                }
                got => {
                    let got = got.map(|head| head.expect("taken"));
                    if got.is_err() {
                        refused += 1;
                    } else {
                        direct += 1;
                    }
                    assert_eq!(outcome(got), outcome(expected), "{what}");
                }
            }
        }
    }
    // Every kind of outcome was compared: written, refused, and left to the general path.
    assert!(
        direct >= 90 && refused >= 40 && general_only >= 20,
        "{direct} {refused} {general_only}"
    );
}

#[tokio::test]
async fn refuses_as_the_general_path_does_with_the_same_source() {
    let (ours, mut client) = tokio::io::duplex(1 << 16);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-for\r\n\r\n")
        .await
        .unwrap();
    let mut ds = Session::new(Box::new(ours));
    assert!(ds.read_request().await.unwrap());
    let e = direct_head(ds.req_header(), false, false, false).unwrap_err();
    assert_eq!(*e.esource(), ErrorSource::Downstream, "400, not 500");
    ds.req_header_mut()
        .insert_header("connection", "keep-alive")
        .unwrap();
    ds.req_header_mut().append_header("host", "b").unwrap();
    let e = direct_head(ds.req_header(), false, false, false).unwrap_err();
    assert_eq!(
        *e.esource(),
        ErrorSource::Internal,
        "a plugin's bad Host is 500"
    );
}
