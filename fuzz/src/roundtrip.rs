//! Encode → decode round trips of typed messages built from fuzzer bytes.
//!
//! [`item`] builds any typed message of `dcp_proto::msg` (every [`Message`]
//! variant and the key-value commands and responses, which are not
//! `Message` variants) from an [`Unstructured`]. Each builder draws every
//! field from the input and then applies, explicitly, what the wire cannot
//! represent (see [Normalisations](self#normalisations)); the checks then
//! hold with no exception:
//!
//! - the message encodes to exactly one frame, which decodes (as that type)
//!   to an equal message, and `wire_len()` (where the type has one) is the
//!   encoded length;
//! - re-encoding the decoded message gives the same bytes;
//! - the frame less its last byte does not parse;
//! - all messages of one input, concatenated and fed to a [`FrameDecoder`]
//!   in chunks cut where the input says, decode to the same messages.
//!
//! # Normalisations
//!
//! The same domain `dcp-proto/tests/roundtrip.rs` generates in, stated as
//! rules:
//!
//! - required keys (documents, DCP_OPEN name, CONTROL key and value,
//!   SASL mechanism, SELECT_BUCKET name) are never empty: an empty draw
//!   becomes one byte;
//! - a stream id (flexible framing, one key-length byte) limits the key to
//!   255 bytes; stream ids are never 0 (0 means "no stream id");
//! - by_seqno, prepared/commit/abort seqnos and a PREPARE's CAS are never 0
//!   (the decoders refuse 0, as the server does);
//! - datatypes are the three defined bits (0..=7); a deletion's datatype is
//!   never JSON alone nor JSON|Snappy (the server refuses those);
//! - a snapshot marker's start is at most its end;
//! - system events carry the payload their id and version define: the
//!   fixed v0/v1 layouts, or FlatBuffers tables (v2) built from typed
//!   data with UTF-8 names (the decoder verifies v2 values);
//! - a PREPARE's durability is one of the three defined levels;
//! - GET_ALL_VB_SEQNOS's state is 0..=4 and a collection id needs a state;
//! - error constructors take a non-success status; a failed stream request
//!   is neither Success nor Rollback (each has its own outcome); an error
//!   HELLO response grants no features;
//! - a status-only response has an opcode whose reply is status-only (DCP
//!   opcodes without a typed reply, SELECT_BUCKET);
//! - key-value responses: a GET/GAT error has no flags and the datatype of
//!   its body (JSON if it starts with `{`, else raw); a counter response
//!   has a value only on success and an error body only on error; the
//!   opcode is one the response type is for;
//! - cache transfer items have collection-prefixed keys (at least 2 bytes).

use arbitrary::{Result, Unstructured};
use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{
    Datatype, DecodeError, DecodeErrorKind, DurabilityLevel, EncodeError, Frame, FrameDecoder,
    Opcode, Status,
};
use dcp_proto::msg::client::{
    Concat, Counter, CounterResponse, Delete, Get, GetAllVbSeqnos, GetAllVbSeqnosResponse,
    GetAndTouch, GetClusterConfig, GetClusterConfigResponse, GetErrorMap, GetErrorMapResponse,
    GetFailoverLogRequest, GetResponse, Hello, HelloFeature, HelloResponse, KnownVersion,
    MutationResponse, MutationToken, SaslAuth, SaslListMechs, SaslListMechsResponse, SaslResponse,
    SaslStep, SelectBucket, Stat, StatResponse, Store, Touch,
};
use dcp_proto::msg::{
    Abort, AddStream, AddStreamResponse, BufferAck, CacheTransfer, CacheTransferEnd,
    CacheTransferItem, CacheTransferSettings, CloseStream, CollectionDetails, Commit, Control,
    DcpNoop, Deletion, Expiration, FailoverEntry, FailoverLog, FailoverLogResponse, Flush,
    GetFailoverLog, MarkerFormat, Message, Mutation, Open, OpenFlags, OsoFlags, OsoSnapshot,
    Prepare, SeqnoAcknowledged, SeqnoAdvanced, SetVbucketState, SnapshotFlags, SnapshotMarker,
    StatusResponse, StreamEnd, StreamEndReason, StreamRequest, StreamRequestFlags,
    StreamRequestResponse, StreamRequestValue, SystemEvent, SystemEventData, SystemEventId,
    VbucketState,
};

/// Longest key drawn under classic framing (above 255, so keys flexible
/// framing could not carry are covered).
const MAX_KEY: usize = 300;
/// Longest key flexible framing (a stream id) can carry.
const FLEX_MAX_KEY: usize = 255;
/// Longest value drawn.
const MAX_VALUE: usize = 512;

