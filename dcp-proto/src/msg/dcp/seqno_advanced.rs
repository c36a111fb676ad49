//! DCP_SEQNO_ADVANCED (0x64): the stream's seqno moved past items the
//! client does not receive.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u64};
use crate::msg::stream_id::StreamIdFraming;

const EXTRAS_LEN: usize = 8;

/// DCP_SEQNO_ADVANCED: the stream reached `seqno` through items filtered
/// out for this client (other collections, prepares, ...). Use it for
/// snapshot completion and resume points; never reply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqnoAdvanced {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// The seqno the stream advanced to.
    pub seqno: u64,
}

impl SeqnoAdvanced {
    /// Decodes a DCP_SEQNO_ADVANCED request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpSeqnoAdvanced)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<EXTRAS_LEN>(frame, "8")?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            seqno: be_u64(extras, 0),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpSeqnoAdvanced, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &self.seqno.to_be_bytes(),
            &[],
            &[],
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 } + EXTRAS_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = SeqnoAdvanced::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip_with_and_without_stream_id() {
        for sid in [None, Some(1)] {
            let m = SeqnoAdvanced {
                vbucket: 9,
                opaque: 0xdead_beef,
                stream_id: sid,
                seqno: 0x0102_0304_0506_0708,
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            assert_eq!(
                SeqnoAdvanced::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
                m
            );
        }
    }

    #[test]
    fn repaired_doc_frame() {
        // seqno-advanced-1 with its annotated opcode, extras_len and body_len.
        let bytes = hex::decode("806400000800000000000008deadbeef00000000000000000000000000000004")
            .unwrap();
        let m = SeqnoAdvanced::decode(&Frame::parse(bytes.into()).unwrap()).unwrap();
        assert_eq!((m.opaque, m.seqno, m.stream_id), (0xdead_beef, 4, None));
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpSeqnoAdvanced, 0, 1);
        // As drawn, the doc frame has OSO's opcode.
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpOsoSnapshot, 0, 1),
                &[],
                &[0; 8],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpSeqnoAdvanced,
                got: Opcode::DcpOsoSnapshot,
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
                &[0; 8],
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
            &frame(head.with_datatype(Datatype::JSON), &[], &[0; 8], b"", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &[0; 4], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "8",
                got: 4,
            },
            4,
        );
        rejects(
            &frame(head, &[], &[0; 8], b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            32,
        );
        rejects(
            &frame(head, &[], &[0; 8], b"", b"v"),
            DecodeErrorKind::ValueNotAllowed(1),
            32,
        );
        rejects(
            &frame(head, &[0x22, 0, 0], &[0; 8], b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }
}
