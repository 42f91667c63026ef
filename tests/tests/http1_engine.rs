//! The gateway's own HTTP/1 engine (`server/h1/`), on the wire: WebSocket tunnels, what is and is
//! not forwarded, the upstream keep-alive pool and its failure cases, `Expect: 100-continue`,
//! chunked bodies, HTTP/1.0, HEAD, and requests it must refuse. A few run on
//! `--http1-engine pingora` too, so that path stays tested.
//!
//! Clients and most upstreams are raw TCP (`wasmgate_e2e::raw`), so the tests see the exact
//! messages each side sends and receives.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wasmgate_e2e::raw::{Conn, RawUpstream, Reply, Seen, ok};
use wasmgate_e2e::*;

const NATIVE: &[&str] = &[];
const PINGORA: &[&str] = &["--http1-engine", "pingora"];

/// A gateway with one listener and one route to `upstream`.
struct Setup {
    gw: Gateway,
    port: u16,
    // Dropped after the gateway.
    _dir: ConfigDir,
}

const ROUTE_ALL: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: up, port: 80}]\n";

impl Setup {
    /// A route without hostnames or matches: every request goes to `upstream`.
    async fn new(upstream: SocketAddr, args: &[&str]) -> Self {
        Self::with_route(ROUTE_ALL, upstream, args).await
    }

    /// `route` (an HTTPRoute on Gateway `gw`) to `upstream`, the Service `up` port 80.
    async fn with_route(route: &str, upstream: SocketAddr, args: &[&str]) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = ConfigDir::new();
            dir.write("gateway.yaml", &gateway_yaml("gw", port));
            dir.write("svc.yaml", &service_yaml("up", 80, &[upstream]));
            dir.write("route.yaml", route);
            let gw = Gateway::start_with(&dir, args).await;
            let dump = gw.config_dump().await;
            let serving = dump["listeners"].as_array().is_some_and(|ports| {
                ports
                    .iter()
                    .any(|p| p["port"] == port && p["state"] == "serving")
            });
            if serving {
                return Self {
                    gw,
                    port,
                    _dir: dir,
                };
            }
            // Something else took the free port before the gateway bound it (another test
            // process): a client would reach that instead. Try another port.
        }
        panic!("the gateway could not bind a free port in 5 attempts");
    }

    async fn connect(&self) -> Conn {
        Conn::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the gateway")
    }
}

