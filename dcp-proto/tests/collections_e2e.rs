//! Our consumer against our producer, in memory, with a collections
//! manifest that changes while streaming: scopes and collections created,
//! written, flushed and dropped mid-stream, a failover with a rollback;
//! the consumer's view (keyed by collection and key, applying drops) equals
//! the bucket's view of what each stream's filter selects, and a filtered
//! stream whose collections are dropped ends FilterEmpty.

mod producer_harness;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::{BucketConfig, WriteOptions};
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamFilter, StreamStart};
use dcp_proto::msg::{DEFAULT_COLLECTION, StreamEndReason};
use dcp_proto::producer::{ConnectionId, Node};
use dcp_proto::testing::MaterializedView;
use producer_harness::*;

const VBUCKETS: u16 = 4;

struct World {
    node: Node,
    now: Instant,
    writes: u64,
}

struct Client {
    consumer: Consumer,
    conn: ConnectionId,
    view: MaterializedView,
    ends: Vec<(u16, StreamEndReason)>,
    failed: Vec<(u16, dcp_proto::codec::Status)>,
    /// Streams re-opened after StateChanged (a purge overtook them).
    reopened: u64,
    /// The filter each stream was opened with.
    filters: std::collections::HashMap<u16, StreamFilter>,
}

impl World {
    fn new() -> Self {
        let bucket = BucketConfig::new(BUCKET)
            .with_vbuckets(VBUCKETS)
            .with_checkpoints(6, 2);
        let mut node = Node::new(config(VBUCKETS).with_bucket(bucket));
        let now = Instant::now();
        node.wall_clock(now);
        Self {
            node,
            now,
            writes: 0,
        }
    }

    /// `n` writes into `collection` (every 7th a delete).
    fn write(&mut self, collection: u32, n: u64) {
        let wall = self.node.wall_clock(self.now);
        for _ in 0..n {
            self.writes += 1;
            let key = format!("key-{}", self.writes % 23);
            let bucket = self.node.bucket_mut();
            if self.writes.is_multiple_of(7) {
                let _ = bucket.delete_in(collection, key.as_bytes(), 0, wall);
            } else {
                bucket
                    .set_in(
                        collection,
                        key.as_bytes(),
                        format!("{{\"n\":{}}}", self.writes),
                        WriteOptions::new(),
                        wall,
                    )
                    .unwrap();
            }
        }
    }

    fn connect(&mut self, name: &str) -> Client {
        let config = ConsumerConfig::new(name, BUCKET)
            .with_credentials(Credentials::new(USER, PASSWORD))
            .with_buffer_size(4096)
            .with_auto_ack(true)
            .with_collections(true);
        Client {
            consumer: Consumer::new(config, "bm9uY2U", self.now).unwrap(),
            conn: self.node.accept(self.now),
            view: MaterializedView::with_collections(),
            ends: Vec::new(),
            failed: Vec::new(),
            reopened: 0,
            filters: std::collections::HashMap::new(),
        }
    }

