//! A response whose meaning is its status, for any opcode: the replies to
//! DCP_OPEN, DCP_CLOSE_STREAM, DCP_CONTROL and SELECT_BUCKET, a consumer's
//! NOOP, SNAPSHOT_MARKER and SET_VBUCKET_STATE replies, and the error replies
//! to BUFFER_ACK and SEQNO_ACKNOWLEDGED.

use bytes::{Bytes, BytesMut};

use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status,
};
use crate::msg::check;

/// A status-only response, possibly with a body (the XERROR JSON of an
/// error, or whatever else the server put in the value).
///
/// Decodes any response magic (0x81, 0x83, 0x18) and any opcode; response
/// framing extras (server duration, unit usage) are ignored. A status
/// response carries no extras and no key. Encodes as magic 0x81.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// The opcode of the request this answers.
    pub opcode: Opcode,
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The CAS (0 for these replies).
    pub cas: u64,
    /// Datatype of the value (JSON for an XERROR body).
    pub datatype: Datatype,
    /// The body; empty on success.
    pub value: Bytes,
}

impl StatusResponse {
    /// A response with `status`, no CAS and no body.
    pub const fn new(opcode: Opcode, status: Status, opaque: u32) -> Self {
        Self {
            opcode,
            status,
            opaque,
            cas: 0,
            datatype: Datatype::RAW,
            value: Bytes::new(),
        }
    }

    /// A success response with no body, e.g. a consumer's NOOP reply:
    /// `StatusResponse::success(Opcode::DcpNoop, noop.opaque)`.
    pub const fn success(opcode: Opcode, opaque: u32) -> Self {
        Self::new(opcode, Status::Success, opaque)
    }

    /// An error response with a body of `datatype`.
    pub fn error(
        opcode: Opcode,
        status: Status,
        opaque: u32,
        datatype: Datatype,
        value: impl Into<Bytes>,
    ) -> Self {
        Self {
            datatype,
            value: value.into(),
            ..Self::new(opcode, status, opaque)
        }
    }

    /// Whether the status is success.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body as UTF-8 text (XERROR bodies are JSON), if it is valid UTF-8.
    pub fn value_str(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(&self.value)
    }

    /// Decodes a response frame of any opcode.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        if !frame.is_response() {
            return Err(frame.error(
                DecodeErrorKind::UnexpectedMagic {
                    expected: "response",
                    got: frame.magic(),
                },
                0,
            ));
        }
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        Ok(Self {
            opcode: frame.opcode(),
            status: frame.status(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            datatype: frame.datatype(),
            value: frame.value(),
        })
    }

    /// Appends the frame (magic 0x81) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::response(self.opcode, self.status, self.opaque)
            .with_cas(self.cas)
            .with_datatype(self.datatype)
            .encode(buf, &[], &[], &[], &self.value)
    }

    /// Bytes this message occupies on the wire.
    pub fn wire_len(&self) -> usize {
        24 + self.value.len()
    }
}

/// The frame must be a response to `opcode` or to `alt` (for responses one
/// type decodes for two commands).
pub(crate) fn response_either(
    frame: &Frame,
    opcode: Opcode,
    alt: Opcode,
) -> Result<(), DecodeError> {
    if frame.opcode() == alt {
        check::response(frame, alt)
    } else {
        check::response(frame, opcode)
    }
}

/// The datatype to send an error body with: JSON when it looks like a JSON
/// object (XERROR, manifest and cluster-map bodies), raw otherwise.
pub(crate) fn body_datatype(body: &[u8]) -> Datatype {
    if body.first() == Some(&b'{') {
        Datatype::JSON
    } else {
        Datatype::RAW
    }
}

/// An error for a `field` that the message's encoder cannot write.
pub(crate) const fn invalid(field: &'static str, reason: &'static str) -> EncodeError {
    EncodeError::InvalidField { field, reason }
}

