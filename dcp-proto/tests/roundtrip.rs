//! Encode → decode round trips for every [`Message`] variant.
//!
//! One strategy per message type generates only values that type's own
//! decoder accepts; [`any_message`] draws from all of them. The properties:
//!
//! - a message encodes to exactly one frame, which decodes back to the same
//!   message (and its `wire_len()`, where it has one, is the encoded length);
//! - re-encoding the decoded message gives the same bytes;
//! - any sequence of messages, fed to a [`FrameDecoder`] in any chunking,
//!   decodes to the same sequence;
//! - no strict prefix of an encoded message parses, and the frame decoder
//!   waits on every one.
//!
//! [`every_variant_and_facet_is_generated`] checks that the strategies reach
//! every variant, optional field state and enum case.
//!
//! Runs are seeded, so they are the same on every machine; set
//! `PROPTEST_RNG_SEED` to explore elsewhere and `PROPTEST_CASES` to run longer.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use bitflags::Flags;
use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{
    Datatype, DecodeErrorKind, DurabilityLevel, Frame, FrameDecoder, Opcode, Status,
};
use dcp_proto::msg::client::{
    GetAllVbSeqnos, GetAllVbSeqnosResponse, GetClusterConfig, GetClusterConfigResponse,
    GetErrorMap, GetErrorMapResponse, GetFailoverLogRequest, Hello, HelloFeature, HelloResponse,
    KnownVersion, SaslAuth, SaslListMechs, SaslListMechsResponse, SaslResponse, SaslStep,
    SelectBucket, Stat, StatResponse,
};
use dcp_proto::msg::{
    Abort, AddStream, AddStreamResponse, BufferAck, CacheTransfer, CacheTransferEnd,
    CacheTransferItem, CacheTransferSettings, CloseStream, CollectionDetails, Commit, Control,
    DcpNoop, Deletion, Expiration, FailoverEntry, FailoverLog, FailoverLogResponse, Flush,
    GetFailoverLog, MarkerFormat, Message, Mutation, Open, OsoSnapshot, Prepare, SeqnoAcknowledged,
    SeqnoAdvanced, SetVbucketState, SnapshotMarker, StatusResponse, StreamEnd, StreamEndReason,
    StreamRequest, StreamRequestOutcome, StreamRequestResponse, StreamRequestValue, SystemEvent,
    SystemEventData, SystemEventId, VbucketState,
};
use proptest::array::{uniform4, uniform5};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngSeed, TestRunner};

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// The fixed seed of every run (unless `PROPTEST_RNG_SEED` is set).
const SEED: u64 = 0x00dc_9e0d_2024;

/// Longest key generated for classic framing (which allows 65535); above
/// 255 so that keys flexible framing could not carry are covered.
const MAX_KEY: usize = 300;
/// Longest key flexible framing (a stream id) can carry.
const FLEX_MAX_KEY: usize = 255;
/// Longest document value generated.
const MAX_VALUE: usize = 512;

/// `cases` cases from the fixed seed, unless `PROPTEST_CASES` /
/// `PROPTEST_RNG_SEED` say otherwise. Failures are not persisted to a
/// regressions file: the seed reproduces them.
fn config(cases: u32) -> ProptestConfig {
    // The default reads the PROPTEST_* environment variables.
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

// ---------------------------------------------------------------------------
// Field strategies
// ---------------------------------------------------------------------------

fn opaque() -> impl Strategy<Value = u32> {
    num32()
}

fn vbucket() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0), Just(1023), any::<u16>()]
}

/// Any `u32`, the edges more often.
fn num32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]
}

/// Any `u64`, the edges more often.
fn num64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>()]
}

/// A non-zero `u64` (seqnos the decoders require non-zero, a prepare's CAS).
fn nonzero64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(1), 1..=1_000_000u64, Just(u64::MAX), 1..=u64::MAX]
}

/// A by_seqno, prepared_seqno, commit_seqno, ...: never zero.
fn seqno() -> impl Strategy<Value = u64> {
    nonzero64()
}

/// A DCP stream id: 1..=65535.
fn sid() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1), Just(u16::MAX), 1..=u16::MAX]
}

fn opt_sid() -> impl Strategy<Value = Option<u16>> {
    option::of(sid())
}

/// Bytes of a length in `len`: short ones, both ends and anything between.
fn blob(len: RangeInclusive<usize>) -> impl Strategy<Value = Bytes> {
    let (min, max) = (*len.start(), *len.end());
    prop_oneof![
        3 => min..=max.min(min + 16),
        1 => Just(min),
        1 => Just(max),
        1 => len,
    ]
    .prop_flat_map(|n| vec(any::<u8>(), n))
    .prop_map(Bytes::from)
}

/// A required key, under classic framing.
fn key() -> impl Strategy<Value = Bytes> {
    blob(1..=MAX_KEY)
}

/// A document value (may be empty).
fn value() -> impl Strategy<Value = Bytes> {
    blob(0..=MAX_VALUE)
}

/// An optional stream id and a key of at least `min` bytes that fits the
/// framing the stream id implies (flexible framing: at most 255 bytes).
fn sid_and_key(min: usize) -> impl Strategy<Value = (Option<u16>, Bytes)> {
    opt_sid().prop_flat_map(move |sid| {
        let max = if sid.is_some() { FLEX_MAX_KEY } else { MAX_KEY };
        (Just(sid), blob(min..=max))
    })
}

/// Any valid datatype (JSON, Snappy, Xattr bits).
fn datatype() -> impl Strategy<Value = Datatype> {
    (0u8..=7).prop_map(Datatype)
}

/// A flag set: empty, only known flags, or with unknown bits retained.
fn flags<F: Flags<Bits = u32> + Clone + core::fmt::Debug + 'static>() -> impl Strategy<Value = F> {
    prop_oneof![
        Just(F::empty()),
        any::<u32>().prop_map(F::from_bits_truncate),
        any::<u32>().prop_map(F::from_bits_retain),
    ]
}

/// Any status, named or not.
fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Success),
        (0u16..=0xa4).prop_map(Status::from_raw),
        any::<u16>().prop_map(Status::from_raw),
    ]
}

