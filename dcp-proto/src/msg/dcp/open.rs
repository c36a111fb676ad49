//! DCP_OPEN (0x50): turns the connection into a DCP producer or consumer.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::codec::{Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u32};
use crate::msg::status_response::invalid;

/// Extras length of DCP_OPEN.
pub const OPEN_EXTRAS_LEN: usize = 8;

bitflags::bitflags! {
    /// DCP_OPEN flags.
    ///
    /// Unknown bits are kept as received. The codec does not judge
    /// combinations: the producer refuses `INVALID`, `UNUSED`, `PITR`, unknown
    /// bits, `NO_VALUE` with `NO_VALUE_WITH_UNDERLYING_DATATYPE`, and
    /// `INCLUDE_DELETED_USER_XATTRS` without `INCLUDE_XATTRS`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct OpenFlags: u32 {
        /// 0x001: open a producer (the client consumes); clear for a consumer.
        const PRODUCER = 0x001;
        /// 0x002: formerly "notifier"; rejected.
        const INVALID = 0x002;
        /// 0x004: include xattrs in mutation/deletion/expiration values.
        const INCLUDE_XATTRS = 0x004;
        /// 0x008: strip values (datatype then 0).
        const NO_VALUE = 0x008;
        /// 0x010: unused; rejected.
        const UNUSED = 0x010;
        /// 0x020: DELETION v2 (with delete times), and EXPIRATION if enabled.
        const INCLUDE_DELETE_TIMES = 0x020;
        /// 0x040: strip values but keep the document's datatype.
        const NO_VALUE_WITH_UNDERLYING_DATATYPE = 0x040;
        /// 0x080: point-in-time recovery; unsupported, rejected.
        const PITR = 0x080;
        /// 0x100: include user xattrs of deleted documents (needs
        /// `INCLUDE_XATTRS`).
        const INCLUDE_DELETED_USER_XATTRS = 0x100;
        /// 0x200: skip deletions during the initial backfill (producer only).
        const SKIP_DELETES_IN_INITIAL_BACKFILL = 0x200;
    }
}

/// DCP_OPEN: opens a DCP connection named `name`.
///
/// Extras: `u32` seqno (unused; ignored when decoding, sent as 0) and `u32`
/// flags. The key is the connection name (required). The value is empty, or
/// a JSON object (datatype JSON) whose only allowed key is `consumer_name`.
/// `{}` decodes as no consumer name. The vbucket and CAS are not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Open flags.
    pub flags: OpenFlags,
    /// The connection name (e.g. `service:unique-info`); never empty.
    pub name: Bytes,
    /// The `consumer_name` of the JSON value, if any.
    pub consumer_name: Option<String>,
}

#[derive(Serialize)]
struct OpenValue<'a> {
    consumer_name: &'a str,
}

impl Open {
    /// Decodes a DCP_OPEN request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpOpen)?;
        let datatype = frame.datatype();
        let value = frame.value_slice();
        if !(datatype == Datatype::JSON || datatype == Datatype::RAW && value.is_empty()) {
            return Err(frame.error(DecodeErrorKind::InvalidDatatype(datatype.0), 5));
        }
        let extras = check::extras::<OPEN_EXTRAS_LEN>(frame, "8")?;
        check::some_key(frame)?;
        let consumer_name = match value {
            [] => None,
            json => consumer_name(json).map_err(|reason| {
                frame.error(
                    DecodeErrorKind::InvalidJson {
                        field: "open value",
                        reason,
                    },
                    frame.header().value_offset(),
                )
            })?,
        };
        Ok(Self {
            opaque: frame.opaque(),
            flags: OpenFlags::from_bits_retain(be_u32(extras, 4)),
            name: frame.key(),
            consumer_name,
        })
    }

    /// Appends the frame to `buf`. Fails if `name` is empty.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.name.is_empty() {
            return Err(invalid("name", "the connection name is required"));
        }
        let mut extras = [0u8; OPEN_EXTRAS_LEN];
        let mut w = extras.as_mut_slice();
        w.put_u32(0);
        w.put_u32(self.flags.bits());
        let (datatype, value) = match &self.consumer_name {
            None => (Datatype::RAW, Vec::new()),
            Some(consumer_name) => (
                Datatype::JSON,
                serde_json::to_vec(&OpenValue { consumer_name })
                    .map_err(|_| invalid("consumer_name", "JSON serialization failed"))?,
            ),
        };
        FrameHead::request(Opcode::DcpOpen, 0, self.opaque)
            .with_datatype(datatype)
            .encode(buf, &[], &extras, &self.name, &value)
    }
}

