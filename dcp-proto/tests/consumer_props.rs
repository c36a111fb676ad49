//! Properties of the consumer over random (valid) producer streams: chunking
//! does not change what comes out, acknowledged bytes never exceed received
//! ones, seqnos strictly increase per stream and every item lies in its
//! snapshot, and the checkpoint always yields a request the producer accepts.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, FrameDecoder, Opcode};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::msg::client::HelloResponse;
use dcp_proto::msg::{
    DcpNoop, Deletion, FailoverEntry, FailoverLog, MarkerFormat, Message, Mutation, SeqnoAdvanced,
    SnapshotFlags, SnapshotMarker, StatusResponse, StreamRequestResponse,
};
use proptest::prelude::*;

/// What the producer does in one step of a random stream.
#[derive(Debug, Clone)]
enum Step {
    /// A snapshot of `items` (seqno gaps, deletions) closed optionally by a
    /// seqno-advanced to its end.
    Snapshot {
        items: Vec<(u64, bool)>,
        gap_after: u64,
        advance: bool,
    },
    Noop,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let snapshot = (
        proptest::collection::vec((1u64..4, any::<bool>()), 1..8),
        0u64..3,
        any::<bool>(),
    )
        .prop_map(|(items, gap_after, advance)| Step::Snapshot {
            items,
            gap_after,
            advance,
        });
    proptest::collection::vec(prop_oneof![8 => snapshot, 1 => Just(Step::Noop)], 1..12)
}

/// The producer's bytes for `steps` on `vb` with stream `opaque`.
fn producer_bytes(steps: &[Step], vb: u16, opaque: u32) -> BytesMut {
    let mut out = BytesMut::new();
    let mut seqno = 0u64;
    let mut noop = 10_000_000u32;
    for step in steps {
        match step {
            Step::Noop => {
                noop += 1;
                DcpNoop { opaque: noop }.encode(&mut out).unwrap();
            }
            Step::Snapshot {
                items,
                gap_after,
                advance,
            } => {
                let start = seqno + 1;
                let end = seqno + items.iter().map(|(gap, _)| gap).sum::<u64>() + gap_after;
                SnapshotMarker {
                    vbucket: vb,
                    opaque,
                    stream_id: None,
                    start,
                    end,
                    flags: SnapshotFlags::MEMORY,
                    format: MarkerFormat::V1,
                }
                .encode(&mut out)
                .unwrap();
                for (gap, delete) in items {
                    seqno += gap;
                    let key = Bytes::from(format!("key-{}", seqno % 5));
                    if *delete {
                        Deletion {
                            vbucket: vb,
                            opaque,
                            stream_id: None,
                            cas: seqno,
                            datatype: Datatype::RAW,
                            by_seqno: seqno,
                            rev_seqno: 2,
                            delete_time: None,
                            key,
                            value: Bytes::new(),
                        }
                        .encode(&mut out)
                        .unwrap();
                    } else {
                        Mutation {
                            vbucket: vb,
                            opaque,
                            stream_id: None,
                            cas: seqno,
                            datatype: Datatype::JSON,
                            by_seqno: seqno,
                            rev_seqno: 1,
                            flags: 0,
                            expiration: 0,
                            lock_time: 0,
                            nru: 0,
                            key,
                            value: Bytes::from(format!("{{\"n\":{seqno}}}")),
                        }
                        .encode(&mut out)
                        .unwrap();
                    }
                }
                if *advance && end > seqno {
                    SeqnoAdvanced {
                        vbucket: vb,
                        opaque,
                        stream_id: None,
                        seqno: end,
                    }
                    .encode(&mut out)
                    .unwrap();
                }
                seqno = end;
            }
        }
    }
    out
}

/// A consumer past its handshake with vb 0 streaming; returns it and the
/// stream's opaque.
fn ready_consumer(config: ConsumerConfig, now: Instant) -> (Consumer, u32) {
    let mut consumer = Consumer::new(config, "nonce", now).unwrap();
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let mut decoder = FrameDecoder::new();
    let mut tx = BytesMut::new();
    loop {
        consumer.poll_transmit(&mut tx);
        let Some(frame) = decoder.decode(&mut tx).unwrap() else {
            panic!("consumer stalled in the handshake")
        };
        let mut rx = BytesMut::new();
        match Message::decode(&frame).unwrap() {
            Message::Hello(h) => HelloResponse::success(h.opaque, h.features).encode(&mut rx),
            Message::StreamRequest(r) => {
                StreamRequestResponse::accepted(
                    r.opaque,
                    FailoverLog::new(vec![FailoverEntry {
                        vbucket_uuid: 7,
                        seqno: 0,
                    }]),
                )
                .encode(&mut rx)
                .unwrap();
                consumer.handle_input(&mut rx, now).unwrap();
                while consumer.poll_event().is_some() {}
                return (consumer, r.opaque);
            }
            other => StatusResponse::success(frame.opcode(), opaque_of(&other)).encode(&mut rx),
        }
        .unwrap();
        consumer.handle_input(&mut rx, now).unwrap();
    }
}

fn opaque_of(m: &Message) -> u32 {
    match m {
        Message::SelectBucket(m) => m.opaque,
        Message::Open(m) => m.opaque,
        Message::Control(m) => m.opaque,
        other => panic!("unexpected {other:?}"),
    }
}