    /// Moves bytes both ways and applies events until nothing moves.
    fn pump(&mut self, c: &mut Client) {
        for _ in 0..10_000 {
            let mut moved = false;
            let mut up = BytesMut::new();
            if c.consumer.poll_transmit(&mut up) > 0 {
                moved = true;
                if self.node.handle_input(c.conn, &mut up, self.now).is_err() {
                    c.consumer.handle_eof();
                    return;
                }
            }
            let mut down = BytesMut::new();
            if self.node.poll_transmit(c.conn, &mut down, 8 * 1024) > 0 {
                moved = true;
                c.consumer.handle_input(&mut down, self.now).unwrap();
            }
            while let Some(event) = c.consumer.poll_event() {
                moved = true;
                c.view.apply(&event).unwrap();
                match event {
                    // A purge overtook the stream: re-open it from where
                    // it stopped (with its filter), as an application does.
                    Event::StreamEnded {
                        vbucket,
                        reason: StreamEndReason::StateChanged,
                        ..
                    } => {
                        let filter = c.filters.get(&vbucket).cloned();
                        let reopened = match filter {
                            Some(f) => c.consumer.open_filtered_stream(
                                vbucket,
                                StreamStart::Resume,
                                None,
                                f,
                            ),
                            None => c.consumer.open_stream(vbucket, StreamStart::Resume, None),
                        };
                        reopened.unwrap();
                        c.reopened += 1;
                    }
                    Event::StreamEnded {
                        vbucket, reason, ..
                    } => c.ends.push((vbucket, reason)),
                    // Refused as unknown: the filtered collections were
                    // dropped (their drop events may be purged); what the
                    // stream delivered is gone.
                    Event::StreamFailed {
                        vbucket, status, ..
                    } => {
                        if matches!(
                            status,
                            dcp_proto::codec::Status::UnknownCollection
                                | dcp_proto::codec::Status::UnknownScope
                        ) {
                            match c.filters.get(&vbucket) {
                                Some(StreamFilter::Collections(ids)) => {
                                    let ids = ids.clone();
                                    c.view.forget_collections(vbucket, |x| ids.contains(&x));
                                }
                                _ => c.view.forget_collections(vbucket, |_| true),
                            }
                        }
                        c.failed.push((vbucket, status));
                    }
                    _ => {}
                }
            }
            if self.node.is_closed(c.conn) {
                c.consumer.handle_eof();
                return;
            }
            if !moved {
                self.now += Duration::from_millis(500);
                c.consumer.handle_timeout(self.now).unwrap();
                self.node.handle_timeout(c.conn, self.now);
                if !c.consumer.wants_transmit() {
                    let mut probe = BytesMut::new();
                    if self.node.poll_transmit(c.conn, &mut probe, 8 * 1024) == 0 {
                        return;
                    }
                    c.consumer.handle_input(&mut probe, self.now).unwrap();
                }
            }
        }
        panic!("did not settle");
    }

    fn check(&self, c: &Client, wanted: impl Fn(u32) -> bool + Copy) {
        if let Some(vb) = c.view.first_difference_in(self.node.bucket(), wanted) {
            let mine = c.view.live_all(vb);
            let theirs = dcp_proto::testing::live_documents_in(self.node.bucket(), vb, wanted);
            let only_view: Vec<_> = mine
                .iter()
                .filter(|(k, v)| theirs.get(*k) != Some(v))
                .collect();
            let only_bucket: Vec<_> = theirs
                .iter()
                .filter(|(k, v)| mine.get(*k) != Some(v))
                .collect();
            let v = self.node.bucket().vbucket(vb).unwrap();
            eprintln!(
                "vb {vb}: view-only {only_view:?}\nbucket-only {only_bucket:?}\nhigh {} purge {} low {} last {}",
                v.high_seqno(),
                v.purge_seqno(),
                v.memory_low_seqno(),
                c.view.last_seqno(vb)
            );
        }
        assert_eq!(
            c.view.first_difference_in(self.node.bucket(), wanted),
            None,
            "{:?}",
            (0..VBUCKETS)
                .map(|vb| c.view.live_all(vb).len())
                .collect::<Vec<_>>()
        );
    }
}

fn wall(world: &mut World) -> std::time::SystemTime {
    world.node.wall_clock(world.now)
}

