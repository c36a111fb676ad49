//! DCP_SEQNO_ACKNOWLEDGED (0x61): a replica consumer tells the active which
//! prepare it has made durable (sync replication).

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u64};

/// DCP_SEQNO_ACKNOWLEDGED: prepares up to `prepared_seqno` are satisfied on
/// this replica (extras 8, no key, no value, CAS 0).
///
/// Needs `enable_sync_writes` and `consumer_name` on the producer. No
/// response on success; an error comes back as a
/// [`StatusResponse`](crate::msg::StatusResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqnoAcknowledged {
    /// The vbucket.
    pub vbucket: u16,
    /// Opaque of the vbucket's stream.
    pub opaque: u32,
    /// The highest acknowledged prepare seqno.
    pub prepared_seqno: u64,
}

impl SeqnoAcknowledged {
    /// Decodes a DCP_SEQNO_ACKNOWLEDGED request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpSeqnoAcknowledged)?;
        check::zero_cas(frame)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<8>(frame, "8")?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            prepared_seqno: be_u64(extras, 0),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::DcpSeqnoAcknowledged, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &self.prepared_seqno.to_be_bytes(),
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
        let msg = SeqnoAcknowledged {
            vbucket: 1,
            opaque: 2,
            prepared_seqno: u64::MAX,
        };
        assert_eq!(
            SeqnoAcknowledged::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );

        // seqno-acknowledged-1: vbucket 0x210, prepared seqno 4.
        let hex = "8061000008000210000000080000121000000000000000000000000000000004";
        let msg = SeqnoAcknowledged::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            SeqnoAcknowledged {
                vbucket: 0x210,
                opaque: 0x1210,
                prepared_seqno: 4,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpSeqnoAcknowledged, 0, 1);
        rejects(
            SeqnoAcknowledged::decode(&raw(
                FrameHead::response(Opcode::DcpSeqnoAcknowledged, Status::Einval, 1),
                &[],
                &[0; 8],
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
            SeqnoAcknowledged::decode(&raw(
                FrameHead::request(Opcode::DcpCommit, 0, 1),
                &[],
                &[0; 8],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpSeqnoAcknowledged,
                got: Opcode::DcpCommit,
            },
            1,
        );
        rejects(
            SeqnoAcknowledged::decode(&raw(head.with_cas(3), &[], &[0; 8], &[], &[])),
            DecodeErrorKind::NonZeroCas(3),
            16,
        );
        rejects(
            SeqnoAcknowledged::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[0; 8],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            SeqnoAcknowledged::decode(&raw(head, &[], &[0; 16], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "8",
                got: 16,
            },
            4,
        );
        rejects(
            SeqnoAcknowledged::decode(&raw(head, &[], &[0; 8], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            32,
        );
        rejects(
            SeqnoAcknowledged::decode(&raw(head, &[], &[0; 8], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            32,
        );
    }
}
