//! Decoding a realistic DCP mutation stream, next to a memcpy baseline of the
//! same size measured in the same run.
//!
//! Run: `cargo bench -p dcp-proto --bench decode`
//!
//! Every stream is about 256 KiB, so input and memcpy source/destination stay
//! resident in L2. "frames" splits frames only; "messages" also decodes each
//! into its typed message (owned `Bytes` key and value).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dcp_proto::codec::{Datatype, Frame, FrameDecoder};
use dcp_proto::msg::{
    MarkerFormat, Message, Mutation, SnapshotFlags, SnapshotMarker, SystemEvent, SystemEventData,
};

const STREAM_BYTES: usize = 256 * 1024;

/// Picks a value size.
type ValueSize = fn(&mut Rng) -> usize;

/// Small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() as usize) % (hi - lo + 1)
    }
}

/// A stream of snapshots of 100 mutations each; value sizes from `size`.
fn stream(mut size: impl FnMut(&mut Rng) -> usize) -> (Bytes, u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = BytesMut::with_capacity(STREAM_BYTES + 4096);
    let mut seqno = 0u64;
    let mut frames = 0u64;
    let body = vec![b'x'; 4096];
    while buf.len() < STREAM_BYTES {
        if seqno.is_multiple_of(100) {
            SnapshotMarker {
                vbucket: 7,
                opaque: 0xabcd,
                stream_id: None,
                start: seqno + 1,
                end: seqno + 100,
                flags: SnapshotFlags::MEMORY | SnapshotFlags::CHECKPOINT,
                format: MarkerFormat::V1,
            }
            .encode(&mut buf)
            .expect("marker encodes");
            frames += 1;
        }
        seqno += 1;
        let key = format!("\u{8}user::{:08}", rng.next() % 1_000_000);
        let len = size(&mut rng);
        Mutation {
            vbucket: 7,
            opaque: 0xabcd,
            stream_id: None,
            cas: rng.next(),
            datatype: Datatype::JSON,
            by_seqno: seqno,
            rev_seqno: 1,
            flags: 0,
            expiration: 0,
            lock_time: 0,
            nru: 0,
            key: Bytes::from(key),
            value: Bytes::copy_from_slice(&body[..len]),
        }
        .encode(&mut buf)
        .expect("mutation encodes");
        frames += 1;
    }
    (buf.freeze(), frames)
}

fn decode_frames(mut buf: BytesMut) -> (usize, BytesMut) {
    let mut decoder = FrameDecoder::new();
    let mut n = 0;
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        black_box(&frame);
        n += 1;
    }
    (n, buf)
}

fn decode_messages(mut buf: BytesMut) -> (usize, BytesMut) {
    let mut decoder = FrameDecoder::new();
    let mut n = 0;
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let msg = Message::from_frame(frame).expect("valid stream");
        black_box(&msg);
        n += 1;
    }
    (n, buf)
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, ValueSize); 3] = [
        ("100B", |_| 100),
        ("1KiB", |_| 1024),
        ("mix_50_2000B", |r| r.range(50, 2000)),
    ];

    let mut group = c.benchmark_group("decode");
    for (name, size) in cases {
        let (bytes, frames) = stream(size);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("frames/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                decode_frames,
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("messages/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                decode_messages,
                BatchSize::PerIteration,
            )
        });
        group.throughput(Throughput::Elements(frames));
        group.bench_function(format!("messages_per_frame/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                decode_messages,
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    // One system event frame, decoded and its value read: the fixed struct
    // (version 1) against the FlatBuffers table (version 2, verified first).
    let mut group = c.benchmark_group("system_event");
    let data =
        SystemEventData::begin_collection(0x1f, 8, 9, Bytes::from_static(b"orders"), Some(3600));
    for (name, flatbuffers) in [("fixed_v1", false), ("flatbuffers_v2", true)] {
        let mut buf = BytesMut::new();
        SystemEvent::from_data(7, 0xabcd, None, 42, &data, flatbuffers)
            .and_then(|e| e.encode(&mut buf))
            .expect("system event encodes");
        let frame = Frame::parse(buf.freeze()).expect("one frame");
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                let event = SystemEvent::decode(black_box(&frame)).expect("valid");
                black_box(event.data().expect("valid value"))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("baseline");
    let src = vec![0x5au8; STREAM_BYTES];
    let mut dst = vec![0u8; STREAM_BYTES];
    group.throughput(Throughput::Bytes(STREAM_BYTES as u64));
    group.bench_function("memcpy_256KiB", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