#[test]
fn the_view_follows_a_changing_manifest() {
    let mut w = World::new();
    let now = wall(&mut w);
    w.node.bucket_mut().create_scope("inv", now).unwrap();
    let hotels = w
        .node
        .bucket_mut()
        .create_collection("inv", "hotels", None, now)
        .unwrap()
        .id;
    w.write(DEFAULT_COLLECTION, 40);
    w.write(hotels, 40);

    // Three consumers: everything, only `hotels`, the scope `inv`.
    let mut all = w.connect("all");
    let mut only = w.connect("hotels");
    let mut scope = w.connect("scope");
    for vb in 0..VBUCKETS {
        all.consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
        only.consumer
            .open_filtered_stream(
                vb,
                StreamStart::Beginning,
                None,
                StreamFilter::Collections(vec![hotels]),
            )
            .unwrap();
        scope
            .consumer
            .open_filtered_stream(vb, StreamStart::Beginning, None, StreamFilter::Scope(8))
            .unwrap();
    }
    let pump_all = |w: &mut World, a: &mut Client, b: &mut Client, c: &mut Client| {
        w.pump(a);
        w.pump(b);
        w.pump(c);
    };
    pump_all(&mut w, &mut all, &mut only, &mut scope);
    let in_scope = |c: u32| c == hotels;
    w.check(&all, |_| true);
    w.check(&only, in_scope);
    w.check(&scope, in_scope);
    assert!(all.view.system_events >= 2 * u64::from(VBUCKETS));
    assert!(!all.view.live_all(0).is_empty());

    // A new collection in the scope, written while streaming.
    let now = wall(&mut w);
    let rooms = w
        .node
        .bucket_mut()
        .create_collection("inv", "rooms", Some(3600), now)
        .unwrap()
        .id;
    for _ in 0..5 {
        w.write(rooms, 9);
        w.write(DEFAULT_COLLECTION, 5);
        w.write(hotels, 3);
        pump_all(&mut w, &mut all, &mut only, &mut scope);
    }
    let in_scope = |c: u32| c == hotels || c == rooms;
    w.check(&all, |_| true);
    w.check(&only, |c| c == hotels);
    w.check(&scope, in_scope);

    // Flush `rooms`: its documents vanish everywhere, then new ones come.
    let now = wall(&mut w);
    w.node
        .bucket_mut()
        .flush_collection("inv", "rooms", now)
        .unwrap();
    pump_all(&mut w, &mut all, &mut only, &mut scope);
    w.check(&all, |_| true);
    w.check(&scope, in_scope);
    w.write(rooms, 10);
    pump_all(&mut w, &mut all, &mut only, &mut scope);
    w.check(&scope, in_scope);

    // Drop `hotels` while streaming: its documents go, the filtered
    // streams end FilterEmpty on every vbucket.
    w.write(hotels, 5);
    let now = wall(&mut w);
    w.node
        .bucket_mut()
        .drop_collection("inv", "hotels", now)
        .unwrap();
    w.write(DEFAULT_COLLECTION, 10);
    pump_all(&mut w, &mut all, &mut only, &mut scope);
    w.check(&all, |_| true);
    w.check(&only, |c| c == hotels);
    w.check(&scope, |c| c == rooms);
    assert!(only.view.live_all(0).is_empty());
    let mut ends = only.ends.clone();
    ends.sort();
    assert_eq!(
        ends,
        (0..VBUCKETS)
            .map(|vb| (vb, StreamEndReason::FilterEmpty))
            .collect::<Vec<_>>()
    );

    // Compaction erases the dropped documents and purges tombstones (the
    // drop events among them).
    for vb in 0..VBUCKETS {
        let high = w.node.bucket().vbucket(vb).unwrap().high_seqno();
        w.node.bucket_mut().purge(vb, high).unwrap();
        let v = w.node.bucket().vbucket(vb).unwrap();
        assert!(v.documents().all(|d| !d.is_deleted()), "tombstones purged");
        assert!(v.documents().all(|d| d.collection != hotels));
    }
    pump_all(&mut w, &mut all, &mut only, &mut scope);
    w.check(&all, |_| true);

    // A new consumer from the beginning never sees the dropped documents
    // (backfill skips them) and ends where the others are.
    let mut late = w.connect("late");
    for vb in 0..VBUCKETS {
        late.consumer
            .open_stream(vb, StreamStart::Beginning, None)
            .unwrap();
    }
    w.pump(&mut late);
    w.check(&late, |_| true);

    // Drop the scope: the scope stream ends FilterEmpty, the rest goes on.
    let now = wall(&mut w);
    w.node.bucket_mut().drop_scope("inv", now).unwrap();
    w.write(DEFAULT_COLLECTION, 8);
    pump_all(&mut w, &mut all, &mut only, &mut scope);
    w.check(&all, |_| true);
    assert_eq!(
        scope
            .ends
            .iter()
            .filter(|(_, r)| *r == StreamEndReason::FilterEmpty)
            .count(),
        usize::from(VBUCKETS)
    );
    assert!(all.ends.is_empty());
    assert!(all.failed.is_empty() && scope.failed.is_empty());
}

