//! DCP_FLUSH (0x5a): obsolete; current servers never send it.

use bytes::BytesMut;

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check;

/// DCP_FLUSH: the vbucket was flushed. Obsolete (the server's opcode is
/// `DcpFlush_Unsupported`); kept so old traces decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    /// Vbucket that was flushed.
    pub vbucket: u16,
    /// Opaque of the stream.
    pub opaque: u32,
}

impl Flush {
    /// Decodes a DCP_FLUSH request frame (no extras, key or value).
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpFlush)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        check::no_stream_id(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::DcpFlush, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &[],
            &[],
            &[],
        )
    }

    /// Bytes this message occupies on the wire.
    pub fn wire_len(&self) -> usize {
        24
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = Flush::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip() {
        let m = Flush {
            vbucket: 5,
            opaque: 0xdead_beef,
        };
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), m.wire_len());
        assert_eq!(
            Flush::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
            m
        );
    }

    #[test]
    fn doc_frame_decodes() {
        // flush-1 is consistent but not code-conformant only because no
        // current server sends 0x5a; its bytes are well-formed.
        let bytes = hex::decode("805a00000000000000000000deadbeef0000000000000000").unwrap();
        let m = Flush::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!(
            m,
            Flush {
                vbucket: 0,
                opaque: 0xdead_beef
            }
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpFlush, 0, 1);
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpNoop, 0, 1),
                &[],
                &[],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpFlush,
                got: Opcode::DcpNoop,
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
                &[],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(head.with_datatype(Datatype::SNAPPY), &[], &[], b"", b""),
            DecodeErrorKind::InvalidDatatype(2),
            5,
        );
        rejects(
            &frame(head, &[], &[0], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 1,
            },
            4,
        );
        rejects(
            &frame(head, &[], &[], b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            &frame(head, &[], &[], b"", b"v"),
            DecodeErrorKind::ValueNotAllowed(1),
            24,
        );
        rejects(
            &frame(head, &[0x22, 0, 5], &[], b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 5,
            },
            24,
        );
    }
}
