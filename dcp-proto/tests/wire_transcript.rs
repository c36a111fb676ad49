//! A recorded session between our consumer and our producer: every frame
//! either side put on the wire must decode as a typed message and re-encode
//! to the same bytes.
//!
//! With `DCP_TRANSCRIPT_OUT=<file>` the test also writes the session as
//! `C <hex>` / `S <hex>` lines (client to server, server to client), the
//! input format of Wireshark-based checkers, so an independent dissector can
//! read what we send.

mod in_memory;
mod producer_harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::BytesMut;
use dcp_proto::bucket::{BucketConfig, StoreMode, SyncWriteMode, WriteOptions};
use dcp_proto::codec::{DurabilityLevel, Frame, FrameDecoder};
use dcp_proto::consumer::{
    ConfigPush, Consumer, ConsumerConfig, ControlSetting, Event, StreamFilter, StreamStart,
};
use dcp_proto::msg::client::ClustermapNotification;
use dcp_proto::msg::{DEFAULT_COLLECTION, Message, OpenFlags};
use dcp_proto::producer::ConnectionId;
use dcp_proto::session::StreamKey;
use in_memory::InMemory;
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

struct Session {
    link: InMemory,
    events: Vec<Event>,
}

impl Session {
    fn pump(&mut self, consumer: &mut Consumer, conn: ConnectionId) {
        let events = &mut self.events;
        self.link
            .pump(consumer, conn, |_, event, _| events.push(event));
    }

    fn write(&mut self, from: u32, n: u32) {
        let wall = self.link.node.wall_clock(self.link.now);
        let bucket = self.link.node.bucket_mut();
        for i in from..from + n {
            let key = format!("doc-{i:04}");
            let value = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat((i % 7) as usize));
            let options = if i % 13 == 0 {
                WriteOptions::new().expiry(1)
            } else {
                WriteOptions::new()
            };
            bucket.set(key.as_bytes(), value, options, wall).unwrap();
            if i % 5 == 0 {
                bucket.delete(key.as_bytes(), 0, wall).unwrap();
            }
        }
    }

    /// The recorded writes, split into frames.
    fn frames(self) -> Vec<(Direction, Frame)> {
        let mut decoders = [FrameDecoder::new(), FrameDecoder::new()];
        let mut frames = Vec::new();
        for (to_server, mut bytes) in self.link.recording.unwrap_or_default() {
            let (direction, decoder) = if to_server {
                (Direction::Client, &mut decoders[0])
            } else {
                (Direction::Server, &mut decoders[1])
            };
            while let Some(frame) = decoder.decode(&mut bytes).expect("our frames split") {
                frames.push((direction, frame));
            }
            assert!(bytes.is_empty(), "writes end on frame boundaries");
        }
        frames
    }
}

fn connect(session: &mut Session, name: &str) -> (Consumer, ConnectionId) {
    let mut config = ConsumerConfig::new(name, BUCKET)
        .with_noop_interval(Some(Duration::from_secs(1)))
        .with_buffer_size(2048)
        .with_auto_ack(true)
        .with_open_flags(
            OpenFlags::PRODUCER | OpenFlags::INCLUDE_XATTRS | OpenFlags::INCLUDE_DELETE_TIMES,
        );
    config.enable_expiry_opcode = true;
    session.link.connect(config, USER, PASSWORD)
}

