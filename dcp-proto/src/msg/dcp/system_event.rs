//! DCP_SYSTEM_EVENT (0x5f): a collection or scope was created, dropped or
//! modified.

use bytes::{BufMut, Bytes, BytesMut};

use super::system_event_fb;
use crate::codec::{
    DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, code_enum,
};
use crate::msg::check::{self, be_u32, be_u64};
use crate::msg::stream_id::StreamIdFraming;

const EXTRAS_LEN: usize = 13;
/// Version whose value is a FlatBuffers table (`flatbuffers_system_events`).
const FLATBUFFERS_VERSION: u8 = 2;

code_enum! {
    /// The event id of a DCP_SYSTEM_EVENT (2 is reserved and never sent).
    pub enum SystemEventId: u32 {
        /// 0: a collection was created (or, since 8.0, flushed).
        BeginCollection = 0,
        /// 1: a collection was dropped.
        EndCollection = 1,
        /// 3: a scope was created.
        CreateScope = 3,
        /// 4: a scope was dropped.
        DropScope = 4,
        /// 5: a collection's settings changed (FlatBuffers only).
        ModifyCollection = 5,
    }
}

/// A collection as a create, flush or modify event describes it (the
/// FlatBuffers table `Collection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionDetails {
    /// Manifest uid (set only on the last event of a manifest change).
    pub manifest_uid: u64,
    /// Scope of the collection.
    pub scope_id: u32,
    /// The collection.
    pub collection_id: u32,
    /// Its name.
    pub name: Bytes,
    /// Max TTL in seconds, when the collection defines one (version 1 or
    /// 2; `Some(0)` in version 2: documents never expire, whatever the
    /// bucket's TTL).
    pub max_ttl: Option<u32>,
    /// Whether the collection keeps history (change streams).
    pub history: bool,
    /// Whether the collection is metered (serverless deployments).
    pub metered: bool,
    /// Manifest uid of the collection's latest flush (0: never).
    pub flush_uid: u64,
    /// Max visible seqno of the default collection (server bookkeeping,
    /// written only on modify events of the default collection).
    pub default_collection_mvs: u64,
}

impl CollectionDetails {
    /// A collection with the schema defaults for the fields versions 0 and
    /// 1 do not carry (no history, not metered, never flushed).
    pub fn new(
        manifest_uid: u64,
        scope_id: u32,
        collection_id: u32,
        name: Bytes,
        max_ttl: Option<u32>,
    ) -> Self {
        Self {
            manifest_uid,
            scope_id,
            collection_id,
            name,
            max_ttl,
            history: false,
            metered: false,
            flush_uid: 0,
            default_collection_mvs: 0,
        }
    }
}

/// The parsed value of a system event: the same typed data whichever value
/// version (fixed structs 0/1 or FlatBuffers 2) carried it. Fields a fixed
/// struct does not carry read as the FlatBuffers schema's defaults (false,
/// 0); names come from the key for versions 0 and 1.
///
/// ```
/// use bytes::Bytes;
/// use dcp_proto::msg::{CollectionDetails, SystemEvent, SystemEventData};
/// let data = SystemEventData::ModifyCollection(CollectionDetails {
///     history: true,
///     ..CollectionDetails::new(12, 8, 9, Bytes::from_static(b"orders"), Some(60))
/// });
/// // Only FlatBuffers connections can receive a modify event.
/// assert_eq!(data.fixed_version(), None);
/// let event = SystemEvent::from_data(0, 1, None, 5, &data, true).unwrap();
/// assert_eq!((event.version, &event.key[..]), (2, &b"orders"[..]));
/// assert_eq!(event.data().unwrap(), data);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemEventData {
    /// A collection was created, or flushed (a create of a known collection
    /// at a new seqno).
    BeginCollection(CollectionDetails),
    /// A collection's settings changed (max TTL, history, metered);
    /// FlatBuffers connections only. The collection as it now is.
    ModifyCollection(CollectionDetails),
    /// A collection was dropped. FlatBuffers table `DroppedCollection`.
    EndCollection {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// Scope of the collection.
        scope_id: u32,
        /// The collection.
        collection_id: u32,
        /// Whether it was a system collection (version 2 only).
        system: bool,
    },
    /// A scope was created. FlatBuffers table `Scope`.
    CreateScope {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// The scope.
        scope_id: u32,
        /// Its name.
        name: Bytes,
    },
    /// A scope was dropped. FlatBuffers table `DroppedScope`.
    DropScope {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// The scope.
        scope_id: u32,
        /// Whether it was a system scope (version 2 only).
        system: bool,
    },
}

