//! Collection-aware document keys: an unsigned LEB128 collection id followed
//! by the key proper (after HELLO Collections).

use bytes::{BufMut, Bytes};

use crate::codec::{DecodeError, DecodeErrorKind, Leb128Error};

/// The default collection's id.
pub const DEFAULT_COLLECTION: u32 = 0;

/// Most bytes a canonical u32 LEB128 takes.
pub const MAX_LEB128_LEN: usize = 5;

/// Reads a canonical unsigned LEB128 `u32` from the start of `input`,
/// returning the value and the bytes it took.
///
/// As the server does, accepts at most 5 bytes and only the shortest form.
///
/// ```
/// use dcp_proto::msg::read_leb128_u32;
/// assert_eq!(read_leb128_u32(&[0xd5, 0x0a, b'k']), Ok((0x555, 2)));
/// assert!(read_leb128_u32(&[0x80, 0x00]).is_err()); // not the shortest form
/// ```
pub fn read_leb128_u32(input: &[u8]) -> Result<(u32, usize), Leb128Error> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().take(MAX_LEB128_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(Leb128Error::NonCanonical);
            }
            return u32::try_from(value)
                .map(|v| (v, i + 1))
                .map_err(|_| Leb128Error::Overlong);
        }
    }
    if input.len() >= MAX_LEB128_LEN {
        Err(Leb128Error::Overlong)
    } else {
        Err(Leb128Error::Unterminated)
    }
}

/// Appends `value` as canonical unsigned LEB128.
pub fn put_leb128_u32<B: BufMut>(buf: &mut B, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Bytes `value` takes as LEB128.
pub const fn leb128_len(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// A document key split into its collection id and the key proper.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CollectionKey {
    /// The collection id.
    pub collection_id: u32,
    /// The key without its prefix (a zero-copy slice of the wire key).
    pub key: Bytes,
}

impl CollectionKey {
    /// Splits a wire key of a collections-enabled connection.
    ///
    /// Errors point at offset 0 of the key; an empty key proper is accepted.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use dcp_proto::msg::CollectionKey;
    /// let key = CollectionKey::split(&Bytes::from_static(b"\x08beer"))?;
    /// assert_eq!(key.collection_id, 8);
    /// assert_eq!(&key.key[..], b"beer");
    /// # Ok::<(), dcp_proto::codec::DecodeError>(())
    /// ```
    pub fn split(wire_key: &Bytes) -> Result<CollectionKey, DecodeError> {
        let (collection_id, used) = read_leb128_u32(wire_key)
            .map_err(|e| DecodeError::new(DecodeErrorKind::Leb128(e), None, 0))?;
        Ok(CollectionKey {
            collection_id,
            key: wire_key.slice(used..),
        })
    }

    /// Bytes of the wire form.
    pub fn wire_len(&self) -> usize {
        leb128_len(self.collection_id) + self.key.len()
    }

    /// Appends the wire form: LEB128 collection id, then the key.
    pub fn put<B: BufMut>(&self, buf: &mut B) {
        put_leb128_u32(buf, self.collection_id);
        buf.put_slice(&self.key);
    }

    /// The wire form as new bytes.
    pub fn to_wire(&self) -> Bytes {
        let mut buf = Vec::with_capacity(self.wire_len());
        self.put(&mut buf);
        Bytes::from(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        let cases: [(u32, &[u8]); 7] = [
            (0x00, &[0x00]),
            (0x7f, &[0x7f]),
            (0x80, &[0x80, 0x01]),
            (0x555, &[0xd5, 0x0a]),
            (0x5555, &[0xd5, 0xaa, 0x01]),
            (0xcafe_f00d, &[0x8d, 0xe0, 0xfb, 0xd7, 0x0c]),
            (0xffff_ffff, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, wire) in cases {
            let mut buf = Vec::new();
            put_leb128_u32(&mut buf, value);
            assert_eq!(buf, wire, "{value:#x}");
            assert_eq!(leb128_len(value), wire.len());
            assert_eq!(read_leb128_u32(wire), Ok((value, wire.len())));
        }
    }

    #[test]
    fn refuses_what_the_server_refuses() {
        assert_eq!(read_leb128_u32(&[]), Err(Leb128Error::Unterminated));
        assert_eq!(read_leb128_u32(&[0x80]), Err(Leb128Error::Unterminated));
        assert_eq!(
            read_leb128_u32(&[0x80, 0x00]),
            Err(Leb128Error::NonCanonical)
        );
        assert_eq!(
            read_leb128_u32(&[0xff, 0xff, 0xff, 0xff, 0x10]),
            Err(Leb128Error::Overlong)
        );
        assert_eq!(read_leb128_u32(&[0x80; 6]), Err(Leb128Error::Overlong));
        let err = CollectionKey::split(&Bytes::from_static(&[0x80])).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::Leb128(Leb128Error::Unterminated));
    }

    #[test]
    fn split_round_trips() {
        let key = CollectionKey {
            collection_id: 0x5555,
            key: Bytes::from_static(b"doc::1"),
        };
        let wire = key.to_wire();
        assert_eq!(wire.len(), key.wire_len());
        assert_eq!(CollectionKey::split(&wire).unwrap(), key);
    }
}
