//! The demo's in-process upstream: answers like Bookinfo's productpage service.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const PRODUCTPAGE: &str = r#"<!DOCTYPE html>
<html>
<head><title>Simple Bookstore App</title><link rel="stylesheet" href="/static/bootstrap/css/bootstrap.min.css"></head>
<body>
<h3>The Comedy of Errors</h3>
<p>Summary: Wikipedia Summary: The Comedy of Errors is one of William Shakespeare's early plays.</p>
<h4>Book Details</h4><dl><dt>Type:</dt><dd>paperback</dd><dt>Pages:</dt><dd>200</dd><dt>Publisher:</dt><dd>PublisherA</dd></dl>
<h4>Book Reviews</h4><blockquote>An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!</blockquote>
<p><small>served by wasmgate demo upstream (productpage)</small></p>
</body>
</html>
"#;

const PRODUCTS: &str = r#"[{"id": 0, "title": "The Comedy of Errors", "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays."}]
"#;

/// Binds 127.0.0.1 on a free port and serves until the process exits. Returns the address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(answer(req.method(), req.uri().path()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(method: &http::Method, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body): (StatusCode, &str, Bytes) = match path {
        "/productpage" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(PRODUCTPAGE.as_bytes()),
        ),
        "/api/v1/products" => (
            StatusCode::OK,
            "application/json",
            Bytes::from_static(PRODUCTS.as_bytes()),
        ),
        p if p.starts_with("/static/") => (
            StatusCode::OK,
            "text/css",
            Bytes::from_static(b"/* demo static asset */\n"),
        ),
        "/login" if method == http::Method::POST => {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, "/productpage")
                .header(header::SET_COOKIE, "session=demo; Path=/")
                .body(Full::new(Bytes::new()))
                .unwrap_or_default();
        }
        "/login" | "/logout" => {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, "/productpage")
                .body(Full::new(Bytes::new()))
                .unwrap_or_default();
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(body))
        .unwrap_or_default()
}
