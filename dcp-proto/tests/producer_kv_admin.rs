//! Producer scenarios: KV commands over the wire appearing on DCP, STAT
//! groups, GET_ALL_VB_SEQNOS, SET_VBUCKET and the admin command.

mod producer_harness;

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, Frame, Opcode, Status};
use dcp_proto::msg::client::{
    Concat, Counter, CounterResponse, Delete, Get, GetAllVbSeqnos, GetAllVbSeqnosResponse,
    GetAndTouch, GetResponse, HelloFeature, MutationResponse, SaslAuth, Stat, StatResponse, Store,
    Touch,
};
use dcp_proto::msg::{OpenFlags, VbucketState};
use dcp_proto::producer::{ADMIN_OPCODE, AdminCommand, CloseReason};
use producer_harness::*;

fn store(opcode: Opcode, key: &str, value: &str, cas: u64) -> Store {
    Store {
        opcode,
        vbucket: 0,
        opaque: 1,
        cas,
        datatype: Datatype::RAW,
        flags: 0x0102_0304,
        expiry: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

#[test]
fn kv_writes_appear_on_dcp() {
    let mut h = Harness::new(config(1));
    let mut kv = h.connect();
    h.login_with(
        &mut kv,
        &[
            HelloFeature::Xerror,
            HelloFeature::MutationSeqno,
            HelloFeature::Json,
        ],
    );
    let mut dcp = h.dcp_client("watch", OpenFlags::empty());
    h.stream_req(&mut dcp, req(0, 5));
    assert!(h.recv(&mut dcp).is_empty());

    let set = h.request(&mut kv, |b| {
        store(Opcode::Set, "doc", r#"{"a":1}"#, 0).encode(b)
    });
    let set = MutationResponse::decode(&set).unwrap();
    assert_eq!(set.status, Status::Success);
    let token = set.token.unwrap();
    assert_eq!(token.seqno, 1);
    assert_eq!(
        token.vbucket_uuid,
        h.node.bucket().vbucket(0).unwrap().uuid()
    );

    // The DCP client needs a wakeup and sees the mutation.
    assert!(h.node.take_wakeups().contains(&dcp.id));
    let frames = h.recv(&mut dcp);
    assert_eq!(
        items(&frames),
        vec![
            Item::Marker(0, 1, MEM | CHK),
            Item::Mutation(1, "doc".to_owned())
        ]
    );
    let dcp_proto::msg::Message::Mutation(m) = decode(&frames[1]) else {
        panic!()
    };
    assert_eq!(
        (m.flags, m.cas, m.datatype),
        (0x0102_0304, set.cas, Datatype::JSON)
    );

    // CAS mismatch, ADD on an existing key, REPLACE of a missing one.
    let status = |h: &mut Harness, kv: &mut Client, s: Store| h.status(kv, |b| s.encode(b));
    assert_eq!(
        status(&mut h, &mut kv, store(Opcode::Set, "doc", "x", set.cas + 1)),
        Status::KeyEexists
    );
    assert_eq!(
        status(&mut h, &mut kv, store(Opcode::Add, "doc", "x", 0)),
        Status::KeyEexists
    );
    assert_eq!(
        status(&mut h, &mut kv, store(Opcode::Replace, "nope", "x", 0)),
        Status::KeyEnoent
    );
    assert_eq!(
        status(&mut h, &mut kv, store(Opcode::Replace, "doc", "2", set.cas)),
        Status::Success
    );

    // GET returns body, flags and CAS.
    let get = h.request(&mut kv, |b| {
        Get {
            vbucket: 0,
            opaque: 2,
            key: Bytes::from_static(b"doc"),
        }
        .encode(b)
    });
    let get = GetResponse::decode(&get).unwrap();
    assert_eq!((&get.value[..], get.flags), (&b"2"[..], 0x0102_0304));
    let miss = h.request(&mut kv, |b| {
        Get {
            vbucket: 0,
            opaque: 2,
            key: Bytes::from_static(b"zz"),
        }
        .encode(b)
    });
    assert_eq!(miss.status(), Status::KeyEnoent);

    // APPEND, counters, TOUCH, GAT, DELETE.
    let append = Concat {
        opcode: Opcode::Append,
        vbucket: 0,
        opaque: 3,
        cas: 0,
        key: Bytes::from_static(b"doc"),
        value: Bytes::from_static(b"0"),
    };
    assert!(h.status(&mut kv, |b| append.encode(b)).is_success());
    let incr = Counter {
        opcode: Opcode::Increment,
        vbucket: 0,
        opaque: 4,
        cas: 0,
        key: Bytes::from_static(b"doc"),
        delta: 5,
        initial: 0,
        expiry: Counter::NO_CREATE,
    };
    let r = CounterResponse::decode(&h.request(&mut kv, |b| incr.encode(b))).unwrap();
    assert_eq!(r.value, 25);
    let missing = Counter {
        key: Bytes::from_static(b"ctr"),
        ..incr.clone()
    };
    assert_eq!(h.status(&mut kv, |b| missing.encode(b)), Status::KeyEnoent);
    let create = Counter {
        expiry: 0,
        initial: 100,
        ..missing
    };
    let r = CounterResponse::decode(&h.request(&mut kv, |b| create.encode(b))).unwrap();
    assert_eq!(r.value, 100);
    let touch = Touch {
        vbucket: 0,
        opaque: 5,
        key: Bytes::from_static(b"doc"),
        expiry: 60,
    };
    assert!(h.status(&mut kv, |b| touch.encode(b)).is_success());
    let gat = GetAndTouch {
        vbucket: 0,
        opaque: 6,
        key: Bytes::from_static(b"doc"),
        expiry: 0,
    };
    let gat = GetResponse::decode(&h.request(&mut kv, |b| gat.encode(b))).unwrap();
    assert_eq!(&gat.value[..], b"25");
    let del = Delete {
        vbucket: 0,
        opaque: 7,
        cas: 0,
        key: Bytes::from_static(b"doc"),
    };
    assert!(h.status(&mut kv, |b| del.encode(b)).is_success());
    assert_eq!(h.status(&mut kv, |b| del.encode(b)), Status::KeyEnoent);

    // The stream read the changes after they were all made: the open
    // checkpoint kept only the latest version of each key.
    assert_eq!(
        items(&h.recv(&mut dcp)),
        vec![
            Item::Marker(5, 8, MEM),
            Item::Mutation(5, "ctr".to_owned()),
            Item::Deletion(8, "doc".to_owned()),
        ]
    );
    // Writes to a vbucket that is not here.
    let wrong = Store {
        vbucket: 3,
        ..store(Opcode::Set, "k", "v", 0)
    };
    assert_eq!(h.status(&mut kv, |b| wrong.encode(b)), Status::NotMyVbucket);
}

fn stats(h: &mut Harness, c: &mut Client, group: &str) -> Result<Vec<(String, String)>, Status> {
    let g = group.to_owned();
    h.send(c, |b| Stat::new(9, g).encode(b)).unwrap();
    let frames = h.recv(c);
    let responses: Vec<StatResponse> = frames
        .iter()
        .map(|f| StatResponse::decode(f).unwrap())
        .collect();
    let last = responses.last().unwrap();
    assert!(last.is_terminator());
    if !last.status.is_success() {
        return Err(last.status);
    }
    Ok(responses[..responses.len() - 1]
        .iter()
        .map(|s| {
            (
                String::from_utf8(s.key.to_vec()).unwrap(),
                String::from_utf8(s.value.to_vec()).unwrap(),
            )
        })
        .collect())
}

fn get<'a>(stats: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn stat_groups_and_all_vb_seqnos() {
    let mut h = Harness::new(config(2));
    for i in 0..10 {
        h.set(&format!("k{i}"), "v");
    }
    let vb0 = h.node.bucket().vbucket(0).unwrap().clone();
    let mut c = h.connect();
    h.login(&mut c);
    let s = stats(&mut h, &mut c, "vbucket-seqno 0").unwrap();
    assert_eq!(
        get(&s, "vb_0:high_seqno"),
        Some(vb0.high_seqno().to_string().as_str())
    );
    assert_eq!(get(&s, "vb_0:uuid"), Some(vb0.uuid().to_string().as_str()));
    assert_eq!(get(&s, "vb_1:high_seqno"), None);
    let s = stats(&mut h, &mut c, "failovers").unwrap();
    assert_eq!(get(&s, "vb_1:num_entries"), Some("1"));
    assert_eq!(get(&s, "vb_0:0:seq"), Some("0"));
    let s = stats(&mut h, &mut c, "vbucket").unwrap();
    assert_eq!(get(&s, "vb_1"), Some("active"));
    assert_eq!(
        stats(&mut h, &mut c, "vbucket-seqno 7"),
        Err(Status::NotMyVbucket)
    );
    assert_eq!(
        stats(&mut h, &mut c, "no-such-group"),
        Err(Status::KeyEnoent)
    );

    let mut d = h.dcp_client("statme", OpenFlags::empty());
    h.stream_req(&mut d, req(1, 33));
    h.recv(&mut d);
    let s = stats(&mut h, &mut c, "dcp").unwrap();
    assert_eq!(get(&s, "ep_dcp_count"), Some("1"));
    assert_eq!(get(&s, "eq_dcpq:statme:type"), Some("producer"));
    assert_eq!(get(&s, "eq_dcpq:statme:stream_1_opaque"), Some("33"));
    assert_eq!(get(&s, "eq_dcpq:statme:stream_1_state"), Some("in-memory"));
    assert_eq!(
        get(&s, "eq_dcpq:statme:stream_1_cursor_registered"),
        Some("true")
    );
    let received: u64 = get(&s, "eq_dcpq:statme:last_receive_time")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        received > 1_000_000_000,
        "seconds since the epoch: {received}"
    );
    let agg = stats(&mut h, &mut c, "dcpagg").unwrap();
    assert_eq!(get(&agg, "connagg_statme:count"), Some("1"));
    assert!(get(&agg, "connagg_statme:items_sent").is_some());
    assert_eq!(
        get(&s, "eq_dcpq:statme:stream_1_last_sent_seqno"),
        Some(
            h.node
                .bucket()
                .vbucket(1)
                .unwrap()
                .high_seqno()
                .to_string()
                .as_str()
        )
    );

    h.node.set_vbucket_state(1, VbucketState::Replica).unwrap();
    let r = h.request(&mut c, |b| {
        GetAllVbSeqnos {
            opaque: 1,
            state: Some(1),
            collection_id: None,
        }
        .encode(b)
    });
    let r = GetAllVbSeqnosResponse::decode(&r).unwrap();
    assert_eq!(r.entries, vec![(0, vb0.high_seqno())]);
    let r = h.request(&mut c, |b| {
        GetAllVbSeqnos {
            opaque: 1,
            state: None,
            collection_id: None,
        }
        .encode(b)
    });
    assert_eq!(GetAllVbSeqnosResponse::decode(&r).unwrap().entries.len(), 2);
}

fn admin_client(h: &mut Harness) -> Client {
    let mut c = h.connect();
    let o = h.opaque();
    h.status(&mut c, |b| {
        dcp_proto::msg::client::Hello {
            opaque: o,
            agent: Bytes::new(),
            features: vec![HelloFeature::Xerror],
        }
        .encode(b)
    });
    assert!(
        h.status(&mut c, |b| SaslAuth::plain(1, b"admin", b"adminpw")
            .encode(b))
            .is_success()
    );
    c
}

fn admin(h: &mut Harness, c: &mut Client, command: AdminCommand) -> (Status, serde_json::Value) {
    let frame: Frame = h.request(c, |b| command.encode(3, b));
    assert_eq!(frame.opcode(), Opcode::Unknown(ADMIN_OPCODE));
    let value = if frame.value_slice().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(frame.value_slice()).unwrap()
    };
    (frame.status(), value)
}

