//! DCP_STREAM_REQ (0x53): the consumer asks the producer to stream one
//! vbucket, and the producer's reply (failover log, rollback seqno, or an
//! error).

use core::fmt;
use core::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::check::{self, be_u32, be_u64};
use crate::msg::failover_log::FailoverLog;
use crate::msg::status_response::{body_datatype, invalid};

/// Extras length of DCP_STREAM_REQ.
pub const STREAM_REQUEST_EXTRAS_LEN: usize = 48;

bitflags::bitflags! {
    /// Flags of DCP_STREAM_REQ and DCP_ADD_STREAM.
    ///
    /// Unknown bits are kept as received: the codec only decodes, the
    /// producer refuses unknown bits and [`NO_VALUE`](Self::NO_VALUE) with
    /// EINVAL, and [`CACHE_TRANSFER`](Self::CACHE_TRANSFER) combined with
    /// anything but `TAKEOVER`/`ACTIVE_VB_ONLY`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct StreamRequestFlags: u32 {
        /// 0x01: vbucket takeover stream.
        const TAKEOVER = 0x01;
        /// 0x02: stream only what is on disk.
        const DISK_ONLY = 0x02;
        /// 0x04: the end seqno is the current high seqno.
        const TO_LATEST = 0x04;
        /// 0x08: obsolete (use the DCP_OPEN flag); rejected by servers.
        const NO_VALUE = 0x08;
        /// 0x10: NotMyVbucket unless the vbucket is active.
        const ACTIVE_VB_ONLY = 0x10;
        /// 0x20: check the vbucket uuid even when starting at 0.
        const STRICT_VB_UUID = 0x20;
        /// 0x40: start at the current high seqno (uuid and snapshot ignored).
        const FROM_LATEST = 0x40;
        /// 0x80: do not roll back just for being behind the purge seqno.
        const IGNORE_PURGED_TOMBSTONES = 0x80;
        /// 0x100: cache transfer before the stream.
        const CACHE_TRANSFER = 0x100;
    }
}

/// Settings of a cache-transfer stream (`cts` in the request's JSON value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CacheTransferSettings {
    /// Bytes of free memory the consumer offers (default 0).
    #[serde(default)]
    pub free_memory: u64,
    /// Transfer all keys, not only resident values (default false).
    #[serde(default)]
    pub all_keys: bool,
}

/// The JSON value of a stream request on a collections connection.
///
/// On the wire collection ids, the scope id and the manifest uid are hex
/// strings without `0x`, `purge_seqno` is a decimal string and `sid` a JSON
/// number; the value and `cts` must be JSON objects. Unknown keys are
/// ignored when decoding and absent fields are not written. The producer
/// (not this codec) rejects `collections` together with `scope`, a value
/// with none of its known keys, a missing or unexpected `sid` (per
/// `enable_stream_id`), and `cts` without the cache-transfer flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(into = "WireValue")]
pub struct StreamRequestValue {
    /// Stream only these collections.
    pub collections: Option<Vec<u32>>,
    /// Stream all collections of this scope.
    pub scope: Option<u32>,
    /// Manifest uid the client last saw (informational).
    pub uid: Option<u64>,
    /// Stream id (1..=65535), required iff the connection enabled stream ids.
    pub sid: Option<u16>,
    /// The last purge seqno the client saw (avoids needless rollbacks).
    pub purge_seqno: Option<u64>,
    /// Cache-transfer settings (with [`StreamRequestFlags::CACHE_TRANSFER`]).
    pub cts: Option<CacheTransferSettings>,
}

impl StreamRequestValue {
    /// Parses the JSON value of a stream request.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The JSON value's bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

impl<'de> Deserialize<'de> for StreamRequestValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Object(wire) = Object::<WireValue>::deserialize(deserializer)?;
        Self::try_from(wire).map_err(D::Error::custom)
    }
}

/// The wire shape of [`StreamRequestValue`].
#[derive(Serialize, Deserialize)]
struct WireValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    collections: Option<Vec<Number<16>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<Number<16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<Number<16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purge_seqno: Option<Number<10>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cts: Option<Object<CacheTransferSettings>>,
}

impl TryFrom<WireValue> for StreamRequestValue {
    type Error = &'static str;

