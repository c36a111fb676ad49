//! Our consumer streams from our producer over 127.0.0.1, through the
//! futures-io adapter under async-std (and one test under smol): writes
//! while streaming, a killed connection resumed from its checkpoint, a
//! window smaller than one document, a dead connection, a wrong password,
//! garbage from either side, shutdown.
//!
//! Every wait is bounded by a deadline; nothing sleeps to synchronize.

mod common;

use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use async_std::task::block_on;
use common::*;
use dcp_async_std::{Connection, EndReason, Error, Server};
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::WriteOptions;
use dcp_proto::consumer::{ConsumerError, StreamStart};
use dcp_proto::producer::CloseReason;
use dcp_proto::session::Checkpoint;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

const VBUCKETS: u16 = 4;
/// No test step may take longer than this.
const STEP: Duration = Duration::from_secs(20);

async fn server(vbuckets: u16) -> Server {
    Server::bind("127.0.0.1:0", node_config(vbuckets))
        .await
        .unwrap()
}

async fn connect(server: &Server, name: &str) -> Connection {
    Connection::connect(server.local_addr(), consumer_config(name))
        .await
        .unwrap()
}

/// Takes events into `view` until every vbucket reached the bucket's
/// current high seqno.
async fn catch_up(conn: &mut Connection, server: &Server, view: &mut View) {
    let targets = server.with_node(|node| high_seqnos(node));
    let deadline = Instant::now() + STEP;
    while !view.reached(&targets) {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_event_timeout(left).await.unwrap() {
            Some(event) => view.apply(&event),
            None => panic!("timed out before reaching {targets:?}"),
        }
    }
}

#[test]
fn streams_a_bucket_while_it_is_written() {
    block_on(async {
        let server = server(VBUCKETS).await;
        server.with_node(|node| write_docs(node, 0, 200));
        let mut conn = connect(&server, "async:writes").await;
        for vb in 0..VBUCKETS {
            conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
        }
        let mut view = View::default();
        catch_up(&mut conn, &server, &mut view).await;

        // A writer task adds documents in small batches while we stream.
        let handle = server.handle();
        let writer = async_std::task::spawn(async move {
            for batch in 0..20 {
                handle.with_node(|node| write_docs(node, 200 + batch * 20, 20));
                future::yield_now().await;
            }
        });
        let reader = async {
            loop {
                let event = conn.next_event_timeout(STEP).await.unwrap();
                view.apply(&event.expect("an event"));
            }
        };
        future::or(writer, reader).await;
        catch_up(&mut conn, &server, &mut view).await;

        server.with_node(|node| view.assert_matches(node));
        let stats = conn.stats();
        assert_eq!(stats.streams_open, VBUCKETS as usize);
        assert!(stats.acked_bytes > 0, "{stats:?}");
        server.shutdown().await;
    });
}

#[test]
fn a_killed_connection_resumes_from_its_checkpoint_without_loss_or_duplicates() {
    block_on(async {
        let server = server(VBUCKETS).await;
        server.with_node(|node| write_docs(node, 0, 600));
        let mut conn = connect(&server, "async:resume").await;
        for vb in 0..VBUCKETS {
            conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
        }

        // Part of the data, then the server drops the connection mid-stream.
        let mut view = View::default();
        while view.changes < 150 {
            let event = conn.next_event_timeout(STEP).await.unwrap();
            view.apply(&event.expect("an event"));
        }
        let id = server
            .handle()
            .connection_named("async:resume")
            .expect("served");
        server.with_node(|node| node.drop_connection(id)).unwrap();

        // Events already received still come out, then the typed error.
        let err = loop {
            match conn.next_event_timeout(STEP).await {
                Ok(Some(event)) => view.apply(&event),
                Ok(None) => panic!("timed out waiting for the connection to end"),
                Err(err) => break err,
            }
        };
        assert!(
            matches!(err, Error::Consumer(ConsumerError::ClosedByPeer)),
            "{err:?}"
        );
        let end = server.handle().next_ended(STEP).await.expect("reported");
        assert_eq!(end.id, id);
        assert!(matches!(end.reason, EndReason::Node(CloseReason::Dropped)));

        // The checkpoint survives a round trip through storage.
        let saved = conn.checkpoint().to_json().unwrap();
        drop(conn);
        let checkpoint = Checkpoint::from_json(&saved).unwrap();
        assert!(
            view.changes < 600,
            "the kill came too late to test a resume"
        );

        // More writes while disconnected, then resume and catch up.
        server.with_node(|node| write_docs(node, 600, 100));
        let mut conn = connect(&server, "async:resume").await;
        for (vb, position) in checkpoint.vbuckets {
            conn.open_stream(vb, StreamStart::Position(position), None)
                .unwrap();
        }
        catch_up(&mut conn, &server, &mut view).await;
        server.with_node(|node| view.assert_matches(node));
        assert!(view.rollbacks.is_empty(), "{:?}", view.rollbacks);
        server.shutdown().await;
    });
}

