//! The xattr section at the start of a value whose datatype has the XATTR
//! bit: `u32 section_len`, then pairs of `u32 pair_len, key, 0x00, value,
//! 0x00`; the document body follows the section.
//!
//! A value that is also Snappy-compressed must be decompressed first (the
//! whole value is compressed, xattrs included).

use bytes::{BufMut, Bytes};

use crate::codec::{DecodeError, DecodeErrorKind};

/// A validated xattr section and the body after it, both zero-copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrValue {
    /// The pairs, without the leading section length.
    section: Bytes,
    /// The document body.
    pub body: Bytes,
}

fn xattr_error(reason: &'static str, offset: usize) -> DecodeError {
    DecodeError::new(DecodeErrorKind::Xattr(reason), None, offset)
}

impl XattrValue {
    /// Splits and validates a value that starts with an xattr section.
    ///
    /// Errors carry the offset within the value.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use dcp_proto::msg::XattrValue;
    /// let mut raw = Vec::new();
    /// XattrValue::put(&mut raw, &[(b"_sync", b"{\"rev\":1}")], b"{\"body\":true}");
    /// let value = XattrValue::split(&Bytes::from(raw))?;
    /// let pairs: Vec<_> = value.pairs().collect();
    /// assert_eq!(pairs, vec![(&b"_sync"[..], &b"{\"rev\":1}"[..])]);
    /// assert_eq!(&value.body[..], b"{\"body\":true}");
    /// # Ok::<(), dcp_proto::codec::DecodeError>(())
    /// ```
    pub fn split(value: &Bytes) -> Result<XattrValue, DecodeError> {
        let Some(len) = value.first_chunk::<4>() else {
            return Err(xattr_error("no section length", 0));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some(section) = value.get(4..).and_then(|rest| rest.get(..len)) else {
            return Err(xattr_error("section length exceeds the value", 0));
        };
        let mut rest = section;
        let mut offset = 4;
        while !rest.is_empty() {
            let Some((pair_len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(xattr_error("truncated pair length", offset));
            };
            let pair_len = u32::from_be_bytes(*pair_len) as usize;
            let Some((pair, tail)) = tail.split_at_checked(pair_len) else {
                return Err(xattr_error("pair overruns the section", offset));
            };
            split_pair(pair).ok_or_else(|| xattr_error("malformed pair", offset))?;
            offset += 4 + pair_len;
            rest = tail;
        }
        Ok(XattrValue {
            section: value.slice(4..4 + len),
            body: value.slice(4 + len..),
        })
    }

    /// The (key, value) pairs in order.
    pub fn pairs(&self) -> XattrPairs<'_> {
        XattrPairs {
            rest: &self.section,
        }
    }

    /// The value of the xattr `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Length of the section on the wire (length prefix included).
    pub fn section_len(&self) -> usize {
        4 + self.section.len()
    }

    /// Appends a value made of `pairs` and `body`.
    pub fn put<B: BufMut>(buf: &mut B, pairs: &[(&[u8], &[u8])], body: &[u8]) {
        let section: usize = pairs.iter().map(|(k, v)| 4 + k.len() + v.len() + 2).sum();
        buf.put_u32(section as u32);
        for (k, v) in pairs {
            buf.put_u32((k.len() + v.len() + 2) as u32);
            buf.put_slice(k);
            buf.put_u8(0);
            buf.put_slice(v);
            buf.put_u8(0);
        }
        buf.put_slice(body);
    }
}

/// Splits `key 0x00 value 0x00`; the key must be non-empty.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let (last, kv) = pair.split_last()?;
    if *last != 0 {
        return None;
    }
    let nul = kv.iter().position(|&b| b == 0)?;
    let (key, value) = kv.split_at_checked(nul)?;
    let value = value.get(1..)?;
    if key.is_empty() || value.contains(&0) {
        return None;
    }
    Some((key, value))
}

/// Iterator over the pairs of a validated [`XattrValue`].
#[derive(Debug, Clone)]
pub struct XattrPairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for XattrPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (len, tail) = self.rest.split_first_chunk::<4>()?;
        let (pair, tail) = tail.split_at_checked(u32::from_be_bytes(*len) as usize)?;
        self.rest = tail;
        split_pair(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let mut raw = Vec::new();
        XattrValue::put(&mut raw, &[(b"_sync", b"{}"), (b"meta", b"[1]")], b"body");
        let v = XattrValue::split(&Bytes::from(raw)).unwrap();
        assert_eq!(v.get(b"meta"), Some(&b"[1]"[..]));
        assert_eq!(v.get(b"nope"), None);
        assert_eq!(v.pairs().count(), 2);
        assert_eq!(&v.body[..], b"body");
        assert_eq!(v.section_len(), 4 + (4 + 5 + 2 + 2) + (4 + 4 + 3 + 2));
    }

    #[test]
    fn empty_section_is_valid() {
        let v = XattrValue::split(&Bytes::from_static(&[0, 0, 0, 0, b'x'])).unwrap();
        assert_eq!(v.pairs().count(), 0);
        assert_eq!(&v.body[..], b"x");
    }

    #[test]
    fn malformed_sections_are_errors() {
        let cases: [&[u8]; 6] = [
            &[0, 0],                                  // no length
            &[0, 0, 0, 9, 0],                         // section overruns value
            &[0, 0, 0, 2, 0, 0],                      // truncated pair length
            &[0, 0, 0, 6, 0, 0, 0, 9, b'k', 0],       // pair overruns section
            &[0, 0, 0, 7, 0, 0, 0, 3, b'k', 0, b'v'], // value not NUL-terminated
            &[0, 0, 0, 6, 0, 0, 0, 2, 0, 0],          // empty key
        ];
        for case in cases {
            let err = XattrValue::split(&Bytes::copy_from_slice(case)).unwrap_err();
            assert!(matches!(err.kind, DecodeErrorKind::Xattr(_)), "{case:?}");
        }
    }
}
