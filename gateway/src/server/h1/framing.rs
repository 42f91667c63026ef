//! How an HTTP/1 message's header frames its body, and whether it keeps its connection.
//!
//! Ports of pingora-core 0.9.1 `protocols/http/v1/common.rs`, which keeps them `pub(crate)`: the
//! upstream client (`client.rs`) must frame exactly as pingora's did. They follow hyper's decode
//! rules (RFC 9110 §8.6, RFC 9112 §6).

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, StatusCode, Version};
use pingora_error::{Error, ErrorType::InvalidHTTPHeader, Result};
use pingora_http::ResponseHeader;

/// Which of the fields that frame a message its header carries, noted as the header is parsed
/// (`wire::append_fields`), so that the reader of a message does not ask the map for a field the
/// message lacks: a lookup costs about 100 instructions, found or not, and most messages carry
/// one framing field or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present {
    pub content_length: bool,
    pub transfer_encoding: bool,
    pub connection: bool,
}

impl Present {
    /// The framing fields of a map built elsewhere.
    #[cfg(test)]
    pub fn of(headers: &HeaderMap) -> Self {
        let mut present = Self::default();
        headers.keys().for_each(|name| present.note(name));
        present
    }

    /// Notes `name`, a field of the message, if it is one of them.
    pub fn note(&mut self, name: &HeaderName) {
        // Well-known names compare as the `http` crate's enum, not as bytes.
        if *name == CONTENT_LENGTH {
            self.content_length = true;
        } else if *name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if *name == CONNECTION {
            self.connection = true;
        }
    }

    /// The body length the message's `Content-Length` gives, checking that the framing is
    /// unambiguous: `None` when `Transfer-Encoding` overrides it or it is absent; otherwise it
    /// must be one value. (`validate_content_length`, then `content_length_for_framing`.)
    pub fn body_length(self, headers: &HeaderMap) -> Result<Option<usize>> {
        if self.transfer_encoding || !self.content_length {
            return Ok(None);
        }
        content_length(headers)
    }

    /// [`is_chunked`], asking the map only if the message has a `Transfer-Encoding`.
    pub fn is_chunked(self, headers: &HeaderMap) -> bool {
        self.transfer_encoding && is_chunked(headers)
    }

    /// [`connection_keepalive`], asking the map only if the message has a `Connection`.
    pub fn connection_keepalive(self, headers: &HeaderMap) -> Option<bool> {
        if self.connection {
            connection_keepalive(headers)
        } else {
            None
        }
    }
}

/// The same fields as [`Present`], recognized by a name's bytes as httparse gives it: `name`'s
/// `http` constant, if it is one of them (the others can pass through as `wire::PassedFields`).
pub fn framing_field(name: &[u8]) -> Option<HeaderName> {
    // By length first: one comparison at most, for a field that runs past all three.
    let (spelt, field) = match name.len() {
        14 => ("content-length", CONTENT_LENGTH),
        17 => ("transfer-encoding", TRANSFER_ENCODING),
        10 => ("connection", CONNECTION),
        _ => return None,
    };
    spelt.as_bytes().eq_ignore_ascii_case(name).then_some(field)
}

/// Whether `resp` accepts an upgrade: a 101 to HTTP/1.1 (pingora-core's `is_upgrade_resp`: the
/// `Upgrade` and `Connection` fields are not checked; `sanitize` checks them against the
/// request's).
pub fn accepts_upgrade(resp: &ResponseHeader) -> bool {
    resp.status == StatusCode::SWITCHING_PROTOCOLS && resp.version == Version::HTTP_11
}