/// Any status but Success.
fn error_status() -> impl Strategy<Value = Status> {
    prop_oneof![1u16..=0xa4, 1u16..=u16::MAX].prop_map(Status::from_raw)
}

/// An error response body: none, the server's JSON error context, or text.
fn error_body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        "[a-z ]{0,24}".prop_map(json_error),
        blob(0..=64),
    ]
}

/// The JSON body of the server's error responses.
fn json_error(context: String) -> Bytes {
    Bytes::from(format!(r#"{{"error":{{"context":"{context}"}}}}"#))
}

fn failover_log() -> impl Strategy<Value = FailoverLog> {
    let entry = (num64(), num64()).prop_map(|(vbucket_uuid, seqno)| FailoverEntry {
        vbucket_uuid,
        seqno,
    });
    vec(entry, 0..6).prop_map(FailoverLog::new)
}

// ---------------------------------------------------------------------------
// DCP message strategies
// ---------------------------------------------------------------------------

prop_compose! {
    fn open()(
        opaque in opaque(),
        flags in flags(),
        name in key(),
        consumer_name in option::of("(?s).{0,24}"),
    ) -> Open {
        Open { opaque, flags, name, consumer_name }
    }
}

prop_compose! {
    fn add_stream()(vbucket in vbucket(), opaque in opaque(), flags in flags()) -> AddStream {
        AddStream { vbucket, opaque, flags }
    }
}

prop_compose! {
    fn add_stream_error()(
        status in error_status(),
        opaque in opaque(),
        stream_opaque in num32(),
        error_body in error_body(),
    ) -> AddStreamResponse {
        AddStreamResponse { status, opaque, stream_opaque, error_body }
    }
}

fn add_stream_response() -> impl Strategy<Value = AddStreamResponse> {
    prop_oneof![
        (opaque(), num32())
            .prop_map(|(o, stream_opaque)| AddStreamResponse::success(o, stream_opaque)),
        add_stream_error(),
    ]
}

prop_compose! {
    fn close_stream()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
    ) -> CloseStream {
        CloseStream { vbucket, opaque, stream_id }
    }
}

prop_compose! {
    fn cache_transfer_settings()(
        free_memory in num64(),
        all_keys in any::<bool>(),
    ) -> CacheTransferSettings {
        CacheTransferSettings { free_memory, all_keys }
    }
}

prop_compose! {
    fn stream_request_value()(
        collections in option::of(vec(num32(), 0..4)),
        scope in option::of(num32()),
        uid in option::of(num64()),
        sid in option::of(sid()),
        purge_seqno in option::of(num64()),
        cts in option::of(cache_transfer_settings()),
    ) -> StreamRequestValue {
        StreamRequestValue { collections, scope, uid, sid, purge_seqno, cts }
    }
}

prop_compose! {
    fn stream_request()(
        vbucket in vbucket(),
        opaque in opaque(),
        flags in flags(),
        [start_seqno, end_seqno, vbucket_uuid, snap_start_seqno, snap_end_seqno]
            in uniform5(num64()),
        value in option::of(stream_request_value()),
    ) -> StreamRequest {
        StreamRequest {
            vbucket,
            opaque,
            flags,
            start_seqno,
            end_seqno,
            vbucket_uuid,
            snap_start_seqno,
            snap_end_seqno,
            value,
        }
    }
}

fn stream_request_response() -> impl Strategy<Value = StreamRequestResponse> {
    let failed_status =
        error_status().prop_filter("Rollback has its own outcome", |s| *s != Status::Rollback);
    prop_oneof![
        (opaque(), failover_log()).prop_map(|(o, log)| StreamRequestResponse::accepted(o, log)),
        (opaque(), num64()).prop_map(|(o, seqno)| StreamRequestResponse::rollback(o, seqno)),
        (opaque(), failed_status, error_body())
            .prop_map(|(o, status, body)| StreamRequestResponse::failed(o, status, body)),
    ]
}

prop_compose! {
    fn get_failover_log()(vbucket in vbucket(), opaque in opaque()) -> GetFailoverLog {
        GetFailoverLog { vbucket, opaque }
    }
}

fn failover_log_response() -> impl Strategy<Value = FailoverLogResponse> {
    let opcode = || select(vec![Opcode::DcpGetFailoverLog, Opcode::GetFailoverLog]);
    prop_oneof![
        (opcode(), opaque(), failover_log())
            .prop_map(|(op, o, log)| FailoverLogResponse::success(op, o, log)),
        (opcode(), error_status(), opaque(), error_body())
            .prop_map(|(op, status, o, body)| FailoverLogResponse::error(op, status, o, body)),
    ]
}

prop_compose! {
    fn stream_end()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
        reason in prop_oneof![0u32..=9, any::<u32>()],
    ) -> StreamEnd {
        StreamEnd { vbucket, opaque, stream_id, reason: StreamEndReason::from_raw(reason) }
    }
}

fn marker_format() -> impl Strategy<Value = MarkerFormat> {
    prop_oneof![
        Just(MarkerFormat::V1),
        (num64(), num64()).prop_map(|(max_visible_seqno, high_completed_seqno)| {
            MarkerFormat::V2_0 {
                max_visible_seqno,
                high_completed_seqno,
            }
        }),
        uniform4(num64()).prop_map(|[mvs, hcs, purge, hps]| MarkerFormat::V2_2 {
            max_visible_seqno: mvs,
            high_completed_seqno: hcs,
            purge_seqno: purge,
            high_prepared_seqno: hps,
        }),
    ]
}

/// A snapshot range: start <= end, sometimes equal.
fn snapshot_range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        num64().prop_map(|s| (s, s)),
        (num64(), num64()).prop_map(|(a, b)| (a.min(b), a.max(b))),
    ]
}

prop_compose! {
    fn snapshot_marker()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
        (start, end) in snapshot_range(),
        flags in flags(),
        format in marker_format(),
    ) -> SnapshotMarker {
        SnapshotMarker { vbucket, opaque, stream_id, start, end, flags, format }
    }
}

