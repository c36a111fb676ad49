//! Non-DCP commands a DCP client needs around the stream: HELLO, SASL,
//! SELECT_BUCKET, GET_ERROR_MAP, GET_CLUSTER_CONFIG, GET_ALL_VB_SEQNOS, STAT,
//! GET_FAILOVER_LOG; and the key-value commands (GET, GAT, SET, ADD, REPLACE,
//! DELETE, APPEND, PREPEND, INCREMENT, DECREMENT, TOUCH).
//!
//! Replies that are only a status (SELECT_BUCKET) decode as
//! [`StatusResponse`](crate::msg::StatusResponse); GET_FAILOVER_LOG's reply
//! is [`FailoverLogResponse`](crate::msg::FailoverLogResponse), shared with
//! the DCP variant.

mod all_vb_seqnos;
mod cluster_config;
mod error_map;
mod failover_log;
mod hello;
mod kv;
mod sasl;
mod select_bucket;
mod server_request;
mod stat;

pub use all_vb_seqnos::{GetAllVbSeqnos, GetAllVbSeqnosResponse, VB_SEQNO_ENTRY_LEN};
pub use cluster_config::{GetClusterConfig, GetClusterConfigResponse, KnownVersion};
pub use error_map::{GetErrorMap, GetErrorMapResponse};
pub use failover_log::GetFailoverLogRequest;
pub use hello::{Hello, HelloFeature, HelloResponse};
pub use kv::{
    Concat, Counter, CounterResponse, Delete, Get, GetAndTouch, GetResponse, MutationResponse,
    MutationToken, Store, Touch,
};
pub use sasl::{SaslAuth, SaslListMechs, SaslListMechsResponse, SaslResponse, SaslStep};
pub use select_bucket::SelectBucket;
pub use server_request::{CLUSTERMAP_CHANGE_NOTIFICATION, ClustermapNotification};
pub use stat::{Stat, StatResponse};

/// Property tests over every consumer-side message type (client commands,
/// DCP requests a consumer sends and their responses): any frame that
/// decodes re-encodes, and the re-encoded frame decodes to the same message.
#[cfg(test)]
mod round_trip_properties {
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{Frame, Opcode};
    use crate::msg::{
        AddStream, AddStreamResponse, BufferAck, CloseStream, Control, FailoverLogResponse,
        GetFailoverLog, Open, SeqnoAcknowledged, StatusResponse, StreamRequest,
        StreamRequestResponse,
    };

    /// Decodes `frame` as `T`; if that works, checks the round trip.
    /// Returns whether it decoded.
    macro_rules! check {
        ($frame:expr, $($ty:ty),+ $(,)?) => {{
            let mut decoded = 0;
            $(
                if let Ok(msg) = <$ty>::decode($frame) {
                    decoded += 1;
                    let mut buf = BytesMut::new();
                    msg.encode(&mut buf).expect(concat!(stringify!($ty), " re-encodes"));
                    let again = Frame::parse(buf.freeze()).expect("one frame");
                    prop_assert_eq!(<$ty>::decode(&again).expect("decodes again"), msg);
                }
            )+
            decoded
        }};
    }

    /// Opcodes under test, with the extras lengths their requests and
    /// responses usually have.
    const OPCODES: [(u8, &[usize], &[usize]); 23] = [
        (0x1f, &[0], &[0]),
        (0x20, &[0], &[0]),
        (0x21, &[0], &[0]),
        (0x22, &[0], &[0]),
        (0x89, &[0], &[0]),
        (0xfe, &[0], &[0]),
        (0xb5, &[0, 16], &[0]),
        (0x48, &[0, 4, 8], &[0]),
        (0x10, &[0], &[0]),
        (0x96, &[0], &[0]),
        (0x50, &[8], &[0]),
        (0x51, &[4], &[0, 4]),
        (0x52, &[0], &[0]),
        (0x53, &[48], &[0]),
        (0x54, &[0], &[0]),
        (0x5d, &[4], &[0]),
        (0x5e, &[0], &[0]),
        (0x61, &[8], &[0]),
        (0x5c, &[0], &[0]),
        (0x56, &[20], &[0]),
        (0x5b, &[1], &[0]),
        (0x00, &[0], &[0]),
        (0xee, &[0], &[0]),
    ];