impl SystemEventData {
    /// A create-collection event with the schema defaults for the fields
    /// versions 0 and 1 do not carry.
    pub fn begin_collection(
        manifest_uid: u64,
        scope_id: u32,
        collection_id: u32,
        name: Bytes,
        max_ttl: Option<u32>,
    ) -> Self {
        SystemEventData::BeginCollection(CollectionDetails::new(
            manifest_uid,
            scope_id,
            collection_id,
            name,
            max_ttl,
        ))
    }

    /// The collection a create, flush or modify event describes.
    pub fn collection(&self) -> Option<&CollectionDetails> {
        match self {
            SystemEventData::BeginCollection(c) | SystemEventData::ModifyCollection(c) => Some(c),
            _ => None,
        }
    }

    /// Parses a value outside a frame: `event` and `version` as the
    /// extras would give them, `key` the event's key (the name for versions
    /// 0 and 1). Error offsets count from the start of the value.
    pub fn decode(
        event: SystemEventId,
        version: u8,
        key: &Bytes,
        value: &Bytes,
    ) -> Result<Self, DecodeError> {
        parse_data(event, version, key, value, 0, 0)
    }

    /// The event id this data goes with.
    pub fn event(&self) -> SystemEventId {
        match self {
            SystemEventData::BeginCollection(_) => SystemEventId::BeginCollection,
            SystemEventData::ModifyCollection(_) => SystemEventId::ModifyCollection,
            SystemEventData::EndCollection { .. } => SystemEventId::EndCollection,
            SystemEventData::CreateScope { .. } => SystemEventId::CreateScope,
            SystemEventData::DropScope { .. } => SystemEventId::DropScope,
        }
    }

    /// The manifest uid stamped on the event.
    pub fn manifest_uid(&self) -> u64 {
        match self {
            SystemEventData::BeginCollection(c) | SystemEventData::ModifyCollection(c) => {
                c.manifest_uid
            }
            SystemEventData::EndCollection { manifest_uid, .. }
            | SystemEventData::CreateScope { manifest_uid, .. }
            | SystemEventData::DropScope { manifest_uid, .. } => *manifest_uid,
        }
    }

    /// The scope the event is about (of the collection, for collection
    /// events).
    pub fn scope_id(&self) -> u32 {
        match self {
            SystemEventData::BeginCollection(c) | SystemEventData::ModifyCollection(c) => {
                c.scope_id
            }
            SystemEventData::EndCollection { scope_id, .. }
            | SystemEventData::CreateScope { scope_id, .. }
            | SystemEventData::DropScope { scope_id, .. } => *scope_id,
        }
    }

    /// The collection, for collection events.
    pub fn collection_id(&self) -> Option<u32> {
        match self {
            SystemEventData::BeginCollection(c) | SystemEventData::ModifyCollection(c) => {
                Some(c.collection_id)
            }
            SystemEventData::EndCollection { collection_id, .. } => Some(*collection_id),
            SystemEventData::CreateScope { .. } | SystemEventData::DropScope { .. } => None,
        }
    }

    /// The key the event travels with: the name for creations and
    /// modifications, empty for drops.
    pub fn key(&self) -> Bytes {
        match self {
            SystemEventData::BeginCollection(c) | SystemEventData::ModifyCollection(c) => {
                c.name.clone()
            }
            SystemEventData::CreateScope { name, .. } => name.clone(),
            SystemEventData::EndCollection { .. } | SystemEventData::DropScope { .. } => {
                Bytes::new()
            }
        }
    }