/// One typed message: a [`Message`] or a key-value command or response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Item {
    Msg(Message),
    Get(Get),
    GetAndTouch(GetAndTouch),
    Touch(Touch),
    GetResponse(GetResponse),
    Store(Store),
    Delete(Delete),
    Concat(Concat),
    Counter(Counter),
    MutationResponse(MutationResponse),
    CounterResponse(CounterResponse),
}

macro_rules! kv_items {
    ($($ty:ident),* $(,)?) => {
        impl Item {
            /// Appends the item's frame to `buf`.
            pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
                match self {
                    Item::Msg(m) => m.encode(buf),
                    $( Item::$ty(m) => m.encode(buf), )*
                }
            }

            /// Decodes `frame` as the same type as `self`.
            pub fn decode_as(&self, frame: &Frame) -> Result<Item, DecodeError> {
                match self {
                    Item::Msg(_) => Message::decode(frame).map(Item::Msg),
                    $( Item::$ty(_) => $ty::decode(frame).map(Item::$ty), )*
                }
            }

            /// The type's name (the `Message` variant for messages).
            pub fn name(&self) -> String {
                match self {
                    Item::Msg(m) => {
                        let debug = format!("{m:?}");
                        debug.split('(').next().unwrap_or_default().to_owned()
                    }
                    $( Item::$ty(_) => stringify!($ty).to_owned(), )*
                }
            }
        }
    };
}

kv_items!(
    Get,
    GetAndTouch,
    Touch,
    GetResponse,
    Store,
    Delete,
    Concat,
    Counter,
    MutationResponse,
    CounterResponse,
);

impl Item {
    /// The message's own `wire_len()`, for the types that have one.
    fn wire_len(&self) -> Option<usize> {
        let Item::Msg(msg) = self else {
            return None;
        };
        Some(match msg {
            Message::StreamEnd(m) => m.wire_len(),
            Message::SnapshotMarker(m) => m.wire_len(),
            Message::Mutation(m) => m.wire_len(),
            Message::Deletion(m) => m.wire_len(),
            Message::Expiration(m) => m.wire_len(),
            Message::Flush(m) => m.wire_len(),
            Message::SetVbucketState(m) => m.wire_len(),
            Message::DcpNoop(m) => m.wire_len(),
            Message::SystemEvent(m) => m.wire_len(),
            Message::Prepare(m) => m.wire_len(),
            Message::Commit(m) => m.wire_len(),
            Message::Abort(m) => m.wire_len(),
            Message::SeqnoAdvanced(m) => m.wire_len(),
            Message::OsoSnapshot(m) => m.wire_len(),
            Message::CacheTransfer(m) => m.wire_len(),
            Message::CacheTransferEnd(m) => m.wire_len(),
            Message::StatusResponse(m) => m.wire_len(),
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// The target
// ---------------------------------------------------------------------------

/// Builds up to eight items from `data`, checks each one's round trip, then
/// decodes all of them from one buffer fed in chunks the remaining input
/// cuts.
pub fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut items = Vec::new();
    let mut wire = BytesMut::new();
    while items.len() < 8 && !u.is_empty() {
        let Ok(item) = item(&mut u) else {
            break;
        };
        let bytes = check_one(&item);
        wire.extend_from_slice(&bytes);
        items.push(item);
        if !u.arbitrary::<bool>().unwrap_or(false) {
            break;
        }
    }
    let mut cuts = Vec::new();
    while cuts.len() < 32 {
        match u.arbitrary::<u16>() {
            Ok(cut) if !u.is_empty() => cuts.push(usize::from(cut)),
            _ => break,
        }
    }
    assert_eq!(decode_chunked(&items, &wire, &cuts), items);
}

/// Encodes `item`, checks its single-message properties; returns its bytes.
fn check_one(item: &Item) -> Bytes {
    let mut buf = BytesMut::new();
    item.encode(&mut buf)
        .unwrap_or_else(|e| panic!("{item:?} encodes: {e}"));
    let wire = buf.freeze();
    let frame = Frame::parse(wire.clone()).unwrap_or_else(|e| panic!("{item:?}: one frame: {e}"));
    assert_eq!(frame.wire_len(), wire.len());
    let decoded = item
        .decode_as(&frame)
        .unwrap_or_else(|e| panic!("{item:?} decodes: {e}"));
    assert_eq!(&decoded, item);
    if let Some(len) = item.wire_len() {
        assert_eq!(len, wire.len(), "wire_len of {item:?}");
    }
    if let Item::Msg(msg) = item {
        let owned = Message::from_frame(frame.clone()).expect("from_frame decodes");
        assert_eq!(&owned, msg);
        if let Message::SystemEvent(event) = msg {
            assert!(event.data().is_ok(), "{event:?}: payload readable");
        }
    }
    let mut again = BytesMut::new();
    decoded
        .encode(&mut again)
        .expect("a decoded item re-encodes");
    assert_eq!(again, wire, "re-encoding is byte-identical");
    let short = Frame::parse(wire.slice(..wire.len() - 1)).expect_err("a strict prefix");
    assert!(
        matches!(short.kind, DecodeErrorKind::Truncated { .. }),
        "{short}"
    );
    wire
}

/// Feeds `input` to a frame decoder in pieces cut at `cuts` (modulo the
/// input length) and decodes frame `i` as the type of `like[i]`.
fn decode_chunked(like: &[Item], input: &[u8], cuts: &[usize]) -> Vec<Item> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    for point in points {
        buf.extend_from_slice(&input[at..point]);
        at = point;
        while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
            let model = &like[out.len()];
            out.push(model.decode_as(&frame).expect("decodes as its type"));
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

// ---------------------------------------------------------------------------
// Field builders
// ---------------------------------------------------------------------------

/// Any `u32`, the edges more often.
fn num32(u: &mut Unstructured) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => 0,
        1 => u32::MAX,
        _ => u.arbitrary()?,
    })
}

/// Any `u64`, the edges more often.
fn num64(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => 0,
        1 => u64::MAX,
        _ => u.arbitrary()?,
    })
}

