//! DCP_OSO_SNAPSHOT (0x65): start or end of an out-of-sequence-order
//! snapshot.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u32};
use crate::msg::stream_id::StreamIdFraming;

const EXTRAS_LEN: usize = 4;

bitflags::bitflags! {
    /// OSO snapshot flags. Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OsoFlags: u32 {
        /// Items from here on arrive in arbitrary seqno order.
        const START = 0x01;
        /// The out-of-order section is complete.
        const END = 0x02;
    }
}

/// DCP_OSO_SNAPSHOT: between START and END items arrive in no seqno order;
/// resume from the highest seqno seen only after END, otherwise from the
/// seqno held before START. Never reply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsoSnapshot {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// START and/or END.
    pub flags: OsoFlags,
}

impl OsoSnapshot {
    /// Decodes a DCP_OSO_SNAPSHOT request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpOsoSnapshot)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<EXTRAS_LEN>(frame, "4")?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            flags: OsoFlags::from_bits_retain(be_u32(extras, 0)),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpOsoSnapshot, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &self.flags.bits().to_be_bytes(),
            &[],
            &[],
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 } + EXTRAS_LEN
    }

    /// Whether this marks the start of the out-of-order section.
    pub fn is_start(&self) -> bool {
        self.flags.contains(OsoFlags::START)
    }

    /// Whether this marks the end of the out-of-order section.
    pub fn is_end(&self) -> bool {
        self.flags.contains(OsoFlags::END)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = OsoSnapshot::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip_with_and_without_stream_id() {
        for (sid, flags) in [
            (None, OsoFlags::START),
            (Some(8), OsoFlags::END),
            (None, OsoFlags::from_bits_retain(0x8000_0002)),
        ] {
            let m = OsoSnapshot {
                vbucket: 9,
                opaque: 3,
                stream_id: sid,
                flags,
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            let back = OsoSnapshot::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.flags.bits(), flags.bits());
        }
    }

    #[test]
    fn repaired_doc_frame() {
        // oso_snapshot-1 with its annotated body_len.
        let bytes =
            hex::decode("806500000400000000000004deadbeef000000000000000000000001").unwrap();
        let m = OsoSnapshot::decode(&Frame::parse(bytes.into()).unwrap()).unwrap();
        assert!(m.is_start() && !m.is_end());
        assert_eq!(m.opaque, 0xdead_beef);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpOsoSnapshot, 0, 1);
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpSeqnoAdvanced, 0, 1),
                &[],
                &[0; 4],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpOsoSnapshot,
                got: Opcode::DcpSeqnoAdvanced,
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
                &[0; 4],
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
            &frame(head.with_datatype(Datatype::JSON), &[], &[0; 4], b"", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &[], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "4",
                got: 0,
            },
            4,
        );
        rejects(
            &frame(head, &[], &[0; 4], b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            28,
        );
        rejects(
            &frame(head, &[], &[0; 4], b"", b"v"),
            DecodeErrorKind::ValueNotAllowed(1),
            28,
        );
        rejects(
            &frame(head, &[0x22, 0, 0], &[0; 4], b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }
}