    /// The fixed-struct version a non-FlatBuffers connection receives: 1
    /// for a create with a max TTL, else 0; `None` for ModifyCollection,
    /// which has no fixed layout (the server sends SEQNO_ADVANCED instead).
    pub fn fixed_version(&self) -> Option<u8> {
        match self {
            SystemEventData::BeginCollection(c) => Some(u8::from(c.max_ttl.is_some())),
            SystemEventData::ModifyCollection(_) => None,
            _ => Some(0),
        }
    }

    /// The value in `version` (0 or 1: the fixed struct of wire.md §12; 2:
    /// the FlatBuffers table). Fields a fixed struct cannot carry are left
    /// out; a version the event has no layout for is an error, and so is a
    /// name that is not UTF-8 in version 2.
    pub fn encode_value(&self, version: u8) -> Result<Bytes, EncodeError> {
        if version == FLATBUFFERS_VERSION {
            return system_event_fb::build(self);
        }
        let mut v = BytesMut::with_capacity(20);
        v.put_u64(self.manifest_uid());
        v.put_u32(self.scope_id());
        match (self, version) {
            (SystemEventData::BeginCollection(c), 0 | 1) => {
                v.put_u32(c.collection_id);
                if version == 1 {
                    v.put_u32(c.max_ttl.unwrap_or(0));
                }
            }
            (SystemEventData::EndCollection { collection_id, .. }, 0) => v.put_u32(*collection_id),
            (SystemEventData::CreateScope { .. } | SystemEventData::DropScope { .. }, 0) => {}
            _ => {
                return Err(EncodeError::InvalidField {
                    field: "version",
                    reason: "no value layout for this event and version",
                });
            }
        }
        Ok(v.freeze())
    }
}

/// DCP_SYSTEM_EVENT: a collections change at `by_seqno` (collections
/// connections only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemEvent {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// Sequence number (never 0).
    pub by_seqno: u64,
    /// What happened.
    pub event: SystemEventId,
    /// Value format: 0 or 1 fixed structs, 2 FlatBuffers.
    pub version: u8,
    /// Collection or scope name for creations; empty for drops.
    pub key: Bytes,
    /// Event data; see [`SystemEvent::data`].
    pub value: Bytes,
}

impl SystemEvent {
    /// The event carrying `data`: version 2 (FlatBuffers) when
    /// `flatbuffers` (the connection enabled `flatbuffers_system_events`),
    /// else its [fixed version](SystemEventData::fixed_version), which a
    /// ModifyCollection does not have (an error).
    pub fn from_data(
        vbucket: u16,
        opaque: u32,
        stream_id: Option<u16>,
        by_seqno: u64,
        data: &SystemEventData,
        flatbuffers: bool,
    ) -> Result<Self, EncodeError> {
        let version = if flatbuffers {
            FLATBUFFERS_VERSION
        } else {
            data.fixed_version().ok_or(EncodeError::InvalidField {
                field: "event",
                reason: "ModifyCollection needs FlatBuffers system events",
            })?
        };
        Ok(Self {
            vbucket,
            opaque,
            stream_id,
            by_seqno,
            event: data.event(),
            version,
            key: data.key(),
            value: data.encode_value(version)?,
        })
    }

    /// Decodes a DCP_SYSTEM_EVENT request frame, rejecting unknown event
    /// ids, unknown versions and value sizes that do not fit the event.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpSystemEvent)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<EXTRAS_LEN>(frame, "13")?;
        let at = frame.header().extras_offset();
        let by_seqno = be_u64(extras, 0);
        check::nonzero_seqno(frame, "by_seqno", by_seqno, at)?;
        let event = SystemEventId::from_raw(be_u32(extras, 8));
        let [.., version] = *extras;
        let value = frame.value();
        let key = frame.key();
        parse_data(
            event,
            version,
            &key,
            &value,
            at,
            frame.header().value_offset(),
        )?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            by_seqno,
            event,
            version,
            key,
            value,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; EXTRAS_LEN];
        let mut w = extras.as_mut_slice();
        w.put_u64(self.by_seqno);
        w.put_u32(self.event.raw());
        w.put_u8(self.version);
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpSystemEvent, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &extras,
            &self.key,
            &self.value,
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        self.value_offset() + self.value.len()
    }

    /// Parses the value per event and version (wire.md §12): the fixed
    /// structs of versions 0 and 1 (names from the key), or the FlatBuffers
    /// table of version 2, verified before it is read. Error offsets assume
    /// the frame [`SystemEvent::encode`] would produce.
    pub fn data(&self) -> Result<SystemEventData, DecodeError> {
        let extras_at = 24 + if self.stream_id.is_some() { 3 } else { 0 };
        parse_data(
            self.event,
            self.version,
            &self.key,
            &self.value,
            extras_at,
            self.value_offset(),
        )
    }

    fn value_offset(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 } + EXTRAS_LEN + self.key.len()
    }
}

