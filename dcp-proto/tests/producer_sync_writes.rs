//! Producer scenarios for synchronous writes and out-of-order (OSO)
//! backfills: what a client sees with and without `enable_sync_writes`,
//! pending / committed / aborted prepares, checkpoint dedup, disk backfill
//! shape, SEQNO_ACKNOWLEDGED, the refused combinations, durable KV writes,
//! and the OSO shape (key order, SEQNO_ADVANCED variant).

mod producer_harness;

use bytes::Bytes;
use dcp_proto::bucket::{BucketConfig, StoreMode, SyncWriteMode, WriteOptions};
use dcp_proto::codec::{DurabilityLevel, Frame, FrameHead, Opcode, Status};
use dcp_proto::msg::client::{Delete, HelloFeature, Stat};
use dcp_proto::msg::{MarkerFormat, Message, OpenFlags, SeqnoAcknowledged, StreamRequestValue};
use dcp_proto::producer::{AdminCommand, NodeConfig};
use producer_harness::*;

/// A compact view of every stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum M {
    Marker(u64, u64),
    Mut(u64, String),
    Del(u64, String),
    Prepare(u64, String, bool),
    Commit(u64, u64, String),
    Abort(u64, u64, String),
    Advanced(u64),
    OsoStart,
    OsoEnd,
    End(u32),
}

fn key(k: &Bytes) -> String {
    String::from_utf8_lossy(k).into_owned()
}

