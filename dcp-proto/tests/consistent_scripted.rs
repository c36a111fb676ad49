//! Consistent-snapshot delivery against a scripted producer: the exact
//! frame sequences that end a snapshot early (stream end, close), OSO
//! brackets, a producer moving on to the next marker, and end-seqno-bounded
//! streams.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, FrameDecoder, Opcode};
use dcp_proto::consumer::{Consumer, ConsumerConfig, ConsumerError, Event, StreamStart};
use dcp_proto::msg::client::HelloResponse;
use dcp_proto::msg::{
    FailoverEntry, FailoverLog, MarkerFormat, Message, Mutation, OsoFlags, OsoSnapshot,
    SeqnoAdvanced, SnapshotFlags, SnapshotMarker, StatusResponse, StreamEnd, StreamEndReason,
    StreamRequest, StreamRequestResponse,
};

const UUID: u64 = 0xfeed;

/// The producer's end of a consumer under test.
struct Script {
    consumer: Consumer,
    now: Instant,
    decoder: FrameDecoder,
    tx: BytesMut,
}

impl Script {
    fn new(config: ConsumerConfig) -> Self {
        let now = Instant::now();
        Self {
            consumer: Consumer::new(config, "clientnonce0123456789", now).unwrap(),
            now,
            decoder: FrameDecoder::new(),
            tx: BytesMut::new(),
        }
    }

    /// Frames the consumer wants to send, decoded.
    fn sent(&mut self) -> Vec<Message> {
        self.consumer.poll_transmit(&mut self.tx);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.decode(&mut self.tx).unwrap() {
            out.push(Message::decode(&frame).unwrap());
        }
        out
    }

    /// Exactly one frame sent.
    fn one(&mut self) -> Message {
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1, "expected one request, got {sent:#?}");
        sent.remove(0)
    }

    fn feed(&mut self, message: impl Into<Message>) -> Result<(), ConsumerError> {
        let mut rx = BytesMut::new();
        message.into().encode(&mut rx).unwrap();
        self.consumer.handle_input(&mut rx, self.now)
    }

    fn feed_ok(&mut self, message: impl Into<Message>) {
        self.feed(message).unwrap();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.consumer.poll_event()).collect()
    }

    fn advance(&mut self, by: Duration) -> Result<(), ConsumerError> {
        self.now += by;
        self.consumer.handle_timeout(self.now)
    }

    /// Answers a request with a plain success.
    fn ok(&mut self, request: &Message) {
        let (opcode, opaque) = opcode_opaque(request);
        self.feed_ok(StatusResponse::success(opcode, opaque));
    }

    /// Runs the handshake of a consumer without credentials, accepting
    /// every feature and control.
    fn handshake(&mut self) {
        let Message::Hello(hello) = self.one() else {
            panic!("HELLO first")
        };
        self.feed_ok(HelloResponse::success(hello.opaque, hello.features.clone()));
        self.accept_rest();
    }

    /// From SELECT_BUCKET on: accept everything.
    fn accept_rest(&mut self) {
        loop {
            let request = self.one();
            self.ok(&request);
            if let Some(Event::Ready(_)) = self.consumer_peek_ready() {
                break;
            }
        }
    }

    fn consumer_peek_ready(&mut self) -> Option<Event> {
        if self.consumer.is_ready() {
            let events = self.events();
            assert!(
                matches!(events.first(), Some(Event::Ready(_))),
                "{events:?}"
            );
            return events.into_iter().next();
        }
        None
    }

    /// Expects a stream request for `vb`; returns it.
    fn stream_request(&mut self, vb: u16) -> StreamRequest {
        match self.one() {
            Message::StreamRequest(r) if r.vbucket == vb => r,
            other => panic!("expected STREAM_REQ for vb {vb}, got {other:?}"),
        }
    }

    fn accept_stream(&mut self, request: &StreamRequest, log: &[(u64, u64)]) {
        self.feed_ok(StreamRequestResponse::accepted(request.opaque, fl(log)));
    }
}

fn opcode_opaque(m: &Message) -> (Opcode, u32) {
    match m {
        Message::SelectBucket(m) => (Opcode::SelectBucket, m.opaque),
        Message::Open(m) => (Opcode::DcpOpen, m.opaque),
        Message::Control(m) => (Opcode::DcpControl, m.opaque),
        Message::CloseStream(m) => (Opcode::DcpCloseStream, m.opaque),
        other => panic!("no plain success for {other:?}"),
    }
}