prop_compose! {
    fn mutation()(
        vbucket in vbucket(),
        opaque in opaque(),
        (stream_id, key) in sid_and_key(1),
        cas in num64(),
        datatype in datatype(),
        by_seqno in seqno(),
        rev_seqno in num64(),
        flags in num32(),
        expiration in num32(),
        lock_time in num32(),
        nru in any::<u8>(),
        value in value(),
    ) -> Mutation {
        Mutation {
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
        }
    }
}

/// The datatypes the server allows on a deletion: not JSON alone, nor
/// JSON|Snappy.
fn deletion_datatype() -> impl Strategy<Value = Datatype> {
    select(vec![0u8, 0x02, 0x04, 0x05, 0x06, 0x07]).prop_map(Datatype)
}

prop_compose! {
    fn deletion()(
        vbucket in vbucket(),
        opaque in opaque(),
        (stream_id, key) in sid_and_key(1),
        cas in num64(),
        datatype in deletion_datatype(),
        by_seqno in seqno(),
        rev_seqno in num64(),
        delete_time in option::of(num32()),
        value in value(),
    ) -> Deletion {
        Deletion {
            vbucket,
            opaque,
            stream_id,
            cas,
            datatype,
            by_seqno,
            rev_seqno,
            delete_time,
            key,
            value,
        }
    }
}

prop_compose! {
    fn expiration()(
        vbucket in vbucket(),
        opaque in opaque(),
        (stream_id, key) in sid_and_key(1),
        cas in num64(),
        datatype in datatype(),
        by_seqno in seqno(),
        rev_seqno in num64(),
        delete_time in num32(),
        value in value(),
    ) -> Expiration {
        Expiration {
            vbucket,
            opaque,
            stream_id,
            cas,
            datatype,
            by_seqno,
            rev_seqno,
            delete_time,
            key,
            value,
        }
    }
}

prop_compose! {
    fn flush()(vbucket in vbucket(), opaque in opaque()) -> Flush {
        Flush { vbucket, opaque }
    }
}

prop_compose! {
    fn set_vbucket_state()(
        vbucket in vbucket(),
        opaque in opaque(),
        state in select(vec![
            VbucketState::Active,
            VbucketState::Replica,
            VbucketState::Pending,
            VbucketState::Dead,
        ]),
    ) -> SetVbucketState {
        SetVbucketState { vbucket, opaque, state }
    }
}

prop_compose! {
    fn dcp_noop()(opaque in opaque()) -> DcpNoop {
        DcpNoop { opaque }
    }
}

prop_compose! {
    fn buffer_ack()(vbucket in vbucket(), opaque in opaque(), bytes in num32()) -> BufferAck {
        BufferAck { vbucket, opaque, bytes }
    }
}

prop_compose! {
    fn control()(opaque in opaque(), key in key(), value in blob(1..=MAX_VALUE)) -> Control {
        Control { opaque, key, value }
    }
}

/// The event id, version and value combinations the decoder has a layout
/// for: the fixed-size v0/v1 payloads, and FlatBuffers (v2) tables of any
/// event (built from typed data: the decoder verifies v2 values).
fn system_event_payload() -> impl Strategy<Value = (SystemEventId, u8, Bytes)> {
    use SystemEventId::{BeginCollection, CreateScope, DropScope, EndCollection};
    let fixed = |id: SystemEventId, version: u8, len: usize| {
        vec(any::<u8>(), len).prop_map(move |v| (id, version, Bytes::from(v)))
    };
    let flatbuffers = (
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<Option<u32>>(),
        ),
        "[a-zA-Z0-9_%-]{1,16}",
        any::<[bool; 3]>(),
        (any::<u64>(), any::<u64>(), 0..5u8),
    )
        .prop_map(
            |((uid, scope, id, max_ttl), name, flags, (flush, mvs, which))| {
                let data = flatbuffers_data(
                    (uid, scope, id, max_ttl),
                    name.into(),
                    flags,
                    (flush, mvs, which),
                );
                (
                    data.event(),
                    2,
                    data.encode_value(2).expect("UTF-8 names encode"),
                )
            },
        );
    prop_oneof![
        1 => fixed(BeginCollection, 0, 16),
        1 => fixed(BeginCollection, 1, 20),
        1 => fixed(EndCollection, 0, 16),
        1 => fixed(CreateScope, 0, 12),
        1 => fixed(DropScope, 0, 12),
        5 => flatbuffers,
    ]
}

/// One event's typed data: `which` picks create, modify, drop collection,
/// create or drop scope.
fn flatbuffers_data(
    (manifest_uid, scope_id, collection_id, max_ttl): (u64, u32, u32, Option<u32>),
    name: Bytes,
    [history, metered, system]: [bool; 3],
    (flush_uid, default_collection_mvs, which): (u64, u64, u8),
) -> SystemEventData {
    match which {
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
    }
}

prop_compose! {
    fn system_event()(
        vbucket in vbucket(),
        opaque in opaque(),
        (stream_id, key) in sid_and_key(0),
        by_seqno in seqno(),
        (event, version, value) in system_event_payload(),
    ) -> SystemEvent {
        SystemEvent { vbucket, opaque, stream_id, by_seqno, event, version, key, value }
    }
}

prop_compose! {
    fn prepare()(
        vbucket in vbucket(),
        opaque in opaque(),
        key in key(),
        cas in nonzero64(),
        datatype in datatype(),
        by_seqno in seqno(),
        rev_seqno in num64(),
        flags in num32(),
        expiration in num32(),
        lock_time in num32(),
        nru in any::<u8>(),
        deleted in any::<bool>(),
        durability in select(vec![
            DurabilityLevel::Majority,
            DurabilityLevel::MajorityAndPersistOnMaster,
            DurabilityLevel::PersistToMajority,
        ]),
        value in value(),
    ) -> Prepare {
        Prepare {
            vbucket,
            opaque,
            cas,
            datatype,
            by_seqno,
            rev_seqno,
            flags,
            expiration,
            lock_time,
            nru,
            deleted,
            durability,
            key,
            value,
        }
    }
}

