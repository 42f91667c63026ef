//! Raw HTTP/1 over TCP, for tests that must send or see exact bytes: a buffered connection that
//! reads message heads and bodies (Content-Length, chunked, until close), and a scripted upstream
//! that records every request it reads and answers as the test says.
//!
//! Every read waits at most [`PATIENCE`](crate::PATIENCE) and fails instead of hanging.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::PATIENCE;

/// Bound on a head or a body this module reads: tests exchange small messages.
const MAX_MESSAGE: usize = 1 << 20;

/// A message head: the start line and the fields in wire order, names as sent.
#[derive(Debug, Clone)]
pub struct Head {
    pub line: String,
    pub fields: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(raw).context("head is not UTF-8")?;
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default().to_owned();
        let mut fields = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (name, value) = l
                .split_once(':')
                .with_context(|| format!("bad field {l:?}"))?;
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
        Ok(Self { line, fields })
    }

    /// The status code of a response head (0 if the line has none).
    pub fn status(&self) -> u16 {
        self.line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The method of a request head.
    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or_default()
    }

    /// The target of a request head.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }

    /// The first value of field `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any `name` field lists `token` (comma-separated, any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn content_length(&self) -> Result<Option<usize>> {
        self.get("content-length")
            .map(|v| v.parse().with_context(|| format!("content-length {v:?}")))
            .transpose()
    }

    fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }
}

/// A message read off a connection: its head, its body, and for a chunked body the chunks as they
/// were framed on the wire.
#[derive(Debug, Clone)]
pub struct Message {
    pub head: Head,
    pub body: Vec<u8>,
    pub chunks: Vec<Vec<u8>>,
}

/// A TCP connection with a read buffer, so bytes that arrive with a head stay for the next read.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Self> {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        Ok(Self::new(stream))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(PATIENCE, self.stream.write_all(bytes))
            .await
            .context("write timed out")??;
        Ok(())
    }

    /// One read into the buffer; 0 means the peer closed.
    async fn fill(&mut self) -> Result<usize> {
        ensure!(
            self.buf.len() <= MAX_MESSAGE,
            "more than {MAX_MESSAGE} bytes"
        );
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .with_context(|| {
                format!(
                    "nothing read in {PATIENCE:?}; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next head, or `None` if the peer closed the connection before sending a byte of it.
    pub async fn read_head(&mut self) -> Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = Head::parse(&self.buf[..end])?;
                self.buf.drain(..end + 4);
                return Ok(Some(head));
            }
            if self.fill().await? == 0 {
                ensure!(
                    self.buf.is_empty(),
                    "closed inside a head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return Ok(None);
            }
        }
    }

    /// Exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            ensure!(
                self.fill().await? > 0,
                "closed after {} of {n} bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn read_line(&mut self) -> Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            ensure!(self.fill().await? > 0, "closed inside a line");
        }
    }

    /// A chunked body, chunk by chunk (trailers are read and dropped).
    pub async fn read_chunks(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("bad chunk size line {line:?}"))?;
            ensure!(size <= MAX_MESSAGE, "chunk of {size} bytes");
            if size == 0 {
                while !self.read_line().await?.is_empty() {}
                return Ok(chunks);
            }
            let data = self.read_exact(size + 2).await?;
            ensure!(data.ends_with(b"\r\n"), "chunk not followed by CRLF");
            chunks.push(data[..size].to_vec());
        }
    }

    /// What is buffered, else what one read brings; empty once the peer has closed.
    pub async fn read_some(&mut self) -> Result<Vec<u8>> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Everything until the peer closes.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Waits until the peer closes the connection; fails if it sends anything first.
    pub async fn expect_eof(&mut self) -> Result<()> {
        let rest = self.read_to_end().await?;
        ensure!(
            rest.is_empty(),
            "bytes before the close: {:?}",
            String::from_utf8_lossy(&rest)
        );
        Ok(())
    }

    /// The next request, or `None` if the peer closed the connection between requests.
    pub async fn read_request(&mut self) -> Result<Option<Message>> {
        let Some(head) = self.read_head().await? else {
            return Ok(None);
        };
        let (body, chunks) = if head.is_chunked() {
            let chunks = self.read_chunks().await?;
            (chunks.concat(), chunks)
        } else {
            let len = head.content_length()?.unwrap_or(0);
            (self.read_exact(len).await?, Vec::new())
        };
        Ok(Some(Message { head, body, chunks }))
    }

    /// The next response to a request with `method` (a `HEAD` response has no body).
    /// Interim (1xx) responses are returned like any other: read again for the final one.
    pub async fn read_response(&mut self, method: &str) -> Result<Message> {
        let head = self
            .read_head()
            .await?
            .context("connection closed before a response")?;
        let status = head.status();
        let no_body = method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304;
        let (body, chunks) = if no_body {
            (Vec::new(), Vec::new())
        } else if head.is_chunked() {
            let chunks = self.read_chunks().await?;
            (chunks.concat(), chunks)
        } else if let Some(len) = head.content_length()? {
            (self.read_exact(len).await?, Vec::new())
        } else {
            (self.read_to_end().await?, Vec::new())
        };
        Ok(Message { head, body, chunks })
    }

    /// Sends `request` and reads the response to it.
    pub async fn roundtrip(&mut self, request: &[u8]) -> Result<Message> {
        let method = request.split(|b| *b == b' ').next().unwrap_or_default();
        let method = String::from_utf8_lossy(method).into_owned();
        self.send(request).await?;
        self.read_response(&method).await
    }

    /// [`roundtrip`](Self::roundtrip), asserting the response's status (the response is in the
    /// panic message when it differs).
    pub async fn expect(&mut self, request: &[u8], status: u16) -> Message {
        let resp = self.roundtrip(request).await.expect("a response");
        assert_eq!(resp.head.status(), status, "{resp:?}");
        resp
    }

    /// Bytes already read past the last message.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `200 OK` with `body` and a `Content-Length`.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// A request the [`RawUpstream`] read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which connection it came on: 1 for the first the upstream accepted.
    pub conn: usize,
    /// Its place on that connection: 1 for the first request.
    pub nth: usize,
    pub head: Head,
    pub body: Vec<u8>,
}

