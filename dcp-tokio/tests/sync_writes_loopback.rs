//! Sync writes over 127.0.0.1: a consumer with `enable_sync_writes`
//! streams prepares that stay pending, then their commits and aborts,
//! acknowledges the prepares it holds (the producer records it), and ends
//! with a materialized view equal to the bucket, pending prepares
//! included.

mod common;

use std::time::Duration;

use common::*;
use dcp_tokio::Connection;
use dcp_tokio::dcp_proto::bucket::{StoreMode, SyncWriteMode, WriteOptions};
use dcp_tokio::dcp_proto::codec::DurabilityLevel;
use dcp_tokio::dcp_proto::consumer::{Event, StreamStart};
use dcp_tokio::dcp_proto::testing::{MaterializedView, high_seqnos};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);
const VBS: u16 = 4;

async fn next(conn: &mut Connection) -> Event {
    timeout(STEP, conn.next_event())
        .await
        .expect("no event in time")
        .expect("connection failed")
        .expect("connection closed")
}

/// Applies events until the view reached every vbucket's high seqno.
async fn catch_up(conn: &mut Connection, view: &mut MaterializedView, server: &TestServer) {
    let targets = server.handle.with_node(|n| high_seqnos(n.bucket()));
    while !view.reached(&targets) {
        let event = next(conn).await;
        view.apply(&event).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepares_commits_and_aborts_reach_a_sync_writes_consumer() {
    let server = TestServer::start(node_config(VBS)).await;
    server.write(0, 100);
    server
        .handle
        .with_bucket(|b, _| b.set_sync_write_mode(SyncWriteMode::Hold));
    let durable = |key: String| {
        server.handle.with_bucket(move |b, wall| {
            b.durable_store(
                StoreMode::Set,
                key.as_bytes(),
                format!("{{\"durable\":\"{key}\"}}"),
                WriteOptions::new(),
                DurabilityLevel::Majority,
                wall,
            )
            .unwrap()
        })
    };
    for i in 0..20 {
        durable(format!("sync-{i}"));
    }
    let config = consumer_config("t:sync")
        .with_auto_ack(true)
        .with_sync_writes(true);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    for vb in 0..VBS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    let mut view = MaterializedView::default();
    catch_up(&mut conn, &mut view, &server).await;
    assert_eq!(view.sync_changes, 20, "20 prepares, still pending");
    server.handle.with_node(|node| {
        assert_eq!(view.first_difference(node.bucket()), None);
        assert_eq!(view.first_pending_difference(node.bucket()), None);
    });
    // Acknowledge the prepares held, per vbucket.
    for vb in 0..VBS {
        let highest = view.pending(vb).values().map(|(s, _)| *s).max();
        if let Some(seqno) = highest {
            conn.acknowledge_prepared(vb, seqno).unwrap();
        }
    }
    // Commit half, abort the rest, while streaming.
    server.handle.with_bucket(|b, wall| {
        for i in 0..20 {
            let key = format!("sync-{i}");
            if i % 2 == 0 {
                b.commit_sync_write(key.as_bytes(), wall).unwrap();
            } else {
                b.abort_sync_write(key.as_bytes(), wall).unwrap();
            }
        }
    });
    catch_up(&mut conn, &mut view, &server).await;
    assert_eq!(view.sync_changes, 40);
    assert_eq!(view.orphan_commits, 0);
    server.handle.with_node(|node| {
        let bucket = node.bucket();
        assert_eq!(view.first_difference(bucket), None);
        assert_eq!(view.first_pending_difference(bucket), None);
        assert!((0..VBS).all(|vb| view.pending(vb).is_empty()));
        assert_eq!(
            view.live(0)
                .keys()
                .filter(|k| k.starts_with(b"sync-"))
                .count()
                + view
                    .live(1)
                    .keys()
                    .filter(|k| k.starts_with(b"sync-"))
                    .count()
                + view
                    .live(2)
                    .keys()
                    .filter(|k| k.starts_with(b"sync-"))
                    .count()
                + view
                    .live(3)
                    .keys()
                    .filter(|k| k.starts_with(b"sync-"))
                    .count(),
            10
        );
    });
    conn.close();
    server.stop().await;
}