fn fl(entries: &[(u64, u64)]) -> FailoverLog {
    FailoverLog::new(
        entries
            .iter()
            .map(|&(vbucket_uuid, seqno)| FailoverEntry {
                vbucket_uuid,
                seqno,
            })
            .collect(),
    )
}

fn marker(vb: u16, opaque: u32, start: u64, end: u64) -> SnapshotMarker {
    SnapshotMarker {
        vbucket: vb,
        opaque,
        stream_id: None,
        start,
        end,
        flags: SnapshotFlags::MEMORY,
        format: MarkerFormat::V1,
    }
}

fn mutation(vb: u16, opaque: u32, seqno: u64, key: &str) -> Mutation {
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
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"{}"),
    }
}

/// A ready consumer with an open stream on vb 0 from the beginning.
fn streaming(config: ConsumerConfig) -> (Script, u32) {
    let mut s = Script::new(config);
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let req = s.stream_request(0);
    s.accept_stream(&req, &[(UUID, 0)]);
    let events = s.events();
    assert!(
        matches!(events[..], [Event::StreamOpened { vbucket: 0, .. }]),
        "{events:?}"
    );
    (s, req.opaque)
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new("test:1", "default").with_consistent_snapshots(1 << 20)
}

fn changes(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(Event::seqno).collect()
}

fn end(opaque: u32, reason: StreamEndReason) -> StreamEnd {
    StreamEnd {
        vbucket: 0,
        opaque,
        stream_id: None,
        reason,
    }
}

#[test]
fn changes_wait_for_the_snapshot_end() {
    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 3));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.feed_ok(mutation(0, opaque, 2, "b"));
    assert!(s.events().is_empty());
    assert_eq!(s.consumer.stream_stats(0).unwrap().held_events, 3);
    s.feed_ok(mutation(0, opaque, 3, "c"));
    let events = s.events();
    assert!(matches!(events[0], Event::SnapshotMarker(..)));
    assert_eq!(changes(&events), [1, 2, 3]);
    assert!(matches!(
        events.last(),
        Some(Event::SnapshotComplete {
            vbucket: 0,
            start: 1,
            end: 3
        })
    ));
    // Held credit was returned as it was held: the events carry none.
    assert!(events.iter().all(|e| e.credit().bytes() == 0));
}

#[test]
fn a_stream_end_mid_snapshot_discards_and_resume_asks_again() {
    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 2));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.feed_ok(mutation(0, opaque, 2, "b"));
    s.events();
    s.feed_ok(marker(0, opaque, 3, 6));
    s.feed_ok(mutation(0, opaque, 3, "c"));
    s.feed_ok(mutation(0, opaque, 4, "d"));
    s.feed_ok(end(opaque, StreamEndReason::StateChanged));
    let events = s.events();
    assert!(
        matches!(
            events[..],
            [Event::StreamEnded {
                reason: StreamEndReason::StateChanged,
                ..
            }]
        ),
        "{events:?}"
    );
    let stats = s.consumer.stats();
    assert_eq!((stats.snapshots_discarded, stats.held_bytes), (1, 0));
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 2);
    s.consumer
        .open_stream(0, StreamStart::Resume, None)
        .unwrap();
    let req = s.stream_request(0);
    assert_eq!(
        (req.start_seqno, req.snap_start_seqno, req.snap_end_seqno),
        (2, 2, 2),
        "resumes before the discarded snapshot"
    );
}

#[test]
fn a_close_mid_snapshot_discards() {
    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 4));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.consumer.close_stream(0).unwrap();
    let close = s.one();
    assert!(matches!(close, Message::CloseStream(_)));
    s.ok(&close);
    s.feed_ok(mutation(0, opaque, 2, "b"));
    s.feed_ok(end(opaque, StreamEndReason::Closed));
    let events = s.events();
    assert!(changes(&events).is_empty(), "{events:?}");
    assert!(matches!(events.last(), Some(Event::StreamEnded { .. })));
    assert_eq!(s.consumer.stats().held_bytes, 0);
}

#[test]
fn the_next_marker_completes_the_previous_snapshot() {
    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 10));
    s.feed_ok(mutation(0, opaque, 4, "a"));
    assert!(s.events().is_empty());
    s.feed_ok(marker(0, opaque, 11, 12));
    let events = s.events();
    assert_eq!(changes(&events), [4]);
    assert!(matches!(
        events.last(),
        Some(Event::SnapshotComplete { end: 10, .. })
    ));
}