/// A seqno or CAS the decoders require non-zero: 0 becomes 1.
fn nonzero64(u: &mut Unstructured) -> Result<u64> {
    Ok(num64(u)?.max(1))
}

fn vbucket(u: &mut Unstructured) -> Result<u16> {
    u.arbitrary()
}

fn opaque(u: &mut Unstructured) -> Result<u32> {
    num32(u)
}

/// A stream id, never 0.
fn sid(u: &mut Unstructured) -> Result<u16> {
    Ok(u.arbitrary::<u16>()?.max(1))
}

fn opt_sid(u: &mut Unstructured) -> Result<Option<u16>> {
    Ok(if u.arbitrary()? { Some(sid(u)?) } else { None })
}

/// Bytes of a length in `min..=max`.
fn blob(u: &mut Unstructured, min: usize, max: usize) -> Result<Bytes> {
    let len = u.int_in_range(min..=max)?;
    let bytes = u.bytes(len.min(u.len()))?;
    let mut out = bytes.to_vec();
    // Short input: pad to the minimum rather than fail.
    out.resize(out.len().max(min), b'k');
    Ok(Bytes::from(out))
}

/// A required key under classic framing.
fn key(u: &mut Unstructured) -> Result<Bytes> {
    blob(u, 1, MAX_KEY)
}

fn value(u: &mut Unstructured) -> Result<Bytes> {
    blob(u, 0, MAX_VALUE)
}

/// A stream id and a key of at least `min` bytes fitting the framing the
/// stream id implies.
fn sid_and_key(u: &mut Unstructured, min: usize) -> Result<(Option<u16>, Bytes)> {
    let sid = opt_sid(u)?;
    let max = if sid.is_some() { FLEX_MAX_KEY } else { MAX_KEY };
    Ok((sid, blob(u, min, max)?))
}

/// The three defined datatype bits.
fn datatype(u: &mut Unstructured) -> Result<Datatype> {
    Ok(Datatype(u.arbitrary::<u8>()? & 7))
}

fn status(u: &mut Unstructured) -> Result<Status> {
    Ok(Status::from_raw(match u.int_in_range(0u8..=3)? {
        0 => 0,
        1 => u.int_in_range(0u16..=0xa4)?,
        _ => u.arbitrary()?,
    }))
}

/// Any status but Success.
fn error_status(u: &mut Unstructured) -> Result<Status> {
    let raw = if u.arbitrary()? {
        u.int_in_range(1u16..=0xa4)?
    } else {
        u.int_in_range(1u16..=u16::MAX)?
    };
    Ok(Status::from_raw(raw))
}

/// An error response body: none, the server's JSON error context, or bytes.
fn error_body(u: &mut Unstructured) -> Result<Bytes> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Bytes::new(),
        1 => {
            let context: String = u.arbitrary()?;
            let context = json_text(&context);
            Bytes::from(format!(r#"{{"error":{{"context":"{context}"}}}}"#))
        }
        _ => blob(u, 0, 64)?,
    })
}

