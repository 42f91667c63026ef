use super::*;

/// Everything `decoder` yields from `wire` fed `step` bytes at a time, and what is left after
/// the body's end (bytes past it), or the error.
fn decode_all(mut decoder: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => {
                assert!(!data.is_empty(), "a piece of body is never empty");
                body.extend_from_slice(&data);
            }
            Decoded::End => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&wire[fed..]);
                return Ok((body, rest));
            }
            Decoded::NeedMore if fed == wire.len() => {
                decoder.at_eof()?;
                assert!(decoder.is_done());
                return Ok((body, buf.to_vec()));
            }
            Decoded::NeedMore => {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

/// The same result whether the wire arrives at once or a byte at a time.
fn decode(decoder: impl Fn() -> Decoder, wire: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let whole = decode_all(decoder(), wire, wire.len().max(1));
    let bytewise = decode_all(decoder(), wire, 1);
    match (&whole, &bytewise) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "wire {:?}", String::from_utf8_lossy(wire)),
        (Err(_), Err(_)) => {}
        _ => panic!("{whole:?} at once but {bytewise:?} bytewise"),
    }
    whole
}

fn etype(r: Result<(Vec<u8>, Vec<u8>)>) -> ErrorType {
    r.expect_err("an error").etype().clone()
}

#[test]
fn a_length_body_ends_at_its_length_and_leaves_what_follows() {
    let (body, rest) = decode(|| Decoder::length(5), b"hello, and more").unwrap();
    assert_eq!(body, b"hello");
    assert_eq!(rest, b", and more");
    let (body, rest) = decode(|| Decoder::length(0), b"next").unwrap();
    assert!(body.is_empty());
    assert_eq!(rest, b"next");
}

#[test]
fn a_length_body_cut_short_is_an_error() {
    assert_eq!(
        etype(decode(|| Decoder::length(10), b"short")),
        ConnectionClosed
    );
}

#[test]
fn a_body_until_close_is_everything_to_the_end() {
    let (body, rest) = decode(|| Decoder::UntilClose, b"all of it").unwrap();
    assert_eq!(body, b"all of it");
    assert!(rest.is_empty());
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let (body, rest) = decode(
        Decoder::chunked,
        b"5\r\nhello\r\n1;ext=\"v\"\r\n,\r\nA\r\n world!!!!\r\n0\r\n\r\nGET / HTTP/1.1",
    )
    .unwrap();
    assert_eq!(body, b"hello, world!!!!");
    assert_eq!(rest, b"GET / HTTP/1.1");

    let (body, rest) = decode(
        Decoder::chunked,
        b"3\r\nabc\r\n0\r\nx-trailer: 1\r\nx-other: 2\r\n\r\n",
    )
    .unwrap();
    assert_eq!(body, b"abc");
    assert!(rest.is_empty());

    let (body, _) = decode(Decoder::chunked, b"0\r\n\r\n").unwrap();
    assert!(body.is_empty());
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for wire in [
        &b"x\r\nabc\r\n0\r\n\r\n"[..],
        b"3\r\nabcX\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\n\rX",
        b"FFFFFFFFFFFFFFFFFF\r\n",
    ] {
        let e = etype(decode(Decoder::chunked, wire));
        assert!(
            e == INVALID_CHUNK || e == INVALID_TRAILER_END,
            "{:?}: {e:?}",
            String::from_utf8_lossy(wire)
        );
    }
    // Cut off anywhere before the empty line after the last chunk.
    for wire in [
        &b"5\r\nhel"[..],
        b"5\r\nhello\r\n",
        b"0\r\n",
        b"0\r\nx: 1\r\n",
    ] {
        assert_eq!(etype(decode(Decoder::chunked, wire)), ConnectionClosed);
    }
}

#[test]
fn chunk_heads_and_trailers_past_their_limits_are_errors() {
    let mut long_ext = b"1;".to_vec();
    long_ext.resize(limits::MAX_CHUNK_HEAD + 10, b'a');
    assert_eq!(etype(decode(Decoder::chunked, &long_ext)), INVALID_CHUNK);

    let mut trailers = b"0\r\n".to_vec();
    while trailers.len() < limits::MAX_TRAILERS + 100 {
        trailers.extend_from_slice(b"x-filler: 0123456789abcdef\r\n");
    }
    assert_eq!(
        etype(decode(Decoder::chunked, &trailers)),
        INVALID_TRAILER_END
    );
}

#[test]
fn chunk_size_lines_are_uppercase_hex() {
    let mut out = [0; 18];
    assert_eq!(chunk_size_line(0, &mut out), b"0\r\n");
    assert_eq!(chunk_size_line(10, &mut out), b"A\r\n");
    assert_eq!(chunk_size_line(0x1f40, &mut out), b"1F40\r\n");
    assert_eq!(
        chunk_size_line(usize::MAX, &mut out),
        b"FFFFFFFFFFFFFFFF\r\n"
    );
}

#[test]
fn a_body_is_framed_for_its_encoding_and_ended() {
    let mut line = [0; 18];
    let wire = |e: &mut Encoder, data: &[u8]| {
        let mut line = [0; 18];
        let f = e.frame(data, &mut line);
        (f.wire.concat(), f.len)
    };
    // A length: what goes past it is dropped; short of it, the end is an error.
    let mut e = Encoder::Length(5);
    assert_eq!(wire(&mut e, b"hello, and more"), (b"hello".to_vec(), 5));
    assert_eq!(wire(&mut e, b"x"), (vec![], 0));
    assert_eq!(e.finish("response").unwrap(), b"");
    let mut e = Encoder::Length(5);
    e.frame(b"hel", &mut line);
    let short = e.finish("response").unwrap_err();
    assert_eq!(*short.etype(), PREMATURE_BODY_END);
    assert!(
        short.to_string().contains("response body 2 bytes short"),
        "{short}"
    );
    // Chunked: an empty piece is nothing, the end is the last chunk.
    let mut e = Encoder::Chunked;
    assert_eq!(wire(&mut e, b""), (vec![], 0));
    let chunk = [b"1A\r\n".as_slice(), &[b'a'; 26], b"\r\n"].concat();
    assert_eq!(wire(&mut e, &[b'a'; 26]), (chunk, 26));
    assert_eq!(e.finish("request").unwrap(), b"0\r\n\r\n");
    assert_eq!(e, Encoder::Done);
    assert_eq!(wire(&mut e, b"late"), (vec![], 0));
    // Until close: as it is.
    let mut e = Encoder::UntilClose;
    assert_eq!(wire(&mut e, b"raw"), (b"raw".to_vec(), 3));
}
