use super::*;
use crate::server::errors::response_for;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Bound on every wait: generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A loopback upstream that accepts every connection and hands its server side to the test.
struct Upstream {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<TcpStream>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                if tx.send(s).is_err() {
                    break;
                }
            }
        });
        Self { addr, accepted }
    }

    /// A new connection through [`connect`], and its server side.
    async fn connection(&mut self) -> (Stream, TcpStream) {
        let client = connect(self.addr, PATIENCE).await.unwrap();
        let server = tokio::time::timeout(PATIENCE, self.accepted.recv())
            .await
            .expect("accepted in time")
            .unwrap();
        (client, server)
    }
}

fn local_port(s: &Stream) -> u16 {
    let digest = s.get_socket_digest().expect("a socket digest");
    digest
        .local_addr()
        .and_then(PingoraAddr::as_inet)
        .unwrap()
        .port()
}

/// Waits until the server side sees the connection closed.
async fn assert_closed(server: &mut TcpStream) {
    let read = tokio::time::timeout(PATIENCE, server.read(&mut [0; 16]))
        .await
        .expect("the client closed the connection in time");
    // A reset (closed with unread bytes) is as closed as a FIN.
    assert!(matches!(read, Ok(0) | Err(_)), "unexpected read: {read:?}");
}

/// Takes and returns the one connection to `addr` until the pool finds it unusable; it must be
/// usable at first, or the test would pass for a pool that keeps nothing.
async fn assert_found_unusable(pool: &Pool, addr: SocketAddr, make_unusable: impl FnOnce()) {
    let conn = pool.take(addr).expect("usable before");
    pool.put(addr, conn);
    make_unusable();
    let deadline = Instant::now() + PATIENCE;
    while let Some(conn) = pool.take(addr) {
        assert!(Instant::now() < deadline, "still taken after {PATIENCE:?}");
        pool.put(addr, conn);
        // Lets the worker's I/O driver turn and record the upstream's FIN or bytes.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(pool.is_empty(), "the unusable connection was closed");
}

#[tokio::test]
async fn a_returned_connection_is_taken_again() {
    let mut up = Upstream::start().await;
    let (client, mut server) = up.connection().await;
    let port = local_port(&client);
    with_pool(|pool| pool.put(up.addr, client));
    let mut again = with_pool(|pool| pool.take(up.addr)).expect("the pooled connection");
    assert_eq!(local_port(&again), port);
    assert!(with_pool(|pool| pool.take(up.addr)).is_none(), "taken once");
    // And it still carries bytes to the same server socket.
    again.write_all(b"GET").await.unwrap();
    again.flush().await.unwrap();
    let mut got = [0; 3];
    tokio::time::timeout(PATIENCE, server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"GET");
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_taken() {
    let mut up = Upstream::start().await;
    let (client, server) = up.connection().await;
    let pool = Pool::new();
    pool.put(up.addr, client);
    assert_found_unusable(&pool, up.addr, || drop(server)).await;
}

#[tokio::test]
async fn a_connection_with_bytes_nobody_asked_for_is_not_taken() {
    let mut up = Upstream::start().await;
    let (client, server) = up.connection().await;
    let pool = Pool::new();
    pool.put(up.addr, client);
    assert_found_unusable(&pool, up.addr, || {
        assert_eq!(server.try_write(b"HTTP/1.1 200 OK\r\n").unwrap(), 17);
    })
    .await;
}

#[tokio::test]
async fn an_expired_connection_is_not_taken_and_is_closed() {
    let mut up = Upstream::start().await;
    let (client, mut server) = up.connection().await;
    let pool = Pool::with_limits(Duration::from_millis(1), 8);
    pool.put(up.addr, client);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(pool.take(up.addr).is_none());
    assert_closed(&mut server).await;
}

#[tokio::test]
async fn past_the_per_address_limit_the_oldest_is_closed() {
    let mut up = Upstream::start().await;
    let pool = Pool::with_limits(limits::UPSTREAM_IDLE_TIMEOUT, 2);
    let (a, mut server_a) = up.connection().await;
    let (b, _server_b) = up.connection().await;
    let (c, _server_c) = up.connection().await;
    let ports = [&b, &c].map(local_port);
    for conn in [a, b, c] {
        pool.put(up.addr, conn);
    }
    assert_eq!(pool.len(), 2);
    assert_closed(&mut server_a).await;
    // Most recently returned first.
    assert_eq!(local_port(&pool.take(up.addr).unwrap()), ports[1]);
    assert_eq!(local_port(&pool.take(up.addr).unwrap()), ports[0]);
    assert!(pool.take(up.addr).is_none());
}

#[tokio::test]
async fn only_flushed_connections_from_connect_to_that_address_are_kept() {
    let mut up = Upstream::start().await;
    let pool = Pool::new();

    let foreign = TcpStream::connect(up.addr).await.unwrap();
    let foreign: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(foreign));
    pool.put(up.addr, foreign);

    let (client, mut server) = up.connection().await;
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], up.addr.port().wrapping_add(1)));
    pool.put(elsewhere, client);
    assert_closed(&mut server).await;

    let (mut client, mut server) = up.connection().await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    pool.put(up.addr, client);
    assert_closed(&mut server).await;

    assert!(pool.is_empty());
}

