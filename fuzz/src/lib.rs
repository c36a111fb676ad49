//! The checks behind each fuzz target, kept in a library so the seed corpus
//! can be replayed as ordinary tests (`cargo test --manifest-path
//! fuzz/Cargo.toml`).
//!
//! Every function must return normally for any input: a panic is a bug in
//! `dcp-proto` (or a broken invariant asserted here).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod capture;
pub mod roundtrip;
pub use roundtrip::roundtrip;

use bytes::{Bytes, BytesMut};
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::WriteOptions;
use dcp_proto::codec::{Datatype, Frame, FrameDecoder, HEADER_LEN, Header};
use dcp_proto::consumer::{Consumer, ConsumerConfig, SnappyMode, StreamFilter, StreamStart};
use dcp_proto::msg::client::HelloResponse;
use dcp_proto::msg::{
    CollectionKey, FailoverEntry, FailoverLog, Message, Open, OpenFlags, StatusResponse,
    StreamRequest, StreamRequestFlags, StreamRequestResponse, SystemEvent, SystemEventId,
    XattrValue, compress_value, decompress_value, read_leb128_u32,
};
use dcp_proto::producer::{ConnectionId, Node, NodeConfig};
use dcp_proto::session::StreamKey;

/// Header decoding: never panics; a decoded header re-encodes to its bytes.
pub fn header(data: &[u8]) {
    if let Ok(header) = Header::decode(data) {
        assert_eq!(&header.encode()[..], &data[..HEADER_LEN]);
        assert!(header.value_offset() <= header.frame_len());
    }
}

/// Frame splitting: the first byte picks a chunk size; feeding the rest in
/// chunks must give exactly what feeding it whole gives.
pub fn frame_stream(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    const MAX: usize = 64 * 1024;

    let whole = split_all(
        &mut FrameDecoder::with_max_frame_len(MAX),
        input,
        input.len().max(1),
    );
    let chunked = split_all(&mut FrameDecoder::with_max_frame_len(MAX), input, chunk);
    assert_eq!(whole, chunked);
}

type Split = (Vec<Bytes>, Option<String>);

fn split_all(decoder: &mut FrameDecoder, input: &[u8], chunk: usize) -> Split {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.wire_len() <= decoder.max_frame_len());
                    frames.push(frame.into_bytes());
                }
                Ok(None) => break,
                Err(err) => return (frames, Some(err.to_string())),
            }
        }
    }
    (frames, None)
}

/// Typed decoding of one frame; whatever decodes re-encodes and decodes to
/// the same message.
pub fn message(data: &[u8]) {
    let Ok(frame) = Frame::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    check_message(&frame);
}

fn check_message(frame: &Frame) {
    let _ = frame.stream_id();
    for info in frame.frame_infos() {
        if info.is_err() {
            break;
        }
    }
    let Ok(msg) = Message::decode(frame) else {
        return;
    };
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).expect("a decoded message re-encodes");
    let again = Frame::parse(buf.freeze()).expect("an encoded message is one frame");
    let round = Message::decode(&again).expect("an encoded message decodes");
    assert_eq!(round, msg);
}

/// Like [`message`], but the input only supplies what the header cannot make
/// up: byte 0 = opcode, byte 1 = magic choice, byte 2 = extras length,
/// byte 3 = key length, byte 4 = datatype, byte 5 = framing extras length;
/// the rest is the body. This steers the fuzzer past framing into each
/// opcode's decoder.
pub fn message_by_opcode(data: &[u8]) {
    let Some((head, body)) = data.split_first_chunk::<6>() else {
        return;
    };
    let [opcode, magic, extras, key, datatype, framing] = *head;
    let magic = [0x80u8, 0x81, 0x08, 0x18][usize::from(magic & 3)];
    let flexible = magic & 0x80 == 0;
    let body_len = body.len();
    let framing = if flexible {
        usize::from(framing.min(8)).min(body_len)
    } else {
        0
    };
    let extras = usize::from(extras).min(body_len - framing);
    let key = usize::from(key).min(body_len - framing - extras);
    let mut frame = Vec::with_capacity(HEADER_LEN + body_len);
    frame.push(magic);
    frame.push(opcode);
    if flexible {
        frame.push(framing as u8);
        frame.push(key as u8);
    } else {
        frame.extend_from_slice(&(key as u16).to_be_bytes());
    }
    frame.push(extras as u8);
    frame.push(datatype);
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&(body_len as u32).to_be_bytes());
    frame.extend_from_slice(&[0; 12]);
    frame.extend_from_slice(body);
    if let Ok(frame) = Frame::parse(Bytes::from(frame)) {
        check_message(&frame);
    }
}

/// The value and key parsers that work on sections of a frame.
pub fn value_parsers(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok((id, used)) = read_leb128_u32(data) {
        assert!((1..=5).contains(&used));
        let key = CollectionKey::split(&bytes).expect("leb128 read, so split works");
        assert_eq!(key.collection_id, id);
        assert_eq!(key.to_wire(), bytes);
    }
    if let Ok(value) = XattrValue::split(&bytes) {
        assert_eq!(value.section_len() + value.body.len(), data.len());
        let _ = value.pairs().count();
    }
    if let Ok(log) = FailoverLog::decode_value(data) {
        assert_eq!(log.entries.len() * 16, data.len());
    }
    // Bounded: a hostile uncompressed length is refused, not allocated.
    if let Ok((datatype, plain)) = decompress_value(Datatype::SNAPPY, &bytes, 1 << 16) {
        assert!(!datatype.is_snappy() && plain.len() <= 1 << 16);
        let (_, packed) = compress_value(datatype, &plain).expect("compressible");
        assert_eq!(
            decompress_value(Datatype::SNAPPY, &packed, 1 << 16),
            Ok((datatype, plain))
        );
    }
}

