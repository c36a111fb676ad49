//! The consumer with sync writes and OSO snapshots, against a scripted
//! producer on a virtual clock: the controls it sends, SEQNO_ACKNOWLEDGED,
//! commits and aborts without a known prepare in disk snapshots, and the
//! resume position around an interrupted OSO snapshot (behavior.md §6.3).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, DurabilityLevel, FrameDecoder, Opcode};
use dcp_proto::consumer::{CommandError, Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::msg::client::HelloResponse;
use dcp_proto::msg::{
    Abort, Commit, FailoverEntry, FailoverLog, MarkerFormat, Message, Mutation, OsoFlags,
    OsoSnapshot, Prepare, SeqnoAdvanced, SnapshotFlags, SnapshotMarker, StatusResponse,
    StreamRequest, StreamRequestResponse,
};
use dcp_proto::session::StreamPosition;

const UUID: u64 = 0xfeed;

struct Script {
    consumer: Consumer,
    now: Instant,
    decoder: FrameDecoder,
    tx: BytesMut,
    /// DCP_CONTROL keys and values the consumer sent.
    controls: Vec<(String, String)>,
}

impl Script {
    fn new(config: ConsumerConfig) -> Self {
        let now = Instant::now();
        Self {
            consumer: Consumer::new(config, "clientnonce0123456789", now).unwrap(),
            now,
            decoder: FrameDecoder::new(),
            tx: BytesMut::new(),
            controls: Vec::new(),
        }
    }

    fn sent(&mut self) -> Vec<Message> {
        self.consumer.poll_transmit(&mut self.tx);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.decode(&mut self.tx).unwrap() {
            out.push(Message::decode(&frame).unwrap());
        }
        out
    }

    fn feed(&mut self, message: impl Into<Message>) {
        let mut rx = BytesMut::new();
        message.into().encode(&mut rx).unwrap();
        self.consumer.handle_input(&mut rx, self.now).unwrap();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.consumer.poll_event()).collect()
    }

    /// Accepts HELLO and everything after it, recording the controls.
    fn handshake(&mut self) {
        while !self.consumer.is_ready() {
            let sent = self.sent();
            assert_eq!(sent.len(), 1, "{sent:?}");
            match &sent[0] {
                Message::Hello(h) => {
                    self.feed(HelloResponse::success(h.opaque, h.features.clone()))
                }
                Message::SelectBucket(m) => {
                    self.feed(StatusResponse::success(Opcode::SelectBucket, m.opaque))
                }
                Message::Open(m) => self.feed(StatusResponse::success(Opcode::DcpOpen, m.opaque)),
                Message::Control(m) => {
                    self.controls.push((
                        String::from_utf8_lossy(&m.key).into_owned(),
                        String::from_utf8_lossy(&m.value).into_owned(),
                    ));
                    self.feed(StatusResponse::success(Opcode::DcpControl, m.opaque));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(self.events().first(), Some(Event::Ready(_))));
    }

    /// Opens vb 0 from `start`; returns the stream opaque.
    fn open(&mut self, start: StreamStart) -> (u32, StreamRequest) {
        self.consumer.open_stream(0, start, None).unwrap();
        let sent = self.sent();
        let Some(Message::StreamRequest(req)) = sent.into_iter().next() else {
            panic!("a stream request")
        };
        let log = FailoverLog::new(vec![FailoverEntry {
            vbucket_uuid: UUID,
            seqno: 0,
        }]);
        self.feed(StreamRequestResponse::accepted(req.opaque, log));
        let _ = self.events();
        (req.opaque, req)
    }
}

fn marker(opaque: u32, start: u64, end: u64, flags: SnapshotFlags) -> SnapshotMarker {
    SnapshotMarker {
        vbucket: 0,
        opaque,
        stream_id: None,
        start,
        end,
        flags,
        format: MarkerFormat::V2_0 {
            max_visible_seqno: end,
            high_completed_seqno: 0,
        },
    }
}

fn mutation(opaque: u32, seqno: u64, key: &str) -> Mutation {
    Mutation {
        vbucket: 0,
        opaque,
        stream_id: None,
        cas: seqno,
        datatype: Datatype::RAW,
        by_seqno: seqno,
        rev_seqno: 1,
        flags: 0,
        expiration: 0,
        lock_time: 0,
        nru: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
    }
}

fn prepare(opaque: u32, seqno: u64, key: &str) -> Prepare {
    Prepare {
        vbucket: 0,
        opaque,
        cas: seqno,
        datatype: Datatype::RAW,
        by_seqno: seqno,
        rev_seqno: 1,
        flags: 0,
        expiration: 0,
        lock_time: 0,
        nru: 0,
        deleted: false,
        durability: DurabilityLevel::Majority,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"p"),
    }
}

fn oso(opaque: u32, flags: OsoFlags) -> OsoSnapshot {
    OsoSnapshot {
        vbucket: 0,
        opaque,
        stream_id: None,
        flags,
    }
}

fn sync_config() -> ConsumerConfig {
    ConsumerConfig::new("sync:1", "default").with_sync_writes(true)
}

#[test]
fn sync_writes_send_both_controls_and_acknowledge_with_the_stream_opaque() {
    let mut s = Script::new(sync_config());
    s.handshake();
    assert!(
        s.controls
            .contains(&("enable_sync_writes".into(), "true".into()))
    );
    assert!(
        s.controls
            .contains(&("consumer_name".into(), "sync:1".into()))
    );
    assert!(s.consumer.negotiated().unwrap().sync_writes);
    assert_eq!(
        s.consumer.acknowledge_prepared(0, 3),
        Err(CommandError::NoStream(0.into()))
    );
    let (opaque, _) = s.open(StreamStart::Beginning);
    s.consumer.acknowledge_prepared(0, 3).unwrap();
    let sent = s.sent();
    assert!(
        matches!(
            &sent[..],
            [Message::SeqnoAcknowledged(a)] if a.opaque == opaque && a.prepared_seqno == 3 && a.vbucket == 0
        ),
        "{sent:?}"
    );

    // Without the option: no controls, and no acknowledgement.
    let mut s = Script::new(ConsumerConfig::new("plain:1", "default"));
    s.handshake();
    assert!(!s.controls.iter().any(|(k, _)| k == "enable_sync_writes"));
    s.open(StreamStart::Beginning);
    assert_eq!(
        s.consumer.acknowledge_prepared(0, 1),
        Err(CommandError::SyncWritesOff)
    );
}

#[test]
fn prepares_commits_and_aborts_move_the_position() {
    let mut s = Script::new(sync_config());
    s.handshake();
    let (o, _) = s.open(StreamStart::Beginning);
    s.feed(marker(o, 1, 4, SnapshotFlags::MEMORY));
    s.feed(prepare(o, 1, "k"));
    s.feed(mutation(o, 2, "j"));
    s.feed(Commit {
        vbucket: 0,
        opaque: o,
        prepared_seqno: 1,
        commit_seqno: 3,
        key: Bytes::from_static(b"k"),
    });
    let events = s.events();
    assert!(matches!(
        events[..],
        [
            Event::SnapshotMarker(..),
            Event::Prepare(..),
            Event::Mutation(..),
            Event::Commit(..)
        ]
    ));
    let p = s.consumer.position(0).unwrap();
    assert_eq!((p.last_seqno, p.snapshot_start, p.snapshot_end), (3, 1, 4));
    // A disk snapshot: a commit's prepare may be missing (the commit then
    // arrives as a mutation) and an abort may come without its prepare.
    s.feed(marker(
        o,
        5,
        9,
        SnapshotFlags::DISK | SnapshotFlags::CHECKPOINT,
    ));
    s.feed(Abort {
        vbucket: 0,
        opaque: o,
        prepared_seqno: 4,
        abort_seqno: 6,
        key: Bytes::from_static(b"gone"),
    });
    s.feed(Commit {
        vbucket: 0,
        opaque: o,
        prepared_seqno: 5,
        commit_seqno: 9,
        key: Bytes::from_static(b"x"),
    });
    assert_eq!(s.events().len(), 3);
    let p = s.consumer.position(0).unwrap();
    assert!(p.is_consistent());
    assert_eq!(p.last_seqno, 9);
}

/// behavior.md §6.3: a stream that dies inside an OSO snapshot resumes from
/// the seqno held before it; after its end, from max(X, seqno advanced)
/// with the snapshot {x, x}.
#[test]
fn an_interrupted_oso_snapshot_resumes_from_before_it() {
    let mut s = Script::new(ConsumerConfig::new("oso:1", "default"));
    s.handshake();
    let (o, _) = s.open(StreamStart::Beginning);
    s.feed(oso(o, OsoFlags::START));
    s.feed(mutation(o, 7, "a"));
    s.feed(mutation(o, 2, "b"));
    assert_eq!(s.events().len(), 3);
    // The checkpoint (what a restart resumes from) is still before OSO.
    let cp = s.consumer.checkpoint();
    let p = &cp.vbuckets[&0];
    assert_eq!(p.last_seqno, 0);
    let resume = p.resume();
    assert_eq!(resume.start_seqno, 0);
    // The connection dies; a new consumer resumes from the checkpoint.
    s.consumer.handle_eof();
    let mut s = Script::new(ConsumerConfig::new("oso:2", "default"));
    s.handshake();
    let (o, req) = s.open(StreamStart::Position(p.clone()));
    assert_eq!(req.start_seqno, 0);
    s.feed(oso(o, OsoFlags::START));
    s.feed(mutation(o, 7, "a"));
    s.feed(mutation(o, 2, "b"));
    s.feed(SeqnoAdvanced {
        vbucket: 0,
        opaque: o,
        stream_id: None,
        seqno: 9,
    });
    s.feed(oso(o, OsoFlags::END));
    let _ = s.events();
    let p: StreamPosition = s.consumer.position(0).unwrap();
    assert_eq!((p.last_seqno, p.snapshot_start, p.snapshot_end), (9, 9, 9));
    // Normal snapshots follow above it.
    s.feed(marker(o, 10, 10, SnapshotFlags::MEMORY));
    s.feed(mutation(o, 10, "c"));
    let _ = s.events();
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 10);
}
