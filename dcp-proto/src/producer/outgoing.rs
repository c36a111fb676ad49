//! Encoding a stream's messages as the connection negotiated them: the
//! marker version, DELETION v1/v2, EXPIRATION, value and xattr stripping,
//! collection-id key prefixes, Snappy compression and stream-id framing.

use bytes::{BufMut, Bytes, BytesMut};

use super::oso::OsoEdge;
use super::stream::Outgoing;
use crate::bucket::{Document, DocumentKind};
use crate::codec::{Datatype, EncodeError, Opcode};
use crate::msg::{
    Deletion, Expiration, MarkerFormat, Mutation, OpenFlags, OsoFlags, OsoSnapshot, SeqnoAdvanced,
    SnapshotFlags, SnapshotMarker, StreamEnd, XattrValue, compress_value, leb128_len,
    put_leb128_u32,
};

/// What the connection negotiated that shapes stream messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodeContext {
    pub(crate) collections: bool,
    pub(crate) open_flags: OpenFlags,
    pub(crate) expiry_opcode: bool,
    pub(crate) marker_v2_2: bool,
    pub(crate) sync_replication: bool,
    /// The client negotiated Snappy.
    pub(crate) snappy: bool,
    /// `force_value_compression`: compress every non-empty value.
    pub(crate) force_compression: bool,
    /// `flatbuffers_system_events`: system event values in version 2.
    pub(crate) flatbuffers_events: bool,
}

/// Which stream a message belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamAddress {
    pub(crate) vbucket: u16,
    pub(crate) opaque: u32,
    pub(crate) stream_id: Option<u16>,
}

fn without_xattr_bit(datatype: Datatype) -> Datatype {
    Datatype(datatype.bits() & !Datatype::XATTR.bits())
}

/// The key as sent: with the collection id's LEB128 prefix on collections
/// connections.
pub(super) fn wire_key(doc: &Document, collections: bool) -> Bytes {
    if collections {
        let mut key = BytesMut::with_capacity(doc.key.len() + leb128_len(doc.collection));
        put_leb128_u32(&mut key, doc.collection);
        key.put_slice(&doc.key);
        key.freeze()
    } else {
        doc.key.clone()
    }
}

/// The xattr section of a stored value (with its length prefix).
fn xattr_section(doc: &Document) -> Option<Bytes> {
    let x = doc.xattrs()?;
    Some(doc.value.slice(..doc.value.len() - x.body.len()))
}

/// A live document's value and datatype as this connection receives them.
pub(super) fn mutation_value(doc: &Document, flags: OpenFlags) -> (Bytes, Datatype) {
    let include_xattrs = flags.contains(OpenFlags::INCLUDE_XATTRS);
    let section = if include_xattrs {
        xattr_section(doc)
    } else {
        None
    };
    let xattr_only = || match &section {
        Some(s) => (s.clone(), Datatype::XATTR),
        None => (Bytes::new(), Datatype::RAW),
    };
    if flags.contains(OpenFlags::NO_VALUE) {
        xattr_only()
    } else if flags.contains(OpenFlags::NO_VALUE_WITH_UNDERLYING_DATATYPE) {
        let (value, _) = xattr_only();
        let datatype = if section.is_some() {
            doc.datatype
        } else {
            without_xattr_bit(doc.datatype)
        };
        (value, datatype)
    } else if include_xattrs {
        (doc.value.clone(), doc.datatype)
    } else {
        (doc.body(), without_xattr_bit(doc.datatype))
    }
}

/// A tombstone's value: with IncludeXattrs its system xattrs, and its user
/// xattrs too with IncludeDeletedUserXattrs; otherwise empty.
pub(super) fn tombstone_value(doc: &Document, flags: OpenFlags) -> (Bytes, Datatype) {
    if !flags.contains(OpenFlags::INCLUDE_XATTRS) {
        return (Bytes::new(), Datatype::RAW);
    }
    let Some(xattrs) = doc.xattrs() else {
        return (Bytes::new(), Datatype::RAW);
    };
    let is_system = |key: &[u8]| key.first() == Some(&b'_');
    if flags.contains(OpenFlags::INCLUDE_DELETED_USER_XATTRS)
        || xattrs.pairs().all(|(k, _)| is_system(k))
    {
        return match xattr_section(doc) {
            Some(section) => (section, Datatype::XATTR),
            None => (Bytes::new(), Datatype::RAW),
        };
    }
    let system: Vec<(&[u8], &[u8])> = xattrs.pairs().filter(|(k, _)| is_system(k)).collect();
    if system.is_empty() {
        return (Bytes::new(), Datatype::RAW);
    }
    let mut section = BytesMut::new();
    XattrValue::put(&mut section, &system, &[]);
    (section.freeze(), Datatype::XATTR)
}

