//! The consumer's log events, captured by a test subscriber: handshake,
//! stream and rollback events are there, document keys are redacted
//! unless the configuration shows them, and values never appear.

mod producer_harness;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::WriteOptions;
use dcp_proto::consumer::{Consumer, ConsumerConfig, StreamStart};
use dcp_proto::producer::Node;
use producer_harness::*;
use tracing_subscriber::fmt::MakeWriter;

const KEY: &str = "customer::secret-key-42";
const VALUE: &str = "{\"card\":\"4111-1111-1111-1111\"}";

/// Everything the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Streams one vbucket holding `KEY` = `VALUE` at trace level; returns the
/// log text.
fn stream_and_capture(config: ConsumerConfig) -> String {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let now = Instant::now();
        let mut node = Node::new(producer_harness::config(1));
        let wall = node.wall_clock(now);
        node.bucket_mut()
            .set(KEY.as_bytes(), VALUE, WriteOptions::new(), wall)
            .unwrap();
        let conn = node.accept(now);
        let mut consumer = Consumer::new(config, "bm9uY2U", now).unwrap();
        consumer
            .open_stream(0, StreamStart::Beginning, None)
            .unwrap();
        let mut changes = 0;
        for _ in 0..50 {
            let mut up = BytesMut::new();
            consumer.poll_transmit(&mut up);
            node.handle_input(conn, &mut up, now).unwrap();
            let mut down = BytesMut::new();
            node.poll_transmit(conn, &mut down, usize::MAX);
            consumer
                .handle_input(&mut down, now + Duration::from_millis(1))
                .unwrap();
            while let Some(event) = consumer.poll_event() {
                changes += usize::from(event.seqno().is_some());
                consumer.ack(event.credit());
            }
        }
        assert_eq!(changes, 1);
    });
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new("logging:1", BUCKET).with_credentials(Credentials::new(USER, PASSWORD))
}

#[test]
fn keys_are_redacted_by_default_and_values_never_logged() {
    let log = stream_and_capture(config());
    assert!(log.contains("handshake complete"), "{log}");
    assert!(log.contains("stream request"), "{log}");
    assert!(log.contains("stream open"), "{log}");
    assert!(log.contains("dcp.stream{vb=0}"), "per-stream span: {log}");
    // The change is logged, its key as tagged, withheld user data.
    let change = log
        .lines()
        .find(|l| l.contains("change"))
        .unwrap_or_else(|| panic!("no change event: {log}"));
    assert!(change.contains("<ud>[23 bytes]</ud>"), "{change}");
    assert!(!log.contains("secret-key-42"), "key leaked: {log}");
    assert!(!log.contains("4111"), "value leaked: {log}");
}

#[test]
fn keys_are_shown_only_when_configured_and_values_still_never() {
    let log = stream_and_capture(config().with_log_keys(true));
    assert!(log.contains(&format!("<ud>{KEY}</ud>")), "{log}");
    assert!(!log.contains("4111"), "value leaked: {log}");
}