fn view(frames: &[Frame]) -> Vec<M> {
    frames
        .iter()
        .filter(|f| f.is_request())
        .map(|f| match decode(f) {
            Message::SnapshotMarker(m) => M::Marker(m.start, m.end),
            Message::Mutation(m) => M::Mut(m.by_seqno, key(&m.key)),
            Message::Deletion(m) => M::Del(m.by_seqno, key(&m.key)),
            Message::Prepare(m) => M::Prepare(m.by_seqno, key(&m.key), m.deleted),
            Message::Commit(m) => M::Commit(m.prepared_seqno, m.commit_seqno, key(&m.key)),
            Message::Abort(m) => M::Abort(m.prepared_seqno, m.abort_seqno, key(&m.key)),
            Message::SeqnoAdvanced(m) => M::Advanced(m.seqno),
            Message::OsoSnapshot(m) if m.is_start() => M::OsoStart,
            Message::OsoSnapshot(_) => M::OsoEnd,
            Message::StreamEnd(m) => M::End(m.reason.raw()),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn markers(frames: &[Frame]) -> Vec<dcp_proto::msg::SnapshotMarker> {
    frames
        .iter()
        .filter(|f| f.opcode() == Opcode::DcpSnapshotMarker)
        .map(marker)
        .collect()
}

fn mut_(s: u64, k: &str) -> M {
    M::Mut(s, k.to_owned())
}

impl Harness {
    fn prepare(&mut self, k: &str, v: &str) -> u64 {
        let wall = self.wall();
        let info = self
            .node
            .bucket_mut()
            .durable_store(
                StoreMode::Set,
                k.as_bytes(),
                v.to_owned(),
                WriteOptions::new(),
                DurabilityLevel::Majority,
                wall,
            )
            .unwrap();
        info.prepared.seqno
    }

    fn commit(&mut self, k: &str) {
        let wall = self.wall();
        self.node
            .bucket_mut()
            .commit_sync_write(k.as_bytes(), wall)
            .unwrap();
    }

    fn abort(&mut self, k: &str) {
        let wall = self.wall();
        self.node
            .bucket_mut()
            .abort_sync_write(k.as_bytes(), wall)
            .unwrap();
    }

    /// A DCP client with sync writes (and a consumer name) when asked.
    fn client(&mut self, name: &str, sync: bool) -> Client {
        let mut c = self.dcp_client(name, OpenFlags::empty());
        if sync {
            assert_eq!(
                self.control(&mut c, "enable_sync_writes", "true"),
                Status::Success
            );
            assert_eq!(self.control(&mut c, "consumer_name", name), Status::Success);
        }
        c
    }

    fn stream(&mut self, c: &mut Client, vb: u16) -> Vec<Frame> {
        let o = self.opaque();
        let (resp, _) = self.stream_req(c, req(vb, o));
        assert_eq!(resp.status(), Status::Success);
        self.recv(c)
    }
}

/// One vbucket, prepares held pending until committed or aborted.
fn held(bucket: BucketConfig) -> Harness {
    let mut h = Harness::new(config(1).with_bucket(bucket));
    h.node.bucket_mut().set_sync_write_mode(SyncWriteMode::Hold);
    h
}

fn one_vb() -> BucketConfig {
    BucketConfig::new(BUCKET).with_vbuckets(1)
}

/// prepare k1 (1), set k2 (2), commit k1 (3), prepare k3 (4), abort k3 (5).
fn write_mix(h: &mut Harness) {
    assert_eq!(h.prepare("k1", "v1"), 1);
    h.set("k2", "v2");
    h.commit("k1");
    assert_eq!(h.prepare("k3", "v3"), 4);
    h.abort("k3");
}

#[test]
fn without_sync_writes_commits_are_mutations_and_prepares_never_sent() {
    let mut h = held(one_vb());
    write_mix(&mut h);
    let mut c = h.client("plain", false);
    let frames = h.stream(&mut c, 0);
    // The snapshot ends at its max visible seqno (3): 4 and 5 are hidden.
    assert_eq!(
        view(&frames),
        vec![M::Marker(0, 3), mut_(2, "k2"), mut_(3, "k1")]
    );
    // Markers stay v1 without sync replication.
    assert!(matches!(markers(&frames)[0].format, MarkerFormat::V1));
    // A snapshot holding only a prepare is not sent at all.
    h.prepare("k4", "v4");
    assert!(view(&h.recv(&mut c)).is_empty());
    h.commit("k4");
    assert_eq!(view(&h.recv(&mut c)), vec![M::Marker(7, 7), mut_(7, "k4")]);
}

#[test]
fn with_collections_skipped_seqnos_close_with_seqno_advanced() {
    let mut h = held(one_vb());
    write_mix(&mut h);
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &[
            HelloFeature::Xerror,
            HelloFeature::SelectBucket,
            HelloFeature::Collections,
        ],
    );
    assert_eq!(h.open(&mut c, "coll", OpenFlags::empty()), Status::Success);
    let frames = h.stream(&mut c, 0);
    assert_eq!(
        view(&frames),
        vec![
            M::Marker(0, 4),
            mut_(2, "\0k2"),
            mut_(3, "\0k1"),
            M::Advanced(4),
            // The abort of k3 closed the checkpoint (a second prepared item
            // of the key): a snapshot of hidden seqnos only.
            M::Marker(5, 5),
            M::Advanced(5),
        ]
    );
}

#[test]
fn with_sync_writes_prepares_commits_and_aborts_are_sent() {
    let mut h = held(one_vb());
    write_mix(&mut h);
    let mut c = h.client("sync", true);
    let frames = h.stream(&mut c, 0);
    assert_eq!(
        view(&frames),
        vec![
            M::Marker(0, 4),
            M::Prepare(1, "k1".into(), false),
            mut_(2, "k2"),
            M::Commit(1, 3, "k1".into()),
            M::Prepare(4, "k3".into(), false),
            // The abort cannot share a checkpoint with its prepare.
            M::Marker(5, 5),
            M::Abort(4, 5, "k3".into()),
        ]
    );
    // v2.0 marker: max visible seqno 3; no high completed seqno in memory.
    assert_eq!(
        markers(&frames)[0].format,
        MarkerFormat::V2_0 {
            max_visible_seqno: 3,
            high_completed_seqno: 0
        }
    );
    // A pending prepare, then its commit, live.
    h.prepare("k5", "v5");
    assert_eq!(
        view(&h.recv(&mut c)),
        vec![M::Marker(6, 6), M::Prepare(6, "k5".into(), false)]
    );
    h.commit("k5");
    assert_eq!(
        view(&h.recv(&mut c)),
        vec![M::Marker(7, 7), M::Commit(6, 7, "k5".into())]
    );
    // A prepared delete.
    let wall = h.wall();
    h.node
        .bucket_mut()
        .durable_delete(b"k2", 0, DurabilityLevel::PersistToMajority, wall)
        .unwrap();
    let frames = h.recv(&mut c);
    assert_eq!(
        view(&frames),
        vec![M::Marker(8, 8), M::Prepare(8, "k2".into(), true)]
    );
    match decode(&frames[1]) {
        Message::Prepare(p) => assert_eq!(p.durability, DurabilityLevel::PersistToMajority),
        other => panic!("{other:?}"),
    }
}

#[test]
fn prepares_lock_their_key_and_reads_see_the_committed_version() {
    let mut h = held(one_vb());
    h.set("k", "old");
    h.prepare("k", "new");
    let wall = h.wall();
    let b = h.node.bucket_mut();
    assert_eq!(&b.get(b"k", wall).unwrap().value[..], b"old");
    assert_eq!(
        b.set(b"k", "x", WriteOptions::new(), wall)
            .unwrap_err()
            .status(),
        Status::SyncWriteInProgress
    );
    assert_eq!(
        b.durable_store(
            StoreMode::Set,
            b"k",
            "y",
            WriteOptions::new(),
            DurabilityLevel::Majority,
            wall
        )
        .unwrap_err()
        .status(),
        Status::SyncWriteInProgress
    );
    assert_eq!(
        b.durable_store(
            StoreMode::Set,
            b"other",
            "y",
            WriteOptions::new(),
            DurabilityLevel::Unknown(0),
            wall
        )
        .unwrap_err()
        .status(),
        Status::DurabilityInvalidLevel
    );
    b.commit_sync_write(b"k", wall).unwrap();
    assert_eq!(&b.get(b"k", wall).unwrap().value[..], b"new");
    assert_eq!(b.vbucket(0).unwrap().pending_sync_writes(), 0);
}

#[test]
fn checkpoint_dedup_keeps_prepares_and_commits_apart() {
    // Immediate mode: each durable write is a prepare and its commit.
    let mut h = Harness::new(config(1));
    h.set("k", "1"); // 1
    h.set("k", "2"); // 2 (dedups 1)
    h.prepare("k", "3"); // 3 prepare, 4 commit (dedups 2, not the prepare)
    let mut sync = h.client("sync", true);
    assert_eq!(
        view(&h.stream(&mut sync, 0)),
        vec![
            M::Marker(0, 4),
            M::Prepare(3, "k".into(), false),
            M::Commit(3, 4, "k".into())
        ]
    );
    let mut plain = h.client("plain", false);
    assert_eq!(
        view(&h.stream(&mut plain, 0)),
        vec![M::Marker(0, 4), mut_(4, "k")]
    );
    // A second prepare of the key cannot share the open checkpoint with
    // the first: the checkpoint closes, and its snapshot ends before it.
    h.prepare("k", "4"); // 5, 6
    assert_eq!(
        view(&h.recv(&mut sync)),
        vec![
            M::Marker(5, 6),
            M::Prepare(5, "k".into(), false),
            M::Commit(5, 6, "k".into())
        ]
    );
    let vb = h.node.bucket().vbucket(0).unwrap();
    assert_eq!(vb.checkpoint_count(), 2);
}

/// Memory keeps only the newest checkpoint of two items: older seqnos
/// stream from disk.
fn small_memory() -> BucketConfig {
    one_vb().with_checkpoints(2, 1)
}

#[test]
fn disk_backfills_send_commits_as_mutations_and_pending_prepares() {
    let mut h = held(small_memory());
    h.prepare("a", "1"); // 1
    h.commit("a"); // 2
    h.prepare("b", "1"); // 3 (pending)
    h.prepare("c", "1"); // 4
    h.abort("c"); // 5
    for i in 0..4 {
        h.set(&format!("z{i}"), "v"); // 6..9
    }
    let low = h.node.bucket().vbucket(0).unwrap().memory_low_seqno();
    assert_eq!(low, 9, "seqnos below 9 stream from disk");
    let mut sync = h.client("sync", true);
    let frames = h.stream(&mut sync, 0);
    assert_eq!(
        view(&frames),
        vec![
            M::Marker(0, 8),
            mut_(2, "a"),
            M::Prepare(3, "b".into(), false),
            M::Abort(4, 5, "c".into()),
            mut_(6, "z0"),
            mut_(7, "z1"),
            mut_(8, "z2"),
            M::Marker(9, 9),
            mut_(9, "z3"),
        ]
    );
    // The disk marker carries the high completed seqno (4: the abort of c
    // completed the prepare at 4) and the max visible seqno.
    assert_eq!(
        markers(&frames)[0].format,
        MarkerFormat::V2_0 {
            max_visible_seqno: 8,
            high_completed_seqno: 4
        }
    );
    // A v2.2 marker adds the high prepared seqno (4: prepares at 1, 3 and
    // 4, completed or not) and the purge seqno.
    let mut v22 = h.connect();
    h.login_with(&mut v22, &[HelloFeature::Xerror, HelloFeature::Collections]);
    assert_eq!(h.open(&mut v22, "v22", OpenFlags::empty()), Status::Success);
    for (key, value) in [
        ("enable_sync_writes", "true"),
        ("consumer_name", "v22"),
        ("max_marker_version", "2.2"),
    ] {
        assert_eq!(h.control(&mut v22, key, value), Status::Success, "{key}");
    }
    assert_eq!(
        markers(&h.stream(&mut v22, 0))[0].format,
        MarkerFormat::V2_2 {
            max_visible_seqno: 8,
            high_completed_seqno: 4,
            purge_seqno: 0,
            high_prepared_seqno: 4,
        }
    );
    // Without sync writes: neither the prepare nor the abort.
    let mut plain = h.client("plain", false);
    assert_eq!(
        view(&h.stream(&mut plain, 0)),
        vec![
            M::Marker(0, 8),
            mut_(2, "a"),
            mut_(6, "z0"),
            mut_(7, "z1"),
            mut_(8, "z2"),
            M::Marker(9, 9),
            mut_(9, "z3"),
        ]
    );
    // Committing b now closes the (2-item) checkpoint, which memory then
    // drops: both read it from disk, where a commit is a mutation.
    h.commit("b");
    assert_eq!(
        view(&h.recv(&mut sync)),
        vec![M::Marker(10, 10), mut_(10, "b")]
    );
    assert_eq!(
        view(&h.recv(&mut plain)),
        vec![M::Marker(10, 10), mut_(10, "b")]
    );
}

#[test]
fn disk_snapshots_without_sync_writes_end_at_the_max_visible_seqno() {
    let mut h = held(small_memory());
    h.set("a", "1"); // 1
    h.prepare("b", "1"); // 2
    h.abort("b"); // 3
    h.set("c", "1"); // 4
    h.set("d", "1"); // 5
    let mut plain = h.client("plain", false);
    let frames = h.stream(&mut plain, 0);
    // Memory holds [5]; disk 1..=4 ends visible at 4; nothing hidden.
    assert_eq!(
        view(&frames),
        vec![
            M::Marker(0, 4),
            mut_(1, "a"),
            mut_(4, "c"),
            M::Marker(5, 5),
            mut_(5, "d")
        ]
    );
    // Trailing hidden seqnos on disk: the marker stops at 1.
    let mut h = held(small_memory());
    h.set("a", "1"); // 1
    h.prepare("b", "1"); // 2
    h.abort("b"); // 3
    h.prepare("c", "1"); // 4, closes the checkpoint
    h.set("d", "1"); // 5
    let mut plain = h.client("plain", false);
    assert_eq!(
        view(&h.stream(&mut plain, 0)),
        vec![M::Marker(0, 1), mut_(1, "a"), M::Marker(5, 5), mut_(5, "d")]
    );
}

fn stat(h: &mut Harness, c: &mut Client, group: &str) -> Vec<(String, String)> {
    let o = h.opaque();
    let key = Bytes::copy_from_slice(group.as_bytes());
    h.send(c, |b| {
        Stat {
            opaque: o,
            group: key,
            value: Bytes::new(),
        }
        .encode(b)
    })
    .unwrap();
    h.recv(c)
        .iter()
        .filter(|f| f.is_response() && !f.key_slice().is_empty())
        .map(|f| {
            (
                String::from_utf8_lossy(f.key_slice()).into_owned(),
                String::from_utf8_lossy(f.value_slice()).into_owned(),
            )
        })
        .collect()
}

#[test]
fn seqno_acknowledged_needs_sync_replication_and_shows_in_stats() {
    let mut h = held(one_vb());
    h.prepare("k", "v");
    let ack = |vbucket, opaque, prepared_seqno| SeqnoAcknowledged {
        vbucket,
        opaque,
        prepared_seqno,
    };
    // Without sync writes: EINVAL.
    let mut plain = h.client("plain", false);
    let status = h.status(&mut plain, |b| ack(0, 1, 1).encode(b));
    assert_eq!(status, Status::Einval);
    // Sync writes without a consumer name: still EINVAL.
    let mut half = h.dcp_client("half", OpenFlags::empty());
    h.control(&mut half, "enable_sync_writes", "true");
    assert_eq!(
        h.status(&mut half, |b| ack(0, 1, 1).encode(b)),
        Status::Einval
    );
    // With both: no response; recorded on the stream with that opaque.
    let mut sync = h.client("sync", true);
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut sync, req(0, o));
    assert!(resp.status().is_success());
    let _ = h.recv(&mut sync);
    h.send(&sync, |b| ack(0, o, 1).encode(b)).unwrap();
    // An unknown opaque is ignored, silently.
    h.send(&sync, |b| ack(0, o + 1000, 7).encode(b)).unwrap();
    assert!(h.recv(&mut sync).is_empty());
    let stats = stat(&mut h, &mut sync, "dcp");
    let acked = stats
        .iter()
        .find(|(k, _)| k.ends_with("sync:stream_0_seqno_acknowledged"))
        .map(|(_, v)| v.clone());
    assert_eq!(acked.as_deref(), Some("1"));
    assert!(
        stats
            .iter()
            .any(|(k, v)| k.ends_with("sync:synchronous_replication") && v == "true")
    );
}

#[test]
fn sync_writes_refuse_stream_ids_and_collection_filters() {
    let mut h = held(one_vb());
    let mut c = h.dcp_client("sid", OpenFlags::empty());
    assert_eq!(
        h.control(&mut c, "enable_stream_id", "true"),
        Status::Success
    );
    assert_eq!(
        h.control(&mut c, "enable_sync_writes", "true"),
        Status::NotSupported
    );
    let mut c = h.dcp_client("sync", OpenFlags::empty());
    assert_eq!(
        h.control(&mut c, "enable_sync_writes", "true"),
        Status::Success
    );
    assert_eq!(
        h.control(&mut c, "enable_stream_id", "true"),
        Status::NotSupported
    );
    // A collection filter with sync writes: NOT_SUPPORTED.
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &[
            HelloFeature::Xerror,
            HelloFeature::SelectBucket,
            HelloFeature::Collections,
        ],
    );
    assert_eq!(
        h.open(&mut c, "filtered", OpenFlags::empty()),
        Status::Success
    );
    h.control(&mut c, "enable_noop", "true");
    h.control(&mut c, "enable_sync_writes", "true");
    let value = StreamRequestValue {
        collections: Some(vec![0]),
        ..StreamRequestValue::default()
    };
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut c, with_value(req(0, o), value.clone()));
    assert_eq!(resp.status(), Status::NotSupported);
    // Without sync writes the same filter is fine.
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &[
            HelloFeature::Xerror,
            HelloFeature::SelectBucket,
            HelloFeature::Collections,
        ],
    );
    h.open(&mut c, "filtered2", OpenFlags::empty());
    h.control(&mut c, "enable_noop", "true");
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut c, with_value(req(0, o), value));
    assert_eq!(resp.status(), Status::Success);
}

