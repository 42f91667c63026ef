//! HTTP/1 body framing, as bytes in a buffer: decoding a received body and framing one to send.
//!
//! The decoder works on the connection's read buffer in place: each piece of body it finds is
//! split off that buffer as [`Bytes`] (no copy), and whatever follows the body stays there, so the
//! caller sees bytes an upstream sent past the end of its response. No I/O here: the caller reads
//! when the decoder asks for more ([`Decoded::NeedMore`]) and tells it of the end of the stream
//! ([`Decoder::at_eof`]).

use bytes::{Buf, Bytes, BytesMut};
use pingora_error::{Error, ErrorType, ErrorType::ConnectionClosed, Result};

use crate::limits;

/// pingora-core's error types for malformed chunked bodies, so logs read the same.
pub const INVALID_CHUNK: ErrorType = ErrorType::new("InvalidChunk");
pub const INVALID_TRAILER_END: ErrorType = ErrorType::new("InvalidTrailerEnd");
pub const PREMATURE_BODY_END: ErrorType = ErrorType::new("PrematureBodyEnd");

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A piece of the body, never empty.
    Data(Bytes),
    /// The body is complete.
    End,
    /// The buffer holds no more of the body: read more into it and call again.
    NeedMore,
}

/// A body being received (RFC 9112 §6.3).
#[derive(Debug)]
pub enum Decoder {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Until the sender closes the connection.
    UntilClose,
    /// Complete: the framing's end was reached.
    Done,
}

/// Where a chunked body is (RFC 9112 §7.1).
#[derive(Debug)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line; this many bytes of them so far.
    Trailers(usize),
}

impl Decoder {
    pub fn length(n: usize) -> Self {
        if n == 0 {
            Decoder::Done
        } else {
            Decoder::Length(n as u64)
        }
    }

    pub fn chunked() -> Self {
        Decoder::Chunked(Chunked::Size)
    }

    /// Whether the body reached its framing's end.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// The next piece of the body in `buf`, which it is split off.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded> {
        match self {
            Decoder::Done => Ok(Decoded::End),
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::UntilClose => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                Ok(Decoded::Data(buf.split().freeze()))
            }
            Decoder::Chunked(state) => {
                let decoded = decode_chunked(state, buf)?;
                if decoded == Decoded::End {
                    *self = Decoder::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The sender closed the connection with `decode` wanting more: the end of a body read until
    /// close, a cut-off body otherwise.
    pub fn at_eof(&mut self) -> Result<()> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            Decoder::Length(left) => Error::e_explain(
                ConnectionClosed,
                format!("the peer closed the connection with {left} bytes of body left to read"),
            ),
            Decoder::Chunked(_) => Error::e_explain(
                ConnectionClosed,
                "the peer closed the connection before the end of a chunked body",
            ),
        }
    }
}

fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Decoded> {
    loop {
        match state {
            Chunked::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((line, size))) => {
                    buf.advance(line);
                    *state = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Ok(httparse::Status::Partial) if buf.len() > limits::MAX_CHUNK_HEAD => {
                    return Error::e_explain(INVALID_CHUNK, "chunk-size line over the limit");
                }
                Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                Err(e) => {
                    return Error::e_explain(INVALID_CHUNK, format!("invalid chunk size: {e}"));
                }
            },
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *state = Chunked::DataEnd;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            Chunked::DataEnd => match (buf.first(), buf.get(1)) {
                (Some(b'\r'), Some(b'\n')) => {
                    buf.advance(2);
                    *state = Chunked::Size;
                }
                (None, _) | (Some(b'\r'), None) => return Ok(Decoded::NeedMore),
                _ => return Error::e_explain(INVALID_CHUNK, "no CRLF after a chunk's data"),
            },
            Chunked::Trailers(seen) => {
                // Trailer fields are dropped, as pingora does; only their end matters.
                match (buf.first(), buf.get(1)) {
                    (Some(b'\r'), Some(b'\n')) => {
                        buf.advance(2);
                        return Ok(Decoded::End);
                    }
                    (None, _) | (Some(b'\r'), None) => return Ok(Decoded::NeedMore),
                    (Some(b'\r'), Some(_)) => {
                        return Error::e_explain(INVALID_TRAILER_END, "a CR without its LF");
                    }
                    _ => {}
                }
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(end) if *seen + end + 2 <= limits::MAX_TRAILERS => {
                        *seen += end + 2;
                        buf.advance(end + 2);
                    }
                    None if *seen + buf.len() <= limits::MAX_TRAILERS => {
                        return Ok(Decoded::NeedMore);
                    }
                    _ => return Error::e_explain(INVALID_TRAILER_END, "trailers over the limit"),
                }
            }
        }
    }
}

/// A body being sent (RFC 9112 §6): what to write around each piece of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoder {
    /// `Content-Length`: this many bytes left to send; what goes past it is not sent.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// As it is, until the connection closes (an upgraded connection's bytes).
    UntilClose,
    /// The body is finished.
    Done,
}

/// A piece of body as it goes on the wire: up to three slices to write in order (a chunk's size
/// line, its data, its CRLF), and how many bytes of the body they carry.
pub struct Framed<'a> {
    pub wire: [&'a [u8]; 3],
    pub len: usize,
}

impl Encoder {
    /// Frames `data`. Past a `Content-Length` the rest is dropped (as pingora does); an empty
    /// piece of a chunked body is nothing (it would be the last chunk). `size_line` holds a
    /// chunk's size line.
    pub fn frame<'a>(&mut self, data: &'a [u8], size_line: &'a mut [u8; 18]) -> Framed<'a> {
        let (wire, len): ([&[u8]; 3], usize) = match self {
            Encoder::Done => ([&[]; 3], 0),
            Encoder::Length(left) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                ([&data[..n], &[], &[]], n)
            }
            Encoder::Chunked if data.is_empty() => ([&[]; 3], 0),
            Encoder::Chunked => (
                [chunk_size_line(data.len(), size_line), data, b"\r\n"],
                data.len(),
            ),
            Encoder::UntilClose => ([data, &[], &[]], data.len()),
        };
        Framed { wire, len }
    }

    /// Ends the body: what to write last (the last chunk of a chunked body). A body shorter than
    /// its `Content-Length` is an error; `what` names it (`request`, `response`).
    pub fn finish(&mut self, what: &str) -> Result<&'static [u8]> {
        match std::mem::replace(self, Encoder::Done) {
            Encoder::Length(left) if left > 0 => Error::e_explain(
                PREMATURE_BODY_END,
                format!("{what} body {left} bytes short of its Content-Length"),
            ),
            Encoder::Chunked => Ok(LAST_CHUNK),
            _ => Ok(b""),
        }
    }
}

/// The size line of a chunk of `len` bytes (uppercase hex, as pingora writes it), without a
/// format machinery allocation: at most 16 digits and CRLF.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let count = digits.len() - i;
    out[..count].copy_from_slice(&digits[i..]);
    out[count..count + 2].copy_from_slice(b"\r\n");
    &out[..count + 2]
}

/// The last chunk and the empty trailer section.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests;