/// Version-2 (FlatBuffers) system event values: byte 0 picks the event
/// (create, drop, reserved, create scope, drop scope, modify), the rest is
/// the value. The verifier-first reader never panics; a value it accepts
/// re-encodes, through the typed data, to a value that reads the same.
pub fn system_event_value(data: &[u8]) {
    let Some((&id, value)) = data.split_first() else {
        return;
    };
    let mut event = SystemEvent {
        vbucket: 0,
        opaque: 0,
        stream_id: None,
        by_seqno: 1,
        event: SystemEventId::from_raw(u32::from(id % 6)),
        version: 2,
        key: Bytes::new(),
        value: Bytes::copy_from_slice(value),
    };
    let Ok(typed) = event.data() else {
        return;
    };
    assert_eq!(typed.event(), event.event);
    event.value = typed.encode_value(2).expect("a decoded value re-encodes");
    assert_eq!(event.data().expect("a re-encoded value decodes"), typed);
}

/// A consumer past its handshake, streaming vbuckets 0 and 1 (whose stream
/// opaques are returned), flow control on with a small window, Snappy
/// values decompressed.
pub fn ready_consumer(now: Instant) -> (Consumer, [u32; 2]) {
    let config = ConsumerConfig::new("fuzz", "default")
        .with_buffer_size(4096)
        .with_snappy(SnappyMode::Decompress);
    let mut consumer = Consumer::new(config, "nonce", now).expect("consumer");
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .expect("open 0");
    consumer
        .open_stream(1, StreamStart::Beginning, Some(1000))
        .expect("open 1");
    let opaques = answer_handshake(&mut consumer, now, 2);
    (consumer, [opaques[0], opaques[1]])
}

/// Answers a fresh consumer's handshake (every request succeeds) and its
/// first `streams` stream requests (accepted); returns their opaques.
fn answer_handshake(consumer: &mut Consumer, now: Instant, streams: usize) -> Vec<u32> {
    let mut decoder = FrameDecoder::new();
    let mut tx = BytesMut::new();
    let mut opaques = Vec::new();
    while opaques.len() < streams {
        consumer.poll_transmit(&mut tx);
        let frame = decoder.decode(&mut tx).expect("valid").expect("a request");
        let mut rx = BytesMut::new();
        match Message::decode(&frame).expect("typed") {
            Message::Hello(h) => HelloResponse::success(h.opaque, h.features).encode(&mut rx),
            Message::StreamRequest(r) => {
                opaques.push(r.opaque);
                let log = FailoverLog::new(vec![FailoverEntry {
                    vbucket_uuid: 7,
                    seqno: 0,
                }]);
                StreamRequestResponse::accepted(r.opaque, log).encode(&mut rx)
            }
            _ => StatusResponse::success(frame.opcode(), frame.opaque()).encode(&mut rx),
        }
        .expect("encodes");
        consumer.handle_input(&mut rx, now).expect("handshake");
    }
    while consumer.poll_event().is_some() {}
    opaques
}

/// The consumer's whole input path, from the ready state of
/// [`ready_consumer`] (built once, cloned per input). Each control byte: low
/// 6 bits = chunk length (or seconds/5 to advance), bit 6 = advance the
/// clock instead of reading, bit 7 = ack the events polled after this chunk.
pub fn consumer(data: &[u8]) {
    static READY: OnceLock<(Consumer, Instant)> = OnceLock::new();
    let (ready, start) = READY.get_or_init(|| {
        let start = Instant::now();
        (ready_consumer(start).0, start)
    });
    drive_consumer(ready.clone(), *start, data);
}

/// The streams [`ready_consumer_with_stream_ids`] opens: vbucket 0 twice
/// (stream ids 1 and 2, filtered to collections 0 and 8), vbucket 1 once
/// (stream id 1, unfiltered).
pub const STREAM_ID_STREAMS: [(u16, u16); 3] = [(0, 1), (0, 2), (1, 1)];

/// A consumer like [`ready_consumer`] but with collections and stream ids
/// negotiated, streaming [`STREAM_ID_STREAMS`]; returns each stream's
/// opaque in that order.
pub fn ready_consumer_with_stream_ids(now: Instant) -> (Consumer, Vec<u32>) {
    let config = ConsumerConfig::new("fuzz", "default")
        .with_buffer_size(4096)
        .with_snappy(SnappyMode::Decompress)
        .with_collections(true)
        .with_stream_ids(true);
    let mut consumer = Consumer::new(config, "nonce", now).expect("consumer");
    for (vb, sid) in STREAM_ID_STREAMS {
        let key = StreamKey::of(vb, Some(sid));
        let opened = match (vb, sid) {
            (0, 1) => consumer.open_filtered_stream(
                key,
                StreamStart::Beginning,
                None,
                StreamFilter::Collections(vec![0]),
            ),
            (0, _) => consumer.open_filtered_stream(
                key,
                StreamStart::Beginning,
                None,
                StreamFilter::Collections(vec![8]),
            ),
            _ => consumer.open_stream(key, StreamStart::Beginning, Some(1000)),
        };
        opened.expect("open");
    }
    let opaques = answer_handshake(&mut consumer, now, STREAM_ID_STREAMS.len());
    (consumer, opaques)
}