/// The `consumer_name` of an OPEN value: a JSON object with no other key.
fn consumer_name(json: &[u8]) -> Result<Option<String>, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut name = None;
    for (key, value) in object {
        match (key.as_str(), value) {
            ("consumer_name", serde_json::Value::String(s)) => name = Some(s),
            ("consumer_name", _) => return Err("consumer_name is not a string".into()),
            (other, _) => return Err(format!("unexpected key {other:?}")),
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Magic, Status};
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    fn sample() -> Open {
        Open {
            opaque: 1,
            flags: OpenFlags::PRODUCER | OpenFlags::INCLUDE_XATTRS,
            name: Bytes::from_static(b"dcp-rs:test"),
            consumer_name: None,
        }
    }

    #[test]
    fn round_trip() {
        for msg in [
            sample(),
            Open {
                consumer_name: Some("replica \"1\" \u{e9}".into()),
                flags: OpenFlags::from_bits_retain(0x8000_0400),
                ..sample()
            },
            Open {
                consumer_name: Some(String::new()),
                ..sample()
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.datatype().is_json(), msg.consumer_name.is_some());
            assert_eq!(Open::decode(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn doc_vector() {
        // open-connection-1: a consumer named "bucketstream vb[100-105]".
        let hex = "80500018080000000000002000000001000000000000000000000000000000006275636b65747374\
                   7265616d2076625b3130302d3130355d";
        let msg = Open::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            Open {
                opaque: 1,
                flags: OpenFlags::empty(),
                name: Bytes::from_static(b"bucketstream vb[100-105]"),
                consumer_name: None,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn value_variants() {
        let head = FrameHead::request(Opcode::DcpOpen, 0, 1).with_datatype(Datatype::JSON);
        let extras = [0, 0, 0, 0, 0, 0, 0, 1];
        let decode = |value: &[u8]| Open::decode(&raw(head, &[], &extras, b"n", value));
        assert_eq!(decode(b"{}").unwrap().consumer_name, None);
        assert_eq!(
            decode(br#" {"consumer_name":"a\u0062"} "#)
                .unwrap()
                .consumer_name
                .as_deref(),
            Some("ab")
        );
        // JSON datatype with no value is accepted (and re-encoded as raw).
        assert_eq!(
            decode(b"").unwrap(),
            Open::decode(&raw(
                head.with_datatype(Datatype::RAW),
                &[],
                &extras,
                b"n",
                b""
            ))
            .unwrap()
        );
        // Extras seqno is ignored.
        let msg = Open::decode(&raw(head, &[], &[0, 0, 0, 9, 0, 0, 0, 1], b"n", b"")).unwrap();
        assert_eq!(msg.flags, OpenFlags::PRODUCER);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpOpen, 0, 1);
        let json = head.with_datatype(Datatype::JSON);
        let extras = [0u8; 8];
        rejects(
            Open::decode(&raw(
                FrameHead::response(Opcode::DcpOpen, Status::Success, 1),
                &[],
                &extras,
                b"n",
                b"",
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            Open::decode(&raw(
                FrameHead::request(Opcode::DcpControl, 0, 1),
                &[],
                &extras,
                b"n",
                b"",
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpOpen,
                got: Opcode::DcpControl,
            },
            1,
        );
        rejects(
            Open::decode(&raw(
                head.with_datatype(Datatype::SNAPPY),
                &[],
                &extras,
                b"n",
                b"",
            )),
            DecodeErrorKind::InvalidDatatype(2),
            5,
        );
        rejects(
            Open::decode(&raw(head, &[], &extras, b"n", br#"{"consumer_name":"x"}"#)),
            DecodeErrorKind::InvalidDatatype(0),
            5,
        );
        rejects(
            Open::decode(&raw(head, &[], &[0; 4], b"n", b"")),
            DecodeErrorKind::ExtrasLength {
                expected: "8",
                got: 4,
            },
            4,
        );
        rejects(
            Open::decode(&raw(head, &[], &extras, b"", b"")),
            DecodeErrorKind::KeyRequired,
            32,
        );
        for (value, reason) in [
            (
                &br#"{"consumer_name":"x","other":1}"#[..],
                r#"unexpected key "other""#,
            ),
            (br#"{"consumer_name":7}"#, "consumer_name is not a string"),
        ] {
            rejects(
                Open::decode(&raw(json, &[], &extras, b"n", value)),
                DecodeErrorKind::InvalidJson {
                    field: "open value",
                    reason: reason.into(),
                },
                33,
            );
        }
        // Not an object, or not JSON: the reason is serde_json's message.
        for value in [&br#"["consumer_name"]"#[..], b"null", b"{", b"\xff"] {
            let err = Open::decode(&raw(json, &[], &extras, b"n", value)).unwrap_err();
            assert!(
                matches!(&err.kind, DecodeErrorKind::InvalidJson { field: "open value", reason } if !reason.is_empty()),
                "{err}"
            );
            assert_eq!(err.offset, 33);
        }
    }

    #[test]
    fn encode_requires_a_name() {
        let msg = Open {
            name: Bytes::new(),
            ..sample()
        };
        assert!(msg.encode(&mut BytesMut::new()).is_err());
    }
}
