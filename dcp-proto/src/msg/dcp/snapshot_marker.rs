//! DCP_SNAPSHOT_MARKER (0x56): the seqno range of the items that follow.

use bytes::{BufMut, BytesMut};

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u32, be_u64};
use crate::msg::stream_id::StreamIdFraming;

const V1_EXTRAS_LEN: usize = 20;
const V2_0_VALUE_LEN: usize = 36;
const V2_2_VALUE_LEN: usize = 52;
const V2_0_VERSION: u8 = 0;
const V2_2_VERSION: u8 = 2;

bitflags::bitflags! {
    /// Snapshot marker flags. Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SnapshotFlags: u32 {
        /// The snapshot comes from memory (checkpoints).
        const MEMORY = 0x01;
        /// The snapshot comes from disk (backfill).
        const DISK = 0x02;
        /// The snapshot is a checkpoint boundary.
        const CHECKPOINT = 0x04;
        /// The consumer must reply (0x81/0x56, same opaque) once it has
        /// processed the snapshot.
        const ACK = 0x08;
        /// Change-stream snapshot: history is kept, not deduplicated.
        const HISTORY = 0x10;
        /// The same key may appear more than once in the snapshot.
        const MAY_CONTAIN_DUPLICATES = 0x20;
    }
}

/// The marker's wire format and the fields only the v2.x formats carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MarkerFormat {
    /// v1: 20 bytes of extras, no value.
    V1,
    /// v2.0: version byte 0, 36-byte value.
    V2_0 {
        /// Maximum visible (committed) seqno in the snapshot.
        max_visible_seqno: u64,
        /// High completed seqno (meaningful only for disk snapshots).
        high_completed_seqno: u64,
    },
    /// v2.2: version byte 2, 52-byte value.
    V2_2 {
        /// Maximum visible (committed) seqno in the snapshot.
        max_visible_seqno: u64,
        /// High completed seqno (meaningful only for disk snapshots).
        high_completed_seqno: u64,
        /// Purge seqno of the vbucket.
        purge_seqno: u64,
        /// High prepared seqno (meaningful only for disk snapshots).
        high_prepared_seqno: u64,
    },
}

impl MarkerFormat {
    /// Maximum visible seqno (v2.x only).
    pub fn max_visible_seqno(&self) -> Option<u64> {
        match *self {
            Self::V1 => None,
            Self::V2_0 {
                max_visible_seqno, ..
            }
            | Self::V2_2 {
                max_visible_seqno, ..
            } => Some(max_visible_seqno),
        }
    }

    /// High completed seqno (v2.x only).
    pub fn high_completed_seqno(&self) -> Option<u64> {
        match *self {
            Self::V1 => None,
            Self::V2_0 {
                high_completed_seqno,
                ..
            }
            | Self::V2_2 {
                high_completed_seqno,
                ..
            } => Some(high_completed_seqno),
        }
    }

    /// Purge seqno (v2.2 only).
    pub fn purge_seqno(&self) -> Option<u64> {
        match *self {
            Self::V2_2 { purge_seqno, .. } => Some(purge_seqno),
            _ => None,
        }
    }

    /// High prepared seqno (v2.2 only).
    pub fn high_prepared_seqno(&self) -> Option<u64> {
        match *self {
            Self::V2_2 {
                high_prepared_seqno,
                ..
            } => Some(high_prepared_seqno),
            _ => None,
        }
    }
}

/// DCP_SNAPSHOT_MARKER: the items up to the next marker belong to the
/// snapshot `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMarker {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// First seqno of the snapshot.
    pub start: u64,
    /// Last seqno of the snapshot (`>= start`).
    pub end: u64,
    /// Snapshot flags.
    pub flags: SnapshotFlags,
    /// Wire format and v2.x-only fields.
    pub format: MarkerFormat,
}

