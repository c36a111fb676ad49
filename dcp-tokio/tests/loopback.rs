//! Our consumer streams from our producer over 127.0.0.1 (ephemeral ports):
//! writes during streaming, a killed connection resumed from its
//! checkpoint, a window smaller than one document, back-pressure, a dead
//! connection, refused credentials, a peer that sends garbage, many
//! connections at once and a graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use dcp_tokio::dcp_proto::consumer::{ConsumerError, Credit, Event, StreamStart};
use dcp_tokio::dcp_proto::msg::StreamEndReason;
use dcp_tokio::dcp_proto::session::Checkpoint;
use dcp_tokio::{Connection, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// A bound on how long one step may take before the test fails (liveness
/// only; nothing waits for it to pass).
const STEP: Duration = Duration::from_secs(20);

async fn next(conn: &mut Connection) -> Event {
    timeout(STEP, conn.next_event())
        .await
        .expect("no event in time")
        .expect("connection failed")
        .expect("connection closed")
}

fn caught_up(server: &TestServer, view: &View, vbuckets: u16) -> bool {
    (0..vbuckets).all(|vb| view.last.get(&vb).copied().unwrap_or(0) >= server.high_seqno(vb))
}

fn assert_view_equals_bucket(server: &TestServer, view: &View, vbuckets: u16) {
    for vb in 0..vbuckets {
        assert_eq!(view.live(vb), server.live(vb), "vbucket {vb}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_bucket_while_it_is_written() {
    const VBS: u16 = 8;
    let server = TestServer::start(node_config(VBS)).await;
    server.write(0, 300);
    let config = consumer_config("t:writes")
        .with_auto_ack(true)
        .with_buffer_size(16 * 1024);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    for vb in 0..VBS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    let handle = server.handle.clone();
    let mut writer = tokio::spawn(async move {
        for batch in 0..20u64 {
            for i in 0..25u64 {
                let n = 1000 + batch * 25 + i;
                handle
                    .set(
                        format!("key-{}", n % 211).as_bytes(),
                        format!("{{\"w\":{n}}}"),
                    )
                    .unwrap();
                if n % 9 == 0 {
                    let _ = handle.delete(format!("key-{}", n % 97).as_bytes());
                }
            }
            tokio::task::yield_now().await;
        }
    });
    let mut view = View::default();
    let mut writing = true;
    let mut opened = 0;
    while writing || !caught_up(&server, &view, VBS) {
        tokio::select! {
            event = timeout(STEP, conn.next_event()) => {
                let event = event.expect("no event in time").unwrap().unwrap();
                opened += usize::from(matches!(event, Event::StreamOpened { .. }));
                view.apply(&event);
            }
            done = &mut writer, if writing => {
                done.unwrap();
                writing = false;
            }
        }
    }
    assert_eq!(opened, usize::from(VBS));
    view.assert_no_duplicates();
    assert_view_equals_bucket(&server, &view, VBS);
    assert!(conn.stats().buffer_acks_sent > 0, "{:?}", conn.stats());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_resumes_from_its_checkpoint() {
    const VBS: u16 = 4;
    const NAME: &str = "t:resume";
    let server = TestServer::start(node_config(VBS)).await;
    server.write(0, 400);
    let config = || {
        consumer_config(NAME)
            .with_auto_ack(true)
            .with_buffer_size(8 * 1024)
    };
    let mut view = View::default();

    // Session 1: the server kills the connection mid-stream.
    let mut conn = Connection::connect(server.addr(), config()).await.unwrap();
    for vb in 0..VBS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    let mut changes = 0;
    while changes < 120 {
        changes += usize::from(view.apply(&next(&mut conn).await));
    }
    server.handle.drop_connection(NAME).unwrap();
    let err = loop {
        match timeout(STEP, conn.next_event())
            .await
            .expect("no end in time")
        {
            Ok(Some(event)) => {
                view.apply(&event);
            }
            Ok(None) => panic!("closed without an error"),
            Err(err) => break err,
        }
    };
    assert!(
        matches!(
            err,
            Error::Consumer(ConsumerError::ClosedByPeer) | Error::Io(_)
        ),
        "{err:?}"
    );
    // The error is sticky.
    assert!(conn.next_event().await.is_err());
    let saved = conn.checkpoint().to_json().unwrap();
    drop(conn);
    server.write(400, 100);

    // Session 2: resume, then the client itself goes away mid-stream.
    let checkpoint = Checkpoint::from_json(&saved).unwrap();
    let mut conn = Connection::connect(server.addr(), config()).await.unwrap();
    for vb in 0..VBS {
        match checkpoint.vbuckets.get(&vb) {
            Some(position) => conn.resume_stream(vb, position.clone(), None).unwrap(),
            None => conn.open_stream(vb, StreamStart::Beginning, None).unwrap(),
        }
    }
    let mut changes = 0;
    while changes < 100 {
        changes += usize::from(view.apply(&next(&mut conn).await));
    }
    let saved = conn.checkpoint();
    drop(conn);
    server.write(500, 100);

    // Session 3: resume again and catch up.
    let mut conn = Connection::connect(server.addr(), config()).await.unwrap();
    for (vb, position) in saved.vbuckets {
        conn.resume_stream(vb, position, None).unwrap();
    }
    while !caught_up(&server, &view, VBS) {
        view.apply(&next(&mut conn).await);
    }
    view.assert_no_duplicates();
    assert_view_equals_bucket(&server, &view, VBS);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_smaller_than_one_document_still_streams_everything() {
    let server = TestServer::start(node_config(2)).await;
    for i in 0..30u32 {
        let value = format!("{{\"i\":{i},\"big\":\"{}\"}}", "y".repeat(3000));
        server
            .handle
            .set(format!("big-{i}").as_bytes(), value)
            .unwrap();
    }
    let config = consumer_config("t:tiny-window").with_buffer_size(512);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    assert_eq!(conn.negotiated().unwrap().buffer_size, 512);
    for vb in 0..2 {
        let end = server.high_seqno(vb);
        conn.open_stream(vb, StreamStart::Beginning, Some(end))
            .unwrap();
    }
    let mut view = View::default();
    let mut ended = 0;
    while ended < 2 {
        let event = next(&mut conn).await;
        view.apply(&event);
        if let Event::Mutation(m, _) = &event {
            assert!(m.value.len() > 3000);
        }
        if matches!(event, Event::StreamEnded { reason, .. } if reason == StreamEndReason::Ok) {
            ended += 1;
        }
        conn.ack(event.credit());
    }
    assert_view_equals_bucket(&server, &view, 2);
    assert_eq!(view.versions.len(), 30);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_events_stop_the_producer_at_the_window() {
    const WINDOW: u32 = 32 * 1024;
    let server = TestServer::start(node_config(4)).await;
    for i in 0..2000u32 {
        let value = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "z".repeat(150));
        server
            .handle
            .set(format!("doc-{i}").as_bytes(), value)
            .unwrap();
    }
    let config = consumer_config("t:backpressure").with_buffer_size(WINDOW);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    for vb in 0..4 {
        let end = server.high_seqno(vb);
        conn.open_stream(vb, StreamStart::Beginning, Some(end))
            .unwrap();
    }
    // Take events without acknowledging them until none comes for a
    // while (virtual time: the runtime is idle, so the producer stopped).
    let mut credits: Vec<Credit> = Vec::new();
    let mut changes = 0;
    while let Ok(event) = timeout(Duration::from_secs(5), conn.next_event()).await {
        let event = event.unwrap().unwrap();
        changes += usize::from(matches!(event, Event::Mutation(..)));
        credits.push(event.credit());
    }
    let stats = conn.stats();
    assert!(
        changes > 0 && changes < 2000,
        "{changes} changes before the stop"
    );
    assert!(
        stats.flow_bytes_received <= u64::from(WINDOW) + 512,
        "{stats:?}"
    );
    assert_eq!(stats.acked_bytes, 0);

    // Acknowledge: the stream goes on to the end.
    for credit in credits {
        conn.ack(credit);
    }
    let mut ended = 0;
    while ended < 4 {
        let event = next(&mut conn).await;
        changes += usize::from(matches!(event, Event::Mutation(..)));
        ended += usize::from(matches!(event, Event::StreamEnded { .. }));
        conn.ack(event.credit());
    }
    assert_eq!(changes, 2000);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_frozen_server_is_detected_as_a_dead_connection() {
    let server = TestServer::start(node_config(1)).await;
    server.handle.set(b"a", "1").unwrap();
    let config = consumer_config("t:dead")
        .with_auto_ack(true)
        .with_noop_interval(Some(Duration::from_secs(1)));
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    conn.open_stream(0, StreamStart::Beginning, None).unwrap();
    while !matches!(next(&mut conn).await, Event::Mutation(..)) {}

    // Stalled (stream messages stop, noops flow): alive.
    server.handle.stall("t:dead", true).unwrap();
    server.handle.set(b"b", "2").unwrap();
    assert!(
        timeout(Duration::from_secs(30), conn.next_event())
            .await
            .is_err(),
        "nothing but noops while stalled"
    );
    server.handle.stall("t:dead", false).unwrap();
    while !matches!(next(&mut conn).await, Event::Mutation(..)) {}
    assert!(conn.stats().noops_answered >= 20, "{:?}", conn.stats());

    // Frozen (nothing at all): dead after two noop intervals of silence.
    server.handle.freeze("t:dead", true).unwrap();
    let started = tokio::time::Instant::now();
    let err = timeout(Duration::from_secs(60), conn.next_event())
        .await
        .expect("dead-connection detection")
        .unwrap_err();
    match err {
        Error::Consumer(ConsumerError::DeadConnection(silence)) => {
            assert!(silence >= Duration::from_secs(2), "{silence:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() <= Duration::from_secs(3));
    server.stop().await;
}

#[tokio::test]
async fn refused_credentials_and_unknown_buckets_are_typed_errors() {
    let server = TestServer::start(node_config(1)).await;
    let wrong = consumer_config("t:auth").with_credentials(
        dcp_tokio::dcp_proto::auth::Credentials::new(USER, "not-the-password"),
    );
    let err = Connection::connect(server.addr(), wrong).await.unwrap_err();
    assert!(err.is_auth_failure(), "{err:?}");
    assert!(err.to_string().contains("wrong user name or password"));

    let mut no_bucket = consumer_config("t:bucket");
    no_bucket.bucket = "no-such-bucket".to_owned();
    let err = Connection::connect(server.addr(), no_bucket)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Consumer(ConsumerError::NoBucket { ref bucket, .. }) if bucket == "no-such-bucket"),
        "{err:?}"
    );

    // Nothing listens on a port just released.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Connection::connect(addr, consumer_config("t:none"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_sends_garbage_or_hangs_up_ends_the_connection_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        // First client: an HTTP answer instead of a HELLO response.
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        // Second client: closed at once.
        let (socket2, _) = listener.accept().await.unwrap();
        drop(socket2);
        // Keep the first socket open until the client gave up.
        let _ = socket.read(&mut buf).await;
    });
    let err = Connection::connect(addr, consumer_config("t:garbage"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Consumer(ConsumerError::Decode(_))),
        "{err:?}"
    );
    let err = Connection::connect(addr, consumer_config("t:hangup"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Consumer(ConsumerError::ClosedByPeer) | Error::Io(_)
        ),
        "{err:?}"
    );
    peer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_stream_at_once_and_shutdown_closes_them() {
    const VBS: u16 = 4;
    let server = TestServer::start(node_config(VBS)).await;
    server.write(0, 200);
    let ends: Vec<u64> = (0..VBS).map(|vb| server.high_seqno(vb)).collect();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let addr = server.addr();
        let ends = ends.clone();
        tasks.push(tokio::spawn(async move {
            let config = consumer_config(&format!("t:many:{c}"))
                .with_auto_ack(true)
                .with_buffer_size(4096);
            let mut conn = Connection::connect(addr, config).await.unwrap();
            for (vb, end) in ends.iter().enumerate() {
                conn.open_stream(vb as u16, StreamStart::Beginning, Some(*end))
                    .unwrap();
            }
            let mut view = View::default();
            let mut ended = 0;
            while ended < VBS {
                let event = next(&mut conn).await;
                view.apply(&event);
                ended += u16::from(matches!(event, Event::StreamEnded { .. }));
            }
            (view, conn)
        }));
    }
    let mut conns = Vec::new();
    for task in tasks {
        let (view, conn) = task.await.unwrap();
        view.assert_no_duplicates();
        assert_view_equals_bucket(&server, &view, VBS);
        conns.push(conn);
    }
    assert_eq!(server.handle.connections().len(), 4);

    server.stop().await;
    for mut conn in conns {
        let err = timeout(STEP, conn.next_event()).await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Consumer(ConsumerError::ClosedByPeer) | Error::Io(_)
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn close_hands_out_what_was_received_then_none() {
    let server = TestServer::start(node_config(1)).await;
    server.handle.set(b"k", "v").unwrap();
    let config = consumer_config("t:close").with_auto_ack(true);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    conn.open_stream(0, StreamStart::Beginning, None).unwrap();
    while !matches!(next(&mut conn).await, Event::Mutation(..)) {}
    conn.close();
    assert!(conn.next_event().await.unwrap().is_none());
    assert!(conn.open_stream(0, StreamStart::Beginning, None).is_err());
    server.stop().await;
}

#[tokio::test]
async fn the_server_closes_a_client_that_sends_garbage_and_serves_others() {
    let server = TestServer::start(node_config(1)).await;
    server.handle.set(b"k", "v").unwrap();
    let mut garbage = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = timeout(STEP, garbage.read_to_end(&mut buf))
        .await
        .expect("the server closes the socket");
    // Closed without an answer (or reset, as the request was not read).
    match read {
        Ok(_) => assert!(buf.is_empty(), "{buf:?}"),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset),
    }

    let config = consumer_config("t:after-garbage").with_auto_ack(true);
    let mut conn = Connection::connect(server.addr(), config).await.unwrap();
    conn.open_stream(0, StreamStart::Beginning, None).unwrap();
    while !matches!(next(&mut conn).await, Event::Mutation(..)) {}
    assert_eq!(server.handle.connections().len(), 1);
    server.stop().await;
}
