//! Stream ids (`enable_stream_id`): several streams of one vbucket on one
//! connection, each with its own id and collections filter, between our
//! consumer and our producer in memory. Each stream's view equals what its
//! filter selects of the bucket; closing, resuming from a checkpoint and
//! rolling back act on one stream id and leave the other alone.

mod consumer_script;
mod in_memory;
mod producer_harness;

use std::collections::BTreeMap;

use dcp_proto::bucket::{BucketConfig, WriteOptions};
use dcp_proto::consumer::{
    CommandError, Consumer, ConsumerConfig, ConsumerError, Event, ProtocolError, StreamFilter,
    StreamStart,
};
use dcp_proto::msg::{DEFAULT_COLLECTION, Message, StreamEndReason, StreamRequestValue};
use dcp_proto::producer::ConnectionId;
use dcp_proto::session::{Checkpoint, StreamKey};
use dcp_proto::testing::MaterializedView;
use in_memory::InMemory;
use producer_harness::{BUCKET, PASSWORD, USER, config};

const VBUCKETS: u16 = 2;
/// The stream id of the stream that follows `hotels` only.
const HOTELS: u16 = 1;
/// The stream id of the stream that follows the default collection.
const DEFAULT: u16 = 2;

fn key(vb: u16, sid: u16) -> StreamKey {
    StreamKey::with_stream_id(vb, sid).unwrap()
}

struct Fixture {
    mem: InMemory,
    hotels: u32,
    writes: u64,
}

/// What one connection saw, per stream id.
#[derive(Default)]
struct Seen {
    views: BTreeMap<u16, MaterializedView>,
    ended: Vec<(StreamKey, StreamEndReason)>,
    rollbacks: Vec<(StreamKey, u64)>,
    opened: Vec<StreamKey>,
}

impl Seen {
    fn apply(&mut self, event: Event) {
        if let Some(stream) = event.stream_key()
            && let Some(sid) = stream.stream_id()
        {
            self.views
                .entry(sid)
                .or_insert_with(MaterializedView::with_collections)
                .apply(&event)
                .unwrap();
        }
        match event {
            Event::StreamEnded {
                vbucket,
                stream_id,
                reason,
                ..
            } => self.ended.push((StreamKey::of(vbucket, stream_id), reason)),
            Event::Rollback {
                vbucket,
                stream_id,
                seqno,
            } => self
                .rollbacks
                .push((StreamKey::of(vbucket, stream_id), seqno)),
            Event::StreamOpened {
                vbucket, stream_id, ..
            } => self.opened.push(StreamKey::of(vbucket, stream_id)),
            _ => {}
        }
    }
}

impl Fixture {
    fn new() -> Self {
        let bucket = BucketConfig::new(BUCKET)
            .with_vbuckets(VBUCKETS)
            .with_checkpoints(5, 2);
        let mut mem = InMemory::new(config(VBUCKETS).with_bucket(bucket));
        let wall = mem.node.wall_clock(mem.now);
        let bucket = mem.node.bucket_mut();
        bucket.create_scope("inv", wall).unwrap();
        let hotels = bucket
            .create_collection("inv", "hotels", None, wall)
            .unwrap()
            .id;
        Self {
            mem,
            hotels,
            writes: 0,
        }
    }

    /// `n` writes into each of `hotels` and the default collection.
    fn write(&mut self, n: u64) {
        let wall = self.mem.node.wall_clock(self.mem.now);
        for _ in 0..n {
            self.writes += 1;
            let key = format!("k{}", self.writes % 17);
            let value = format!("{{\"n\":{}}}", self.writes);
            let bucket = self.mem.node.bucket_mut();
            for collection in [self.hotels, DEFAULT_COLLECTION] {
                bucket
                    .set_in(
                        collection,
                        key.as_bytes(),
                        value.clone(),
                        WriteOptions::new(),
                        wall,
                    )
                    .unwrap();
            }
        }
    }

    fn connect(&mut self, name: &str) -> (Consumer, ConnectionId) {
        let config = ConsumerConfig::new(name, BUCKET)
            .with_collections(true)
            .with_stream_ids(true)
            .with_auto_ack(true)
            .with_buffer_size(4096);
        self.mem.connect(config, USER, PASSWORD)
    }

    fn pump(&mut self, consumer: &mut Consumer, conn: ConnectionId, seen: &mut Seen) {
        self.mem
            .pump(consumer, conn, |_, event, _| seen.apply(event));
    }

    /// Both streams of every vbucket.
    fn open_both(&self, consumer: &mut Consumer, start: impl Fn(StreamKey) -> StreamStart) {
        for vb in 0..VBUCKETS {
            consumer
                .open_filtered_stream(
                    key(vb, HOTELS),
                    start(key(vb, HOTELS)),
                    None,
                    StreamFilter::Collections(vec![self.hotels]),
                )
                .unwrap();
            consumer
                .open_filtered_stream(
                    key(vb, DEFAULT),
                    start(key(vb, DEFAULT)),
                    None,
                    StreamFilter::Collections(vec![DEFAULT_COLLECTION]),
                )
                .unwrap();
        }
    }