prop_compose! {
    fn seqno_acknowledged()(
        vbucket in vbucket(),
        opaque in opaque(),
        prepared_seqno in num64(),
    ) -> SeqnoAcknowledged {
        SeqnoAcknowledged { vbucket, opaque, prepared_seqno }
    }
}

prop_compose! {
    fn commit()(
        vbucket in vbucket(),
        opaque in opaque(),
        prepared_seqno in seqno(),
        commit_seqno in seqno(),
        key in key(),
    ) -> Commit {
        Commit { vbucket, opaque, prepared_seqno, commit_seqno, key }
    }
}

prop_compose! {
    fn abort()(
        vbucket in vbucket(),
        opaque in opaque(),
        prepared_seqno in seqno(),
        abort_seqno in seqno(),
        key in key(),
    ) -> Abort {
        Abort { vbucket, opaque, prepared_seqno, abort_seqno, key }
    }
}

prop_compose! {
    fn seqno_advanced()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
        seqno in num64(),
    ) -> SeqnoAdvanced {
        SeqnoAdvanced { vbucket, opaque, stream_id, seqno }
    }
}

prop_compose! {
    fn oso_snapshot()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
        flags in flags(),
    ) -> OsoSnapshot {
        OsoSnapshot { vbucket, opaque, stream_id, flags }
    }
}

prop_compose! {
    fn cache_transfer_item()(
        cas in num64(),
        by_seqno in num64(),
        rev_seqno in num64(),
        flags in num32(),
        expiration in num32(),
        datatype in datatype(),
        cache_hint in any::<u8>(),
        // Collection-prefixed: at least two bytes.
        key in blob(2..=MAX_KEY),
        value in blob(0..=128),
    ) -> CacheTransferItem {
        CacheTransferItem {
            cas,
            by_seqno,
            rev_seqno,
            flags,
            expiration,
            datatype,
            cache_hint,
            key,
            value,
        }
    }
}

prop_compose! {
    /// A cache transfer and the items it was built from.
    fn cache_transfer_with_items()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
        items in vec(cache_transfer_item(), 1..4),
    ) -> (CacheTransfer, Vec<CacheTransferItem>) {
        (CacheTransfer::from_items(vbucket, opaque, stream_id, &items).unwrap(), items)
    }
}

fn cache_transfer() -> impl Strategy<Value = CacheTransfer> {
    cache_transfer_with_items().prop_map(|(msg, _)| msg)
}

prop_compose! {
    fn cache_transfer_end()(
        vbucket in vbucket(),
        opaque in opaque(),
        stream_id in opt_sid(),
    ) -> CacheTransferEnd {
        CacheTransferEnd { vbucket, opaque, stream_id }
    }
}

/// The opcodes whose replies are only a status: every DCP opcode without a
/// typed response, and SELECT_BUCKET.
fn status_only_opcode() -> impl Strategy<Value = Opcode> {
    let typed = [
        Opcode::DcpAddStream,
        Opcode::DcpStreamReq,
        Opcode::DcpGetFailoverLog,
    ];
    let opcodes: Vec<Opcode> = (0x50..=0x67)
        .map(Opcode::from_raw)
        .filter(|op| !typed.contains(op))
        .chain([Opcode::SelectBucket])
        .collect();
    select(opcodes)
}

prop_compose! {
    fn status_response()(
        opcode in status_only_opcode(),
        status in status(),
        opaque in opaque(),
        cas in num64(),
        datatype in datatype(),
        value in value(),
    ) -> StatusResponse {
        StatusResponse { opcode, status, opaque, cas, datatype, value }
    }
}

// ---------------------------------------------------------------------------
// Handshake and client command strategies
// ---------------------------------------------------------------------------

fn hello_features() -> impl Strategy<Value = Vec<HelloFeature>> {
    let feature = prop_oneof![0u16..=0x28, any::<u16>()].prop_map(HelloFeature::from_raw);
    vec(feature, 0..8)
}

prop_compose! {
    fn hello()(
        opaque in opaque(),
        agent in blob(0..=MAX_KEY),
        features in hello_features(),
    ) -> Hello {
        Hello { opaque, agent, features }
    }
}

prop_compose! {
    fn hello_error()(
        status in error_status(),
        opaque in opaque(),
        error_body in error_body(),
    ) -> HelloResponse {
        HelloResponse { status, opaque, features: Vec::new(), error_body }
    }
}

fn hello_response() -> impl Strategy<Value = HelloResponse> {
    prop_oneof![
        (opaque(), hello_features()).prop_map(|(o, features)| HelloResponse::success(o, features)),
        hello_error(),
    ]
}

prop_compose! {
    fn sasl_list_mechs()(opaque in opaque()) -> SaslListMechs {
        SaslListMechs { opaque }
    }
}

prop_compose! {
    fn sasl_list_mechs_response()(
        status in status(),
        opaque in opaque(),
        mechanisms in prop_oneof![
            Just(Bytes::from_static(b"SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN")),
            error_body(),
        ],
    ) -> SaslListMechsResponse {
        SaslListMechsResponse { status, opaque, mechanisms }
    }
}

/// A SASL mechanism name (required by the decoder).
fn sasl_mechanism() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        select(vec!["PLAIN", "SCRAM-SHA512", "SCRAM-SHA1"]).prop_map(Bytes::from),
        key(),
    ]
}

prop_compose! {
    fn sasl_auth()(
        opaque in opaque(),
        mechanism in sasl_mechanism(),
        data in blob(0..=128),
    ) -> SaslAuth {
        SaslAuth { opaque, mechanism, data }
    }
}

prop_compose! {
    fn sasl_step()(
        opaque in opaque(),
        mechanism in sasl_mechanism(),
        data in blob(0..=128),
    ) -> SaslStep {
        SaslStep { opaque, mechanism, data }
    }
}

prop_compose! {
    fn sasl_response()(
        opcode in select(vec![Opcode::SaslAuth, Opcode::SaslStep]),
        status in prop_oneof![Just(Status::AuthContinue), status()],
        opaque in opaque(),
        data in prop_oneof![blob(0..=128), error_body()],
    ) -> SaslResponse {
        SaslResponse { opcode, status, opaque, data }
    }
}