/// Letters and spaces only, so the body stays valid JSON.
fn json_text(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .take(24)
        .collect()
}

fn failover_log(u: &mut Unstructured) -> Result<FailoverLog> {
    let n = u.int_in_range(0usize..=5)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(FailoverEntry {
            vbucket_uuid: num64(u)?,
            seqno: num64(u)?,
        });
    }
    Ok(FailoverLog::new(entries))
}

fn choose<T: Copy>(u: &mut Unstructured, options: &[T]) -> Result<T> {
    Ok(*u.choose(options)?)
}

fn opt<T>(
    u: &mut Unstructured,
    f: impl FnOnce(&mut Unstructured) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.arbitrary()? { Some(f(u)?) } else { None })
}

// ---------------------------------------------------------------------------
// Message builders
// ---------------------------------------------------------------------------

/// How many kinds [`item`] chooses from: the 45 `Message` variants and the
/// 10 key-value types.
pub const KINDS: u8 = 55;

/// Any typed message.
pub fn item(u: &mut Unstructured) -> Result<Item> {
    let kind = u.int_in_range(0..=KINDS - 1)?;
    Ok(match kind {
        0..=44 => Item::Msg(message(u, kind)?),
        45 => Item::Get(Get {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            key: key(u)?,
        }),
        46 => Item::GetAndTouch(GetAndTouch {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            key: key(u)?,
            expiry: num32(u)?,
        }),
        47 => Item::Touch(Touch {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            key: key(u)?,
            expiry: num32(u)?,
        }),
        48 => {
            let opcode = choose(u, &[Opcode::Get, Opcode::Gat])?;
            let status = status(u)?;
            let value = value(u)?;
            let (datatype, flags) = if status.is_success() {
                (datatype(u)?, num32(u)?)
            } else {
                (body_datatype(&value), 0)
            };
            Item::GetResponse(GetResponse {
                opcode,
                status,
                opaque: opaque(u)?,
                cas: num64(u)?,
                datatype,
                flags,
                value,
            })
        }
        49 => Item::Store(Store {
            opcode: choose(u, &[Opcode::Set, Opcode::Add, Opcode::Replace])?,
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            cas: num64(u)?,
            datatype: datatype(u)?,
            flags: num32(u)?,
            expiry: num32(u)?,
            key: key(u)?,
            value: value(u)?,
        }),
        50 => Item::Delete(Delete {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            cas: num64(u)?,
            key: key(u)?,
        }),
        51 => Item::Concat(Concat {
            opcode: choose(u, &[Opcode::Append, Opcode::Prepend])?,
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            cas: num64(u)?,
            key: key(u)?,
            value: value(u)?,
        }),
        52 => Item::Counter(Counter {
            opcode: choose(u, &[Opcode::Increment, Opcode::Decrement])?,
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            cas: num64(u)?,
            key: key(u)?,
            delta: num64(u)?,
            initial: num64(u)?,
            expiry: num32(u)?,
        }),
        53 => Item::MutationResponse(MutationResponse {
            opcode: choose(
                u,
                &[
                    Opcode::Set,
                    Opcode::Add,
                    Opcode::Replace,
                    Opcode::Delete,
                    Opcode::Append,
                    Opcode::Prepend,
                    Opcode::Touch,
                ],
            )?,
            status: status(u)?,
            opaque: opaque(u)?,
            cas: num64(u)?,
            token: opt(u, mutation_token)?,
            error_body: error_body(u)?,
        }),
        _ => {
            let status = status(u)?;
            let (value, error_body) = if status.is_success() {
                (num64(u)?, Bytes::new())
            } else {
                (0, error_body(u)?)
            };
            Item::CounterResponse(CounterResponse {
                opcode: choose(u, &[Opcode::Increment, Opcode::Decrement])?,
                status,
                opaque: opaque(u)?,
                cas: num64(u)?,
                value,
                token: opt(u, mutation_token)?,
                error_body,
            })
        }
    })
}

/// The datatype the encoders give an error body.
fn body_datatype(body: &[u8]) -> Datatype {
    if body.first() == Some(&b'{') {
        Datatype::JSON
    } else {
        Datatype::RAW
    }
}

fn mutation_token(u: &mut Unstructured) -> Result<MutationToken> {
    Ok(MutationToken {
        vbucket_uuid: num64(u)?,
        seqno: num64(u)?,
    })
}

