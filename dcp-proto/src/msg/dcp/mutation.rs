//! DCP_MUTATION (0x57): a document was created or changed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Datatype, DecodeError, EncodeError, Frame, FrameHead, Magic, Opcode};
use crate::msg::check::{self, be_u16, be_u32, be_u64};
use crate::msg::stream_id::StreamIdFraming;

/// Extras length of DCP_MUTATION.
pub const MUTATION_EXTRAS_LEN: usize = 31;

/// DCP_MUTATION: a document version at `by_seqno`, sent by the producer.
///
/// The key includes the LEB128 collection-id prefix when HELLO Collections
/// was negotiated (see [`crate::msg::CollectionKey`]). Key and value are
/// zero-copy slices of the received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// Document CAS.
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
    /// Document key.
    pub key: Bytes,
    /// Document value.
    pub value: Bytes,
}

impl Mutation {
    /// Decodes a DCP_MUTATION request frame.
    #[inline]
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        Self::from_frame(frame.clone())
    }

    /// Decodes a DCP_MUTATION request frame it takes ownership of (the key
    /// and value then share the frame's buffer at the lowest cost).
    #[inline]
    pub fn from_frame(frame: Frame) -> Result<Self, DecodeError> {
        check::request(&frame, Opcode::DcpMutation)?;
        check::valid_datatype(&frame)?;
        let extras = check::extras::<MUTATION_EXTRAS_LEN>(&frame, "31")?;
        check::some_key(&frame)?;
        let at = frame.header().extras_offset();
        let by_seqno = be_u64(extras, 0);
        check::nonzero_seqno(&frame, "by_seqno", by_seqno, at)?;
        let nmeta = be_u16(extras, 28);
        if nmeta != 0 {
            return Err(frame.error(
                crate::codec::DecodeErrorKind::InvalidField {
                    field: "nmeta",
                    value: u64::from(nmeta),
                },
                at + 28,
            ));
        }
        let (rev_seqno, flags, expiration, lock_time, nru) = (
            be_u64(extras, 8),
            be_u32(extras, 16),
            be_u32(extras, 20),
            be_u32(extras, 24),
            extras[30],
        );
        let (vbucket, opaque, cas, datatype) = (
            frame.vbucket(),
            frame.opaque(),
            frame.cas(),
            frame.datatype(),
        );
        let stream_id = check::stream_id(&frame)?;
        let (key, value) = frame.into_key_value();
        Ok(Self {
            vbucket,
            opaque,
            stream_id,
            cas,
            datatype,
            by_seqno,
            rev_seqno,
            flags,
            expiration,
            lock_time,
            nru,
            key,
            value,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; MUTATION_EXTRAS_LEN];
        put_item_meta(
            &mut extras,
            self.by_seqno,
            self.rev_seqno,
            self.flags,
            self.expiration,
            self.lock_time,
        );
        extras[30] = self.nru;
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead {
            magic: Magic::ClientRequest,
            opcode: Opcode::DcpMutation,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket,
            opaque: self.opaque,
            cas: self.cas,
        }
        .encode(buf, framing.as_slice(), &extras, &self.key, &self.value)
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 }
            + MUTATION_EXTRAS_LEN
            + self.key.len()
            + self.value.len()
    }
}

/// Writes the 28 leading extras bytes shared by MUTATION and PREPARE.
pub(crate) fn put_item_meta(
    extras: &mut [u8; MUTATION_EXTRAS_LEN],
    by_seqno: u64,
    rev_seqno: u64,
    flags: u32,
    expiration: u32,
    lock_time: u32,
) {
    let mut w = extras.as_mut_slice();
    w.put_u64(by_seqno);
    w.put_u64(rev_seqno);
    w.put_u32(flags);
    w.put_u32(expiration);
    w.put_u32(lock_time);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DecodeErrorKind;

    fn sample() -> Mutation {
        Mutation {
            vbucket: 0x210,
            opaque: 0x1210,
            stream_id: None,
            cas: 0x1234,
            datatype: Datatype::JSON,
            by_seqno: 4,
            rev_seqno: 1,
            flags: 0xdead_beef,
            expiration: 100,
            lock_time: 0,
            nru: 2,
            key: Bytes::from_static(b"hello"),
            value: Bytes::from_static(b"{\"a\":1}"),
        }
    }

    #[test]
    fn round_trip_with_and_without_stream_id() {
        for sid in [None, Some(7)] {
            let m = Mutation {
                stream_id: sid,
                ..sample()
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            let frame = Frame::parse(buf.freeze()).unwrap();
            assert_eq!(Mutation::decode(&frame).unwrap(), m);
        }
    }

    #[test]
    fn rejects_wrong_extras_and_zero_seqno() {
        let mut buf = BytesMut::new();
        FrameHead::request(Opcode::DcpMutation, 0, 0)
            .encode(&mut buf, &[], &[0; 18], b"k", b"")
            .unwrap();
        let err = Mutation::decode(&Frame::parse(buf.split().freeze()).unwrap()).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::ExtrasLength {
                expected: "31",
                got: 18
            }
        );
        Mutation {
            by_seqno: 0,
            ..sample()
        }
        .encode(&mut buf)
        .unwrap();
        let err = Mutation::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap_err();
        assert_eq!(err.offset, 24);
        assert!(matches!(
            err.kind,
            DecodeErrorKind::InvalidField {
                field: "by_seqno",
                ..
            }
        ));
    }
}
