//! Two streams of each vbucket on one connection (stream ids), over
//! 127.0.0.1 through the blocking adapter: each follows its own collection
//! filter, closing one leaves the other streaming, and both resume from a
//! checkpoint on a new connection without loss or duplicates.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dcp_blocking::{Connection, Server};
use dcp_proto::consumer::{Event, StreamStart};
use dcp_proto::msg::StreamEndReason;
use dcp_proto::producer::Node;
use dcp_proto::session::{Checkpoint, StreamKey};
use dcp_proto::testing::{TwoStreamsPerVbucket as Fixture, ViewsByStreamId};

const STEP: Duration = Duration::from_secs(20);

fn write(node: &mut Node, fixture: &Fixture, from: u64) {
    let wall = node.wall_clock(Instant::now());
    fixture.write(node.bucket_mut(), from, 60, wall).unwrap();
}

/// Takes events until every stream in `streams` caught up.
fn catch_up(
    conn: &mut Connection,
    server: &Server,
    fixture: &Fixture,
    views: &mut ViewsByStreamId,
    streams: &[StreamKey],
) {
    let deadline = Instant::now() + STEP;
    loop {
        let done = server.with_node(|node| {
            streams
                .iter()
                .all(|key| fixture.caught_up(node.bucket(), views, *key))
        });
        if done && conn.consumer().pending_events() == 0 {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_event_timeout(left).unwrap() {
            Some(Event::StreamFailed { status, .. }) => panic!("stream refused: {status}"),
            Some(event) => views.apply(&event).unwrap(),
            None => panic!("timed out catching up {streams:?}"),
        }
    }
}

#[test]
fn two_stream_ids_per_vbucket_follow_their_filters_close_and_resume() {
    let server = Server::bind("127.0.0.1:0", node_config(2)).unwrap();
    let fixture = server.with_node(|node| {
        let wall = node.wall_clock(Instant::now());
        Fixture::create(node.bucket_mut(), wall).unwrap()
    });
    server.with_node(|node| write(node, &fixture, 0));
    let config = || {
        consumer_config("blocking:sids")
            .with_collections(true)
            .with_stream_ids(true)
    };
    let mut conn = Connection::connect(server.local_addr(), config()).unwrap();
    for key in fixture.streams() {
        conn.open_filtered_stream(key, StreamStart::Beginning, None, fixture.filter(key))
            .unwrap();
    }
    let mut views = ViewsByStreamId::default();
    catch_up(&mut conn, &server, &fixture, &mut views, &fixture.streams());
    assert!(views.view(Fixture::HOTELS).unwrap().changes > 0);
    assert!(views.view(Fixture::DEFAULT).unwrap().changes > 0);

    // Closing vbucket 0's hotels stream leaves its default stream going.
    let closed = StreamKey::of(0, Some(Fixture::HOTELS));
    conn.close_stream(closed).unwrap();
    loop {
        let event = conn
            .next_event_timeout(STEP)
            .unwrap()
            .expect("closed in time");
        views.apply(&event).unwrap();
        if let Event::StreamEnded { reason, .. } = event {
            assert_eq!(event.stream_key(), Some(closed));
            assert_eq!(reason, StreamEndReason::Closed);
            break;
        }
    }
    assert!(!conn.consumer().has_stream(closed));
    let frozen = views.live_all(Fixture::HOTELS, 0);
    server.with_node(|node| write(node, &fixture, 100));
    let open: Vec<_> = fixture
        .streams()
        .into_iter()
        .filter(|k| *k != closed)
        .collect();
    catch_up(&mut conn, &server, &fixture, &mut views, &open);
    assert_eq!(views.live_all(Fixture::HOTELS, 0), frozen);
    assert!(server.with_node(|node| !fixture.caught_up(node.bucket(), &views, closed)));

    // Every stream id resumes from the checkpoint on a new connection,
    // the closed one from where it was closed.
    let saved = conn.checkpoint().to_json().unwrap();
    drop(conn);
    let checkpoint = Checkpoint::from_json(&saved).unwrap();
    server.with_node(|node| write(node, &fixture, 200));
    let mut conn = Connection::connect(server.local_addr(), config()).unwrap();
    for key in fixture.streams() {
        let position = checkpoint.position(key).expect("checkpointed").clone();
        conn.open_filtered_stream(
            key,
            StreamStart::Position(position),
            None,
            fixture.filter(key),
        )
        .unwrap();
    }
    catch_up(&mut conn, &server, &fixture, &mut views, &fixture.streams());
    for sid in [Fixture::HOTELS, Fixture::DEFAULT] {
        assert!(views.view(sid).unwrap().rollbacks.is_empty());
    }
    server.shutdown();
}
