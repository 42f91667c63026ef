//! An upstream HTTP/1 session whose every wait is bounded by what remains of the route timeout.
//!
//! pingora-core bounds a session's reads and writes with its own timer (`pingora_timeout`): a
//! boxed future registered in one process-wide, lock-guarded map of 10 ms slots, about 1,300
//! instructions per wait that does not complete at once, which is every response a route's 15 s
//! default timeout covers. Each worker already runs its own tokio runtime, whose timer is a wheel
//! no other thread touches; bounding the wait here costs a fraction of that, and a gateway that
//! arms no pingora timer also leaves pingora's timer thread asleep.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use pingora_core::protocols::http::v1::client::HttpSession as ClientSession;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

/// A [`ClientSession`] and the bound on each of its waits (`None`: unbounded).
pub struct Upstream {
    session: ClientSession,
    io_timeout: Option<Duration>,
}

impl Upstream {
    pub fn new(session: ClientSession, io_timeout: Option<Duration>) -> Self {
        Self {
            session,
            io_timeout,
        }
    }

    pub async fn write_request_header(&mut self, req: Box<RequestHeader>) -> Result<()> {
        let t = self.io_timeout;
        bounded(
            t,
            ErrorType::WriteTimedout,
            "writing the request header",
            self.session.write_request_header(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        let t = self.io_timeout;
        bounded(
            t,
            ErrorType::WriteTimedout,
            "writing the request body",
            self.session.write_body(data),
        )
        .await
        .map(|_| ())
    }

    pub async fn finish_body(&mut self) -> Result<()> {
        let t = self.io_timeout;
        bounded(
            t,
            ErrorType::WriteTimedout,
            "ending the request body",
            self.session.finish_body(),
        )
        .await
        .map(|_| ())
    }

    pub async fn read_response(&mut self) -> Result<()> {
        let t = self.io_timeout;
        bounded(
            t,
            ErrorType::ReadTimedout,
            "reading the response header",
            self.session.read_response(),
        )
        .await
        .map(|_| ())
    }

    pub async fn read_body_ref(&mut self) -> Result<Option<&[u8]>> {
        let t = self.io_timeout;
        bounded(
            t,
            ErrorType::ReadTimedout,
            "reading the response body",
            self.session.read_body_ref(),
        )
        .await
    }

    pub async fn read_body_bytes(&mut self) -> Result<Option<bytes::Bytes>> {
        let t = self.io_timeout;
        bounded(
            t,
            ErrorType::ReadTimedout,
            "reading the response body",
            self.session.read_body_bytes(),
        )
        .await
    }
}

impl Upstream {
    /// The connection, if it can carry another request (see [`ClientSession::reuse`]).
    pub async fn reuse(self) -> Option<pingora_core::protocols::Stream> {
        self.session.reuse().await
    }
}

/// The session's own reads and writes of state (response header, framing, reuse).
impl Deref for Upstream {
    type Target = ClientSession;
    fn deref(&self) -> &ClientSession {
        &self.session
    }
}

impl DerefMut for Upstream {
    fn deref_mut(&mut self) -> &mut ClientSession {
        &mut self.session
    }
}

/// `io` within `t`, as an upstream error either way (a timeout is `timed_out` while `doing`, as
/// pingora-core's own).
async fn bounded<T>(
    t: Option<Duration>,
    timed_out: ErrorType,
    doing: &str,
    io: impl Future<Output = Result<T>>,
) -> Result<T> {
    let done = match t {
        None => io.await,
        Some(t) => match tokio::time::timeout(t, io).await {
            Ok(done) => done,
            Err(_) => Error::e_explain(timed_out, format!("while {doing}, timeout: {t:?}")),
        },
    };
    done.map_err(Error::into_up)
}