#[test]
fn a_window_smaller_than_one_document_still_streams_everything() {
    block_on(async {
        let server = server(1).await;
        let value = "x".repeat(8 * 1024);
        server.with_node(|node| {
            let wall = node.wall_clock(Instant::now());
            for i in 0..20 {
                let key = format!("big-{i}");
                node.bucket_mut()
                    .set(key.as_bytes(), value.clone(), WriteOptions::new(), wall)
                    .unwrap();
            }
        });
        let config = consumer_config("async:window")
            .with_buffer_size(1024)
            .with_auto_ack(false);
        let mut conn = Connection::connect(server.local_addr(), config)
            .await
            .unwrap();
        conn.open_stream(0, StreamStart::Beginning, None).unwrap();

        // Without acks the producer stops after one oversized message.
        let mut view = View::default();
        let mut held = Vec::new();
        while view.changes == 0 {
            let event = conn.next_event_timeout(STEP).await.unwrap();
            let event = event.expect("an event");
            view.apply(&event);
            held.push(event.credit());
        }
        assert_eq!(
            conn.next_event_timeout(Duration::from_millis(300))
                .await
                .unwrap(),
            None,
            "the producer sent beyond a full window"
        );
        assert!(conn.stats().unacked_bytes > 1024);

        // Acknowledging each event lets the rest through.
        for credit in held {
            conn.ack(credit);
        }
        let deadline = Instant::now() + STEP;
        while view.changes < 20 {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = conn.next_event_timeout(left).await.unwrap();
            let event = event.expect("an event");
            view.apply(&event);
            conn.ack(event.credit());
        }
        server.with_node(|node| view.assert_matches(node));
        let stats = conn.stats();
        assert!(stats.buffer_acks_sent >= 19, "{stats:?}");
        assert!(stats.flow_bytes_received > 20 * 8 * 1024, "{stats:?}");
        server.shutdown().await;
    });
}

#[test]
fn a_frozen_producer_is_detected_as_a_dead_connection() {
    block_on(async {
        let server = server(1).await;
        server.with_node(|node| write_docs(node, 0, 10));
        let mut config =
            consumer_config("async:dead").with_noop_interval(Some(Duration::from_secs(1)));
        config.dead_connection_factor = 1;
        let mut conn = Connection::connect(server.local_addr(), config)
            .await
            .unwrap();
        conn.open_stream(0, StreamStart::Beginning, None).unwrap();
        let mut view = View::default();
        catch_up(&mut conn, &server, &mut view).await;

        // The node stops sending anything, noops included; its socket
        // stays open.
        let id = server
            .handle()
            .connection_named("async:dead")
            .expect("served");
        server.with_node(|node| node.freeze(id, true)).unwrap();
        let frozen_at = Instant::now();
        let err = conn.next_event_timeout(STEP).await.unwrap_err();
        let waited = frozen_at.elapsed();
        assert!(
            matches!(err, Error::Consumer(ConsumerError::DeadConnection(_))),
            "{err:?}"
        );
        assert!(waited < Duration::from_secs(5), "detected after {waited:?}");
        assert!(conn.is_closed());
        server.shutdown().await;
    });
}

#[test]
fn a_wrong_password_is_a_typed_auth_error() {
    block_on(async {
        let server = server(1).await;
        let config = consumer_config("async:auth").with_credentials(Credentials::new(USER, "nope"));
        let err = Connection::connect(server.local_addr(), config)
            .await
            .unwrap_err();
        assert!(err.is_auth_failed(), "{err:?}");
        assert!(
            matches!(err, Error::Consumer(ConsumerError::AuthFailed { .. })),
            "{err:?}"
        );
        server.shutdown().await;
    });
}