/// `e`, from reading or writing on a client connection, says the gateway ended the connection
/// (closed or reset it), not that it left the client waiting.
fn assert_ended(e: &anyhow::Error) {
    let ended = e.chain().any(|cause| {
        cause.to_string().contains("closed")
            || cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                )
            })
    });
    assert!(ended, "the connection did not end: {e:#}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An upstream answering every request with `METHOD TARGET BODY`.
async fn describing_upstream() -> RawUpstream {
    RawUpstream::start(|req| {
        let mut body = format!("{} {} ", req.head.method(), req.head.target()).into_bytes();
        body.extend_from_slice(&req.body);
        Reply::Send(ok(&body))
    })
    .await
}

// === WebSocket ===

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const WS_FIRST: &[u8] = b"upstream speaks first";

fn ws_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn ws_101(extra: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(extra);
    r
}

async fn websocket_round_trips(engine: &[&str]) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (head_tx, head_rx) = oneshot::channel();
    // The upstream accepts one connection, answers 101 with its first message in the same write,
    // echoes whatever comes, and returns once the gateway closes the connection.
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut c = Conn::new(tcp);
        let head = c.read_head().await?.context("no request")?;
        let _ = head_tx.send(head);
        c.send(&ws_101(WS_FIRST)).await?;
        loop {
            let data = c.read_some().await?;
            if data.is_empty() {
                return anyhow::Ok(());
            }
            c.send(&data).await?;
        }
    });

    let s = Setup::new(upstream_addr, engine).await;
    let mut c = s.connect().await;
    c.send(ws_request("/ws").as_bytes()).await.unwrap();
    let resp = c.read_head().await.unwrap().expect("a response");
    assert_eq!(resp.status(), 101, "{resp:?}");
    assert!(resp.has_token("upgrade", "websocket"), "{resp:?}");
    assert!(resp.has_token("connection", "upgrade"), "{resp:?}");
    assert_eq!(
        resp.get("sec-websocket-accept"),
        Some(WS_ACCEPT),
        "{resp:?}"
    );

    let forwarded = head_rx.await.expect("the upstream read the request");
    assert!(
        forwarded.has_token("connection", "upgrade"),
        "{forwarded:?}"
    );
    assert!(forwarded.has_token("upgrade", "websocket"), "{forwarded:?}");
    assert_eq!(forwarded.get("sec-websocket-key"), Some(WS_KEY));
    assert_eq!(forwarded.get("sec-websocket-version"), Some("13"));

    // What the upstream sent with its 101 arrives first.
    assert_eq!(c.read_exact(WS_FIRST.len()).await.unwrap(), WS_FIRST);
    for i in 0..5 {
        let message = format!("message {i} from the client");
        c.send(message.as_bytes()).await.unwrap();
        let echoed = c.read_exact(message.len()).await.unwrap();
        assert_eq!(text(&echoed), message);
    }
    // Larger than any one buffer on the way.
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    c.send(&big).await.unwrap();
    assert!(c.read_exact(big.len()).await.unwrap() == big);

    // The client leaves: the upstream sees the end of its connection.
    drop(c);
    tokio::time::timeout(PATIENCE, upstream)
        .await
        .expect("the upstream saw no EOF after the client closed")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    websocket_round_trips(NATIVE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes_both_ways_on_the_pingora_engine() {
    websocket_round_trips(PINGORA).await;
}

async fn upstream_closing_a_websocket(engine: &[&str]) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut c = Conn::new(tcp);
        c.read_head().await?.context("no request")?;
        c.send(&ws_101(b"bye")).await?;
        // Closes its end.
        anyhow::Ok(())
    });

    let s = Setup::new(upstream_addr, engine).await;
    let mut c = s.connect().await;
    c.send(ws_request("/ws").as_bytes()).await.unwrap();
    let resp = c.read_head().await.unwrap().expect("a response");
    assert_eq!(resp.status(), 101, "{resp:?}");
    assert_eq!(c.read_exact(3).await.unwrap(), b"bye");
    upstream.await.unwrap().unwrap();
    // The client must learn that the other end has gone, without sending anything.
    c.expect_eof()
        .await
        .expect("the gateway kept the client's side of a tunnel the upstream closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_a_websocket_closes_the_client_connection() {
    upstream_closing_a_websocket(NATIVE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_a_websocket_closes_the_client_connection_on_the_pingora_engine() {
    upstream_closing_a_websocket(PINGORA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_other_than_websocket_is_not_forwarded() {
    let up = RawUpstream::start(|req| {
        if req.head.target() == "/sneaky" {
            // A 101 to a request the gateway did not send as an upgrade.
            Reply::Send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Send(ok(b"plain answer"))
        }
    })
    .await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
        )
    };
    let resp = c.expect(upgrade("/foo").as_bytes(), 200).await;
    assert_eq!(text(&resp.body), "plain answer");
    assert!(!resp.head.has("upgrade"), "{resp:?}");

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let forwarded = &seen[0].head;
    assert!(!forwarded.has("upgrade"), "{forwarded:?}");
    assert!(
        !forwarded.has_token("connection", "upgrade"),
        "{forwarded:?}"
    );

    // Nothing was switched: the connection carries the next request as HTTP.
    c.expect(b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;

    // An upstream switching protocols on a request that was not an upgrade is refused.
    c.expect(upgrade("/sneaky").as_bytes(), 502).await;
}

// === What is forwarded ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_connection_nominated_fields_are_not_forwarded() {
    let up = Upstream::start("echo").await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let resp = c
        .expect(
            b"GET /hop HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Foo\r\n\
              X-Foo: nominated\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
              Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
              X-End-To-End: kept\r\nAuthorization: Bearer token\r\nCookie: a=b\r\n\
              Accept: text/plain\r\n\r\n",
            200,
        )
        .await;
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let headers = &echo["headers"];
    for gone in [
        "x-foo",
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert!(headers.get(gone).is_none(), "{gone} forwarded: {headers}");
    }
    // The gateway may speak its own keep-alive to the upstream, but never the client's list.
    let connection = headers["connection"].as_str().unwrap_or_default();
    assert!(
        !connection.to_ascii_lowercase().contains("x-foo"),
        "{headers}"
    );
    for (name, value) in [
        ("host", "example.com"),
        ("x-end-to-end", "kept"),
        ("authorization", "Bearer token"),
        ("cookie", "a=b"),
        ("accept", "text/plain"),
    ] {
        assert_eq!(headers[name], value, "{name}: {headers}");
    }

    // Nominating a field the gateway must keep is a bad request.
    let mut c = s.connect().await;
    c.expect(
        b"GET /hop HTTP/1.1\r\nHost: example.com\r\nConnection: X-Forwarded-For\r\n\
              X-Forwarded-For: 192.0.2.1\r\n\r\n",
        400,
    )
    .await;
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_names_are_normalized_response_names_pass_and_reason_phrases_are_standard() {
    let up = RawUpstream::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 Fine Thanks\r\nX-Upstream-Case: w\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    })
    .await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let resp = c
        .expect(
            b"GET /case HTTP/1.1\r\nHost: example.com\r\nX-Client-Case: v\r\n\r\n",
            200,
        )
        .await;
    let seen = up.seen();
    let sent = &seen[0].head.fields;
    assert!(
        sent.contains(&("x-client-case".into(), "v".into())),
        "{sent:?}"
    );
    // Well-known names are written in their usual capitals by pingora-core, as before.
    assert!(
        sent.contains(&("Host".into(), "example.com".into())),
        "{sent:?}"
    );
    // No filter or plugin handles this response: its fields pass through as the upstream spelt
    // them (a response a plugin sees is written from the header map, names normalized).
    let got = &resp.head.fields;
    assert!(
        got.contains(&("X-Upstream-Case".into(), "w".into())),
        "{got:?}"
    );
    assert_eq!(resp.head.line, "HTTP/1.1 200 OK");
    assert_eq!(resp.body, b"ok");
}

// === Keep-alive and the upstream pool ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_client_connection_reuse_one_upstream_connection() {
    let up = Upstream::start("pooled").await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    for i in 0..20 {
        let resp = c
            .expect(
                format!("GET /n/{i} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes(),
                200,
            )
            .await;
        let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(echo["path"], format!("/n/{i}"));
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_client_connections_reuse_the_pooled_upstream_connection() {
    let up = Upstream::start("pooled").await;
    // One worker, so every client connection lands on the pool the last one filled.
    let s = Setup::new(up.addr, &["--threads", "1"]).await;
    for i in 0..10 {
        let mut c = s.connect().await;
        // Half of the clients ask to close, half just leave after their answer.
        let close = if i % 2 == 0 {
            "Connection: close\r\n"
        } else {
            ""
        };
        c.expect(
            format!("GET /c/{i} HTTP/1.1\r\nHost: example.com\r\n{close}\r\n").as_bytes(),
            200,
        )
        .await;
    }
    assert_eq!(up.hits(), 10);
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_its_idle_connection_is_not_an_error() {
    // Each connection carries one answer, kept alive, then the upstream closes it 100 ms later.
    let up = RawUpstream::start(|req| {
        Reply::SendThenClose(ok(req.head.target().as_bytes()), Duration::from_millis(100))
    })
    .await;
    let s = Setup::new(up.addr, &["--threads", "1"]).await;
    let mut c = s.connect().await;
    c.expect(b"GET /first HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;
    eventually(
        PATIENCE,
        "the upstream closed its first connection",
        || async { (up.ended() == 1).then_some(()) },
    )
    .await;

    let resp = c
        .expect(b"GET /second HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;
    assert_eq!(text(&resp.body), "/second");
    eventually(
        PATIENCE,
        "the upstream closed its second connection",
        || async { (up.ended() == 2).then_some(()) },
    )
    .await;

    // A request with a body is never sent twice, so the pool itself must see the close.
    let resp = c
        .expect(
            b"POST /third HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nbody",
            200,
        )
        .await;
    assert_eq!(text(&resp.body), "/third");

    let seen = up.seen();
    let places: Vec<_> = seen.iter().map(|r| (r.conn, r.nth)).collect();
    assert_eq!(places, [(1, 1), (2, 1), (3, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_unanswered_is_retried_only_for_a_safe_request() {
    // Each connection answers its first request, then reads the second and closes unanswered:
    // the close the pool's check cannot see, since it comes only once the request is sent.
    let up = RawUpstream::start(|req| {
        if req.nth == 1 {
            Reply::Send(ok(req.head.target().as_bytes()))
        } else {
            Reply::Close
        }
    })
    .await;
    let s = Setup::new(up.addr, &["--threads", "1"]).await;
    let mut c = s.connect().await;
    c.expect(b"GET /first HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;

    let resp = c
        .expect(b"GET /again HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;
    assert_eq!(text(&resp.body), "/again");
    let places = |target: &str, seen: &[Seen]| -> Vec<(usize, usize)> {
        seen.iter()
            .filter(|r| r.head.target() == target)
            .map(|r| (r.conn, r.nth))
            .collect()
    };
    // Once on the pooled connection, once on a new one.
    assert_eq!(places("/again", &up.seen()), [(1, 2), (2, 1)]);

    c.expect(
        b"POST /post HTTP/1.1\r\nHost: example.com\r\nContent-Length: 7\r\n\r\npayload",
        502,
    )
    .await;
    // The answer came after any second attempt would have been made: there was none.
    let seen = up.seen();
    assert_eq!(places("/post", &seen), [(2, 2)]);
    let post = seen.iter().find(|r| r.head.target() == "/post").unwrap();
    assert_eq!(text(&post.body), "payload");
    assert_eq!(up.connections(), 2);
}

// === Request bodies ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_by_the_gateway() {
    let up = describing_upstream().await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // The client holds its body until it is told to go on.
    let interim = c
        .read_response("POST")
        .await
        .expect("100 Continue within PATIENCE");
    assert_eq!(interim.head.status(), 100, "{interim:?}");
    assert!(interim.head.line.starts_with("HTTP/1.1 100"), "{interim:?}");
    c.send(b"hello world").await.unwrap();
    let resp = c.read_response("POST").await.unwrap();
    assert_eq!(resp.head.status(), 200, "{resp:?}");
    assert_eq!(text(&resp.body), "POST /upload hello world");

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(text(&seen[0].body), "hello world");
    assert!(!seen[0].head.has("expect"), "{:?}", seen[0].head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pass_intact_both_ways() {
    const REQUEST_CHUNKS: [&str; 4] = ["first ", "second, a bit longer ", "3 ", "last"];
    const RESPONSE_CHUNKS: [&str; 3] = ["alpha ", "beta ", "gamma"];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (req_tx, req_rx) = oneshot::channel();
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut c = Conn::new(tcp);
        let req = c.read_request().await?.context("no request")?;
        let _ = req_tx.send(req);
        c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await?;
        for chunk in RESPONSE_CHUNKS {
            c.send(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        c.send(b"0\r\n\r\n").await?;
        // The end of the body was the last chunk, not a close: the connection carries the next.
        let next = c.read_request().await?.context("no second request")?;
        c.send(&ok(next.head.target().as_bytes())).await?;
        anyhow::Ok(())
    });

    let s = Setup::new(upstream_addr, NATIVE).await;
    let mut c = s.connect().await;
    c.send(b"POST /chunks HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for (i, chunk) in REQUEST_CHUNKS.iter().enumerate() {
        // A chunk extension on one of them, which a proxy must accept and may drop.
        let ext = if i == 1 { ";name=value" } else { "" };
        c.send(format!("{:x}{ext}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    c.send(b"0\r\n\r\n").await.unwrap();

    let resp = c.read_response("POST").await.unwrap();
    assert_eq!(resp.head.status(), 200, "{resp:?}");
    assert_eq!(text(&resp.body), RESPONSE_CHUNKS.concat());

    let req = req_rx.await.expect("the upstream read the request");
    assert_eq!(text(&req.body), REQUEST_CHUNKS.concat());

    // Both connections stayed in step: the next request goes over the same two.
    let resp = c
        .expect(b"GET /after HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;
    assert_eq!(text(&resp.body), "/after");
    upstream.await.unwrap().unwrap();
}

// === HTTP/1.0 and HEAD ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_host_and_head_requests_are_served() {
    let up = Upstream::start("old").await;
    let s = Setup::new(up.addr, NATIVE).await;

    // HTTP/1.0 without Host, without keep-alive: answered, then closed.
    let mut c = s.connect().await;
    let resp = c
        .expect(b"GET /old HTTP/1.0\r\nUser-Agent: raw-test\r\n\r\n", 200)
        .await;
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(echo["path"], "/old");
    c.expect_eof().await.unwrap();

    // HTTP/1.0 with keep-alive: two requests on one connection.
    let mut c = s.connect().await;
    for path in ["/ka/1", "/ka/2"] {
        let resp = c
            .expect(
                format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: raw\r\n\r\n")
                    .as_bytes(),
                200,
            )
            .await;
        let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(echo["path"], path);
    }

    // HEAD: the header without a body, and the connection goes on.
    let mut c = s.connect().await;
    let resp = c
        .expect(b"HEAD /head HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;
    assert_eq!(resp.head.get("x-upstream"), Some("old"));
    assert!(c.buffered().is_empty(), "{:?}", text(c.buffered()));
    let resp = c
        .expect(
            b"GET /after-head HTTP/1.1\r\nHost: example.com\r\n\r\n",
            200,
        )
        .await;
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/after-head");
    assert_eq!(up.hits(), 5);
}

/// `GET / HTTP/1.0` and two CRLFs: 18 bytes, the shortest complete request a client may send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shortest_http10_request_is_answered() {
    let up = Upstream::start("short").await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let resp = c
        .roundtrip(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("an answer to an 18-byte request");
    assert_eq!(resp.head.status(), 200, "{resp:?}");
}

// === Refused requests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405_and_a_malformed_request_line_is_400() {
    let up = Upstream::start("never").await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    c.expect(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        405,
    )
    .await;

    let mut c = s.connect().await;
    c.expect(
        b"this is not an http request line\r\nHost: example.com\r\n\r\n",
        400,
    )
    .await;
    assert_eq!(up.hits(), 0);
}

// === More that a proxy must get right ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_response_reaches_the_client_delimited_on_a_kept_connection() {
    // An HTTP/1.0-style answer: no length, the end of the body is the close.
    let up = RawUpstream::start(|req| {
        Reply::SendThenClose(
            format!(
                "HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nuntil close {}",
                req.head.target()
            )
            .into_bytes(),
            Duration::ZERO,
        )
    })
    .await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    for path in ["/one", "/two"] {
        let resp = c
            .expect(
                format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes(),
                200,
            )
            .await;
        // Delimited by chunks (or a length), so the client's connection outlives the upstream's.
        assert!(
            resp.head.has_token("transfer-encoding", "chunked") || resp.head.has("content-length"),
            "{resp:?}"
        );
        assert_eq!(text(&resp.body), format!("until close {path}"));
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_of_an_unrouted_request_does_not_leak_into_the_next() {
    let up = Upstream::start("routed").await;
    let s = Setup::with_route(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /routed}}]\n    backendRefs: [{name: up, port: 80}]\n",
        up.addr,
        NATIVE,
    )
    .await;
    let mut c = s.connect().await;
    // A 404 the gateway answers before the body has arrived; the body looks like a request.
    let body = b"GET /routed/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(
        format!(
            "POST /nowhere HTTP/1.1\r\nHost: example.com\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let resp = c.read_response("POST").await.unwrap();
    assert_eq!(resp.head.status(), 404, "{resp:?}");
    c.send(body).await.unwrap();
    // If the connection is kept, the next request is what comes after the body.
    match c
        .roundtrip(b"GET /routed/next HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
    {
        Ok(resp) => {
            assert_eq!(resp.head.status(), 200, "{resp:?}");
            let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(
                echo["path"], "/routed/next",
                "the body of the 404 was served"
            );
            assert_eq!(up.hits(), 1);
        }
        // Closing the connection instead is also correct, if nothing was served.
        Err(e) => {
            assert_ended(&e);
            assert_eq!(up.hits(), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_the_upstream_said_it_closes_is_not_reused() {
    // Says `Connection: close` but leaves the socket open (and reads no more): a pool that kept
    // it would send the next request into a connection nobody answers.
    let up = RawUpstream::start(|req| {
        let body = req.head.target();
        Reply::SendThenClose(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            PATIENCE * 2,
        )
    })
    .await;
    let s = Setup::new(up.addr, &["--threads", "1"]).await;
    let mut c = s.connect().await;
    for path in ["/one", "/two", "/three"] {
        let resp = c
            .expect(
                format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes(),
                200,
            )
            .await;
        assert_eq!(text(&resp.body), path);
    }
    assert_eq!(up.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_delimited_response_cut_short_by_the_upstream_stays_incomplete() {
    let up = RawUpstream::start(|_| {
        Reply::SendThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it".to_vec(),
            Duration::ZERO,
        )
    })
    .await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    c.send(b"GET /cut HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .unwrap();
    // The header may already be on its way; then the client must see the connection end before
    // the promised length, never a complete response.
    let got = c.read_response("GET").await;
    match got {
        Ok(resp) => panic!("a cut response reached the client whole: {resp:?}"),
        Err(e) => assert_ended(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let up = describing_upstream().await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    c.send(
        b"GET /p1 HTTP/1.1\r\nHost: example.com\r\n\r\nGET /p2 HTTP/1.1\r\nHost: example.com\r\n\r\n\
          POST /p3 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nbody",
    )
    .await
    .unwrap();
    let mut answered = Vec::new();
    for method in ["GET", "GET", "POST"] {
        let resp = c.read_response(method).await.unwrap();
        assert_eq!(resp.head.status(), 200, "{resp:?}");
        answered.push(text(&resp.body));
    }
    assert_eq!(answered, ["GET /p1 ", "GET /p2 ", "POST /p3 body"]);
    // And the connection still serves what comes after.
    let next = c
        .expect(b"GET /p4 HTTP/1.1\r\nHost: example.com\r\n\r\n", 200)
        .await;
    assert_eq!(text(&next.body), "GET /p4 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_body_arrives_intact() {
    let body: Vec<u8> = (0..512 * 1024).map(|i| (i % 253) as u8).collect();
    let response = ok(&body);
    let up = RawUpstream::start(move |_| Reply::Send(response.clone())).await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    for _ in 0..2 {
        let resp = c
            .roundtrip(b"GET /big HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(resp.head.status(), 200);
        assert_eq!(resp.head.get("content-length"), Some("524288"));
        assert!(resp.body == body, "the body changed on the way");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_hosts_is_refused() {
    let up = Upstream::start("never").await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    c.expect(
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        400,
    )
    .await;
    assert_eq!(up.hits(), 0);
}

/// The classic CL.TE smuggling attempt: a body framed both ways, with a request hidden where
/// the `Content-Length` reading would end. RFC 9112 §6.1 and §6.3: `Transfer-Encoding` frames the
/// body, and the connection closes after the answer, so what follows is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_framed_both_ways_is_read_chunked_and_ends_the_connection() {
    let up = describing_upstream().await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    c.send(
        b"POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 60\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = c.read_response("POST").await.unwrap();
    assert_eq!(resp.head.status(), 200, "{resp:?}");
    assert_eq!(text(&resp.body), "POST /a abc");
    assert_eq!(resp.head.get("connection"), Some("close"));
    c.expect_eof()
        .await
        .expect("the connection ends after the answer");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "the hidden request was served");
    assert_eq!(seen[0].head.get("content-length"), None);
}

/// A request header past 1 MiB (pingora-core's bound, kept) is answered 400, not read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_past_the_limit_is_400() {
    let up = Upstream::start("never").await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let mut raw = b"GET / HTTP/1.1\r\nHost: example.com\r\n".to_vec();
    let filler = format!("x-filler: {}\r\n", "a".repeat(1000));
    while raw.len() < 1100 * 1024 {
        raw.extend_from_slice(filler.as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    // The gateway may answer and close before it took every byte: a write error is fine.
    let _ = c.send(&raw).await;
    let resp = c.read_response("GET").await.unwrap();
    assert_eq!(resp.head.status(), 400, "{resp:?}");
    assert_eq!(up.hits(), 0);
}

/// RFC 9112 §6.1: a server must not send `Transfer-Encoding` in a response to an HTTP/1.0
/// request; an HTTP/1.0 client cannot decode chunks, so the body goes raw and the close ends it.
async fn http10_client_gets_no_chunks(engine: &[&str]) {
    let up = RawUpstream::start(|req| {
        if req.head.target() == "/chunked" {
            Reply::Send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nalpha \r\n4\r\nbeta\r\n0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::SendThenClose(b"HTTP/1.0 200 OK\r\n\r\nalpha beta".to_vec(), Duration::ZERO)
        }
    })
    .await;
    let s = Setup::new(up.addr, engine).await;
    let mut wrong = Vec::new();
    for path in ["/chunked", "/until-close"] {
        let mut c = s.connect().await;
        c.send(format!("GET {path} HTTP/1.0\r\nHost: example.com\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = c.read_head().await.unwrap().expect("a response");
        assert_eq!(head.status(), 200, "{path}: {head:?}");
        let body = c.read_to_end().await.unwrap();
        let body = match head.get("content-length") {
            Some(len) => body[..len.parse::<usize>().unwrap().min(body.len())].to_vec(),
            None => body,
        };
        if head.has("transfer-encoding") || body != b"alpha beta" {
            wrong.push(format!("{path}: {head:?} {:?}", text(&body)));
        }
    }
    assert!(
        wrong.is_empty(),
        "chunked answers to an HTTP/1.0 client:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_no_chunked_response() {
    http10_client_gets_no_chunks(NATIVE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_no_chunked_response_on_the_pingora_engine() {
    http10_client_gets_no_chunks(PINGORA).await;
}

/// An upstream may answer before it has read the request body (a 413, a 401) and close: the
/// client should get that answer, not a 502.
async fn early_answer_is_relayed(engine: &[&str]) -> (u16, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut c = Conn::new(tcp);
        c.read_head().await?.context("no request")?;
        c.send(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large")
            .await?;
        // Reads a little of the body, then closes with the rest unread (a reset).
        let _ = c.read_some().await;
        anyhow::Ok(())
    });
    let s = Setup::new(upstream_addr, engine).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    const BODY: usize = 8 << 20;
    // The client sends its whole body while it reads, as a browser does.
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: {BODY}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..BODY / block.len() {
            wr.write_all(&block).await?;
        }
        anyhow::Ok(())
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer in {PATIENCE:?}");
    writer.abort();
    let _ = upstream.await;
    let head = text(&got);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_upstream_answer_to_a_large_upload_reaches_the_client() {
    let (status, head) = early_answer_is_relayed(NATIVE).await;
    assert_eq!(status, 413, "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_upstream_answer_to_a_large_upload_reaches_the_client_on_the_pingora_engine() {
    let (status, head) = early_answer_is_relayed(PINGORA).await;
    assert_eq!(status, 413, "{head}");
}

/// A chunked body the upstream cut short must reach the client cut short: no last chunk, or a
/// cache or client would take the truncated body for the whole.
async fn cut_chunked_body_stays_cut(engine: &[&str]) {
    let up = RawUpstream::start(|_| {
        Reply::SendThenClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n".to_vec(),
            Duration::ZERO,
        )
    })
    .await;
    let s = Setup::new(up.addr, engine).await;
    let mut c = s.connect().await;
    match c
        .roundtrip(b"GET /cut HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
    {
        Ok(resp) => panic!(
            "a cut chunked body reached the client as complete: {:?} {:?}",
            resp.head,
            text(&resp.body)
        ),
        Err(e) => assert_ended(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_response_cut_short_by_the_upstream_stays_incomplete() {
    cut_chunked_body_stays_cut(NATIVE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_response_cut_short_by_the_upstream_stays_incomplete_on_the_pingora_engine() {
    cut_chunked_body_stays_cut(PINGORA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_answers_keep_both_connections_in_step() {
    let up = RawUpstream::start(|req| {
        Reply::Send(match req.head.target() {
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec(),
            target => ok(target.as_bytes()),
        })
    })
    .await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    for (path, status) in [("/204", 204), ("/304", 304), ("/then", 200)] {
        let resp = c
            .roundtrip(format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(resp.head.status(), status, "{path}: {resp:?}");
        assert!(!resp.head.has("transfer-encoding"), "{path}: {resp:?}");
        if status == 200 {
            assert_eq!(text(&resp.body), path);
        }
    }
    assert!(c.buffered().is_empty(), "{:?}", text(c.buffered()));
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_answers_and_trailers_stay_upstream_and_the_connection_in_step() {
    // What the upstream side of the native engine (its own HTTP/1 client) must frame right:
    // informational answers before the final one, a chunked body with extensions and trailers,
    // and bytes past the end of a response, which make that connection unusable.
    let up = RawUpstream::start(|req| {
        Reply::Send(match req.head.target() {
            "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
                          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints"
                .to_vec(),
            "/trailers" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                             3;ext=1\r\ntra\r\n5\r\niler!\r\n0\r\nx-checksum: 1\r\n\r\n"
                .to_vec(),
            "/extra" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextraSTRAY".to_vec(),
            target => ok(target.as_bytes()),
        })
    })
    .await;
    let s = Setup::new(up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n");

    let resp = c.roundtrip(get("/hints").as_bytes()).await.unwrap();
    assert_eq!(resp.head.status(), 200, "{resp:?}");
    assert_eq!(text(&resp.body), "hints");
    let resp = c.roundtrip(get("/trailers").as_bytes()).await.unwrap();
    assert_eq!(resp.head.status(), 200, "{resp:?}");
    assert_eq!(text(&resp.body), "trailer!");
    assert!(!resp.head.has("x-checksum"), "{resp:?}");
    let resp = c.roundtrip(get("/then").as_bytes()).await.unwrap();
    assert_eq!(text(&resp.body), "/then");
    assert_eq!(up.connections(), 1, "all three on one upstream connection");

    let resp = c.roundtrip(get("/extra").as_bytes()).await.unwrap();
    assert_eq!(text(&resp.body), "extra");
    let resp = c.roundtrip(get("/after").as_bytes()).await.unwrap();
    assert_eq!(text(&resp.body), "/after");
    assert_eq!(
        up.connections(),
        2,
        "a connection with bytes past its response is not reused"
    );
    assert!(c.buffered().is_empty(), "{:?}", text(c.buffered()));
}

// === The pingora engine ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pingora_engine_serves_a_get_and_a_post_with_a_body() {
    let up = describing_upstream().await;
    let s = Setup::new(up.addr, PINGORA).await;
    let mut c = s.connect().await;
    let resp = c
        .expect(
            b"GET /basic?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Kept: 1\r\n\r\n",
            200,
        )
        .await;
    assert_eq!(text(&resp.body), "GET /basic?q=1 ");
    let resp = c
        .expect(
            b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\n\r\nform=payload",
            200,
        )
        .await;
    assert_eq!(text(&resp.body), "POST /submit form=payload");

    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].head.get("host"), Some("example.com"));
    assert_eq!(seen[0].head.get("x-kept"), Some("1"));
    assert_eq!(seen[1].head.get("content-length"), Some("12"));
    assert_eq!(text(&seen[1].body), "form=payload");
}

/// `--idle-timeout` bounds the wait for each request header, from the end of the previous
/// request: a connection whose requests come more often than that is kept, one that then goes
/// quiet is closed, and so is one whose next header trickles in a byte at a time, however often
/// the bytes come (pingora-core's own timeout would restart at every byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_bounds_the_wait_for_each_request_header() {
    const IDLE: Duration = Duration::from_millis(1500);
    let up = describing_upstream().await;
    let s = Setup::new(up.addr, &["--idle-timeout", "1500ms"]).await;

    // Requests every 500 ms for 3 s: one connection throughout, longer than the timeout.
    let mut c = s.connect().await;
    for i in 0..6 {
        let req = format!("GET /steady{i} HTTP/1.1\r\nHost: example.com\r\n\r\n");
        let resp = c.expect(req.as_bytes(), 200).await;
        assert_eq!(text(&resp.body), format!("GET /steady{i} "));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then quiet: closed after the timeout, not before half of it.
    let quiet = std::time::Instant::now();
    c.expect_eof().await.expect("closed while idle");
    let waited = quiet.elapsed();
    assert!(
        waited >= IDLE / 2,
        "closed after {waited:?}, before the timeout"
    );

    // A header trickling in, a byte every 100 ms: closed before it is whole.
    let mut c = s.connect().await;
    let header = b"GET /trickle HTTP/1.1\r\nHost: example.com\r\nX-Filler: 0123456789012345678901234567890123456789\r\n\r\n";
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in header.chunks(1) {
        if c.send(b).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last byte may have gone out before the close was seen: the close still comes, with
    // no response.
    if !closed {
        c.expect_eof()
            .await
            .expect("no answer to the trickled header");
    }
    assert!(
        started.elapsed() < Duration::from_millis(100) * header.len() as u32,
        "the trickle went on to its end"
    );
    assert!(
        !up.seen().iter().any(|r| r.head.target() == "/trickle"),
        "the trickled request went upstream"
    );
}

/// The route timeout bounds each wait for upstream data, the body's too: an upstream that stops
/// mid-body is cut off once the timeout passes, not when it closes (5 s later here), and the
/// client's response ends short rather than passing for a whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_stalled_mid_body_is_cut_off_at_the_route_timeout() {
    let up = RawUpstream::start(|_| {
        Reply::SendThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab".to_vec(),
            Duration::from_secs(5),
        )
    })
    .await;
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - timeouts: {request: 10s, backendRequest: 300ms}\n    backendRefs: [{name: up, port: 80}]\n";
    let s = Setup::with_route(route, up.addr, NATIVE).await;
    let mut c = s.connect().await;
    let started = std::time::Instant::now();
    c.send(b"GET /stall HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .unwrap();
    let head = c.read_head().await.unwrap().expect("a response head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.get("content-length"), Some("10"));
    let rest = c.read_to_end().await.unwrap();
    let took = started.elapsed();
    assert_eq!(rest, b"ab", "the body ends where the upstream stopped");
    assert!(
        took < Duration::from_secs(4),
        "cut off after {took:?}, not at the 300 ms timeout"
    );
    let logs = eventually(PATIENCE, "the timeout in the log", || async {
        let l = s.gw.stderr();
        l.contains("while reading the response body, timeout")
            .then_some(l)
    })
    .await;
    assert!(logs.contains("default/r"), "{logs}");
}
