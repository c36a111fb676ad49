//! STAT (0x10): server statistics, one response per stat.

use bytes::{Bytes, BytesMut};

use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status,
};
use crate::msg::check;
use crate::msg::status_response::body_datatype;

/// STAT: asks for the stats of `group` (the key; empty = the default
/// group), e.g. `vbucket-seqno 5`, `dcp`, `failovers 5`.
///
/// The value is an optional JSON argument, sent with datatype JSON (a value
/// with another datatype is rejected; datatype JSON with no value is
/// accepted). No extras; CAS 0; the vbucket is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Opaque, echoed in every response.
    pub opaque: u32,
    /// The stat group and its arguments.
    pub group: Bytes,
    /// Optional JSON argument.
    pub value: Bytes,
}

impl Stat {
    /// A request for `group` with no argument.
    pub fn new(opaque: u32, group: impl Into<Bytes>) -> Self {
        Self {
            opaque,
            group: group.into(),
            value: Bytes::new(),
        }
    }

    /// Decodes a STAT request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::Stat)?;
        check::zero_cas(frame)?;
        let datatype = frame.datatype();
        let has_value = frame.header().value_len() != 0;
        if !(datatype == Datatype::JSON || datatype == Datatype::RAW && !has_value) {
            return Err(frame.error(DecodeErrorKind::InvalidDatatype(datatype.0), 5));
        }
        check::no_extras(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
            group: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf` (datatype JSON when there is a value).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let datatype = if self.value.is_empty() {
            Datatype::RAW
        } else {
            Datatype::JSON
        };
        FrameHead::request(Opcode::Stat, 0, self.opaque)
            .with_datatype(datatype)
            .encode(buf, &[], &[], &self.group, &self.value)
    }
}

/// One response to STAT: a stat name (key) and its ASCII value.
///
/// The server answers a STAT with a sequence of these, ended by one with an
/// empty key ([`is_terminator`](Self::is_terminator)); an error response
/// (no key; the value may hold an error body) also ends the sequence. No
/// extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// Stat name; empty in the terminator.
    pub key: Bytes,
    /// Stat value (ASCII), or an error body.
    pub value: Bytes,
}

impl StatResponse {
    /// A success response for one stat.
    pub fn new(opaque: u32, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            status: Status::Success,
            opaque,
            key: key.into(),
            value: value.into(),
        }
    }

    /// The empty success response that ends a STAT sequence.
    pub fn terminator(opaque: u32) -> Self {
        Self::new(opaque, Bytes::new(), Bytes::new())
    }

    /// Whether this response ends the sequence (empty key: the terminator,
    /// or an error).
    pub fn is_terminator(&self) -> bool {
        self.key.is_empty()
    }

    /// Decodes a STAT response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::Stat)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        Ok(Self {
            status: frame.status(),
            opaque: frame.opaque(),
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf` (an error body starting with `{` is sent
    /// as JSON).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let head = FrameHead::response(Opcode::Stat, self.status, self.opaque);
        let head = if self.status.is_success() {
            head
        } else {
            head.with_datatype(body_datatype(&self.value))
        };
        head.encode(buf, &[], &[], &self.key, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Magic;
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    #[test]
    fn round_trip() {
        for msg in [
            Stat::new(1, "vbucket-seqno 5"),
            Stat {
                value: Bytes::from_static(br#"{"x":1}"#),
                ..Stat::new(2, "dcp")
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.datatype().is_json(), !msg.value.is_empty());
            assert_eq!(Stat::decode(&frame).unwrap(), msg);
        }
        for msg in [
            StatResponse::new(1, "vb_5:high_seqno", "42"),
            StatResponse::terminator(1),
            StatResponse {
                status: Status::KeyEnoent,
                opaque: 1,
                key: Bytes::new(),
                value: Bytes::from_static(br#"{"error":{}}"#),
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(StatResponse::decode(&frame).unwrap(), msg);
        }
        assert!(StatResponse::terminator(1).is_terminator());
        assert!(!StatResponse::new(1, "pid", "1").is_terminator());
        // Datatype JSON with no value is accepted.
        let frame = raw(
            FrameHead::request(Opcode::Stat, 0, 3).with_datatype(Datatype::JSON),
            &[],
            &[],
            b"dcp",
            &[],
        );
        assert_eq!(Stat::decode(&frame).unwrap(), Stat::new(3, "dcp"));
    }

    #[test]
    fn doc_vectors() {
        // BinaryProtocol-16: default stats.
        let hex = "801000000000000000000000000000000000000000000000";
        let msg = Stat::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, Stat::new(0, Bytes::new()));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);

        // BinaryProtocol-17: pid = 3078.
        let hex = "81100003000000000000000700000000000000000000000070696433303738";
        let msg = StatResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, StatResponse::new(0, "pid", "3078"));
        assert!(!msg.is_terminator());
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::Stat, 0, 1);
        rejects(
            Stat::decode(&raw(
                FrameHead::response(Opcode::Stat, Status::Success, 1),
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
            Stat::decode(&raw(
                FrameHead::request(Opcode::Version, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::Stat,
                got: Opcode::Version,
            },
            1,
        );
        rejects(
            Stat::decode(&raw(head.with_cas(1), &[], &[], &[], &[])),
            DecodeErrorKind::NonZeroCas(1),
            16,
        );
        rejects(
            Stat::decode(&raw(head, &[], &[], b"dcp", b"{}")),
            DecodeErrorKind::InvalidDatatype(0),
            5,
        );
        rejects(
            Stat::decode(&raw(
                head.with_datatype(Datatype::JSON | Datatype::SNAPPY),
                &[],
                &[],
                b"dcp",
                b"{}",
            )),
            DecodeErrorKind::InvalidDatatype(3),
            5,
        );
        rejects(
            Stat::decode(&raw(head, &[], &[0; 4], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );

        let ok = FrameHead::response(Opcode::Stat, Status::Success, 1);
        rejects(
            StatResponse::decode(&raw(
                FrameHead::request(Opcode::Stat, 0, 1),
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
            StatResponse::decode(&raw(ok.with_datatype(Datatype(0x0c)), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(0x0c),
            5,
        );
        rejects(
            StatResponse::decode(&raw(ok, &[], &[0; 4], b"k", b"v")),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
    }
}