    /// Each stream id's view holds exactly what its filter selects.
    fn check(&self, seen: &Seen, sids: &[u16]) {
        let bucket = self.mem.node.bucket();
        for &sid in sids {
            let collection = if sid == HOTELS {
                self.hotels
            } else {
                DEFAULT_COLLECTION
            };
            let view = &seen.views[&sid];
            assert_eq!(
                view.first_difference_in(bucket, |c| c == collection),
                None,
                "stream id {sid}"
            );
            // It saw only its own collection.
            for vb in 0..VBUCKETS {
                assert!(
                    view.live_all(vb).keys().all(|(c, _)| *c == collection),
                    "stream id {sid} saw another collection"
                );
            }
        }
    }
}

#[test]
fn two_stream_ids_on_one_vbucket() {
    let mut f = Fixture::new();
    f.write(30);
    let (mut consumer, conn) = f.connect("sids");
    let mut seen = Seen::default();
    f.open_both(&mut consumer, |_| StreamStart::Beginning);
    f.pump(&mut consumer, conn, &mut seen);
    assert!(consumer.negotiated().unwrap().stream_ids);
    assert_eq!(seen.opened.len(), 2 * usize::from(VBUCKETS));
    f.check(&seen, &[HOTELS, DEFAULT]);
    assert!(!seen.views[&HOTELS].live_all(0).is_empty());
    assert!(!seen.views[&DEFAULT].live_all(0).is_empty());

    // Writes while both stream.
    for _ in 0..4 {
        f.write(7);
        f.pump(&mut consumer, conn, &mut seen);
    }
    f.check(&seen, &[HOTELS, DEFAULT]);
    let stats = consumer.stats();
    assert_eq!(stats.streams_open, 2 * usize::from(VBUCKETS));
    assert!(consumer.stream_stats(key(0, HOTELS)).unwrap().items > 0);
    assert!(
        consumer.stream_stats(0).is_none(),
        "no stream without an id"
    );

    // Closing stream id 1 of vbucket 0 leaves its stream id 2 streaming.
    consumer.close_stream(key(0, HOTELS)).unwrap();
    f.pump(&mut consumer, conn, &mut seen);
    assert_eq!(seen.ended, vec![(key(0, HOTELS), StreamEndReason::Closed)]);
    assert!(!consumer.has_stream(key(0, HOTELS)));
    assert!(consumer.has_stream(key(0, DEFAULT)));
    let hotels_before = seen.views[&HOTELS].last_seqno(0);
    f.write(10);
    f.pump(&mut consumer, conn, &mut seen);
    f.check(&seen, &[DEFAULT]);
    assert_eq!(
        seen.views[&HOTELS].last_seqno(0),
        hotels_before,
        "the closed stream id received nothing more"
    );
    // The vbucket's other streams saw it all.
    let high = f.mem.node.bucket().vbucket(0).unwrap().high_seqno();
    assert_eq!(seen.views[&DEFAULT].last_seqno(0), high);

    // It can be opened again under the same id, resuming where it was.
    consumer
        .open_filtered_stream(
            key(0, HOTELS),
            StreamStart::Resume,
            None,
            StreamFilter::Collections(vec![f.hotels]),
        )
        .unwrap();
    f.pump(&mut consumer, conn, &mut seen);
    f.check(&seen, &[HOTELS, DEFAULT]);
}

#[test]
fn each_stream_id_resumes_from_the_checkpoint() {
    let mut f = Fixture::new();
    f.write(20);
    let (mut consumer, conn) = f.connect("first");
    let mut seen = Seen::default();
    f.open_both(&mut consumer, |_| StreamStart::Beginning);
    f.pump(&mut consumer, conn, &mut seen);
    let checkpoint = consumer.checkpoint();
    assert!(checkpoint.vbuckets.is_empty());
    assert_eq!(checkpoint.streams().count(), 2 * usize::from(VBUCKETS));
    // The JSON form keeps the ids.
    let json = checkpoint.to_json().unwrap();
    let checkpoint = Checkpoint::from_json(&json).unwrap();
    let position = checkpoint.position(key(1, DEFAULT)).unwrap();
    assert_eq!(
        position.last_seqno,
        f.mem.node.bucket().vbucket(1).unwrap().high_seqno()
    );

    // A new connection resumes every stream id from its own position: no
    // change is delivered twice (the views refuse a repeated seqno).
    f.write(15);
    let (mut consumer, conn) = f.connect("second");
    f.open_both(&mut consumer, |k| {
        StreamStart::Position(checkpoint.position(k).unwrap().clone())
    });
    f.pump(&mut consumer, conn, &mut seen);
    f.check(&seen, &[HOTELS, DEFAULT]);
    assert!(seen.rollbacks.is_empty());

    // A failover that loses the last writes: each stream id is told to
    // roll back, on its own key.
    f.write(3);
    f.pump(&mut consumer, conn, &mut seen);
    let checkpoint = consumer.checkpoint();
    drop(consumer);
    f.mem.node.failover(0, 4).unwrap();
    let (mut consumer, conn) = f.connect("third");
    f.open_both(&mut consumer, |k| {
        StreamStart::Position(checkpoint.position(k).unwrap().clone())
    });
    f.pump(&mut consumer, conn, &mut seen);
    let mut rolled: Vec<_> = seen.rollbacks.iter().map(|(k, _)| *k).collect();
    rolled.sort();
    assert_eq!(rolled, vec![key(0, HOTELS), key(0, DEFAULT)]);
    f.write(5);
    f.pump(&mut consumer, conn, &mut seen);
    f.check(&seen, &[HOTELS, DEFAULT]);
}

