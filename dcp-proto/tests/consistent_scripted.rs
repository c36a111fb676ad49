//! Consistent-snapshot delivery against a scripted producer: the exact
//! frame sequences that end a snapshot early (stream end, close), OSO
//! brackets, a producer moving on to the next marker, and end-seqno-bounded
//! streams.
#![allow(dead_code)]

use dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
use dcp_proto::msg::{Message, OsoFlags, OsoSnapshot, SeqnoAdvanced, StreamEnd, StreamEndReason};

mod consumer_script;

use consumer_script::*;

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
            end: 3,
            ..
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
        ..
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