/// A durable SET over the wire: framing extras `0x11 level`.
fn durable_set(
    opaque: u32,
    vb: u16,
    key: &str,
    value: &str,
    level: u8,
) -> impl FnOnce(&mut bytes::BytesMut) -> Result<(), dcp_proto::codec::EncodeError> {
    let (key, value) = (key.to_owned(), value.to_owned());
    move |b| {
        FrameHead::request(Opcode::Set, vb, opaque).encode(
            b,
            &[0x11, level],
            &[0; 8],
            key.as_bytes(),
            value.as_bytes(),
        )
    }
}

#[test]
fn durable_kv_writes_commit_at_once_or_wait_for_completion() {
    let mut h = Harness::new(config(1));
    let mut kv = h.connect();
    h.login(&mut kv);
    let o = h.opaque();
    assert_eq!(
        h.status(&mut kv, durable_set(o, 0, "k", "v1", 1)),
        Status::Success
    );
    let vb = h.node.bucket().vbucket(0).unwrap();
    assert_eq!((vb.high_seqno(), vb.pending_sync_writes()), (2, 0));
    let o = h.opaque();
    assert_eq!(
        h.status(&mut kv, durable_set(o, 0, "k", "v", 9)),
        Status::DurabilityInvalidLevel
    );

    // Hold mode through the admin command: the response waits.
    let mut admin = h.connect();
    let o = h.opaque();
    let (u, p) = ("admin", "adminpw");
    let _ = h.status(&mut admin, |b| {
        dcp_proto::msg::client::SaslAuth::plain(o, u.as_bytes(), p.as_bytes()).encode(b)
    });
    let o = h.opaque();
    let run = |cmd: AdminCommand| move |b: &mut bytes::BytesMut| cmd.encode(o, b);
    assert!(
        h.status(&mut admin, run(AdminCommand::SyncWriteMode { hold: true }))
            .is_success()
    );
    let o = h.opaque();
    h.send(&kv, durable_set(o, 0, "k", "v2", 2)).unwrap();
    assert!(h.recv(&mut kv).is_empty(), "waits for the commit");
    // Another write of the key meanwhile: SyncWriteInProgress.
    let o2 = h.opaque();
    assert_eq!(
        h.status(&mut kv, |b| Delete {
            vbucket: 0,
            opaque: o2,
            cas: 0,
            key: Bytes::from_static(b"k"),
        }
        .encode(b)),
        Status::SyncWriteInProgress
    );
    let o3 = h.opaque();
    let commit = AdminCommand::CommitPending {
        key: None,
        vb: Some(0),
    };
    let resp = h.request(&mut admin, move |b| commit.encode(o3, b));
    assert!(resp.status().is_success());
    assert_eq!(resp.value_slice(), br#"{"completed":1}"#);
    let frames = h.recv(&mut kv);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].opaque(), frames[0].status()),
        (o, Status::Success)
    );
    let wall = h.wall();
    assert_eq!(
        &h.node.bucket_mut().get(b"k", wall).unwrap().value[..],
        b"v2"
    );
    // An aborted one answers SyncWriteAmbiguous (as a timeout does).
    let o = h.opaque();
    h.send(&kv, durable_set(o, 0, "k", "v3", 1)).unwrap();
    let o4 = h.opaque();
    let abort = AdminCommand::AbortPending {
        key: Some("k".into()),
        vb: None,
    };
    assert!(
        h.status(&mut admin, move |b| abort.encode(o4, b))
            .is_success()
    );
    let frames = h.recv(&mut kv);
    assert_eq!(
        (frames[0].opaque(), frames[0].status()),
        (o, Status::SyncWriteAmbiguous)
    );
    assert_eq!(
        &h.node.bucket_mut().get(b"k", wall).unwrap().value[..],
        b"v2"
    );
}

