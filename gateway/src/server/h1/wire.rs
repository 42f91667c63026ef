//! What both sides of the HTTP/1 engine (`session.rs` towards the client, `client.rs` towards
//! the upstream) do with a connection's bytes: read them into the connection's buffer, wait there
//! for a complete message head, turn httparse's fields into a header map whose values share that
//! buffer, and write a framed piece of body.

use std::cell::RefCell;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName};
use pingora_core::protocols::Stream;
use pingora_error::{Error, ErrorType::*, OrErr, Result};
use pingora_http::HeaderNameVariant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::framing::{self, Present};
use crate::limits;

/// Reads what the connection has into `buf`, growing it by up to `reserve` bytes. A buffer let
/// go of (see [`release`]) takes a spare one.
pub async fn fill(io: &mut Stream, buf: &mut BytesMut, reserve: usize) -> std::io::Result<usize> {
    if buf.capacity() == 0
        && let Some(spare) = SPARE_BUFFERS.with_borrow_mut(Vec::pop)
    {
        *buf = spare;
    }
    // Once the previous pieces split off the buffer are dropped, this reuses its allocation.
    buf.reserve(reserve);
    io.read_buf(buf).await
}

thread_local! {
    /// Read buffers that connections let go of between messages, for the next read on this
    /// worker: allocating a 16 KiB buffer costs about 250 instructions, taking one from here a
    /// tenth of that. A connection waiting for its next message still holds none.
    static SPARE_BUFFERS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Lets go of `buf`, empty between two messages, leaving it without an allocation: its allocation
/// is kept as a spare for another read (up to `limits::SPARE_READ_BUFFERS` per worker) if no
/// piece split off it is still alive and it holds at least `size` bytes.
pub fn release(buf: &mut BytesMut, size: usize) {
    let mut buf = std::mem::take(buf);
    if !buf.is_empty() || !buf.try_reclaim(size) {
        return;
    }
    SPARE_BUFFERS.with_borrow_mut(|spare| {
        if spare.len() < limits::SPARE_READ_BUFFERS {
            spare.push(buf);
        }
    });
}

/// How waiting for a message head ended.
pub enum Head<T> {
    Parsed(T),
    /// The connection ended (`error: None`) or failed before a complete head, `already_read`
    /// bytes into it: each side decides what that means.
    Ended {
        already_read: usize,
        error: Option<std::io::Error>,
    },
}

/// Reads into `buf` (by up to `reserve` bytes at a time) until `parse` finds a complete head at
/// its start. A partial head past `max` bytes is refused; `what` (`request`, `response`) names it.
pub async fn read_head<T>(
    io: &mut Stream,
    buf: &mut BytesMut,
    reserve: usize,
    max: usize,
    what: &str,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>>,
) -> Result<Head<T>> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse(buf)? {
                return Ok(Head::Parsed(head));
            }
            if buf.len() > max {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    format!("{what} header larger than {max}"),
                );
            }
        }
        let already_read = buf.len();
        match fill(io, buf, reserve).await {
            Ok(0) => {
                return Ok(Head::Ended {
                    already_read,
                    error: None,
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Ok(Head::Ended {
                    already_read,
                    error: Some(e),
                });
            }
        }
    }
}

/// Where `piece`, a slice of the buffer starting at address `base`, lies in it.
pub fn offsets(base: usize, piece: &[u8]) -> Range<usize> {
    let start = piece.as_ptr() as usize - base;
    start..start + piece.len()
}

/// The names of httparse's `fields` and where their values lie in the buffer at `base`: offsets,
/// because the fields borrow that buffer, which the caller splits next.
pub fn field_offsets(
    base: usize,
    fields: &[httparse::Header<'_>],
) -> Result<Vec<(HeaderName, Range<usize>)>> {
    // Sized up front: collecting a `Result` iterator would grow the vector from empty.
    let mut named = Vec::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .or_err(InvalidHTTPHeader, "invalid field name")?;
        named.push((name, offsets(base, f.value)));
    }
    Ok(named)
}

/// Response fields that go to the client as they came, beside the header's map: a response that
/// no filter or plugin reads or edits needs a map of only the fields its framing depends on
/// (see [`framing::framing_field`]). Building a map entry (a name parsed, a value normalized, a hashed
/// insert) cost about 400 instructions per field; these are written from the read buffer.
#[derive(Debug)]
pub struct PassedFields {
    head: Bytes,
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl PassedFields {
    /// The fields of `head` whose name and value lie at `spans` (from [`split_field_offsets`]).
    pub fn new(head: Bytes, spans: Vec<(Range<usize>, Range<usize>)>) -> Self {
        Self { head, spans }
    }

    /// Names and values, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|(name, value)| (&self.head[name.clone()], &self.head[value.clone()]))
    }
}

