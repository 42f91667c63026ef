//! Every error the gateway answers with, and the one place that turns errors into responses.
//!
//! Errors are Pingora errors with our own `ErrorType`s carrying their status code, so they flow
//! through Pingora's phases unchanged and [`response_for`] maps them (and Pingora's own upstream
//! errors) to a status and a short body.

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;

/// No HTTPRoute matched the request.
pub const NO_ROUTE: ErrorType = ErrorType::new_code("NoRoute", 404);
/// The matched rule has no usable backendRef (none, or every weight is 0): 500 per the Gateway API.
pub const NO_BACKEND: ErrorType = ErrorType::new_code("NoBackend", 500);
/// The route's `timeouts.request` ran out before an upstream attempt could start.
pub const REQUEST_TIMEOUT: ErrorType = ErrorType::new_code("RequestTimeout", 504);
/// The backend has no resolved address.
pub const BACKEND_UNRESOLVED: ErrorType = ErrorType::new_code("BackendUnresolved", 503);

/// The status and body for an error, and whether the downstream connection may be reused
/// (only for errors raised before an upstream was chosen: the request was fully understood).
pub fn response_for(e: &Error) -> (u16, &'static str, bool) {
    use ErrorType::*;
    match e.etype() {
        CustomCode("NoRoute", _) => (404, "no route\n", true),
        CustomCode("NoBackend", _) => (500, "no backend\n", true),
        CustomCode("RequestTimeout", _) => (504, "upstream timeout\n", false),
        CustomCode(_, code) => (*code, "upstream unavailable\n", false),
        HTTPStatus(code) => (*code, "", false),
        // Unreachable backends: refused, no route to host, or not connected in time.
        ConnectRefused | ConnectNoRoute | ConnectTimedout | ConnectError | ConnectProxyFailure
        | SocketError | BindError
            if e.esource() == &ErrorSource::Upstream || is_connect(e.etype()) =>
        {
            (503, "upstream unavailable\n", false)
        }
        ReadTimedout | WriteTimedout => (504, "upstream timeout\n", false),
        _ => match e.esource() {
            ErrorSource::Upstream => (502, "bad gateway\n", false),
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => (0, "", false),
                _ => (400, "bad request\n", false),
            },
            ErrorSource::Internal | ErrorSource::Unset => (500, "internal error\n", false),
        },
    }
}

fn is_connect(t: &ErrorType) -> bool {
    use ErrorType::*;
    matches!(
        t,
        ConnectRefused | ConnectNoRoute | ConnectTimedout | ConnectError
    )
}

/// The response header of an error reply with body `text`: plain text, never cached. Its
/// `Content-Length` is set when it is sent, after the plugins saw the reply.
pub fn reply_header(code: u16, text: &str) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(code, Some(3))?;
    if !text.is_empty() {
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    }
    resp.insert_header(http::header::CACHE_CONTROL, "private, no-store")?;
    Ok(resp)
}

/// The body as `Bytes` without copying.
pub fn body(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_gateway_statuses() {
        assert_eq!(response_for(&Error::explain(NO_ROUTE, "x")).0, 404);
        assert_eq!(response_for(&Error::explain(NO_BACKEND, "x")).0, 500);
        assert_eq!(
            response_for(&Error::explain(BACKEND_UNRESOLVED, "x")).0,
            503
        );
        assert_eq!(
            response_for(&Error::new_up(ErrorType::ConnectRefused)).0,
            503
        );
        assert_eq!(
            response_for(&Error::new_up(ErrorType::ConnectTimedout)).0,
            503
        );
        assert_eq!(response_for(&Error::new_up(ErrorType::ReadTimedout)).0, 504);
        assert_eq!(
            response_for(&Error::new_up(ErrorType::ConnectionClosed)).0,
            502
        );
    }
}
