//! Consistent-snapshot delivery: our consumer against our producer in
//! memory, on a virtual clock, fed a few bytes at a time. At every poll the
//! application's view of each vbucket outside a snapshot being handed out
//! must equal the producer's state at that snapshot's end; partial
//! snapshots are never handed out; checkpoints cover complete snapshots
//! only; the flow-control window never stalls a snapshot larger than it.

mod producer_harness;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::{BucketConfig, WriteOptions};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::msg::StreamEndReason;
use dcp_proto::producer::{ConnectionId, Node};
use dcp_proto::session::Checkpoint;
use dcp_proto::testing::{Live, MaterializedView, live_documents};
use producer_harness::*;
use proptest::prelude::*;

/// Per vbucket: the producer's live documents after each seqno.
type History = HashMap<u16, BTreeMap<u64, Live>>;

struct World {
    node: Node,
    now: Instant,
    conn: ConnectionId,
    consumer: Consumer,
    view: MaterializedView,
    history: History,
    writes: u64,
    vbuckets: u16,
    config: ConsumerConfig,
    /// Vbuckets whose snapshot is being handed out (marker polled, its
    /// `SnapshotComplete` not yet).
    in_batch: HashMap<u16, bool>,
    /// The vbucket whose released snapshot is being polled.
    batch_owner: Option<u16>,
    /// The end of the last complete snapshot polled, per vbucket.
    complete_at: HashMap<u16, u64>,
    /// Every event polled.
    log: Vec<Event>,
    max_held: u64,
}

impl World {
    fn new(vbuckets: u16, checkpoint_items: usize, config: ConsumerConfig) -> Self {
        let bucket = BucketConfig::new(BUCKET)
            .with_vbuckets(vbuckets)
            .with_checkpoints(checkpoint_items, 3);
        let mut node = Node::new(producer_harness::config(vbuckets).with_bucket(bucket));
        let now = Instant::now();
        node.wall_clock(now);
        let conn = node.accept(now);
        let consumer = Consumer::new(config.clone(), "bm9uY2U", now).unwrap();
        let mut history = History::new();
        for vb in 0..vbuckets {
            history.entry(vb).or_default().insert(0, Live::new());
        }
        Self {
            node,
            now,
            conn,
            consumer,
            view: MaterializedView::default(),
            history,
            writes: 0,
            vbuckets,
            config,
            in_batch: HashMap::new(),
            batch_owner: None,
            complete_at: HashMap::new(),
            log: Vec::new(),
            max_held: 0,
        }
    }

    fn write(&mut self, n: u64) {
        let wall = self.node.wall_clock(self.now);
        for _ in 0..n {
            self.writes += 1;
            let key = format!("key-{}", self.writes % 97);
            let info = if self.writes.is_multiple_of(7) {
                self.node.bucket_mut().delete(key.as_bytes(), 0, wall)
            } else {
                self.node.bucket_mut().set(
                    key.as_bytes(),
                    format!("{{\"n\":{}}}", self.writes),
                    WriteOptions::new(),
                    wall,
                )
            };
            if let Ok(info) = info {
                let vb = self.node.bucket().vbucket_of(key.as_bytes());
                let live = live_documents(self.node.bucket(), vb);
                self.history.entry(vb).or_default().insert(info.seqno, live);
            }
        }
    }

    fn open_all(&mut self, start: impl Fn(u16) -> StreamStart) {
        for vb in 0..self.vbuckets {
            self.consumer.open_stream(vb, start(vb), None).unwrap();
        }
    }

    /// One exchange: the consumer's bytes up, at most `budget` bytes down,
    /// then every event polled (and checked). Returns whether anything moved.
    fn step(&mut self, budget: usize) -> bool {
        let mut moved = false;
        let mut up = BytesMut::new();
        if self.consumer.poll_transmit(&mut up) > 0 {
            moved = true;
            if self
                .node
                .handle_input(self.conn, &mut up, self.now)
                .is_err()
            {
                self.consumer.handle_eof();
                return false;
            }
        }
        let mut down = BytesMut::new();
        if self.node.poll_transmit(self.conn, &mut down, budget) > 0 {
            moved = true;
            self.consumer.handle_input(&mut down, self.now).unwrap();
        }
        self.max_held = self.max_held.max(self.consumer.stats().held_bytes);
        while let Some(event) = self.consumer.poll_event() {
            moved = true;
            self.on_event(event);
        }
        moved
    }

