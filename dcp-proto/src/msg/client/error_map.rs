//! GET_ERROR_MAP (0xfe): the server's JSON description of its status codes.

use bytes::{Bytes, BytesMut};

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::check::{self, be_u16};
use crate::msg::status_response::body_datatype;

/// GET_ERROR_MAP: asks for the error map, up to format `version` (1 or 2).
///
/// The value is exactly 2 bytes (u16 version); no extras or key; the
/// vbucket must be 0 and the CAS 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetErrorMap {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Highest error-map format version the client understands.
    pub version: u16,
}

impl GetErrorMap {
    /// Decodes a GET_ERROR_MAP request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::GetErrorMap)?;
        check::zero_cas(frame)?;
        check::raw_datatype(frame)?;
        if frame.vbucket() != 0 {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "vbucket",
                    value: u64::from(frame.vbucket()),
                },
                6,
            ));
        }
        check::no_extras(frame)?;
        check::no_key(frame)?;
        let value = frame.value_slice();
        if value.len() != 2 {
            return Err(frame.error(
                DecodeErrorKind::ValueLength {
                    expected: "2",
                    got: value.len(),
                },
                frame.header().value_offset(),
            ));
        }
        Ok(Self {
            opaque: frame.opaque(),
            version: be_u16(value, 0),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::GetErrorMap, 0, self.opaque).encode(
            buf,
            &[],
            &[],
            &[],
            &self.version.to_be_bytes(),
        )
    }
}

/// The response to GET_ERROR_MAP: the JSON map (or an error body). No
/// extras, no key; sent with datatype JSON when the body is a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetErrorMapResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The error map JSON (or the error body).
    pub map: Bytes,
}

impl GetErrorMapResponse {
    /// Decodes a GET_ERROR_MAP response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::GetErrorMap)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        Ok(Self {
            status: frame.status(),
            opaque: frame.opaque(),
            map: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::response(Opcode::GetErrorMap, self.status, self.opaque)
            .with_datatype(body_datatype(&self.map))
            .encode(buf, &[], &[], &[], &self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::status_response::testing::{encoded, raw, rejects};

    #[test]
    fn round_trip() {
        let msg = GetErrorMap {
            opaque: 1,
            version: 2,
        };
        let frame = encoded(|buf| msg.encode(buf));
        assert_eq!(frame.value_slice(), &[0, 2]);
        assert_eq!(GetErrorMap::decode(&frame).unwrap(), msg);

        for msg in [
            GetErrorMapResponse {
                status: Status::Success,
                opaque: 1,
                map: Bytes::from_static(br#"{"version":2,"revision":1,"errors":{}}"#),
            },
            GetErrorMapResponse {
                status: Status::KeyEnoent,
                opaque: 1,
                map: Bytes::new(),
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.datatype().is_json(), !msg.map.is_empty());
            assert_eq!(GetErrorMapResponse::decode(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::GetErrorMap, 0, 1);
        rejects(
            GetErrorMap::decode(&raw(
                FrameHead::response(Opcode::GetErrorMap, Status::Success, 1),
                &[],
                &[],
                &[],
                &[0, 2],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            GetErrorMap::decode(&raw(
                FrameHead::request(Opcode::Hello, 0, 1),
                &[],
                &[],
                &[],
                &[0, 2],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::GetErrorMap,
                got: Opcode::Hello,
            },
            1,
        );
        rejects(
            GetErrorMap::decode(&raw(head.with_cas(5), &[], &[], &[], &[0, 2])),
            DecodeErrorKind::NonZeroCas(5),
            16,
        );
        rejects(
            GetErrorMap::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[],
                &[],
                &[0, 2],
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            GetErrorMap::decode(&raw(
                FrameHead::request(Opcode::GetErrorMap, 3, 1),
                &[],
                &[],
                &[],
                &[0, 2],
            )),
            DecodeErrorKind::InvalidField {
                field: "vbucket",
                value: 3,
            },
            6,
        );
        rejects(
            GetErrorMap::decode(&raw(head, &[], &[0; 2], &[], &[0, 2])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 2,
            },
            4,
        );
        rejects(
            GetErrorMap::decode(&raw(head, &[], &[], b"k", &[0, 2])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        for value in [&[][..], &[2], &[0, 0, 2]] {
            rejects(
                GetErrorMap::decode(&raw(head, &[], &[], &[], value)),
                DecodeErrorKind::ValueLength {
                    expected: "2",
                    got: value.len(),
                },
                24,
            );
        }
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::GetErrorMap, Status::Success, 1);
        rejects(
            GetErrorMapResponse::decode(&raw(
                FrameHead::request(Opcode::GetErrorMap, 0, 1),
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
            GetErrorMapResponse::decode(&raw(ok.with_datatype(Datatype(0x09)), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(0x09),
            5,
        );
        rejects(
            GetErrorMapResponse::decode(&raw(ok, &[], &[0; 4], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            GetErrorMapResponse::decode(&raw(ok, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
    }
}
