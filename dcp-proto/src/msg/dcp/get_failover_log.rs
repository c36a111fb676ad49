//! DCP_GET_FAILOVER_LOG (0x54) and the failover-log response shared with the
//! non-DCP GET_FAILOVER_LOG (0x96).

use bytes::{Bytes, BytesMut};

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::check;
use crate::msg::failover_log::FailoverLog;
use crate::msg::status_response::{body_datatype, invalid, response_either};

/// DCP_GET_FAILOVER_LOG: the failover log of `vbucket`, on a DCP connection
/// (no extras, key or value; the CAS is not used). For the non-DCP 0x96
/// see [`GetFailoverLogRequest`](crate::msg::client::GetFailoverLogRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetFailoverLog {
    /// The vbucket.
    pub vbucket: u16,
    /// Opaque, echoed in the response.
    pub opaque: u32,
}

impl GetFailoverLog {
    /// Decodes a DCP_GET_FAILOVER_LOG request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpGetFailoverLog)?;
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
        FrameHead::request(Opcode::DcpGetFailoverLog, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &[],
            &[],
            &[],
        )
    }
}

/// The response to DCP_GET_FAILOVER_LOG (0x54) or GET_FAILOVER_LOG (0x96).
///
/// Success carries the log (16 bytes per entry); an error has an empty log
/// and keeps its body (XERROR JSON, or a cluster map with NotMyVbucket).
/// No extras, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverLogResponse {
    /// [`Opcode::DcpGetFailoverLog`] or [`Opcode::GetFailoverLog`].
    pub opcode: Opcode,
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The failover log, newest first (empty on error).
    pub log: FailoverLog,
    /// The body of an error response; always empty on success.
    pub error_body: Bytes,
}

impl FailoverLogResponse {
    /// A success response carrying `log`.
    pub fn success(opcode: Opcode, opaque: u32, log: FailoverLog) -> Self {
        Self {
            opcode,
            status: Status::Success,
            opaque,
            log,
            error_body: Bytes::new(),
        }
    }

    /// An error response with `body` (may be empty).
    pub fn error(opcode: Opcode, status: Status, opaque: u32, body: impl Into<Bytes>) -> Self {
        Self {
            opcode,
            status,
            opaque,
            log: FailoverLog::default(),
            error_body: body.into(),
        }
    }