    /// Applies one polled event and checks the consistency property.
    fn on_event(&mut self, event: Event) {
        let credit = event.credit();
        let vb = event.vbucket();
        match &event {
            Event::SnapshotMarker(m, _) => {
                if let Some(owner) = self.batch_owner {
                    assert_eq!(owner, m.vbucket, "snapshots interleaved");
                }
                self.in_batch.insert(m.vbucket, true);
                self.batch_owner = Some(m.vbucket);
            }
            Event::SnapshotComplete { vbucket, end, .. } => {
                self.in_batch.insert(*vbucket, false);
                self.batch_owner = None;
                self.complete_at.insert(*vbucket, *end);
            }
            Event::Rollback { vbucket, seqno, .. } => {
                self.complete_at.insert(*vbucket, *seqno);
            }
            Event::Mutation(m, _) => {
                assert!(
                    self.in_batch.get(&m.vbucket).copied().unwrap_or(false),
                    "change outside a released snapshot: vb {} seqno {}",
                    m.vbucket,
                    m.by_seqno
                );
            }
            Event::Deletion(d, _) => {
                assert!(self.in_batch.get(&d.vbucket).copied().unwrap_or(false));
            }
            _ => {}
        }
        if let Some(owner) = self.batch_owner
            && let Some(vb) = vb
            && event.seqno().is_some()
        {
            assert_eq!(owner, vb, "another vbucket's change inside a snapshot");
        }
        self.view.apply(&event).unwrap();
        self.consumer.ack(credit);
        self.log.push(event);
        // The property: every vbucket not in the middle of a released
        // snapshot shows the producer's state at a snapshot end.
        for vb in 0..self.vbuckets {
            if self.in_batch.get(&vb).copied().unwrap_or(false) {
                continue;
            }
            let at = self.complete_at.get(&vb).copied().unwrap_or(0);
            let expected = self
                .history
                .get(&vb)
                .and_then(|h| h.range(..=at).next_back())
                .map(|(_, live)| live.clone())
                .unwrap_or_default();
            assert_eq!(self.view.live(vb), expected, "vb {vb} at seqno {at}");
        }
    }

    /// Steps until nothing moves, letting time pass for acks and noops.
    fn settle(&mut self, budget: usize) {
        for _ in 0..100_000 {
            if self.node.is_closed(self.conn) {
                self.consumer.handle_eof();
                return;
            }
            if self.step(budget) {
                continue;
            }
            self.now += Duration::from_millis(500);
            self.consumer.handle_timeout(self.now).unwrap();
            self.node.handle_timeout(self.conn, self.now);
            let _ = self.node.take_wakeups();
            if !self.consumer.wants_transmit() && !self.step(budget) {
                return;
            }
        }
        panic!("did not settle");
    }

    /// Drops the connection and comes back from the checkpoint.
    fn reconnect(&mut self) -> Checkpoint {
        let checkpoint = self.consumer.checkpoint();
        self.node.remove(self.conn);
        self.conn = self.node.accept(self.now);
        self.consumer = Consumer::new(self.config.clone(), "bm9uY2U", self.now).unwrap();
        self.in_batch.clear();
        self.batch_owner = None;
        for (vb, position) in &checkpoint.vbuckets {
            self.consumer
                .open_stream(*vb, StreamStart::Position(position.clone()), None)
                .unwrap();
        }
        checkpoint
    }

    fn data_events(&self) -> usize {
        self.log.iter().filter(|e| e.seqno().is_some()).count()
    }

    fn assert_matches_bucket(&self) {
        for vb in 0..self.vbuckets {
            assert_eq!(
                self.view.live(vb),
                live_documents(self.node.bucket(), vb),
                "vb {vb}"
            );
        }
    }
}