prop_compose! {
    fn select_bucket()(opaque in opaque(), bucket in key()) -> SelectBucket {
        SelectBucket { opaque, bucket }
    }
}

prop_compose! {
    fn get_error_map()(opaque in opaque(), version in any::<u16>()) -> GetErrorMap {
        GetErrorMap { opaque, version }
    }
}

prop_compose! {
    fn get_error_map_response()(
        status in status(),
        opaque in opaque(),
        map in prop_oneof![
            Just(Bytes::from_static(br#"{"version":2,"revision":1,"errors":{}}"#)),
            error_body(),
        ],
    ) -> GetErrorMapResponse {
        GetErrorMapResponse { status, opaque, map }
    }
}

prop_compose! {
    fn get_cluster_config()(
        opaque in opaque(),
        known in option::of((any::<i64>(), any::<i64>())),
    ) -> GetClusterConfig {
        let known = known.map(|(epoch, revision)| KnownVersion { epoch, revision });
        GetClusterConfig { opaque, known }
    }
}

prop_compose! {
    fn get_cluster_config_response()(
        status in status(),
        opaque in opaque(),
        datatype in datatype(),
        config in value(),
    ) -> GetClusterConfigResponse {
        GetClusterConfigResponse { status, opaque, datatype, config }
    }
}

/// GET_ALL_VB_SEQNOS's optional filter: a vbucket state (0 = any, up to
/// 4 = dead), then a collection id, which needs a state.
fn vb_seqnos_filter() -> impl Strategy<Value = (Option<u32>, Option<u32>)> {
    prop_oneof![
        Just((None, None)),
        (0u32..=4).prop_map(|state| (Some(state), None)),
        (0u32..=4, num32()).prop_map(|(state, cid)| (Some(state), Some(cid))),
    ]
}

prop_compose! {
    fn get_all_vb_seqnos()(
        opaque in opaque(),
        (state, collection_id) in vb_seqnos_filter(),
    ) -> GetAllVbSeqnos {
        GetAllVbSeqnos { opaque, state, collection_id }
    }
}

prop_compose! {
    fn get_all_vb_seqnos_error()(
        status in error_status(),
        opaque in opaque(),
        error_body in error_body(),
    ) -> GetAllVbSeqnosResponse {
        GetAllVbSeqnosResponse { status, opaque, entries: Vec::new(), error_body }
    }
}

fn get_all_vb_seqnos_response() -> impl Strategy<Value = GetAllVbSeqnosResponse> {
    prop_oneof![
        (opaque(), vec((any::<u16>(), num64()), 0..16))
            .prop_map(|(o, entries)| GetAllVbSeqnosResponse::success(o, entries)),
        get_all_vb_seqnos_error(),
    ]
}

prop_compose! {
    fn stat()(
        opaque in opaque(),
        group in blob(0..=MAX_KEY),
        value in prop_oneof![Just(Bytes::new()), blob(1..=128)],
    ) -> Stat {
        Stat { opaque, group, value }
    }
}

prop_compose! {
    fn stat_response()(
        status in status(),
        opaque in opaque(),
        key in blob(0..=MAX_KEY),
        value in value(),
    ) -> StatResponse {
        StatResponse { status, opaque, key, value }
    }
}

prop_compose! {
    fn get_failover_log_request()(
        vbucket in vbucket(),
        opaque in opaque(),
    ) -> GetFailoverLogRequest {
        GetFailoverLogRequest { vbucket, opaque }
    }
}

// ---------------------------------------------------------------------------
// Any message
// ---------------------------------------------------------------------------

/// Every `Message` variant, equally likely.
fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        // DCP requests
        open().prop_map(Message::Open),
        add_stream().prop_map(Message::AddStream),
        close_stream().prop_map(Message::CloseStream),
        stream_request().prop_map(Message::StreamRequest),
        get_failover_log().prop_map(Message::GetFailoverLog),
        stream_end().prop_map(Message::StreamEnd),
        snapshot_marker().prop_map(Message::SnapshotMarker),
        mutation().prop_map(Message::Mutation),
        deletion().prop_map(Message::Deletion),
        expiration().prop_map(Message::Expiration),
        flush().prop_map(Message::Flush),
        set_vbucket_state().prop_map(Message::SetVbucketState),
        dcp_noop().prop_map(Message::DcpNoop),
        buffer_ack().prop_map(Message::BufferAck),
        control().prop_map(Message::Control),
        system_event().prop_map(Message::SystemEvent),
        prepare().prop_map(Message::Prepare),
        seqno_acknowledged().prop_map(Message::SeqnoAcknowledged),
        commit().prop_map(Message::Commit),
        abort().prop_map(Message::Abort),
        seqno_advanced().prop_map(Message::SeqnoAdvanced),
        oso_snapshot().prop_map(Message::OsoSnapshot),
        cache_transfer().prop_map(Message::CacheTransfer),
        cache_transfer_end().prop_map(Message::CacheTransferEnd),
        // Client requests
        hello().prop_map(Message::Hello),
        sasl_list_mechs().prop_map(Message::SaslListMechs),
        sasl_auth().prop_map(Message::SaslAuth),
        sasl_step().prop_map(Message::SaslStep),
        select_bucket().prop_map(Message::SelectBucket),
        get_error_map().prop_map(Message::GetErrorMap),
        get_cluster_config().prop_map(Message::GetClusterConfig),
        get_all_vb_seqnos().prop_map(Message::GetAllVbSeqnos),
        stat().prop_map(Message::Stat),
        get_failover_log_request().prop_map(Message::GetFailoverLogRequest),
        // Responses
        add_stream_response().prop_map(Message::AddStreamResponse),
        stream_request_response().prop_map(Message::StreamRequestResponse),
        hello_response().prop_map(Message::HelloResponse),
        sasl_list_mechs_response().prop_map(Message::SaslListMechsResponse),
        get_error_map_response().prop_map(Message::GetErrorMapResponse),
        get_cluster_config_response().prop_map(Message::GetClusterConfigResponse),
        get_all_vb_seqnos_response().prop_map(Message::GetAllVbSeqnosResponse),
        stat_response().prop_map(Message::StatResponse),
        failover_log_response().prop_map(Message::FailoverLogResponse),
        sasl_response().prop_map(Message::SaslResponse),
        status_response().prop_map(Message::StatusResponse),
    ]
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn encode(msg: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).unwrap();
    buf.freeze()
}

