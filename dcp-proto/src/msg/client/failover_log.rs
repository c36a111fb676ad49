//! GET_FAILOVER_LOG (0x96): the failover log of a vbucket, outside DCP.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check;

/// GET_FAILOVER_LOG (0x96): the failover log of `vbucket`, on any connection
/// (no extras, key or value; the CAS is not used). The response is a
/// [`FailoverLogResponse`](crate::msg::FailoverLogResponse). For the DCP
/// variant (0x54) see [`GetFailoverLog`](crate::msg::GetFailoverLog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetFailoverLogRequest {
    /// The vbucket.
    pub vbucket: u16,
    /// Opaque, echoed in the response.
    pub opaque: u32,
}

impl GetFailoverLogRequest {
    /// Decodes a GET_FAILOVER_LOG request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::GetFailoverLog)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::GetFailoverLog, self.vbucket, self.opaque).encode(
            buf,
            &[],
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
    fn round_trip_and_doc_vector() {
        let msg = GetFailoverLogRequest {
            vbucket: 77,
            opaque: 1,
        };
        assert_eq!(
            GetFailoverLogRequest::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );

        // BinaryProtocol-23
        let hex = "809600000000000000000000deadbeef0000000000000000";
        let msg = GetFailoverLogRequest::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            GetFailoverLogRequest {
                vbucket: 0,
                opaque: 0xdead_beef,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::GetFailoverLog, 0, 1);
        rejects(
            GetFailoverLogRequest::decode(&raw(
                FrameHead::response(Opcode::GetFailoverLog, Status::Success, 1),
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
            GetFailoverLogRequest::decode(&raw(
                FrameHead::request(Opcode::DcpGetFailoverLog, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::GetFailoverLog,
                got: Opcode::DcpGetFailoverLog,
            },
            1,
        );
        rejects(
            GetFailoverLogRequest::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            GetFailoverLogRequest::decode(&raw(head, &[], &[0; 2], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 2,
            },
            4,
        );
        rejects(
            GetFailoverLogRequest::decode(&raw(head, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            GetFailoverLogRequest::decode(&raw(head, &[], &[], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            24,
        );
    }
}