    fn values() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(any::<u8>(), 0..48),
            1 => (0usize..5).prop_map(|n| vec![0xab; n * 16]),
            1 => (0usize..5).prop_map(|n| vec![0x01; n * 10]),
            2 => prop::sample::select(vec![2usize, 8]).prop_map(|n| vec![0; n]),
            2 => prop::sample::select(vec![
                &br#"{"consumer_name":"c"}"#[..],
                br#"{"consumer_name":1}"#,
                br#"{}"#,
                br#"{"collections":["8","a"],"sid":3,"purge_seqno":"9","cts":{}}"#,
                br#"{"scope":"ffffffff","uid":"0","other":[]}"#,
                br#"{"sid":0}"#,
                b"SCRAM-SHA512 PLAIN",
            ])
            .prop_map(<[u8]>::to_vec),
        ]
    }

    fn frames() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(OPCODES.to_vec()),
            prop_oneof![
                3 => Just(0x80u8),
                1 => Just(0x08),
                3 => Just(0x81),
                1 => Just(0x18),
                1 => Just(0x83),
            ],
            prop_oneof![
                3 => Just(Vec::new()),
                1 => Just(vec![0x22, 0, 7]),
                1 => Just(vec![0x22, 0, 0]),
                1 => prop::collection::vec(any::<u8>(), 0..5),
            ],
            prop_oneof![4 => Just(None), 1 => (0usize..50).prop_map(Some)],
            any::<prop::sample::Index>(),
            prop_oneof![
                1 => Just(Vec::new()),
                1 => Just(b"name".to_vec()),
                1 => prop::collection::vec(any::<u8>(), 0..6),
            ],
            values(),
            prop_oneof![4 => Just(0u8), 2 => Just(1), 1 => any::<u8>()],
            prop_oneof![4 => Just(0u16), 1 => Just(0x21), 1 => Just(0x23), 1 => any::<u16>()],
            prop_oneof![4 => Just(0u64), 1 => any::<u64>()],
            any::<u32>(),
        )
            .prop_map(
                |(
                    (opcode, req_extras, resp_extras),
                    magic,
                    framing,
                    extras_len,
                    pick,
                    key,
                    value,
                    datatype,
                    vb,
                    cas,
                    opaque,
                )| {
                    let flexible = magic & 0x80 == 0;
                    let typical = if magic == 0x80 || magic == 0x08 {
                        req_extras
                    } else {
                        resp_extras
                    };
                    let extras_len = extras_len.unwrap_or(*pick.get(typical));
                    let framing = if flexible { framing } else { Vec::new() };
                    let extras: Vec<u8> = (0..extras_len).map(|i| (i as u8) % 5).collect();
                    let body = framing.len() + extras.len() + key.len() + value.len();
                    let mut f = vec![magic, opcode];
                    if flexible {
                        f.extend_from_slice(&[framing.len() as u8, key.len() as u8]);
                    } else {
                        f.extend_from_slice(&(key.len() as u16).to_be_bytes());
                    }
                    f.extend_from_slice(&[extras.len() as u8, datatype]);
                    f.extend_from_slice(&vb.to_be_bytes());
                    f.extend_from_slice(&(body as u32).to_be_bytes());
                    f.extend_from_slice(&opaque.to_be_bytes());
                    f.extend_from_slice(&cas.to_be_bytes());
                    for section in [framing, extras, key, value] {
                        f.extend_from_slice(&section);
                    }
                    f
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8192))]

        #[test]
        fn decoded_messages_round_trip(bytes in frames()) {
            let Ok(frame) = Frame::parse(Bytes::from(bytes)) else {
                return Ok(());
            };
            let frame = &frame;
            let requests = check!(
                frame, Hello, SaslListMechs, SaslAuth, SaslStep, SelectBucket, GetErrorMap,
                GetClusterConfig, GetAllVbSeqnos, Stat, GetFailoverLogRequest, Open, AddStream,
                CloseStream, StreamRequest, GetFailoverLog, BufferAck, Control,
                SeqnoAcknowledged,
            );
            let responses = check!(
                frame, HelloResponse, SaslListMechsResponse, SaslResponse, GetErrorMapResponse,
                GetClusterConfigResponse, GetAllVbSeqnosResponse, StatResponse,
                AddStreamResponse, StreamRequestResponse, FailoverLogResponse, StatusResponse,
            );
            // A request decodes as at most one type; a response as its typed
            // response and/or the generic StatusResponse.
            prop_assert!(requests <= 1 && responses <= 2);
            prop_assert!(requests == 0 || responses == 0);
            prop_assert!(frame.opcode() != Opcode::Unknown(0xee) || requests == 0);
        }
    }
}
