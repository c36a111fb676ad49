//! The in-memory pipeline: our producer streaming a pre-written bucket to our
//! consumer, no sockets, next to a memcpy of the same number of wire bytes
//! measured in the same run.
//!
//! Run: `cargo bench -p dcp-proto --bench pipeline`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::WriteOptions;
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::producer::{Node, NodeConfig};

const VBUCKETS: u16 = 16;
const ITEMS: u64 = 50_000;
const VALUE: [u8; 100] = [b'x'; 100];

fn node() -> Node {
    let mut node = Node::new(
        NodeConfig::new("default")
            .with_vbuckets(VBUCKETS)
            .with_seed(1)
            .with_user("bench", "bench")
            .with_scram_iterations(1),
    );
    let wall = node.wall_clock(Instant::now());
    for i in 0..ITEMS {
        let key = format!("key-{i:08}");
        node.bucket_mut()
            .set(key.as_bytes(), &VALUE[..], WriteOptions::new(), wall)
            .expect("write");
    }
    node
}

/// Streams every vbucket from the beginning to its current end; returns the
/// number of changes and the bytes the producer sent.
fn stream_all(node: &mut Node, window: u32, now: Instant) -> (u64, u64) {
    let config = ConsumerConfig::new("bench", "default")
        .with_credentials(Credentials::new("bench", "bench"))
        .with_buffer_size(window)
        .with_auto_ack(true);
    let mut consumer = Consumer::new(config, "bm9uY2U", now).expect("consumer");
    for vb in 0..VBUCKETS {
        let end = node.bucket().vbucket(vb).expect("vbucket").high_seqno();
        consumer
            .open_stream(vb, StreamStart::Beginning, Some(end))
            .expect("open");
    }
    let conn = node.accept(now);
    let (mut up, mut down) = (BytesMut::new(), BytesMut::with_capacity(256 * 1024));
    let (mut items, mut bytes, mut ended) = (0u64, 0u64, 0u16);
    while ended < VBUCKETS {
        if consumer.poll_transmit(&mut up) > 0 {
            node.handle_input(conn, &mut up, now)
                .expect("producer input");
        }
        bytes += node.poll_transmit(conn, &mut down, 256 * 1024) as u64;
        if let Err(e) = consumer.handle_input(&mut down, now) {
            panic!("consumer: {e}");
        }
        while let Some(event) = consumer.poll_event() {
            match event {
                Event::Mutation(m, _) => {
                    black_box(&m);
                    items += 1;
                }
                Event::StreamEnded { .. } => ended += 1,
                _ => {}
            }
        }
    }
    node.remove(conn);
    (items, bytes)
}

fn bench(c: &mut Criterion) {
    let mut node = node();
    let now = Instant::now() + Duration::from_secs(1);
    let (items, wire_bytes) = stream_all(&mut node, 1 << 20, now);
    assert_eq!(items, ITEMS);

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(items));
    for (name, window) in [("window_1MiB", 1u32 << 20), ("window_64KiB", 64 << 10)] {
        group.bench_function(format!("items/{name}"), |b| {
            b.iter(|| stream_all(&mut node, window, now))
        });
    }
    group.throughput(Throughput::Bytes(wire_bytes));
    group.bench_function("bytes/window_1MiB", |b| {
        b.iter(|| stream_all(&mut node, 1 << 20, now))
    });
    let src = vec![0x5au8; wire_bytes as usize];
    let mut dst = vec![0u8; wire_bytes as usize];
    group.bench_function("baseline/memcpy_same_bytes", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
