//! Our consumer against our producer, in memory, with sync writes and OSO
//! backfills: the materialized view (committed documents and pending
//! prepares) equals the bucket, with and without `enable_sync_writes`,
//! through memory and disk snapshots; and an OSO backfill cut by a
//! dropped connection mid-snapshot resumes without losing anything.

mod producer_harness;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::{BucketConfig, StoreMode, SyncWriteMode, WriteOptions};
use dcp_proto::codec::DurabilityLevel;
use dcp_proto::consumer::{Consumer, ConsumerConfig, ControlSetting, Event, StreamStart};
use dcp_proto::producer::{ConnectionId, Node};
use dcp_proto::testing::{MaterializedView, high_seqnos, visible_high_seqnos};
use producer_harness::*;

const VBUCKETS: u16 = 4;

struct World {
    node: Node,
    now: Instant,
    view: MaterializedView,
    /// Events seen, by kind: (prepares, commits, aborts, oso markers).
    seen: [u64; 4],
    rng: u64,
}

impl World {
    fn new(bucket: BucketConfig, oso_unfiltered: bool) -> Self {
        let config = config(VBUCKETS)
            .with_bucket(bucket)
            .with_oso_for_unfiltered_streams(oso_unfiltered);
        let now = Instant::now();
        let mut node = Node::new(config);
        node.wall_clock(now);
        node.bucket_mut().set_sync_write_mode(SyncWriteMode::Hold);
        Self {
            node,
            now,
            view: MaterializedView::default(),
            seen: [0; 4],
            rng: 0x5eed,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64: seeded, deterministic.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// `n` random operations: plain sets and deletes, durable sets and
    /// deletes (left pending), commits and aborts of pending ones.
    fn write(&mut self, n: usize) {
        let wall = self.node.wall_clock(self.now);
        for _ in 0..n {
            let r = self.next();
            let key = format!("key-{}", r % 53);
            let b = self.node.bucket_mut();
            let level = DurabilityLevel::Majority;
            // Failures (a pending key, a missing document) are part of the mix.
            let _ = match (r >> 8) % 8 {
                0..=2 => b
                    .set(key.as_bytes(), format!("v{r}"), WriteOptions::new(), wall)
                    .map(|_| ()),
                3 => b.delete(key.as_bytes(), 0, wall).map(|_| ()),
                4 => b
                    .durable_store(
                        StoreMode::Set,
                        key.as_bytes(),
                        format!("d{r}"),
                        WriteOptions::new(),
                        level,
                        wall,
                    )
                    .map(|_| ()),
                5 => b.durable_delete(key.as_bytes(), 0, level, wall).map(|_| ()),
                6 => b.commit_sync_write(key.as_bytes(), wall).map(|_| ()),
                _ => b.abort_sync_write(key.as_bytes(), wall).map(|_| ()),
            };
        }
    }

    fn connect(&mut self, name: &str, sync: bool, oso: bool) -> (Consumer, ConnectionId) {
        let mut config = ConsumerConfig::new(name, BUCKET)
            .with_credentials(Credentials::new(USER, PASSWORD))
            .with_buffer_size(4096)
            .with_auto_ack(true)
            .with_sync_writes(sync);
        if oso {
            config = config.with_control(ControlSetting::required(
                "enable_out_of_order_snapshots",
                "true_with_seqno_advanced",
            ));
        }
        let consumer = Consumer::new(config, "bm9uY2U", self.now).unwrap();
        (consumer, self.node.accept(self.now))
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Prepare(..) => self.seen[0] += 1,
            Event::Commit(..) => self.seen[1] += 1,
            Event::Abort(..) => self.seen[2] += 1,
            Event::OsoSnapshot(..) => self.seen[3] += 1,
            _ => {}
        }
        self.view.apply(event).unwrap();
    }

    /// Moves bytes both ways and applies events until nothing moves, or
    /// until `stop` says so after an event.
    fn pump_until(
        &mut self,
        consumer: &mut Consumer,
        conn: ConnectionId,
        mut stop: impl FnMut(&Event) -> bool,
    ) -> bool {
        for _ in 0..100_000 {
            let mut moved = false;
            let mut up = BytesMut::new();
            if consumer.poll_transmit(&mut up) > 0 {
                moved = true;
                if self.node.handle_input(conn, &mut up, self.now).is_err() {
                    consumer.handle_eof();
                    return false;
                }
            }
            let mut down = BytesMut::new();
            if self.node.poll_transmit(conn, &mut down, 512) > 0 {
                moved = true;
                consumer.handle_input(&mut down, self.now).unwrap();
            }
            while let Some(event) = consumer.poll_event() {
                moved = true;
                self.apply(&event);
                if stop(&event) {
                    return true;
                }
            }
            if !moved {
                self.now += Duration::from_millis(500);
                consumer.handle_timeout(self.now).unwrap();
                self.node.handle_timeout(conn, self.now);
                if !consumer.wants_transmit() && self.node.take_wakeups().is_empty() {
                    let mut probe = BytesMut::new();
                    if self.node.poll_transmit(conn, &mut probe, 512) == 0 {
                        return false;
                    }
                    consumer.handle_input(&mut probe, self.now).unwrap();
                }
            }
        }
        panic!("did not settle");
    }

    fn pump(&mut self, consumer: &mut Consumer, conn: ConnectionId) {
        self.pump_until(consumer, conn, |_| false);
    }

    fn check(&self, sync: bool) {
        let bucket = self.node.bucket();
        assert_eq!(self.view.first_difference(bucket), None, "live documents");
        assert_eq!(self.view.orphan_commits, 0);
        if sync {
            assert_eq!(
                self.view.first_pending_difference(bucket),
                None,
                "pending prepares"
            );
            assert!(self.view.reached(&high_seqnos(bucket)));
        } else {
            assert!((0..VBUCKETS).all(|vb| self.view.pending(vb).is_empty()));
            assert!(self.view.reached(&visible_high_seqnos(bucket)));
        }
    }
}

fn small_memory() -> BucketConfig {
    BucketConfig::new(BUCKET)
        .with_vbuckets(VBUCKETS)
        .with_checkpoints(6, 2)
}

fn the_view_equals_the_bucket(sync: bool) -> [u64; 4] {
    let mut world = World::new(small_memory(), false);
    world.write(400);
    let (mut consumer, conn) = world.connect("e2e:sync", sync, false);
    for vb in 0..VBUCKETS {
        consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    world.pump(&mut consumer, conn);
    world.check(sync);
    // Writes while streaming, in small steps (memory snapshots), and a
    // burst that drops checkpoints the stream has not read (disk again).
    for _ in 0..20 {
        world.write(9);
        world.pump(&mut consumer, conn);
        world.check(sync);
    }
    world.write(200);
    world.pump(&mut consumer, conn);
    world.check(sync);
    world.seen
}

#[test]
fn with_sync_writes_the_view_holds_the_bucket_and_its_pending_prepares() {
    let [prepares, commits, aborts, _] = the_view_equals_the_bucket(true);
    assert!(
        prepares > 20 && commits > 5 && aborts > 5,
        "{prepares} {commits} {aborts}"
    );
}

#[test]
fn without_sync_writes_the_view_holds_the_committed_bucket() {
    let [prepares, commits, aborts, _] = the_view_equals_the_bucket(false);
    assert_eq!((prepares, commits, aborts), (0, 0, 0));
}

#[test]
fn an_oso_backfill_cut_mid_snapshot_resumes_without_loss() {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(VBUCKETS)
        .with_checkpoints(4, 1);
    let mut world = World::new(bucket, true);
    world
        .node
        .bucket_mut()
        .set_sync_write_mode(SyncWriteMode::Immediate);
    world.write(600);
    let (mut consumer, conn) = world.connect("e2e:oso:1", false, true);
    for vb in 0..VBUCKETS {
        consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    // Cut the connection after a few items inside the first OSO snapshot.
    let mut in_oso = 0;
    let cut = world.pump_until(&mut consumer, conn, |e| {
        if matches!(e, Event::OsoSnapshot(m, _) if m.is_start()) {
            in_oso = 1;
        } else if in_oso > 0 && matches!(e, Event::Mutation(..) | Event::Deletion(..)) {
            in_oso += 1;
        }
        in_oso > 10
    });
    assert!(cut, "an OSO snapshot was under way");
    let checkpoint = consumer.checkpoint();
    world.node.drop_connection(conn).unwrap();
    consumer.handle_eof();
    world.node.remove(conn);
    // Whatever vbucket was inside OSO resumes from before it.
    assert!(checkpoint.vbuckets.values().any(|p| p.last_seqno == 0));

    world.write(50);
    let (mut consumer, conn) = world.connect("e2e:oso:2", false, true);
    for (vb, position) in checkpoint.vbuckets {
        consumer
            .open_stream(vb, StreamStart::Position(position), None)
            .unwrap();
    }
    world.pump(&mut consumer, conn);
    assert!(world.seen[3] >= 2, "OSO snapshots seen: {}", world.seen[3]);
    world.check(false);
    world.write(30);
    world.pump(&mut consumer, conn);
    world.check(false);
}
