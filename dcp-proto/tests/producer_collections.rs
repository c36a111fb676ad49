//! Producer scenarios for collections: system events in memory and backfill
//! snapshots, stream filters (collections, scope), SEQNO_ADVANCED where a
//! snapshot's last items are filtered out, FilterEmpty, connections without
//! collections, the stream-request errors, KV commands addressing a
//! collection, GET_ALL_VB_SEQNOS per collection and the admin commands.

mod producer_harness;

use bytes::Bytes;
use dcp_proto::bucket::{Bucket, BucketConfig, WriteOptions};
use dcp_proto::codec::{Datatype, Frame, Opcode, Status};
use dcp_proto::msg::client::{
    Get, GetAllVbSeqnos, GetAllVbSeqnosResponse, GetResponse, HelloFeature, SaslAuth, Store,
};
use dcp_proto::msg::{
    CollectionDetails, CollectionKey, Message, OpenFlags, StreamRequestFlags, StreamRequestValue,
    SystemEventData, SystemEventId,
};
use dcp_proto::producer::{ADMIN_OPCODE, AdminCommand};
use producer_harness::*;

/// A compact view of a stream: markers, documents as (seqno, collection,
/// key), system events as (seqno, event, collection or scope id).
#[derive(Debug, Clone, PartialEq, Eq)]
enum It {
    Marker(u64, u64, u32),
    Doc(u64, u32, &'static str),
    Del(u64, u32, &'static str),
    Event(u64, SystemEventId, u32),
    Advanced(u64),
    End(u32),
}

fn leak(b: &[u8]) -> &'static str {
    Box::leak(String::from_utf8_lossy(b).into_owned().into_boxed_str())
}

fn view(frames: &[Frame], collections: bool) -> Vec<It> {
    let key = |k: &Bytes| {
        if collections {
            let ck = CollectionKey::split(k).unwrap();
            (ck.collection_id, leak(&ck.key))
        } else {
            (0, leak(k))
        }
    };
    frames
        .iter()
        .map(|f| match decode(f) {
            Message::SnapshotMarker(m) => It::Marker(m.start, m.end, m.flags.bits()),
            Message::Mutation(m) => {
                let (c, k) = key(&m.key);
                It::Doc(m.by_seqno, c, k)
            }
            Message::Deletion(m) => {
                let (c, k) = key(&m.key);
                It::Del(m.by_seqno, c, k)
            }
            Message::SystemEvent(e) => {
                let id = match e.data().unwrap() {
                    SystemEventData::BeginCollection(c) => c.collection_id,
                    SystemEventData::EndCollection { collection_id, .. } => collection_id,
                    SystemEventData::CreateScope { scope_id, .. }
                    | SystemEventData::DropScope { scope_id, .. } => scope_id,
                    other => panic!("unexpected {other:?}"),
                };
                It::Event(e.by_seqno, e.event, id)
            }
            Message::SeqnoAdvanced(m) => It::Advanced(m.seqno),
            Message::StreamEnd(m) => It::End(m.reason.raw()),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

const BEGIN: SystemEventId = SystemEventId::BeginCollection;
const END: SystemEventId = SystemEventId::EndCollection;
const SCOPE: SystemEventId = SystemEventId::CreateScope;
const DROP_SCOPE: SystemEventId = SystemEventId::DropScope;

/// A DCP client with HELLO Collections and noops on.
fn collections_client(h: &mut Harness, name: &str) -> Client {
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &[
            HelloFeature::Xerror,
            HelloFeature::SelectBucket,
            HelloFeature::Collections,
        ],
    );
    assert_eq!(h.open(&mut c, name, OpenFlags::empty()), Status::Success);
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Success);
    c
}

fn value(json: &str) -> StreamRequestValue {
    StreamRequestValue::from_json(json.as_bytes()).unwrap()
}

fn stream(h: &mut Harness, c: &mut Client, req: dcp_proto::msg::StreamRequest) -> Vec<Frame> {
    let (r, _) = h.stream_req(c, req);
    assert_eq!(r.status(), Status::Success, "{:?}", r.value_slice());
    h.recv(c)
}

/// One vbucket with scope `s` (8), collection `s.c` (8) and `_default.d`
/// (9): seqnos 1 create scope, 2 create c, 3 create d.
fn setup(h: &mut Harness) -> (u32, u32) {
    let wall = h.wall();
    let b = h.node.bucket_mut();
    b.create_scope("s", wall).unwrap();
    let c = b.create_collection("s", "c", None, wall).unwrap().id;
    let d = b
        .create_collection("_default", "d", Some(60), wall)
        .unwrap()
        .id;
    (c, d)
}

fn set_in(h: &mut Harness, collection: u32, key: &str) -> u64 {
    let wall = h.wall();
    h.node
        .bucket_mut()
        .set_in(collection, key.as_bytes(), "v", WriteOptions::new(), wall)
        .unwrap()
        .seqno
}

#[test]
fn memory_snapshots_carry_system_events_and_prefixed_keys() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    h.set("a", "1");
    set_in(&mut h, c, "b");
    let mut cl = collections_client(&mut h, "all");
    let frames = stream(&mut h, &mut cl, req(0, 1));
    assert_eq!(
        view(&frames, true),
        vec![
            It::Marker(0, 5, MEM | CHK),
            It::Event(1, SCOPE, 8),
            It::Event(2, BEGIN, c),
            It::Event(3, BEGIN, d),
            It::Doc(4, 0, "a"),
            It::Doc(5, c, "b"),
        ]
    );
    // The create with a max TTL is version 1, the others version 0, with
    // the fixed-struct layouts.
    let Message::SystemEvent(e) = decode(&frames[3]) else {
        panic!()
    };
    assert_eq!((e.version, &e.key[..]), (1, &b"d"[..]));
    assert_eq!(
        e.data().unwrap(),
        SystemEventData::begin_collection(3, 0, d, Bytes::from_static(b"d"), Some(60))
    );
    let Message::SystemEvent(e) = decode(&frames[1]) else {
        panic!()
    };
    assert_eq!((e.version, &e.key[..], e.value.len()), (0, &b"s"[..], 12));

    // Live: a drop arrives in the next memory snapshot.
    drop_collection(&mut h, "s", "c");
    assert_eq!(
        view(&h.recv(&mut cl), true),
        vec![It::Marker(6, 6, MEM), It::Event(6, END, c)]
    );
}

fn drop_collection(h: &mut Harness, scope: &str, name: &str) {
    let wall = h.wall();
    h.node
        .bucket_mut()
        .drop_collection(scope, name, wall)
        .unwrap();
}

#[test]
fn connections_without_collections_see_the_default_collection_only() {
    let mut h = Harness::new(config(1));
    let (c, _) = setup(&mut h);
    h.set("a", "1");
    set_in(&mut h, c, "b");
    let mut legacy = h.dcp_client("legacy", OpenFlags::empty());
    let frames = stream(&mut h, &mut legacy, req(0, 1));
    // The marker ends at the last item sent (no SEQNO_ADVANCED without
    // collections).
    assert_eq!(
        view(&frames, false),
        vec![It::Marker(0, 4, MEM | CHK), It::Doc(4, 0, "a")]
    );
    // Nothing at all for a snapshot of other collections' changes.
    set_in(&mut h, c, "x");
    drop_collection(&mut h, "s", "c");
    assert_eq!(view(&h.recv(&mut legacy), false), vec![]);
    h.set("z", "2");
    assert_eq!(
        view(&h.recv(&mut legacy), false),
        vec![It::Marker(8, 8, MEM), It::Doc(8, 0, "z")]
    );
}

#[test]
fn filtered_memory_snapshots_close_with_seqno_advanced() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    set_in(&mut h, c, "x");
    h.set("a", "1");
    let mut cl = collections_client(&mut h, "c-only");
    let req_c = with_value(req(0, 1), value(&format!(r#"{{"collections":["{c:x}"]}}"#)));
    // Seqnos 1..=5 in one checkpoint: the collection's create and its
    // document; the snapshot ends at 5 and closes with SEQNO_ADVANCED(5).
    assert_eq!(
        view(&stream(&mut h, &mut cl, req_c), true),
        vec![
            It::Marker(0, 5, MEM | CHK),
            It::Event(2, BEGIN, c),
            It::Doc(4, c, "x"),
            It::Advanced(5),
        ]
    );
    // A batch of other collections only: nothing.
    set_in(&mut h, d, "y");
    assert_eq!(view(&h.recv(&mut cl), true), vec![]);
    set_in(&mut h, c, "z");
    assert_eq!(
        view(&h.recv(&mut cl), true),
        vec![It::Marker(7, 7, MEM), It::Doc(7, c, "z")]
    );

    // A resume inside a snapshot whose rest is filtered out: a marker and
    // SEQNO_ADVANCED to the client's snapshot end, so it completes.
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    let mut again = collections_client(&mut h, "resume");
    let resume_req = with_value(
        resume(0, 2, uuid, 6, (5, 7)),
        value(&format!(r#"{{"collections":["{d:x}"]}}"#)),
    );
    assert_eq!(
        view(&stream(&mut h, &mut again, resume_req), true),
        vec![It::Marker(5, 7, MEM), It::Advanced(7)]
    );
}

#[test]
fn backfills_skip_dropped_collections_and_filter() {
    let config = config(1).with_bucket(
        BucketConfig::new(BUCKET)
            .with_vbuckets(1)
            .with_checkpoints(2, 1),
    );
    let mut h = Harness::new(config);
    let (c, d) = setup(&mut h);
    set_in(&mut h, c, "x"); // 4, dropped below
    set_in(&mut h, d, "y"); // 5
    h.set("a", "1"); // 6
    drop_collection(&mut h, "s", "c"); // 7
    h.set("b", "2"); // 8
    h.set("e", "3"); // 9
    set_in(&mut h, d, "f"); // 10
    h.set("g", "4"); // 11
    h.set("h", "5"); // 12
    assert!(h.node.bucket().vbucket(0).unwrap().memory_low_seqno() > 1);
    let mut cl = collections_client(&mut h, "all");
    let frames = stream(&mut h, &mut cl, req(0, 1));
    let all = view(&frames, true);
    // The disk snapshot: c's create was replaced by its drop, its document
    // is gone; the rest follows from memory.
    let low = h.node.bucket().vbucket(0).unwrap().memory_low_seqno();
    assert_eq!(
        all[..6].to_vec(),
        vec![
            It::Marker(0, low - 1, DISK | CHK),
            It::Event(1, SCOPE, 8),
            It::Event(3, BEGIN, d),
            It::Doc(5, d, "y"),
            It::Doc(6, 0, "a"),
            It::Event(7, END, c),
        ]
    );
    // A filtered backfill ends its snapshot with SEQNO_ADVANCED when its
    // last items are other collections'.
    let mut f = collections_client(&mut h, "d-only");
    let req_d = with_value(req(0, 1), value(&format!(r#"{{"collections":["{d:x}"]}}"#)));
    let got = view(&stream(&mut h, &mut f, req_d), true);
    assert_eq!(
        got,
        vec![
            It::Marker(0, low - 1, DISK | CHK),
            It::Event(3, BEGIN, d),
            It::Doc(5, d, "y"),
            It::Doc(10, d, "f"),
            It::Advanced(low - 1),
        ]
    );
    assert_eq!(low, 13);
    // A legacy connection: default documents only.
    let mut legacy = h.dcp_client("legacy", OpenFlags::empty());
    let got = view(&stream(&mut h, &mut legacy, req(0, 1)), false);
    let docs: Vec<It> = got
        .into_iter()
        .filter(|i| !matches!(i, It::Marker(..)))
        .collect();
    assert_eq!(
        docs,
        vec![
            It::Doc(6, 0, "a"),
            It::Doc(8, 0, "b"),
            It::Doc(9, 0, "e"),
            It::Doc(11, 0, "g"),
            It::Doc(12, 0, "h")
        ]
    );
}

#[test]
fn dropping_the_filtered_collections_ends_filter_empty() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    let mut cl = collections_client(&mut h, "c-only");
    let req_c = with_value(req(0, 1), value(&format!(r#"{{"collections":["{c:x}"]}}"#)));
    stream(&mut h, &mut cl, req_c);
    set_in(&mut h, c, "x");
    drop_collection(&mut h, "s", "c");
    set_in(&mut h, d, "after");
    assert_eq!(
        view(&h.recv(&mut cl), true),
        vec![
            It::Marker(4, 6, MEM),
            It::Doc(4, c, "x"),
            It::Event(5, END, c),
            It::Advanced(6),
            It::End(7),
        ]
    );

    // A scope filter takes collections created later, ends when the scope
    // is dropped, and sees the scope's own events only.
    let mut sc = collections_client(&mut h, "scope");
    let req_s = with_value(req(0, 1), value(r#"{"scope":"8"}"#));
    let got = view(&stream(&mut h, &mut sc, req_s), true);
    // Memory replays the history: the collection's create adds it.
    assert_eq!(
        got[1..].to_vec(),
        vec![
            It::Event(1, SCOPE, 8),
            It::Event(2, BEGIN, c),
            It::Doc(4, c, "x"),
            It::Event(5, END, c),
            It::Advanced(6)
        ]
    );
    let wall = h.wall();
    let n = h
        .node
        .bucket_mut()
        .create_collection("s", "n", None, wall)
        .unwrap()
        .id;
    set_in(&mut h, n, "k");
    h.node.bucket_mut().drop_scope("s", wall).unwrap();
    assert_eq!(
        view(&h.recv(&mut sc), true),
        vec![
            It::Marker(7, 10, MEM),
            It::Event(7, BEGIN, n),
            It::Doc(8, n, "k"),
            It::Event(9, END, n),
            It::Event(10, DROP_SCOPE, 8),
            It::End(7),
        ]
    );

    // A filter resolved while the collection is being dropped during a
    // backfill ends after the drop event too.
    let config = config(1).with_bucket(
        BucketConfig::new(BUCKET)
            .with_vbuckets(1)
            .with_checkpoints(1, 1),
    );
    let mut h = Harness::new(config);
    let (c, _) = setup(&mut h);
    set_in(&mut h, c, "x");
    let mut cl = collections_client(&mut h, "bf");
    let req_c = with_value(req(0, 1), value(&format!(r#"{{"collections":["{c:x}"]}}"#)));
    let (r, _) = h.stream_req(&mut cl, req_c);
    assert!(r.status().is_success());
    drop_collection(&mut h, "s", "c");
    h.set("later", "v");
    let got = view(&h.recv(&mut cl), true);
    assert_eq!(got.last(), Some(&It::End(7)));
    assert!(got.contains(&It::Event(5, END, c)));
    assert!(!got.iter().any(|i| matches!(i, It::Doc(_, 0, _))));
}

#[test]
fn stream_request_filter_errors() {
    let mut h = Harness::new(config(1));
    let (c, _) = setup(&mut h);
    let mut cl = collections_client(&mut h, "errors");
    let uid = h.node.bucket().manifest().uid();
    let (r, _) = h.stream_req(
        &mut cl,
        with_value(req(0, 1), value(r#"{"collections":["ff"]}"#)),
    );
    assert_eq!(r.status(), Status::UnknownCollection);
    assert_eq!(
        r.value_slice(),
        format!(r#"{{"manifest_uid":"{uid:x}"}}"#).as_bytes()
    );
    let (r, _) = h.stream_req(&mut cl, with_value(req(0, 1), value(r#"{"scope":"ff"}"#)));
    assert_eq!(r.status(), Status::UnknownScope);
    let (r, _) = h.stream_req(
        &mut cl,
        with_value(req(0, 1), value(r#"{"scope":"8","collections":["8"]}"#)),
    );
    assert_eq!(r.status(), Status::Einval);
    // A dropped collection is unknown.
    drop_collection(&mut h, "s", "c");
    let (r, _) = h.stream_req(
        &mut cl,
        with_value(req(0, 1), value(&format!(r#"{{"collections":["{c:x}"]}}"#))),
    );
    assert_eq!(r.status(), Status::UnknownCollection);
    // A filter on a connection without collections: EINVAL.
    let mut legacy = h.dcp_client("legacy", OpenFlags::empty());
    assert_eq!(
        h.control(&mut legacy, "enable_noop", "true"),
        Status::Success
    );
    let (r, _) = h.stream_req(
        &mut legacy,
        with_value(req(0, 1), value(r#"{"collections":["0"]}"#)),
    );
    assert_eq!(r.status(), Status::Einval);
}

#[test]
fn to_latest_on_a_filter_ends_at_the_collections_high_seqno() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    set_in(&mut h, c, "x"); // 4
    set_in(&mut h, d, "y"); // 5
    let mut cl = collections_client(&mut h, "latest");
    let mut r = with_value(req(0, 1), value(&format!(r#"{{"collections":["{c:x}"]}}"#)));
    r.flags = StreamRequestFlags::TO_LATEST;
    let got = view(&stream(&mut h, &mut cl, r), true);
    assert_eq!(got.last(), Some(&It::End(0)));
    assert!(got.contains(&It::Doc(4, c, "x")));
}

fn store(vb: u16, key: Bytes) -> Store {
    Store {
        opcode: Opcode::Set,
        vbucket: vb,
        opaque: 1,
        cas: 0,
        datatype: Datatype::RAW,
        flags: 0,
        expiry: 0,
        key,
        value: Bytes::from_static(b"v"),
    }
}

fn wire_key(collection: u32, key: &str) -> Bytes {
    CollectionKey {
        collection_id: collection,
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
    .to_wire()
}

#[test]
fn kv_commands_address_collections_and_seqnos_per_collection() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    let mut kv = h.connect();
    h.login_with(
        &mut kv,
        &[
            HelloFeature::Xerror,
            HelloFeature::SelectBucket,
            HelloFeature::Collections,
        ],
    );
    assert!(
        h.status(&mut kv, |b| store(0, wire_key(c, "k")).encode(b))
            .is_success()
    );
    assert_eq!(
        h.status(&mut kv, |b| store(0, wire_key(0x77, "k")).encode(b)),
        Status::UnknownCollection
    );
    let wall = h.wall();
    let doc = h.node.bucket_mut().get_in(c, b"k", wall).unwrap();
    assert_eq!((doc.collection, &doc.value[..]), (c, &b"v"[..]));
    assert!(h.node.bucket_mut().get(b"k", wall).is_err());
    let r = h.request(&mut kv, |b| {
        Get {
            vbucket: 0,
            opaque: 2,
            key: wire_key(c, "k"),
        }
        .encode(b)
    });
    assert_eq!(&GetResponse::decode(&r).unwrap().value[..], b"v");
    // GET_ALL_VB_SEQNOS with a collection id: that collection's high seqno.
    let seqnos = |h: &mut Harness, kv: &mut Client, cid: Option<u32>| {
        let r = h.request(kv, |b| {
            GetAllVbSeqnos {
                opaque: 3,
                state: Some(0),
                collection_id: cid,
            }
            .encode(b)
        });
        GetAllVbSeqnosResponse::decode(&r).unwrap()
    };
    assert_eq!(seqnos(&mut h, &mut kv, Some(c)).entries, vec![(0, 4)]);
    assert_eq!(seqnos(&mut h, &mut kv, Some(d)).entries, vec![(0, 3)]);
    assert_eq!(seqnos(&mut h, &mut kv, None).entries, vec![(0, 4)]);
    assert_eq!(
        seqnos(&mut h, &mut kv, Some(0x55)).status,
        Status::UnknownCollection
    );
}

#[test]
fn admin_commands_change_the_manifest() {
    let mut h = Harness::new(config(2));
    let mut a = h.connect();
    let o = h.opaque();
    h.status(&mut a, |b| {
        dcp_proto::msg::client::Hello {
            opaque: o,
            agent: Bytes::new(),
            features: vec![HelloFeature::Xerror],
        }
        .encode(b)
    });
    assert!(
        h.status(&mut a, |b| SaslAuth::plain(1, b"admin", b"adminpw")
            .encode(b))
            .is_success()
    );
    let mut admin = |h: &mut Harness, command: AdminCommand| {
        let frame = h.request(&mut a, |b| command.encode(3, b));
        assert_eq!(frame.opcode(), Opcode::Unknown(ADMIN_OPCODE));
        let body: serde_json::Value = if frame.value_slice().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(frame.value_slice()).unwrap()
        };
        (frame.status(), body)
    };
    let (status, body) = admin(
        &mut h,
        AdminCommand::CreateScope {
            scope: "inventory".into(),
        },
    );
    assert_eq!((status, body["id"].as_str()), (Status::Success, Some("8")));
    let (status, body) = admin(
        &mut h,
        AdminCommand::CreateCollection {
            scope: "inventory".into(),
            collection: "hotels".into(),
            max_ttl: None,
        },
    );
    assert_eq!(status, Status::Success);
    assert_eq!(
        (body["id"].as_str(), body["uid"].as_str()),
        (Some("8"), Some("2"))
    );
    let (status, _) = admin(
        &mut h,
        AdminCommand::CreateCollection {
            scope: "nope".into(),
            collection: "x".into(),
            max_ttl: None,
        },
    );
    assert_eq!(status, Status::UnknownScope);
    let (status, _) = admin(
        &mut h,
        AdminCommand::DropCollection {
            scope: "inventory".into(),
            collection: "nope".into(),
        },
    );
    assert_eq!(status, Status::UnknownCollection);
    let (status, body) = admin(
        &mut h,
        AdminCommand::ModifyCollection {
            scope: "inventory".into(),
            collection: "hotels".into(),
            max_ttl: Some(45),
            no_max_ttl: false,
            history: Some(true),
        },
    );
    assert_eq!(status, Status::Success);
    assert_eq!(body["uid"].as_str(), Some("3"));
    let (status, manifest) = admin(&mut h, AdminCommand::GetManifest);
    assert_eq!(status, Status::Success);
    assert_eq!(manifest["scopes"][1]["collections"][0]["name"], "hotels");
    assert_eq!(manifest["scopes"][1]["collections"][0]["maxTTL"], 45);
    assert_eq!(manifest["scopes"][1]["collections"][0]["history"], true);
    let (status, _) = admin(
        &mut h,
        AdminCommand::DropScope {
            scope: "inventory".into(),
        },
    );
    assert_eq!(status, Status::Success);
    // Every vbucket holds the five events (create scope, create, modify,
    // drop, drop scope).
    for vb in h.node.bucket().vbuckets() {
        assert_eq!(vb.high_seqno(), 5);
    }
}

#[test]
fn a_filtered_stream_behind_the_purge_seqno_needs_no_rollback_when_nothing_of_it_is_above() {
    let config = config(1).with_bucket(
        BucketConfig::new(BUCKET)
            .with_vbuckets(1)
            .with_checkpoints(2, 1),
    );
    let mut h = Harness::new(config);
    let (c, d) = setup(&mut h);
    set_in(&mut h, c, "x"); // 4
    set_in(&mut h, d, "y"); // 5
    h.set("a", "1"); // 6
    h.delete("a"); // 7: a tombstone
    h.set("b", "2"); // 8
    h.set("e", "3"); // 9
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    assert_eq!(h.node.bucket_mut().purge(0, 9).unwrap(), 7);
    let mut cl = collections_client(&mut h, "behind");
    // c's last seqno is 4: a stream of c at 5 lost nothing to the purge.
    let r = with_value(
        resume(0, 1, uuid, 5, (5, 5)),
        value(&format!(r#"{{"collections":["{c:x}"]}}"#)),
    );
    let got = view(&stream(&mut h, &mut cl, r), true);
    assert_eq!(got, vec![It::Marker(5, 8, DISK | CHK), It::Advanced(8)]);
    // The scope's events count for a scope filter: d's create at 3 is
    // not in scope 8, c's create at 2 is; so is a stream of the scope at 5.
    let mut sc = collections_client(&mut h, "scope-behind");
    let r = with_value(resume(0, 2, uuid, 5, (5, 5)), value(r#"{"scope":"8"}"#));
    let (resp, _) = h.stream_req(&mut sc, r);
    assert_eq!(resp.status(), Status::Success);
    // Unfiltered, the same position rolls back to 0.
    let mut all = collections_client(&mut h, "all-behind");
    let (resp, _) = h.stream_req(&mut all, resume(0, 3, uuid, 5, (5, 5)));
    assert_eq!(response(&resp).rollback_seqno(), Some(0));
}

/// A system event as (seqno, event, version, typed data).
type Seen = (u64, SystemEventId, u8, SystemEventData);

/// The system events of a stream, and the SEQNO_ADVANCED seqnos.
fn system_events(frames: &[Frame]) -> (Vec<Seen>, Vec<u64>) {
    let mut events = Vec::new();
    let mut advanced = Vec::new();
    for f in frames {
        match decode(f) {
            Message::SystemEvent(e) => {
                events.push((e.by_seqno, e.event, e.version, e.data().unwrap()))
            }
            Message::SeqnoAdvanced(m) => advanced.push(m.seqno),
            _ => {}
        }
    }
    (events, advanced)
}

#[test]
fn modify_events_go_only_to_flatbuffers_connections_as_version_2() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    h.set("a", "1");
    let wall = h.wall();
    let modified = h
        .node
        .bucket_mut()
        .modify_collection("_default", "d", Some(Some(30)), Some(true), wall)
        .unwrap();
    assert_eq!(
        (modified.id, modified.max_ttl, modified.history),
        (d, Some(30), true)
    );
    // Setting what is set: no event, no new uid.
    let uid = h.node.bucket_mut().manifest().uid();
    h.node
        .bucket_mut()
        .modify_collection("_default", "d", Some(Some(30)), None, wall)
        .unwrap();
    assert_eq!(h.node.bucket_mut().manifest().uid(), uid);

    // Seqnos: 1 scope, 2 c, 3 d, 4 a, 5 modify d.
    let mut fb = collections_client(&mut h, "fb");
    assert_eq!(
        h.control(&mut fb, "flatbuffers_system_events", "true"),
        Status::Success
    );
    let (events, _) = system_events(&stream(&mut h, &mut fb, req(0, 1)));
    let summary: Vec<(u64, SystemEventId, u8)> = events.iter().map(|e| (e.0, e.1, e.2)).collect();
    assert_eq!(
        summary,
        [
            (1, SCOPE, 2),
            (2, BEGIN, 2),
            (3, BEGIN, 2),
            (5, SystemEventId::ModifyCollection, 2)
        ]
    );
    assert_eq!(
        events[3].3,
        SystemEventData::ModifyCollection(CollectionDetails {
            history: true,
            ..CollectionDetails::new(uid, 0, d, Bytes::from_static(b"d"), Some(30))
        })
    );
    // The create of d read the same as over a fixed-struct connection.
    assert_eq!(
        events[2].3,
        SystemEventData::begin_collection(3, 0, d, Bytes::from_static(b"d"), Some(60))
    );

    // Without FlatBuffers: no modify event; SEQNO_ADVANCED covers its seqno.
    let mut plain = collections_client(&mut h, "plain");
    let (events, advanced) = system_events(&stream(&mut h, &mut plain, req(0, 1)));
    let summary: Vec<(u64, SystemEventId, u8)> = events.iter().map(|e| (e.0, e.1, e.2)).collect();
    assert_eq!(summary, [(1, SCOPE, 0), (2, BEGIN, 0), (3, BEGIN, 1)]);
    assert_eq!(advanced, [5]);

    // Live: a modify of c reaches the FlatBuffers stream only.
    h.node
        .bucket_mut()
        .modify_collection("s", "c", None, Some(true), wall)
        .unwrap();
    let (events, _) = system_events(&h.recv(&mut fb));
    assert!(matches!(
        &events[..],
        [(6, SystemEventId::ModifyCollection, 2, SystemEventData::ModifyCollection(m))]
            if m.collection_id == c && m.history && m.max_ttl.is_none()
    ));
    // A snapshot holding nothing else is skipped whole, as one the filter
    // empties; the next write arrives as usual.
    assert!(h.recv(&mut plain).is_empty());
    h.set("z", "1");
    let got = view(&h.recv(&mut plain), true);
    assert!(got.contains(&It::Doc(7, 0, "z")), "{got:?}");
    // The manifest shows the settings.
    let json = h.node.bucket_mut().manifest().to_json().to_string();
    assert!(
        json.contains(r#""history":true"#) && json.contains(r#""maxTTL":30"#),
        "{json}"
    );
}

fn unix_secs(wall: std::time::SystemTime) -> u32 {
    wall.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// Writes a document asking for expiry `asked` into `collection`; returns
/// the expiry it got.
fn write_expiring(b: &mut Bucket, collection: u32, asked: u32, wall: std::time::SystemTime) -> u32 {
    let key = format!("k{asked}");
    b.set_in(
        collection,
        key.as_bytes(),
        "v",
        WriteOptions::new().expiry(asked),
        wall,
    )
    .unwrap();
    b.get_in(collection, key.as_bytes(), wall).unwrap().expiry
}

#[test]
fn a_collection_max_ttl_caps_or_supplies_expiry() {
    let mut h = Harness::new(config(1));
    let (c, d) = setup(&mut h);
    let wall = h.wall();
    let now = unix_secs(wall);
    let b = h.node.bucket_mut();
    let expiry_of =
        |b: &mut Bucket, collection: u32, asked: u32| write_expiring(b, collection, asked, wall);
    // d has a max TTL of 60 s: none asked gets 60 s, more is capped, less
    // (relative or absolute) is kept.
    assert_eq!(expiry_of(b, d, 0), now + 60);
    assert_eq!(expiry_of(b, d, 3600), now + 60);
    assert_eq!(expiry_of(b, d, 10), now + 10);
    assert_eq!(expiry_of(b, d, now + 20), now + 20);
    assert_eq!(expiry_of(b, d, now + 120), now + 60);
    // c has none: the expiry is as asked.
    assert_eq!(expiry_of(b, c, 0), 0);
    assert_eq!(expiry_of(b, c, 3600), now + 3600);
    // A modified max TTL applies to later writes; 0 means no limit.
    b.modify_collection("s", "c", Some(Some(5)), None, wall)
        .unwrap();
    assert_eq!(expiry_of(b, c, 0), now + 5);
    b.modify_collection("s", "c", Some(Some(0)), None, wall)
        .unwrap();
    assert_eq!(expiry_of(b, c, 0), 0);
    // The default collection follows its own max TTL (touch too).
    b.modify_collection("_default", "_default", Some(Some(7)), None, wall)
        .unwrap();
    b.set(b"plain", "v", WriteOptions::new(), wall).unwrap();
    assert_eq!(b.get(b"plain", wall).unwrap().expiry, now + 7);
    b.touch(b"plain", 0, wall).unwrap();
    assert_eq!(b.get(b"plain", wall).unwrap().expiry, now + 7);
}

#[test]
fn a_bucket_max_ttl_applies_where_a_collection_sets_none() {
    let bucket = BucketConfig::new(BUCKET).with_vbuckets(1).with_max_ttl(30);
    let mut h = Harness::new(config(1).with_bucket(bucket));
    let (c, d) = setup(&mut h); // c: no max TTL; d: 60 s
    let wall = h.wall();
    let now = unix_secs(wall);
    let b = h.node.bucket_mut();
    let expiry_of =
        |b: &mut Bucket, collection: u32, asked: u32| write_expiring(b, collection, asked, wall);
    // The bucket's 30 s where the collection has none (the default one too).
    assert_eq!(expiry_of(b, c, 0), now + 30);
    assert_eq!(expiry_of(b, c, 3600), now + 30);
    assert_eq!(expiry_of(b, c, 10), now + 10);
    b.set(b"plain", "v", WriteOptions::new(), wall).unwrap();
    assert_eq!(b.get(b"plain", wall).unwrap().expiry, now + 30);
    // A collection's own max TTL wins, even a longer one.
    assert_eq!(expiry_of(b, d, 0), now + 60);
    // A collection max TTL of 0 means none, overriding the bucket's.
    b.modify_collection("s", "c", Some(Some(0)), None, wall)
        .unwrap();
    assert_eq!(expiry_of(b, c, 0), 0);
    // Unset again, the bucket's applies again.
    b.modify_collection("s", "c", Some(None), None, wall)
        .unwrap();
    assert_eq!(expiry_of(b, c, 0), now + 30);
}

#[test]
fn a_backfill_skips_the_modify_events_of_a_dropped_collection() {
    let config = config(1).with_bucket(
        BucketConfig::new(BUCKET)
            .with_vbuckets(1)
            .with_checkpoints(2, 1),
    );
    let mut h = Harness::new(config);
    let (c, d) = setup(&mut h); // 1 scope, 2 c, 3 d
    let wall = h.wall();
    let b = h.node.bucket_mut();
    b.modify_collection("s", "c", Some(Some(5)), None, wall)
        .unwrap(); // 4
    b.modify_collection("_default", "d", None, Some(true), wall)
        .unwrap(); // 5
    b.drop_collection("s", "c", wall).unwrap(); // 6
    for i in 0..6 {
        h.set(&format!("k{i}"), "v"); // 7..=12: memory no longer holds 1..=6
    }
    let mut fb = collections_client(&mut h, "fb-backfill");
    assert_eq!(
        h.control(&mut fb, "flatbuffers_system_events", "true"),
        Status::Success
    );
    let (events, _) = system_events(&stream(&mut h, &mut fb, req(0, 1)));
    let summary: Vec<(u64, SystemEventId, Option<u32>)> = events
        .iter()
        .map(|e| (e.0, e.1, e.3.collection_id()))
        .collect();
    // c's create was replaced by its drop, and its modify is hidden; d's
    // modify stays.
    assert_eq!(
        summary,
        [
            (1, SCOPE, None),
            (3, BEGIN, Some(d)),
            (5, SystemEventId::ModifyCollection, Some(d)),
            (6, END, Some(c)),
        ]
    );
}
