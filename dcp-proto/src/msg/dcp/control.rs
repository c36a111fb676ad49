//! DCP_CONTROL (0x5e): sets a connection option on the producer, as an
//! ASCII key and value (e.g. `enable_noop` = `true`).

use bytes::{Bytes, BytesMut};

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check;
use crate::msg::status_response::invalid;

/// DCP_CONTROL: set `key` to `value` (no extras; key and value both
/// required; the vbucket and CAS are not used).
///
/// The reply is a [`StatusResponse`](crate::msg::StatusResponse): EINVAL for
/// an unknown key or a bad value, NotSupported for some keys; older servers
/// answer EINVAL for keys they do not know, which clients use as a feature
/// probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// The option name; never empty.
    pub key: Bytes,
    /// The option value; never empty.
    pub value: Bytes,
}

impl Control {
    /// A control message setting `key` to `value`.
    pub fn new(opaque: u32, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            opaque,
            key: key.into(),
            value: value.into(),
        }
    }

    /// The key as text.
    pub fn key_str(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(&self.key)
    }

    /// The value as text.
    pub fn value_str(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(&self.value)
    }

    /// Decodes a DCP_CONTROL request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpControl)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::some_key(frame)?;
        check::some_value(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf`. Fails if the key or the value is empty.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.key.is_empty() {
            return Err(invalid("key", "a control key is required"));
        }
        if self.value.is_empty() {
            return Err(invalid("value", "a control value is required"));
        }
        FrameHead::request(Opcode::DcpControl, 0, self.opaque).encode(
            buf,
            &[],
            &[],
            &self.key,
            &self.value,
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
        let msg = Control::new(7, "set_noop_interval", "20.5");
        let frame = encoded(|buf| msg.encode(buf));
        assert_eq!(frame.header().key_len, 17);
        let decoded = Control::decode(&frame).unwrap();
        assert_eq!(decoded, msg);
        assert_eq!(decoded.key_str(), Ok("set_noop_interval"));
        assert_eq!(decoded.value_str(), Ok("20.5"));
        assert!(Control::new(1, &b"\xff"[..], "x").key_str().is_err());
    }

    #[test]
    fn encode_requires_key_and_value() {
        for msg in [
            Control::new(1, "", "true"),
            Control::new(1, "enable_noop", ""),
        ] {
            assert!(msg.encode(&mut BytesMut::new()).is_err());
        }
    }

    #[test]
    fn doc_frames() {
        // control-1 has a 4-byte extras header and no key: the first 28
        // bytes form a frame the server rejects, as does the decoder.
        let hex = "805e00000400000500000004000000010000000000000000656e61626c655f6e6f6f7074727565";
        let err =
            crate::codec::Frame::parse(bytes::Bytes::from(hex::decode(hex).unwrap())).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::TrailingBytes { extra: 11, .. }
        ));
        rejects(
            Control::decode(&from_hex(&hex[..56])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        // Its body with a correct header (key_len 11, extras 0, body 15).
        let fixed = "805e000b00000000000000\
                     0f000000010000000000000000656e61626c655f6e6f6f7074727565";
        let msg = Control::decode(&from_hex(fixed)).unwrap();
        assert_eq!(msg, Control::new(1, "enable_noop", "true"));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), fixed);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpControl, 0, 1);
        rejects(
            Control::decode(&raw(
                FrameHead::response(Opcode::DcpControl, Status::Success, 1),
                &[],
                &[],
                b"k",
                b"v",
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            Control::decode(&raw(
                FrameHead::request(Opcode::DcpOpen, 0, 1),
                &[],
                &[],
                b"k",
                b"v",
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpControl,
                got: Opcode::DcpOpen,
            },
            1,
        );
        rejects(
            Control::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[],
                b"k",
                b"v",
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            Control::decode(&raw(head, &[], &[0; 4], b"k", b"v")),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            Control::decode(&raw(head, &[], &[], b"", b"v")),
            DecodeErrorKind::KeyRequired,
            24,
        );
        rejects(
            Control::decode(&raw(head, &[], &[], b"k", b"")),
            DecodeErrorKind::ValueRequired,
            25,
        );
    }
}