/// Shared helpers for the message tests.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::{Bytes, BytesMut};

    use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead};

    /// Parses a frame from hex (a doc vector).
    pub(crate) fn from_hex(hex: &str) -> Frame {
        Frame::parse(Bytes::from(hex::decode(hex).unwrap())).unwrap()
    }

    /// Runs an encoder into a fresh buffer and parses the result.
    pub(crate) fn encoded(encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>) -> Frame {
        let mut buf = BytesMut::new();
        encode(&mut buf).unwrap();
        Frame::parse(buf.freeze()).unwrap()
    }

    /// Hex of an encoder's output.
    pub(crate) fn encoded_hex(
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> String {
        hex::encode(encoded(encode).as_bytes())
    }

    /// Asserts a decode failed with exactly `kind` at `offset`.
    #[track_caller]
    pub(crate) fn rejects<T: core::fmt::Debug>(
        result: Result<T, DecodeError>,
        kind: DecodeErrorKind,
        offset: usize,
    ) {
        let err = result.unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    /// A frame with arbitrary sections, for rejection tests.
    pub(crate) fn raw(
        head: FrameHead,
        framing_extras: &[u8],
        extras: &[u8],
        key: &[u8],
        value: &[u8],
    ) -> Frame {
        encoded(|buf| head.encode(buf, framing_extras, extras, key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{encoded, encoded_hex, from_hex, raw};
    use super::*;
    use crate::codec::Magic;

    #[test]
    fn round_trip() {
        for msg in [
            StatusResponse::success(Opcode::DcpNoop, 5),
            StatusResponse::error(
                Opcode::DcpControl,
                Status::Einval,
                7,
                Datatype::JSON,
                &br#"{"error":{"context":"bad key"}}"#[..],
            ),
            StatusResponse {
                cas: 99,
                ..StatusResponse::new(Opcode::Unknown(0xee), Status::Unknown(0xff01), 1)
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.magic(), Magic::ClientResponse);
            assert_eq!(frame.wire_len(), msg.wire_len());
            assert_eq!(StatusResponse::decode(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn doc_vectors() {
        // no-op-2, open-connection-2, buffer-ack-2 (doc-frames.json) and
        // BinaryProtocol-1 (a GET miss with a text body).
        for (hex, opcode, status, opaque, value) in [
            (
                "815c00000000000000000000000000050000000000000000",
                Opcode::DcpNoop,
                Status::Success,
                5,
                &b""[..],
            ),
            (
                "815000000000000000000000000000010000000000000000",
                Opcode::DcpOpen,
                Status::Success,
                1,
                b"",
            ),
            (
                "815d00000000000000000000000000050000000000000000",
                Opcode::DcpBufferAck,
                Status::Success,
                5,
                b"",
            ),
            (
                "8100000000000001000000090000000000000000000000004e6f7420666f756e64",
                Opcode::Get,
                Status::KeyEnoent,
                0,
                b"Not found",
            ),
        ] {
            let msg = StatusResponse::decode(&from_hex(hex)).unwrap();
            assert_eq!(
                msg,
                StatusResponse {
                    value: Bytes::copy_from_slice(value),
                    ..StatusResponse::new(opcode, status, opaque)
                }
            );
            assert_eq!(msg.value_str().unwrap().as_bytes(), value);
            assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
        }
    }

    #[test]
    fn flexible_response_framing_is_ignored() {
        let head = FrameHead {
            magic: Magic::AltClientResponse,
            ..FrameHead::response(Opcode::DcpControl, Status::Success, 3)
        };
        let frame = raw(head, &[0x02, 0x00, 0x10], &[], &[], &[]);
        assert_eq!(
            StatusResponse::decode(&frame).unwrap(),
            StatusResponse::success(Opcode::DcpControl, 3)
        );
    }

    #[test]
    fn rejections() {
        let ok = FrameHead::response(Opcode::DcpOpen, Status::Success, 1);
        let err = StatusResponse::decode(&raw(
            FrameHead::request(Opcode::DcpOpen, 0, 1),
            &[],
            &[],
            &[],
            &[],
        ))
        .unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnexpectedMagic {
                expected: "response",
                got: Magic::ClientRequest
            }
        );
        assert_eq!(err.offset, 0);

        let err =
            StatusResponse::decode(&raw(ok.with_datatype(Datatype(0x08)), &[], &[], &[], &[]))
                .unwrap_err();
        assert_eq!(
            (err.kind, err.offset),
            (DecodeErrorKind::InvalidDatatype(0x08), 5)
        );

        let err = StatusResponse::decode(&raw(ok, &[], &[0; 4], &[], &[])).unwrap_err();
        assert_eq!(
            (err.kind, err.offset),
            (
                DecodeErrorKind::ExtrasLength {
                    expected: "0",
                    got: 4
                },
                4
            )
        );

        let err = StatusResponse::decode(&raw(ok, &[], &[], b"k", &[])).unwrap_err();
        assert_eq!(
            (err.kind, err.offset),
            (DecodeErrorKind::KeyNotAllowed(1), 24)
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(body_datatype(b"{}"), Datatype::JSON);
        assert_eq!(body_datatype(b"Not found"), Datatype::RAW);
        assert_eq!(body_datatype(b""), Datatype::RAW);
        let frame = raw(
            FrameHead::response(Opcode::SaslStep, Status::Success, 0),
            &[],
            &[],
            &[],
            &[],
        );
        assert!(response_either(&frame, Opcode::SaslAuth, Opcode::SaslStep).is_ok());
        let err = response_either(&frame, Opcode::SaslAuth, Opcode::Hello).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::SaslAuth,
                got: Opcode::SaslStep
            }
        );
    }
}
