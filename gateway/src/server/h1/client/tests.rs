use super::*;
use crate::server::errors::response_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A session on one end of an in-memory connection; the other end plays the upstream.
fn session() -> (Upstream, DuplexStream) {
    let (ours, origin) = tokio::io::duplex(1 << 20);
    (Upstream::new(Box::new(ours), None), origin)
}

fn request(method: &str, fields: &[(&str, &str)]) -> Box<RequestHeader> {
    let mut req = RequestHeader::build_no_case(method, b"/p?q", None).unwrap();
    for (name, value) in fields {
        req.append_header(name.to_string(), *value).unwrap();
    }
    Box::new(req)
}

/// Sends `req` (its body in `pieces`), then answers with `answer` and reads the response header.
async fn exchange(req: Box<RequestHeader>, pieces: &[&[u8]], answer: &[u8]) -> (Upstream, String) {
    let (mut us, mut origin) = session();
    us.write_request_header(req).await.unwrap();
    for piece in pieces {
        us.write_body(piece).await.unwrap();
    }
    us.finish_body().await.unwrap();
    let mut sent = vec![0; 64 * 1024];
    let n = origin.read(&mut sent).await.unwrap();
    origin.write_all(answer).await.unwrap();
    drop(origin);
    us.read_response().await.unwrap();
    (us, String::from_utf8(sent[..n].to_vec()).unwrap())
}

async fn body(us: &mut Upstream) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(piece) = us.read_body().await? {
        all.extend_from_slice(&piece);
    }
    assert!(us.is_body_done());
    Ok(all)
}