#[test]
fn faults_over_the_wire() {
    let mut h = Harness::new(config(2));
    for i in 0..20 {
        h.set(&format!("k{i}"), "v");
    }
    let mut user = h.connect();
    h.login(&mut user);
    let mut buf = BytesMut::new();
    AdminCommand::MemoryFull { on: true }
        .encode(1, &mut buf)
        .unwrap();
    assert_eq!(
        h.status(&mut user, |b| {
            b.extend_from_slice(&buf);
            Ok(())
        }),
        Status::Eaccess
    );

    let mut a = admin_client(&mut h);
    let mut watcher = h.dcp_client("watcher", OpenFlags::empty());
    h.stream_req(&mut watcher, req(0, 1));
    h.recv(&mut watcher);
    // Stall: responses flow, stream messages do not.
    let (status, _) = admin(
        &mut h,
        &mut a,
        AdminCommand::Stall {
            name: "watcher".to_owned(),
            on: true,
        },
    );
    assert!(status.is_success());
    h.set("k0", "changed");
    let mut got = Vec::new();
    for i in 0..40 {
        h.set(&format!("more{i}"), "v");
    }
    assert!(h.recv(&mut watcher).is_empty());
    admin(
        &mut h,
        &mut a,
        AdminCommand::Stall {
            name: "watcher".to_owned(),
            on: false,
        },
    );
    got.extend(items(&h.recv(&mut watcher)));
    assert!(!got.is_empty());

    // SET_VBUCKET as ns_server sends it: the stream ends StateChanged.
    let vb0_state = h.request(&mut a, |b| {
        dcp_proto::codec::FrameHead::request(Opcode::SetVbucket, 0, 5).encode(
            b,
            &[],
            &[2],
            &[],
            &[],
        )
    });
    assert_eq!(vb0_state.status(), Status::NoBucket);
    let select = dcp_proto::msg::client::SelectBucket::new(6, BUCKET);
    assert!(h.status(&mut a, |b| select.encode(b)).is_success());
    let r = h.request(&mut a, |b| {
        dcp_proto::codec::FrameHead::request(Opcode::SetVbucket, 0, 5).encode(
            b,
            &[],
            &[0, 0, 0, 2],
            &[],
            &[],
        )
    });
    assert!(r.status().is_success());
    assert_eq!(
        h.node.bucket().vbucket(0).unwrap().state(),
        VbucketState::Replica
    );
    assert_eq!(items(&h.recv(&mut watcher)), vec![Item::End(2)]);
    let (status, _) = admin(
        &mut h,
        &mut a,
        AdminCommand::SetVbucketState {
            vb: 0,
            state: "active".to_owned(),
        },
    );
    assert!(status.is_success());

    // Failover over the wire.
    h.stream_req(&mut watcher, req(1, 2));
    let (status, result) = admin(
        &mut h,
        &mut a,
        AdminCommand::Failover {
            vb: 1,
            lose_last: 1,
        },
    );
    assert!(status.is_success());
    let seqno = result["seqno"].as_u64().unwrap();
    let log = h.node.bucket().vbucket(1).unwrap().failover_log().clone();
    assert_eq!(log.newest().unwrap().seqno, seqno);
    assert_eq!(
        result["vbucket_uuid"],
        log.newest().unwrap().vbucket_uuid.to_string()
    );
    assert_eq!(
        h.node.close_reason(watcher.id),
        Some(&CloseReason::Failover(1))
    );

    // Errors carry a JSON body.
    let (status, body) = admin(&mut h, &mut a, AdminCommand::Purge { vb: 99, up_to: 1 });
    assert_eq!(status, Status::NotMyVbucket);
    assert!(body["error"]["context"].as_str().unwrap().contains("99"));
    let (status, _) = admin(
        &mut h,
        &mut a,
        AdminCommand::SetVbucketState {
            vb: 0,
            state: "asleep".to_owned(),
        },
    );
    assert_eq!(status, Status::Einval);
    let (status, result) = admin(&mut h, &mut a, AdminCommand::ExpireDue);
    assert!(status.is_success());
    assert_eq!(result["expired"], 0);

    // Drop by name.
    let d = h.dcp_client("victim", OpenFlags::empty());
    let (status, _) = admin(
        &mut h,
        &mut a,
        AdminCommand::Drop {
            name: "victim".to_owned(),
        },
    );
    assert!(status.is_success());
    assert_eq!(h.node.close_reason(d.id), Some(&CloseReason::Dropped));
}