/// Whether httparse's `fields` can be split into a map of the framing fields and
/// [`PassedFields`]: not if a value needs pingora's normalization, which only the map applies,
/// or if a name is longer than `http` takes one (the map refuses it). httparse refuses a NUL or
/// a CR not followed by LF in a value, so only an obs-fold (CRLF then a space, which responses
/// may have) needs normalizing, and it holds an LF.
pub fn can_pass(fields: &[httparse::Header<'_>]) -> bool {
    fields
        .iter()
        .all(|f| f.name.len() <= usize::from(u16::MAX) && !f.value.contains(&b'\n'))
}

/// [`field_offsets`] of the framing fields only; the others' offsets go to `passed`.
pub fn split_field_offsets(
    base: usize,
    fields: &[httparse::Header<'_>],
    passed: &mut Vec<(Range<usize>, Range<usize>)>,
) -> Vec<(HeaderName, Range<usize>)> {
    let mut named = Vec::with_capacity(3);
    for f in fields {
        // The name is already known: no `HeaderName::from_bytes` to parse it again.
        match framing::framing_field(f.name.as_bytes()) {
            Some(name) => named.push((name, offsets(base, f.value))),
            None => passed.push((offsets(base, f.name.as_bytes()), offsets(base, f.value))),
        }
    }
    named
}

/// Appends `fields` (from [`field_offsets`]) to `map`, their values slices of `head` (no copy),
/// normalized as pingora-core normalizes a value read off the wire; which framing fields they
/// hold.
pub fn append_fields(
    map: &mut HeaderMap,
    head: &Bytes,
    fields: Vec<(HeaderName, Range<usize>)>,
) -> Present {
    map.reserve(fields.len());
    let mut present = Present::default();
    for (name, value) in fields {
        present.note(&name);
        map.append(name, pingora_http::header_value_from_raw(head.slice(value)));
    }
    present
}

/// Writes a framed piece of body (`Encoder::frame`'s slices) in order, unflushed.
pub async fn write_pieces(io: &mut Stream, pieces: &[&[u8]], doing: &'static str) -> Result<()> {
    for piece in pieces {
        io.write_all(piece).await.or_err(WriteError, doing)?;
    }
    Ok(())
}

/// The bytes of a field name as pingora gives it to write (`RequestHeader::map`): well-known
/// names capitalized, the rest as the map keeps them, or as they came when the case was kept.
pub fn name_bytes<'a>(name: &HeaderNameVariant<'a>) -> &'a [u8] {
    match name {
        HeaderNameVariant::Titled(name) => name.as_bytes(),
        HeaderNameVariant::Case(name) => name.as_slice(),
    }
}

/// Writes `name: value` and its line end.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> usize {
        SPARE_BUFFERS.with_borrow(Vec::len)
    }

    #[tokio::test]
    async fn a_buffer_let_go_of_is_taken_by_the_next_read_unless_a_piece_of_it_lives() {
        SPARE_BUFFERS.with_borrow_mut(Vec::clear);
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut io: Stream = Box::new(ours);

        // A piece split off the buffer still lives: its memory is not free to reuse.
        let mut buf = BytesMut::new();
        peer.write_all(b"first").await.unwrap();
        fill(&mut io, &mut buf, 1024).await.unwrap();
        let piece = buf.split().freeze();
        release(&mut buf, 1024);
        assert_eq!((buf.capacity(), spares()), (0, 0));
        assert_eq!(&piece[..], b"first");

        // Every piece gone: the allocation is kept, and the next read on a buffer let go of
        // takes it.
        peer.write_all(b"second").await.unwrap();
        fill(&mut io, &mut buf, 1024).await.unwrap();
        let memory = buf.as_ptr();
        drop(buf.split());
        release(&mut buf, 1024);
        assert_eq!((buf.capacity(), spares()), (0, 1));
        peer.write_all(b"third").await.unwrap();
        fill(&mut io, &mut buf, 1024).await.unwrap();
        assert_eq!(
            (&buf[..], buf.as_ptr(), spares()),
            (&b"third"[..], memory, 0)
        );

        // A buffer not empty (bytes of the next message in it) is not kept.
        release(&mut buf, 1024);
        assert_eq!((buf.capacity(), spares()), (0, 0));
    }
}