/// The value as sent: with Snappy negotiated, compressed when that makes it
/// smaller (every non-empty value with `force_value_compression`); without
/// Snappy, never compressed.
pub(super) fn wire_value(
    (value, datatype): (Bytes, Datatype),
    ctx: &EncodeContext,
) -> (Bytes, Datatype) {
    if !ctx.snappy || value.is_empty() || datatype.is_snappy() {
        return (value, datatype);
    }
    match compress_value(datatype, &value) {
        Some((packed_type, packed)) if ctx.force_compression || packed.len() < value.len() => {
            (packed, packed_type)
        }
        _ => (value, datatype),
    }
}

/// Appends `message` to `buf`; returns its opcode (for flow-control
/// accounting).
pub(crate) fn encode(
    message: &Outgoing,
    to: StreamAddress,
    ctx: &EncodeContext,
    buf: &mut BytesMut,
) -> Result<Opcode, EncodeError> {
    let StreamAddress {
        vbucket,
        opaque,
        stream_id,
    } = to;
    match message {
        Outgoing::Marker {
            start,
            end,
            flags,
            purge_seqno,
            seqnos,
        } => {
            let disk = flags.contains(SnapshotFlags::DISK);
            // The high completed seqno is meaningful only on disk markers.
            let high_completed_seqno = if disk { seqnos.high_completed } else { 0 };
            let format = if disk && ctx.marker_v2_2 {
                MarkerFormat::V2_2 {
                    max_visible_seqno: seqnos.max_visible,
                    high_completed_seqno,
                    purge_seqno: *purge_seqno,
                    high_prepared_seqno: seqnos.high_prepared,
                }
            } else if ctx.sync_replication {
                MarkerFormat::V2_0 {
                    max_visible_seqno: seqnos.max_visible,
                    high_completed_seqno,
                }
            } else {
                MarkerFormat::V1
            };
            SnapshotMarker {
                vbucket,
                opaque,
                stream_id,
                start: *start,
                end: *end,
                flags: *flags,
                format,
            }
            .encode(buf)?;
            Ok(Opcode::DcpSnapshotMarker)
        }
        Outgoing::Item { doc, .. } if doc.is_system_event() => {
            super::collections::encode_system_event(doc, to, ctx.flatbuffers_events, buf)
        }
        Outgoing::Item { doc, from_disk } => {
            let key = wire_key(doc, ctx.collections);
            let flags = ctx.open_flags;
            let delete_times = flags.contains(OpenFlags::INCLUDE_DELETE_TIMES);
            match doc.kind {
                DocumentKind::Mutation => {
                    let (value, datatype) = wire_value(mutation_value(doc, flags), ctx);
                    Mutation {
                        vbucket,
                        opaque,
                        stream_id,
                        cas: doc.cas,
                        datatype,
                        by_seqno: doc.seqno,
                        rev_seqno: doc.rev_seqno,
                        flags: doc.flags,
                        expiration: doc.expiry,
                        lock_time: 0,
                        nru: 0,
                        key,
                        value,
                    }
                    .encode(buf)?;
                    Ok(Opcode::DcpMutation)
                }
                DocumentKind::Expiration if ctx.expiry_opcode && delete_times => {
                    let (value, datatype) = wire_value(tombstone_value(doc, flags), ctx);
                    Expiration {
                        vbucket,
                        opaque,
                        stream_id,
                        cas: doc.cas,
                        datatype,
                        by_seqno: doc.seqno,
                        rev_seqno: doc.rev_seqno,
                        delete_time: doc.delete_time,
                        key,
                        value,
                    }
                    .encode(buf)?;
                    Ok(Opcode::DcpExpiration)
                }
                DocumentKind::Deletion
                | DocumentKind::Expiration
                // Encoded above.
                | DocumentKind::SystemEvent => {
                    let (value, datatype) = wire_value(tombstone_value(doc, flags), ctx);
                    // In-memory deletes carry delete time 0 (wire.md §7).
                    let delete_time =
                        delete_times.then_some(if *from_disk { doc.delete_time } else { 0 });
                    Deletion {
                        vbucket,
                        opaque,
                        stream_id,
                        cas: doc.cas,
                        datatype,
                        by_seqno: doc.seqno,
                        rev_seqno: doc.rev_seqno,
                        delete_time,
                        key,
                        value,
                    }
                    .encode(buf)?;
                    Ok(Opcode::DcpDeletion)
                }
            }
        }
        Outgoing::Sync(item) => super::sync_write::encode(item, to, ctx, buf),
        Outgoing::Oso(edge) => {
            let flags = match edge {
                OsoEdge::Start => OsoFlags::START,
                OsoEdge::End { .. } => OsoFlags::END,
            };
            OsoSnapshot {
                vbucket,
                opaque,
                stream_id,
                flags,
            }
            .encode(buf)?;
            Ok(Opcode::DcpOsoSnapshot)
        }
        Outgoing::SeqnoAdvanced(seqno) => {
            SeqnoAdvanced {
                vbucket,
                opaque,
                stream_id,
                seqno: *seqno,
            }
            .encode(buf)?;
            Ok(Opcode::DcpSeqnoAdvanced)
        }
        Outgoing::End(reason) => {
            StreamEnd {
                vbucket,
                opaque,
                stream_id,
                reason: *reason,
            }
            .encode(buf)?;
            Ok(Opcode::DcpStreamEnd)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::XattrValue;

    fn doc_with_xattrs() -> Document {
        let mut raw = BytesMut::new();
        XattrValue::put(&mut raw, &[(b"_s", b"1")], b"{}");
        Document {
            key: Bytes::from_static(b"k"),
            collection: 0,
            value: raw.freeze(),
            datatype: Datatype::XATTR | Datatype::JSON,
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
    fn values_are_shaped_by_open_flags() {
        let doc = doc_with_xattrs();
        let (v, d) = mutation_value(&doc, OpenFlags::PRODUCER);
        assert_eq!((&v[..], d), (&b"{}"[..], Datatype::JSON));
        let (v, d) = mutation_value(&doc, OpenFlags::PRODUCER | OpenFlags::INCLUDE_XATTRS);
        assert_eq!((v, d), (doc.value.clone(), doc.datatype));
        let (v, d) = mutation_value(&doc, OpenFlags::PRODUCER | OpenFlags::NO_VALUE);
        assert_eq!((v.len(), d), (0, Datatype::RAW));
        let (v, d) = mutation_value(
            &doc,
            OpenFlags::PRODUCER | OpenFlags::NO_VALUE_WITH_UNDERLYING_DATATYPE,
        );
        assert_eq!((v.len(), d), (0, Datatype::JSON));
        let (v, d) = mutation_value(
            &doc,
            OpenFlags::PRODUCER | OpenFlags::NO_VALUE | OpenFlags::INCLUDE_XATTRS,
        );
        assert_eq!(d, Datatype::XATTR);
        assert!(XattrValue::split(&v).unwrap().body.is_empty());
        let key = wire_key(&doc, true);
        assert_eq!(&key[..], b"\x00k");
    }

    #[test]
    fn values_are_compressed_only_with_snappy() {
        let ctx = EncodeContext {
            collections: false,
            open_flags: OpenFlags::PRODUCER,
            expiry_opcode: false,
            marker_v2_2: false,
            sync_replication: false,
            snappy: false,
            force_compression: false,
            flatbuffers_events: false,
        };
        let long = Bytes::from("ab".repeat(50));
        let short = Bytes::from_static(b"{}");
        let plain = wire_value((long.clone(), Datatype::RAW), &ctx);
        assert_eq!(plain, (long.clone(), Datatype::RAW));
        let snappy = EncodeContext {
            snappy: true,
            ..ctx
        };
        let (v, d) = wire_value((long.clone(), Datatype::XATTR), &snappy);
        assert_eq!(d, Datatype::XATTR | Datatype::SNAPPY);
        assert!(v.len() < long.len());
        // Not smaller: sent plain, unless forced; empty values never.
        let kept = wire_value((short.clone(), Datatype::JSON), &snappy);
        assert_eq!(kept, (short.clone(), Datatype::JSON));
        let forced = EncodeContext {
            force_compression: true,
            ..snappy
        };
        let (v, d) = wire_value((short.clone(), Datatype::JSON), &forced);
        assert!(d.is_snappy() && v.len() > short.len());
        let empty = wire_value((Bytes::new(), Datatype::RAW), &forced);
        assert_eq!(empty, (Bytes::new(), Datatype::RAW));
    }
}
