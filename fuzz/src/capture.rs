//! Seeds captured from an end-to-end run of our consumer against our
//! producer, in memory, on a virtual clock.
//!
//! The run: a consumer ([`handshake_consumer`]) connects to a node like the
//! producer target's ([`fuzz_node`]), logs in (SCRAM), opens four streams
//! from the beginning and streams the backfill; documents are written while
//! it streams, in bursts larger than the flow-control window; the clock runs
//! through noop intervals; the stream asked to stop at seqno 10 ends; a
//! vbucket then fails over
//! (losing its last items), which drops the connection; a second connection
//! resumes from the saved positions and is told to roll back.
//!
//! What it records, per connection, in each target's input format:
//!
//! - `consumer_handshake/`: everything the producer sent, as consumer
//!   input from the connection's first byte (chunks of at most 63 bytes,
//!   acking what each chunk delivered; clock steps as they happened);
//! - `producer/`: everything the consumer sent, as producer input in mode 0
//!   (a fresh connection), with the writes and clock steps where they
//!   happened;
//! - `consumer/`: the stream messages of vbuckets 0 and 1, readdressed to
//!   the opaques of [`ready_consumer`], as input for the ready consumer;
//! - `frames/`: the first frame of every distinct (magic, opcode) seen in
//!   either direction.
//!
//! Everything is deterministic (seeded node, fixed nonce, virtual clock), so
//! the files only change when the protocol's behaviour does. Regenerate with
//! `cargo test --lib -- --ignored write_captured_seeds` in `fuzz/`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{FrameDecoder, Opcode};
use dcp_proto::consumer::{Consumer, StreamStart};
use dcp_proto::producer::{ConnectionId, Node};

use crate::{
    HANDSHAKE_NONCE, NODE_VBUCKETS, fuzz_node, handshake_config, handshake_consumer,
    ready_consumer, write_document,
};

/// One seed file: its path under `seeds/` and its bytes.
pub type Seed = (String, Vec<u8>);

/// The longest chunk the control-byte formats express.
const CHUNK: usize = 63;
/// One clock step: 5 s (control byte `0x40 | 1`).
const STEP: Duration = Duration::from_secs(5);

/// What one connection carried, in the targets' formats.
struct Recording {
    /// Consumer-target input (producer → consumer).
    down: Vec<u8>,
    /// Producer-target input (consumer → producer), mode byte first.
    up: Vec<u8>,
    down_frames: Vec<Bytes>,
    up_frames: Vec<Bytes>,
    /// Documents written while connected.
    writes: u32,
    down_decoder: FrameDecoder,
    up_decoder: FrameDecoder,
}

impl Recording {
    fn new() -> Self {
        Self {
            down: Vec::new(),
            up: vec![0],
            down_frames: Vec::new(),
            up_frames: Vec::new(),
            writes: 0,
            down_decoder: FrameDecoder::new(),
            up_decoder: FrameDecoder::new(),
        }
    }
}

fn split_frames(decoder: &mut FrameDecoder, bytes: &[u8], out: &mut Vec<Bytes>) {
    let mut buf = BytesMut::from(bytes);
    while let Some(frame) = decoder
        .decode(&mut buf)
        .expect("our peers send valid frames")
    {
        out.push(frame.into_bytes());
    }
}

struct World {
    node: Node,
    now: Instant,
    written: u8,
}

/// One connection: our consumer, its id on the node, what it carried, and
/// the consumer's bytes not yet delivered.
struct Conn {
    consumer: Consumer,
    id: ConnectionId,
    rec: Recording,
    rx: BytesMut,
    closed: bool,
}

impl World {
    /// Writes `n` documents the way the producer target does (control bit
    /// 7 with an empty chunk).
    fn write(&mut self, conn: &mut Conn, n: usize) {
        for _ in 0..n {
            write_document(&mut self.node, &mut self.written, self.now);
            conn.rec.up.push(0x80);
            conn.rec.writes += 1;
        }
    }

