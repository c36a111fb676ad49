//! DCP_EXPIRATION (0x59): a document expired.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Datatype, DecodeError, EncodeError, Frame, FrameHead, Magic, Opcode};
use crate::msg::check::{self, be_u32, be_u64};
use crate::msg::stream_id::StreamIdFraming;

const EXTRAS_LEN: usize = 20;

/// DCP_EXPIRATION: a document expired at `by_seqno`.
///
/// Sent only when the client set `enable_expiry_opcode` and DCP_OPEN had
/// IncludeDeleteTimes; otherwise expiries arrive as [`Deletion`]s.
///
/// [`Deletion`]: crate::msg::Deletion
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiration {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// CAS of the expiration.
    pub cas: u64,
    /// Datatype of the value as sent.
    pub datatype: Datatype,
    /// Sequence number (never 0).
    pub by_seqno: u64,
    /// Revision sequence number.
    pub rev_seqno: u64,
    /// The item's expiry time (Unix seconds).
    pub delete_time: u32,
    /// Document key.
    pub key: Bytes,
    /// Value: empty, or xattrs.
    pub value: Bytes,
}

impl Expiration {
    /// Decodes a DCP_EXPIRATION request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpExpiration)?;
        check::valid_datatype(frame)?;
        let extras = check::extras::<EXTRAS_LEN>(frame, "20")?;
        check::some_key(frame)?;
        let by_seqno = be_u64(extras, 0);
        check::nonzero_seqno(frame, "by_seqno", by_seqno, frame.header().extras_offset())?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            cas: frame.cas(),
            datatype: frame.datatype(),
            by_seqno,
            rev_seqno: be_u64(extras, 8),
            delete_time: be_u32(extras, 16),
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; EXTRAS_LEN];
        let mut w = extras.as_mut_slice();
        w.put_u64(self.by_seqno);
        w.put_u64(self.rev_seqno);
        w.put_u32(self.delete_time);
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead {
            magic: Magic::ClientRequest,
            opcode: Opcode::DcpExpiration,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket,
            opaque: self.opaque,
            cas: self.cas,
        }
        .encode(buf, framing.as_slice(), &extras, &self.key, &self.value)
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 }
            + EXTRAS_LEN
            + self.key.len()
            + self.value.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DecodeErrorKind;
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = Expiration::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip_with_and_without_stream_id() {
        for (sid, value) in [(None, &b""[..]), (Some(300), &b"\x00\x00\x00\x00"[..])] {
            let m = Expiration {
                vbucket: 7,
                opaque: 0x1210,
                stream_id: sid,
                cas: 99,
                datatype: if value.is_empty() {
                    Datatype::RAW
                } else {
                    Datatype::XATTR
                },
                by_seqno: 12,
                rev_seqno: 3,
                delete_time: 1_700_000_000,
                key: Bytes::from_static(b"hello"),
                value: Bytes::copy_from_slice(value),
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            assert_eq!(
                Expiration::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
                m
            );
        }
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpExpiration, 0, 1);
        let mut ok = [0u8; 20];
        ok[7] = 1;
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpDeletion, 0, 1),
                &[],
                &ok,
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpExpiration,
                got: Opcode::DcpDeletion,
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
                &ok,
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
            &frame(head.with_datatype(Datatype(0x08)), &[], &ok, b"k", b""),
            DecodeErrorKind::InvalidDatatype(8),
            5,
        );
        // The doc example's extras length (0x12) is wrong for 0x59.
        rejects(
            &frame(head, &[], &[0; 18], b"k", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "20",
                got: 18,
            },
            4,
        );
        rejects(
            &frame(head, &[], &ok, b"", b""),
            DecodeErrorKind::KeyRequired,
            44,
        );
        rejects(
            &frame(head, &[], &[0; 20], b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "by_seqno",
                value: 0,
            },
            24,
        );
        rejects(
            &frame(head, &[0x22, 0, 0], &ok, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }
}
