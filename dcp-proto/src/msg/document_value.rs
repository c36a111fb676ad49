//! A change's value as an application reads it: the extended attributes
//! and the document body apart, Snappy undone.

use bytes::Bytes;

use crate::codec::{DEFAULT_MAX_FRAME_LEN, Datatype, DecodeError};
use crate::msg::{Deletion, Expiration, Mutation, SnappyError, XattrValue, decompress_value};

/// Why a value could not be split into xattrs and body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentValueError {
    /// The value is Snappy-compressed and does not decompress.
    #[error(transparent)]
    Snappy(#[from] SnappyError),
    /// The datatype says the value starts with xattrs, but the section is
    /// malformed.
    #[error(transparent)]
    Xattrs(#[from] DecodeError),
}

/// A value split into its xattrs (when the datatype has the XATTR bit) and
/// its body, zero-copy unless it had to be decompressed.
///
/// Xattrs arrive only on connections opened with `INCLUDE_XATTRS`; system
/// xattrs are those whose key starts with `_`. A deletion carries system
/// xattrs at most (user xattrs too with `INCLUDE_DELETED_USER_XATTRS`) and
/// no body.
///
/// ```
/// use bytes::Bytes;
/// use dcp_proto::codec::Datatype;
/// use dcp_proto::msg::{DocumentValue, XattrValue};
/// let mut raw = Vec::new();
/// XattrValue::put(&mut raw, &[(b"_sync", b"{\"rev\":3}")], b"{\"name\":\"a\"}");
/// let doc = DocumentValue::split(Datatype::XATTR | Datatype::JSON, &Bytes::from(raw))?;
/// assert_eq!(doc.xattr(b"_sync"), Some(&b"{\"rev\":3}"[..]));
/// assert_eq!(&doc.body[..], b"{\"name\":\"a\"}");
/// assert!(doc.is_json());
/// # Ok::<(), dcp_proto::msg::DocumentValueError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentValue {
    /// Datatype of the body (JSON or raw; no Snappy, no XATTR bit).
    pub datatype: Datatype,
    /// The xattr section, if the value had one.
    pub xattrs: Option<XattrValue>,
    /// The document body.
    pub body: Bytes,
}

impl DocumentValue {
    /// Splits `value` as sent with `datatype`. A compressed value is
    /// decompressed first, up to [`DEFAULT_MAX_FRAME_LEN`] bytes.
    pub fn split(datatype: Datatype, value: &Bytes) -> Result<Self, DocumentValueError> {
        let (datatype, plain) = decompress_value(datatype, value, DEFAULT_MAX_FRAME_LEN)?;
        let body_type = Datatype(datatype.bits() & !Datatype::XATTR.bits());
        if datatype.is_xattr() {
            let xattrs = XattrValue::split(&plain)?;
            Ok(Self {
                datatype: body_type,
                body: xattrs.body.clone(),
                xattrs: Some(xattrs),
            })
        } else {
            Ok(Self {
                datatype: body_type,
                xattrs: None,
                body: plain,
            })
        }
    }

    /// The value of the xattr `key`, if present.
    pub fn xattr(&self, key: &[u8]) -> Option<&[u8]> {
        self.xattrs.as_ref()?.get(key)
    }

    /// Whether the body is JSON.
    pub fn is_json(&self) -> bool {
        self.datatype.is_json()
    }
}

impl Mutation {
    /// The value split into xattrs and body ([`DocumentValue::split`]).
    pub fn document(&self) -> Result<DocumentValue, DocumentValueError> {
        DocumentValue::split(self.datatype, &self.value)
    }
}

impl Deletion {
    /// The tombstone's value split into xattrs and body
    /// ([`DocumentValue::split`]).
    pub fn document(&self) -> Result<DocumentValue, DocumentValueError> {
        DocumentValue::split(self.datatype, &self.value)
    }
}

impl Expiration {
    /// The tombstone's value split into xattrs and body
    /// ([`DocumentValue::split`]).
    pub fn document(&self) -> Result<DocumentValue, DocumentValueError> {
        DocumentValue::split(self.datatype, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::compress_value;

    #[test]
    fn plain_compressed_and_broken_values() {
        let plain = DocumentValue::split(Datatype::JSON, &Bytes::from_static(b"{}")).unwrap();
        assert_eq!(
            plain,
            DocumentValue {
                datatype: Datatype::JSON,
                xattrs: None,
                body: Bytes::from_static(b"{}"),
            }
        );

        let mut raw = Vec::new();
        XattrValue::put(&mut raw, &[(b"_s", b"1"), (b"u", b"2")], &[b'x'; 64]);
        let raw = Bytes::from(raw);
        let (packed_type, packed) = compress_value(Datatype::XATTR, &raw).unwrap();
        let doc = DocumentValue::split(packed_type, &packed).unwrap();
        assert_eq!(doc.datatype, Datatype::RAW);
        assert_eq!(
            (doc.xattr(b"_s"), doc.xattr(b"u")),
            (Some(&b"1"[..]), Some(&b"2"[..]))
        );
        assert_eq!(&doc.body[..], &[b'x'; 64][..]);

        assert!(matches!(
            DocumentValue::split(Datatype::XATTR, &Bytes::from_static(b"\0\0\0\x09abc")),
            Err(DocumentValueError::Xattrs(_))
        ));
        assert!(matches!(
            DocumentValue::split(Datatype::SNAPPY, &Bytes::from_static(b"\xff\xff\xff")),
            Err(DocumentValueError::Snappy(_))
        ));
    }
}
