//! A collection-filtered stream over 127.0.0.1: our consumer (HELLO
//! Collections, a `collections` filter) against our server while the
//! manifest changes; the view equals the bucket's documents of that
//! collection, and dropping it ends every stream FilterEmpty.

mod common;

use std::time::Duration;

use common::*;
use dcp_tokio::Connection;
use dcp_tokio::dcp_proto::bucket::WriteOptions;
use dcp_tokio::dcp_proto::consumer::{Event, StreamFilter, StreamStart};
use dcp_tokio::dcp_proto::msg::{DEFAULT_COLLECTION, StreamEndReason};
use dcp_tokio::dcp_proto::testing::{MaterializedView, live_documents_in};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);
const VBS: u16 = 4;

fn write(server: &TestServer, collection: u32, from: u64, n: u64) {
    server.handle.with_bucket(|bucket, wall| {
        for i in from..from + n {
            let key = format!("key-{}", i % 31);
            bucket
                .set_in(
                    collection,
                    key.as_bytes(),
                    format!("{{\"i\":{i}}}"),
                    WriteOptions::new(),
                    wall,
                )
                .unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_stream_follows_its_collection_until_dropped() {
    let server = TestServer::start(node_config(VBS)).await;
    let hotels = server.handle.with_bucket(|bucket, wall| {
        bucket.create_scope("inventory", wall).unwrap();
        bucket
            .create_collection("inventory", "hotels", None, wall)
            .unwrap()
            .id
    });
    write(&server, hotels, 0, 100);
    write(&server, DEFAULT_COLLECTION, 0, 100);

    let config = consumer_config("t:collections")
        .with_auto_ack(true)
        .with_collections(true);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    for vb in 0..VBS {
        conn.open_filtered_stream(
            vb,
            StreamStart::Beginning,
            None,
            StreamFilter::Collections(vec![hotels]),
        )
        .unwrap();
    }
    let mut view = MaterializedView::with_collections();
    let is_hotels = |c: u32| c == hotels;
    let caught_up = |server: &TestServer, view: &MaterializedView| {
        server.handle.with_bucket(|bucket, _| {
            (0..VBS).all(|vb| view.live_all(vb) == live_documents_in(bucket, vb, is_hotels))
        })
    };
    // Everything so far, then writes made while streaming.
    let mut round = 0;
    let mut ends = Vec::new();
    while ends.len() < usize::from(VBS) {
        let event = timeout(STEP, conn.next_event())
            .await
            .expect("no event in time")
            .unwrap()
            .expect("connection closed");
        view.apply(&event).unwrap();
        match event {
            Event::StreamEnded {
                vbucket, reason, ..
            } => ends.push((vbucket, reason)),
            Event::StreamFailed { status, .. } => panic!("stream refused: {status}"),
            _ => {}
        }
        if conn.pending_events() == 0 && caught_up(&server, &view) {
            round += 1;
            match round {
                1 | 2 => {
                    write(&server, hotels, 1000 * round, 40);
                    write(&server, DEFAULT_COLLECTION, 1000 * round, 40);
                }
                3 => server.handle.with_bucket(|bucket, wall| {
                    bucket.drop_collection("inventory", "hotels", wall).unwrap();
                }),
                _ => {}
            }
        }
    }
    assert!(round >= 3, "caught up {round} times");
    ends.sort();
    assert_eq!(
        ends,
        (0..VBS)
            .map(|vb| (vb, StreamEndReason::FilterEmpty))
            .collect::<Vec<_>>()
    );
    // Only the filtered collection ever arrived, and its drop emptied it.
    assert!(view.changes > 0);
    assert!((0..VBS).all(|vb| view.live_all(vb).is_empty()));
    assert_eq!(view.system_events, 2 * u64::from(VBS));
    server.stop().await;
}

/// With `flatbuffers_system_events`: a collection created, modified (max
/// TTL, history) and dropped while every vbucket streams; each vbucket's
/// events arrive typed in that order, its manifest view follows the
/// bucket's manifest, documents written after the modify carry an expiry
/// within the new max TTL, and the checkpoint holds the last manifest uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatbuffers_events_follow_a_collection_through_create_modify_and_drop() {
    use dcp_tokio::dcp_proto::consumer::{CollectionsChange, ManifestView};

    let server = TestServer::start(node_config(VBS)).await;
    let config = consumer_config("t:flatbuffers")
        .with_auto_ack(true)
        .with_collections(true)
        .with_flatbuffers_system_events(true);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    assert!(conn.negotiated().unwrap().flatbuffers_system_events);
    for vb in 0..VBS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    let (scope, rooms) = server.handle.with_bucket(|bucket, wall| {
        let scope = bucket.create_scope("inventory", wall).unwrap();
        let rooms = bucket
            .create_collection("inventory", "rooms", None, wall)
            .unwrap()
            .id;
        (scope, rooms)
    });
    write(&server, rooms, 0, 40);

    let mut views = vec![ManifestView::default(); usize::from(VBS)];
    let mut changes: Vec<Vec<CollectionsChange>> = vec![Vec::new(); usize::from(VBS)];
    let mut modify_seqno = vec![None; usize::from(VBS)];
    let mut capped = 0;
    let mut step = 0;
    let all_saw =
        |changes: &[Vec<CollectionsChange>], n: usize| changes.iter().all(|c| c.len() >= n);
    while !all_saw(&changes, 4) {
        let event = timeout(STEP, conn.next_event())
            .await
            .expect("no event in time")
            .unwrap()
            .expect("connection closed");
        match &event {
            Event::SystemEvent(e, _) => {
                assert_eq!(e.version, 2, "FlatBuffers values");
                let vb = usize::from(e.vbucket);
                let change = views[vb].apply(e).unwrap();
                if matches!(change, CollectionsChange::CollectionModified { .. }) {
                    modify_seqno[vb] = Some(e.by_seqno);
                    // The view has the new settings, as the bucket does.
                    let info = views[vb].collection(rooms).unwrap();
                    let entry = server.handle.with_bucket(|bucket, _| {
                        bucket.manifest().collection(rooms).unwrap().clone()
                    });
                    assert_eq!((info.max_ttl, info.history), (entry.max_ttl, entry.history));
                }
                changes[vb].push(change);
            }
            Event::Mutation(m, _)
                if modify_seqno[usize::from(m.vbucket)].is_some_and(|s| m.by_seqno > s) =>
            {
                let wall = server.handle.with_bucket(|_, wall| wall);
                let now = wall
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                assert!(m.expiration > 0 && u64::from(m.expiration) <= now + 30);
                capped += 1;
            }
            Event::StreamFailed { status, .. } => panic!("stream refused: {status}"),
            _ => {}
        }
        if conn.pending_events() == 0 {
            if step == 0 && all_saw(&changes, 2) {
                step = 1;
                server.handle.with_bucket(|bucket, wall| {
                    bucket
                        .modify_collection("inventory", "rooms", Some(Some(30)), Some(true), wall)
                        .unwrap();
                });
            } else if step == 1 && all_saw(&changes, 3) {
                step = 2;
                write(&server, rooms, 100, 40);
            } else if step == 2 && capped >= 31 {
                step = 3;
                server.handle.with_bucket(|bucket, wall| {
                    bucket.drop_collection("inventory", "rooms", wall).unwrap();
                });
            }
        }
    }
    let uid = server
        .handle
        .with_bucket(|bucket, _| bucket.manifest().uid());
    for (vb, seen) in changes.iter().enumerate() {
        assert!(
            matches!(
                &seen[..],
                [
                    CollectionsChange::ScopeCreated { scope: s, .. },
                    CollectionsChange::CollectionCreated { collection: c1, max_ttl: None, history: false, .. },
                    CollectionsChange::CollectionModified { collection: c2, max_ttl: Some(30), history: true, .. },
                    CollectionsChange::CollectionDropped { collection: c3, .. },
                ] if *s == scope && *c1 == rooms && *c2 == rooms && *c3 == rooms
            ),
            "vb {vb}: {seen:?}"
        );
        assert!(!views[vb].has_collection(rooms));
        assert_eq!(views[vb].uid(), uid);
        assert_eq!(conn.checkpoint().vbuckets[&(vb as u16)].manifest_uid, uid);
    }
    server.stop().await;
}
