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
