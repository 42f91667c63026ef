//! Response fields passed through beside the header's map ([`PassedFields`]) against the
//! general path, where every field goes into the map: for every response, the client receives
//! the same status line, the same fields (each name's values in the same order), the same body,
//! and the connection is kept or not the same way.

use pingora_error::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{RequestHead, Upstream};
use super::exchange::read_final_response;
use super::sanitize;
use super::session::Session;
use crate::server::downstream::Downstream;

/// What the client receives when the gateway relays `response` to `request` (as the exchange
/// does, without filters or plugins), and whether fields passed beside the map.
async fn relay(request: &[u8], response: &[u8], pass: bool) -> Result<(String, bool)> {
    let (ours, mut client) = tokio::io::duplex(1 << 16);
    client.write_all(request).await.unwrap();
    let mut ds = Session::new(Box::new(ours));
    assert!(ds.read_request().await?);

    let (theirs, mut origin) = tokio::io::duplex(1 << 16);
    let mut us = Upstream::new(Box::new(theirs), None);
    us.write_head(RequestHead::of(ds.req_header())?).await?;
    if pass {
        us.pass_fields_through();
    }
    us.finish_body().await?;
    origin.write_all(response).await.unwrap();
    drop(origin);
    read_final_response(&mut us).await?;
    let mut resp = Box::new(us.take_resp_header().unwrap());
    let passed = us.take_passed_fields();
    sanitize::downstream_response(&mut resp, us.is_body_done(), ds.req_header(), false)?;
    ds.write_response_header_passing(resp, passed.as_ref())
        .await?;
    while !us.is_body_done() {
        match us.read_body().await? {
            Some(data) => ds.write_response_body(data, false).await?,
            None => break,
        }
    }
    ds.finish_body().await?;
    let reuse = ds.finish().await?;
    drop(ds);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    Ok((
        format!("{}\nreuse: {reuse}", reading(&got)),
        passed.is_some(),
    ))
}

/// The status line, the fields by lower-case name (a stable sort keeps each name's values in
/// order; `Date`'s value left out), then the body.
fn reading(wire: &[u8]) -> String {
    let wire = String::from_utf8_lossy(wire);
    let (head, body) = wire.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut fields: Vec<(String, &str)> = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").unwrap_or((line, ""));
            let name = name.to_ascii_lowercase();
            let value = if name == "date" { "*" } else { value };
            (name, value)
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let fields: Vec<String> = fields.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    format!("{status}\n{}\n\n{body}", fields.join("\n"))
}

#[tokio::test]
async fn relays_what_the_general_path_relays() {
    let requests: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ];
    let responses: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
        b"HTTP/1.1 200 OK\r\nX-Foo: a\r\nX-Bar: c\r\nx-foo: b\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
        b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nX-A: 1\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 2\r\nCONNECTION: close\r\nX-A: 1\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"e\"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nX-Info: 1\r\n\r\nHTTP/1.1 404 Not Found\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Tab: a\tb \r\nX-Obs: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Lf: a\nb\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    ];
    let (mut passed, mut refused) = (0, 0);
    for request in requests {
        for response in responses {
            let what = format!("{} to {}", response.escape_ascii(), request.escape_ascii());
            let general = relay(request, response, false).await;
            let through = relay(request, response, true).await;
            match (general, through) {
                (Ok((general, false)), Ok((through, did_pass))) => {
                    passed += usize::from(did_pass);
                    assert_eq!(through, general, "{what}");
                }
                (Err(general), Err(through)) => {
                    refused += 1;
                    assert_eq!(through.etype(), general.etype(), "{what}");
                }
                (general, through) => panic!("{what}: {general:?} against {through:?}"),
            }
        }
    }
    // Both were compared: relayed with fields passing through, and refused.
    assert!(passed >= 48 && refused >= 4, "{passed} {refused}");
}