#[test]
fn a_filter_survives_a_rollback_re_request() {
    let mut w = World::new();
    let now = wall(&mut w);
    let c = w
        .node
        .bucket_mut()
        .create_collection("_default", "c", None, now)
        .unwrap()
        .id;
    // The collection's writes last: the stream's position is the high
    // seqno, which the failover below loses.
    w.write(DEFAULT_COLLECTION, 60);
    w.write(c, 60);
    let mut client = w.connect("rb");
    for vb in 0..VBUCKETS {
        client
            .consumer
            .open_filtered_stream(
                vb,
                StreamStart::Beginning,
                None,
                StreamFilter::Collections(vec![c]),
            )
            .unwrap();
    }
    w.pump(&mut client);
    w.check(&client, |x| x == c);
    let positions: Vec<_> = (0..VBUCKETS)
        .map(|vb| client.consumer.position(vb).unwrap())
        .collect();
    // Fail over with lost items: the connection drops; reconnect from the
    // saved positions with the same filter and obey the rollback.
    w.node.failover(2, 4).unwrap();
    w.pump(&mut client);
    w.node.remove(client.conn);
    w.write(c, 20);
    w.write(DEFAULT_COLLECTION, 20);
    let view = client.view.clone();
    let mut client = w.connect("rb");
    client.view = view;
    for (vb, position) in positions.into_iter().enumerate() {
        client
            .consumer
            .open_filtered_stream(
                vb as u16,
                StreamStart::Position(position),
                None,
                StreamFilter::Collections(vec![c]),
            )
            .unwrap();
    }
    w.pump(&mut client);
    assert!(client.view.rollbacks.iter().any(|&(vb, _)| vb == 2));
    // The re-request after the rollback kept the filter: only `c`.
    assert_eq!(
        client.consumer.stream_filter(2),
        Some(&StreamFilter::Collections(vec![c]))
    );
    w.check(&client, |x| x == c);
    assert!((0..VBUCKETS).all(|vb| client.view.live_all(vb).keys().all(|(col, _)| *col == c)));
}

