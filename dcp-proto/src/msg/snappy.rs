//! Snappy value compression (datatype bit 0x02): the whole value, xattr
//! section included, is one raw Snappy block (no framing format).
//!
//! Decompression is bounded: the uncompressed length the block's header
//! claims is checked against a maximum before anything is allocated.

use bytes::Bytes;

use crate::codec::Datatype;

/// Why a Snappy-compressed value could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnappyError {
    /// The header claims more uncompressed bytes than allowed.
    #[error("Snappy value claims {len} uncompressed bytes, above the maximum of {max}")]
    TooLarge {
        /// The uncompressed length the header claims.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The block is not valid Snappy.
    #[error("corrupt Snappy value: {0}")]
    Corrupt(String),
}

/// Decompresses `value` if `datatype` has the Snappy bit; returns the
/// datatype without that bit and the plain value. Values without the bit
/// are returned unchanged (zero-copy); an empty value with the bit is taken
/// as the empty value.
///
/// `max` bounds the uncompressed length (e.g. the maximum frame length):
/// a larger claimed length is [`SnappyError::TooLarge`] and nothing is
/// allocated.
///
/// ```
/// use bytes::Bytes;
/// use dcp_proto::codec::Datatype;
/// use dcp_proto::msg::{compress_value, decompress_value};
/// let plain = Bytes::from_static(b"{\"a\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}");
/// let (datatype, packed) = compress_value(Datatype::JSON, &plain).unwrap();
/// assert!(datatype.is_snappy() && packed.len() < plain.len());
/// let (datatype, value) = decompress_value(datatype, &packed, 1 << 20)?;
/// assert_eq!((datatype, value), (Datatype::JSON, plain));
/// # Ok::<(), dcp_proto::msg::SnappyError>(())
/// ```
pub fn decompress_value(
    datatype: Datatype,
    value: &Bytes,
    max: usize,
) -> Result<(Datatype, Bytes), SnappyError> {
    if !datatype.is_snappy() {
        return Ok((datatype, value.clone()));
    }
    let plain_type = Datatype(datatype.bits() & !Datatype::SNAPPY.bits());
    // Strictly not a Snappy block (the empty string compresses to one
    // byte), but unambiguous: taken as the empty value.
    if value.is_empty() {
        return Ok((plain_type, Bytes::new()));
    }
    let corrupt = |e: snap::Error| SnappyError::Corrupt(e.to_string());
    let len = snap::raw::decompress_len(value).map_err(corrupt)?;
    if len > max {
        return Err(SnappyError::TooLarge { len, max });
    }
    let mut out = vec![0u8; len];
    let written = snap::raw::Decoder::new()
        .decompress(value, &mut out)
        .map_err(corrupt)?;
    out.truncate(written);
    Ok((plain_type, Bytes::from(out)))
}

/// Compresses `value` (whose datatype must not have the Snappy bit yet);
/// returns the datatype with the Snappy bit and the compressed block.
/// `None` if the value is already compressed or too large for Snappy.
pub fn compress_value(datatype: Datatype, value: &Bytes) -> Option<(Datatype, Bytes)> {
    if datatype.is_snappy() {
        return None;
    }
    let packed = snap::raw::Encoder::new().compress_vec(value).ok()?;
    Some((datatype | Datatype::SNAPPY, Bytes::from(packed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_other_bits() {
        let plain = Bytes::from(b"xyz".repeat(100));
        let dt = Datatype::JSON | Datatype::XATTR;
        let (packed_dt, packed) = compress_value(dt, &plain).unwrap();
        assert_eq!(packed_dt, Datatype(0x07));
        assert!(packed.len() < plain.len());
        assert_eq!(
            decompress_value(packed_dt, &packed, 300).unwrap(),
            (dt, plain)
        );
        // Empty values compress too.
        let (edt, empty) = compress_value(Datatype::RAW, &Bytes::new()).unwrap();
        assert_eq!(
            decompress_value(edt, &empty, 0).unwrap(),
            (Datatype::RAW, Bytes::new())
        );
        // An empty value with the bit is the empty value.
        assert_eq!(
            decompress_value(Datatype::SNAPPY | Datatype::JSON, &Bytes::new(), 0).unwrap(),
            (Datatype::JSON, Bytes::new())
        );
        // Already compressed: left alone.
        assert!(compress_value(packed_dt, &packed).is_none());
    }

    #[test]
    fn plain_values_pass_through() {
        let v = Bytes::from_static(b"not snappy");
        assert_eq!(
            decompress_value(Datatype::JSON, &v, 0).unwrap(),
            (Datatype::JSON, v)
        );
    }

    #[test]
    fn hostile_length_is_refused_before_allocating() {
        let plain = Bytes::from(vec![b'a'; 1000]);
        let (dt, packed) = compress_value(Datatype::RAW, &plain).unwrap();
        assert_eq!(
            decompress_value(dt, &packed, 999),
            Err(SnappyError::TooLarge {
                len: 1000,
                max: 999
            })
        );
        // A header claiming ~4 GiB followed by nothing.
        let hostile = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decompress_value(Datatype::SNAPPY, &hostile, 20 * 1024 * 1024),
            Err(SnappyError::TooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_input_is_a_typed_error() {
        for bad in [
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80][..],
            &[0x0a, 0x00][..],
            &[0x05, 0x08, b'a'][..],
            &[0x04, 0x0c, b'a', b'b', b'c', b'd', b'e'][..],
        ] {
            let got = decompress_value(Datatype::SNAPPY, &Bytes::copy_from_slice(bad), 1 << 20);
            assert!(
                matches!(got, Err(SnappyError::Corrupt(_))),
                "{bad:?}: {got:?}"
            );
        }
    }
}