/// [`consumer`] on a connection with stream ids: the same input format,
/// driven from [`ready_consumer_with_stream_ids`].
pub fn consumer_stream_ids(data: &[u8]) -> ConsumerOutcome {
    static READY: OnceLock<(Consumer, Instant)> = OnceLock::new();
    let (ready, start) = READY.get_or_init(|| {
        let start = Instant::now();
        (ready_consumer_with_stream_ids(start).0, start)
    });
    drive_consumer(ready.clone(), *start, data)
}

/// [`consumer`] as it was first written: the ready consumer built afresh
/// (a full handshake) for every input. Kept to check that cloning changes
/// nothing and to measure what it saves.
pub fn consumer_per_input(data: &[u8]) -> ConsumerOutcome {
    let start = Instant::now();
    drive_consumer(ready_consumer(start).0, start, data)
}

/// The SCRAM client nonce of [`handshake_consumer`].
pub const HANDSHAKE_NONCE: &str = "ZnV6eg";

/// The configuration of the consumer that [`consumer_handshake`] drives and
/// the capture in [`capture`] runs against [`fuzz_node`]: the node's user,
/// flow control with a 1 KiB window, Snappy decompressed, noops every 20 s.
pub fn handshake_config() -> ConsumerConfig {
    ConsumerConfig::new("fuzz", NODE_BUCKET)
        .with_credentials(Credentials::new(NODE_USER, NODE_PASSWORD))
        .with_buffer_size(1024)
        .with_snappy(SnappyMode::Decompress)
        .with_noop_interval(Some(Duration::from_secs(20)))
}

/// A fresh consumer with [`handshake_config`] (HELLO queued) that asked
/// for every vbucket of [`fuzz_node`] from the beginning, the last one only
/// up to seqno 10 (so its stream ends).
pub fn handshake_consumer(now: Instant) -> Consumer {
    let mut consumer = Consumer::new(handshake_config(), HANDSHAKE_NONCE, now).expect("consumer");
    for vb in 0..NODE_VBUCKETS {
        let end = (vb == NODE_VBUCKETS - 1).then_some(10);
        consumer
            .open_stream(vb, StreamStart::Beginning, end)
            .expect("open");
    }
    consumer
}

/// The consumer's whole input path from its first byte: a fresh consumer
/// (HELLO queued, four streams asked for) reads producer bytes in the
/// [`consumer`] control format, so the handshake (HELLO, SASL, SELECT_BUCKET,
/// DCP_OPEN, CONTROLs, stream requests) is fuzzed too. Seeded with whole
/// connections captured from our producer ([`capture`]).
pub fn consumer_handshake(data: &[u8]) {
    static FRESH: OnceLock<(Consumer, Instant)> = OnceLock::new();
    let (fresh, start) = FRESH.get_or_init(|| {
        let start = Instant::now();
        (handshake_consumer(start), start)
    });
    drive_consumer(fresh.clone(), *start, data);
}

/// The cluster client's whole input path: a client bootstrapping from two
/// seeds, whose every requested socket opens at once, reads node bytes in
/// the [`consumer`] control format (low 6 bits = chunk length, or
/// seconds/5 to advance with bit 6; bit 7 = take the events after this
/// chunk); a zero control byte loses the newest link instead. Bytes go to
/// the newest open link: first the seed's config fetch, then the nodes the
/// config names. The client must never panic, and must hand out new link
/// ids only.
pub fn cluster_client(data: &[u8]) {
    use dcp_proto::cluster::{ClusterClient, ConnectionString, OrchestratorConfig, Output};
    use dcp_proto::session::Checkpoint;
    let start = Instant::now();
    let mut now = start;
    let seeds = ConnectionString::parse("couchbase://127.0.0.1:11210,127.0.0.1:11211/default")
        .expect("a connection string");
    let mut client = ClusterClient::new(
        &seeds,
        handshake_config(),
        OrchestratorConfig::new(),
        Checkpoint::new(),
        now,
    );
    let mut open = Vec::new();
    let mut newest = None;
    let mut tx = BytesMut::new();
    let mut flush = |client: &mut ClusterClient, open: &mut Vec<_>, now: Instant| loop {
        let mut idle = true;
        while let Some(output) = client.poll_output() {
            idle = false;
            match output {
                Output::Connect { link, .. } => {
                    assert!(newest.is_none_or(|n| link > n), "link ids are new");
                    newest = Some(link);
                    open.push(link);
                    client.handle_connected(link, HANDSHAKE_NONCE, now);
                }
                Output::Disconnect { link } => open.retain(|l| *l != link),
                _ => {}
            }
        }
        while client.poll_transmit(&mut tx).is_some() {
            idle = false;
            tx.clear();
        }
        if idle {
            return;
        }
    };
    flush(&mut client, &mut open, now);
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        rest = tail;
        let len = usize::from(control & 0x3f);
        if control == 0 {
            if let Some(link) = open.pop() {
                client.handle_lost(link, now);
            }
        } else if control & 0x40 != 0 {
            now += Duration::from_secs(5 * len as u64);
            if client.poll_timeout().is_some_and(|at| at <= now) {
                client.handle_timeout(now);
            }
        } else {
            let (chunk, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            if let Some(link) = open.last() {
                client.handle_input(*link, &mut BytesMut::from(chunk), now);
            }
        }
        flush(&mut client, &mut open, now);
        if control & 0x80 != 0 {
            while client.poll_event(now).is_some() {}
            flush(&mut client, &mut open, now);
        }
        let _ = (client.stats(), client.checkpoint());
    }
}

