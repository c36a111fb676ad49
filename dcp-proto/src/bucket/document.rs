//! One stored version of a document: a live value or a tombstone, with the
//! metadata DCP carries (seqno, rev seqno, CAS, flags, expiry, datatype).

use bytes::Bytes;

use crate::codec::Datatype;
use crate::msg::XattrValue;

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DocumentKind {
    /// A live document (set, add, replace, append, prepend, incr/decr,
    /// touch).
    Mutation,
    /// A tombstone left by a delete.
    Deletion,
    /// A tombstone left by expiry (the expiry pager, or a read of an expired
    /// document).
    Expiration,
    /// A collections system event (see [`crate::bucket::SystemEventItem`]):
    /// `flags` holds the event id, `key` the wire key (a name, or empty for
    /// drops) and `value` the event's fixed-struct value, as a
    /// non-FlatBuffers connection receives them.
    SystemEvent,
}

/// One version of a document, as the bucket stores it and DCP streams it.
///
/// The value is stored as written: with the XATTR datatype bit it starts
/// with an xattr section ([`XattrValue`]); a tombstone keeps only the system
/// xattrs (keys starting with `_`) and no body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Document {
    /// The key, without any collection prefix (see `collection`).
    pub key: Bytes,
    /// The collection the document lives in (0: the default collection;
    /// [`SYSTEM_EVENT_COLLECTION`](crate::bucket::SYSTEM_EVENT_COLLECTION)
    /// for system events).
    pub collection: u32,
    /// The value, including the xattr section when `datatype` has XATTR.
    pub value: Bytes,
    /// Datatype bits of `value` (JSON, XATTR; never Snappy).
    pub datatype: Datatype,
    /// Client flags, stored verbatim.
    pub flags: u32,
    /// Absolute expiry time in Unix seconds (0 = never).
    pub expiry: u32,
    /// CAS of this version.
    pub cas: u64,
    /// Revision seqno: 1 for a new key, +1 for every change of the key.
    pub rev_seqno: u64,
    /// The vbucket seqno of this version.
    pub seqno: u64,
    /// Live, deleted or expired.
    pub kind: DocumentKind,
    /// For tombstones: when the delete happened (Unix seconds); 0 otherwise.
    pub delete_time: u32,
}

impl Document {
    /// Whether this is a tombstone: a deletion, an expiration, or a drop
    /// event (a dropped collection's or scope's system event is a deleted
    /// item that compaction purges like any tombstone).
    pub fn is_deleted(&self) -> bool {
        match self.kind {
            DocumentKind::Mutation => false,
            DocumentKind::SystemEvent => super::collections::is_drop_event(self),
            _ => true,
        }
    }

    /// Whether this is a live document (not a tombstone, not a system
    /// event).
    pub fn is_live(&self) -> bool {
        matches!(self.kind, DocumentKind::Mutation)
    }

    /// Whether this is a collections system event.
    pub fn is_system_event(&self) -> bool {
        matches!(self.kind, DocumentKind::SystemEvent)
    }

    /// Whether a live document has expired at `now_unix` (seconds).
    pub fn is_expired(&self, now_unix: u64) -> bool {
        !self.is_deleted() && self.expiry != 0 && u64::from(self.expiry) <= now_unix
    }

    /// The value without its xattr section.
    pub fn body(&self) -> Bytes {
        if self.datatype.is_xattr() {
            XattrValue::split(&self.value).map_or_else(|_| self.value.clone(), |x| x.body)
        } else {
            self.value.clone()
        }
    }

    /// The xattr section (the bytes `XattrValue::put` writes), if any.
    pub fn xattrs(&self) -> Option<XattrValue> {
        if self.datatype.is_xattr() {
            XattrValue::split(&self.value).ok()
        } else {
            None
        }
    }
}

/// Builds the tombstone value for a deleted document: its system xattrs
/// only (user xattrs and the body are dropped), and the datatype that goes
/// with it.
pub(crate) fn tombstone_value(doc: &Document) -> (Bytes, Datatype) {
    let Some(xattrs) = doc.xattrs() else {
        return (Bytes::new(), Datatype::RAW);
    };
    let system: Vec<(&[u8], &[u8])> = xattrs
        .pairs()
        .filter(|(k, _)| k.first() == Some(&b'_'))
        .collect();
    if system.is_empty() {
        return (Bytes::new(), Datatype::RAW);
    }
    let mut buf = bytes::BytesMut::new();
    XattrValue::put(&mut buf, &system, &[]);
    (buf.freeze(), Datatype::XATTR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(value: Bytes, datatype: Datatype) -> Document {
        Document {
            key: Bytes::from_static(b"k"),
            collection: 0,
            value,
            datatype,
            flags: 0,
            expiry: 0,
            cas: 1,
            rev_seqno: 1,
            seqno: 1,
            kind: DocumentKind::Mutation,
            delete_time: 0,
        }
    }

    #[test]
    fn tombstones_keep_system_xattrs_only() {
        let mut buf = bytes::BytesMut::new();
        XattrValue::put(
            &mut buf,
            &[(b"_sys", b"{\"a\":1}"), (b"user", b"2")],
            b"{\"body\":true}",
        );
        let d = doc(buf.freeze(), Datatype::XATTR | Datatype::JSON);
        assert_eq!(&d.body()[..], b"{\"body\":true}");
        let (value, datatype) = tombstone_value(&d);
        assert_eq!(datatype, Datatype::XATTR);
        let x = XattrValue::split(&value).unwrap();
        assert_eq!(x.get(b"_sys"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(x.get(b"user"), None);
        assert!(x.body.is_empty());

        let plain = doc(Bytes::from_static(b"v"), Datatype::RAW);
        assert_eq!(tombstone_value(&plain), (Bytes::new(), Datatype::RAW));
        assert!(!plain.is_expired(10));
        let mut ttl = plain.clone();
        ttl.expiry = 10;
        assert!(ttl.is_expired(10) && !ttl.is_expired(9));
    }
}