/// A KV request with durability level 1 (framing extras `0x11 0x01`).
fn durable(
    opcode: Opcode,
    opaque: u32,
    key: &str,
    extras: Vec<u8>,
    value: &str,
) -> impl FnOnce(&mut bytes::BytesMut) -> Result<(), dcp_proto::codec::EncodeError> {
    let (key, value) = (key.to_owned(), value.to_owned());
    move |b| {
        FrameHead::request(opcode, 0, opaque).encode(
            b,
            &[0x11, 1],
            &extras,
            key.as_bytes(),
            value.as_bytes(),
        )
    }
}

/// INCREMENT / DECREMENT extras: delta, initial, expiry (0: create).
fn counter_extras(delta: u64, initial: u64) -> Vec<u8> {
    let mut extras = delta.to_be_bytes().to_vec();
    extras.extend_from_slice(&initial.to_be_bytes());
    extras.extend_from_slice(&0u32.to_be_bytes());
    extras
}

#[test]
fn durable_append_prepend_and_counters_are_sync_writes() {
    let mut h = held(one_vb());
    h.set("s", "mid"); // 1
    let mut sync = h.client("sync", true);
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut sync, req(0, o));
    assert_eq!(resp.status(), Status::Success);
    let _ = h.recv(&mut sync);
    let mut kv = h.connect();
    h.login(&mut kv);

    // Each waits for its commit; the stream shows prepare then commit.
    let cases = [
        (Opcode::Append, "s", vec![], ">", "mid>"),
        (Opcode::Prepend, "s", vec![], "<", "<mid>"),
        (Opcode::Increment, "n", counter_extras(5, 40), "", "40"),
        (Opcode::Increment, "n", counter_extras(5, 40), "", "45"),
        (Opcode::Decrement, "n", counter_extras(50, 0), "", "0"),
    ];
    let mut seqno = 1;
    for (opcode, key, extras, value, expected) in cases {
        let o = h.opaque();
        h.send(&kv, durable(opcode, o, key, extras, value)).unwrap();
        assert!(
            h.recv(&mut kv).is_empty(),
            "{opcode:?} waits for its commit"
        );
        let wall = h.wall();
        assert_ne!(
            h.node
                .bucket_mut()
                .get(key.as_bytes(), wall)
                .ok()
                .map(|d| d.value),
            Some(Bytes::from(expected)),
            "invisible while pending"
        );
        h.commit(key);
        let frames = h.recv(&mut kv);
        assert_eq!(frames.len(), 1, "{opcode:?}");
        assert_eq!(
            (frames[0].opaque(), frames[0].status()),
            (o, Status::Success)
        );
        if matches!(opcode, Opcode::Increment | Opcode::Decrement) {
            let r = dcp_proto::msg::client::CounterResponse::decode(&frames[0]).unwrap();
            assert_eq!(r.value.to_string(), expected);
        }
        assert_eq!(
            &h.node.bucket_mut().get(key.as_bytes(), wall).unwrap().value[..],
            expected.as_bytes()
        );
        assert_eq!(
            view(&h.recv(&mut sync)),
            vec![
                M::Marker(seqno + 1, seqno + 2),
                M::Prepare(seqno + 1, key.into(), false),
                M::Commit(seqno + 1, seqno + 2, key.into()),
            ],
            "{opcode:?}"
        );
        seqno += 2;
    }

    // An aborted counter answers SyncWriteAmbiguous and keeps its value.
    let o = h.opaque();
    h.send(
        &kv,
        durable(Opcode::Increment, o, "n", counter_extras(1, 0), ""),
    )
    .unwrap();
    h.abort("n");
    let frames = h.recv(&mut kv);
    assert_eq!(frames[0].status(), Status::SyncWriteAmbiguous);
    let wall = h.wall();
    assert_eq!(
        &h.node.bucket_mut().get(b"n", wall).unwrap().value[..],
        b"0"
    );
    // Refusals come at once: a missing key, a bad level, and commands that
    // cannot be durable.
    let o = h.opaque();
    assert_eq!(
        h.status(&mut kv, durable(Opcode::Append, o, "missing", vec![], "x")),
        Status::NotStored
    );
    let o = h.opaque();
    assert_eq!(
        h.status(
            &mut kv,
            durable(Opcode::Touch, o, "s", 0u32.to_be_bytes().to_vec(), "")
        ),
        Status::DurabilityImpossible
    );
}