/// Counters without their instants (which depend on when the virtual clock
/// started, not on the input).
fn comparable(
    mut stats: dcp_proto::consumer::ConnectionStats,
) -> dcp_proto::consumer::ConnectionStats {
    stats.last_message_at = None;
    stats.last_ack_at = None;
    stats
}

/// What driving a consumer left: for comparing two ways of getting there.
#[derive(Debug, PartialEq, Eq)]
pub struct ConsumerOutcome {
    /// The connection statistics.
    pub stats: String,
    /// The checkpoint.
    pub checkpoint: String,
    /// Whether the handshake completed.
    pub ready: bool,
    /// Whether the connection ended in an error.
    pub closed: bool,
}

fn drive_consumer(mut consumer: Consumer, start: Instant, data: &[u8]) -> ConsumerOutcome {
    let mut now = start;
    let mut rx = BytesMut::new();
    let mut tx = BytesMut::new();
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let n = usize::from(control & 0x3f);
        let result = if control & 0x40 != 0 {
            rest = tail;
            now += Duration::from_secs(5 * n as u64);
            consumer.handle_timeout(now)
        } else {
            let (chunk, after) = tail.split_at(n.min(tail.len()));
            rest = after;
            rx.extend_from_slice(chunk);
            consumer.handle_input(&mut rx, now)
        };
        while let Some(event) = consumer.poll_event() {
            if control & 0x80 != 0 {
                consumer.ack(event.credit());
            }
        }
        consumer.poll_transmit(&mut tx);
        tx.clear();
        let stats = consumer.stats();
        assert!(stats.acked_bytes <= stats.flow_bytes_received);
        if result.is_err() {
            assert!(consumer.is_closed());
            assert!(
                consumer.handle_input(&mut rx, now).is_err(),
                "errors are sticky"
            );
            break;
        }
    }
    let checkpoint = consumer.checkpoint();
    for (_, position) in checkpoint.streams() {
        let r = position.resume();
        assert!(r.snap_start_seqno <= r.start_seqno && r.start_seqno <= r.snap_end_seqno);
    }
    ConsumerOutcome {
        stats: format!("{:?}", comparable(consumer.stats())),
        checkpoint: format!("{checkpoint:?}"),
        ready: consumer.is_ready(),
        closed: consumer.is_closed(),
    }
}

/// The bucket the fuzzed node serves.
pub const NODE_BUCKET: &str = "default";
/// The fuzzed node's user.
pub const NODE_USER: &str = "u";
/// That user's password.
pub const NODE_PASSWORD: &str = "p";
/// The fuzzed node's vbuckets.
pub const NODE_VBUCKETS: u16 = 4;

/// The node the producer target talks to: four vbuckets, one user, eight
/// small documents, one accepted connection.
pub fn fuzz_node(start: Instant) -> (Node, ConnectionId) {
    let mut node = Node::new(
        NodeConfig::new(NODE_BUCKET)
            .with_vbuckets(NODE_VBUCKETS)
            .with_user(NODE_USER, NODE_PASSWORD)
            .with_seed(1)
            .with_scram_iterations(1),
    );
    let wall = node.wall_clock(start);
    for i in 0..8u8 {
        let _ = node
            .bucket_mut()
            .set(&[b'k', i], &b"{}"[..], WriteOptions::new(), wall);
    }
    let id = node.accept(start);
    (node, id)
}

/// At most this many document writes per producer input: writes dominate
/// the cost of an input, and more of them reach no new state.
pub const MAX_WRITES: u32 = 64;

/// The document write the producer target makes between chunks (control
/// bit 7); `written` counts writes.
pub fn write_document(node: &mut Node, written: &mut u8, now: Instant) {
    *written = written.wrapping_add(1);
    let wall = node.wall_clock(now);
    let _ = node.bucket_mut().set(
        &[b'k', *written % 16],
        &b"{\"v\":1}"[..],
        WriteOptions::new(),
        wall,
    );
}

/// HELLO, PLAIN login, SELECT_BUCKET and DCP_OPEN (producer), opaques 1-4.
fn canned_login(rx: &mut BytesMut) {
    use dcp_proto::msg::client::{Hello, HelloFeature, SaslAuth, SelectBucket};
    let features = vec![HelloFeature::Xerror, HelloFeature::SelectBucket];
    Hello {
        opaque: 1,
        agent: Bytes::from_static(b"fuzz"),
        features,
    }
    .encode(rx)
    .expect("encodes");
    SaslAuth::plain(2, NODE_USER.as_bytes(), NODE_PASSWORD.as_bytes())
        .encode(rx)
        .expect("encodes");
    SelectBucket::new(3, NODE_BUCKET)
        .encode(rx)
        .expect("encodes");
    Open {
        opaque: 4,
        flags: OpenFlags::PRODUCER,
        name: Bytes::from_static(b"fuzz"),
        consumer_name: None,
    }
    .encode(rx)
    .expect("encodes");
}

