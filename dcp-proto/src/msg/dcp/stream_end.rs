//! DCP_STREAM_END (0x55): the producer closed a stream, and why.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode, code_enum};
use crate::msg::check::{self, be_u32};
use crate::msg::stream_id::StreamIdFraming;

const EXTRAS_LEN: usize = 4;

code_enum! {
    /// Why a stream ended (the u32 in STREAM_END's extras).
    pub enum StreamEndReason: u32 {
        /// 0: the stream reached its end seqno.
        Ok = 0,
        /// 1: the client closed it with CLOSE_STREAM.
        Closed = 1,
        /// 2: the vbucket changed state.
        StateChanged = 2,
        /// 3: the connection is going away.
        Disconnected = 3,
        /// 4: the client was too slow and its cursor was dropped.
        Slow = 4,
        /// 5: backfill failed.
        BackfillFailed = 5,
        /// 6: the client must reopen the stream and roll back.
        Rollback = 6,
        /// 7: every filtered collection or the filtered scope was dropped.
        FilterEmpty = 7,
        /// 8: the connection lost the privileges the stream needs.
        LostPrivileges = 8,
    }
}

/// DCP_STREAM_END: no more messages follow for this stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// Why the stream ended (unknown codes are kept).
    pub reason: StreamEndReason,
}

impl StreamEnd {
    /// Decodes a DCP_STREAM_END request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpStreamEnd)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<EXTRAS_LEN>(frame, "4")?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            reason: StreamEndReason::from_raw(be_u32(extras, 0)),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpStreamEnd, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &self.reason.raw().to_be_bytes(),
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
        let err = StreamEnd::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
        assert_eq!(err.opcode, Some(frame.opcode()));
    }

    #[test]
    fn round_trip_with_and_without_stream_id() {
        for (sid, reason) in [
            (None, StreamEndReason::Ok),
            (Some(9), StreamEndReason::FilterEmpty),
            (None, StreamEndReason::Unknown(42)),
        ] {
            let m = StreamEnd {
                vbucket: 3,
                opaque: 0xfeed,
                stream_id: sid,
                reason,
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            assert_eq!(
                StreamEnd::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
                m
            );
        }
    }

    #[test]
    fn reason_codes() {
        for raw in 0..=8 {
            let reason = StreamEndReason::from_raw(raw);
            assert!(reason.name().is_some());
            assert_eq!(reason.raw(), raw);
        }
        assert_eq!(
            StreamEndReason::from_raw(5),
            StreamEndReason::BackfillFailed
        );
        assert_eq!(StreamEndReason::from_raw(9), StreamEndReason::Unknown(9));
    }

    #[test]
    fn doc_vector_stream_end_1() {
        let bytes =
            hex::decode("805500000400000000000004deadbeef000000000000000000000000").unwrap();
        let m = StreamEnd::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!(
            m,
            StreamEnd {
                vbucket: 0,
                opaque: 0xdead_beef,
                stream_id: None,
                reason: StreamEndReason::Ok,
            }
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpStreamEnd, 0, 1);
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpMutation, 0, 1),
                &[],
                &[0; 4],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpStreamEnd,
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
            &frame(head, &[], &[0; 8], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "4",
                got: 8,
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