fn oso_node(bucket: BucketConfig, unfiltered: bool) -> Harness {
    Harness::new(
        config(1)
            .with_bucket(bucket)
            .with_oso_for_unfiltered_streams(unfiltered),
    )
}

/// Keys written in an order unlike their key order: seqno 1 "m", 2 "c",
/// 3 "x", 4 "a", 5 "c" again (dedups 2), then 6, 7 in memory.
fn write_for_oso(h: &mut Harness) {
    for k in ["m", "c", "x", "a", "c"] {
        h.set(k, "v");
    }
    h.set("n1", "v");
    h.set("n2", "v");
    assert_eq!(h.node.bucket().vbucket(0).unwrap().memory_low_seqno(), 7);
}

fn oso_client(h: &mut Harness, name: &str, mode: &str) -> Client {
    let mut c = h.dcp_client(name, OpenFlags::empty());
    assert_eq!(
        h.control(&mut c, "enable_out_of_order_snapshots", mode),
        Status::Success
    );
    c
}

#[test]
fn oso_backfills_send_disk_items_in_key_order() {
    let mut h = oso_node(small_memory(), true);
    write_for_oso(&mut h);
    let mut c = oso_client(&mut h, "oso", "true");
    assert_eq!(
        view(&h.stream(&mut c, 0)),
        vec![
            M::OsoStart,
            mut_(4, "a"),
            mut_(5, "c"),
            mut_(1, "m"),
            mut_(6, "n1"),
            mut_(3, "x"),
            M::OsoEnd,
            M::Marker(7, 7),
            mut_(7, "n2"),
        ]
    );
    // Not an initial backfill (start > 0): a normal disk snapshot.
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    let mut c = oso_client(&mut h, "resume", "true");
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut c, resume(0, o, uuid, 1, (1, 1)));
    assert!(resp.status().is_success());
    assert_eq!(view(&h.recv(&mut c))[0], M::Marker(1, 6));
}