fn consistent(window: u32, limit: u64) -> ConsumerConfig {
    ConsumerConfig::new("consistent:1", BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_buffer_size(window)
        .with_consistent_snapshots(limit)
}

/// Exchanges the handshake and stream requests, until every stream is
/// open (the producer's data is not read yet).
fn open(world: &mut World) {
    world.open_all(|_| StreamStart::Beginning);
    let opened = |w: &World| {
        w.log
            .iter()
            .filter(|e| matches!(e, Event::StreamOpened { .. }))
            .count()
    };
    for _ in 0..100 {
        if opened(world) == usize::from(world.vbuckets) {
            return;
        }
        let mut up = BytesMut::new();
        world.consumer.poll_transmit(&mut up);
        world
            .node
            .handle_input(world.conn, &mut up, world.now)
            .unwrap();
        let mut down = BytesMut::new();
        // Responses only: no stream message fits a budget of 0.
        world.node.poll_transmit(world.conn, &mut down, 0);
        world.consumer.handle_input(&mut down, world.now).unwrap();
        while let Some(event) = world.consumer.poll_event() {
            world.on_event(event);
        }
    }
    panic!("streams did not open");
}

fn high_seqno(world: &World, vb: u16) -> u64 {
    world.node.bucket().vbucket(vb).unwrap().high_seqno()
}

#[test]
fn a_snapshot_is_released_whole_at_its_end() {
    let mut world = World::new(1, 1000, consistent(1 << 20, 1 << 20));
    world.write(40);
    open(&mut world);
    // Trickle: nothing is handed out until the snapshot's last seqno.
    let mut saw_held = false;
    while world.data_events() == 0 {
        assert!(world.step(60), "stalled before the snapshot completed");
        let stats = world.consumer.stream_stats(0).unwrap();
        saw_held |= stats.held_events > 1;
    }
    assert!(saw_held, "the snapshot was never held");
    let completes = world
        .log
        .iter()
        .filter(|e| matches!(e, Event::SnapshotComplete { .. }))
        .count();
    assert_eq!(completes, 1);
    world.assert_matches_bucket();
    assert_eq!(world.consumer.stats().snapshots_completed, 1);
    assert_eq!(world.consumer.stats().held_bytes, 0);
    // Later memory snapshots too.
    world.write(25);
    world.settle(50);
    world.assert_matches_bucket();
}

#[test]
fn the_checkpoint_covers_only_complete_snapshots() {
    let mut world = World::new(1, 1000, consistent(1 << 20, 1 << 20));
    world.write(30);
    world
        .consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    // Everything arrives, but the application polls one event at a time.
    for _ in 0..50 {
        let mut up = BytesMut::new();
        world.consumer.poll_transmit(&mut up);
        world
            .node
            .handle_input(world.conn, &mut up, world.now)
            .unwrap();
        let mut down = BytesMut::new();
        world.node.poll_transmit(world.conn, &mut down, usize::MAX);
        world.consumer.handle_input(&mut down, world.now).unwrap();
    }
    let mut polled_changes = 0;
    while let Some(event) = world.consumer.poll_event() {
        let complete = matches!(event, Event::SnapshotComplete { .. });
        polled_changes += usize::from(event.seqno().is_some());
        let position = world.consumer.position(0).unwrap();
        if complete {
            assert_eq!(position.last_seqno, high_seqno(&world, 0));
            assert!(position.is_consistent());
        } else {
            assert_eq!(position.last_seqno, 0, "after {polled_changes} changes");
        }
    }
    assert_eq!(
        world.consumer.checkpoint().vbuckets[&0].last_seqno,
        high_seqno(&world, 0)
    );
}

#[test]
fn a_rollback_mid_snapshot_discards_the_held_part() {
    let mut world = World::new(1, 1000, consistent(1 << 20, 1 << 20));
    world.write(20);
    open(&mut world);
    world.settle(usize::MAX);
    world.assert_matches_bucket();
    let before = world.complete_at[&0];
    // A new batch arrives in part, then the vbucket fails over and loses
    // changes the application already has: the connection drops.
    world.write(12);
    world.step(150);
    assert!(world.consumer.stats().held_bytes > 0);
    let delivered = world.data_events();
    world.node.failover(0, 16).unwrap();
    world.settle(usize::MAX);
    assert!(world.node.is_closed(world.conn) || world.consumer.is_closed());
    let checkpoint = world.reconnect();
    assert!(checkpoint.vbuckets[&0].is_consistent());
    assert!(checkpoint.vbuckets[&0].last_seqno >= before);
    assert_eq!(
        world.data_events(),
        delivered,
        "the held part was not delivered"
    );
    world.settle(100);
    assert!(
        world
            .log
            .iter()
            .any(|e| matches!(e, Event::Rollback { .. })),
        "the lost changes were rolled back"
    );
    world.assert_matches_bucket();
    world.write(10);
    world.settle(100);
    world.assert_matches_bucket();
}

#[test]
fn a_dropped_connection_mid_snapshot_resumes_without_partial_state() {
    let mut world = World::new(2, 6, consistent(1 << 20, 1 << 20));
    world.write(60);
    open(&mut world);
    world.step(700);
    assert!(world.consumer.stats().held_bytes > 0);
    let checkpoint = world.reconnect();
    for position in checkpoint.vbuckets.values() {
        assert!(position.is_consistent());
    }
    world.settle(300);
    world.assert_matches_bucket();
}

#[test]
fn a_snapshot_over_the_limit_passes_through_with_an_event() {
    const LIMIT: u64 = 2048;
    let mut world = World::new(1, 1000, consistent(1 << 20, LIMIT));
    world.write(120);
    world.open_all(|_| StreamStart::Beginning);
    // Not checked per poll: a snapshot let through is partial by design.
    let mut log = Vec::new();
    for _ in 0..10_000 {
        let mut up = BytesMut::new();
        world.consumer.poll_transmit(&mut up);
        world
            .node
            .handle_input(world.conn, &mut up, world.now)
            .unwrap();
        let mut down = BytesMut::new();
        let moved = world.node.poll_transmit(world.conn, &mut down, 300);
        world.consumer.handle_input(&mut down, world.now).unwrap();
        assert!(world.consumer.stats().held_bytes <= LIMIT);
        while let Some(event) = world.consumer.poll_event() {
            world.view.apply(&event).unwrap();
            world.consumer.ack(event.credit());
            log.push(event);
        }
        if moved == 0 && !world.consumer.wants_transmit() {
            break;
        }
    }
    let too_large = log
        .iter()
        .position(|e| matches!(e, Event::SnapshotTooLarge { .. }))
        .expect("SnapshotTooLarge reported");
    let marker = log
        .iter()
        .position(|e| matches!(e, Event::SnapshotMarker(..)))
        .unwrap();
    let complete = log
        .iter()
        .position(|e| matches!(e, Event::SnapshotComplete { .. }))
        .expect("the snapshot still completes");
    assert!(too_large < marker && marker < complete);
    let Event::SnapshotTooLarge { held_bytes, .. } = log[too_large] else {
        unreachable!()
    };
    assert!(held_bytes <= LIMIT);
    assert_eq!(world.consumer.stats().snapshots_too_large, 1);
    assert_eq!(world.view.live(0), live_documents(world.node.bucket(), 0));
}

#[test]
fn a_snapshot_larger_than_the_window_does_not_stall() {
    // A 1 KiB window and an application that never acks anything: held
    // changes return their credit as they are held.
    let mut world = World::new(1, 1000, consistent(1024, 1 << 20));
    world.write(200);
    let high = high_seqno(&world, 0);
    world.open_all(|_| StreamStart::Beginning);
    for _ in 0..10_000 {
        let mut up = BytesMut::new();
        world.consumer.poll_transmit(&mut up);
        world
            .node
            .handle_input(world.conn, &mut up, world.now)
            .unwrap();
        let mut down = BytesMut::new();
        let moved = world.node.poll_transmit(world.conn, &mut down, usize::MAX);
        world.consumer.handle_input(&mut down, world.now).unwrap();
        while let Some(event) = world.consumer.poll_event() {
            world.view.apply(&event).unwrap();
            // Deliberately no ack.
            world.log.push(event);
        }
        if moved == 0 && !world.consumer.wants_transmit() {
            break;
        }
    }
    assert!(
        world
            .log
            .iter()
            .any(|e| matches!(e, Event::SnapshotComplete { end, .. } if *end == high)),
        "the 200-item snapshot arrived through a 1 KiB window"
    );
    let stats = world.consumer.stats();
    assert!(stats.flow_bytes_received > 4 * 1024, "{stats:?}");
    assert!(stats.buffer_acks_sent > 1);
    world.assert_matches_bucket();
}

#[test]
fn an_end_seqno_bounded_stream_completes_at_its_end() {
    let mut world = World::new(1, 4, consistent(1 << 20, 1 << 20));
    world.write(30);
    world
        .consumer
        .open_stream(0, StreamStart::Beginning, Some(17))
        .unwrap();
    world.settle(80);
    assert!(world.log.iter().any(|e| matches!(
        e,
        Event::StreamEnded {
            reason: StreamEndReason::Ok,
            ..
        }
    )));
    let last_complete = world
        .log
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::SnapshotComplete { end, .. } => Some(*end),
            _ => None,
        })
        .unwrap();
    assert!(last_complete <= 17);
    assert_eq!(world.consumer.position(0).unwrap().last_seqno, 17);
    assert_eq!(world.consumer.stats().held_bytes, 0);
}

