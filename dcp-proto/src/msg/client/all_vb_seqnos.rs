//! GET_ALL_VB_SEQNOS (0x48): the high seqno of every vbucket on the node.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::check::{self, be_u16, be_u32, be_u64};
use crate::msg::status_response::{body_datatype, invalid};

/// Bytes per `(vbucket, seqno)` entry of a GET_ALL_VB_SEQNOS response.
pub const VB_SEQNO_ENTRY_LEN: usize = 10;

/// GET_ALL_VB_SEQNOS: the high seqnos of the node's vbuckets, optionally
/// only those in one state, and optionally for one collection.
///
/// Extras are 0 bytes, 4 (`u32 state`) or 8 (state, then `u32 collection
/// id`; needs HELLO Collections); no key, no value (a value is rejected);
/// CAS 0. States: 0 any alive, 1 active, 2 replica, 3 pending, 4 dead —
/// others are rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAllVbSeqnos {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Only vbuckets in this state (0..=4).
    pub state: Option<u32>,
    /// Seqnos of this collection instead of the vbucket high seqno
    /// (requires `state`).
    pub collection_id: Option<u32>,
}

impl GetAllVbSeqnos {
    /// Decodes a GET_ALL_VB_SEQNOS request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::GetAllVbSeqnos)?;
        check::zero_cas(frame)?;
        check::raw_datatype(frame)?;
        let extras = frame.extras();
        let (state, collection_id) = match extras.len() {
            0 => (None, None),
            4 => (Some(be_u32(extras, 0)), None),
            8 => (Some(be_u32(extras, 0)), Some(be_u32(extras, 4))),
            _ => {
                return Err(frame.error(
                    DecodeErrorKind::ExtrasLength {
                        expected: "0, 4 or 8",
                        got: frame.header().extras_len,
                    },
                    4,
                ));
            }
        };
        if let Some(state) = state.filter(|&s| s > 4) {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "vbucket state",
                    value: u64::from(state),
                },
                frame.header().extras_offset(),
            ));
        }
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
            state,
            collection_id,
        })
    }

    /// Appends the frame to `buf`. Fails if `collection_id` is set without
    /// `state`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; 8];
        let len = match (self.state, self.collection_id) {
            (None, None) => 0,
            (None, Some(_)) => {
                return Err(invalid(
                    "collection_id",
                    "a collection id needs a vbucket state",
                ));
            }
            (Some(state), collection_id) => {
                let mut w = extras.as_mut_slice();
                w.put_u32(state);
                match collection_id {
                    None => 4,
                    Some(cid) => {
                        w.put_u32(cid);
                        8
                    }
                }
            }
        };
        FrameHead::request(Opcode::GetAllVbSeqnos, 0, self.opaque).encode(
            buf,
            &[],
            extras.get(..len).unwrap_or_default(),
            &[],
            &[],
        )
    }
}

/// The response to GET_ALL_VB_SEQNOS: `(vbucket, seqno)` pairs, 10 bytes
/// each on the wire. On error the list is empty and the body is kept in
/// `error_body`. No extras, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAllVbSeqnosResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// `(vbucket, high seqno)` pairs, in the server's order.
    pub entries: Vec<(u16, u64)>,
    /// The body of an error response; always empty on success.
    pub error_body: Bytes,
}

impl GetAllVbSeqnosResponse {
    /// A success response with `entries`.
    pub fn success(opaque: u32, entries: Vec<(u16, u64)>) -> Self {
        Self {
            status: Status::Success,
            opaque,
            entries,
            error_body: Bytes::new(),
        }
    }

    /// The seqno reported for `vbucket`, if any.
    pub fn seqno(&self, vbucket: u16) -> Option<u64> {
        self.entries
            .iter()
            .find(|&&(vb, _)| vb == vbucket)
            .map(|&(_, seqno)| seqno)
    }

