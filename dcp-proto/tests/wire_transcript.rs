//! A recorded session between our consumer and our producer: every frame
//! either side put on the wire must decode as a typed message and re-encode
//! to the same bytes.
//!
//! With `DCP_TRANSCRIPT_OUT=<file>` the test also writes the session as
//! `C <hex>` / `S <hex>` lines (client to server, server to client), the
//! input format of Wireshark-based checkers, so an independent dissector can
//! read what we send.

mod producer_harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::{BucketConfig, WriteOptions};
use dcp_proto::codec::{Frame, FrameDecoder};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::msg::{Message, OpenFlags};
use dcp_proto::producer::{ConnectionId, Node};
use producer_harness::*;

const VBUCKETS: u16 = 4;

/// Which way a frame went.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Direction {
    /// Consumer to producer.
    Client,
    /// Producer to consumer.
    Server,
}

struct Recorder {
    frames: Vec<(Direction, Frame)>,
    to_server: FrameDecoder,
    to_client: FrameDecoder,
}

impl Recorder {
    fn new() -> Self {
        Self {
            frames: Vec::new(),
            to_server: FrameDecoder::new(),
            to_client: FrameDecoder::new(),
        }
    }

    /// Records the frames in `bytes` (a copy: the original goes on).
    fn record(&mut self, direction: Direction, bytes: &[u8]) {
        let mut copy = BytesMut::from(bytes);
        let decoder = match direction {
            Direction::Client => &mut self.to_server,
            Direction::Server => &mut self.to_client,
        };
        while let Some(frame) = decoder.decode(&mut copy).expect("our frames split") {
            self.frames.push((direction, frame));
        }
        assert!(copy.is_empty(), "writes end on frame boundaries");
    }
}

struct Session {
    node: Node,
    now: Instant,
    recorder: Recorder,
    events: Vec<Event>,
}

impl Session {
    fn pump(&mut self, consumer: &mut Consumer, conn: ConnectionId) {
        for _ in 0..10_000 {
            let mut moved = false;
            let mut up = BytesMut::new();
            if consumer.poll_transmit(&mut up) > 0 {
                moved = true;
                self.recorder.record(Direction::Client, &up);
                self.node.handle_input(conn, &mut up, self.now).unwrap();
            }
            let mut down = BytesMut::new();
            if self.node.poll_transmit(conn, &mut down, 16 * 1024) > 0 {
                moved = true;
                self.recorder.record(Direction::Server, &down);
                consumer.handle_input(&mut down, self.now).unwrap();
            }
            while let Some(event) = consumer.poll_event() {
                moved = true;
                self.events.push(event);
            }
            if self.node.is_closed(conn) {
                consumer.handle_eof();
                return;
            }
            if !moved {
                return;
            }
        }
        panic!("did not settle");
    }

    /// Lets `by` pass on both sides (noops, time-based acks).
    fn advance(&mut self, consumer: &mut Consumer, conn: ConnectionId, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now += Duration::from_millis(250);
            consumer.handle_timeout(self.now).unwrap();
            self.node.handle_timeout(conn, self.now);
            self.pump(consumer, conn);
        }
    }

    fn write(&mut self, from: u32, n: u32) {
        let wall = self.node.wall_clock(self.now);
        for i in from..from + n {
            let key = format!("doc-{i:04}");
            let value = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat((i % 7) as usize));
            let options = if i % 13 == 0 {
                WriteOptions::new().expiry(1)
            } else {
                WriteOptions::new()
            };
            self.node
                .bucket_mut()
                .set(key.as_bytes(), value, options, wall)
                .unwrap();
            if i % 5 == 0 {
                self.node
                    .bucket_mut()
                    .delete(key.as_bytes(), 0, wall)
                    .unwrap();
            }
        }
    }
}