/// The `Message` variant number `kind` (0..=44).
fn message(u: &mut Unstructured, kind: u8) -> Result<Message> {
    Ok(match kind {
        0 => Message::Open(Open {
            opaque: opaque(u)?,
            flags: OpenFlags::from_bits_retain(num32(u)?),
            name: key(u)?,
            consumer_name: opt(u, |u| {
                let s: String = u.arbitrary()?;
                Ok(s.chars().take(24).collect())
            })?,
        }),
        1 => Message::AddStream(AddStream {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            flags: StreamRequestFlags::from_bits_retain(num32(u)?),
        }),
        2 => Message::CloseStream(CloseStream {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            stream_id: opt_sid(u)?,
        }),
        3 => Message::StreamRequest(stream_request(u)?),
        4 => Message::GetFailoverLog(GetFailoverLog {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
        }),
        5 => Message::StreamEnd(StreamEnd {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            stream_id: opt_sid(u)?,
            reason: StreamEndReason::from_raw(if u.arbitrary()? {
                u.int_in_range(0..=9)?
            } else {
                u.arbitrary()?
            }),
        }),
        6 => {
            let (a, b) = (num64(u)?, num64(u)?);
            let format = match u.int_in_range(0u8..=2)? {
                0 => MarkerFormat::V1,
                1 => MarkerFormat::V2_0 {
                    max_visible_seqno: num64(u)?,
                    high_completed_seqno: num64(u)?,
                },
                _ => MarkerFormat::V2_2 {
                    max_visible_seqno: num64(u)?,
                    high_completed_seqno: num64(u)?,
                    purge_seqno: num64(u)?,
                    high_prepared_seqno: num64(u)?,
                },
            };
            Message::SnapshotMarker(SnapshotMarker {
                vbucket: vbucket(u)?,
                opaque: opaque(u)?,
                stream_id: opt_sid(u)?,
                start: a.min(b),
                end: a.max(b),
                flags: SnapshotFlags::from_bits_retain(num32(u)?),
                format,
            })
        }
        7 => {
            let (stream_id, key) = sid_and_key(u, 1)?;
            Message::Mutation(Mutation {
                vbucket: vbucket(u)?,
                opaque: opaque(u)?,
                stream_id,
                cas: num64(u)?,
                datatype: datatype(u)?,
                by_seqno: nonzero64(u)?,
                rev_seqno: num64(u)?,
                flags: num32(u)?,
                expiration: num32(u)?,
                lock_time: num32(u)?,
                nru: u.arbitrary()?,
                key,
                value: value(u)?,
            })
        }
        8 => {
            let (stream_id, key) = sid_and_key(u, 1)?;
            Message::Deletion(Deletion {
                vbucket: vbucket(u)?,
                opaque: opaque(u)?,
                stream_id,
                cas: num64(u)?,
                datatype: Datatype(choose(u, &[0u8, 0x02, 0x04, 0x05, 0x06, 0x07])?),
                by_seqno: nonzero64(u)?,
                rev_seqno: num64(u)?,
                delete_time: opt(u, num32)?,
                key,
                value: value(u)?,
            })
        }
        9 => {
            let (stream_id, key) = sid_and_key(u, 1)?;
            Message::Expiration(Expiration {
                vbucket: vbucket(u)?,
                opaque: opaque(u)?,
                stream_id,
                cas: num64(u)?,
                datatype: datatype(u)?,
                by_seqno: nonzero64(u)?,
                rev_seqno: num64(u)?,
                delete_time: num32(u)?,
                key,
                value: value(u)?,
            })
        }
        10 => Message::Flush(Flush {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
        }),
        11 => Message::SetVbucketState(SetVbucketState {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            state: choose(
                u,
                &[
                    VbucketState::Active,
                    VbucketState::Replica,
                    VbucketState::Pending,
                    VbucketState::Dead,
                ],
            )?,
        }),
        12 => Message::DcpNoop(DcpNoop { opaque: opaque(u)? }),
        13 => Message::BufferAck(BufferAck {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            bytes: num32(u)?,
        }),
        14 => Message::Control(Control {
            opaque: opaque(u)?,
            key: key(u)?,
            value: blob(u, 1, MAX_VALUE)?,
        }),
        15 => Message::SystemEvent(system_event(u)?),
        16 => Message::Prepare(Prepare {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            cas: nonzero64(u)?,
            datatype: datatype(u)?,
            by_seqno: nonzero64(u)?,
            rev_seqno: num64(u)?,
            flags: num32(u)?,
            expiration: num32(u)?,
            lock_time: num32(u)?,
            nru: u.arbitrary()?,
            deleted: u.arbitrary()?,
            durability: choose(
                u,
                &[
                    DurabilityLevel::Majority,
                    DurabilityLevel::MajorityAndPersistOnMaster,
                    DurabilityLevel::PersistToMajority,
                ],
            )?,
            key: key(u)?,
            value: value(u)?,
        }),
        17 => Message::SeqnoAcknowledged(SeqnoAcknowledged {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            prepared_seqno: num64(u)?,
        }),
        18 => Message::Commit(Commit {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            prepared_seqno: nonzero64(u)?,
            commit_seqno: nonzero64(u)?,
            key: key(u)?,
        }),
        19 => Message::Abort(Abort {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            prepared_seqno: nonzero64(u)?,
            abort_seqno: nonzero64(u)?,
            key: key(u)?,
        }),
        20 => Message::SeqnoAdvanced(SeqnoAdvanced {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            stream_id: opt_sid(u)?,
            seqno: num64(u)?,
        }),
        21 => Message::OsoSnapshot(OsoSnapshot {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            stream_id: opt_sid(u)?,
            flags: OsoFlags::from_bits_retain(num32(u)?),
        }),
        22 => Message::CacheTransfer(cache_transfer(u)?),
        23 => Message::CacheTransferEnd(CacheTransferEnd {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
            stream_id: opt_sid(u)?,
        }),
        24 => Message::Hello(Hello {
            opaque: opaque(u)?,
            agent: blob(u, 0, MAX_KEY)?,
            features: hello_features(u)?,
        }),
        25 => Message::SaslListMechs(SaslListMechs { opaque: opaque(u)? }),
        26 => Message::SaslAuth(SaslAuth {
            opaque: opaque(u)?,
            mechanism: sasl_mechanism(u)?,
            data: blob(u, 0, 128)?,
        }),
        27 => Message::SaslStep(SaslStep {
            opaque: opaque(u)?,
            mechanism: sasl_mechanism(u)?,
            data: blob(u, 0, 128)?,
        }),
        28 => Message::SelectBucket(SelectBucket {
            opaque: opaque(u)?,
            bucket: key(u)?,
        }),
        29 => Message::GetErrorMap(GetErrorMap {
            opaque: opaque(u)?,
            version: u.arbitrary()?,
        }),
        30 => Message::GetClusterConfig(GetClusterConfig {
            opaque: opaque(u)?,
            known: opt(u, |u| {
                Ok(KnownVersion {
                    epoch: u.arbitrary()?,
                    revision: u.arbitrary()?,
                })
            })?,
        }),
        31 => {
            let state = opt(u, |u| u.int_in_range(0u32..=4))?;
            let collection_id = match state {
                Some(_) => opt(u, num32)?,
                None => None,
            };
            Message::GetAllVbSeqnos(GetAllVbSeqnos {
                opaque: opaque(u)?,
                state,
                collection_id,
            })
        }
        32 => Message::Stat(Stat {
            opaque: opaque(u)?,
            group: blob(u, 0, MAX_KEY)?,
            value: blob(u, 0, 128)?,
        }),
        33 => Message::GetFailoverLogRequest(GetFailoverLogRequest {
            vbucket: vbucket(u)?,
            opaque: opaque(u)?,
        }),
        34 => Message::AddStreamResponse(if u.arbitrary()? {
            AddStreamResponse::success(opaque(u)?, num32(u)?)
        } else {
            AddStreamResponse {
                status: error_status(u)?,
                opaque: opaque(u)?,
                stream_opaque: num32(u)?,
                error_body: error_body(u)?,
            }
        }),
        35 => Message::StreamRequestResponse(match u.int_in_range(0u8..=2)? {
            0 => StreamRequestResponse::accepted(opaque(u)?, failover_log(u)?),
            1 => StreamRequestResponse::rollback(opaque(u)?, num64(u)?),
            _ => {
                let mut status = error_status(u)?;
                if status == Status::Rollback {
                    // Rollback has its own outcome.
                    status = Status::NotMyVbucket;
                }
                StreamRequestResponse::failed(opaque(u)?, status, error_body(u)?)
            }
        }),
        36 => Message::HelloResponse(if u.arbitrary()? {
            HelloResponse::success(opaque(u)?, hello_features(u)?)
        } else {
            HelloResponse {
                status: error_status(u)?,
                opaque: opaque(u)?,
                features: Vec::new(),
                error_body: error_body(u)?,
            }
        }),
        37 => Message::SaslListMechsResponse(SaslListMechsResponse {
            status: status(u)?,
            opaque: opaque(u)?,
            mechanisms: if u.arbitrary()? {
                Bytes::from_static(b"SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN")
            } else {
                error_body(u)?
            },
        }),
        38 => Message::GetErrorMapResponse(GetErrorMapResponse {
            status: status(u)?,
            opaque: opaque(u)?,
            map: if u.arbitrary()? {
                Bytes::from_static(br#"{"version":2,"revision":1,"errors":{}}"#)
            } else {
                error_body(u)?
            },
        }),
        39 => Message::GetClusterConfigResponse(GetClusterConfigResponse {
            status: status(u)?,
            opaque: opaque(u)?,
            datatype: datatype(u)?,
            config: value(u)?,
        }),
        40 => Message::GetAllVbSeqnosResponse(if u.arbitrary()? {
            let n = u.int_in_range(0usize..=16)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push((u.arbitrary()?, num64(u)?));
            }
            GetAllVbSeqnosResponse::success(opaque(u)?, entries)
        } else {
            GetAllVbSeqnosResponse {
                status: error_status(u)?,
                opaque: opaque(u)?,
                entries: Vec::new(),
                error_body: error_body(u)?,
            }
        }),
        41 => Message::StatResponse(StatResponse {
            status: status(u)?,
            opaque: opaque(u)?,
            key: blob(u, 0, MAX_KEY)?,
            value: value(u)?,
        }),
        42 => {
            let opcode = choose(u, &[Opcode::DcpGetFailoverLog, Opcode::GetFailoverLog])?;
            Message::FailoverLogResponse(if u.arbitrary()? {
                FailoverLogResponse::success(opcode, opaque(u)?, failover_log(u)?)
            } else {
                FailoverLogResponse::error(opcode, error_status(u)?, opaque(u)?, error_body(u)?)
            })
        }
        43 => Message::SaslResponse(SaslResponse {
            opcode: choose(u, &[Opcode::SaslAuth, Opcode::SaslStep])?,
            status: if u.arbitrary()? {
                Status::AuthContinue
            } else {
                status(u)?
            },
            opaque: opaque(u)?,
            data: if u.arbitrary()? {
                blob(u, 0, 128)?
            } else {
                error_body(u)?
            },
        }),
        _ => Message::StatusResponse(StatusResponse {
            opcode: status_only_opcode(u)?,
            status: status(u)?,
            opaque: opaque(u)?,
            cas: num64(u)?,
            datatype: datatype(u)?,
            value: value(u)?,
        }),
    })
}