#[test]
fn normal_mode_is_unchanged() {
    let config = ConsumerConfig::new("plain:1", BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_auto_ack(true);
    let mut world = World::new(1, 1000, config);
    world.write(20);
    let items = world.node.bucket().vbucket(0).unwrap().documents().count();
    world.open_all(|_| StreamStart::Beginning);
    for _ in 0..200 {
        let mut up = BytesMut::new();
        world.consumer.poll_transmit(&mut up);
        world
            .node
            .handle_input(world.conn, &mut up, world.now)
            .unwrap();
        let mut down = BytesMut::new();
        world.node.poll_transmit(world.conn, &mut down, 120);
        world.consumer.handle_input(&mut down, world.now).unwrap();
        while let Some(event) = world.consumer.poll_event() {
            assert!(!matches!(
                event,
                Event::SnapshotComplete { .. } | Event::SnapshotTooLarge { .. }
            ));
            world.log.push(event);
        }
    }
    assert_eq!(world.data_events(), items);
}

/// What a property case does.
#[derive(Debug, Clone)]
enum Op {
    Write(u8),
    Step(u16),
    Settle,
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..20).prop_map(Op::Write),
        4 => (20u16..2000).prop_map(Op::Step),
        1 => Just(Op::Settle),
        1 => Just(Op::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// At every poll, each vbucket's delivered view (outside the snapshot
    /// being handed out) equals the producer's state at a snapshot end;
    /// after the run it equals the bucket.
    #[test]
    fn the_delivered_view_is_always_a_producer_state(
        ops in proptest::collection::vec(op(), 1..40),
        window in prop_oneof![Just(0u32), Just(512), Just(4096)],
        checkpoint_items in 2usize..12,
    ) {
        let mut world = World::new(2, checkpoint_items, consistent(window, 1 << 30));
        world.write(10);
        world.open_all(|_| StreamStart::Beginning);
        for op in ops {
            match op {
                Op::Write(n) => world.write(u64::from(n)),
                Op::Step(budget) => {
                    world.step(usize::from(budget));
                }
                Op::Settle => world.settle(700),
                Op::Reconnect => {
                    let checkpoint = world.reconnect();
                    for (vb, position) in &checkpoint.vbuckets {
                        prop_assert!(position.is_consistent());
                        prop_assert_eq!(
                            position.last_seqno,
                            world.complete_at.get(vb).copied().unwrap_or(0)
                        );
                    }
                }
            }
        }
        world.settle(usize::MAX);
        world.assert_matches_bucket();
        prop_assert_eq!(world.consumer.stats().held_bytes, 0);
    }
}