/// What the [`RawUpstream`] does with a request it read.
pub enum Reply {
    /// Writes these bytes and waits for the next request on the connection.
    Send(Vec<u8>),
    /// Writes these bytes, then closes the connection after the delay, whatever comes meanwhile.
    SendThenClose(Vec<u8>, Duration),
    /// Closes the connection without an answer.
    Close,
}

/// An upstream that reads requests (Content-Length or chunked bodies), records them, and answers
/// each as `answer` says. Stops accepting when dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

type Answer = dyn Fn(&Seen) -> Reply + Send + Sync;

impl RawUpstream {
    pub async fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Answer> = Arc::new(answer);
        let (s, c, e) = (seen.clone(), connections.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let conn = c.fetch_add(1, Ordering::SeqCst) + 1;
                let (s, e, answer) = (s.clone(), e.clone(), answer.clone());
                tokio::spawn(async move {
                    if let Err(err) = serve(Conn::new(tcp), conn, &s, &*answer).await {
                        eprintln!("raw upstream connection {conn}: {err:#}");
                    }
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
            ended,
            task,
        }
    }

    /// Every request read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections that have ended (closed by either side) so far.
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut c: Conn, conn: usize, seen: &Mutex<Vec<Seen>>, answer: &Answer) -> Result<()> {
    let mut nth = 0;
    loop {
        let Some(req) = c.read_request().await? else {
            return Ok(());
        };
        nth += 1;
        let request = Seen {
            conn,
            nth,
            head: req.head,
            body: req.body,
        };
        let reply = answer(&request);
        if let Ok(mut s) = seen.lock() {
            s.push(request);
        }
        match reply {
            Reply::Send(bytes) => c.send(&bytes).await?,
            Reply::SendThenClose(bytes, after) => {
                c.send(&bytes).await?;
                tokio::time::sleep(after).await;
                return Ok(());
            }
            Reply::Close => return Ok(()),
        }
    }
}
