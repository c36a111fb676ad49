//! DCP_DELETION (0x58): a document was deleted.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Magic, Opcode,
};
use crate::msg::check::{self, be_u16, be_u32, be_u64};
use crate::msg::stream_id::StreamIdFraming;

const V1_EXTRAS_LEN: usize = 18;
const V2_EXTRAS_LEN: usize = 21;

/// Whether a KV consumer accepts `datatype` on a deletion (wire.md §4):
/// {0, 0x02, 0x04, 0x06, 0x05, 0x07}, i.e. JSON only together with XATTR.
fn deletion_datatype_ok(datatype: Datatype) -> bool {
    matches!(datatype.0, 0x00 | 0x02 | 0x04 | 0x05 | 0x06 | 0x07)
}

/// DCP_DELETION: a tombstone at `by_seqno`, sent by the producer.
///
/// The value is empty or holds the tombstone's xattrs (possibly Snappy).
/// The key includes the collection-id prefix when HELLO Collections was
/// negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// CAS of the deletion.
    pub cas: u64,
    /// Datatype of the value as sent.
    pub datatype: Datatype,
    /// Sequence number (never 0).
    pub by_seqno: u64,
    /// Revision sequence number.
    pub rev_seqno: u64,
    /// `None` for the v1 format (18 bytes of extras); `Some(t)` for v2
    /// (21 bytes, used iff DCP_OPEN had IncludeDeleteTimes): Unix seconds,
    /// 0 for in-memory deletes.
    pub delete_time: Option<u32>,
    /// Document key.
    pub key: Bytes,
    /// Value: empty, or xattrs.
    pub value: Bytes,
}

impl Deletion {
    /// Decodes a DCP_DELETION request frame (v1 or v2, told by extras length).
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpDeletion)?;
        if !deletion_datatype_ok(frame.datatype()) {
            return Err(frame.error(DecodeErrorKind::InvalidDatatype(frame.datatype().0), 5));
        }
        let extras = frame.extras();
        if extras.len() != V1_EXTRAS_LEN && extras.len() != V2_EXTRAS_LEN {
            return Err(frame.error(
                DecodeErrorKind::ExtrasLength {
                    expected: "18 or 21",
                    got: frame.header().extras_len,
                },
                4,
            ));
        }
        check::some_key(frame)?;
        let at = frame.header().extras_offset();
        let by_seqno = be_u64(extras, 0);
        check::nonzero_seqno(frame, "by_seqno", by_seqno, at)?;
        let delete_time = if extras.len() == V1_EXTRAS_LEN {
            let nmeta = be_u16(extras, 16);
            if nmeta != 0 {
                return Err(frame.error(
                    DecodeErrorKind::InvalidField {
                        field: "nmeta",
                        value: u64::from(nmeta),
                    },
                    at + 16,
                ));
            }
            None
        } else {
            // Byte 20 is unused; like other reserved bytes it is ignored.
            Some(be_u32(extras, 16))
        };
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            cas: frame.cas(),
            datatype: frame.datatype(),
            by_seqno,
            rev_seqno: be_u64(extras, 8),
            delete_time,
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf`, as v2 if `delete_time` is set, else v1.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; V2_EXTRAS_LEN];
        let mut w = extras.as_mut_slice();
        w.put_u64(self.by_seqno);
        w.put_u64(self.rev_seqno);
        // v1: u16 nmeta = 0; v2: u32 delete_time, u8 unused = 0.
        w.put_u32(self.delete_time.unwrap_or_default());
        let extras = extras.get(..self.extras_len()).unwrap_or_default();
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead {
            magic: Magic::ClientRequest,
            opcode: Opcode::DcpDeletion,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket,
            opaque: self.opaque,
            cas: self.cas,
        }
        .encode(buf, framing.as_slice(), extras, &self.key, &self.value)
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 }
            + self.extras_len()
            + self.key.len()
            + self.value.len()
    }

    fn extras_len(&self) -> usize {
        if self.delete_time.is_some() {
            V2_EXTRAS_LEN
        } else {
            V1_EXTRAS_LEN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = Deletion::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    fn sample() -> Deletion {
        Deletion {
            vbucket: 0x210,
            opaque: 0x1210,
            stream_id: None,
            cas: 0xabcd,
            datatype: Datatype::XATTR,
            by_seqno: 5,
            rev_seqno: 1,
            delete_time: None,
            key: Bytes::from_static(b"\x00hello"),
            value: Bytes::from_static(b"\x00\x00\x00\x00"),
        }
    }

    #[test]
    fn round_trip_v1_v2_with_and_without_stream_id() {
        for delete_time in [None, Some(0), Some(1_700_000_000)] {
            for sid in [None, Some(4)] {
                let m = Deletion {
                    stream_id: sid,
                    delete_time,
                    ..sample()
                };
                let mut buf = BytesMut::new();
                m.encode(&mut buf).unwrap();
                assert_eq!(buf.len(), m.wire_len());
                let f = Frame::parse(buf.freeze()).unwrap();
                let want = if delete_time.is_some() { 21 } else { 18 };
                assert_eq!(f.extras().len(), want);
                assert_eq!(Deletion::decode(&f).unwrap(), m);
            }
        }
    }

    #[test]
    fn allowed_datatypes() {
        for dt in 0..=0xffu8 {
            let m = Deletion {
                datatype: Datatype(dt),
                ..sample()
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            let res = Deletion::decode(&Frame::parse(buf.freeze()).unwrap());
            if [0, 2, 4, 5, 6, 7].contains(&dt) {
                assert_eq!(res.unwrap(), m);
            } else {
                let err = res.unwrap_err();
                assert_eq!(
                    (err.kind, err.offset),
                    (DecodeErrorKind::InvalidDatatype(dt), 5)
                );
            }
        }
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpDeletion, 0, 1);
        let mut v1 = [0u8; 18];
        v1[7] = 1; // by_seqno = 1
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpExpiration, 0, 1),
                &[],
                &v1,
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpDeletion,
                got: Opcode::DcpExpiration,
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
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(head.with_datatype(Datatype::JSON), &[], &v1, b"k", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &[0; 20], b"k", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "18 or 21",
                got: 20,
            },
            4,
        );
        rejects(
            &frame(head, &[], &v1, b"", b""),
            DecodeErrorKind::KeyRequired,
            42,
        );
        rejects(
            &frame(head, &[0x22, 0, 2], &[0; 21], b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "by_seqno",
                value: 0,
            },
            27,
        );
        let mut nmeta = v1;
        nmeta[17] = 3;
        rejects(
            &frame(head, &[], &nmeta, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "nmeta",
                value: 3,
            },
            40,
        );
        rejects(
            &frame(head, &[0x22, 0, 0], &v1, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }

    #[test]
    fn v2_unused_byte_is_ignored() {
        let mut v2 = [0u8; 21];
        v2[7] = 1;
        v2[19] = 9; // delete_time = 9
        v2[20] = 0xff;
        let head = FrameHead::request(Opcode::DcpDeletion, 0, 1);
        let m = Deletion::decode(&frame(head, &[], &v2, b"k", b"")).unwrap();
        assert_eq!(m.delete_time, Some(9));
    }
}