/// Stream requests for vbuckets 0 and 1 from the beginning, opaques 5-6.
fn canned_streams(rx: &mut BytesMut) {
    for vb in 0..2u16 {
        StreamRequest {
            vbucket: vb,
            opaque: 5 + u32::from(vb),
            flags: StreamRequestFlags::empty(),
            start_seqno: 0,
            end_seqno: u64::MAX,
            vbucket_uuid: 0,
            snap_start_seqno: 0,
            snap_end_seqno: 0,
            value: None,
        }
        .encode(rx)
        .expect("encodes");
    }
}

/// A producer state to start from.
#[derive(Clone)]
struct NodeState {
    node: Node,
    id: ConnectionId,
    start: Instant,
}

/// The three states the producer target starts from: a fresh connection;
/// logged in with a DCP producer open; and with streams for vbuckets 0 and
/// 1 open and their backfill sent.
fn node_states() -> &'static [NodeState; 3] {
    static STATES: OnceLock<[NodeState; 3]> = OnceLock::new();
    STATES.get_or_init(|| {
        let start = Instant::now();
        let (node, id) = fuzz_node(start);
        let fresh = NodeState { node, id, start };
        let mut login = fresh.clone();
        let mut rx = BytesMut::new();
        canned_login(&mut rx);
        settle(&mut login, &mut rx);
        let mut streaming = login.clone();
        canned_streams(&mut rx);
        settle(&mut streaming, &mut rx);
        [fresh, login, streaming]
    })
}

/// Feeds `rx` and drains what the node sends; the connection must stay up.
fn settle(state: &mut NodeState, rx: &mut BytesMut) {
    state
        .node
        .handle_input(state.id, rx, state.start)
        .expect("canned input is accepted");
    let mut tx = BytesMut::new();
    while state.node.poll_transmit(state.id, &mut tx, 64 * 1024) > 0 {
        tx.clear();
    }
    assert!(!state.node.is_closed(state.id));
}

/// The producer's whole input path: one connection to [`fuzz_node`]. Byte 0
/// picks the state to start from (built once, cloned per input): `& 3` = 0
/// a fresh connection (the handshake is fuzzed), 1 logged in with a DCP
/// producer open, 2 or 3 also streaming vbuckets 0 and 1. Then the same
/// control-byte format as [`consumer`]: low 6 bits = chunk length (or
/// seconds/5 to advance), bit 6 = advance the clock, bit 7 = write a
/// document between chunks (at most [`MAX_WRITES`] per input).
pub fn producer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let state = &node_states()[usize::from(mode & 3).min(2)];
    drive_producer(state.clone(), rest);
}

/// [`producer`] as it was first written (modes 0 and 1 only): the node
/// built and the login replayed for every input. Kept to check that
/// cloning changes nothing and to measure what it saves.
pub fn producer_per_input(data: &[u8]) -> ProducerOutcome {
    let Some((&mode, rest)) = data.split_first() else {
        return ProducerOutcome::default();
    };
    let start = Instant::now();
    let (node, id) = fuzz_node(start);
    let mut state = NodeState { node, id, start };
    if mode & 1 == 1 {
        let mut rx = BytesMut::new();
        canned_login(&mut rx);
        settle(&mut state, &mut rx);
    }
    drive_producer(state, rest)
}

/// What driving a node left, for comparing two ways of getting there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProducerOutcome {
    /// Bytes the node sent while driven.
    pub sent: Vec<u8>,
    /// Whether the connection was closed.
    pub closed: bool,
}

fn drive_producer(state: NodeState, mut rest: &[u8]) -> ProducerOutcome {
    let NodeState {
        mut node,
        id,
        start,
    } = state;
    let mut now = start;
    let mut rx = BytesMut::new();
    let mut tx = BytesMut::new();
    let mut sent = Vec::new();
    let mut written = 8u8;
    let mut writes = 0;
    loop {
        if node.handle_input(id, &mut rx, now).is_err() || node.is_closed(id) {
            let _ = node.poll_transmit(id, &mut tx, 1 << 20);
            sent.extend_from_slice(&tx);
            node.remove(id);
            return ProducerOutcome { sent, closed: true };
        }
        while node.poll_transmit(id, &mut tx, 64 * 1024) > 0 {
            sent.extend_from_slice(&tx);
            tx.clear();
        }
        let Some((&control, tail)) = rest.split_first() else {
            return ProducerOutcome {
                sent,
                closed: false,
            };
        };
        let n = usize::from(control & 0x3f);
        if control & 0x40 != 0 {
            rest = tail;
            now += Duration::from_secs(5 * n as u64);
            node.handle_timeout(id, now);
        } else {
            let (chunk, after) = tail.split_at(n.min(tail.len()));
            rest = after;
            rx.extend_from_slice(chunk);
        }
        if control & 0x80 != 0 && writes < MAX_WRITES {
            writes += 1;
            write_document(&mut node, &mut written, now);
        }
    }
}