    fn try_from(wire: WireValue) -> Result<Self, Self::Error> {
        let id = |n: Number<16>| u32::try_from(n.0).map_err(|_| "id above 0xffffffff");
        Ok(Self {
            collections: match wire.collections {
                Some(ids) => Some(ids.into_iter().map(id).collect::<Result<_, _>>()?),
                None => None,
            },
            scope: wire.scope.map(id).transpose()?,
            uid: wire.uid.map(|n| n.0),
            sid: match wire.sid {
                Some(0) => return Err("sid 0 is not a stream id"),
                sid => sid,
            },
            purge_seqno: wire.purge_seqno.map(|n| n.0),
            cts: wire.cts.map(|Object(cts)| cts),
        })
    }
}

impl From<StreamRequestValue> for WireValue {
    fn from(value: StreamRequestValue) -> Self {
        let hex = |n: u32| Number(u64::from(n));
        Self {
            collections: value
                .collections
                .map(|ids| ids.into_iter().map(hex).collect()),
            scope: value.scope.map(hex),
            uid: value.uid.map(Number),
            sid: value.sid,
            purge_seqno: value.purge_seqno.map(Number),
            cts: value.cts.map(Object),
        }
    }
}

/// A struct that must be a JSON object on the wire (serde's derive would
/// also take an array of its fields in order).
#[derive(Serialize)]
#[serde(transparent)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// A u64 written as a JSON string of digits in `RADIX` (16 or 10): no sign,
/// prefix or whitespace; hex digits of either case.
#[derive(Clone, Copy)]
struct Number<const RADIX: u32>(u64);

impl<const RADIX: u32> Serialize for Number<RADIX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if RADIX == 16 {
            serializer.collect_str(&format_args!("{:x}", self.0))
        } else {
            serializer.collect_str(&self.0)
        }
    }
}

impl<'de, const RADIX: u32> Deserialize<'de> for Number<RADIX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || !text.chars().all(|c| c.is_digit(RADIX)) {
            return Err(D::Error::custom(format_args!(
                "{text:?} is not a base-{RADIX} number"
            )));
        }
        u64::from_str_radix(&text, RADIX)
            .map(Number)
            .map_err(|_| D::Error::custom(format_args!("{text:?} is above u64::MAX")))
    }
}

/// DCP_STREAM_REQ: stream `vbucket` from `start_seqno` to `end_seqno`.
///
/// The producer answers ERANGE unless `snap_start_seqno <= start_seqno <=
/// snap_end_seqno` and `start_seqno <= end_seqno` (adjusted first for
/// [`TO_LATEST`](StreamRequestFlags::TO_LATEST) and
/// [`FROM_LATEST`](StreamRequestFlags::FROM_LATEST)); those rules belong to
/// the producer state machine, not to this codec, which decodes any values.
/// The 4 reserved extras bytes are ignored when decoding and sent as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// The vbucket to stream.
    pub vbucket: u16,
    /// Opaque; every message of the stream carries it.
    pub opaque: u32,
    /// Stream flags.
    pub flags: StreamRequestFlags,
    /// The last seqno the client has (0 = from the beginning).
    pub start_seqno: u64,
    /// The last seqno to stream ([`StreamRequest::NO_END`] = no end).
    pub end_seqno: u64,
    /// The uuid of the client's history branch (0 = no history).
    pub vbucket_uuid: u64,
    /// Start of the snapshot the client last received (partially).
    pub snap_start_seqno: u64,
    /// End of that snapshot.
    pub snap_end_seqno: u64,
    /// Collections filter and stream options (collections connections only).
    pub value: Option<StreamRequestValue>,
}

impl StreamRequest {
    /// The `end_seqno` that means "no end".
    pub const NO_END: u64 = u64::MAX;