    /// Decodes a GET_ALL_VB_SEQNOS response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::GetAllVbSeqnos)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        let status = frame.status();
        let value = frame.value_slice();
        let (entries, error_body) = if status.is_success() {
            if !value.len().is_multiple_of(VB_SEQNO_ENTRY_LEN) {
                return Err(frame.error(
                    DecodeErrorKind::ValueLength {
                        expected: "a multiple of 10",
                        got: value.len(),
                    },
                    frame.header().value_offset(),
                ));
            }
            let entries = value
                .chunks_exact(VB_SEQNO_ENTRY_LEN)
                .map(|entry| (be_u16(entry, 0), be_u64(entry, 2)))
                .collect();
            (entries, Bytes::new())
        } else {
            (Vec::new(), frame.value())
        };
        Ok(Self {
            status,
            opaque: frame.opaque(),
            entries,
            error_body,
        })
    }

    /// Appends the frame to `buf`.
    ///
    /// Fails for an error response with entries or a success with an error
    /// body.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let head = FrameHead::response(Opcode::GetAllVbSeqnos, self.status, self.opaque);
        if self.status.is_success() {
            if !self.error_body.is_empty() {
                return Err(invalid("error_body", "a success response has no body"));
            }
            head.encode_head(buf, &[], &[], &[], self.entries.len() * VB_SEQNO_ENTRY_LEN)?;
            for &(vbucket, seqno) in &self.entries {
                buf.put_u16(vbucket);
                buf.put_u64(seqno);
            }
            Ok(())
        } else {
            if !self.entries.is_empty() {
                return Err(invalid("entries", "an error response has no entries"));
            }
            head.with_datatype(body_datatype(&self.error_body)).encode(
                buf,
                &[],
                &[],
                &[],
                &self.error_body,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    #[test]
    fn request_round_trip() {
        for (state, collection_id) in [(None, None), (Some(1), None), (Some(0), Some(0xcafe_f00d))]
        {
            let msg = GetAllVbSeqnos {
                opaque: 7,
                state,
                collection_id,
            };
            assert_eq!(
                GetAllVbSeqnos::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
                msg
            );
        }
        let msg = GetAllVbSeqnos {
            opaque: 7,
            state: None,
            collection_id: Some(8),
        };
        assert!(msg.encode(&mut BytesMut::new()).is_err());
    }

    #[test]
    fn request_doc_vectors() {
        // get_seqno-1 (no extras) and get_seqno-3 (alive, collection
        // 0xcafef00d); get_seqno-2 and -4 are only annotation-inconsistent,
        // their bytes are valid (replica state).
        let cases = [
            (
                "804800000000000000000000deadbeef0000000000000000",
                None,
                None,
            ),
            (
                "804800000800000000000008deadbeef000000000000000000000000cafef00d",
                Some(0),
                Some(0xcafe_f00d),
            ),
            (
                "804800000400000000000004deadbeef000000000000000000000002",
                Some(2),
                None,
            ),
            (
                "804800000800000000000008deadbeef000000000000000000000002cafef00d",
                Some(2),
                Some(0xcafe_f00d),
            ),
        ];
        for (hex, state, collection_id) in cases {
            let msg = GetAllVbSeqnos::decode(&from_hex(hex)).unwrap();
            assert_eq!(
                msg,
                GetAllVbSeqnos {
                    opaque: 0xdead_beef,
                    state,
                    collection_id,
                }
            );
            assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
        }
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::GetAllVbSeqnos, 0, 1);
        rejects(
            GetAllVbSeqnos::decode(&raw(
                FrameHead::response(Opcode::GetAllVbSeqnos, Status::Success, 1),
                &[],
                &[],
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
            GetAllVbSeqnos::decode(&raw(
                FrameHead::request(Opcode::Stat, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::GetAllVbSeqnos,
                got: Opcode::Stat,
            },
            1,
        );
        rejects(
            GetAllVbSeqnos::decode(&raw(head.with_cas(2), &[], &[], &[], &[])),
            DecodeErrorKind::NonZeroCas(2),
            16,
        );
        rejects(
            GetAllVbSeqnos::decode(&raw(head.with_datatype(Datatype::JSON), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            GetAllVbSeqnos::decode(&raw(head, &[], &[0; 2], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0, 4 or 8",
                got: 2,
            },
            4,
        );
        rejects(
            GetAllVbSeqnos::decode(&raw(head, &[], &[0, 0, 0, 5], &[], &[])),
            DecodeErrorKind::InvalidField {
                field: "vbucket state",
                value: 5,
            },
            24,
        );
        rejects(
            GetAllVbSeqnos::decode(&raw(head, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        // The server rejects a value (e.g. get_seqno-4 with its annotated
        // body length would carry one).
        rejects(
            GetAllVbSeqnos::decode(&raw(
                head,
                &[],
                &[0, 0, 0, 2, 0xca, 0xfe, 0xf0, 0x0d],
                &[],
                &[0; 8],
            )),
            DecodeErrorKind::ValueNotAllowed(8),
            32,
        );
    }

    #[test]
    fn response_doc_vector_and_round_trip() {
        // get_seqno-5
        let hex = "814800000000000000000028deadbeef0000000000000000000a0000000000005432000d00000000\
                   01343214007f000000000000000402d00000000000006524";
        let msg = GetAllVbSeqnosResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            GetAllVbSeqnosResponse::success(
                0xdead_beef,
                vec![(10, 21554), (13, 20_197_908), (127, 4), (720, 25892)]
            )
        );
        assert_eq!(msg.seqno(127), Some(4));
        assert_eq!(msg.seqno(1), None);
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);

        for msg in [
            GetAllVbSeqnosResponse::success(1, Vec::new()),
            GetAllVbSeqnosResponse {
                status: Status::UnknownCollection,
                opaque: 2,
                entries: Vec::new(),
                error_body: Bytes::from_static(br#"{"manifest_uid":"3"}"#),
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(GetAllVbSeqnosResponse::decode(&frame).unwrap(), msg);
        }
        let mut buf = BytesMut::new();
        let mut bad = GetAllVbSeqnosResponse::success(1, vec![(1, 1)]);
        bad.status = Status::Einval;
        assert!(bad.encode(&mut buf).is_err());
        let mut bad = GetAllVbSeqnosResponse::success(1, Vec::new());
        bad.error_body = Bytes::from_static(b"x");
        assert!(bad.encode(&mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::GetAllVbSeqnos, Status::Success, 1);
        rejects(
            GetAllVbSeqnosResponse::decode(&raw(
                FrameHead::request(Opcode::GetAllVbSeqnos, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "response",
                got: Magic::ClientRequest,
            },
            0,
        );
        rejects(
            GetAllVbSeqnosResponse::decode(&raw(
                ok.with_datatype(Datatype(0xff)),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(0xff),
            5,
        );
        rejects(
            GetAllVbSeqnosResponse::decode(&raw(ok, &[], &[0; 4], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            GetAllVbSeqnosResponse::decode(&raw(ok, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            GetAllVbSeqnosResponse::decode(&raw(ok, &[], &[], &[], &[0; 16])),
            DecodeErrorKind::ValueLength {
                expected: "a multiple of 10",
                got: 16,
            },
            24,
        );
    }
}
