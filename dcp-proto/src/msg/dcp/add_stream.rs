//! DCP_ADD_STREAM (0x51): ns_server asks a KV consumer connection to open a
//! stream for a vbucket; the reply names the opaque of the new stream.

use bytes::{Bytes, BytesMut};

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::check::{self, be_u32};
use crate::msg::dcp::stream_request::StreamRequestFlags;
use crate::msg::status_response::{body_datatype, invalid};

/// DCP_ADD_STREAM: open a stream for `vbucket` with `flags` (extras 4, no
/// key, no value; the CAS is not used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddStream {
    /// The vbucket to stream.
    pub vbucket: u16,
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Stream flags (as for a stream request).
    pub flags: StreamRequestFlags,
}

impl AddStream {
    /// Decodes a DCP_ADD_STREAM request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpAddStream)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<4>(frame, "4")?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            flags: StreamRequestFlags::from_bits_retain(be_u32(extras, 0)),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::DcpAddStream, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &self.flags.bits().to_be_bytes(),
            &[],
            &[],
        )
    }
}

/// The response to DCP_ADD_STREAM.
///
/// Success carries the new stream's opaque in 4 extras bytes. An error has
/// no extras, or 4 (a KV consumer reports its failures with them), and may
/// carry a body (XERROR JSON). When encoding an error, the extras are
/// written only if `stream_opaque` is not 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddStreamResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The opaque of the stream the consumer opened (0 if absent).
    pub stream_opaque: u32,
    /// The body of an error response; always empty on success.
    pub error_body: Bytes,
}

impl AddStreamResponse {
    /// A success response naming the new stream's opaque.
    pub fn success(opaque: u32, stream_opaque: u32) -> Self {
        Self {
            status: Status::Success,
            opaque,
            stream_opaque,
            error_body: Bytes::new(),
        }
    }

    /// An error response with no extras and no body.
    pub fn error(status: Status, opaque: u32) -> Self {
        Self {
            status,
            opaque,
            stream_opaque: 0,
            error_body: Bytes::new(),
        }
    }

    /// Decodes a DCP_ADD_STREAM response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::DcpAddStream)?;
        check::valid_datatype(frame)?;
        let status = frame.status();
        let stream_opaque = if status.is_success() {
            be_u32(check::extras::<4>(frame, "4")?, 0)
        } else {
            match frame.extras().len() {
                0 | 4 => be_u32(frame.extras(), 0),
                _ => {
                    return Err(frame.error(
                        DecodeErrorKind::ExtrasLength {
                            expected: "0 or 4",
                            got: frame.header().extras_len,
                        },
                        4,
                    ));
                }
            }
        };
        check::no_key(frame)?;
        if status.is_success() {
            check::no_value(frame)?;
        }
        Ok(Self {
            status,
            opaque: frame.opaque(),
            stream_opaque,
            error_body: frame.value(),
        })
    }

    /// Appends the frame to `buf`. Fails for a success with an error body.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let success = self.status.is_success();
        if success && !self.error_body.is_empty() {
            return Err(invalid("error_body", "a success response has no body"));
        }
        let extras = self.stream_opaque.to_be_bytes();
        let extras: &[u8] = if success || self.stream_opaque != 0 {
            &extras
        } else {
            &[]
        };
        FrameHead::response(Opcode::DcpAddStream, self.status, self.opaque)
            .with_datatype(body_datatype(&self.error_body))
            .encode(buf, &[], extras, &[], &self.error_body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    #[test]
    fn request_round_trip_and_doc_vector() {
        let msg = AddStream {
            vbucket: 9,
            opaque: 3,
            flags: StreamRequestFlags::TAKEOVER | StreamRequestFlags::from_bits_retain(0x400),
        };
        assert_eq!(
            AddStream::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );

        // add-stream-1: vbucket 5, TakeOver.
        let hex = "80510000040000050000000400000001000000000000000000000001";
        let msg = AddStream::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            AddStream {
                vbucket: 5,
                opaque: 1,
                flags: StreamRequestFlags::TAKEOVER,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::DcpAddStream, 5, 1);
        rejects(
            AddStream::decode(&raw(
                FrameHead::response(Opcode::DcpAddStream, Status::Success, 1),
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
            AddStream::decode(&raw(
                FrameHead::request(Opcode::DcpStreamReq, 5, 1),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpAddStream,
                got: Opcode::DcpStreamReq,
            },
            1,
        );
        rejects(
            AddStream::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            AddStream::decode(&raw(head, &[], &[], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "4",
                got: 0,
            },
            4,
        );
        rejects(
            AddStream::decode(&raw(head, &[], &[0; 4], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            28,
        );
        rejects(
            AddStream::decode(&raw(head, &[], &[0; 4], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            28,
        );
    }

    #[test]
    fn response_round_trip_and_doc_vector() {
        for msg in [
            AddStreamResponse::success(1, 0x1000),
            AddStreamResponse::success(1, 0),
            AddStreamResponse::error(Status::KeyEexists, 2),
            AddStreamResponse {
                stream_opaque: 7,
                ..AddStreamResponse::error(Status::NotMyVbucket, 3)
            },
            AddStreamResponse {
                error_body: Bytes::from_static(br#"{"error":{"context":"x"}}"#),
                ..AddStreamResponse::error(Status::Einval, 4)
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(AddStreamResponse::decode(&frame).unwrap(), msg);
        }

        // add-stream-2: success, stream opaque 0x1000.
        let hex = "81510000040000000000000400000001000000000000000000001000";
        let msg = AddStreamResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, AddStreamResponse::success(1, 0x1000));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::DcpAddStream, Status::Success, 1);
        let err = FrameHead::response(Opcode::DcpAddStream, Status::Einval, 1);
        rejects(
            AddStreamResponse::decode(&raw(
                FrameHead::request(Opcode::DcpAddStream, 0, 1),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "response",
                got: Magic::ClientRequest,
            },
            0,
        );
        rejects(
            AddStreamResponse::decode(&raw(
                ok.with_datatype(Datatype(0x80)),
                &[],
                &[0; 4],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(0x80),
            5,
        );
        rejects(
            AddStreamResponse::decode(&raw(ok, &[], &[], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "4",
                got: 0,
            },
            4,
        );
        rejects(
            AddStreamResponse::decode(&raw(err, &[], &[0; 8], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0 or 4",
                got: 8,
            },
            4,
        );
        rejects(
            AddStreamResponse::decode(&raw(ok, &[], &[0; 4], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            28,
        );
        rejects(
            AddStreamResponse::decode(&raw(ok, &[], &[0; 4], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            28,
        );
        // An error may carry extras and a body.
        let msg = AddStreamResponse::decode(&raw(err, &[], &[0, 0, 0, 9], &[], b"{}")).unwrap();
        assert_eq!((msg.stream_opaque, &msg.error_body[..]), (9, &b"{}"[..]));
    }

    #[test]
    fn encode_rejects_success_with_body() {
        let msg = AddStreamResponse {
            error_body: Bytes::from_static(b"x"),
            ..AddStreamResponse::success(1, 2)
        };
        assert!(msg.encode(&mut BytesMut::new()).is_err());
    }
}