fn stream_request(u: &mut Unstructured) -> Result<StreamRequest> {
    let value = opt(u, |u| {
        Ok(StreamRequestValue {
            collections: opt(u, |u| {
                let n = u.int_in_range(0usize..=3)?;
                (0..n).map(|_| num32(u)).collect()
            })?,
            scope: opt(u, num32)?,
            uid: opt(u, num64)?,
            sid: opt(u, sid)?,
            purge_seqno: opt(u, num64)?,
            cts: opt(u, |u| {
                Ok(CacheTransferSettings {
                    free_memory: num64(u)?,
                    all_keys: u.arbitrary()?,
                })
            })?,
        })
    })?;
    Ok(StreamRequest {
        vbucket: vbucket(u)?,
        opaque: opaque(u)?,
        flags: StreamRequestFlags::from_bits_retain(num32(u)?),
        start_seqno: num64(u)?,
        end_seqno: num64(u)?,
        vbucket_uuid: num64(u)?,
        snap_start_seqno: num64(u)?,
        snap_end_seqno: num64(u)?,
        value,
    })
}

fn system_event(u: &mut Unstructured) -> Result<SystemEvent> {
    use SystemEventId::{BeginCollection, CreateScope, DropScope, EndCollection};
    let fixed = |u: &mut Unstructured, len: usize| blob(u, len, len);
    let (event, version, value) = match u.int_in_range(0u8..=9)? {
        0 => (BeginCollection, 0, fixed(u, 16)?),
        1 => (BeginCollection, 1, fixed(u, 20)?),
        2 => (EndCollection, 0, fixed(u, 16)?),
        3 => (CreateScope, 0, fixed(u, 12)?),
        4 => (DropScope, 0, fixed(u, 12)?),
        _ => {
            let data = system_event_data(u)?;
            let value = data.encode_value(2).expect("UTF-8 names encode");
            (data.event(), 2, value)
        }
    };
    let (stream_id, key) = sid_and_key(u, 0)?;
    Ok(SystemEvent {
        vbucket: vbucket(u)?,
        opaque: opaque(u)?,
        stream_id,
        by_seqno: nonzero64(u)?,
        event,
        version,
        key,
        value,
    })
}