#[test]
fn oso_needs_the_control_and_by_default_a_filter() {
    // The switch off (the default): an unfiltered stream backfills in
    // seqno order even with the control.
    let mut h = oso_node(small_memory(), false);
    write_for_oso(&mut h);
    let mut c = oso_client(&mut h, "oso", "true");
    assert_eq!(view(&h.stream(&mut c, 0))[0], M::Marker(0, 6));
    // A filtered stream (default collection) gets OSO, as on the server.
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &[
            HelloFeature::Xerror,
            HelloFeature::SelectBucket,
            HelloFeature::Collections,
        ],
    );
    h.open(&mut c, "filtered", OpenFlags::empty());
    h.control(&mut c, "enable_noop", "true");
    h.control(&mut c, "enable_out_of_order_snapshots", "true");
    let value = StreamRequestValue {
        collections: Some(vec![0]),
        ..StreamRequestValue::default()
    };
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut c, with_value(req(0, o), value));
    assert!(resp.status().is_success());
    assert_eq!(view(&h.recv(&mut c))[0], M::OsoStart);
    // Without the control: never.
    let mut h = oso_node(small_memory(), true);
    write_for_oso(&mut h);
    let mut c = h.client("plain", false);
    assert_eq!(view(&h.stream(&mut c, 0))[0], M::Marker(0, 6));
}