#[test]
fn an_oso_bracket_is_held_until_its_end() {
    let (mut s, opaque) = streaming(config());
    let oso = |flags| OsoSnapshot {
        vbucket: 0,
        opaque,
        stream_id: None,
        flags,
    };
    s.feed_ok(oso(OsoFlags::START));
    for seqno in [7, 2, 9, 4] {
        s.feed_ok(mutation(0, opaque, seqno, &format!("k{seqno}")));
    }
    s.feed_ok(SeqnoAdvanced {
        vbucket: 0,
        opaque,
        stream_id: None,
        seqno: 12,
    });
    assert!(s.events().is_empty());
    s.feed_ok(oso(OsoFlags::END));
    let events = s.events();
    assert_eq!(changes(&events), [7, 2, 9, 4, 12]);
    assert!(matches!(
        events.last(),
        Some(Event::SnapshotComplete { end: 12, .. })
    ));
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 12);
}

#[test]
fn an_interrupted_oso_bracket_is_discarded() {
    let (mut s, opaque) = streaming(config());
    let oso = |flags| OsoSnapshot {
        vbucket: 0,
        opaque,
        stream_id: None,
        flags,
    };
    s.feed_ok(oso(OsoFlags::START));
    s.feed_ok(mutation(0, opaque, 5, "k"));
    s.feed_ok(end(opaque, StreamEndReason::BackfillFailed));
    let events = s.events();
    assert!(changes(&events).is_empty(), "{events:?}");
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 0);
    s.consumer
        .open_stream(0, StreamStart::Resume, None)
        .unwrap();
    assert_eq!(s.stream_request(0).start_seqno, 0);
}

#[test]
fn an_end_seqno_completes_the_snapshot_holding_it() {
    let mut s = Script::new(config());
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Beginning, Some(3))
        .unwrap();
    let req = s.stream_request(0);
    s.accept_stream(&req, &[(UUID, 0)]);
    s.events();
    let opaque = req.opaque;
    s.feed_ok(marker(0, opaque, 1, 10));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.feed_ok(mutation(0, opaque, 3, "c"));
    let events = s.events();
    assert_eq!(changes(&events), [1, 3]);
    assert!(matches!(
        events.last(),
        Some(Event::SnapshotComplete { end: 3, .. })
    ));
    s.feed_ok(end(opaque, StreamEndReason::Ok));
    assert!(matches!(
        s.events()[..],
        [Event::StreamEnded {
            reason: StreamEndReason::Ok,
            ..
        }]
    ));
}

#[test]
fn a_stream_end_ok_completes_a_short_snapshot() {
    let mut s = Script::new(config());
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Beginning, Some(5))
        .unwrap();
    let req = s.stream_request(0);
    s.accept_stream(&req, &[(UUID, 0)]);
    s.events();
    let opaque = req.opaque;
    s.feed_ok(marker(0, opaque, 1, 10));
    s.feed_ok(mutation(0, opaque, 2, "b"));
    assert!(s.events().is_empty());
    s.feed_ok(end(opaque, StreamEndReason::Ok));
    let events = s.events();
    assert_eq!(changes(&events), [2]);
    assert!(matches!(
        events[events.len() - 2],
        Event::SnapshotComplete { end: 5, .. }
    ));
}

#[test]
fn the_limit_lets_the_largest_snapshot_through() {
    let (mut s, opaque) =
        streaming(ConsumerConfig::new("test:1", "default").with_consistent_snapshots(600));
    s.feed_ok(marker(0, opaque, 1, 100));
    let mut seqno = 0;
    let mut events = Vec::new();
    while events.is_empty() {
        seqno += 1;
        s.feed_ok(mutation(0, opaque, seqno, "key"));
        assert!(s.consumer.stats().held_bytes <= 600);
        events = s.events();
    }
    let Event::SnapshotTooLarge {
        vbucket: 0,
        start: 1,
        end: 100,
        held_bytes,
    } = events[0]
    else {
        panic!("{events:?}")
    };
    assert!(held_bytes <= 600);
    // What was held, then the change that did not fit, with its credit.
    assert_eq!(changes(&events), (1..=seqno).collect::<Vec<_>>());
    assert!(events.last().unwrap().credit().bytes() > 0);
    // The rest passes through; the snapshot still completes.
    s.feed_ok(mutation(0, opaque, 100, "last"));
    let events = s.events();
    assert_eq!(changes(&events), [100]);
    assert!(matches!(
        events[1],
        Event::SnapshotComplete { end: 100, .. }
    ));
    // The next snapshot is held again.
    s.feed_ok(marker(0, opaque, 101, 102));
    s.feed_ok(mutation(0, opaque, 101, "x"));
    assert!(s.events().is_empty());
}
