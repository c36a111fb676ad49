//! Our consumer against our producer, in memory, on a virtual clock:
//! stream a bucket, write while streaming, fail over (losing items),
//! reconnect from the saved positions, obey the rollback, and check that
//! the consumer's materialized view equals the bucket.

mod in_memory;
mod producer_harness;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use dcp_proto::bucket::{BucketConfig, DocumentKind, WriteOptions};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::producer::{ConnectionId, Node};
use in_memory::InMemory;
use producer_harness::*;

const VBUCKETS: u16 = 4;

/// The versions of one key the consumer applied: (seqno, value or None for
/// a delete).
type Versions = Vec<(u64, Option<Bytes>)>;

/// Every version the consumer applied, per (vbucket, key).
#[derive(Default)]
struct View {
    versions: HashMap<(u16, Bytes), Versions>,
    rollbacks: Vec<(u16, u64)>,
}

impl View {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Mutation(m, _) => self
                .versions
                .entry((m.vbucket, m.key))
                .or_default()
                .push((m.by_seqno, Some(m.value))),
            Event::Deletion(d, _) => self
                .versions
                .entry((d.vbucket, d.key))
                .or_default()
                .push((d.by_seqno, None)),
            Event::Expiration(e, _) => self
                .versions
                .entry((e.vbucket, e.key))
                .or_default()
                .push((e.by_seqno, None)),
            Event::Rollback { vbucket, seqno, .. } => {
                self.rollbacks.push((vbucket, seqno));
                for ((vb, _), versions) in self.versions.iter_mut() {
                    if *vb == vbucket {
                        versions.retain(|(s, _)| *s <= seqno);
                    }
                }
            }
            _ => {}
        }
    }

    /// Live documents: key -> (seqno, value).
    fn live(&self, vb: u16) -> BTreeMap<Bytes, (u64, Bytes)> {
        self.versions
            .iter()
            .filter(|((v, _), _)| *v == vb)
            .filter_map(|((_, key), versions)| {
                let (seqno, value) = versions.iter().max_by_key(|(s, _)| *s)?;
                value.clone().map(|v| (key.clone(), (*seqno, v)))
            })
            .collect()
    }
}

fn bucket_live(node: &Node, vb: u16) -> BTreeMap<Bytes, (u64, Bytes)> {
    node.bucket()
        .vbucket(vb)
        .unwrap()
        .documents()
        .filter(|d| d.kind == DocumentKind::Mutation)
        .map(|d| (d.key.clone(), (d.seqno, d.body())))
        .collect()
}

struct World {
    link: InMemory,
    view: View,
    writes: u64,
}

impl World {
    fn write(&mut self, n: u64) {
        let wall = self.link.node.wall_clock(self.link.now);
        for _ in 0..n {
            self.writes += 1;
            let key = format!("key-{}", self.writes % 37);
            let value = format!("{{\"n\":{}}}", self.writes);
            let bucket = self.link.node.bucket_mut();
            if self.writes.is_multiple_of(11) {
                let _ = bucket.delete(key.as_bytes(), 0, wall);
            } else {
                bucket
                    .set(key.as_bytes(), value, WriteOptions::new(), wall)
                    .unwrap();
            }
        }
    }

    /// Moves bytes both ways and applies events until nothing moves.
    fn pump(&mut self, consumer: &mut Consumer, conn: ConnectionId) {
        let view = &mut self.view;
        self.link
            .pump(consumer, conn, |_, event, _| view.apply(event));
    }

    fn connect(&mut self, name: &str) -> (Consumer, ConnectionId) {
        let config = ConsumerConfig::new(name, BUCKET)
            .with_buffer_size(4096)
            .with_auto_ack(true);
        self.link.connect(config, USER, PASSWORD)
    }

    fn check(&self) {
        for vb in 0..VBUCKETS {
            assert_eq!(
                self.view.live(vb),
                bucket_live(&self.link.node, vb),
                "vbucket {vb}"
            );
        }
    }
}

#[test]
fn the_consumer_view_equals_the_bucket_across_a_failover() {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(VBUCKETS)
        .with_checkpoints(8, 3);
    let config = config(VBUCKETS).with_bucket(bucket);
    let mut world = World {
        link: InMemory::new(config),
        view: View::default(),
        writes: 0,
    };
    world.write(300);

    let (mut consumer, conn) = world.connect("e2e:1");
    for vb in 0..VBUCKETS {
        consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    world.pump(&mut consumer, conn);
    world.check();

    // Write while streaming, in small steps.
    for _ in 0..10 {
        world.write(7);
        world.pump(&mut consumer, conn);
    }
    world.check();

    // Fail a vbucket over, losing its last items: the connection drops.
    let victim = 1;
    let entry = world.link.node.failover(victim, 3).unwrap();
    world.pump(&mut consumer, conn);
    assert!(world.link.node.is_closed(conn));
    let positions: Vec<_> = (0..VBUCKETS)
        .map(|vb| consumer.position(vb).expect("a position"))
        .collect();
    world.link.node.remove(conn);

    // More writes before the consumer comes back.
    world.write(40);

    let (mut consumer, conn) = world.connect("e2e:1");
    for (vb, position) in positions.into_iter().enumerate() {
        consumer
            .open_stream(vb as u16, StreamStart::Position(position), None)
            .unwrap();
    }
    world.pump(&mut consumer, conn);
    assert!(
        world
            .view
            .rollbacks
            .iter()
            .any(|&(vb, seqno)| vb == victim && seqno <= entry.seqno),
        "rolled back: {:?}",
        world.view.rollbacks
    );
    assert!((0..VBUCKETS).all(|vb| !world.view.live(vb).is_empty()));
    world.check();

    for _ in 0..5 {
        world.write(13);
        world.pump(&mut consumer, conn);
    }
    world.check();
}
