//! Snappy on the producer (HELLO, `force_value_compression`, compressed
//! stream values, compressed SETs) and between our consumer and our node.

mod producer_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dcp_proto::auth::Credentials;
use dcp_proto::codec::{Datatype, Frame, FrameHead, Opcode, Status};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, SnappyMode, StreamStart};
use dcp_proto::msg::client::{HelloFeature, Stat, StatResponse, Store};
use dcp_proto::msg::{Message, Mutation, OpenFlags, compress_value, decompress_value};
use producer_harness::*;

const SNAPPY_FEATURES: [HelloFeature; 4] = [
    HelloFeature::Xerror,
    HelloFeature::SelectBucket,
    HelloFeature::Json,
    HelloFeature::Snappy,
];

/// A compressible JSON value.
fn big_json(i: usize) -> String {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "abc".repeat(100))
}

/// A DCP connection that negotiated Snappy (or not).
fn client(h: &mut Harness, name: &str, snappy: bool) -> Client {
    let mut c = h.connect();
    if snappy {
        h.login_with(&mut c, &SNAPPY_FEATURES);
    } else {
        h.login(&mut c);
    }
    assert_eq!(h.open(&mut c, name, OpenFlags::empty()), Status::Success);
    c
}

fn mutations(frames: &[Frame]) -> Vec<Mutation> {
    frames
        .iter()
        .filter_map(|f| match decode(f) {
            Message::Mutation(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn stat(h: &mut Harness, c: &mut Client, group: &str, name: &str) -> Option<String> {
    let g = group.to_owned();
    h.send(c, |b| Stat::new(77, g).encode(b)).unwrap();
    h.recv(c)
        .iter()
        .filter(|f| f.opcode() == Opcode::Stat)
        .map(|f| StatResponse::decode(f).unwrap())
        .find(|s| &s.key[..] == name.as_bytes())
        .map(|s| String::from_utf8(s.value.to_vec()).unwrap())
}

#[test]
fn hello_offers_snappy() {
    let mut h = Harness::new(config(1));
    let mut c = h.connect();
    let o = h.opaque();
    let response = h.request(&mut c, |b| {
        dcp_proto::msg::client::Hello {
            opaque: o,
            agent: Bytes::from_static(b"t"),
            features: vec![HelloFeature::Snappy, HelloFeature::SnappyEverywhere],
        }
        .encode(b)
    });
    let response = dcp_proto::msg::client::HelloResponse::decode(&response).unwrap();
    assert_eq!(response.features, vec![HelloFeature::Snappy]);
}

#[test]
fn force_value_compression_needs_snappy() {
    let mut h = Harness::new(config(1));
    let mut plain = client(&mut h, "plain", false);
    assert_eq!(
        h.control(&mut plain, "force_value_compression", "true"),
        Status::Einval
    );
    let mut snappy = client(&mut h, "snappy", true);
    assert_eq!(
        h.control(&mut snappy, "force_value_compression", "true"),
        Status::Success
    );
}

#[test]
fn values_are_compressed_when_smaller_and_only_for_snappy_clients() {
    let mut h = Harness::new(config(1));
    h.set("big", &big_json(1));
    h.set("tiny", "{}");
    let expected = [big_json(1), "{}".to_owned()];

    // Snappy client: the big value compressed, the tiny one not.
    let mut c = client(&mut h, "snappy", true);
    h.stream_req(&mut c, req(0, 1));
    let sent = mutations(&h.recv(&mut c));
    assert_eq!(sent.len(), 2);
    assert!(sent[0].datatype.is_snappy() && sent[0].datatype.is_json());
    assert!(sent[0].value.len() < expected[0].len());
    assert_eq!(sent[1].datatype, Datatype::JSON);
    for (m, want) in sent.iter().zip(&expected) {
        let (datatype, value) = decompress_value(m.datatype, &m.value, 1 << 20).unwrap();
        assert_eq!((datatype, &value[..]), (Datatype::JSON, want.as_bytes()));
    }

    // With force_value_compression every non-empty value is compressed.
    let mut f = client(&mut h, "forced", true);
    assert_eq!(
        h.control(&mut f, "force_value_compression", "true"),
        Status::Success
    );
    let mut admin = h.connect();
    h.login(&mut admin);
    let stat_name = "eq_dcpq:forced:force_value_compression";
    assert_eq!(
        stat(&mut h, &mut admin, "dcp", stat_name).as_deref(),
        Some("true")
    );
    h.stream_req(&mut f, req(0, 1));
    let forced = mutations(&h.recv(&mut f));
    assert_eq!(forced.len(), 2);
    for (m, want) in forced.iter().zip(&expected) {
        assert!(m.datatype.is_snappy(), "{m:?}");
        let (_, value) = decompress_value(m.datatype, &m.value, 1 << 20).unwrap();
        assert_eq!(&value[..], want.as_bytes());
    }

    // Without Snappy: plain values.
    let mut p = client(&mut h, "plain", false);
    h.stream_req(&mut p, req(0, 1));
    let plain = mutations(&h.recv(&mut p));
    assert_eq!(plain.len(), 2);
    for (m, want) in plain.iter().zip(&expected) {
        assert_eq!(
            (m.datatype, &m.value[..]),
            (Datatype::JSON, want.as_bytes())
        );
    }
}

#[test]
fn flow_control_counts_the_compressed_frame() {
    let mut h = Harness::new(config(1));
    for i in 0..5 {
        h.set(&format!("k{i}"), &big_json(i));
    }
    let mut c = client(&mut h, "flow", true);
    assert_eq!(
        h.control(&mut c, "connection_buffer_size", "100000"),
        Status::Success
    );
    h.stream_req(&mut c, req(0, 1));
    let frames = h.recv(&mut c);
    assert_eq!(mutations(&frames).len(), 5);
    let sent: usize = frames
        .iter()
        .filter(|f| f.is_request())
        .map(Frame::wire_len)
        .sum();
    let mut admin = h.connect();
    h.login(&mut admin);
    assert_eq!(
        stat(&mut h, &mut admin, "dcp", "eq_dcpq:flow:unacked_bytes"),
        Some(sent.to_string())
    );
}

fn store(opaque: u32, key: &str, datatype: Datatype, value: Bytes) -> Store {
    Store {
        opcode: Opcode::Set,
        vbucket: 0,
        opaque,
        cas: 0,
        datatype,
        flags: 0,
        expiry: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value,
    }
}

#[test]
fn compressed_sets_reach_clients_without_snappy_as_plain_values() {
    let mut h = Harness::new(config(1));
    let plain = Bytes::from(big_json(7));
    let (datatype, packed) = compress_value(Datatype::RAW, &plain).unwrap();

    // Without Snappy negotiated, a Snappy SET is refused.
    let mut kv = h.connect();
    h.login(&mut kv);
    let o = h.opaque();
    let refused = h.status(&mut kv, |b| {
        store(o, "doc", datatype, packed.clone()).encode(b)
    });
    assert_eq!(refused, Status::Einval);

    let mut kv = h.connect();
    h.login_with(&mut kv, &SNAPPY_FEATURES);
    let o = h.opaque();
    let stored = h.status(&mut kv, |b| {
        store(o, "doc", datatype, packed.clone()).encode(b)
    });
    assert_eq!(stored, Status::Success);
    // Corrupt data and hostile lengths are refused.
    let o = h.opaque();
    let corrupt = Bytes::from_static(&[0x20, 0x00, 0x01]);
    let refused = h.status(&mut kv, |b| store(o, "bad", datatype, corrupt).encode(b));
    assert_eq!(refused, Status::Einval);
    let o = h.opaque();
    let hostile = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let refused = h.status(&mut kv, |b| store(o, "bad", datatype, hostile).encode(b));
    assert_eq!(refused, Status::E2big);

    // APPEND with a compressed value appends the plain bytes.
    let tail = Bytes::from("-tail".repeat(20));
    let (_, packed_tail) = compress_value(Datatype::RAW, &tail).unwrap();
    let o = h.opaque();
    let appended = h.status(&mut kv, |b| {
        FrameHead::request(Opcode::Append, 0, o)
            .with_datatype(Datatype::SNAPPY)
            .encode(b, &[], &[], b"doc", &packed_tail)
    });
    assert_eq!(appended, Status::Success);
    let plain = Bytes::from([&plain[..], &tail[..]].concat());

    let doc = h
        .node
        .bucket()
        .vbucket(0)
        .unwrap()
        .documents()
        .find(|d| &d.key[..] == b"doc")
        .unwrap()
        .clone();
    assert_eq!(doc.value, plain);
    assert!(!doc.datatype.is_snappy());

    let mut p = client(&mut h, "plain", false);
    h.stream_req(&mut p, req(0, 1));
    let sent = mutations(&h.recv(&mut p));
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].datatype, &sent[0].value), (doc.datatype, &plain));

    let mut s = client(&mut h, "snappy", true);
    h.stream_req(&mut s, req(0, 1));
    let sent = mutations(&h.recv(&mut s));
    assert_eq!(sent.len(), 1);
    assert!(sent[0].datatype.is_snappy());
    let decompressed = decompress_value(sent[0].datatype, &sent[0].value, 1 << 20).unwrap();
    assert_eq!(decompressed, (doc.datatype, plain));
}

// ----- our consumer against our node ------------------------------------------

/// Live documents: key -> (seqno, value).
type Live = BTreeMap<Bytes, (u64, Bytes)>;

#[test]
fn the_consumer_decompresses_what_the_node_compresses() {
    const VBUCKETS: u16 = 4;
    let mut h = Harness::new(config(VBUCKETS));
    for i in 0..200 {
        let key = format!("key-{}", i % 53);
        if i % 13 == 0 {
            let wall = h.wall();
            let _ = h.node.bucket_mut().delete(key.as_bytes(), 0, wall);
        } else {
            let value = if i % 3 == 0 {
                "{}".to_owned()
            } else {
                big_json(i)
            };
            h.set(&key, &value);
        }
    }
    let config = ConsumerConfig::new("snappy:e2e", BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_snappy(SnappyMode::Decompress)
        .with_buffer_size(4096)
        .with_auto_ack(true);
    let mut consumer = Consumer::new(config, "bm9uY2U", h.now).unwrap();
    let conn = h.node.accept(h.now);
    for vb in 0..VBUCKETS {
        consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    let mut view: BTreeMap<u16, Live> = BTreeMap::new();
    let mut compressed_bytes_seen = false;
    let mut settled = false;
    for _ in 0..10_000 {
        let mut moved = false;
        let mut up = BytesMut::new();
        if consumer.poll_transmit(&mut up) > 0 {
            moved = true;
            h.node.handle_input(conn, &mut up, h.now).unwrap();
        }
        let mut down = BytesMut::new();
        if h.node.poll_transmit(conn, &mut down, 16 * 1024) > 0 {
            moved = true;
            // Peek at the raw frames: some values travel compressed.
            let mut copy = down.clone();
            let mut decoder = dcp_proto::codec::FrameDecoder::new();
            while let Some(frame) = decoder.decode(&mut copy).unwrap() {
                if frame.opcode() == Opcode::DcpMutation && frame.datatype().is_snappy() {
                    compressed_bytes_seen = true;
                }
            }
            consumer.handle_input(&mut down, h.now).unwrap();
        }
        while let Some(event) = consumer.poll_event() {
            moved = true;
            match event {
                Event::Ready(n) => assert!(n.snappy),
                Event::Mutation(m, _) => {
                    assert!(!m.datatype.is_snappy());
                    view.entry(m.vbucket)
                        .or_default()
                        .insert(m.key, (m.by_seqno, m.value));
                }
                Event::Deletion(d, _) => {
                    view.entry(d.vbucket).or_default().remove(&d.key);
                }
                _ => {}
            }
        }
        if !moved {
            h.now += Duration::from_millis(500);
            consumer.handle_timeout(h.now).unwrap();
            h.node.handle_timeout(conn, h.now);
            let mut probe = BytesMut::new();
            if !consumer.wants_transmit() && h.node.poll_transmit(conn, &mut probe, 16 * 1024) == 0
            {
                settled = true;
                break;
            }
            consumer.handle_input(&mut probe, h.now).unwrap();
        }
    }
    assert!(settled, "did not settle");
    assert!(compressed_bytes_seen);
    // Credit is the size received, which is what the node counted.
    let mut admin = h.connect();
    h.login(&mut admin);
    let sent = stat(
        &mut h,
        &mut admin,
        "dcp",
        "eq_dcpq:snappy:e2e:total_bytes_sent",
    );
    assert_eq!(sent, Some(consumer.stats().flow_bytes_received.to_string()));
    for vb in 0..VBUCKETS {
        let bucket: Live = h
            .node
            .bucket()
            .vbucket(vb)
            .unwrap()
            .documents()
            .filter(|d| !d.is_deleted())
            .map(|d| (d.key.clone(), (d.seqno, d.body())))
            .collect();
        assert_eq!(view.remove(&vb).unwrap_or_default(), bucket, "vbucket {vb}");
    }
}