/// The message's `Content-Length`: `None` when absent; an error when present but not one value
/// (conflicting duplicates, or anything but digits). Identical duplicates and comma-joined equal
/// values (`42, 42`) are one value. (`content_length_for_framing`.)
pub fn content_length(headers: &HeaderMap) -> Result<Option<usize>> {
    let mut length: Option<u64> = None;
    let mut values = headers.get_all(CONTENT_LENGTH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    for value in values {
        for token in value.as_bytes().split(|&b| b == b',') {
            let n = from_digits(token.trim_ascii()).ok_or_else(|| {
                Error::explain(InvalidHTTPHeader, "invalid Content-Length header")
            })?;
            if length.is_some_and(|prev| prev != n) {
                return Error::e_explain(InvalidHTTPHeader, "conflicting Content-Length headers");
            }
            length = Some(n);
        }
    }
    let length = length.expect("at least one value");
    usize::try_from(length).map(Some).or_else(|_| {
        Error::e_explain(
            InvalidHTTPHeader,
            format!("Content-Length {length} exceeds the platform maximum"),
        )
    })
}

/// Whether `chunked` is the last transfer coding of the last `Transfer-Encoding` field.
/// (`is_chunked_encoding_from_headers`.)
pub fn is_chunked(headers: &HeaderMap) -> bool {
    let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() else {
        return false;
    };
    let bytes = last.as_bytes();
    let token = bytes
        .iter()
        .rposition(|&b| b == b',')
        .map_or(bytes, |comma| &bytes[comma + 1..]);
    token.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// What the message's `Connection` field says of keeping the connection: `Some(true)` for
/// `keep-alive`, `Some(false)` for `close` (which wins over `keep-alive` in a list), `None` when
/// it says neither. (`is_buf_keepalive` over `parse_connection_header`.)
pub fn connection_keepalive(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(CONNECTION)?.as_bytes();
    if value.eq_ignore_ascii_case(b"close") {
        return Some(false);
    }
    if value.eq_ignore_ascii_case(b"keep-alive") {
        return Some(true);
    }
    // pingora's slow path only looks for `close` (and `upgrade`) in a list: a `keep-alive`
    // token in a list is not a keep-alive.
    let close = value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
    close.then_some(false)
}

/// ASCII digits only, no sign, no overflow (hyper's `from_digits`).
fn from_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn content_length_is_one_value_or_an_error() {
        fn cl(fields: &[(&str, &str)]) -> Result<Option<usize>> {
            content_length(&headers(fields))
        }
        assert_eq!(cl(&[]).unwrap(), None);
        assert_eq!(cl(&[("content-length", "42")]).unwrap(), Some(42));
        assert_eq!(cl(&[("content-length", " 42 ")]).unwrap(), Some(42));
        assert_eq!(cl(&[("content-length", "42, 42")]).unwrap(), Some(42));
        assert_eq!(
            cl(&[("content-length", "7"), ("content-length", "7")]).unwrap(),
            Some(7)
        );
        for bad in [
            &[("content-length", "42, 43")][..],
            &[("content-length", "7"), ("content-length", "8")],
        ] {
            assert!(cl(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "+4", "-4", "4a", "0x10", "99999999999999999999", "4,"] {
            assert!(cl(&[("content-length", bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transfer_encoding_overrides_an_invalid_content_length() {
        fn length(fields: &[(&str, &str)]) -> Result<Option<usize>> {
            let headers = headers(fields);
            Present::of(&headers).body_length(&headers)
        }
        assert!(length(&[("content-length", "x")]).is_err());
        assert_eq!(length(&[("content-length", "4")]).unwrap(), Some(4));
        assert_eq!(length(&[("content-type", "text/plain")]).unwrap(), None);
        let both = [("content-length", "x"), ("transfer-encoding", "chunked")];
        assert_eq!(length(&both).unwrap(), None);
    }

    #[test]
    fn chunked_is_the_last_coding_of_the_last_field() {
        fn chunked(fields: &[(&str, &str)]) -> bool {
            is_chunked(&headers(fields))
        }
        assert!(chunked(&[("transfer-encoding", "chunked")]));
        assert!(chunked(&[("transfer-encoding", "Chunked")]));
        assert!(chunked(&[("transfer-encoding", "gzip, chunked")]));
        assert!(chunked(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked")
        ]));
        assert!(!chunked(&[("transfer-encoding", "chunked, gzip")]));
        assert!(!chunked(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "gzip")
        ]));
        assert!(!chunked(&[("transfer-encoding", "chunked,")]));
        assert!(!chunked(&[]));
    }

    #[test]
    fn connection_says_close_keep_alive_or_nothing() {
        fn ka(value: &str) -> Option<bool> {
            connection_keepalive(&headers(&[("connection", value)]))
        }
        assert_eq!(ka("close"), Some(false));
        assert_eq!(ka("Keep-Alive"), Some(true));
        assert_eq!(ka("upgrade, close"), Some(false));
        assert_eq!(ka("keep-alive, close"), Some(false));
        assert_eq!(ka("keep-alive, upgrade"), None);
        assert_eq!(ka("upgrade"), None);
        assert_eq!(connection_keepalive(&HeaderMap::new()), None);
    }
}