#[test]
fn keys_must_match_the_connection() {
    let mut f = Fixture::new();
    let (mut consumer, _) = f.connect("keys");
    assert_eq!(
        consumer.open_stream(0, StreamStart::Beginning, None),
        Err(CommandError::StreamIdRequired(0))
    );
    consumer
        .open_stream(key(0, 9), StreamStart::Beginning, None)
        .unwrap();
    assert_eq!(
        consumer.open_stream(key(0, 9), StreamStart::Beginning, None),
        Err(CommandError::StreamExists(key(0, 9)))
    );
    assert_eq!(
        consumer.close_stream(key(0, 8)),
        Err(CommandError::NoStream(key(0, 8)))
    );

    let plain = ConsumerConfig::new("plain", BUCKET);
    let (mut plain, _) = f.mem.connect(plain, USER, PASSWORD);
    assert_eq!(
        plain.open_stream(key(0, 1), StreamStart::Beginning, None),
        Err(CommandError::StreamIdsOff(key(0, 1)))
    );
}

/// The stream request carries the id in its JSON value (with the filter),
/// the close carries it framed, and a message framed with another stream's
/// id is a protocol error.
#[test]
fn requests_carry_the_id_and_messages_must_match_it() {
    use consumer_script::*;
    let config = ConsumerConfig::new("scripted", BUCKET)
        .with_collections(true)
        .with_stream_ids(true);
    let mut s = Script::new(config);
    s.handshake();
    assert!(s.consumer.negotiated().unwrap().stream_ids);
    s.consumer
        .open_filtered_stream(
            key(3, 7),
            StreamStart::Beginning,
            None,
            StreamFilter::Collections(vec![8]),
        )
        .unwrap();
    s.consumer
        .open_stream(key(3, 9), StreamStart::Beginning, None)
        .unwrap();
    let requests: Vec<_> = s
        .sent()
        .into_iter()
        .map(|m| match m {
            Message::StreamRequest(r) => r,
            other => panic!("expected STREAM_REQ, got {other:?}"),
        })
        .collect();
    let [first, second] = &requests[..] else {
        panic!("two requests expected: {requests:?}");
    };
    let value = |r: &dcp_proto::msg::StreamRequest| r.value.clone().unwrap_or_default();
    assert_eq!(
        value(first),
        StreamRequestValue {
            collections: Some(vec![8]),
            sid: Some(7),
            ..Default::default()
        }
    );
    assert_eq!(value(second).sid, Some(9));
    s.accept_stream(first, &[(UUID, 0)]);
    s.accept_stream(second, &[(UUID, 0)]);
    let opened: Vec<_> = s.events().iter().filter_map(Event::stream_key).collect();
    assert_eq!(opened, vec![key(3, 7), key(3, 9)]);

    // Data framed with its stream's id is delivered under that key.
    let mut m = marker(3, second.opaque, 1, 1);
    m.stream_id = Some(9);
    s.feed_ok(m);
    let mut change = mutation(3, second.opaque, 1, "a");
    change.stream_id = Some(9);
    s.feed_ok(change);
    let keys: Vec<_> = s.events().iter().filter_map(Event::stream_key).collect();
    assert_eq!(keys, vec![key(3, 9), key(3, 9)]);

    // CLOSE_STREAM names the id.
    s.consumer.close_stream(key(3, 7)).unwrap();
    match s.one() {
        Message::CloseStream(close) => {
            assert_eq!((close.vbucket, close.stream_id), (3, Some(7)));
        }
        other => panic!("expected CLOSE_STREAM, got {other:?}"),
    }

    // A message on stream 9's opaque framed with id 7 is refused.
    let mut wrong = mutation(3, second.opaque, 2, "b");
    wrong.stream_id = Some(7);
    assert_eq!(
        s.feed(wrong),
        Err(ConsumerError::Protocol(ProtocolError::WrongStreamId {
            opcode: dcp_proto::codec::Opcode::DcpMutation,
            expected: Some(9),
            got: Some(7),
        }))
    );
    assert!(s.consumer.is_closed());
}