/// Feeds `input` cut at `cuts`, acking each event's credit when `ack` says
/// so; returns the events and the bytes the consumer sent.
fn run(
    input: &[u8],
    cuts: &[usize],
    acks: &[bool],
    config: ConsumerConfig,
) -> (Vec<Event>, Vec<Message>, Consumer) {
    let now = Instant::now();
    let (mut consumer, _) = ready_consumer(config, now);
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut events = Vec::new();
    let mut rx = BytesMut::new();
    let mut at = 0;
    let mut i = 0;
    for point in points {
        rx.extend_from_slice(&input[at..point]);
        at = point;
        consumer.handle_input(&mut rx, now).unwrap();
        while let Some(event) = consumer.poll_event() {
            if acks.get(i % acks.len().max(1)).copied().unwrap_or(true) {
                consumer.ack(event.credit());
            }
            i += 1;
            events.push(event);
        }
        let stats = consumer.stats();
        assert!(stats.acked_bytes <= stats.flow_bytes_received);
    }
    let mut tx = BytesMut::new();
    consumer.poll_transmit(&mut tx);
    let mut decoder = FrameDecoder::new();
    let mut sent = Vec::new();
    while let Some(frame) = decoder.decode(&mut tx).unwrap() {
        sent.push(Message::decode(&frame).unwrap());
    }
    (events, sent, consumer)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chunking_does_not_change_the_outcome(
        steps in steps(),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let input = producer_bytes(&steps, 0, opaque());
        let config = ConsumerConfig::new("p", "b").with_buffer_size(2048);
        let whole = run(&input, &[], &[true], config.clone());
        let chunked = run(&input, &cuts, &[true], config);
        prop_assert_eq!(&whole.0, &chunked.0);
        prop_assert_eq!(whole.2.checkpoint(), chunked.2.checkpoint());
        // Acks may be split differently, but their sum is the same.
        let acked = |sent: &[Message]| -> u64 {
            sent.iter().map(|m| match m {
                Message::BufferAck(a) => u64::from(a.bytes),
                _ => 0,
            }).sum()
        };
        prop_assert_eq!(whole.2.stats().acked_bytes, chunked.2.stats().acked_bytes);
        prop_assert!(acked(&whole.1) <= whole.2.stats().flow_bytes_received);
        // Every noop is answered exactly once, with its opaque.
        let noops: Vec<u32> = steps.iter().scan(10_000_000u32, |n, s| {
            Some(matches!(s, Step::Noop).then(|| { *n += 1; *n }))
        }).flatten().collect();
        let answered: Vec<u32> = chunked.1.iter().filter_map(|m| match m {
            Message::StatusResponse(r) if r.opcode == Opcode::DcpNoop => Some(r.opaque),
            _ => None,
        }).collect();
        prop_assert_eq!(noops, answered);
    }

    #[test]
    fn events_keep_dcp_order_and_checkpoints_resume(
        steps in steps(),
        acks in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        let input = producer_bytes(&steps, 0, opaque());
        let config = ConsumerConfig::new("p", "b").with_buffer_size(1000);
        let (events, _, consumer) = run(&input, &[], &acks, config);
        let mut last = 0u64;
        let mut snapshot = None;
        for event in &events {
            match event {
                Event::SnapshotMarker(m, _) => {
                    prop_assert!(m.start <= m.end);
                    prop_assert!(m.start > last);
                    snapshot = Some((m.start, m.end));
                }
                Event::SeqnoAdvanced(m, _) => {
                    let (_, end) = snapshot.unwrap();
                    prop_assert!(m.seqno <= end && m.seqno >= last);
                    last = m.seqno;
                }
                other => if let Some(seqno) = other.seqno() {
                    let (start, end) = snapshot.expect("items follow a marker");
                    prop_assert!(seqno > last, "seqnos strictly increase");
                    prop_assert!(start <= seqno && seqno <= end, "item within its snapshot");
                    last = seqno;
                }
            }
        }
        // The checkpoint's resume request satisfies the producer's range rules.
        let resume = consumer.position(0).unwrap().resume();
        prop_assert!(resume.snap_start_seqno <= resume.start_seqno);
        prop_assert!(resume.start_seqno <= resume.snap_end_seqno);
        prop_assert_eq!(resume.start_seqno, last);
        // Once everything is acknowledged and the timer fired, nothing is left.
        let stats = consumer.stats();
        prop_assert!(stats.acked_bytes <= stats.flow_bytes_received);
    }

    #[test]
    fn full_acks_drain_the_window(steps in steps()) {
        let input = producer_bytes(&steps, 0, opaque());
        let config = ConsumerConfig::new("p", "b").with_buffer_size(1000);
        let (_, _, mut consumer) = run(&input, &[], &[true], config);
        let later = Instant::now() + Duration::from_secs(5);
        consumer.handle_timeout(later).unwrap();
        let stats = consumer.stats();
        prop_assert_eq!(stats.unacked_bytes, 0);
        prop_assert_eq!(stats.acked_bytes, stats.flow_bytes_received);
    }
}

/// The stream opaque the ready consumer gets (deterministic).
fn opaque() -> u32 {
    ready_consumer(
        ConsumerConfig::new("p", "b").with_buffer_size(2048),
        Instant::now(),
    )
    .1
}