#[tokio::test]
async fn sweep_closes_connections_the_upstream_closed_and_keeps_the_rest() {
    let mut up = Upstream::start().await;
    let pool = Pool::new();
    let (open, _server_open) = up.connection().await;
    let (closed, server_closed) = up.connection().await;
    let open_port = local_port(&open);
    pool.put(up.addr, open);
    pool.put(up.addr, closed);
    drop(server_closed);
    let deadline = Instant::now() + PATIENCE;
    loop {
        pool.sweep();
        if pool.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {PATIENCE:?}",
            pool.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(local_port(&pool.take(up.addr).unwrap()), open_port);
}

#[tokio::test]
async fn sweep_closes_expired_connections() {
    let mut up = Upstream::start().await;
    let (client, mut server) = up.connection().await;
    let pool = Pool::with_limits(Duration::from_millis(1), 8);
    pool.put(up.addr, client);
    tokio::time::sleep(Duration::from_millis(10)).await;
    pool.sweep();
    assert!(pool.is_empty());
    assert_closed(&mut server).await;
}

#[tokio::test]
async fn writes_stay_buffered_until_flush() {
    let mut up = Upstream::start().await;
    let (mut client, mut server) = up.connection().await;
    let request = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello";
    let (header, body) = request.split_at(request.len() - 5);
    client.write_all(header).await.unwrap();
    client.write_all(body).await.unwrap();
    let io = client.as_any().downcast_ref::<UpstreamIo>().unwrap();
    assert_eq!(io.io.buffer(), request, "nothing sent before the flush");
    client.flush().await.unwrap();
    let mut got = vec![0; request.len()];
    tokio::time::timeout(PATIENCE, server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, request);
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_refused_and_answers_503() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is closed: nothing listens on `addr` any more.
    let e = connect(addr, PATIENCE).await.expect_err("nothing listens");
    assert_eq!(e.etype(), &ErrorType::ConnectRefused);
    assert_eq!(e.esource(), &ErrorSource::Upstream);
    assert_eq!(response_for(&e).0, 503);
}

#[tokio::test]
async fn a_connect_not_done_in_time_times_out_and_answers_503() {
    // A listener that never accepts: once its queue is full, Linux drops further SYNs, so those
    // connects hang until our timeout.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match connect(addr, Duration::from_millis(300)).await {
            Ok(conn) => queued.push(conn),
            Err(e) => {
                assert_eq!(e.etype(), &ErrorType::ConnectTimedout);
                assert_eq!(e.esource(), &ErrorSource::Upstream);
                assert_eq!(response_for(&e).0, 503);
                return;
            }
        }
    }
    panic!("16 connects completed to a listener that never accepts");
}
