//! DCP_ABORT (0x63): a prepared sync write was abandoned.

use bytes::{Bytes, BytesMut};

use super::commit::{RESOLUTION_EXTRAS_LEN, Resolution};
use crate::codec::{DecodeError, EncodeError, Frame, Opcode};

/// DCP_ABORT: the prepare at `prepared_seqno` is aborted at `abort_seqno`.
/// Never carries a stream id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Seqno of the prepare being aborted (never 0).
    pub prepared_seqno: u64,
    /// Seqno of the abort itself (never 0).
    pub abort_seqno: u64,
    /// Document key.
    pub key: Bytes,
}

impl Abort {
    /// Decodes a DCP_ABORT request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let r = Resolution::decode(frame, Opcode::DcpAbort, "abort_seqno")?;
        Ok(Self {
            vbucket: r.vbucket,
            opaque: r.opaque,
            prepared_seqno: r.prepared_seqno,
            abort_seqno: r.seqno,
            key: r.key,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        Resolution::encode(
            buf,
            Opcode::DcpAbort,
            self.vbucket,
            self.opaque,
            [self.prepared_seqno, self.abort_seqno],
            &self.key,
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + RESOLUTION_EXTRAS_LEN + self.key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, FrameHead, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = Abort::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip() {
        let m = Abort {
            vbucket: 1,
            opaque: 2,
            prepared_seqno: 10,
            abort_seqno: 11,
            key: Bytes::from_static(b"\x00key"),
        };
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), m.wire_len());
        assert_eq!(
            Abort::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
            m
        );
    }

    #[test]
    fn doc_vector_abort_1() {
        let bytes = hex::decode(
            "8063000510000210000000150000121000000000000000000000000000000004\
             000000000000000568656c6c6f",
        )
        .unwrap();
        let m = Abort::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!(
            m,
            Abort {
                vbucket: 0x210,
                opaque: 0x1210,
                prepared_seqno: 4,
                abort_seqno: 5,
                key: Bytes::from_static(b"hello"),
            }
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpAbort, 0, 1);
        let mut ok = [0u8; 16];
        ok[7] = 4;
        ok[15] = 5;
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpCommit, 0, 1),
                &[],
                &ok,
                b"k",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpAbort,
                got: Opcode::DcpCommit,
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
            &frame(head.with_datatype(Datatype::XATTR), &[], &ok, b"k", b""),
            DecodeErrorKind::InvalidDatatype(4),
            5,
        );
        rejects(
            &frame(head, &[], &[0; 18], b"k", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "16",
                got: 18,
            },
            4,
        );
        rejects(
            &frame(head, &[], &ok, b"", b""),
            DecodeErrorKind::KeyRequired,
            40,
        );
        rejects(
            &frame(head, &[], &ok, b"k", b"vv"),
            DecodeErrorKind::ValueNotAllowed(2),
            41,
        );
        rejects(
            &frame(head.with_cas(1), &[], &ok, b"k", b""),
            DecodeErrorKind::NonZeroCas(1),
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
                field: "abort_seqno",
                value: 0,
            },
            32,
        );
    }
}
