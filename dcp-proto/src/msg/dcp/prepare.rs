//! DCP_PREPARE (0x60): a synchronous write awaiting its durability outcome.

use bytes::{Bytes, BytesMut};

use super::mutation::{MUTATION_EXTRAS_LEN, put_item_meta};
use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, DurabilityLevel, EncodeError, Frame, FrameHead, Magic,
    Opcode,
};
use crate::msg::check::{self, be_u32, be_u64};

/// PREPARE's extras have MUTATION's size; only the last three bytes differ.
const EXTRAS_LEN: usize = MUTATION_EXTRAS_LEN;

/// DCP_PREPARE: a pending sync write at `by_seqno`; a [`Commit`] or
/// [`Abort`] for the same key resolves it. Never carries a stream id
/// (sync writes and stream ids are exclusive).
///
/// [`Commit`]: crate::msg::Commit
/// [`Abort`]: crate::msg::Abort
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Document CAS (never 0).
    pub cas: u64,
    /// Datatype of the value as sent.
    pub datatype: Datatype,
    /// Sequence number (never 0).
    pub by_seqno: u64,
    /// Revision sequence number.
    pub rev_seqno: u64,
    /// Client flags, copied verbatim from the stored item (big-endian).
    pub flags: u32,
    /// Expiry time (absolute Unix seconds; 0 = none).
    pub expiration: u32,
    /// Lock time (the server sends 0).
    pub lock_time: u32,
    /// Hotness byte (ignorable).
    pub nru: u8,
    /// Whether this prepares a deletion.
    pub deleted: bool,
    /// Durability level of the write (1..=3 on the wire).
    pub durability: DurabilityLevel,
    /// Document key.
    pub key: Bytes,
    /// Document value.
    pub value: Bytes,
}

