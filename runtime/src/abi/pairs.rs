//! The proxy-wasm pairs (map) encoding, spec §"Pairs": little-endian `u32 count`, then
//! `count × (u32 key_len, u32 value_len)`, then each `key 0x00 value 0x00`.
//!
//! Decoding is the hostile direction (guest bytes in), so it is bounded by the caller's count
//! and size limits and checks every length against the buffer before slicing. It has its own
//! randomized test below, in the spirit of cpp-host's `pairs_util_fuzzer.cc`.

/// Why a pairs buffer from the guest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairsError {
    #[error("pairs buffer is truncated or its lengths do not add up")]
    Malformed,
    #[error("pairs buffer holds {count} pairs, more than the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("pairs buffer is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// Decoded pairs: `(name, value)` bytes in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One `(name, value)` to encode: a tuple of byte strings, or a reference to one.
pub trait Pair {
    fn name(&self) -> &[u8];
    fn value(&self) -> &[u8];
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> Pair for (K, V) {
    fn name(&self) -> &[u8] {
        self.0.as_ref()
    }
    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> Pair for &(K, V) {
    fn name(&self) -> &[u8] {
        self.0.as_ref()
    }
    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

/// Size in bytes of `pairs` once encoded: a slice of pairs, or a `HeaderList::iter()`.
pub fn encoded_size<I>(pairs: I) -> usize
where
    I: IntoIterator<Item: Pair>,
{
    4 + pairs
        .into_iter()
        .map(|p| 8 + p.name().len() + p.value().len() + 2)
        .sum::<usize>()
}

/// Encodes `pairs`. Lengths are `u32`; callers keep maps far below 4 GiB through the limits.
pub fn encode<I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item: Pair, IntoIter: ExactSizeIterator + Clone>,
{
    let pairs = pairs.into_iter();
    let mut out = vec![0; encoded_size(pairs.clone())];
    encode_into(pairs, &mut out);
    out
}

/// Encodes `pairs` into `out`, which must be exactly [`encoded_size`] bytes long (e.g. memory
/// the guest just allocated for them). Walks `pairs` twice, hence `Clone`.
///
/// # Panics
/// If `out` has another length: a bug in the caller, never a property of the data.
pub fn encode_into<I>(pairs: I, out: &mut [u8])
where
    I: IntoIterator<Item: Pair, IntoIter: ExactSizeIterator + Clone>,
{
    let pairs = pairs.into_iter();
    out[..4].copy_from_slice(&(pairs.len() as u32).to_le_bytes());
    let (mut table, mut data) = (4, 4 + 8 * pairs.len());
    for p in pairs {
        for bytes in [p.name(), p.value()] {
            out[table..table + 4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
            table += 4;
            out[data..data + bytes.len()].copy_from_slice(bytes);
            out[data + bytes.len()] = 0;
            data += bytes.len() + 1;
        }
    }
    assert_eq!(
        data,
        out.len(),
        "pairs: output longer than the encoded size"
    );
}

/// Decodes a guest pairs buffer. An empty buffer, or a lone 0x00 byte, is the empty map
/// (both occur in the wild).
pub fn decode(buf: &[u8], max_count: usize, max_bytes: usize) -> Result<Pairs, PairsError> {
    let mut out = Vec::with_capacity(count_hint(buf).min(max_count));
    decode_with(buf, max_count, max_bytes, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
    })?;
    Ok(out)
}

/// [`decode`] without copying: `each` gets every `(name, value)` in order, borrowed from `buf`.
/// On a malformed buffer it may have been called for the pairs before the fault, then `Err`.
pub fn decode_with<'a>(
    buf: &'a [u8],
    max_count: usize,
    max_bytes: usize,
    mut each: impl FnMut(&'a [u8], &'a [u8]),
) -> Result<(), PairsError> {
    if buf.len() > max_bytes {
        return Err(PairsError::TooLarge {
            size: buf.len(),
            limit: max_bytes,
        });
    }
    if buf.is_empty() || buf == [0] {
        return Ok(());
    }
    let word = |at: usize| -> Result<usize, PairsError> {
        let bytes = buf.get(at..at + 4).ok_or(PairsError::Malformed)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    let count = word(0)?;
    if count > max_count {
        return Err(PairsError::TooMany {
            count,
            limit: max_count,
        });
    }
    // The size table alone must fit; this also stops `count` from driving a huge allocation.
    let mut data = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .filter(|&n| n <= buf.len())
        .ok_or(PairsError::Malformed)?;
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = take(buf, &mut data, key_len)?;
        let value = take(buf, &mut data, value_len)?;
        each(key, value);
    }
    Ok(())
}

/// The pair count `buf` declares, capped by what its length could hold (10 bytes per pair at
/// least), to size a destination before decoding; 0 for a buffer too short to say.
pub fn count_hint(buf: &[u8]) -> usize {
    let declared = buf
        .first_chunk::<4>()
        .map_or(0, |w| u32::from_le_bytes(*w) as usize);
    declared.min(buf.len().saturating_sub(4) / 10)
}

/// Takes `len` bytes then the NUL terminator that must follow them.
fn take<'a>(buf: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], PairsError> {
    let end = at.checked_add(len).ok_or(PairsError::Malformed)?;
    let bytes = buf.get(*at..end).ok_or(PairsError::Malformed)?;
    if buf.get(end) != Some(&0) {
        return Err(PairsError::Malformed);
    }
    *at = end + 1;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn round_trips_including_empty_and_binary_values() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b":path".to_vec(), b"/".to_vec()),
            (b"x-empty".to_vec(), Vec::new()),
            (b"bin".to_vec(), vec![0xff, 0x00, 0x01]),
        ];
        let enc = encode(&pairs);
        assert_eq!(enc.len(), encoded_size(&pairs));
        assert_eq!(decode(&enc, 1024, 1 << 20).unwrap(), pairs);
    }

    #[test]
    fn matches_the_spec_layout_byte_for_byte() {
        let enc = encode(&[("1", "22")]);
        assert_eq!(
            enc,
            [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'1', 0, b'2', b'2', 0]
        );
    }

    #[test]
    fn a_header_list_encodes_as_its_pairs_would() {
        let list: crate::HeaderList = [(":path", "/"), ("x-empty", ""), ("a", "1")]
            .into_iter()
            .collect();
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            list.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(encode(&list), encode(&pairs));
        assert_eq!(encoded_size(&list), encode(&pairs).len());
        let mut out = vec![0xaa; encoded_size(&list)];
        encode_into(&list, &mut out);
        assert_eq!(out, encode(&pairs));
        assert_eq!(encode(&crate::HeaderList::new()), [0, 0, 0, 0]);
    }

    #[test]
    fn decode_with_borrows_and_count_hint_is_bounded() {
        let enc = encode(&[("k", "v"), ("k2", "")]);
        let mut seen = Vec::new();
        decode_with(&enc, 8, 64, |k, v| seen.push((k, v))).unwrap();
        assert_eq!(seen, [(&b"k"[..], &b"v"[..]), (b"k2", b"")]);
        assert_eq!(count_hint(&enc), 2);
        // A count that claims more than the buffer could hold is capped by its length.
        assert_eq!(
            count_hint(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            1
        );
        assert_eq!(count_hint(&[1, 0]), 0);
    }

    #[test]
    fn empty_forms_decode_to_the_empty_map() {
        assert!(decode(&[], 8, 64).unwrap().is_empty());
        assert!(decode(&[0], 8, 64).unwrap().is_empty());
        assert!(
            decode(&encode::<&[(&str, &str)]>(&[]), 8, 64)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn limits_are_enforced() {
        let enc = encode(&[("a", "b"), ("c", "d")]);
        assert_eq!(
            decode(&enc, 1, 1 << 20),
            Err(PairsError::TooMany { count: 2, limit: 1 })
        );
        assert!(matches!(
            decode(&enc, 8, 4),
            Err(PairsError::TooLarge { .. })
        ));
        // A count that claims more entries than the buffer could ever hold.
        assert_eq!(
            decode(&[0xff, 0xff, 0, 0], usize::MAX, 1 << 20),
            Err(PairsError::Malformed)
        );
    }

    #[test]
    fn missing_terminator_is_malformed() {
        let mut enc = encode(&[("k", "v")]);
        let last = enc.len() - 1;
        enc[last] = b'x';
        assert_eq!(decode(&enc, 8, 64), Err(PairsError::Malformed));
    }

    /// Fuzz-style: random maps round-trip, and random or mutated bytes never panic and never
    /// produce more pairs than the limit.
    #[test]
    fn randomized_round_trip_and_garbage_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5eed_9a17);
        for _ in 0..2000 {
            let n = rng.random_range(0..12);
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                .map(|_| {
                    let k = (0..rng.random_range(0..16)).map(|_| rng.random()).collect();
                    let v = (0..rng.random_range(0..32)).map(|_| rng.random()).collect();
                    (k, v)
                })
                .collect();
            let enc = encode(&pairs);
            assert_eq!(decode(&enc, 64, 1 << 20).unwrap(), pairs);

            let mut mutated = enc.clone();
            if !mutated.is_empty() {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..mutated.len());
                    mutated[i] = rng.random();
                }
            }
            mutated.truncate(rng.random_range(0..=mutated.len()));
            if let Ok(decoded) = decode(&mutated, 64, 1 << 20) {
                assert!(decoded.len() <= 64);
            }

            let garbage: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let _ = decode(&garbage, 64, 1 << 20);
        }
    }
}
