//! SELECT_BUCKET (0x89): binds the connection to a bucket.

use bytes::{Bytes, BytesMut};

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check;
use crate::msg::status_response::invalid;

/// SELECT_BUCKET: use `bucket` (the key, required) for the rest of the
/// connection. No extras, no value; the vbucket and CAS are not used. The
/// reply is a [`StatusResponse`](crate::msg::StatusResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectBucket {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// The bucket name ([`SelectBucket::NO_BUCKET`] deselects).
    pub bucket: Bytes,
}

impl SelectBucket {
    /// The bucket name that deselects the current bucket.
    pub const NO_BUCKET: &'static [u8] = b"@no bucket@";

    /// Selects `bucket`.
    pub fn new(opaque: u32, bucket: impl Into<Bytes>) -> Self {
        Self {
            opaque,
            bucket: bucket.into(),
        }
    }

    /// Decodes a SELECT_BUCKET request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::SelectBucket)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
            bucket: frame.key(),
        })
    }

    /// Appends the frame to `buf`. Fails if the bucket name is empty.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.bucket.is_empty() {
            return Err(invalid("bucket", "a bucket name is required"));
        }
        FrameHead::request(Opcode::SelectBucket, 0, self.opaque).encode(
            buf,
            &[],
            &[],
            &self.bucket,
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
        let msg = SelectBucket::new(3, Bytes::from_static(SelectBucket::NO_BUCKET));
        assert_eq!(
            SelectBucket::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );
        assert!(
            SelectBucket::new(1, "")
                .encode(&mut BytesMut::new())
                .is_err()
        );

        // BinaryProtocol-22: select "engineering".
        let hex = "8089000b000000000000000befbeadde0000000000000000656e67696e656572696e67";
        let msg = SelectBucket::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, SelectBucket::new(0xefbe_adde, "engineering"));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::SelectBucket, 0, 1);
        rejects(
            SelectBucket::decode(&raw(
                FrameHead::response(Opcode::SelectBucket, Status::Success, 1),
                &[],
                &[],
                b"b",
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            SelectBucket::decode(&raw(
                FrameHead::request(Opcode::ListBuckets, 0, 1),
                &[],
                &[],
                b"b",
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::SelectBucket,
                got: Opcode::ListBuckets,
            },
            1,
        );
        rejects(
            SelectBucket::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[],
                b"b",
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            SelectBucket::decode(&raw(head, &[], &[0; 4], b"b", &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            SelectBucket::decode(&raw(head, &[], &[], b"", &[])),
            DecodeErrorKind::KeyRequired,
            24,
        );
        rejects(
            SelectBucket::decode(&raw(head, &[], &[], b"b", b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            25,
        );
    }
}
