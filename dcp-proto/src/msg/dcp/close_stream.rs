//! DCP_CLOSE_STREAM (0x52): the consumer closes the stream of a vbucket.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check;
use crate::msg::stream_id::StreamIdFraming;

/// DCP_CLOSE_STREAM: close the stream of `vbucket` (and, on a connection
/// with stream ids enabled, the one with `stream_id`, sent in the framing
/// extras with magic 0x08).
///
/// No extras, key or value; the CAS is not used. The reply is a
/// [`StatusResponse`](crate::msg::StatusResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseStream {
    /// The vbucket whose stream to close.
    pub vbucket: u16,
    /// Opaque, echoed in the response (not the stream's opaque).
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
}

impl CloseStream {
    /// Decodes a DCP_CLOSE_STREAM request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpCloseStream)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpCloseStream, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &[],
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
    fn round_trip_with_and_without_stream_id() {
        for stream_id in [None, Some(1), Some(u16::MAX)] {
            let msg = CloseStream {
                vbucket: 1023,
                opaque: 9,
                stream_id,
            };
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.magic().is_flexible(), stream_id.is_some());
            assert_eq!(CloseStream::decode(&frame).unwrap(), msg);
        }
        let msg = CloseStream {
            vbucket: 0,
            opaque: 0,
            stream_id: Some(0),
        };
        assert_eq!(
            msg.encode(&mut BytesMut::new()).unwrap_err(),
            EncodeError::InvalidStreamId
        );
    }

    #[test]
    fn doc_vector() {
        // close-stream-1: vbucket 5, opaque 0xdeadbeef.
        let hex = "805200000000000500000000deadbeef0000000000000000";
        let msg = CloseStream::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            CloseStream {
                vbucket: 5,
                opaque: 0xdead_beef,
                stream_id: None,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpCloseStream, 5, 1);
        rejects(
            CloseStream::decode(&raw(
                FrameHead::response(Opcode::DcpCloseStream, Status::Success, 1),
                &[],
                &[],
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
            CloseStream::decode(&raw(
                FrameHead::request(Opcode::DcpStreamEnd, 5, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpCloseStream,
                got: Opcode::DcpStreamEnd,
            },
            1,
        );
        rejects(
            CloseStream::decode(&raw(head.with_datatype(Datatype::JSON), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            CloseStream::decode(&raw(head, &[], &[0; 4], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            CloseStream::decode(&raw(head, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            CloseStream::decode(&raw(head, &[], &[], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            24,
        );
        rejects(
            CloseStream::decode(&raw(head, &[0x22, 0, 0], &[], &[], &[])),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
        rejects(
            CloseStream::decode(&raw(head, &[0x23, 0, 1], &[], &[], &[])),
            DecodeErrorKind::FrameInfoOverrun { id: 2, len: 3 },
            24,
        );
    }
}
