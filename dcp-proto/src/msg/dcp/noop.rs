//! DCP_NOOP (0x5c) request: the producer's liveness probe.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check;

/// DCP_NOOP request from the producer. The consumer must answer with a
/// 0x81/0x5c response carrying the same opaque, or it is disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcpNoop {
    /// Producer-chosen counter; echo it in the response.
    pub opaque: u32,
}

impl DcpNoop {
    /// Decodes a DCP_NOOP request frame (no extras, key or value).
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpNoop)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        check::no_stream_id(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
        })
    }

    /// Appends the frame to `buf` (vbucket 0).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::DcpNoop, 0, self.opaque).encode(buf, &[], &[], &[], &[])
    }

    /// Bytes this message occupies on the wire (NOOPs take no flow-control
    /// credit).
    pub fn wire_len(&self) -> usize {
        24
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = DcpNoop::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip() {
        let m = DcpNoop { opaque: 5 };
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), m.wire_len());
        assert_eq!(
            &buf[..],
            &hex::decode("805c00000000000000000000000000050000000000000000").unwrap()[..]
        );
        assert_eq!(
            DcpNoop::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
            m
        );
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpNoop, 0, 1);
        rejects(
            &frame(FrameHead::request(Opcode::Noop, 0, 1), &[], &[], b"", b""),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpNoop,
                got: Opcode::Noop,
            },
            1,
        );
        // The doc's no-op-2 frame is the consumer's response, not this request.
        let reply = hex::decode("815c00000000000000000000000000050000000000000000").unwrap();
        rejects(
            &Frame::parse(reply.into()).unwrap(),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(head.with_datatype(Datatype::JSON), &[], &[], b"", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &[0; 4], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            &frame(head, &[], &[], b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        // no-op-1's 4 stray bytes, read as a value.
        rejects(
            &frame(head, &[], &[], b"", &[0; 4]),
            DecodeErrorKind::ValueNotAllowed(4),
            24,
        );
        rejects(
            &frame(head, &[0x22, 0, 1], &[], b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 1,
            },
            24,
        );
    }
}
