//! A failover whose branch point falls inside a snapshot the consumer had
//! only partly received (behavior.md §2.3, §8: a replica promoted at the
//! end of the last snapshot *it* completed, which need not match ours).
//!
//! The consumer must be rolled back to a point at or below the branch that
//! is a consistent state for it, and end with the bucket's documents: no
//! change lost, none applied twice without a rollback covering it.

mod in_memory;
mod producer_harness;

use dcp_proto::bucket::{BucketConfig, WriteOptions};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::producer::ConnectionId;
use dcp_proto::testing::{MaterializedView, live_documents};
use in_memory::InMemory;
use producer_harness::*;

struct World {
    link: InMemory,
    view: MaterializedView,
    markers: Vec<(u64, u64)>,
}

impl World {
    fn new() -> Self {
        // Large checkpoints: writes made while the consumer is idle arrive
        // as one memory snapshot.
        let bucket = BucketConfig::new(BUCKET)
            .with_vbuckets(1)
            .with_checkpoints(1000, 4);
        Self {
            link: InMemory::new(config(1).with_bucket(bucket)),
            view: MaterializedView::default(),
            markers: Vec::new(),
        }
    }

    /// `n` writes, one seqno each: sets, with every seventh write deleting
    /// a key set three writes earlier.
    fn write(&mut self, from: u64, n: u64) {
        let wall = self.link.node.wall_clock(self.link.now);
        for i in from..from + n {
            let bucket = self.link.node.bucket_mut();
            if i % 7 == 6 {
                let key = format!("key-{}", (i - 3) % 150);
                bucket.delete(key.as_bytes(), 0, wall).unwrap();
            } else {
                let key = format!("key-{}", i % 150);
                let value = format!("{{\"n\":{i}}}");
                bucket
                    .set(key.as_bytes(), value, WriteOptions::new(), wall)
                    .unwrap();
            }
        }
    }

    fn connect(&mut self) -> (Consumer, ConnectionId) {
        // A window of a few items and manual acks: the test decides how far
        // into a snapshot the consumer gets.
        let config = ConsumerConfig::new("mid-snapshot", BUCKET)
            .with_buffer_size(1024)
            .with_auto_ack(false);
        self.link.connect(config, USER, PASSWORD)
    }

    /// Applies events, acknowledging them while the view is below
    /// `ack_below`.
    fn pump(&mut self, consumer: &mut Consumer, conn: ConnectionId, ack_below: u64) {
        let (view, markers) = (&mut self.view, &mut self.markers);
        self.link.pump(consumer, conn, |consumer, event, now| {
            if let Event::SnapshotMarker(m, _) = &event {
                markers.push((m.start, m.end));
            }
            view.apply(&event).expect("no replay without rollback");
            if view.last_seqno(0) < ack_below {
                consumer.ack_at(event.credit(), now);
            }
        });
    }
}

/// Streams 100 items, then stops acknowledging somewhere inside the next
/// 100-item snapshot; the vbucket fails over with its branch at 120.
fn run(stop_at: u64) -> (u64, World) {
    let mut world = World::new();
    world.write(0, 100);
    let (mut consumer, conn) = world.connect();
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    world.pump(&mut consumer, conn, u64::MAX);
    assert_eq!(
        world.view.last_seqno(0),
        100,
        "markers {:?} stats {:?}",
        world.markers,
        consumer.stream_stats(0)
    );

    world.write(100, 100);
    world.pump(&mut consumer, conn, stop_at);
    let position = consumer.position(0).expect("a position");
    assert!(
        world.markers.contains(&(101, 200)),
        "one memory snapshot for the second batch: {:?}",
        world.markers
    );
    let received = world.view.last_seqno(0);
    assert!(
        (stop_at..200).contains(&received),
        "stopped inside the snapshot: at {received}"
    );
    assert_eq!((position.snapshot_start, position.snapshot_end), (101, 200));

    // The promoted replica had completed a snapshot ending at 120 (its
    // snapshots were not ours) and has nothing after it.
    let entry = world.link.node.failover_to(0, 120).unwrap();
    assert_eq!(entry.seqno, 120);
    world.pump(&mut consumer, conn, u64::MAX);
    world.link.node.remove(conn);
    world.write(200, 30);

    let (mut consumer, conn) = world.connect();
    consumer
        .open_stream(0, StreamStart::Position(position), None)
        .unwrap();
    world.pump(&mut consumer, conn, u64::MAX);
    let rollback = world
        .view
        .rollbacks
        .last()
        .map(|&(_, seqno)| seqno)
        .expect("rolled back");
    (rollback, world)
}

#[test]
fn branch_below_what_was_received_of_the_snapshot() {
    // Received up to ~150 of {101,200}; the branch at 120 is below it.
    let (rollback, world) = run(150);
    // §2.3: the snapshot {101,200} spans the branch (upper 120), so the
    // producer answers with its start, 101. Seqno 101 is inside the
    // (deduplicated) snapshot, not a state the consumer held, so it cuts
    // at 100, the end of the state before (§2.5).
    assert_eq!(rollback, 100);
    assert_eq!(
        world.view.live(0),
        live_documents(world.link.node.bucket(), 0)
    );
}

#[test]
fn branch_above_what_was_received_of_the_snapshot() {
    // Received up to ~105 of {101,200}: below the branch at 120, but the
    // snapshot reaches past it, so its items may have been deduplicated
    // across the branch; the consumer goes back before the snapshot.
    let (rollback, world) = run(105);
    assert_eq!(rollback, 100);
    assert_eq!(
        world.view.live(0),
        live_documents(world.link.node.bucket(), 0)
    );
}

#[test]
fn branch_inside_a_complete_deduplicated_snapshot() {
    // Two versions of one key in one checkpoint: the consumer receives the
    // snapshot {11,12} with only the version at 12. A replica that had
    // completed a snapshot at 11 (it streamed before the second write) is
    // promoted. The producer answers rollback 11, which the consumer never
    // held as a state: cutting at 11 would drop k11@12 and never receive
    // k11@11. It cuts at 10 and gets k11@11 again.
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(1)
        .with_checkpoints(2, 4);
    let mut world = World::new();
    world.link = InMemory::new(config(1).with_bucket(bucket));
    let set = |world: &mut World, key: &str, n: u64| {
        let wall = world.link.node.wall_clock(world.link.now);
        world
            .link
            .node
            .bucket_mut()
            .set(
                key.as_bytes(),
                format!("{{\"n\":{n}}}"),
                WriteOptions::new(),
                wall,
            )
            .unwrap();
    };
    for n in 1..=10 {
        set(&mut world, &format!("k{}", n % 4), n);
    }
    set(&mut world, "k11", 11);
    set(&mut world, "k11", 12);
    let (mut consumer, conn) = world.connect();
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    world.pump(&mut consumer, conn, u64::MAX);
    assert!(world.markers.contains(&(11, 12)), "{:?}", world.markers);
    let position = consumer.position(0).unwrap();
    assert_eq!(position.last_seqno, 12);

    world.link.node.failover_to(0, 11).unwrap();
    world.pump(&mut consumer, conn, u64::MAX);
    world.link.node.remove(conn);
    set(&mut world, "k0", 13);

    let (mut consumer, conn) = world.connect();
    consumer
        .open_stream(0, StreamStart::Position(position), None)
        .unwrap();
    world.pump(&mut consumer, conn, u64::MAX);
    assert_eq!(world.view.rollbacks.last(), Some(&(0, 10)));
    assert_eq!(
        world.view.live(0),
        live_documents(world.link.node.bucket(), 0)
    );
}