    /// One round: the consumer's bytes to the node, the node's to the
    /// consumer (in target-sized chunks, acking as the target does).
    /// Returns whether anything moved.
    fn round(&mut self, conn: &mut Conn) -> bool {
        let mut moved = false;
        let mut up = BytesMut::new();
        if conn.consumer.poll_transmit(&mut up) > 0 {
            moved = true;
            split_frames(&mut conn.rec.up_decoder, &up, &mut conn.rec.up_frames);
            for chunk in up.chunks(CHUNK) {
                conn.rec.up.push(chunk.len() as u8);
                conn.rec.up.extend_from_slice(chunk);
            }
            if self.node.handle_input(conn.id, &mut up, self.now).is_err() {
                conn.closed = true;
            }
        }
        let mut down = BytesMut::new();
        if self.node.poll_transmit(conn.id, &mut down, 16 * 1024) > 0 {
            moved = true;
            split_frames(&mut conn.rec.down_decoder, &down, &mut conn.rec.down_frames);
            for chunk in down.chunks(CHUNK) {
                conn.rec.down.push(0x80 | chunk.len() as u8);
                conn.rec.down.extend_from_slice(chunk);
                conn.rx.extend_from_slice(chunk);
                conn.consumer
                    .handle_input(&mut conn.rx, self.now)
                    .expect("our producer's bytes are valid");
                while let Some(event) = conn.consumer.poll_event() {
                    conn.consumer.ack(event.credit());
                }
            }
        }
        if self.node.is_closed(conn.id) {
            conn.closed = true;
        }
        moved
    }

    /// Rounds until nothing moves.
    fn settle(&mut self, conn: &mut Conn) {
        for _ in 0..10_000 {
            if conn.closed || !self.round(conn) {
                return;
            }
        }
        panic!("the connection did not settle");
    }

    /// `steps` clock steps of 5 s, settling after each.
    fn wait(&mut self, conn: &mut Conn, steps: usize) {
        for _ in 0..steps {
            if conn.closed {
                return;
            }
            self.now += STEP;
            conn.rec.down.push(0x40 | 1);
            conn.rec.up.push(0x40 | 1);
            conn.consumer
                .handle_timeout(self.now)
                .expect("a live connection");
            self.node.handle_timeout(conn.id, self.now);
            self.settle(conn);
        }
    }

    fn connect(&mut self, consumer: Consumer) -> Conn {
        Conn {
            consumer,
            id: self.node.accept(self.now),
            rec: Recording::new(),
            rx: BytesMut::new(),
            closed: false,
        }
    }
}

/// Runs the scenario and returns the seeds.
pub fn capture() -> Vec<Seed> {
    let start = Instant::now();
    let (node, first) = fuzz_node(start);
    let mut world = World {
        node,
        now: start,
        written: 8,
    };
    // fuzz_node accepts a connection: the first one is ours.
    let mut conn = Conn {
        consumer: handshake_consumer(start),
        id: first,
        rec: Recording::new(),
        rx: BytesMut::new(),
        closed: false,
    };

    // Handshake and backfill.
    world.settle(&mut conn);
    assert!(conn.consumer.is_ready(), "{:?}", conn.consumer.error());
    // Writes while streaming, then a burst larger than the window.
    for _ in 0..3 {
        world.write(&mut conn, 3);
        world.settle(&mut conn);
    }
    world.write(&mut conn, 40);
    world.settle(&mut conn);
    // Silence: noops both ways.
    world.wait(&mut conn, 30);
    // More writes (vbucket 3's stream has ended at its end seqno).
    world.write(&mut conn, 10);
    world.settle(&mut conn);
    assert!(!conn.closed && !conn.consumer.is_closed());
    assert!(
        !conn.consumer.has_stream(NODE_VBUCKETS - 1),
        "the last stream ended"
    );

    // A failover losing the last items of vbucket 1 drops the connection.
    let victim = 1;
    world
        .node
        .failover(victim, 3)
        .expect("vbucket 1 fails over");
    world.settle(&mut conn);
    let positions: Vec<_> = (0..NODE_VBUCKETS)
        .filter_map(|vb| Some((vb, conn.consumer.position(vb)?)))
        .collect();
    world.node.remove(conn.id);
    let first_conn = conn.rec;

    // The consumer comes back from its positions and is told to roll back.
    let mut consumer =
        Consumer::new(handshake_config(), HANDSHAKE_NONCE, world.now).expect("consumer");
    for (vb, position) in positions {
        consumer
            .open_stream(vb, StreamStart::Position(position), None)
            .expect("open from the saved position");
    }
    let mut conn = world.connect(consumer);
    world.settle(&mut conn);
    world.write(&mut conn, 6);
    world.settle(&mut conn);
    world.wait(&mut conn, 3);
    let second_conn = conn.rec;
    for rec in [&first_conn, &second_conn] {
        assert!(rec.writes <= crate::MAX_WRITES, "{} writes", rec.writes);
    }
    let rollback = second_conn
        .down_frames
        .iter()
        .any(|f| f[0] & 0x01 == 1 && f[1] == 0x53 && u16::from_be_bytes([f[6], f[7]]) == 0x23);
    assert!(rollback, "the second connection was told to roll back");

    let mut seeds = Vec::new();
    let mut frames = FrameSeeds::default();
    for (name, rec) in [
        ("e2e-conn1", &first_conn),
        ("e2e-conn2-rollback", &second_conn),
    ] {
        seeds.push((format!("consumer_handshake/{name}"), rec.down.clone()));
        seeds.push((format!("producer/{name}"), rec.up.clone()));
        frames.add("down", &rec.down_frames);
        frames.add("up", &rec.up_frames);
    }
    seeds.push((
        "consumer/e2e-streaming".into(),
        for_ready_consumer(&first_conn.down_frames),
    ));
    seeds.extend(frames.seeds);
    seeds
}

