//! The checks behind each fuzz target, kept in a library so the seed corpus
//! can be replayed as ordinary tests (`cargo test --manifest-path
//! fuzz/Cargo.toml`).
//!
//! Every function must return normally for any input: a panic is a bug in
//! `dcp-proto` (or a broken invariant asserted here).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, Frame, FrameDecoder, HEADER_LEN, Header};
use dcp_proto::consumer::{Consumer, ConsumerConfig, SnappyMode, StreamStart};
use dcp_proto::msg::client::HelloResponse;
use dcp_proto::msg::{
    CollectionKey, FailoverEntry, FailoverLog, Message, StatusResponse, StreamRequestResponse,
    XattrValue, compress_value, decompress_value, read_leb128_u32,
};

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
    let mut decoder = FrameDecoder::new();
    let mut tx = BytesMut::new();
    let mut opaques = Vec::new();
    while opaques.len() < 2 {
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
    (consumer, [opaques[0], opaques[1]])
}

/// The consumer's whole input path: producer bytes in chunks, with time
/// passing and acks given or withheld. Each control byte: low 6 bits = chunk
/// length (or seconds/5 to advance), bit 6 = advance the clock instead of
/// reading, bit 7 = ack the events polled after this chunk.
pub fn consumer(data: &[u8]) {
    let start = Instant::now();
    let (mut consumer, _) = ready_consumer(start);
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
    for position in consumer.checkpoint().vbuckets.values() {
        let r = position.resume();
        assert!(r.snap_start_seqno <= r.start_seqno && r.start_seqno <= r.snap_end_seqno);
    }
}

/// The producer's whole input path: one connection to a small node with
/// documents. Byte 0 picks a canned prefix (nothing, or a login and
/// DCP_OPEN), then the same control-byte format as [`consumer`]: low 6 bits
/// = chunk length (or seconds/5 to advance), bit 6 = advance the clock, bit
/// 7 = write a document between chunks.
pub fn producer(data: &[u8]) {
    use dcp_proto::bucket::WriteOptions;
    use dcp_proto::msg::client::{Hello, HelloFeature, SaslAuth, SelectBucket};
    use dcp_proto::msg::{Open, OpenFlags};
    use dcp_proto::producer::{Node, NodeConfig};

    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let start = Instant::now();
    let mut node = Node::new(
        NodeConfig::new("default")
            .with_vbuckets(4)
            .with_user("u", "p")
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
    let mut rx = BytesMut::new();
    if mode & 1 == 1 {
        let features = vec![HelloFeature::Xerror, HelloFeature::SelectBucket];
        Hello {
            opaque: 1,
            agent: Bytes::from_static(b"fuzz"),
            features,
        }
        .encode(&mut rx)
        .expect("encodes");
        SaslAuth::plain(2, b"u", b"p")
            .encode(&mut rx)
            .expect("encodes");
        SelectBucket::new(3, "default")
            .encode(&mut rx)
            .expect("encodes");
        let name = Bytes::from_static(b"fuzz");
        Open {
            opaque: 4,
            flags: OpenFlags::PRODUCER,
            name,
            consumer_name: None,
        }
        .encode(&mut rx)
        .expect("encodes");
    }
    let mut now = start;
    let mut tx = BytesMut::new();
    let mut written = 8u8;
    loop {
        if node.handle_input(id, &mut rx, now).is_err() || node.is_closed(id) {
            let _ = node.poll_transmit(id, &mut tx, 1 << 20);
            node.remove(id);
            return;
        }
        while node.poll_transmit(id, &mut tx, 64 * 1024) > 0 {
            tx.clear();
        }
        let Some((&control, tail)) = rest.split_first() else {
            return;
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
        if control & 0x80 != 0 {
            written = written.wrapping_add(1);
            let wall = node.wall_clock(now);
            let _ = node.bucket_mut().set(
                &[b'k', written % 16],
                &b"{\"v\":1}"[..],
                WriteOptions::new(),
                wall,
            );
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