impl SnapshotMarker {
    /// Decodes a DCP_SNAPSHOT_MARKER request frame (v1, v2.0 or v2.2).
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpSnapshotMarker)?;
        check::raw_datatype(frame)?;
        check::no_key(frame)?;
        let head = frame.header();
        // The fixed fields (start, end, flags) sit in the extras for v1 and
        // at the start of the value for v2.x.
        let (fields, fields_at, format) = match usize::from(head.extras_len) {
            V1_EXTRAS_LEN => {
                check::no_value(frame)?;
                (frame.extras(), head.extras_offset(), MarkerFormat::V1)
            }
            1 => {
                let version = frame.extras().first().copied().unwrap_or_default();
                let expected = match version {
                    V2_0_VERSION => V2_0_VALUE_LEN,
                    V2_2_VERSION => V2_2_VALUE_LEN,
                    // v2.1 (1) was dropped; the server rejects it.
                    _ => {
                        return Err(frame.error(
                            DecodeErrorKind::InvalidField {
                                field: "version",
                                value: u64::from(version),
                            },
                            head.extras_offset(),
                        ));
                    }
                };
                let value = frame.value_slice();
                if value.len() != expected {
                    return Err(frame.error(
                        DecodeErrorKind::ValueLength {
                            expected: if version == V2_0_VERSION { "36" } else { "52" },
                            got: value.len(),
                        },
                        head.value_offset(),
                    ));
                }
                let format = if version == V2_0_VERSION {
                    MarkerFormat::V2_0 {
                        max_visible_seqno: be_u64(value, 20),
                        high_completed_seqno: be_u64(value, 28),
                    }
                } else {
                    MarkerFormat::V2_2 {
                        max_visible_seqno: be_u64(value, 20),
                        high_completed_seqno: be_u64(value, 28),
                        purge_seqno: be_u64(value, 36),
                        high_prepared_seqno: be_u64(value, 44),
                    }
                };
                (value, head.value_offset(), format)
            }
            _ => {
                return Err(frame.error(
                    DecodeErrorKind::ExtrasLength {
                        expected: "20 or 1",
                        got: head.extras_len,
                    },
                    4,
                ));
            }
        };
        let start = be_u64(fields, 0);
        let end = be_u64(fields, 8);
        if end < start {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "end",
                    value: end,
                },
                fields_at + 8,
            ));
        }
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            start,
            end,
            flags: SnapshotFlags::from_bits_retain(be_u32(fields, 16)),
            format,
        })
    }

    /// Appends the frame to `buf`, in the format `self.format` names.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        let head = FrameHead::request(Opcode::DcpSnapshotMarker, self.vbucket, self.opaque);
        let mut fields = [0u8; V2_2_VALUE_LEN];
        let mut w = fields.as_mut_slice();
        w.put_u64(self.start);
        w.put_u64(self.end);
        w.put_u32(self.flags.bits());
        let (version, len) = match self.format {
            MarkerFormat::V1 => {
                let v1 = fields.get(..V1_EXTRAS_LEN).unwrap_or_default();
                return head.encode(buf, framing.as_slice(), v1, &[], &[]);
            }
            MarkerFormat::V2_0 {
                max_visible_seqno,
                high_completed_seqno,
            } => {
                w.put_u64(max_visible_seqno);
                w.put_u64(high_completed_seqno);
                (V2_0_VERSION, V2_0_VALUE_LEN)
            }
            MarkerFormat::V2_2 {
                max_visible_seqno,
                high_completed_seqno,
                purge_seqno,
                high_prepared_seqno,
            } => {
                w.put_u64(max_visible_seqno);
                w.put_u64(high_completed_seqno);
                w.put_u64(purge_seqno);
                w.put_u64(high_prepared_seqno);
                (V2_2_VERSION, V2_2_VALUE_LEN)
            }
        };
        let value = fields.get(..len).unwrap_or_default();
        head.encode(buf, framing.as_slice(), &[version], &[], value)
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        let body = match self.format {
            MarkerFormat::V1 => V1_EXTRAS_LEN,
            MarkerFormat::V2_0 { .. } => 1 + V2_0_VALUE_LEN,
            MarkerFormat::V2_2 { .. } => 1 + V2_2_VALUE_LEN,
        };
        24 + if self.stream_id.is_some() { 3 } else { 0 } + body
    }

    /// Whether the snapshot comes from memory.
    pub fn is_memory(&self) -> bool {
        self.flags.contains(SnapshotFlags::MEMORY)
    }

    /// Whether the snapshot comes from disk (backfill).
    pub fn is_disk(&self) -> bool {
        self.flags.contains(SnapshotFlags::DISK)
    }

    /// Whether the snapshot is a checkpoint boundary.
    pub fn is_checkpoint(&self) -> bool {
        self.flags.contains(SnapshotFlags::CHECKPOINT)
    }

    /// Whether the producer waits for a reply once the snapshot is processed.
    pub fn needs_ack(&self) -> bool {
        self.flags.contains(SnapshotFlags::ACK)
    }

    /// Whether this is a history (change-stream) snapshot.
    pub fn is_history(&self) -> bool {
        self.flags.contains(SnapshotFlags::HISTORY)
    }

    /// Whether a key may appear more than once in the snapshot.
    pub fn may_contain_duplicates(&self) -> bool {
        self.flags.contains(SnapshotFlags::MAY_CONTAIN_DUPLICATES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = SnapshotMarker::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    fn formats() -> [MarkerFormat; 3] {
        [
            MarkerFormat::V1,
            MarkerFormat::V2_0 {
                max_visible_seqno: 9,
                high_completed_seqno: 7,
            },
            MarkerFormat::V2_2 {
                max_visible_seqno: 9,
                high_completed_seqno: 7,
                purge_seqno: 3,
                high_prepared_seqno: 8,
            },
        ]
    }

    #[test]
    fn round_trip_all_formats_with_and_without_stream_id() {
        for format in formats() {
            for sid in [None, Some(0xffff)] {
                let m = SnapshotMarker {
                    vbucket: 1023,
                    opaque: 77,
                    stream_id: sid,
                    start: 5,
                    end: 10,
                    flags: SnapshotFlags::DISK
                        | SnapshotFlags::ACK
                        | SnapshotFlags::from_bits_retain(0x400),
                    format,
                };
                let mut buf = BytesMut::new();
                m.encode(&mut buf).unwrap();
                assert_eq!(buf.len(), m.wire_len());
                let back = SnapshotMarker::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap();
                assert_eq!(back, m);
                assert_eq!(back.flags.bits(), 0x40a);
                assert!(back.is_disk() && back.needs_ack() && !back.is_memory());
            }
        }
    }

    #[test]
    fn v2_2_layout_and_accessors() {
        let [_, _, format] = formats();
        let m = SnapshotMarker {
            vbucket: 0,
            opaque: 0,
            stream_id: None,
            start: 1,
            end: 1,
            flags: SnapshotFlags::MEMORY | SnapshotFlags::HISTORY,
            format,
        };
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        let f = Frame::parse(buf.freeze()).unwrap();
        assert_eq!(f.extras(), &[2]);
        let v = f.value_slice();
        assert_eq!(be_u64(v, 0), 1);
        assert_eq!(be_u32(v, 16), 0x11);
        assert_eq!(be_u64(v, 36), 3);
        assert_eq!(be_u64(v, 44), 8);
        assert_eq!(format.purge_seqno(), Some(3));
        assert_eq!(format.high_prepared_seqno(), Some(8));
        assert_eq!(format.max_visible_seqno(), Some(9));
        assert_eq!(format.high_completed_seqno(), Some(7));
        assert_eq!(MarkerFormat::V1.max_visible_seqno(), None);
        assert!(m.is_memory() && m.is_history() && !m.is_checkpoint());
        assert!(!m.may_contain_duplicates());
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpSnapshotMarker, 0, 1);
        let mut v1 = [0u8; 20];
        v1[15] = 4; // end = 4
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpNoop, 0, 1),
                &[],
                &v1,
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpSnapshotMarker,
                got: Opcode::DcpNoop,
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
                &v1,
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(head.with_datatype(Datatype::JSON), &[], &v1, b"", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &v1, b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            44,
        );
        rejects(
            &frame(head, &[], &v1, b"", b"v"),
            DecodeErrorKind::ValueNotAllowed(1),
            44,
        );
        rejects(
            &frame(head, &[], &[0; 21], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "20 or 1",
                got: 21,
            },
            4,
        );
        // v1 with end < start.
        let mut bad = v1;
        bad[7] = 5; // start = 5 > end = 4
        rejects(
            &frame(head, &[0x22, 0, 1], &bad, b"", b""),
            DecodeErrorKind::InvalidField {
                field: "end",
                value: 4,
            },
            27 + 8,
        );
        // v2.1 and unknown versions.
        for version in [1u8, 3] {
            rejects(
                &frame(head, &[], &[version], b"", &[0; 36]),
                DecodeErrorKind::InvalidField {
                    field: "version",
                    value: u64::from(version),
                },
                24,
            );
        }
        // Version and value length disagree.
        rejects(
            &frame(head, &[], &[0], b"", &[0; 52]),
            DecodeErrorKind::ValueLength {
                expected: "36",
                got: 52,
            },
            25,
        );
        rejects(
            &frame(head, &[], &[2], b"", &[0; 36]),
            DecodeErrorKind::ValueLength {
                expected: "52",
                got: 36,
            },
            25,
        );
        rejects(
            &frame(head, &[], &[2], b"", b""),
            DecodeErrorKind::ValueLength {
                expected: "52",
                got: 0,
            },
            25,
        );
        // v2.0 with end < start.
        let mut value = [0u8; 36];
        value[7] = 2; // start = 2, end = 0
        rejects(
            &frame(head, &[], &[0], b"", &value),
            DecodeErrorKind::InvalidField {
                field: "end",
                value: 0,
            },
            25 + 8,
        );
        rejects(
            &frame(head, &[0x22, 0, 0], &v1, b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }

    #[test]
    fn repaired_v1_doc_frame_is_memory() {
        // snapshot-marker-1 with its annotated body_len: flag 0x01 is Memory.
        let bytes = hex::decode(
            "805600001400000000000014deadbeef00000000000000000000000000000000000000000000000800000001",
        )
        .unwrap();
        let m = SnapshotMarker::decode(&Frame::parse(bytes.into()).unwrap()).unwrap();
        assert_eq!((m.start, m.end, m.format), (0, 8, MarkerFormat::V1));
        assert!(m.is_memory() && !m.is_disk());
    }
}