/// The message's own `wire_len()`, for the types that have one.
fn wire_len(msg: &Message) -> Option<usize> {
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

/// Feeds `input` to a frame decoder in pieces cut at `cuts` (taken modulo
/// the input length) and decodes every frame.
fn decode_chunked(input: &[u8], cuts: &[usize]) -> Vec<Message> {
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
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            out.push(Message::decode(&frame).unwrap());
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

// With 45 variants, 256 cases would draw each message type about six times:
// the single-message properties run 2048 cases (about 45 per type), the
// sequence property 512 sequences of up to 7 messages.

proptest! {
    #![proptest_config(config(2048))]

    /// encode succeeds, the bytes are exactly one frame (`Frame::parse`
    /// refuses trailing bytes), and it decodes to the same message;
    /// `wire_len()` is the encoded length.
    #[test]
    fn decode_inverts_encode(msg in any_message()) {
        let wire = encode(&msg);
        let frame = Frame::parse(wire.clone()).unwrap();
        prop_assert_eq!(frame.wire_len(), wire.len());
        let decoded = Message::decode(&frame).unwrap();
        prop_assert_eq!(&decoded, &msg);
        if let Some(len) = wire_len(&msg) {
            prop_assert_eq!(len, wire.len());
        }
        if let Message::SystemEvent(event) = &decoded {
            prop_assert!(event.data().is_ok());
        }
    }

    /// Re-encoding a decoded message gives the same bytes.
    #[test]
    fn reencoding_is_byte_identical(msg in any_message()) {
        let wire = encode(&msg);
        let decoded = Message::decode(&Frame::parse(wire.clone()).unwrap()).unwrap();
        prop_assert_eq!(encode(&decoded), wire);
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Concatenated messages decode to the same sequence, whatever the
    /// chunking.
    #[test]
    fn any_chunking_decodes_the_same_messages(
        msgs in vec(any_message(), 0..8),
        cuts in vec(any::<usize>(), 0..24),
    ) {
        let mut input = BytesMut::new();
        for msg in &msgs {
            msg.encode(&mut input).unwrap();
        }
        prop_assert_eq!(&decode_chunked(&input, &cuts), &msgs);
        prop_assert_eq!(&decode_chunked(&input, &[]), &msgs);
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// No strict prefix of a message (in particular, the message less its
    /// last byte) parses as a frame, and the frame decoder, fed one byte at
    /// a time, waits on every one without consuming it.
    #[test]
    fn strict_prefixes_are_refused(msg in any_message()) {
        let wire = encode(&msg);
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        for (len, &byte) in wire.iter().enumerate() {
            let err = Frame::parse(wire.slice(..len)).unwrap_err();
            prop_assert!(
                matches!(err.kind, DecodeErrorKind::Truncated { .. }),
                "prefix of {} bytes: {}", len, err
            );
            prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
            prop_assert_eq!(buf.len(), len);
            buf.extend_from_slice(&[byte]);
        }
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(Message::decode(&frame).unwrap(), msg);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A cache transfer's items come back as they were built.
    #[test]
    fn cache_transfer_items_round_trip((msg, items) in cache_transfer_with_items()) {
        let wire = encode(&Message::CacheTransfer(msg));
        let Message::CacheTransfer(decoded) = Message::decode(&Frame::parse(wire).unwrap()).unwrap()
        else {
            panic!("not a cache transfer");
        };
        prop_assert_eq!(decoded.items().collect::<Vec<_>>(), items);
    }
}

// ---------------------------------------------------------------------------
// Coverage of the strategies
// ---------------------------------------------------------------------------

/// Every `Message` variant and the facets (optional fields in both states,
/// enum cases, flag kinds, ...) its strategy must reach, as [`shape`] names
/// them.
#[rustfmt::skip]
const EXPECTED: &[(&str, &[&str])] = &[
    // DCP requests
    ("Open", &["consumer_name=None", "consumer_name=Some", "flags=known", "flags=unknown"]),
    ("AddStream", &["flags=known", "flags=unknown"]),
    ("CloseStream", &["sid=None", "sid=Some"]),
    ("StreamRequest", &[
        "flags=known", "flags=unknown", "value=None", "value=Some",
        "value.collections", "value.scope", "value.uid", "value.sid", "value.purge_seqno",
        "value.cts",
    ]),
    ("GetFailoverLog", &[]),
    ("StreamEnd", &[
        "sid=None", "sid=Some", "reason=Ok", "reason=Closed", "reason=StateChanged",
        "reason=Disconnected", "reason=Slow", "reason=BackfillFailed", "reason=Rollback",
        "reason=FilterEmpty", "reason=LostPrivileges", "reason=unknown",
    ]),
    ("SnapshotMarker", &[
        "sid=None", "sid=Some", "V1", "V2_0", "V2_2", "flags=known", "flags=unknown", "start=end",
    ]),
    ("Mutation", &[
        "sid=None", "sid=Some", "key=255", "key>255", "value=empty", "value=non-empty",
    ]),
    ("Deletion", &[
        "sid=None", "sid=Some", "delete_time=None", "delete_time=Some",
        "value=empty", "value=non-empty",
    ]),
    ("Expiration", &["sid=None", "sid=Some", "value=empty", "value=non-empty"]),
    ("Flush", &[]),
    ("SetVbucketState", &["Active", "Replica", "Pending", "Dead"]),
    ("DcpNoop", &[]),
    ("BufferAck", &[]),
    ("Control", &[]),
    ("SystemEvent", &[
        "sid=None", "sid=Some", "key=empty", "key=non-empty",
        "BeginCollection/v0", "BeginCollection/v1", "BeginCollection/v2",
        "EndCollection/v0", "EndCollection/v2", "CreateScope/v0", "CreateScope/v2",
        "DropScope/v0", "DropScope/v2", "ModifyCollection/v2",
    ]),
    ("Prepare", &[
        "deleted", "live", "Majority", "MajorityAndPersistOnMaster", "PersistToMajority",
        "value=empty", "value=non-empty",
    ]),
    ("SeqnoAcknowledged", &[]),
    ("Commit", &[]),
    ("Abort", &[]),
    ("SeqnoAdvanced", &["sid=None", "sid=Some"]),
    ("OsoSnapshot", &["sid=None", "sid=Some", "flags=known", "flags=unknown"]),
    ("CacheTransfer", &["sid=None", "sid=Some", "items=1", "items>1"]),
    ("CacheTransferEnd", &["sid=None", "sid=Some"]),
    // Client requests
    ("Hello", &["agent=empty", "agent=non-empty", "features=empty", "features=non-empty"]),
    ("SaslListMechs", &[]),
    ("SaslAuth", &["data=empty", "data=non-empty"]),
    ("SaslStep", &["data=empty", "data=non-empty"]),
    ("SelectBucket", &[]),
    ("GetErrorMap", &[]),
    ("GetClusterConfig", &["known=None", "known=Some"]),
    ("GetAllVbSeqnos", &[
        "state=None", "state=Some", "collection_id=None", "collection_id=Some",
    ]),
    ("Stat", &["value=empty", "value=non-empty"]),
    ("GetFailoverLogRequest", &[]),
    // Responses
    ("AddStreamResponse", &["status=success", "status=error", "body=empty", "body=non-empty"]),
    ("StreamRequestResponse", &["Accepted", "Rollback", "Failed"]),
    ("HelloResponse", &["status=success", "status=error"]),
    ("SaslListMechsResponse", &["status=success", "status=error"]),
    ("GetErrorMapResponse", &["status=success", "status=error"]),
    ("GetClusterConfigResponse", &["status=success", "status=error"]),
    ("GetAllVbSeqnosResponse", &["status=success", "status=error"]),
    ("StatResponse", &["status=success", "status=error", "key=empty", "key=non-empty"]),
    ("FailoverLogResponse", &[
        "DcpGetFailoverLog", "GetFailoverLog", "status=success", "status=error",
    ]),
    ("SaslResponse", &["SaslAuth", "SaslStep", "status=success", "AuthContinue", "status=error"]),
    ("StatusResponse", &["status=success", "status=error", "SelectBucket", "value=non-empty"]),
];

fn opt<T>(name: &str, field: &Option<T>) -> String {
    let state = if field.is_some() { "Some" } else { "None" };
    format!("{name}={state}")
}

fn sid_facet(stream_id: Option<u16>) -> String {
    opt("sid", &stream_id)
}

fn len(name: &str, bytes: &[u8]) -> String {
    let state = if bytes.is_empty() {
        "empty"
    } else {
        "non-empty"
    };
    format!("{name}={state}")
}

fn flag_kind<F: Flags<Bits = u32>>(flags: &F) -> String {
    let known = F::from_bits(flags.bits()).is_some();
    format!("flags={}", if known { "known" } else { "unknown" })
}

fn status_kind(status: Status) -> String {
    format!(
        "status={}",
        if status.is_success() {
            "success"
        } else {
            "error"
        }
    )
}

/// The variant's name and the facets of this value.
fn shape(msg: &Message) -> (&'static str, Vec<String>) {
    match msg {
        Message::Open(m) => (
            "Open",
            vec![opt("consumer_name", &m.consumer_name), flag_kind(&m.flags)],
        ),
        Message::AddStream(m) => ("AddStream", vec![flag_kind(&m.flags)]),
        Message::CloseStream(m) => ("CloseStream", vec![sid_facet(m.stream_id)]),
        Message::StreamRequest(m) => {
            let mut facets = vec![flag_kind(&m.flags), opt("value", &m.value)];
            if let Some(v) = &m.value {
                let fields = [
                    ("collections", v.collections.is_some()),
                    ("scope", v.scope.is_some()),
                    ("uid", v.uid.is_some()),
                    ("sid", v.sid.is_some()),
                    ("purge_seqno", v.purge_seqno.is_some()),
                    ("cts", v.cts.is_some()),
                ];
                for (field, set) in fields {
                    if set {
                        facets.push(format!("value.{field}"));
                    }
                }
            }
            ("StreamRequest", facets)
        }
        Message::GetFailoverLog(_) => ("GetFailoverLog", vec![]),
        Message::StreamEnd(m) => {
            let reason = format!("reason={}", m.reason.name().unwrap_or("unknown"));
            ("StreamEnd", vec![sid_facet(m.stream_id), reason])
        }
        Message::SnapshotMarker(m) => {
            let format = match m.format {
                MarkerFormat::V1 => "V1",
                MarkerFormat::V2_0 { .. } => "V2_0",
                MarkerFormat::V2_2 { .. } => "V2_2",
                _ => "unknown format",
            };
            let mut facets = vec![sid_facet(m.stream_id), format.into(), flag_kind(&m.flags)];
            if m.start == m.end {
                facets.push("start=end".into());
            }
            ("SnapshotMarker", facets)
        }
        Message::Mutation(m) => {
            let mut facets = vec![sid_facet(m.stream_id), len("value", &m.value)];
            match m.key.len() {
                255 => facets.push("key=255".into()),
                256.. => facets.push("key>255".into()),
                _ => {}
            }
            ("Mutation", facets)
        }
        Message::Deletion(m) => (
            "Deletion",
            vec![
                sid_facet(m.stream_id),
                opt("delete_time", &m.delete_time),
                len("value", &m.value),
            ],
        ),
        Message::Expiration(m) => (
            "Expiration",
            vec![sid_facet(m.stream_id), len("value", &m.value)],
        ),
        Message::Flush(_) => ("Flush", vec![]),
        Message::SetVbucketState(m) => (
            "SetVbucketState",
            vec![m.state.name().unwrap_or("unknown").into()],
        ),
        Message::DcpNoop(_) => ("DcpNoop", vec![]),
        Message::BufferAck(_) => ("BufferAck", vec![]),
        Message::Control(_) => ("Control", vec![]),
        Message::SystemEvent(m) => {
            let event = format!("{}/v{}", m.event.name().unwrap_or("unknown"), m.version);
            (
                "SystemEvent",
                vec![sid_facet(m.stream_id), len("key", &m.key), event],
            )
        }
        Message::Prepare(m) => {
            let durability = match m.durability {
                DurabilityLevel::Majority => "Majority",
                DurabilityLevel::MajorityAndPersistOnMaster => "MajorityAndPersistOnMaster",
                DurabilityLevel::PersistToMajority => "PersistToMajority",
                _ => "unknown durability",
            };
            let deleted = if m.deleted { "deleted" } else { "live" };
            (
                "Prepare",
                vec![deleted.into(), durability.into(), len("value", &m.value)],
            )
        }
        Message::SeqnoAcknowledged(_) => ("SeqnoAcknowledged", vec![]),
        Message::Commit(_) => ("Commit", vec![]),
        Message::Abort(_) => ("Abort", vec![]),
        Message::SeqnoAdvanced(m) => ("SeqnoAdvanced", vec![sid_facet(m.stream_id)]),
        Message::OsoSnapshot(m) => (
            "OsoSnapshot",
            vec![sid_facet(m.stream_id), flag_kind(&m.flags)],
        ),
        Message::CacheTransfer(m) => {
            let items = if m.items().count() == 1 {
                "items=1"
            } else {
                "items>1"
            };
            ("CacheTransfer", vec![sid_facet(m.stream_id), items.into()])
        }
        Message::CacheTransferEnd(m) => ("CacheTransferEnd", vec![sid_facet(m.stream_id)]),
        Message::Hello(m) => {
            let features = if m.features.is_empty() {
                "features=empty"
            } else {
                "features=non-empty"
            };
            ("Hello", vec![len("agent", &m.agent), features.into()])
        }
        Message::SaslListMechs(_) => ("SaslListMechs", vec![]),
        Message::SaslAuth(m) => ("SaslAuth", vec![len("data", &m.data)]),
        Message::SaslStep(m) => ("SaslStep", vec![len("data", &m.data)]),
        Message::SelectBucket(_) => ("SelectBucket", vec![]),
        Message::GetErrorMap(_) => ("GetErrorMap", vec![]),
        Message::GetClusterConfig(m) => ("GetClusterConfig", vec![opt("known", &m.known)]),
        Message::GetAllVbSeqnos(m) => (
            "GetAllVbSeqnos",
            vec![
                opt("state", &m.state),
                opt("collection_id", &m.collection_id),
            ],
        ),
        Message::Stat(m) => ("Stat", vec![len("value", &m.value)]),
        Message::GetFailoverLogRequest(_) => ("GetFailoverLogRequest", vec![]),
        Message::AddStreamResponse(m) => (
            "AddStreamResponse",
            vec![status_kind(m.status), len("body", &m.error_body)],
        ),
        Message::StreamRequestResponse(m) => {
            let outcome = match m.outcome {
                StreamRequestOutcome::Accepted(_) => "Accepted",
                StreamRequestOutcome::Rollback(_) => "Rollback",
                StreamRequestOutcome::Failed { .. } => "Failed",
                _ => "unknown outcome",
            };
            ("StreamRequestResponse", vec![outcome.into()])
        }
        Message::HelloResponse(m) => ("HelloResponse", vec![status_kind(m.status)]),
        Message::SaslListMechsResponse(m) => ("SaslListMechsResponse", vec![status_kind(m.status)]),
        Message::GetErrorMapResponse(m) => ("GetErrorMapResponse", vec![status_kind(m.status)]),
        Message::GetClusterConfigResponse(m) => {
            ("GetClusterConfigResponse", vec![status_kind(m.status)])
        }
        Message::GetAllVbSeqnosResponse(m) => {
            ("GetAllVbSeqnosResponse", vec![status_kind(m.status)])
        }
        Message::StatResponse(m) => (
            "StatResponse",
            vec![status_kind(m.status), len("key", &m.key)],
        ),
        Message::FailoverLogResponse(m) => (
            "FailoverLogResponse",
            vec![
                m.opcode.name().unwrap_or("unknown").into(),
                status_kind(m.status),
            ],
        ),
        Message::SaslResponse(m) => {
            let status = if m.is_continue() {
                "AuthContinue".into()
            } else {
                status_kind(m.status)
            };
            (
                "SaslResponse",
                vec![m.opcode.name().unwrap_or("unknown").into(), status],
            )
        }
        Message::StatusResponse(m) => {
            let mut facets = vec![status_kind(m.status), len("value", &m.value)];
            if m.opcode == Opcode::SelectBucket {
                facets.push("SelectBucket".into());
            }
            ("StatusResponse", facets)
        }
        other => panic!(
            "{other:?}: a Message variant this test does not know; add it to shape(), EXPECTED and any_message()"
        ),
    }
}

/// Draws from `any_message()` with a fixed seed until every variant and
/// every expected facet was seen.
#[test]
fn every_variant_and_facet_is_generated() {
    const MAX_DRAWS: usize = 20_000;
    let mut missing: BTreeMap<&str, BTreeSet<&str>> = EXPECTED
        .iter()
        .map(|(name, facets)| (*name, facets.iter().copied().collect()))
        .collect();
    assert_eq!(
        missing.len(),
        45,
        "EXPECTED names every Message variant once"
    );
    let mut runner = TestRunner::new(config(1));
    let strategy = any_message();
    let mut draws = 0;
    while !missing.is_empty() && draws < MAX_DRAWS {
        draws += 1;
        let msg = strategy.new_tree(&mut runner).unwrap().current();
        let (name, facets) = shape(&msg);
        if let Some(left) = missing.get_mut(name) {
            for facet in &facets {
                left.remove(facet.as_str());
            }
            if left.is_empty() {
                missing.remove(name);
            }
        } else {
            assert!(
                EXPECTED.iter().any(|(n, _)| *n == name),
                "{name} is missing from EXPECTED"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "not generated within {MAX_DRAWS} draws: {missing:?}"
    );
}
