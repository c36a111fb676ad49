//! Key-value commands and their responses: GET, GAT, SET/ADD/REPLACE,
//! DELETE, APPEND/PREPEND, INCREMENT/DECREMENT, TOUCH.
//!
//! Keys are sent as-is (with the collection-id prefix when HELLO
//! Collections was negotiated). Responses to mutations carry a mutation
//! token (vbucket uuid, seqno) in their extras when HELLO MutationSeqno was
//! negotiated.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status,
};
use crate::msg::check::{self, be_u32, be_u64};
use crate::msg::status_response::body_datatype;

/// The frame must be a request with one of `opcodes`.
fn request_of(frame: &Frame, opcodes: &[Opcode]) -> Result<Opcode, DecodeError> {
    let opcode = frame.opcode();
    let expected = opcodes.first().copied().unwrap_or(opcode);
    if opcodes.contains(&opcode) {
        check::request(frame, opcode)?;
        Ok(opcode)
    } else {
        Err(frame.error(
            DecodeErrorKind::UnexpectedOpcode {
                expected,
                got: opcode,
            },
            1,
        ))
    }
}

/// The frame must be a response with one of `opcodes`.
fn response_of(frame: &Frame, opcodes: &[Opcode]) -> Result<Opcode, DecodeError> {
    let opcode = frame.opcode();
    let expected = opcodes.first().copied().unwrap_or(opcode);
    if opcodes.contains(&opcode) {
        check::response(frame, opcode)?;
        Ok(opcode)
    } else {
        Err(frame.error(
            DecodeErrorKind::UnexpectedOpcode {
                expected,
                got: opcode,
            },
            1,
        ))
    }
}

fn invalid_opcode(_opcode: Opcode) -> EncodeError {
    EncodeError::InvalidField {
        field: "opcode",
        reason: "not an opcode of this message",
    }
}

/// GET (0x00): reads `key` from `vbucket`. No extras, no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// The key.
    pub key: Bytes,
}

impl Get {
    /// Decodes a GET request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::Get)?;
        check::no_extras(frame)?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            key: frame.key(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::Get, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &[],
            &self.key,
            &[],
        )
    }
}

/// GAT (0x1d): reads `key` and sets its expiry. Extras: u32 expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAndTouch {
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// The key.
    pub key: Bytes,
    /// New expiry (0 none, up to 30 days relative, else absolute).
    pub expiry: u32,
}

impl GetAndTouch {
    /// Decodes a GAT request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::Gat)?;
        let extras = check::extras::<4>(frame, "4")?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            key: frame.key(),
            expiry: be_u32(extras, 0),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::Gat, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &self.expiry.to_be_bytes(),
            &self.key,
            &[],
        )
    }
}

/// TOUCH (0x1c): sets the expiry of `key`. Extras: u32 expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// The key.
    pub key: Bytes,
    /// New expiry.
    pub expiry: u32,
}

impl Touch {
    /// Decodes a TOUCH request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::Touch)?;
        let extras = check::extras::<4>(frame, "4")?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            key: frame.key(),
            expiry: be_u32(extras, 0),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::Touch, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &self.expiry.to_be_bytes(),
            &self.key,
            &[],
        )
    }
}

/// The response to GET or GAT: on success extras hold the u32 client
/// flags, the value the document body; on error the value is the error
/// body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    /// [`Opcode::Get`] or [`Opcode::Gat`].
    pub opcode: Opcode,
    /// The status.
    pub status: Status,
    /// Opaque, echoed.
    pub opaque: u32,
    /// The document's CAS (0 on error).
    pub cas: u64,
    /// Datatype of `value`.
    pub datatype: Datatype,
    /// Client flags (0 on error).
    pub flags: u32,
    /// The body, or an error body.
    pub value: Bytes,
}

