//! Heap bytes a consumer (and the producer) keeps per idle open stream, for
//! 1, 64 and 1024 streams, counted by an instrumented global allocator.
//!
//! Run: `cargo bench -p dcp-proto --bench memory`

use std::alloc::System;
use std::time::Instant;

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::consumer::{Consumer, ConsumerConfig, StreamStart};
use dcp_proto::producer::{ConnectionId, Node, NodeConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Net heap bytes still held after running `f`.
fn retained<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let region = Region::new(GLOBAL);
    let out = f();
    let stats = region.change();
    (
        out,
        stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
            + stats.bytes_reallocated as i64,
    )
}

/// Moves bytes both ways until nothing moves; returns the heap bytes the
/// consumer and the node each kept while doing so.
fn pump(consumer: &mut Consumer, node: &mut Node, conn: ConnectionId, now: Instant) -> (i64, i64) {
    let (mut kept_consumer, mut kept_node) = (0, 0);
    loop {
        // Each buffer is counted against the side that filled it, including
        // its release once the other side is done with it.
        let mut up = BytesMut::new();
        let ((), c1) = retained(|| {
            consumer.poll_transmit(&mut up);
        });
        let mut down = BytesMut::new();
        let ((), n1) = retained(|| {
            if !up.is_empty() {
                node.handle_input(conn, &mut up, now)
                    .expect("producer input");
            }
            node.poll_transmit(conn, &mut down, 1 << 20);
        });
        let ((), c2) = retained(|| drop(up));
        let moved = !down.is_empty();
        let ((), c3) = retained(|| {
            consumer
                .handle_input(&mut down, now)
                .expect("consumer input");
            while let Some(event) = consumer.poll_event() {
                drop(event);
            }
        });
        let ((), n2) = retained(|| drop(down));
        kept_consumer += c1 + c2 + c3;
        kept_node += n1 + n2;
        if !moved && !consumer.wants_transmit() {
            return (kept_consumer, kept_node);
        }
    }
}

fn main() {
    println!("| streams | consumer bytes/stream | producer bytes/stream |");
    println!("|---|---|---|");
    for streams in [1u16, 64, 1024] {
        let now = Instant::now();
        let mut node = Node::new(
            NodeConfig::new("default")
                .with_vbuckets(1024)
                .with_user("u", "p")
                .with_scram_iterations(1)
                .with_seed(1),
        );
        let config = ConsumerConfig::new("mem", "default")
            .with_credentials(Credentials::new("u", "p"))
            .with_auto_ack(true);
        let mut consumer = Consumer::new(config, "bm9uY2U", now).expect("consumer");
        let conn = node.accept(now);
        pump(&mut consumer, &mut node, conn, now);
        assert!(consumer.is_ready());
        let ((), opened) = retained(|| {
            for vb in 0..streams {
                consumer
                    .open_stream(vb, StreamStart::Beginning, None)
                    .expect("open");
            }
        });
        let (c, n) = pump(&mut consumer, &mut node, conn, now);
        assert_eq!(consumer.stats().streams_open, usize::from(streams));
        println!(
            "| {streams} | {} | {} |",
            (opened + c) / i64::from(streams),
            n / i64::from(streams)
        );
    }
}