impl Prepare {
    /// Decodes a DCP_PREPARE request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpPrepare)?;
        check::valid_datatype(frame)?;
        let extras = check::extras::<EXTRAS_LEN>(frame, "31")?;
        check::some_key(frame)?;
        check::no_stream_id(frame)?;
        if frame.cas() == 0 {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "cas",
                    value: 0,
                },
                16,
            ));
        }
        let at = frame.header().extras_offset();
        let by_seqno = be_u64(extras, 0);
        check::nonzero_seqno(frame, "by_seqno", by_seqno, at)?;
        let [.., nru, deleted, durability] = *extras;
        let deleted = match deleted {
            0 => false,
            1 => true,
            other => {
                return Err(frame.error(
                    DecodeErrorKind::InvalidField {
                        field: "deleted",
                        value: u64::from(other),
                    },
                    at + 29,
                ));
            }
        };
        if !(1..=3).contains(&durability) {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "durability",
                    value: u64::from(durability),
                },
                at + 30,
            ));
        }
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            datatype: frame.datatype(),
            by_seqno,
            rev_seqno: be_u64(extras, 8),
            flags: be_u32(extras, 16),
            expiration: be_u32(extras, 20),
            lock_time: be_u32(extras, 24),
            nru,
            deleted,
            durability: DurabilityLevel::from_u8(durability),
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; EXTRAS_LEN];
        put_item_meta(
            &mut extras,
            self.by_seqno,
            self.rev_seqno,
            self.flags,
            self.expiration,
            self.lock_time,
        );
        let [.., nru, deleted, durability] = &mut extras;
        *nru = self.nru;
        *deleted = u8::from(self.deleted);
        *durability = self.durability.to_u8();
        FrameHead {
            magic: Magic::ClientRequest,
            opcode: Opcode::DcpPrepare,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket,
            opaque: self.opaque,
            cas: self.cas,
        }
        .encode(buf, &[], &extras, &self.key, &self.value)
    }

    /// Bytes this message occupies on the wire.
    pub fn wire_len(&self) -> usize {
        24 + EXTRAS_LEN + self.key.len() + self.value.len()
    }

    /// Flow-control credit the producer charges for this message: the
    /// frame size plus 2 (MB-46634).
    pub fn flow_control_len(&self) -> usize {
        self.wire_len() + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = Prepare::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    fn sample() -> Prepare {
        Prepare {
            vbucket: 0x210,
            opaque: 0x1210,
            cas: 0x1111,
            datatype: Datatype::JSON,
            by_seqno: 4,
            rev_seqno: 1,
            flags: 0x0102_0304,
            expiration: 50,
            lock_time: 0,
            nru: 2,
            deleted: false,
            durability: DurabilityLevel::Majority,
            key: Bytes::from_static(b"hello"),
            value: Bytes::from_static(b"{}"),
        }
    }

    fn extras(deleted: u8, durability: u8) -> [u8; 31] {
        let mut e = [0u8; 31];
        e[7] = 4; // by_seqno
        e[29] = deleted;
        e[30] = durability;
        e
    }

    #[test]
    fn round_trip() {
        for (deleted, durability, value) in [
            (false, DurabilityLevel::Majority, &b"{}"[..]),
            (true, DurabilityLevel::MajorityAndPersistOnMaster, &b""[..]),
            (false, DurabilityLevel::PersistToMajority, &b"{\"a\":1}"[..]),
        ] {
            let m = Prepare {
                deleted,
                durability,
                value: Bytes::copy_from_slice(value),
                ..sample()
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            assert_eq!(m.flow_control_len(), m.wire_len() + 2);
            let f = Frame::parse(buf.freeze()).unwrap();
            assert_eq!(
                f.extras().get(28..),
                Some(&[2, u8::from(deleted), durability.to_u8()][..])
            );
            assert_eq!(Prepare::decode(&f).unwrap(), m);
        }
    }

    #[test]
    fn doc_frame_with_prepare_opcode_still_needs_a_cas() {
        // prepare-1 draws opcode 0x57; patched to 0x60 it is rejected for
        // its zero CAS, as the server rejects it.
        let mut bytes = hex::decode(
            "805700051f000210000000290000121000000000000000000000000000000004\
             000000000000000100000000000000000000000000000168656c6c6f776f726c64",
        )
        .unwrap();
        bytes[1] = 0x60;
        rejects(
            &Frame::parse(bytes.into()).unwrap(),
            DecodeErrorKind::InvalidField {
                field: "cas",
                value: 0,
            },
            16,
        );
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpPrepare, 0, 1).with_cas(1);
        let ok = extras(0, 1);
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpMutation, 0, 1),
                &[],
                &ok,
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpPrepare,
                got: Opcode::DcpMutation,
            },
            1,
        );
        rejects(
            &frame(
                FrameHead {
                    magic: Magic::ClientResponse,
                    ..head
                },
                &[],
                &ok,
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(head.with_datatype(Datatype(0x10)), &[], &ok, b"k", b""),
            DecodeErrorKind::InvalidDatatype(0x10),
            5,
        );
        rejects(
            &frame(head, &[], &[0; 30], b"k", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "31",
                got: 30,
            },
            4,
        );
        rejects(
            &frame(head, &[], &ok, b"", b""),
            DecodeErrorKind::KeyRequired,
            55,
        );
        rejects(
            &frame(head, &[0x22, 0, 7], &ok, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 7,
            },
            24,
        );
        rejects(
            &frame(head.with_cas(0), &[], &ok, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "cas",
                value: 0,
            },
            16,
        );
        let mut zero_seqno = ok;
        zero_seqno[7] = 0;
        rejects(
            &frame(head, &[], &zero_seqno, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "by_seqno",
                value: 0,
            },
            24,
        );
        rejects(
            &frame(head, &[], &extras(2, 1), b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "deleted",
                value: 2,
            },
            24 + 29,
        );
        for level in [0u8, 4, 0xff] {
            rejects(
                &frame(head, &[], &extras(1, level), b"k", b""),
                DecodeErrorKind::InvalidField {
                    field: "durability",
                    value: u64::from(level),
                },
                24 + 30,
            );
        }
    }
}
