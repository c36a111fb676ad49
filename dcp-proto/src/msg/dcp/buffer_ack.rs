//! DCP_BUFFER_ACKNOWLEDGEMENT (0x5d): the consumer returns flow-control
//! credit to the producer.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u32};

/// DCP_BUFFER_ACKNOWLEDGEMENT: `bytes` of received messages were processed
/// (extras 4, no key, no value; the CAS is not used).
///
/// The producer sends no response on success; an error comes back as a
/// [`StatusResponse`](crate::msg::StatusResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferAck {
    /// Vbucket field of the header (unused by the producer; send 0).
    pub vbucket: u16,
    /// Opaque (free; 0 is customary).
    pub opaque: u32,
    /// Bytes acknowledged.
    pub bytes: u32,
}

impl BufferAck {
    /// Decodes a DCP_BUFFER_ACKNOWLEDGEMENT request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpBufferAck)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<4>(frame, "4")?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            bytes: be_u32(extras, 0),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::DcpBufferAck, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &self.bytes.to_be_bytes(),
            &[],
            &[],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic, Status};
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    #[test]
    fn round_trip() {
        let msg = BufferAck {
            vbucket: 0,
            opaque: 0,
            bytes: u32::MAX,
        };
        assert_eq!(
            BufferAck::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );
    }

    #[test]
    fn doc_frames() {
        // buffer-ack-1 draws the 4 bytes as a value with extras_len 0: the
        // server rejects that, and so does the decoder.
        rejects(
            BufferAck::decode(&from_hex(
                "805d0000000000000000000400000005000000000000000000001000",
            )),
            DecodeErrorKind::ExtrasLength {
                expected: "4",
                got: 0,
            },
            4,
        );
        // Its repaired form (extras_len 4) acknowledges 4096 bytes.
        let hex = "805d0000040000000000000400000005000000000000000000001000";
        let msg = BufferAck::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            BufferAck {
                vbucket: 0,
                opaque: 5,
                bytes: 4096,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpBufferAck, 0, 1);
        rejects(
            BufferAck::decode(&raw(
                FrameHead::response(Opcode::DcpBufferAck, Status::Success, 1),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            BufferAck::decode(&raw(
                FrameHead::request(Opcode::DcpNoop, 0, 1),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpBufferAck,
                got: Opcode::DcpNoop,
            },
            1,
        );
        rejects(
            BufferAck::decode(&raw(
                head.with_datatype(Datatype::XATTR),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(4),
            5,
        );
        rejects(
            BufferAck::decode(&raw(head, &[], &[0; 8], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "4",
                got: 8,
            },
            4,
        );
        rejects(
            BufferAck::decode(&raw(head, &[], &[0; 4], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            28,
        );
        rejects(
            BufferAck::decode(&raw(head, &[], &[0; 4], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            28,
        );
    }
}
