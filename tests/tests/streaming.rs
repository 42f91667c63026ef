//! Responses stream: downstream writes are buffered so a small response leaves in one `send`
//! (server/coalesce.rs), but a chunk of a streamed body must reach the client while the upstream
//! is still holding the rest.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use wasmgate_e2e::*;

/// How long the client waits for the first chunk; the upstream holds the rest until then.
const FIRST_CHUNK_WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_reaches_the_client_while_the_upstream_holds_the_rest() {
    // An upstream that sends its header and one chunk, then waits for the test to say the client
    // saw that chunk before it ends the body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = oneshot::channel::<()>();
    let upstream = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "gateway closed before sending the request");
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n\
              6\r\nfirst\n\r\n",
        )
        .await
        .unwrap();
        // Held until the client has the first chunk (or the test gave up and dropped the sender).
        let _ = seen_rx.await;
        conn.write_all(b"5\r\nrest\n\r\n0\r\n\r\n").await.unwrap();
        conn.flush().await.unwrap();
    });

    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("svc.yaml", &service_yaml("events", 80, &[upstream_addr]));
    dir.write(
        "route.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: events, port: 80}]
"#,
    );
    let _gw = Gateway::start(&dir).await;

    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nhost: example.com\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let first = tokio::time::timeout(FIRST_CHUNK_WAIT, async {
        let mut buf = [0u8; 4096];
        while !received.windows(6).any(|w| w == b"first\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "the first chunk did not reach the client while the upstream held the rest; got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(received.starts_with(b"HTTP/1.1 200"));
    seen_tx.send(()).unwrap();

    // The rest follows, and the body ends properly.
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !received.ends_with(b"0\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the last chunk");
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the rest of the body");
    assert!(received.windows(5).any(|w| w == b"rest\n"));
    upstream.await.unwrap();
}