impl GetResponse {
    /// Decodes a GET or GAT response.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let opcode = response_of(frame, &[Opcode::Get, Opcode::Gat])?;
        check::valid_datatype(frame)?;
        check::no_key(frame)?;
        let flags = if frame.status().is_success() {
            be_u32(check::extras::<4>(frame, "4")?, 0)
        } else {
            check::no_extras(frame)?;
            0
        };
        Ok(Self {
            opcode,
            status: frame.status(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            datatype: frame.datatype(),
            flags,
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf` (flags extras only on success).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(self.opcode, Opcode::Get | Opcode::Gat) {
            return Err(invalid_opcode(self.opcode));
        }
        let flags = self.flags.to_be_bytes();
        let (extras, datatype): (&[u8], Datatype) = if self.status.is_success() {
            (&flags, self.datatype)
        } else {
            (&[], body_datatype(&self.value))
        };
        FrameHead::response(self.opcode, self.status, self.opaque)
            .with_cas(self.cas)
            .with_datatype(datatype)
            .encode(buf, &[], extras, &[], &self.value)
    }
}

/// SET (0x01), ADD (0x02) or REPLACE (0x03). Extras: u32 flags, u32
/// expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// [`Opcode::Set`], [`Opcode::Add`] or [`Opcode::Replace`].
    pub opcode: Opcode,
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// Expected CAS (0 = any).
    pub cas: u64,
    /// Datatype of `value`.
    pub datatype: Datatype,
    /// Client flags.
    pub flags: u32,
    /// Expiry.
    pub expiry: u32,
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
}

impl Store {
    /// Decodes a SET, ADD or REPLACE request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let opcode = request_of(frame, &[Opcode::Set, Opcode::Add, Opcode::Replace])?;
        check::valid_datatype(frame)?;
        let extras = check::extras::<8>(frame, "8")?;
        check::some_key(frame)?;
        Ok(Self {
            opcode,
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            datatype: frame.datatype(),
            flags: be_u32(extras, 0),
            expiry: be_u32(extras, 4),
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(self.opcode, Opcode::Set | Opcode::Add | Opcode::Replace) {
            return Err(invalid_opcode(self.opcode));
        }
        let mut extras = [0u8; 8];
        let mut w = extras.as_mut_slice();
        w.put_u32(self.flags);
        w.put_u32(self.expiry);
        FrameHead::request(self.opcode, self.vbucket, self.opaque)
            .with_cas(self.cas)
            .with_datatype(self.datatype)
            .encode(buf, &[], &extras, &self.key, &self.value)
    }
}

/// DELETE (0x04): no extras, no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// Expected CAS (0 = any).
    pub cas: u64,
    /// The key.
    pub key: Bytes,
}

impl Delete {
    /// Decodes a DELETE request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::Delete)?;
        check::no_extras(frame)?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            key: frame.key(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::Delete, self.vbucket, self.opaque)
            .with_cas(self.cas)
            .encode(buf, &[], &[], &self.key, &[])
    }
}

/// APPEND (0x0e) or PREPEND (0x0f): no extras; the value is the bytes to
/// add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concat {
    /// [`Opcode::Append`] or [`Opcode::Prepend`].
    pub opcode: Opcode,
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// Expected CAS (0 = any).
    pub cas: u64,
    /// The key.
    pub key: Bytes,
    /// The bytes to add.
    pub value: Bytes,
}

impl Concat {
    /// Decodes an APPEND or PREPEND request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let opcode = request_of(frame, &[Opcode::Append, Opcode::Prepend])?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::some_key(frame)?;
        Ok(Self {
            opcode,
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            key: frame.key(),
            value: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(self.opcode, Opcode::Append | Opcode::Prepend) {
            return Err(invalid_opcode(self.opcode));
        }
        FrameHead::request(self.opcode, self.vbucket, self.opaque)
            .with_cas(self.cas)
            .encode(buf, &[], &[], &self.key, &self.value)
    }
}

/// INCREMENT (0x05) or DECREMENT (0x06). Extras: u64 delta, u64 initial,
/// u32 expiry (`0xffffffff`: fail if the key is missing instead of
/// creating it with `initial`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// [`Opcode::Increment`] or [`Opcode::Decrement`].
    pub opcode: Opcode,
    /// The vbucket the key hashes to.
    pub vbucket: u16,
    /// Opaque, echoed.
    pub opaque: u32,
    /// Expected CAS (0 = any).
    pub cas: u64,
    /// The key.
    pub key: Bytes,
    /// Amount to add or subtract.
    pub delta: u64,
    /// Value to create a missing counter with.
    pub initial: u64,
    /// Expiry of a created counter; [`Counter::NO_CREATE`] = do not create.
    pub expiry: u32,
}

impl Counter {
    /// The expiry that means "do not create a missing counter".
    pub const NO_CREATE: u32 = u32::MAX;

    /// Decodes an INCREMENT or DECREMENT request.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let opcode = request_of(frame, &[Opcode::Increment, Opcode::Decrement])?;
        let extras = check::extras::<20>(frame, "20")?;
        check::some_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            opcode,
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            key: frame.key(),
            delta: be_u64(extras, 0),
            initial: be_u64(extras, 8),
            expiry: be_u32(extras, 16),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(self.opcode, Opcode::Increment | Opcode::Decrement) {
            return Err(invalid_opcode(self.opcode));
        }
        let mut extras = [0u8; 20];
        let mut w = extras.as_mut_slice();
        w.put_u64(self.delta);
        w.put_u64(self.initial);
        w.put_u32(self.expiry);
        FrameHead::request(self.opcode, self.vbucket, self.opaque)
            .with_cas(self.cas)
            .encode(buf, &[], &extras, &self.key, &[])
    }
}

/// Where a mutation landed (response extras with HELLO MutationSeqno).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MutationToken {
    /// The vbucket's uuid.
    pub vbucket_uuid: u64,
    /// The mutation's seqno.
    pub seqno: u64,
}

impl MutationToken {
    fn decode(frame: &Frame) -> Result<Option<Self>, DecodeError> {
        match frame.extras().len() {
            0 => Ok(None),
            16 => Ok(Some(Self {
                vbucket_uuid: be_u64(frame.extras(), 0),
                seqno: be_u64(frame.extras(), 8),
            })),
            _ => check::extras::<16>(frame, "0 or 16").map(|_| None),
        }
    }

    fn bytes(token: Option<Self>) -> ([u8; 16], usize) {
        let mut out = [0u8; 16];
        match token {
            Some(t) => {
                let mut w = out.as_mut_slice();
                w.put_u64(t.vbucket_uuid);
                w.put_u64(t.seqno);
                (out, 16)
            }
            None => (out, 0),
        }
    }
}

/// The response to SET/ADD/REPLACE/DELETE/APPEND/PREPEND/TOUCH: the new
/// CAS, and a mutation token if negotiated; an error keeps its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationResponse {
    /// The request's opcode.
    pub opcode: Opcode,
    /// The status.
    pub status: Status,
    /// Opaque, echoed.
    pub opaque: u32,
    /// The new CAS (0 on error).
    pub cas: u64,
    /// The mutation token (success with HELLO MutationSeqno).
    pub token: Option<MutationToken>,
    /// The error body (empty on success).
    pub error_body: Bytes,
}

impl MutationResponse {
    /// Decodes a mutation response.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let opcode = response_of(
            frame,
            &[
                Opcode::Set,
                Opcode::Add,
                Opcode::Replace,
                Opcode::Delete,
                Opcode::Append,
                Opcode::Prepend,
                Opcode::Touch,
            ],
        )?;
        check::valid_datatype(frame)?;
        check::no_key(frame)?;
        let token = MutationToken::decode(frame)?;
        Ok(Self {
            opcode,
            status: frame.status(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            token,
            error_body: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (token, len) = MutationToken::bytes(self.token);
        FrameHead::response(self.opcode, self.status, self.opaque)
            .with_cas(self.cas)
            .with_datatype(body_datatype(&self.error_body))
            .encode(
                buf,
                &[],
                token.get(..len).unwrap_or_default(),
                &[],
                &self.error_body,
            )
    }
}

/// The response to INCREMENT/DECREMENT: the new value (u64, the value
/// field) on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterResponse {
    /// [`Opcode::Increment`] or [`Opcode::Decrement`].
    pub opcode: Opcode,
    /// The status.
    pub status: Status,
    /// Opaque, echoed.
    pub opaque: u32,
    /// The new CAS.
    pub cas: u64,
    /// The counter's new value (0 on error).
    pub value: u64,
    /// The mutation token (success with HELLO MutationSeqno).
    pub token: Option<MutationToken>,
    /// The error body (empty on success).
    pub error_body: Bytes,
}

impl CounterResponse {
    /// Decodes a counter response.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let opcode = response_of(frame, &[Opcode::Increment, Opcode::Decrement])?;
        check::valid_datatype(frame)?;
        check::no_key(frame)?;
        let token = MutationToken::decode(frame)?;
        let (value, error_body) = if frame.status().is_success() {
            match frame.value_slice().first_chunk::<8>() {
                Some(v) if frame.value_slice().len() == 8 => (u64::from_be_bytes(*v), Bytes::new()),
                _ => {
                    return Err(frame.error(
                        DecodeErrorKind::ValueLength {
                            expected: "8",
                            got: frame.value_slice().len(),
                        },
                        frame.header().value_offset(),
                    ));
                }
            }
        } else {
            (0, frame.value())
        };
        Ok(Self {
            opcode,
            status: frame.status(),
            opaque: frame.opaque(),
            cas: frame.cas(),
            value,
            token,
            error_body,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (token, len) = MutationToken::bytes(self.token);
        let extras = token.get(..len).unwrap_or_default();
        let head = FrameHead::response(self.opcode, self.status, self.opaque).with_cas(self.cas);
        if self.status.is_success() {
            head.encode(buf, &[], extras, &[], &self.value.to_be_bytes())
        } else {
            head.with_datatype(body_datatype(&self.error_body)).encode(
                buf,
                &[],
                extras,
                &[],
                &self.error_body,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::status_response::testing::{encoded, raw, rejects};

    #[test]
    fn requests_round_trip() {
        let key = Bytes::from_static(b"doc");
        let get = Get {
            vbucket: 3,
            opaque: 1,
            key: key.clone(),
        };
        assert_eq!(Get::decode(&encoded(|b| get.encode(b))).unwrap(), get);
        let gat = GetAndTouch {
            vbucket: 3,
            opaque: 2,
            key: key.clone(),
            expiry: 10,
        };
        assert_eq!(
            GetAndTouch::decode(&encoded(|b| gat.encode(b))).unwrap(),
            gat
        );
        let touch = Touch {
            vbucket: 3,
            opaque: 2,
            key: key.clone(),
            expiry: 10,
        };
        assert_eq!(Touch::decode(&encoded(|b| touch.encode(b))).unwrap(), touch);
        for opcode in [Opcode::Set, Opcode::Add, Opcode::Replace] {
            let store = Store {
                opcode,
                vbucket: 1,
                opaque: 4,
                cas: 9,
                datatype: Datatype::JSON,
                flags: 0xdead_beef,
                expiry: 60,
                key: key.clone(),
                value: Bytes::from_static(b"{}"),
            };
            assert_eq!(Store::decode(&encoded(|b| store.encode(b))).unwrap(), store);
        }
        let delete = Delete {
            vbucket: 1,
            opaque: 5,
            cas: 7,
            key: key.clone(),
        };
        assert_eq!(
            Delete::decode(&encoded(|b| delete.encode(b))).unwrap(),
            delete
        );
        let concat = Concat {
            opcode: Opcode::Prepend,
            vbucket: 1,
            opaque: 6,
            cas: 0,
            key: key.clone(),
            value: Bytes::from_static(b"x"),
        };
        assert_eq!(
            Concat::decode(&encoded(|b| concat.encode(b))).unwrap(),
            concat
        );
        let counter = Counter {
            opcode: Opcode::Decrement,
            vbucket: 1,
            opaque: 7,
            cas: 0,
            key,
            delta: 2,
            initial: 5,
            expiry: Counter::NO_CREATE,
        };
        assert_eq!(
            Counter::decode(&encoded(|b| counter.encode(b))).unwrap(),
            counter
        );
    }

    #[test]
    fn responses_round_trip() {
        let ok = GetResponse {
            opcode: Opcode::Get,
            status: Status::Success,
            opaque: 1,
            cas: 5,
            datatype: Datatype::JSON,
            flags: 7,
            value: Bytes::from_static(b"{}"),
        };
        assert_eq!(GetResponse::decode(&encoded(|b| ok.encode(b))).unwrap(), ok);
        let miss = GetResponse {
            status: Status::KeyEnoent,
            cas: 0,
            flags: 0,
            datatype: Datatype::RAW,
            value: Bytes::from_static(b"Not found"),
            ..ok.clone()
        };
        let frame = encoded(|b| miss.encode(b));
        assert!(frame.extras().is_empty());
        assert_eq!(GetResponse::decode(&frame).unwrap(), miss);
        let token = Some(MutationToken {
            vbucket_uuid: 0xabc,
            seqno: 9,
        });
        let m = MutationResponse {
            opcode: Opcode::Set,
            status: Status::Success,
            opaque: 2,
            cas: 3,
            token,
            error_body: Bytes::new(),
        };
        let frame = encoded(|b| m.encode(b));
        assert_eq!(frame.extras().len(), 16);
        assert_eq!(MutationResponse::decode(&frame).unwrap(), m);
        let c = CounterResponse {
            opcode: Opcode::Increment,
            status: Status::Success,
            opaque: 2,
            cas: 3,
            value: 42,
            token: None,
            error_body: Bytes::new(),
        };
        assert_eq!(
            CounterResponse::decode(&encoded(|b| c.encode(b))).unwrap(),
            c
        );
        let e = CounterResponse {
            status: Status::DeltaBadval,
            value: 0,
            error_body: Bytes::from_static(b"bad"),
            ..c
        };
        assert_eq!(
            CounterResponse::decode(&encoded(|b| e.encode(b))).unwrap(),
            e
        );
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::Set, 0, 1);
        rejects(
            Store::decode(&raw(head, &[], &[0; 4], b"k", b"v")),
            DecodeErrorKind::ExtrasLength {
                expected: "8",
                got: 4,
            },
            4,
        );
        rejects(
            Store::decode(&raw(
                FrameHead::request(Opcode::Get, 0, 1),
                &[],
                &[],
                b"k",
                b"",
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::Set,
                got: Opcode::Get,
            },
            1,
        );
        rejects(
            Get::decode(&raw(
                FrameHead::request(Opcode::Get, 0, 1),
                &[],
                &[],
                b"",
                b"",
            )),
            DecodeErrorKind::KeyRequired,
            24,
        );
        rejects(
            Delete::decode(&raw(
                FrameHead::request(Opcode::Delete, 0, 1),
                &[],
                &[],
                b"k",
                b"v",
            )),
            DecodeErrorKind::ValueNotAllowed(1),
            25,
        );
        let bad = Store {
            opcode: Opcode::Get,
            vbucket: 0,
            opaque: 0,
            cas: 0,
            datatype: Datatype::RAW,
            flags: 0,
            expiry: 0,
            key: Bytes::from_static(b"k"),
            value: Bytes::new(),
        };
        assert!(bad.encode(&mut BytesMut::new()).is_err());
    }
}