    /// Decodes a DCP_STREAM_REQ request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpStreamReq)?;
        check::raw_datatype(frame)?;
        let extras = check::extras::<STREAM_REQUEST_EXTRAS_LEN>(frame, "48")?;
        check::no_key(frame)?;
        let value = match frame.value_slice() {
            [] => None,
            json => Some(StreamRequestValue::from_json(json).map_err(|e| {
                frame.error(
                    DecodeErrorKind::InvalidJson {
                        field: "stream request value",
                        reason: e.to_string(),
                    },
                    frame.header().value_offset(),
                )
            })?),
        };
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            flags: StreamRequestFlags::from_bits_retain(be_u32(extras, 0)),
            start_seqno: be_u64(extras, 8),
            end_seqno: be_u64(extras, 16),
            vbucket_uuid: be_u64(extras, 24),
            snap_start_seqno: be_u64(extras, 32),
            snap_end_seqno: be_u64(extras, 40),
            value,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; STREAM_REQUEST_EXTRAS_LEN];
        let mut w = extras.as_mut_slice();
        w.put_u32(self.flags.bits());
        w.put_u32(0);
        w.put_u64(self.start_seqno);
        w.put_u64(self.end_seqno);
        w.put_u64(self.vbucket_uuid);
        w.put_u64(self.snap_start_seqno);
        w.put_u64(self.snap_end_seqno);
        let value = match &self.value {
            None => Vec::new(),
            Some(value) => {
                if value.sid == Some(0) {
                    return Err(EncodeError::InvalidStreamId);
                }
                value
                    .to_json()
                    .map_err(|_| invalid("value", "JSON serialization failed"))?
            }
        };
        FrameHead::request(Opcode::DcpStreamReq, self.vbucket, self.opaque).encode(
            buf,
            &[],
            &extras,
            &[],
            &value,
        )
    }
}

/// What a stream request got: a stream, a rollback, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamRequestOutcome {
    /// Success: the stream is open; the vbucket's failover log, newest first.
    Accepted(FailoverLog),
    /// Rollback (0x23): roll back to this seqno, then request again.
    Rollback(u64),
    /// Any other status, with the body the server sent (XERROR JSON, the
    /// `{"manifest_uid":"..."}` of UnknownCollection/UnknownScope, a cluster
    /// map with NotMyVbucket, or nothing).
    Failed {
        /// The error status.
        status: Status,
        /// The response body.
        body: Bytes,
    },
}

impl StreamRequestOutcome {
    /// The response status this outcome is sent with.
    pub fn status(&self) -> Status {
        match self {
            Self::Accepted(_) => Status::Success,
            Self::Rollback(_) => Status::Rollback,
            Self::Failed { status, .. } => *status,
        }
    }
}

/// The response to DCP_STREAM_REQ.
///
/// Success carries the failover log; Rollback exactly 8 bytes (the seqno);
/// other statuses any body. Extras and key must be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequestResponse {
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The status (always equal to `outcome.status()`).
    pub status: Status,
    /// The decoded body.
    pub outcome: StreamRequestOutcome,
}

impl StreamRequestResponse {
    /// A success response carrying `log`.
    pub fn accepted(opaque: u32, log: FailoverLog) -> Self {
        Self::with_outcome(opaque, StreamRequestOutcome::Accepted(log))
    }

    /// A Rollback response to `seqno`.
    pub fn rollback(opaque: u32, seqno: u64) -> Self {
        Self::with_outcome(opaque, StreamRequestOutcome::Rollback(seqno))
    }

    /// An error response with `status` (neither Success nor Rollback) and
    /// `body`.
    pub fn failed(opaque: u32, status: Status, body: impl Into<Bytes>) -> Self {
        Self::with_outcome(
            opaque,
            StreamRequestOutcome::Failed {
                status,
                body: body.into(),
            },
        )
    }

    fn with_outcome(opaque: u32, outcome: StreamRequestOutcome) -> Self {
        Self {
            opaque,
            status: outcome.status(),
            outcome,
        }
    }

    /// The failover log of an accepted request.
    pub fn failover_log(&self) -> Option<&FailoverLog> {
        match &self.outcome {
            StreamRequestOutcome::Accepted(log) => Some(log),
            _ => None,
        }
    }

    /// The seqno to roll back to, for a Rollback response.
    pub fn rollback_seqno(&self) -> Option<u64> {
        match self.outcome {
            StreamRequestOutcome::Rollback(seqno) => Some(seqno),
            _ => None,
        }
    }