/// Typed system event data of any event (names UTF-8, as the FlatBuffers
/// schema requires).
fn system_event_data(u: &mut Unstructured) -> Result<SystemEventData> {
    let manifest_uid = num64(u)?;
    let scope_id = num32(u)?;
    let collection_id = num32(u)?;
    let len = u.int_in_range(1usize..=30)?;
    let name: String = (0..len)
        .map(|_| Ok(char::from(*u.choose(b"abcXYZ019_-%")?)))
        .collect::<Result<_>>()?;
    let name = Bytes::from(name);
    let max_ttl = opt(u, num32)?;
    let [history, metered, system]: [bool; 3] = u.arbitrary()?;
    let flush_uid = num64(u)?;
    let default_collection_mvs = num64(u)?;
    let which = u.int_in_range(0u8..=4)?;
    Ok(match which {
        0 | 1 => {
            let collection = CollectionDetails {
                manifest_uid,
                scope_id,
                collection_id,
                name,
                max_ttl,
                history,
                metered,
                flush_uid,
                default_collection_mvs,
            };
            if which == 0 {
                SystemEventData::BeginCollection(collection)
            } else {
                SystemEventData::ModifyCollection(collection)
            }
        }
        2 => SystemEventData::EndCollection {
            manifest_uid,
            scope_id,
            collection_id,
            system,
        },
        3 => SystemEventData::CreateScope {
            manifest_uid,
            scope_id,
            name,
        },
        _ => SystemEventData::DropScope {
            manifest_uid,
            scope_id,
            system,
        },
    })
}

