//! FlatBuffers system events over 127.0.0.1 through the blocking adapter:
//! a collection created, modified (max TTL, history) and dropped while
//! every vbucket streams; each vbucket's events arrive as version-2 values,
//! typed, in that order, and its manifest view ends where the bucket's
//! manifest is.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dcp_blocking::{Connection, Server};
use dcp_proto::consumer::{CollectionsChange, Event, ManifestView, StreamStart};

const STEP: Duration = Duration::from_secs(20);
const VBS: u16 = 2;

#[test]
fn a_collection_created_modified_and_dropped_arrives_typed() {
    let server = Server::bind("127.0.0.1:0", node_config(VBS)).unwrap();
    let config = consumer_config("blocking:flatbuffers")
        .with_collections(true)
        .with_flatbuffers_system_events(true);
    let mut conn = Connection::connect(server.local_addr(), config).unwrap();
    assert!(conn.negotiated().unwrap().flatbuffers_system_events);
    for vb in 0..VBS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    let rooms = server.with_node(|node| {
        let wall = node.wall_clock(Instant::now());
        node.bucket_mut()
            .create_collection("_default", "rooms", None, wall)
            .unwrap()
            .id
    });
    let mut views = vec![ManifestView::default(); usize::from(VBS)];
    let mut changes: Vec<Vec<CollectionsChange>> = vec![Vec::new(); usize::from(VBS)];
    let mut step = 0;
    let deadline = Instant::now() + STEP;
    while changes.iter().any(|c| c.len() < 3) {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_event_timeout(left).unwrap() {
            Some(Event::SystemEvent(e, _)) => {
                assert_eq!(e.version, 2);
                let vb = usize::from(e.vbucket);
                changes[vb].push(views[vb].apply(&e).unwrap());
            }
            Some(Event::StreamFailed { status, .. }) => panic!("stream refused: {status}"),
            Some(_) => {}
            None => panic!("timed out at step {step}: {changes:?}"),
        }
        let all_saw = |n: usize| changes.iter().all(|c| c.len() >= n);
        if step == 0 && all_saw(1) {
            step = 1;
            server.with_node(|node| {
                let wall = node.wall_clock(Instant::now());
                node.bucket_mut()
                    .modify_collection("_default", "rooms", Some(Some(30)), Some(true), wall)
                    .unwrap();
            });
        } else if step == 1 && all_saw(2) {
            step = 2;
            server.with_node(|node| {
                let wall = node.wall_clock(Instant::now());
                node.bucket_mut()
                    .drop_collection("_default", "rooms", wall)
                    .unwrap();
            });
        }
    }
    let uid = server.with_node(|node| node.bucket().manifest().uid());
    for (vb, seen) in changes.iter().enumerate() {
        assert!(
            matches!(
                &seen[..],
                [
                    CollectionsChange::CollectionCreated { collection: a, max_ttl: None, .. },
                    CollectionsChange::CollectionModified { collection: b, max_ttl: Some(30), history: true, .. },
                    CollectionsChange::CollectionDropped { collection: c, .. },
                ] if [*a, *b, *c] == [rooms; 3]
            ),
            "vb {vb}: {seen:?}"
        );
        assert_eq!(views[vb].uid(), uid);
        assert!(!views[vb].has_collection(rooms));
    }
    server.shutdown();
}
