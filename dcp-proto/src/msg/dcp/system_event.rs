//! DCP_SYSTEM_EVENT (0x5f): a collection or scope was created, dropped or
//! modified.

use bytes::{BufMut, Bytes, BytesMut};

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

/// The parsed value of a system event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemEventData {
    /// BeginCollection, version 0 or 1; the key is the collection name.
    BeginCollection {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// Scope of the collection.
        scope_id: u32,
        /// The collection.
        collection_id: u32,
        /// Max TTL in seconds (version 1 only).
        max_ttl: Option<u32>,
    },
    /// EndCollection, version 0.
    EndCollection {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// Scope of the collection.
        scope_id: u32,
        /// The collection.
        collection_id: u32,
    },
    /// CreateScope, version 0; the key is the scope name.
    CreateScope {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// The scope.
        scope_id: u32,
    },
    /// DropScope, version 0.
    DropScope {
        /// Manifest uid (set only on the last event of a manifest change).
        manifest_uid: u64,
        /// The scope.
        scope_id: u32,
    },
    /// Version 2, any event: the raw FlatBuffers value (schema
    /// `collections/events.fbs` in kv_engine), not parsed here.
    FlatBuffers(Bytes),
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
        parse_data(event, version, &value, at, frame.header().value_offset())?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            by_seqno,
            event,
            version,
            key: frame.key(),
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

    /// Parses the value per event and version (wire.md §12). Error offsets
    /// assume the frame [`SystemEvent::encode`] would produce.
    pub fn data(&self) -> Result<SystemEventData, DecodeError> {
        let extras_at = 24 + if self.stream_id.is_some() { 3 } else { 0 };
        parse_data(
            self.event,
            self.version,
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
        (_, FLATBUFFERS_VERSION) => Ok(SystemEventData::FlatBuffers(value.clone())),
        (SystemEventId::BeginCollection, 0 | 1) => {
            let max_ttl = if version == 1 {
                sized(20, "20")?;
                Some(be_u32(value, 16))
            } else {
                sized(16, "16")?;
                None
            };
            Ok(SystemEventData::BeginCollection {
                manifest_uid,
                scope_id,
                collection_id,
                max_ttl,
            })
        }
        (SystemEventId::EndCollection, 0) => {
            sized(16, "16")?;
            Ok(SystemEventData::EndCollection {
                manifest_uid,
                scope_id,
                collection_id,
            })
        }
        (SystemEventId::CreateScope, 0) => {
            sized(12, "12")?;
            Ok(SystemEventData::CreateScope {
                manifest_uid,
                scope_id,
            })
        }
        (SystemEventId::DropScope, 0) => {
            sized(12, "12")?;
            Ok(SystemEventData::DropScope {
                manifest_uid,
                scope_id,
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
        let cases = [
            (
                SystemEventId::BeginCollection,
                0,
                "c1",
                value(2, 8, Some(9), None),
                SystemEventData::BeginCollection {
                    manifest_uid: 2,
                    scope_id: 8,
                    collection_id: 9,
                    max_ttl: None,
                },
            ),
            (
                SystemEventId::BeginCollection,
                1,
                "c1",
                value(2, 8, Some(9), Some(60)),
                SystemEventData::BeginCollection {
                    manifest_uid: 2,
                    scope_id: 8,
                    collection_id: 9,
                    max_ttl: Some(60),
                },
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
                },
            ),
            (
                SystemEventId::ModifyCollection,
                2,
                "c1",
                Bytes::from_static(b"\x0c\x00\x00\x00fb"),
                SystemEventData::FlatBuffers(Bytes::from_static(b"\x0c\x00\x00\x00fb")),
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
            SystemEventData::BeginCollection {
                manifest_uid: 2,
                scope_id: 8,
                collection_id: 0,
                max_ttl: Some(72000),
            }
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