fn cache_transfer(u: &mut Unstructured) -> Result<CacheTransfer> {
    let n = u.int_in_range(1usize..=3)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(CacheTransferItem {
            cas: num64(u)?,
            by_seqno: num64(u)?,
            rev_seqno: num64(u)?,
            flags: num32(u)?,
            expiration: num32(u)?,
            datatype: datatype(u)?,
            cache_hint: u.arbitrary()?,
            key: blob(u, 2, MAX_KEY)?,
            value: blob(u, 0, 128)?,
        });
    }
    let built = CacheTransfer::from_items(vbucket(u)?, opaque(u)?, opt_sid(u)?, &items)
        .expect("one to three items build a cache transfer");
    let decoded: Vec<CacheTransferItem> = {
        let mut buf = BytesMut::new();
        built.encode(&mut buf).expect("encodes");
        let frame = Frame::parse(buf.freeze()).expect("one frame");
        match Message::decode(&frame).expect("decodes") {
            Message::CacheTransfer(m) => m.items().collect(),
            other => panic!("not a cache transfer: {other:?}"),
        }
    };
    assert_eq!(decoded, items, "cache transfer items come back as built");
    Ok(built)
}

fn hello_features(u: &mut Unstructured) -> Result<Vec<HelloFeature>> {
    let n = u.int_in_range(0usize..=7)?;
    let mut features = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = if u.arbitrary()? {
            u.int_in_range(0u16..=0x28)?
        } else {
            u.arbitrary()?
        };
        features.push(HelloFeature::from_raw(raw));
    }
    Ok(features)
}

fn sasl_mechanism(u: &mut Unstructured) -> Result<Bytes> {
    if u.arbitrary()? {
        let name = choose(u, &["PLAIN", "SCRAM-SHA512", "SCRAM-SHA256", "SCRAM-SHA1"])?;
        Ok(Bytes::from_static(name.as_bytes()))
    } else {
        key(u)
    }
}

/// Opcodes whose replies are only a status: every DCP opcode without a
/// typed response, and SELECT_BUCKET.
fn status_only_opcode(u: &mut Unstructured) -> Result<Opcode> {
    let typed = [
        Opcode::DcpAddStream,
        Opcode::DcpStreamReq,
        Opcode::DcpGetFailoverLog,
    ];
    let raw = u.int_in_range(0x50u8..=0x68)?;
    let op = Opcode::from_raw(raw);
    Ok(if raw == 0x68 || typed.contains(&op) {
        Opcode::SelectBucket
    } else {
        op
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Deterministic bytes (xorshift64*).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// The builders reach every `Message` variant and key-value type, and
    /// every built item passes the checks.
    #[test]
    fn every_kind_is_built_and_round_trips() {
        let mut seen = BTreeSet::new();
        for seed in 0..3000u64 {
            let data = noise(seed, 700);
            let mut u = Unstructured::new(&data);
            if let Ok(item) = item(&mut u) {
                check_one(&item);
                seen.insert(item.name());
            }
            roundtrip(&data);
        }
        assert_eq!(seen.len(), usize::from(KINDS), "{seen:?}");
    }
}