    /// Decodes a DCP_STREAM_REQ response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::DcpStreamReq)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        let at = frame.header().value_offset();
        let status = frame.status();
        let outcome = match status {
            Status::Success => StreamRequestOutcome::Accepted(
                FailoverLog::decode_value(frame.value_slice()).map_err(|k| frame.error(k, at))?,
            ),
            Status::Rollback => match frame.value_slice().first_chunk::<8>() {
                Some(seqno) if frame.value_slice().len() == 8 => {
                    StreamRequestOutcome::Rollback(u64::from_be_bytes(*seqno))
                }
                _ => {
                    return Err(frame.error(
                        DecodeErrorKind::ValueLength {
                            expected: "8",
                            got: frame.value_slice().len(),
                        },
                        at,
                    ));
                }
            },
            status => StreamRequestOutcome::Failed {
                status,
                body: frame.value(),
            },
        };
        Ok(Self {
            opaque: frame.opaque(),
            status,
            outcome,
        })
    }

    /// Appends the frame to `buf`.
    ///
    /// Fails if `status` differs from the outcome's, or if a `Failed`
    /// outcome has status Success or Rollback.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.status != self.outcome.status() {
            return Err(invalid("status", "does not match the outcome"));
        }
        let head = FrameHead::response(Opcode::DcpStreamReq, self.status, self.opaque);
        match &self.outcome {
            StreamRequestOutcome::Accepted(log) => {
                head.encode_head(buf, &[], &[], &[], log.value_len())?;
                log.put_value(buf);
                Ok(())
            }
            StreamRequestOutcome::Rollback(seqno) => {
                head.encode(buf, &[], &[], &[], &seqno.to_be_bytes())
            }
            StreamRequestOutcome::Failed {
                status: Status::Success | Status::Rollback,
                ..
            } => Err(invalid("outcome", "a failed outcome needs an error status")),
            StreamRequestOutcome::Failed { body, .. } => head
                .with_datatype(body_datatype(body))
                .encode(buf, &[], &[], &[], body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::failover_log::FailoverEntry;
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw};

    fn sample() -> StreamRequest {
        StreamRequest {
            vbucket: 0x210,
            opaque: 0x1000,
            flags: StreamRequestFlags::ACTIVE_VB_ONLY | StreamRequestFlags::STRICT_VB_UUID,
            start_seqno: 10,
            end_seqno: StreamRequest::NO_END,
            vbucket_uuid: 0xfeed_deca,
            snap_start_seqno: 5,
            snap_end_seqno: 12,
            value: None,
        }
    }

    fn full_value() -> StreamRequestValue {
        StreamRequestValue {
            collections: Some(vec![0, 8, 0xcafe_f00d]),
            scope: Some(0xa),
            uid: Some(0x1f),
            sid: Some(7),
            purge_seqno: Some(123),
            cts: Some(CacheTransferSettings {
                free_memory: 1 << 40,
                all_keys: true,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let unknown_bits = StreamRequestFlags::from_bits_retain(0x8000_0001);
        for msg in [
            sample(),
            StreamRequest {
                flags: unknown_bits,
                value: Some(full_value()),
                ..sample()
            },
            StreamRequest {
                value: Some(StreamRequestValue::default()),
                ..sample()
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.extras().len(), 48);
            assert_eq!(&frame.extras()[4..8], &[0; 4]);
            assert_eq!(StreamRequest::decode(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn value_json_wire_form() {
        let json = String::from_utf8(full_value().to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"collections":["0","8","cafef00d"],"scope":"a","uid":"1f","sid":7,"purge_seqno":"123","cts":{"free_memory":1099511627776,"all_keys":true}}"#
        );
        assert_eq!(StreamRequestValue::default().to_json().unwrap(), b"{}");
        // Unknown keys ignored, upper-case hex and leading zeros accepted,
        // cts fields default.
        let v = StreamRequestValue::from_json(
            br#"{"collections":["00000008","CAFEF00D"],"future":[1,2],"cts":{}}"#,
        )
        .unwrap();
        assert_eq!(v.collections, Some(vec![8, 0xcafe_f00d]));
        assert_eq!(v.cts, Some(CacheTransferSettings::default()));
        assert_eq!(v.scope, None);
        // JSON escapes in strings are fine.
        let v = StreamRequestValue::from_json(br#"{"scope":"\u0038"}"#).unwrap();
        assert_eq!(v.scope, Some(8));
    }

    #[test]
    fn value_json_rejections() {
        for bad in [
            &br#"{"collections":["0x8"]}"#[..],
            br#"{"collections":["+8"]}"#,
            br#"{"collections":[""]}"#,
            br#"{"collections":[8]}"#,
            br#"{"collections":["100000000"]}"#,
            br#"{"scope":"g"}"#,
            br#"{"uid":"10000000000000000"}"#,
            br#"{"sid":0}"#,
            br#"{"sid":65536}"#,
            br#"{"sid":"1"}"#,
            br#"{"purge_seqno":"1a"}"#,
            br#"{"purge_seqno":12}"#,
            br#"{"cts":{"all_keys":1}}"#,
            br#"{"cts":[0,true]}"#,
            br#"["0"]"#,
            br#"{"scope":"1","scope":"2"}"#,
            b"[]",
            b"null",
            b"{",
        ] {
            assert!(
                StreamRequestValue::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encode_rejects_sid_zero() {
        let msg = StreamRequest {
            value: Some(StreamRequestValue {
                sid: Some(0),
                ..Default::default()
            }),
            ..sample()
        };
        assert_eq!(
            msg.encode(&mut BytesMut::new()).unwrap_err(),
            EncodeError::InvalidStreamId
        );
    }

    #[test]
    fn doc_request_with_code_layout() {
        // stream-request-1: the annotation of snap_start is wrong (the lead
        // tests that); the bytes decode per the code layout.
        let hex = "80530000300000000000003000001000000000000000000000000000000000000000000000ffeedd\
                   ffffffffffffffff00000000feeddeca0000000000ffeedd0000000000ffeeff";
        let msg = StreamRequest::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            StreamRequest {
                vbucket: 0,
                opaque: 0x1000,
                flags: StreamRequestFlags::empty(),
                start_seqno: 16_772_829,
                end_seqno: StreamRequest::NO_END,
                vbucket_uuid: 4_277_001_930,
                snap_start_seqno: 16_772_829,
                snap_end_seqno: 16_772_863,
                value: None,
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::DcpStreamReq, 0, 1);
        let cases: [(Frame, DecodeErrorKind, usize); 6] = [
            (
                raw(
                    FrameHead::response(Opcode::DcpStreamReq, Status::Success, 1),
                    &[],
                    &[0; 48],
                    &[],
                    &[],
                ),
                DecodeErrorKind::UnexpectedMagic {
                    expected: "request",
                    got: Magic::ClientResponse,
                },
                0,
            ),
            (
                raw(
                    FrameHead::request(Opcode::DcpAddStream, 0, 1),
                    &[],
                    &[0; 48],
                    &[],
                    &[],
                ),
                DecodeErrorKind::UnexpectedOpcode {
                    expected: Opcode::DcpStreamReq,
                    got: Opcode::DcpAddStream,
                },
                1,
            ),
            (
                raw(
                    head.with_datatype(Datatype::JSON),
                    &[],
                    &[0; 48],
                    &[],
                    b"{}",
                ),
                DecodeErrorKind::InvalidDatatype(1),
                5,
            ),
            (
                raw(head, &[], &[0; 40], &[], &[]),
                DecodeErrorKind::ExtrasLength {
                    expected: "48",
                    got: 40,
                },
                4,
            ),
            (
                raw(head, &[], &[0; 48], b"k", &[]),
                DecodeErrorKind::KeyNotAllowed(1),
                72,
            ),
            (
                raw(head, &[], &[0; 48], &[], br#"{"sid":0}"#),
                DecodeErrorKind::InvalidJson {
                    field: "stream request value",
                    reason: String::new(),
                },
                72,
            ),
        ];
        for (frame, kind, offset) in cases {
            let err = StreamRequest::decode(&frame).unwrap_err();
            match (&err.kind, &kind) {
                (
                    DecodeErrorKind::InvalidJson { field, reason },
                    DecodeErrorKind::InvalidJson { field: want, .. },
                ) => {
                    assert_eq!(field, want);
                    assert!(reason.contains("sid 0"), "{reason}");
                }
                _ => assert_eq!(err.kind, kind),
            }
            assert_eq!(err.offset, offset);
            assert_eq!(err.opcode, Some(frame.opcode()));
        }
    }

    fn doc_log() -> FailoverLog {
        [
            (0xfeed_deca, 0x5432),
            (0x00de_cafe, 0x0134_3214),
            (0xfeed_face, 4),
            (0xdead_beef, 0x6524),
        ]
        .into_iter()
        .map(|(vbucket_uuid, seqno)| FailoverEntry {
            vbucket_uuid,
            seqno,
        })
        .collect()
    }

    #[test]
    fn doc_responses() {
        // stream-request-2: Rollback to 0.
        let hex = "8153000000000023000000080000100000000000000000000000000000000000";
        let msg = StreamRequestResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, StreamRequestResponse::rollback(0x1000, 0));
        assert_eq!(msg.rollback_seqno(), Some(0));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);

        // stream-request-4: accepted with a 4-entry failover log.
        let hex = "81530000000000000000004000001000000000000000000000000000feeddeca0000000000005432\
                   0000000000decafe000000000134321400000000feedface000000000000000400000000deadbeef\
                   0000000000006524";
        let msg = StreamRequestResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, StreamRequestResponse::accepted(0x1000, doc_log()));
        assert_eq!(msg.failover_log(), Some(&doc_log()));
        assert_eq!(msg.rollback_seqno(), None);
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn response_round_trip() {
        for msg in [
            StreamRequestResponse::accepted(1, doc_log()),
            StreamRequestResponse::accepted(1, FailoverLog::default()),
            StreamRequestResponse::rollback(2, 77),
            StreamRequestResponse::failed(
                3,
                Status::UnknownCollection,
                &br#"{"manifest_uid":"1f"}"#[..],
            ),
            StreamRequestResponse::failed(4, Status::NotMyVbucket, Bytes::new()),
            StreamRequestResponse::failed(5, Status::Erange, &b"text"[..]),
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(StreamRequestResponse::decode(&frame).unwrap(), msg);
            let json = matches!(&msg.outcome, StreamRequestOutcome::Failed { body, .. } if body.starts_with(b"{"));
            assert_eq!(frame.datatype().is_json(), json);
        }
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::DcpStreamReq, Status::Success, 1);
        let rollback = FrameHead::response(Opcode::DcpStreamReq, Status::Rollback, 1);
        let cases: [(Frame, DecodeErrorKind, usize); 7] = [
            (
                raw(
                    FrameHead::request(Opcode::DcpStreamReq, 0, 1),
                    &[],
                    &[],
                    &[],
                    &[],
                ),
                DecodeErrorKind::UnexpectedMagic {
                    expected: "response",
                    got: Magic::ClientRequest,
                },
                0,
            ),
            (
                raw(ok.with_datatype(Datatype(0x10)), &[], &[], &[], &[]),
                DecodeErrorKind::InvalidDatatype(0x10),
                5,
            ),
            (
                raw(ok, &[], &[0; 4], &[], &[]),
                DecodeErrorKind::ExtrasLength {
                    expected: "0",
                    got: 4,
                },
                4,
            ),
            (
                raw(ok, &[], &[], b"key", &[]),
                DecodeErrorKind::KeyNotAllowed(3),
                24,
            ),
            (
                raw(ok, &[], &[], &[], &[0; 17]),
                DecodeErrorKind::ValueLength {
                    expected: "a multiple of 16",
                    got: 17,
                },
                24,
            ),
            (
                raw(rollback, &[], &[], &[], &[0; 4]),
                DecodeErrorKind::ValueLength {
                    expected: "8",
                    got: 4,
                },
                24,
            ),
            (
                raw(rollback, &[], &[], &[], &[0; 9]),
                DecodeErrorKind::ValueLength {
                    expected: "8",
                    got: 9,
                },
                24,
            ),
        ];
        for (frame, kind, offset) in cases {
            let err = StreamRequestResponse::decode(&frame).unwrap_err();
            assert_eq!((err.kind, err.offset), (kind, offset));
        }
    }

    #[test]
    fn response_encode_rejects_inconsistent_status() {
        let mut msg = StreamRequestResponse::rollback(1, 5);
        msg.status = Status::Success;
        assert!(msg.encode(&mut BytesMut::new()).is_err());
        for status in [Status::Success, Status::Rollback] {
            let msg = StreamRequestResponse::failed(1, status, Bytes::new());
            assert!(msg.encode(&mut BytesMut::new()).is_err());
        }
    }
}
