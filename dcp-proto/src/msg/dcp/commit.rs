//! DCP_COMMIT (0x62): a prepared sync write became visible.
//!
//! Also holds the layout COMMIT shares with ABORT (0x63).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u64};

/// Extras length of COMMIT and ABORT.
pub(super) const RESOLUTION_EXTRAS_LEN: usize = 16;

/// DCP_COMMIT: the prepare at `prepared_seqno` is committed at
/// `commit_seqno`. Never carries a stream id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Seqno of the prepare being committed (never 0).
    pub prepared_seqno: u64,
    /// Seqno of the commit itself (never 0).
    pub commit_seqno: u64,
    /// Document key.
    pub key: Bytes,
}

impl Commit {
    /// Decodes a DCP_COMMIT request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let r = Resolution::decode(frame, Opcode::DcpCommit, "commit_seqno")?;
        Ok(Self {
            vbucket: r.vbucket,
            opaque: r.opaque,
            prepared_seqno: r.prepared_seqno,
            commit_seqno: r.seqno,
            key: r.key,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        Resolution::encode(
            buf,
            Opcode::DcpCommit,
            self.vbucket,
            self.opaque,
            [self.prepared_seqno, self.commit_seqno],
            &self.key,
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + RESOLUTION_EXTRAS_LEN + self.key.len()
    }
}

/// The fields of COMMIT and ABORT, which share one layout: extras
/// `u64 prepared_seqno, u64 seqno`, a key, no value, CAS 0, no stream id.
pub(super) struct Resolution {
    pub(super) vbucket: u16,
    pub(super) opaque: u32,
    pub(super) prepared_seqno: u64,
    pub(super) seqno: u64,
    pub(super) key: Bytes,
}

impl Resolution {
    /// Decodes `frame` as `opcode`; `seqno_field` names the second seqno.
    pub(super) fn decode(
        frame: &Frame,
        opcode: Opcode,
        seqno_field: &'static str,
    ) -> Result<Self, DecodeError> {
        check::request(frame, opcode)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<RESOLUTION_EXTRAS_LEN>(frame, "16")?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        check::zero_cas(frame)?;
        check::no_stream_id(frame)?;
        let at = frame.header().extras_offset();
        let prepared_seqno = be_u64(extras, 0);
        check::nonzero_seqno(frame, "prepared_seqno", prepared_seqno, at)?;
        let seqno = be_u64(extras, 8);
        check::nonzero_seqno(frame, seqno_field, seqno, at + 8)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            prepared_seqno,
            seqno,
            key: frame.key(),
        })
    }

    /// Appends a frame of `opcode` with `seqnos` as its extras.
    pub(super) fn encode(
        buf: &mut BytesMut,
        opcode: Opcode,
        vbucket: u16,
        opaque: u32,
        seqnos: [u64; 2],
        key: &[u8],
    ) -> Result<(), EncodeError> {
        let mut extras = [0u8; RESOLUTION_EXTRAS_LEN];
        let mut w = extras.as_mut_slice();
        for seqno in seqnos {
            w.put_u64(seqno);
        }
        FrameHead::request(opcode, vbucket, opaque).encode(buf, &[], &extras, key, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = Commit::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip() {
        let m = Commit {
            vbucket: 1,
            opaque: 2,
            prepared_seqno: 10,
            commit_seqno: 12,
            key: Bytes::from_static(b"\x08k"),
        };
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), m.wire_len());
        assert_eq!(
            Commit::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
            m
        );
    }

    #[test]
    fn doc_vector_commit_1() {
        let bytes = hex::decode(
            "8062000510000210000000150000121000000000000000000000000000000004\
             000000000000000568656c6c6f",
        )
        .unwrap();
        let m = Commit::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!(
            m,
            Commit {
                vbucket: 0x210,
                opaque: 0x1210,
                prepared_seqno: 4,
                commit_seqno: 5,
                key: Bytes::from_static(b"hello"),
            }
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpCommit, 0, 1);
        let mut ok = [0u8; 16];
        ok[7] = 4;
        ok[15] = 5;
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpAbort, 0, 1),
                &[],
                &ok,
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpCommit,
                got: Opcode::DcpAbort,
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
            &frame(head.with_datatype(Datatype::JSON), &[], &ok, b"k", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &ok[..8], b"k", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "16",
                got: 8,
            },
            4,
        );
        rejects(
            &frame(head, &[], &ok, b"", b""),
            DecodeErrorKind::KeyRequired,
            40,
        );
        rejects(
            &frame(head, &[], &ok, b"k", b"v"),
            DecodeErrorKind::ValueNotAllowed(1),
            41,
        );
        rejects(
            &frame(head.with_cas(9), &[], &ok, b"k", b""),
            DecodeErrorKind::NonZeroCas(9),
            16,
        );
        rejects(
            &frame(head, &[0x22, 0, 3], &ok, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 3,
            },
            24,
        );
        let mut zero = ok;
        zero[7] = 0;
        rejects(
            &frame(head, &[], &zero, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "prepared_seqno",
                value: 0,
            },
            24,
        );
        let mut zero = ok;
        zero[15] = 0;
        rejects(
            &frame(head, &[], &zero, b"k", b""),
            DecodeErrorKind::InvalidField {
                field: "commit_seqno",
                value: 0,
            },
            32,
        );
    }
}