/// Bucket-config parsing: never panics; what parses answers its queries
/// within its own bounds.
pub fn cluster_config(data: &[u8]) {
    use dcp_proto::cluster::ClusterConfig;
    let Ok(config) = ClusterConfig::parse(data, "127.0.0.1") else {
        return;
    };
    let n = config.num_vbuckets();
    for vb in 0..n.min(2048) {
        let _ = config.active_node(vb);
        let _ = config.replicas(vb);
        let _ = config.forward_active_node(vb);
    }
    let _ = config.kv_nodes();
    if n > 0 {
        assert!(config.vbucket_for_key(b"key") < n);
    }
}

#[cfg(test)]
mod replay {
    //! Replays the committed seeds (and any local corpus) through every
    //! target.

    use std::fs;
    use std::path::Path;

    fn inputs(dir: &str) -> Vec<Vec<u8>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for sub in ["seeds", "corpus"] {
            let Ok(entries) = fs::read_dir(root.join(sub).join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                out.push(fs::read(entry.path()).expect("readable corpus file"));
            }
        }
        out
    }

    fn seeds() -> Vec<Vec<u8>> {
        let seeds = inputs("frames");
        assert!(seeds.len() > 40, "seed frames present ({})", seeds.len());
        seeds
    }

    #[test]
    fn header_seeds() {
        for s in seeds().iter().chain(&inputs("header")) {
            super::header(s);
        }
    }

    #[test]
    fn frame_stream_seeds() {
        for s in seeds().iter().chain(&inputs("frame_stream")) {
            for chunk in [1u8, 3, 24, 255] {
                let mut input = vec![chunk];
                input.extend_from_slice(s);
                super::frame_stream(&input);
            }
        }
    }

    #[test]
    fn message_seeds() {
        for s in seeds().iter().chain(&inputs("message")) {
            super::message(s);
        }
    }

    #[test]
    fn message_by_opcode_seeds() {
        for s in seeds() {
            // Re-express each seed frame in the target's input format.
            if s.len() < 24 {
                continue;
            }
            let mut input = vec![s[1], if s[0] == 0x81 { 1 } else { 0 }, s[4], s[3], s[5], 0];
            input.extend_from_slice(&s[24..]);
            super::message_by_opcode(&input);
        }
        for s in inputs("message_by_opcode") {
            super::message_by_opcode(&s);
        }
    }

    #[test]
    fn system_event_value_seeds() {
        for s in &inputs("system_event_value") {
            super::system_event_value(s);
        }
        // The committed seeds (not what a local corpus found) are valid
        // tables: the round trip is reached.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/system_event_value");
        let seeds: Vec<Vec<u8>> = fs::read_dir(dir)
            .expect("seed directory")
            .flatten()
            .map(|entry| fs::read(entry.path()).expect("readable seed"))
            .collect();
        assert!(seeds.len() >= 5, "system event value seeds present");
        for s in &seeds {
            let event = dcp_proto::msg::SystemEvent {
                vbucket: 0,
                opaque: 0,
                stream_id: None,
                by_seqno: 1,
                event: dcp_proto::msg::SystemEventId::from_raw(u32::from(s[0])),
                version: 2,
                key: bytes::Bytes::new(),
                value: bytes::Bytes::copy_from_slice(&s[1..]),
            };
            assert!(event.data().is_ok(), "seed decodes: {:?}", event.data());
        }
        // Every seed frame's value under every event id.
        for s in seeds_frames() {
            for id in 0..6u8 {
                let mut input = vec![id];
                input.extend_from_slice(s.get(24..).unwrap_or_default());
                super::system_event_value(&input);
            }
        }
    }

    #[test]
    fn consumer_seeds() {
        let seeds = inputs("consumer");
        assert!(!seeds.is_empty(), "consumer seeds present");
        for s in &seeds {
            super::consumer(s);
        }
        // Raw frames as producer input, in one chunk each.
        for s in seeds_frames() {
            let mut input = Vec::new();
            for chunk in s.chunks(63) {
                input.push(0x80 | chunk.len() as u8);
                input.extend_from_slice(chunk);
            }
            super::consumer(&input);
        }
    }

    fn seeds_frames() -> Vec<Vec<u8>> {
        inputs("frames")
    }

    /// Writes the consumer seeds: valid streams for both vbuckets, with the
    /// opaques the ready consumer uses. Run with `--ignored` after changing
    /// the handshake.
    #[test]
    #[ignore]
    fn write_consumer_seeds() {
        use bytes::{Bytes, BytesMut};
        use dcp_proto::codec::Datatype;
        use dcp_proto::msg::{
            DcpNoop, MarkerFormat, Mutation, SeqnoAdvanced, SnapshotFlags, SnapshotMarker,
            StreamEnd, StreamEndReason,
        };
        let (_, opaques) = super::ready_consumer(std::time::Instant::now());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/consumer");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, vb) in [("stream-vb0", 0u16), ("stream-vb1-end", 1)] {
            let opaque = opaques[usize::from(vb)];
            let mut wire = BytesMut::new();
            SnapshotMarker {
                vbucket: vb,
                opaque,
                stream_id: None,
                start: 1,
                end: 6,
                flags: SnapshotFlags::MEMORY,
                format: MarkerFormat::V1,
            }
            .encode(&mut wire)
            .unwrap();
            for seqno in [1u64, 2, 4] {
                Mutation {
                    vbucket: vb,
                    opaque,
                    stream_id: None,
                    cas: seqno,
                    datatype: Datatype::JSON,
                    by_seqno: seqno,
                    rev_seqno: 1,
                    flags: 0,
                    expiration: 0,
                    lock_time: 0,
                    nru: 0,
                    key: Bytes::from(format!("key{seqno}")),
                    value: Bytes::from_static(b"{\"a\":1}"),
                }
                .encode(&mut wire)
                .unwrap();
            }
            DcpNoop { opaque: 10000001 }.encode(&mut wire).unwrap();
            SeqnoAdvanced {
                vbucket: vb,
                opaque,
                stream_id: None,
                seqno: 6,
            }
            .encode(&mut wire)
            .unwrap();
            if vb == 1 {
                StreamEnd {
                    vbucket: vb,
                    opaque,
                    stream_id: None,
                    reason: StreamEndReason::Ok,
                }
                .encode(&mut wire)
                .unwrap();
            }
            let mut input = Vec::new();
            for (i, chunk) in wire.chunks(40).enumerate() {
                input.push(chunk.len() as u8 | if i % 2 == 0 { 0x80 } else { 0 });
                input.extend_from_slice(chunk);
            }
            input.push(0x40 | 50); // 250 s of silence: dead connection
            std::fs::write(dir.join(name), input).unwrap();
        }
    }

    #[test]
    fn consumer_stream_ids_seeds() {
        let seeds = inputs("consumer_stream_ids");
        assert!(!seeds.is_empty(), "consumer_stream_ids seeds present");
        for s in seeds.iter().chain(&inputs("consumer")) {
            super::consumer_stream_ids(s);
        }
        let seed = |name: &str| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            fs::read(root.join("seeds/consumer_stream_ids").join(name)).expect("seed")
        };
        // Each stream took its messages; without the final silence the
        // connection stays up.
        let mut ends = seed("three-streams-one-ends");
        ends.pop();
        let outcome = super::consumer_stream_ids(&ends);
        assert!(!outcome.closed);
        assert!(outcome.stats.contains("items: 9,"), "{}", outcome.stats);
        assert!(
            outcome.stats.contains("streams_open: 2,"),
            "{}",
            outcome.stats
        );
        assert!(super::consumer_stream_ids(&seed("wrong-stream-id")).closed);
    }

    /// Writes the stream-id consumer seeds: each stream's messages framed
    /// with its id (collection-prefixed keys), then one framed with the
    /// wrong id, and a stream end.
    #[test]
    #[ignore]
    fn write_consumer_stream_ids_seeds() {
        use bytes::{Bytes, BytesMut};
        use dcp_proto::codec::Datatype;
        use dcp_proto::msg::{
            MarkerFormat, Mutation, SeqnoAdvanced, SnapshotFlags, SnapshotMarker, StreamEnd,
            StreamEndReason,
        };
        let (_, opaques) = super::ready_consumer_with_stream_ids(std::time::Instant::now());
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/consumer_stream_ids");
        std::fs::create_dir_all(&dir).unwrap();
        let mut wire = BytesMut::new();
        for (i, (vb, sid)) in super::STREAM_ID_STREAMS.into_iter().enumerate() {
            let opaque = opaques[i];
            let stream_id = Some(sid);
            SnapshotMarker {
                vbucket: vb,
                opaque,
                stream_id,
                start: 1,
                end: 6,
                flags: SnapshotFlags::MEMORY,
                format: MarkerFormat::V1,
            }
            .encode(&mut wire)
            .unwrap();
            for seqno in [1u64, 2, 4] {
                Mutation {
                    vbucket: vb,
                    opaque,
                    stream_id,
                    cas: seqno,
                    datatype: Datatype::JSON,
                    by_seqno: seqno,
                    rev_seqno: 1,
                    flags: 0,
                    expiration: 0,
                    lock_time: 0,
                    nru: 0,
                    key: Bytes::from(format!("\0key{seqno}")),
                    value: Bytes::from_static(b"{\"a\":1}"),
                }
                .encode(&mut wire)
                .unwrap();
            }
            SeqnoAdvanced {
                vbucket: vb,
                opaque,
                stream_id,
                seqno: 6,
            }
            .encode(&mut wire)
            .unwrap();
        }
        let end = |wire: &mut BytesMut, stream_id| {
            StreamEnd {
                vbucket: 0,
                opaque: opaques[1],
                stream_id,
                reason: StreamEndReason::Ok,
            }
            .encode(wire)
            .unwrap();
        };
        let chunked = |wire: &[u8]| {
            let mut input = Vec::new();
            for (i, chunk) in wire.chunks(40).enumerate() {
                input.push(chunk.len() as u8 | if i % 2 == 0 { 0x80 } else { 0 });
                input.extend_from_slice(chunk);
            }
            input
        };
        let mut ended = wire.clone();
        end(&mut ended, Some(2));
        let mut input = chunked(&ended);
        input.push(0x40 | 50); // 250 s of silence: dead connection
        std::fs::write(dir.join("three-streams-one-ends"), input).unwrap();
        // Vbucket 0's stream 2 ended by a frame naming stream 1.
        let mut wrong = wire;
        end(&mut wrong, Some(1));
        std::fs::write(dir.join("wrong-stream-id"), chunked(&wrong)).unwrap();
    }

    #[test]
    fn cluster_client_seeds() {
        // The captured connections, as a seed's and a node's bytes.
        for s in inputs("consumer_handshake")
            .iter()
            .chain(&inputs("cluster_client"))
        {
            super::cluster_client(s);
            let mut twice = s.clone();
            twice.push(0);
            twice.extend_from_slice(s);
            super::cluster_client(&twice);
        }
        for s in inputs("consumer") {
            super::cluster_client(&s);
        }
    }

    #[test]
    fn consumer_handshake_seeds() {
        let seeds = inputs("consumer_handshake");
        assert!(!seeds.is_empty(), "consumer_handshake seeds present");
        for s in &seeds {
            super::consumer_handshake(s);
        }
        for s in inputs("consumer") {
            super::consumer_handshake(&s);
        }
    }

    /// A captured connection replays through the handshake target to a
    /// ready consumer that received every stream message, and its prefixes
    /// (cut at every tenth control byte) replay without a panic.
    #[test]
    fn captured_connection_replays_to_a_ready_consumer() {
        let seed = fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/consumer_handshake/e2e-conn1"),
        )
        .expect("captured seed");
        let outcome = super::drive_consumer(
            super::handshake_consumer(std::time::Instant::now()),
            std::time::Instant::now(),
            &seed,
        );
        assert!(outcome.ready && !outcome.closed, "{outcome:?}");
        for cut in (0..seed.len()).step_by(seed.len() / 40 + 1) {
            super::consumer_handshake(&seed[..cut]);
        }
    }

    #[test]
    fn roundtrip_inputs() {
        for s in seeds().iter().chain(&inputs("roundtrip")) {
            super::roundtrip(s);
        }
    }

    /// Starting from a cloned state gives what building it for the input
    /// gives.
    #[test]
    fn cloned_states_match_fresh_ones() {
        let mut inputs_seen = 0;
        for s in inputs("consumer").iter().chain(&seeds()) {
            let mut input = Vec::new();
            for chunk in s.chunks(63) {
                input.push(0x80 | chunk.len() as u8);
                input.extend_from_slice(chunk);
            }
            input.push(0x40 | 30);
            let fresh = super::consumer_per_input(&input);
            static READY: std::sync::OnceLock<(dcp_proto::consumer::Consumer, std::time::Instant)> =
                std::sync::OnceLock::new();
            let (ready, start) = READY.get_or_init(|| {
                let start = std::time::Instant::now();
                (super::ready_consumer(start).0, start)
            });
            let cloned = super::drive_consumer(ready.clone(), *start, &input);
            assert_eq!(cloned, fresh);
            inputs_seen += 1;
        }
        for s in inputs("producer").iter().chain(&seeds()) {
            for mode in [0u8, 1] {
                let mut input = vec![mode];
                input.extend_from_slice(s.get(1..).unwrap_or_default());
                let fresh = super::producer_per_input(&input);
                let state = super::node_states()[usize::from(mode)].clone();
                let cloned = super::drive_producer(state, &input[1..]);
                assert_eq!(cloned, fresh);
                inputs_seen += 1;
            }
        }
        assert!(inputs_seen > 100);
    }

    /// The capture is deterministic: two runs give the same files.
    #[test]
    fn capture_is_deterministic() {
        let a = crate::capture::capture();
        let b = crate::capture::capture();
        assert!(a.len() >= 10, "{} files", a.len());
        assert_eq!(a, b);
    }

    /// Writes the captured seeds (see [`crate::capture`]). Run with
    /// `cargo test --lib -- --ignored write_captured_seeds` after a change
    /// to what our consumer or producer send.
    #[test]
    #[ignore]
    fn write_captured_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for (name, bytes) in crate::capture::capture() {
            let path = root.join(name);
            fs::create_dir_all(path.parent().expect("a directory")).expect("seed directory");
            fs::write(path, bytes).expect("seed written");
        }
    }

    #[test]
    fn producer_seeds() {
        // Every seed frame, before and after the canned login.
        for s in seeds_frames() {
            for mode in [0u8, 1] {
                let mut input = vec![mode];
                for chunk in s.chunks(63) {
                    input.push(0x80 | chunk.len() as u8);
                    input.extend_from_slice(chunk);
                }
                input.push(0x40 | 63);
                super::producer(&input);
            }
        }
        for s in inputs("producer") {
            super::producer(&s);
        }
    }

    #[test]
    fn cluster_config_seeds() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dcp-proto/tests/cluster_fixtures");
        let mut n = 0;
        for entry in std::fs::read_dir(fixtures).expect("fixtures").flatten() {
            let json = std::fs::read(entry.path()).expect("readable fixture");
            super::cluster_config(&json);
            for cut in [1, json.len() / 2, json.len().saturating_sub(1)] {
                super::cluster_config(&json[..cut.min(json.len())]);
            }
            n += 1;
        }
        assert!(n > 0, "fixtures present");
        for s in inputs("cluster_config") {
            super::cluster_config(&s);
        }
    }

    #[test]
    fn value_parser_seeds() {
        for s in seeds().iter().chain(&inputs("value_parsers")) {
            super::value_parsers(s);
            super::value_parsers(s.get(24..).unwrap_or_default());
        }
    }
}