/// Parses a system event value; `extras_at` and `value_at` are the frame
/// offsets used in errors.
fn parse_data(
    event: SystemEventId,
    version: u8,
    key: &Bytes,
    value: &Bytes,
    extras_at: usize,
    value_at: usize,
) -> Result<SystemEventData, DecodeError> {
    let error = |kind, offset| DecodeError::new(kind, Some(Opcode::DcpSystemEvent), offset);
    let sized = |len: usize, expected: &'static str| {
        if value.len() == len {
            Ok(())
        } else {
            Err(error(
                DecodeErrorKind::ValueLength {
                    expected,
                    got: value.len(),
                },
                value_at,
            ))
        }
    };
    let fb = |kind| error(kind, value_at);
    let manifest_uid = be_u64(value, 0);
    let scope_id = be_u32(value, 8);
    let collection_id = be_u32(value, 12);
    match (event, version) {
        (SystemEventId::Unknown(id), _) => Err(error(
            DecodeErrorKind::InvalidField {
                field: "event",
                value: u64::from(id),
            },
            extras_at + 8,
        )),
        (_, FLATBUFFERS_VERSION) => system_event_fb::read(event, value).map_err(fb),
        (SystemEventId::BeginCollection, 0 | 1) => {
            let max_ttl = if version == 1 {
                sized(20, "20")?;
                Some(be_u32(value, 16))
            } else {
                sized(16, "16")?;
                None
            };
            Ok(SystemEventData::begin_collection(
                manifest_uid,
                scope_id,
                collection_id,
                key.clone(),
                max_ttl,
            ))
        }
        (SystemEventId::EndCollection, 0) => {
            sized(16, "16")?;
            Ok(SystemEventData::EndCollection {
                manifest_uid,
                scope_id,
                collection_id,
                system: false,
            })
        }
        (SystemEventId::CreateScope, 0) => {
            sized(12, "12")?;
            Ok(SystemEventData::CreateScope {
                manifest_uid,
                scope_id,
                name: key.clone(),
            })
        }
        (SystemEventId::DropScope, 0) => {
            sized(12, "12")?;
            Ok(SystemEventData::DropScope {
                manifest_uid,
                scope_id,
                system: false,
            })
        }
        // Other combinations (ModifyCollection below v2, v1 of anything but
        // BeginCollection, versions above 2) have no defined layout.
        _ => Err(error(
            DecodeErrorKind::InvalidField {
                field: "version",
                value: u64::from(version),
            },
            extras_at + 12,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = SystemEvent::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    fn extras(event: u32, version: u8) -> [u8; 13] {
        let mut e = [0u8; 13];
        let mut w = e.as_mut_slice();
        w.put_u64(4);
        w.put_u32(event);
        w.put_u8(version);
        e
    }

    fn value(uid: u64, scope: u32, collection: Option<u32>, ttl: Option<u32>) -> Bytes {
        let mut v = BytesMut::new();
        v.put_u64(uid);
        v.put_u32(scope);
        if let Some(c) = collection {
            v.put_u32(c);
        }
        if let Some(t) = ttl {
            v.put_u32(t);
        }
        v.freeze()
    }

    #[test]
    fn round_trip_every_layout_with_and_without_stream_id() {
        let name = |n: &'static str| Bytes::from_static(n.as_bytes());
        let cases = [
            (
                SystemEventId::BeginCollection,
                0,
                "c1",
                value(2, 8, Some(9), None),
                SystemEventData::begin_collection(2, 8, 9, name("c1"), None),
            ),
            (
                SystemEventId::BeginCollection,
                1,
                "c1",
                value(2, 8, Some(9), Some(60)),
                SystemEventData::begin_collection(2, 8, 9, name("c1"), Some(60)),
            ),
            (
                SystemEventId::EndCollection,
                0,
                "",
                value(3, 8, Some(9), None),
                SystemEventData::EndCollection {
                    manifest_uid: 3,
                    scope_id: 8,
                    collection_id: 9,
                    system: false,
                },
            ),
            (
                SystemEventId::CreateScope,
                0,
                "s1",
                value(4, 8, None, None),
                SystemEventData::CreateScope {
                    manifest_uid: 4,
                    scope_id: 8,
                    name: name("s1"),
                },
            ),
            (
                SystemEventId::DropScope,
                0,
                "",
                value(5, 8, None, None),
                SystemEventData::DropScope {
                    manifest_uid: 5,
                    scope_id: 8,
                    system: false,
                },
            ),
        ];
        for (event, version, key, value, data) in cases {
            for sid in [None, Some(2)] {
                let m = SystemEvent {
                    vbucket: 0x210,
                    opaque: 0x1210,
                    stream_id: sid,
                    by_seqno: 4,
                    event,
                    version,
                    key: Bytes::from_static(key.as_bytes()),
                    value: value.clone(),
                };
                let mut buf = BytesMut::new();
                m.encode(&mut buf).unwrap();
                assert_eq!(buf.len(), m.wire_len());
                let back = SystemEvent::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap();
                assert_eq!(back, m);
                assert_eq!(back.data().unwrap(), data);
                // The typed data encodes back to the same fixed value.
                let built = SystemEvent::from_data(0x210, 0x1210, sid, 4, &data, false).unwrap();
                assert_eq!(built, m);
            }
        }
    }

    #[test]
    fn doc_frame_reads_scope_before_collection() {
        // system_event-1: the doc labels these bytes collection 8, scope 0;
        // the server's layout (scope first) reads scope 8, collection 0.
        let hex = "805f000c0d0002100000002d00001210000000000000000000000000000000040000000001\
                   6d79636f6c6c656374696f6e0000000000000002000000080000000000011940";
        let bytes = hex::decode(hex).unwrap();
        let m = SystemEvent::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!((m.vbucket, m.opaque, m.by_seqno), (0x210, 0x1210, 4));
        assert_eq!((m.event, m.version), (SystemEventId::BeginCollection, 1));
        assert_eq!(&m.key[..], b"mycollection");
        assert_eq!(
            m.data().unwrap(),
            SystemEventData::begin_collection(
                2,
                8,
                0,
                Bytes::from_static(b"mycollection"),
                Some(72000)
            )
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpSystemEvent, 0, 1);
        let v16 = value(1, 2, Some(3), None);
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpMutation, 0, 1),
                &[],
                &extras(0, 0),
                b"c",
                &v16,
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpSystemEvent,
                got: Opcode::DcpMutation,
            },
            1,
        );
        rejects(
            &frame(
                FrameHead {
                    magic: Magic::ClientResponse,
                    ..head
                },
                &[],
                &extras(0, 0),
                b"c",
                &v16,
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(
                head.with_datatype(Datatype::JSON),
                &[],
                &extras(0, 0),
                b"c",
                &v16,
            ),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &[0; 12], b"c", &v16),
            DecodeErrorKind::ExtrasLength {
                expected: "13",
                got: 12,
            },
            4,
        );
        rejects(
            &frame(head, &[0x22, 0, 1], &[0; 13], b"c", &v16),
            DecodeErrorKind::InvalidField {
                field: "by_seqno",
                value: 0,
            },
            27,
        );
        for id in [2u32, 6, 0xffff_ffff] {
            rejects(
                &frame(head, &[], &extras(id, 0), b"c", &v16),
                DecodeErrorKind::InvalidField {
                    field: "event",
                    value: u64::from(id),
                },
                32,
            );
        }
        for (event, version) in [
            (0u32, 3u8),
            (1, 1),
            (3, 1),
            (4, 1),
            (5, 0),
            (5, 1),
            (0, 0xff),
        ] {
            rejects(
                &frame(head, &[0x22, 0, 1], &extras(event, version), b"c", &v16),
                DecodeErrorKind::InvalidField {
                    field: "version",
                    value: u64::from(version),
                },
                27 + 12,
            );
        }
        let v12 = value(1, 2, None, None);
        let v20 = value(1, 2, Some(3), Some(4));
        for (event, version, val, expected) in [
            (0u32, 0u8, &v12, "16"),
            (0, 1, &v16, "20"),
            (1, 0, &v20, "16"),
            (3, 0, &v16, "12"),
            (4, 0, &Bytes::new(), "12"),
        ] {
            rejects(
                &frame(head, &[], &extras(event, version), b"name", val),
                DecodeErrorKind::ValueLength {
                    expected,
                    got: val.len(),
                },
                24 + 13 + 4,
            );
        }
        rejects(
            &frame(head, &[0x22, 0, 0], &extras(0, 0), b"c", &v16),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }

    #[test]
    fn flatbuffers_values_decode_typed_and_bad_ones_are_refused_at_the_value() {
        let modify = SystemEventData::ModifyCollection(CollectionDetails {
            history: true,
            metered: true,
            flush_uid: 3,
            ..CollectionDetails::new(9, 8, 10, Bytes::from_static(b"c"), Some(0))
        });
        for sid in [None, Some(3)] {
            let m = SystemEvent::from_data(1, 2, sid, 7, &modify, true).unwrap();
            assert_eq!((m.event, m.version), (SystemEventId::ModifyCollection, 2));
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            let back = SystemEvent::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap();
            assert_eq!(back.data().unwrap(), modify);
        }
        // No fixed layout for a modify.
        assert!(SystemEvent::from_data(1, 2, None, 7, &modify, false).is_err());
        // A drop's table under a create's id: the Collection table needs a
        // name.
        let drop = SystemEventData::EndCollection {
            manifest_uid: 1,
            scope_id: 0,
            collection_id: 8,
            system: false,
        };
        let dropped = drop.encode_value(2).unwrap();
        let head = FrameHead::request(Opcode::DcpSystemEvent, 0, 1);
        let err =
            SystemEvent::decode(&frame(head, &[], &extras(0, 2), b"c", &dropped)).unwrap_err();
        assert!(
            matches!(&err.kind, DecodeErrorKind::FlatBuffers { table: "Collection", reason } if reason.contains("name")),
            "{err}"
        );
        assert_eq!(err.offset, 24 + 13 + 1);
        rejects(
            &frame(head, &[], &extras(4, 2), b"", b"\x01\x02"),
            DecodeErrorKind::FlatBuffers {
                table: "DroppedScope",
                reason: SystemEvent::decode(&frame(head, &[], &extras(4, 2), b"", b"\x01\x02"))
                    .unwrap_err()
                    .kind
                    .to_string()
                    .trim_start_matches("invalid FlatBuffers DroppedScope table: ")
                    .to_owned(),
            },
            24 + 13,
        );
    }

    #[test]
    fn data_on_a_hand_built_event_reports_offsets() {
        let m = SystemEvent {
            vbucket: 0,
            opaque: 0,
            stream_id: Some(1),
            by_seqno: 1,
            event: SystemEventId::CreateScope,
            version: 0,
            key: Bytes::from_static(b"s"),
            value: Bytes::from_static(b"short"),
        };
        let err = m.data().unwrap_err();
        assert_eq!(
            (err.kind, err.offset, err.opcode),
            (
                DecodeErrorKind::ValueLength {
                    expected: "12",
                    got: 5
                },
                24 + 3 + 13 + 1,
                Some(Opcode::DcpSystemEvent)
            )
        );
        let err = SystemEvent {
            event: SystemEventId::Unknown(2),
            ..m
        }
        .data()
        .unwrap_err();
        assert_eq!(err.offset, 24 + 3 + 8);
    }
}