/// The first frame of each (direction, magic, opcode, and status for
/// responses).
#[derive(Default)]
struct FrameSeeds {
    seen: BTreeSet<(&'static str, u8, u8, u16)>,
    seeds: Vec<Seed>,
}

impl FrameSeeds {
    fn add(&mut self, direction: &'static str, frames: &[Bytes]) {
        for frame in frames {
            let (magic, opcode) = (frame[0], frame[1]);
            let response = magic & 0x01 == 1;
            let status = if response {
                u16::from_be_bytes([frame[6], frame[7]])
            } else {
                0
            };
            if self.seen.insert((direction, magic, opcode, status)) {
                let name = Opcode::from_raw(opcode).name().unwrap_or("unknown");
                let kind = if response {
                    format!("res{status:02x}")
                } else {
                    "req".to_owned()
                };
                self.seeds.push((
                    format!("frames/e2e-{direction}-{kind}-{opcode:02x}-{name}"),
                    frame.to_vec(),
                ));
            }
        }
    }
}

/// The stream messages of vbuckets 0 and 1 (and the noops) from `frames`,
/// readdressed to the ready consumer's stream opaques, as consumer-target
/// input acking every chunk.
fn for_ready_consumer(frames: &[Bytes]) -> Vec<u8> {
    let (_, opaques) = ready_consumer(Instant::now());
    let mut wire = Vec::new();
    for frame in frames {
        let (magic, opcode) = (frame[0], frame[1]);
        let request = magic & 0x01 == 0;
        let op = Opcode::from_raw(opcode);
        if !request {
            continue;
        }
        if op == Opcode::DcpNoop {
            wire.extend_from_slice(frame);
            continue;
        }
        let vb = u16::from_be_bytes([frame[6], frame[7]]);
        let stream_message = matches!(
            op,
            Opcode::DcpSnapshotMarker
                | Opcode::DcpMutation
                | Opcode::DcpDeletion
                | Opcode::DcpExpiration
                | Opcode::DcpStreamEnd
                | Opcode::DcpSeqnoAdvanced
                | Opcode::DcpSystemEvent
        );
        if stream_message && vb < 2 {
            let mut frame = frame.to_vec();
            frame[12..16].copy_from_slice(&opaques[usize::from(vb)].to_be_bytes());
            wire.extend_from_slice(&frame);
        }
    }
    let mut input = Vec::new();
    for chunk in wire.chunks(CHUNK) {
        input.push(0x80 | chunk.len() as u8);
        input.extend_from_slice(chunk);
    }
    input.push(0x40 | 20);
    input
}