#[test]
fn garbage_from_a_client_ends_only_that_connection() {
    block_on(async {
        let server = server(1).await;
        let mut conn = connect(&server, "async:bystander").await;
        conn.open_stream(0, StreamStart::Beginning, None).unwrap();

        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        raw.write_all(&[0xff; 64]).await.unwrap();
        // The server closes the socket (after any reply).
        let mut rest = Vec::new();
        future::or(
            async { raw.read_to_end(&mut rest).await.map(|_| ()) },
            async {
                async_io::Timer::after(STEP).await;
                panic!("the server kept the connection open");
            },
        )
        .await
        .unwrap();
        let end = server.handle().next_ended(STEP).await.expect("reported");
        assert!(
            matches!(end.reason, EndReason::Node(CloseReason::Framing(_))),
            "{end:?}"
        );

        // The other connection is unaffected.
        server.with_node(|node| write_docs(node, 0, 5));
        let mut view = View::default();
        catch_up_one(&mut conn, &server, &mut view).await;
        server.with_node(|node| view.assert_matches(node));
        server.shutdown().await;
    });
}

async fn catch_up_one(conn: &mut Connection, server: &Server, view: &mut View) {
    let targets = server.with_node(|node| high_seqnos(node));
    let deadline = Instant::now() + STEP;
    while !view.reached(&targets) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = conn.next_event_timeout(left).await.unwrap();
        view.apply(&event.expect("an event"));
    }
}

#[test]
fn garbage_from_a_server_is_a_typed_decode_error() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = async_std::task::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(&[0x42; 64]).await.unwrap();
            // Hold the socket until the client hangs up.
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
        });
        let err = Connection::connect(addr, consumer_config("async:garbage"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Consumer(ConsumerError::Decode(_))),
            "{err:?}"
        );
        fake.await;
    });
}

#[test]
fn shutdown_ends_every_connection() {
    block_on(async {
        let server = server(1).await;
        let mut conns = Vec::new();
        for i in 0..3 {
            conns.push(connect(&server, &format!("async:shutdown:{i}")).await);
        }
        assert_eq!(server.handle().connections().len(), 3);
        let handle = server.handle();
        server.shutdown().await;
        for conn in &mut conns {
            let err = conn.next_event_timeout(STEP).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Consumer(ConsumerError::ClosedByPeer) | Error::Io(_)
                ),
                "{err:?}"
            );
        }
        let ended = handle.take_ended();
        assert_eq!(ended.len(), 3);
        assert!(
            ended
                .iter()
                .all(|end| matches!(end.reason, EndReason::Shutdown))
        );
    });
}

/// The same adapter under smol, with the server's tasks on smol's executor
/// and the consumer on a generic stream (smol's own TCP type).
#[test]
fn runs_under_smol() {
    smol::block_on(async {
        let server = Server::bind_with("127.0.0.1:0", node_config(2), |task| {
            smol::spawn(task).detach();
        })
        .await
        .unwrap();
        server.with_node(|node| write_docs(node, 0, 100));
        let stream = smol::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        let mut conn = Connection::handshake(stream, consumer_config("smol:1"))
            .await
            .unwrap();
        for vb in 0..2 {
            conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
        }
        let targets = server.with_node(|node| high_seqnos(node));
        let mut view = View::default();
        while !view.reached(&targets) {
            let event = conn.next_event_timeout(STEP).await.unwrap();
            view.apply(&event.expect("an event"));
        }
        server.with_node(|node| view.assert_matches(node));
        server.shutdown().await;
    });
}

#[test]
fn pipelined_requests_beyond_the_output_limit_are_all_answered() {
    block_on(async {
        // The node stops taking input while 256 bytes of responses wait;
        // the server must feed it again once they are written.
        let mut config = node_config(1);
        config.max_pending_output = 256;
        let server = Server::bind("127.0.0.1:0", config).await.unwrap();
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        const N: u32 = 2000;
        raw.write_all(&noop_requests(N)).await.unwrap();
        let mut responses = vec![0u8; N as usize * 24];
        future::or(async { raw.read_exact(&mut responses).await }, async {
            async_io::Timer::after(STEP).await;
            panic!("not every request was answered");
        })
        .await
        .unwrap();
        assert_noop_responses(&responses, N);
        server.shutdown().await;
    });
}