    /// Decodes a DCP_GET_FAILOVER_LOG or GET_FAILOVER_LOG response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        response_either(frame, Opcode::DcpGetFailoverLog, Opcode::GetFailoverLog)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        let status = frame.status();
        let (log, error_body) = if status.is_success() {
            let log = FailoverLog::decode_value(frame.value_slice())
                .map_err(|kind| frame.error(kind, frame.header().value_offset()))?;
            (log, Bytes::new())
        } else {
            (FailoverLog::default(), frame.value())
        };
        Ok(Self {
            opcode: frame.opcode(),
            status,
            opaque: frame.opaque(),
            log,
            error_body,
        })
    }

    /// Appends the frame to `buf`.
    ///
    /// Fails for another opcode, and for an error response with log entries
    /// or a success with an error body.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(
            self.opcode,
            Opcode::DcpGetFailoverLog | Opcode::GetFailoverLog
        ) {
            return Err(invalid(
                "opcode",
                "must be DCP_GET_FAILOVER_LOG or GET_FAILOVER_LOG",
            ));
        }
        let head = FrameHead::response(self.opcode, self.status, self.opaque);
        if self.status.is_success() {
            if !self.error_body.is_empty() {
                return Err(invalid("error_body", "a success response has no body"));
            }
            head.encode_head(buf, &[], &[], &[], self.log.value_len())?;
            self.log.put_value(buf);
            Ok(())
        } else {
            if !self.log.is_empty() {
                return Err(invalid("log", "an error response has no failover log"));
            }
            head.with_datatype(body_datatype(&self.error_body)).encode(
                buf,
                &[],
                &[],
                &[],
                &self.error_body,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::failover_log::FailoverEntry;
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    fn doc_log() -> FailoverLog {
        [
            (0xfeed_deca, 0x5432),
            (0x00de_cafe, 0x0134_3214),
            (0xfeed_face, 4),
            (0xdead_beef, 0x6524),
        ]
        .into_iter()
        .map(|(vbucket_uuid, seqno)| FailoverEntry {
            vbucket_uuid,
            seqno,
        })
        .collect()
    }

    #[test]
    fn request_round_trip_and_doc_vector() {
        let msg = GetFailoverLog {
            vbucket: 1023,
            opaque: 4,
        };
        assert_eq!(
            GetFailoverLog::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );

        // failover-log-1
        let hex = "805400000000000000000000deadbeef0000000000000000";
        let msg = GetFailoverLog::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            GetFailoverLog {
                vbucket: 0,
                opaque: 0xdead_beef,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::DcpGetFailoverLog, 0, 1);
        rejects(
            GetFailoverLog::decode(&raw(
                FrameHead::response(Opcode::DcpGetFailoverLog, Status::Success, 1),
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
            GetFailoverLog::decode(&raw(
                FrameHead::request(Opcode::GetFailoverLog, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpGetFailoverLog,
                got: Opcode::GetFailoverLog,
            },
            1,
        );
        rejects(
            GetFailoverLog::decode(&raw(head.with_datatype(Datatype::JSON), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            GetFailoverLog::decode(&raw(head, &[], &[0; 4], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            GetFailoverLog::decode(&raw(head, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            GetFailoverLog::decode(&raw(head, &[], &[], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            24,
        );
    }

    #[test]
    fn response_doc_vectors() {
        // failover-log-2 (0x54) and BinaryProtocol-24 (0x96): the same log.
        let body = "00000000feeddeca00000000000054320000000000decafe0000000001343214\
                    00000000feedface000000000000000400000000deadbeef0000000000006524";
        for (prefix, opcode) in [
            (
                "815400000000000000000040deadbeef0000000000000000",
                Opcode::DcpGetFailoverLog,
            ),
            (
                "819600000000000000000040deadbeef0000000000000000",
                Opcode::GetFailoverLog,
            ),
        ] {
            let hex = format!("{prefix}{body}");
            let msg = FailoverLogResponse::decode(&from_hex(&hex)).unwrap();
            assert_eq!(
                msg,
                FailoverLogResponse::success(opcode, 0xdead_beef, doc_log())
            );
            assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
        }
    }

    #[test]
    fn response_round_trip() {
        for msg in [
            FailoverLogResponse::success(Opcode::GetFailoverLog, 1, FailoverLog::default()),
            FailoverLogResponse::error(
                Opcode::DcpGetFailoverLog,
                Status::NotMyVbucket,
                2,
                Bytes::new(),
            ),
            FailoverLogResponse::error(
                Opcode::GetFailoverLog,
                Status::Eaccess,
                3,
                &br#"{"error":{"ref":"1"}}"#[..],
            ),
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.datatype().is_json(), !msg.error_body.is_empty());
            assert_eq!(FailoverLogResponse::decode(&frame).unwrap(), msg);
        }
        let mut buf = BytesMut::new();
        let bad_opcode = FailoverLogResponse::success(Opcode::DcpStreamReq, 1, doc_log());
        assert!(bad_opcode.encode(&mut buf).is_err());
        let mut error_with_log =
            FailoverLogResponse::error(Opcode::GetFailoverLog, Status::Einval, 1, Bytes::new());
        error_with_log.log = doc_log();
        assert!(error_with_log.encode(&mut buf).is_err());
        let mut success_with_body =
            FailoverLogResponse::success(Opcode::GetFailoverLog, 1, doc_log());
        success_with_body.error_body = Bytes::from_static(b"x");
        assert!(success_with_body.encode(&mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::GetFailoverLog, Status::Success, 1);
        rejects(
            FailoverLogResponse::decode(&raw(
                FrameHead::response(Opcode::DcpStreamReq, Status::Success, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpGetFailoverLog,
                got: Opcode::DcpStreamReq,
            },
            1,
        );
        rejects(
            FailoverLogResponse::decode(&raw(
                FrameHead::request(Opcode::GetFailoverLog, 0, 1),
                &[],
                &[],
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
            FailoverLogResponse::decode(&raw(ok.with_datatype(Datatype(0xf0)), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(0xf0),
            5,
        );
        rejects(
            FailoverLogResponse::decode(&raw(ok, &[], &[0; 4], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            FailoverLogResponse::decode(&raw(ok, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            FailoverLogResponse::decode(&raw(ok, &[], &[], &[], &[0; 24])),
            DecodeErrorKind::ValueLength {
                expected: "a multiple of 16",
                got: 24,
            },
            24,
        );
    }
}