fn connect(session: &mut Session, name: &str) -> (Consumer, ConnectionId) {
    let mut config = ConsumerConfig::new(name, BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_noop_interval(Some(Duration::from_secs(1)))
        .with_buffer_size(2048)
        .with_auto_ack(true)
        .with_open_flags(
            OpenFlags::PRODUCER | OpenFlags::INCLUDE_XATTRS | OpenFlags::INCLUDE_DELETE_TIMES,
        );
    config.enable_expiry_opcode = true;
    let consumer = Consumer::new(config, "bm9uY2U", session.now).unwrap();
    (consumer, session.node.accept(session.now))
}

/// Runs the scripted session and returns its frames.
fn record_session() -> Vec<(Direction, Frame)> {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(VBUCKETS)
        .with_checkpoints(8, 3);
    let mut session = Session {
        node: Node::new(config(VBUCKETS).with_bucket(bucket)),
        now: Instant::now(),
        recorder: Recorder::new(),
        events: Vec::new(),
    };
    session.node.wall_clock(session.now);
    session.write(0, 60);

    // Handshake, streams from the beginning (disk backfill), live writes,
    // expiries, noops, buffer acks.
    let (mut consumer, conn) = connect(&mut session, "transcript:1");
    session.pump(&mut consumer, conn);
    for vb in 0..VBUCKETS {
        consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    session.pump(&mut consumer, conn);
    session.write(60, 30);
    session.pump(&mut consumer, conn);
    session.advance(&mut consumer, conn, Duration::from_secs(3));
    let expired = session.node.wall_clock(session.now);
    assert!(session.node.bucket_mut().expire_due(expired) > 0);
    session.pump(&mut consumer, conn);
    consumer.request_failover_log(0).unwrap();
    consumer.request_cluster_config().unwrap();
    consumer.close_stream(3).unwrap();
    session.pump(&mut consumer, conn);

    // A failover loses the tail of a vbucket; a new connection resumes from
    // the saved positions and is rolled back.
    let positions: BTreeMap<u16, _> = (0..3)
        .map(|vb| (vb, consumer.position(vb).expect("a position")))
        .collect();
    session.node.failover(1, 2).unwrap();
    session.pump(&mut consumer, conn);
    session.node.remove(conn);
    session.write(90, 10);
    let (mut consumer, conn) = connect(&mut session, "transcript:1");
    session.pump(&mut consumer, conn);
    for (vb, position) in positions {
        consumer
            .open_stream(vb, StreamStart::Position(position), Some(10_000))
            .unwrap();
    }
    consumer.open_stream(3, StreamStart::Now, None).unwrap();
    session.pump(&mut consumer, conn);
    session.advance(&mut consumer, conn, Duration::from_secs(2));

    assert!(
        session
            .events
            .iter()
            .any(|e| matches!(e, Event::Rollback { vbucket: 1, .. })),
        "the session includes a rollback"
    );
    session.recorder.frames
}

/// Our reading of the fields an independent dissector also names, as
/// ` name=value` pairs (the dissector's field names).
fn fields(message: &Message) -> String {
    let pairs: Vec<(&str, u64)> = match message {
        Message::Mutation(m) => vec![("by_seqno", m.by_seqno), ("rev_seqno", m.rev_seqno)],
        Message::Deletion(d) => vec![("by_seqno", d.by_seqno), ("rev_seqno", d.rev_seqno)],
        Message::Expiration(e) => vec![
            ("by_seqno", e.by_seqno),
            ("rev_seqno", e.rev_seqno),
            ("delete_time", u64::from(e.delete_time)),
        ],
        Message::SnapshotMarker(m) => vec![("start_seqno", m.start), ("end_seqno", m.end)],
        Message::StreamRequest(r) => vec![
            ("start_seqno", r.start_seqno),
            ("end_seqno", r.end_seqno),
            ("vbucket_uuid", r.vbucket_uuid),
            ("snap_start_seqno", r.snap_start_seqno),
            ("snap_end_seqno", r.snap_end_seqno),
        ],
        Message::BufferAck(a) => vec![("bytes_to_ack", u64::from(a.bytes))],
        _ => Vec::new(),
    };
    pairs.iter().fold(String::new(), |mut s, (k, v)| {
        let _ = write!(s, " {k}={v}");
        s
    })
}

#[test]
fn every_frame_of_a_session_decodes_and_reencodes_identically() {
    let frames = record_session();
    let mut opcodes = BTreeMap::<(Direction, String), usize>::new();
    let mut transcript = String::new();
    for (direction, frame) in &frames {
        let message = Message::decode(frame)
            .unwrap_or_else(|e| panic!("{direction:?} frame {frame:?} does not decode: {e}"));
        let mut again = BytesMut::new();
        message.encode(&mut again).unwrap();
        assert_eq!(
            &again[..],
            &frame.as_bytes()[..],
            "{direction:?} {message:?} re-encodes differently"
        );
        let name = format!("{:?}/{:?}", frame.magic(), frame.opcode());
        *opcodes.entry((*direction, name.clone())).or_default() += 1;
        let side = match direction {
            Direction::Client => 'C',
            Direction::Server => 'S',
        };
        let hex: String = frame.as_bytes().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let _ = writeln!(transcript, "{side} {hex} # {name}{}", fields(&message));
    }

    // The session covers the whole ordinary life of a connection.
    for wanted in [
        "Hello",
        "SaslAuth",
        "SelectBucket",
        "DcpOpen",
        "DcpControl",
        "DcpStreamReq",
        "DcpSnapshotMarker",
        "DcpMutation",
        "DcpDeletion",
        "DcpExpiration",
        "DcpNoop",
        "DcpBufferAck",
        "DcpCloseStream",
        "DcpGetFailoverLog",
        "GetClusterConfig",
        "GetAllVbSeqnos",
    ] {
        assert!(
            opcodes
                .keys()
                .any(|(_, name)| name.ends_with(&format!("/{wanted}"))),
            "no {wanted} frame in the session: {opcodes:?}"
        );
    }

    if let Ok(path) = std::env::var("DCP_TRANSCRIPT_OUT") {
        std::fs::write(&path, transcript).expect("transcript written");
        eprintln!("wrote {} frames to {path}", frames.len());
    }
}
