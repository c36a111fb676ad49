//! DCP_SET_VBUCKET_STATE (0x5b): a takeover stream changes the vbucket state.

use bytes::BytesMut;

use crate::codec::{
    DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, code_enum,
};
use crate::msg::check;

code_enum! {
    /// A vbucket state (the u8 of SET_VBUCKET_STATE).
    pub enum VbucketState: u8 {
        /// 1: active.
        Active = 1,
        /// 2: replica.
        Replica = 2,
        /// 3: pending.
        Pending = 3,
        /// 4: dead.
        Dead = 4,
    }
}

/// DCP_SET_VBUCKET_STATE: sent on takeover streams; the consumer must reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVbucketState {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// The new state (the decoder accepts only the four known states).
    pub state: VbucketState,
}

impl SetVbucketState {
    /// Decodes a DCP_SET_VBUCKET_STATE request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpSetVbucketState)?;
        check::raw_datatype(frame)?;
        let [state] = *check::extras::<1>(frame, "1")?;
        check::no_key(frame)?;
        // The server's validator allows no value (the doc's JSON value
        // belongs to SET_VBUCKET 0x3d).
        check::no_value(frame)?;
        check::no_stream_id(frame)?;
        if !(1..=4).contains(&state) {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "state",
                    value: u64::from(state),
                },
                frame.header().extras_offset(),
            ));
        }
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            state: VbucketState::from_raw(state),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::DcpSetVbucketState, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &[self.state.raw()],
            &[],
            &[],
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = SetVbucketState::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    #[test]
    fn round_trip_every_state() {
        for state in [
            VbucketState::Active,
            VbucketState::Replica,
            VbucketState::Pending,
            VbucketState::Dead,
        ] {
            let m = SetVbucketState {
                vbucket: 42,
                opaque: 9,
                state,
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            assert_eq!(
                SetVbucketState::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
                m
            );
        }
    }

    #[test]
    fn doc_vector_set_vbucket_state_1() {
        let bytes = hex::decode("805b00000100000000000001deadbeef000000000000000004").unwrap();
        let m = SetVbucketState::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!(
            m,
            SetVbucketState {
                vbucket: 0,
                opaque: 0xdead_beef,
                state: VbucketState::Dead,
            }
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpSetVbucketState, 0, 1);
        rejects(
            &frame(
                FrameHead::request(Opcode::SetVbucket, 0, 1),
                &[],
                &[1],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpSetVbucketState,
                got: Opcode::SetVbucket,
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
                &[1],
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
            &frame(head.with_datatype(Datatype::JSON), &[], &[1], b"", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            &frame(head, &[], &[], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "1",
                got: 0,
            },
            4,
        );
        rejects(
            &frame(head, &[], &[1], b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            25,
        );
        rejects(
            &frame(head, &[], &[1], b"", b"{}"),
            DecodeErrorKind::ValueNotAllowed(2),
            25,
        );
        rejects(
            &frame(head, &[0x22, 0, 1], &[1], b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 1,
            },
            24,
        );
        for state in [0u8, 5, 0xff] {
            rejects(
                &frame(head, &[], &[state], b"", b""),
                DecodeErrorKind::InvalidField {
                    field: "state",
                    value: u64::from(state),
                },
                24,
            );
        }
        assert_eq!(VbucketState::from_raw(9), VbucketState::Unknown(9));
    }
}