#[test]
fn oso_with_seqno_advanced_covers_hidden_seqnos_at_the_end() {
    let mut h = oso_node(small_memory(), true);
    h.node.bucket_mut().set_sync_write_mode(SyncWriteMode::Hold);
    h.set("b", "v"); // 1
    h.set("a", "v"); // 2
    h.prepare("p", "v"); // 3
    h.prepare("q", "v"); // 4: the backfill ends on a hidden seqno
    h.set("n", "v"); // 5
    assert_eq!(h.node.bucket().vbucket(0).unwrap().memory_low_seqno(), 5);
    let mut c = oso_client(&mut h, "adv", "true_with_seqno_advanced");
    assert_eq!(
        view(&h.stream(&mut c, 0)),
        vec![
            M::OsoStart,
            mut_(2, "a"),
            mut_(1, "b"),
            M::Advanced(4),
            M::OsoEnd,
            M::Marker(5, 5),
            mut_(5, "n"),
        ]
    );
    // Plain `true`: no SEQNO_ADVANCED.
    let mut c = oso_client(&mut h, "plain", "true");
    let seen = view(&h.stream(&mut c, 0));
    assert!(!seen.contains(&M::Advanced(4)));
    assert_eq!(seen[3], M::OsoEnd);
}

#[test]
fn closing_a_stream_discards_its_oso_backfill() {
    let mut h = oso_node(small_memory(), true);
    write_for_oso(&mut h);
    let mut c = oso_client(&mut h, "close", "true");
    assert_eq!(
        h.control(&mut c, "send_stream_end_on_client_close_stream", "true"),
        Status::Success
    );
    let o = h.opaque();
    let (resp, _) = h.stream_req(&mut c, req(0, o));
    assert!(resp.status().is_success());
    // Part of the OSO snapshot goes out, then the client closes.
    let first = h.recv_budget(&mut c, 1);
    assert_eq!(view(&first), vec![M::OsoStart]);
    let (status, rest) = h.close_stream(&mut c, 0);
    assert_eq!(status, Status::Success);
    assert_eq!(view(&rest), vec![M::End(1)]);
}

#[test]
fn node_config_switch_defaults_off() {
    assert!(!NodeConfig::new("b").oso_for_unfiltered_streams);
}