/// Runs the scripted session and returns its frames.
fn record_session() -> Vec<(Direction, Frame)> {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(VBUCKETS)
        .with_checkpoints(8, 3);
    let mut session = Session {
        link: InMemory::new(config(VBUCKETS).with_bucket(bucket)),
        events: Vec::new(),
    };
    session.link.recording = Some(Vec::new());
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
    let wall = session.link.node.wall_clock(session.link.now);
    assert!(session.link.node.bucket_mut().expire_due(wall) > 0);
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
    session.link.node.failover(1, 2).unwrap();
    session.pump(&mut consumer, conn);
    session.link.node.remove(conn);
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

    assert!(
        session
            .events
            .iter()
            .any(|e| matches!(e, Event::Rollback { vbucket: 1, .. })),
        "the session includes a rollback"
    );
    session.frames()
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

/// A frame decoded as its typed message and encoded again, with the
/// fields an independent dissector also names.
fn reencode(frame: &Frame) -> (BytesMut, String) {
    let mut again = BytesMut::new();
    if ClustermapNotification::matches(frame) {
        let push = ClustermapNotification::decode(frame)
            .unwrap_or_else(|e| panic!("push {frame:?} does not decode: {e}"));
        push.encode(&mut again).unwrap();
        return (again, String::new());
    }
    let message =
        Message::decode(frame).unwrap_or_else(|e| panic!("frame {frame:?} does not decode: {e}"));
    message.encode(&mut again).unwrap();
    (again, fields(&message))
}

/// The session with the newer protocol: collections (system events,
/// collection-prefixed keys), sync writes (PREPARE, COMMIT, ABORT), pushed
/// cluster configs, then an OSO backfill on a second connection and two
/// stream ids of one vbucket on a third.
fn record_modern_session() -> Vec<(Direction, Frame)> {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(VBUCKETS)
        .with_checkpoints(8, 3);
    let node = config(VBUCKETS)
        .with_bucket(bucket)
        .with_oso_for_unfiltered_streams(true);
    let mut session = Session {
        link: InMemory::new(node),
        events: Vec::new(),
    };
    session.link.recording = Some(Vec::new());
    session.write(0, 20);
    let wall = session.link.node.wall_clock(session.link.now);
    let bucket = session.link.node.bucket_mut();
    bucket.create_scope("inventory", wall).unwrap();
    let hotels = bucket
        .create_collection("inventory", "hotels", None, wall)
        .unwrap();
    for i in 0..12 {
        let key = format!("hotel-{i}");
        bucket
            .set_in(
                hotels.id,
                key.as_bytes(),
                "{\"stars\":4}",
                WriteOptions::new(),
                wall,
            )
            .unwrap();
    }
    bucket
        .durable_store(
            StoreMode::Set,
            b"durable-1",
            "{\"d\":1}",
            WriteOptions::new(),
            DurabilityLevel::Majority,
            wall,
        )
        .unwrap();
    bucket.set_sync_write_mode(SyncWriteMode::Hold);
    bucket
        .durable_store(
            StoreMode::Set,
            b"durable-2",
            "{\"d\":2}",
            WriteOptions::new(),
            DurabilityLevel::Majority,
            wall,
        )
        .unwrap();
    bucket.abort_sync_write(b"durable-2", wall).unwrap();

    let config = ConsumerConfig::new("transcript:2", BUCKET)
        .with_collections(true)
        .with_sync_writes(true)
        .with_config_push(ConfigPush::Full)
        .with_auto_ack(true);
    let (mut consumer, conn) = session.link.connect(config, USER, PASSWORD);
    session.pump(&mut consumer, conn);
    for vb in 0..VBUCKETS {
        consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    session.pump(&mut consumer, conn);
    let wall = session.link.node.wall_clock(session.link.now);
    session
        .link
        .node
        .bucket_mut()
        .drop_collection("inventory", "hotels", wall)
        .unwrap();
    session
        .link
        .node
        .set_cluster_config(7, br#"{"rev":7,"name":"default"}"#.to_vec());
    session.link.node.push_cluster_config();
    session.pump(&mut consumer, conn);
    session.link.node.remove(conn);

    // OSO: an initial backfill in key order (enough writes that vbucket 0
    // streams from disk first).
    session.write(100, 400);
    let config = ConsumerConfig::new("transcript:3", BUCKET)
        .with_collections(true)
        .with_control(ControlSetting::required(
            "enable_out_of_order_snapshots",
            "true_with_seqno_advanced",
        ))
        .with_auto_ack(true);
    let (mut consumer, conn) = session.link.connect(config, USER, PASSWORD);
    session.pump(&mut consumer, conn);
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    session.pump(&mut consumer, conn);
    session.link.node.remove(conn);

    // Stream ids: two streams of vbucket 1 (flexible framing with the
    // stream-id frame info both ways), one closed by the client.
    let config = ConsumerConfig::new("transcript:4", BUCKET)
        .with_collections(true)
        .with_stream_ids(true)
        .with_auto_ack(true);
    let (mut consumer, conn) = session.link.connect(config, USER, PASSWORD);
    session.pump(&mut consumer, conn);
    for sid in [1, 2] {
        consumer
            .open_filtered_stream(
                StreamKey::of(1, Some(sid)),
                StreamStart::Beginning,
                None,
                StreamFilter::Collections(vec![DEFAULT_COLLECTION]),
            )
            .unwrap();
    }
    session.pump(&mut consumer, conn);
    session.write(500, 8);
    consumer.close_stream(StreamKey::of(1, Some(2))).unwrap();
    session.pump(&mut consumer, conn);
    session.frames()
}

#[test]
fn every_frame_of_a_modern_session_decodes_and_reencodes_identically() {
    let frames = record_modern_session();
    let mut names = BTreeMap::<String, usize>::new();
    let mut transcript = String::new();
    for (direction, frame) in &frames {
        let (again, fields) = reencode(frame);
        assert_eq!(&again[..], &frame.as_bytes()[..], "{direction:?} {frame:?}");
        let name = format!("{:?}/{:?}", frame.magic(), frame.opcode());
        *names.entry(name.clone()).or_default() += 1;
        let _ = writeln!(
            transcript,
            "{} {} # {name}{fields}",
            side(*direction),
            hex(frame)
        );
    }
    for wanted in [
        "ClientRequest/DcpSystemEvent",
        "ClientRequest/DcpPrepare",
        "ClientRequest/DcpCommit",
        "ClientRequest/DcpAbort",
        "ClientRequest/DcpOsoSnapshot",
        "ServerRequest/",
        "AltClientRequest/DcpMutation",
        "AltClientRequest/DcpCloseStream",
        "AltClientRequest/DcpStreamEnd",
    ] {
        assert!(
            names.keys().any(|name| name.starts_with(wanted)),
            "no {wanted} frame in the session: {names:?}"
        );
    }
    if let Ok(path) = std::env::var("DCP_TRANSCRIPT_OUT") {
        let path = format!("{path}.modern");
        std::fs::write(&path, transcript).expect("transcript written");
    }
}

fn side(direction: Direction) -> char {
    match direction {
        Direction::Client => 'C',
        Direction::Server => 'S',
    }
}

fn hex(frame: &Frame) -> String {
    frame.as_bytes().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn every_frame_of_a_session_decodes_and_reencodes_identically() {
    let frames = record_session();
    let mut opcodes = BTreeMap::<(Direction, String), usize>::new();
    let mut transcript = String::new();
    for (direction, frame) in &frames {
        let (again, fields) = reencode(frame);
        assert_eq!(&again[..], &frame.as_bytes()[..], "{direction:?} {frame:?}");
        let name = format!("{:?}/{:?}", frame.magic(), frame.opcode());
        *opcodes.entry((*direction, name.clone())).or_default() += 1;
        let _ = writeln!(
            transcript,
            "{} {} # {name}{fields}",
            side(*direction),
            hex(frame)
        );
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