#[tokio::test]
async fn the_request_goes_up_framed_by_its_own_fields() {
    let req = request(
        "POST",
        &[("host", "up"), ("content-length", "5"), ("x-a", "1")],
    );
    let (_, sent) = exchange(
        req,
        &[b"hel", b"lo, and more"],
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    assert_eq!(
        sent,
        "POST /p?q HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\nx-a: 1\r\n\r\nhello"
    );

    let req = request("POST", &[("transfer-encoding", "chunked")]);
    let (_, sent) = exchange(
        req,
        &[b"abc", b"", b"0123456789"],
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    assert_eq!(
        sent,
        "POST /p?q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn a_request_body_short_of_its_content_length_is_an_error() {
    let (mut us, _origin) = session();
    us.write_request_header(request("PUT", &[("content-length", "10")]))
        .await
        .unwrap();
    us.write_body(b"short").await.unwrap();
    let e = us.finish_body().await.unwrap_err();
    assert_eq!(*e.etype(), super::super::body::PREMATURE_BODY_END);
    assert_eq!(response_for(&e).0, 502);
}

#[test]
fn only_http1_versions_are_sent() {
    let mut req = RequestHeader::build_no_case("GET", b"/", None).unwrap();
    req.set_version(Version::HTTP_10);
    assert!(
        request_head(&req)
            .unwrap()
            .starts_with(b"GET / HTTP/1.0\r\n")
    );
    req.set_version(Version::HTTP_2);
    assert_eq!(*request_head(&req).unwrap_err().etype(), InvalidHTTPHeader);
}

#[tokio::test]
async fn a_response_is_parsed_with_its_fields_and_the_standard_reason() {
    let (mut us, _) = exchange(
        request("GET", &[]),
        &[],
        b"HTTP/1.1 404 Gone Fishing\r\nServer: origin\r\nX-Multi: a\r\nX-Multi: b\r\n\
          X-Folded: one\r\n two\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    let resp = us.take_resp_header().unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.version, Version::HTTP_11);
    assert_eq!(resp.headers["server"], "origin");
    let multi: Vec<_> = resp.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(resp.headers["x-folded"], "one two");
    assert!(!resp.has_case());
    assert_eq!(resp.get_reason_phrase(), Some("Not Found"));
    assert_eq!(body(&mut us).await.unwrap(), b"abc");
    assert!(us.into_reusable().is_some());
}

#[tokio::test]
async fn transfer_encoding_overrides_content_length() {
    let (mut us, _) = exchange(
        request("GET", &[]),
        &[],
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        !us.resp_header()
            .unwrap()
            .headers
            .contains_key("content-length")
    );
    assert_eq!(body(&mut us).await.unwrap(), b"abc");
    assert!(us.into_reusable().is_some());
}

#[tokio::test]
async fn bad_response_headers_answer_502() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ] {
        let (mut us, mut origin) = session();
        us.write_request_header(request("GET", &[])).await.unwrap();
        us.finish_body().await.unwrap();
        origin.write_all(answer).await.unwrap();
        let e = us.read_response().await.unwrap_err();
        assert_eq!(*e.etype(), InvalidHTTPHeader, "{}", answer.escape_ascii());
        assert_eq!(response_for(&e).0, 502);
    }
}

#[tokio::test]
async fn informational_responses_come_before_the_final_one() {
    let (mut us, _) = exchange(
        request("GET", &[]),
        &[],
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_eq!(us.resp_header().unwrap().status, 100);
    assert!(!us.is_body_done());
    us.read_response().await.unwrap();
    assert_eq!(us.resp_header().unwrap().status, 103);
    us.read_response().await.unwrap();
    assert_eq!(us.resp_header().unwrap().status, 200);
    assert_eq!(body(&mut us).await.unwrap(), b"ok");
}

#[tokio::test]
async fn bodiless_responses_end_at_their_header() {
    for (method, answer) in [
        (
            "HEAD",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..],
        ),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            "GET",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        ),
    ] {
        let (mut us, _) = exchange(request(method, &[]), &[], answer).await;
        assert!(us.is_body_done());
        assert_eq!(body(&mut us).await.unwrap(), b"");
        assert!(us.into_reusable().is_some(), "{}", answer.escape_ascii());
    }
}

#[tokio::test]
async fn only_a_response_read_to_its_framed_end_with_nothing_after_keeps_the_connection() {
    type Fields = &'static [(&'static str, &'static str)];
    let cases: &[(Fields, &[u8], bool)] = &[
        (&[], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
        // Read until the upstream closes.
        (&[], b"HTTP/1.1 200 OK\r\n\r\nok", false),
        // Bytes nobody asked for.
        (&[], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false),
        (&[], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", false),
        (&[("connection", "close")], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        (&[], b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        (&[], b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", true),
        (&[], b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
    ];
    for (fields, answer, reusable) in cases {
        let (mut us, _) = exchange(request("GET", fields), &[], answer).await;
        assert_eq!(
            body(&mut us).await.unwrap(),
            b"ok",
            "{}",
            answer.escape_ascii()
        );
        assert_eq!(
            us.into_reusable().is_some(),
            *reusable,
            "{fields:?} {}",
            answer.escape_ascii()
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_upstream_error() {
    let (mut us, _) = exchange(
        request("GET", &[]),
        &[],
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    )
    .await;
    assert_eq!(&us.read_body().await.unwrap().unwrap()[..], b"short");
    let e = us.read_body().await.unwrap_err();
    assert_eq!(*e.etype(), ConnectionClosed);
    assert_eq!(response_for(&e).0, 502);
}

#[tokio::test]
async fn a_connection_closed_before_the_response_can_be_retried_if_it_was_reused() {
    let (mut us, origin) = session();
    us.write_request_header(request("GET", &[])).await.unwrap();
    us.finish_body().await.unwrap();
    drop(origin);
    let e = us.read_response().await.unwrap_err();
    assert_eq!(*e.etype(), ConnectionClosed);
    assert!(matches!(e.retry, RetryType::ReusedOnly));
}

#[tokio::test]
async fn each_wait_is_bounded_by_the_timeout() {
    let (ours, _origin) = tokio::io::duplex(1024);
    let mut us = Upstream::new(Box::new(ours), Some(Duration::from_millis(20)));
    us.write_request_header(request("GET", &[])).await.unwrap();
    us.finish_body().await.unwrap();
    let e = us.read_response().await.unwrap_err();
    assert_eq!(*e.etype(), ReadTimedout);
    assert_eq!(response_for(&e).0, 504);

    // A write the upstream does not take: it times out too.
    let (ours, _origin) = tokio::io::duplex(1024);
    let mut us = Upstream::new(Box::new(ours), Some(Duration::from_millis(20)));
    us.write_request_header(request("POST", &[("content-length", "100000")]))
        .await
        .unwrap();
    let e = us.write_body(&[b'a'; 100_000]).await.unwrap_err();
    assert_eq!(*e.etype(), WriteTimedout);
}

#[tokio::test]
async fn a_response_header_past_the_limit_is_refused() {
    let (mut us, mut origin) = session();
    us.write_request_header(request("GET", &[])).await.unwrap();
    us.finish_body().await.unwrap();
    let writer = tokio::spawn(async move {
        let _ = origin.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = format!("x-filler: {}\r\n", "a".repeat(1000));
        while origin.write_all(line.as_bytes()).await.is_ok() {}
    });
    let e = us.read_response().await.unwrap_err();
    assert_eq!(*e.etype(), InvalidHTTPHeader);
    drop(us);
    writer.await.unwrap();
}

#[tokio::test]
async fn an_upgraded_connection_carries_bytes_both_ways_until_the_downstream_ends() {
    let req = request(
        "GET",
        &[("upgrade", "websocket"), ("connection", "upgrade")],
    );
    let mut req = req;
    req.set_version(Version::HTTP_11);
    let (mut us, mut origin) = session();
    us.write_request_header(req).await.unwrap();
    us.finish_body().await.unwrap();
    let mut sent = vec![0; 4096];
    let _ = origin.read(&mut sent).await.unwrap();
    origin
        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nfrom-up")
        .await
        .unwrap();
    us.read_response().await.unwrap();
    assert!(us.is_upgrade_req());
    assert_eq!(&us.read_body().await.unwrap().unwrap()[..], b"from-up");
    us.start_upgraded_body();
    us.write_body(b"from-down").await.unwrap();
    let n = origin.read(&mut sent).await.unwrap();
    assert_eq!(&sent[..n], b"from-down");
    us.finish_body().await.unwrap();
    assert!(
        us.is_body_done(),
        "the downstream's end ends the upstream's side"
    );
    assert!(us.into_reusable().is_none());
}