/// A small seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Seeded schedules of manifest changes (create, flush, drop of
/// collections and scopes), writes in every live collection, compactions
/// and partial pumps: after each step every consumer's view equals the
/// bucket's view of its filter, and a filter whose collections all went
/// ended FilterEmpty on every vbucket.
#[test]
fn seeded_manifest_schedules_keep_every_view_equal() {
    const SEEDS: u64 = 32;
    let mut reopened = 0;
    for seed in 1..=SEEDS {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut w = World::new();
        let now = wall(&mut w);
        w.node.bucket_mut().create_scope("s", now).unwrap();
        let first = w
            .node
            .bucket_mut()
            .create_collection("s", "c0", None, now)
            .unwrap()
            .id;
        let mut live: Vec<(String, String, u32)> = vec![("s".into(), "c0".into(), first)];
        w.write(first, 30);
        w.write(DEFAULT_COLLECTION, 30);

        let mut all = w.connect("all");
        let mut one = w.connect("one");
        let mut scope = w.connect("scope");
        for vb in 0..VBUCKETS {
            all.consumer
                .open_stream(vb, StreamStart::Beginning, None)
                .unwrap();
            one.consumer
                .open_filtered_stream(
                    vb,
                    StreamStart::Beginning,
                    None,
                    StreamFilter::Collections(vec![first]),
                )
                .unwrap();
            one.filters
                .insert(vb, StreamFilter::Collections(vec![first]));
            scope
                .consumer
                .open_filtered_stream(vb, StreamStart::Beginning, None, StreamFilter::Scope(8))
                .unwrap();
            scope.filters.insert(vb, StreamFilter::Scope(8));
        }
        let mut scope_live = true;
        let mut next_name = 1;
        for _step in 0..40 {
            let now = wall(&mut w);
            match rng.below(10) {
                0 | 1 => {
                    let name = format!("c{next_name}");
                    next_name += 1;
                    let in_s = scope_live && rng.below(2) == 0;
                    let scope_name = if in_s { "s" } else { "_default" };
                    let id = w
                        .node
                        .bucket_mut()
                        .create_collection(scope_name, &name, None, now)
                        .unwrap()
                        .id;
                    live.push((scope_name.into(), name, id));
                }
                2 if !live.is_empty() => {
                    let (s, n, _) = live.remove(rng.below(live.len() as u64) as usize);
                    w.node.bucket_mut().drop_collection(&s, &n, now).unwrap();
                }
                3 if !live.is_empty() => {
                    let (s, n, _) = &live[rng.below(live.len() as u64) as usize];
                    w.node.bucket_mut().flush_collection(s, n, now).unwrap();
                }
                4 if scope_live && rng.below(4) == 0 => {
                    w.node.bucket_mut().drop_scope("s", now).unwrap();
                    live.retain(|(s, _, _)| s != "s");
                    scope_live = false;
                }
                5 => {
                    for vb in 0..VBUCKETS {
                        let high = w.node.bucket().vbucket(vb).unwrap().high_seqno();
                        let up_to = high.saturating_sub(rng.below(20));
                        w.node.bucket_mut().purge(vb, up_to).unwrap();
                    }
                }
                _ => {
                    let target = if live.is_empty() || rng.below(4) == 0 {
                        DEFAULT_COLLECTION
                    } else {
                        live[rng.below(live.len() as u64) as usize].2
                    };
                    w.write(target, 1 + rng.below(15));
                }
            }
            // Pump a random subset, then check the ones pumped.
            let in_scope: Vec<u32> = w
                .node
                .bucket()
                .manifest()
                .collections()
                .filter(|c| c.scope == 8)
                .map(|c| c.id)
                .collect();
            if rng.below(2) == 0 {
                w.pump(&mut all);
                w.check(&all, |_| true);
            }
            if rng.below(2) == 0 {
                w.pump(&mut one);
                w.check(&one, |c| c == first);
            }
            if rng.below(2) == 0 {
                w.pump(&mut scope);
                w.check(&scope, |c| in_scope.contains(&c));
            }
        }
        w.pump(&mut all);
        w.pump(&mut one);
        w.pump(&mut scope);
        w.check(&all, |_| true);
        w.check(&one, |c| c == first);
        assert!(all.ends.is_empty() && all.failed.is_empty(), "seed {seed}");
        // Each filtered stream whose collections went either ended
        // FilterEmpty, or (re-opened after a purge overtook it) was refused
        // as unknown, as the server does.
        let gone = |c: &Client, unknown: dcp_proto::codec::Status| -> usize {
            let ended = c
                .ends
                .iter()
                .filter(|(_, r)| *r == StreamEndReason::FilterEmpty)
                .count();
            let refused = c.failed.iter().filter(|(_, s)| *s == unknown).count();
            assert_eq!(
                ended + refused,
                c.ends.len() + c.failed.len(),
                "seed {seed}"
            );
            ended + refused
        };
        reopened += all.reopened + one.reopened + scope.reopened;
        let first_dropped = w.node.bucket().manifest().collection(first).is_none();
        assert_eq!(
            gone(&one, dcp_proto::codec::Status::UnknownCollection),
            if first_dropped {
                usize::from(VBUCKETS)
            } else {
                0
            },
            "seed {seed}"
        );
        assert_eq!(
            gone(&scope, dcp_proto::codec::Status::UnknownScope),
            if scope_live { 0 } else { usize::from(VBUCKETS) },
            "seed {seed}"
        );
    }
    // Purges overtook streams, which re-opened (and rolled back).
    assert!(reopened > 0);
}
