//! Producer scenarios: STREAM_REQ validation in the server's order with
//! its status codes, and the rollback decision end to end (behavior.md
//! §2.2, §2.3, §8, §10.3, §10.4).

mod producer_harness;

use dcp_proto::bucket::BucketConfig;
use dcp_proto::codec::Status;
use dcp_proto::msg::client::HelloFeature;
use dcp_proto::msg::{
    FailoverEntry, OpenFlags, StreamRequestFlags, StreamRequestOutcome, StreamRequestValue,
    VbucketState,
};
use producer_harness::*;

fn status_of(h: &mut Harness, c: &mut Client, r: dcp_proto::msg::StreamRequest) -> Status {
    h.stream_req(c, r).0.status()
}

#[test]
fn each_check_has_its_status() {
    let mut h = Harness::new(config(4));
    for i in 0..3 {
        h.node
            .bucket_mut()
            .set(
                format!("k{i}").as_bytes(),
                "v",
                dcp_proto::bucket::WriteOptions::new(),
                std::time::UNIX_EPOCH,
            )
            .unwrap();
    }
    let mut c = h.dcp_client("checks", OpenFlags::INCLUDE_XATTRS);
    let flags = |f: u32| StreamRequestFlags::from_bits_retain(f);

    // Validator: unknown flag bits, NO_VALUE, cache-transfer combinations,
    // a value without collections.
    for f in [0x08, 0x200, 0x100 | 0x04] {
        let r = dcp_proto::msg::StreamRequest {
            flags: flags(f),
            ..req(0, 1)
        };
        assert_eq!(status_of(&mut h, &mut c, r), Status::Einval, "{f:#x}");
    }
    let r = with_value(
        req(0, 1),
        StreamRequestValue {
            uid: Some(0),
            ..Default::default()
        },
    );
    assert_eq!(status_of(&mut h, &mut c, r), Status::Einval);

    // 2. vbucket: out of range, dead, replica with ActiveVbOnly.
    assert_eq!(status_of(&mut h, &mut c, req(4, 1)), Status::NotMyVbucket);
    h.node.set_vbucket_state(1, VbucketState::Dead).unwrap();
    assert_eq!(status_of(&mut h, &mut c, req(1, 1)), Status::NotMyVbucket);
    h.node.set_vbucket_state(2, VbucketState::Replica).unwrap();
    let r = dcp_proto::msg::StreamRequest {
        flags: StreamRequestFlags::ACTIVE_VB_ONLY,
        ..req(2, 1)
    };
    assert_eq!(status_of(&mut h, &mut c, r), Status::NotMyVbucket);
    // Order: a dead vbucket wins over a bad range.
    let bad_range = resume(1, 1, 0, 5, (0, 0));
    assert_eq!(status_of(&mut h, &mut c, bad_range), Status::NotMyVbucket);

    // 4. IncludeXattrs needs noop.
    assert_eq!(status_of(&mut h, &mut c, req(0, 1)), Status::NotSupported);
    // Order: noop-mandatory comes before ERANGE.
    let bad_range = resume(0, 1, 0, 5, (6, 6));
    assert_eq!(status_of(&mut h, &mut c, bad_range), Status::NotSupported);
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Success);
    // A replica is streamable without ActiveVbOnly.
    assert!(status_of(&mut h, &mut c, req(2, 2)).is_success());

    // 5, 6. Ranges.
    let r = dcp_proto::msg::StreamRequest {
        end_seqno: 1,
        ..resume(0, 1, 0, 2, (2, 2))
    };
    assert_eq!(status_of(&mut h, &mut c, r), Status::Erange);
    assert_eq!(
        status_of(&mut h, &mut c, resume(0, 1, 0, 2, (3, 3))),
        Status::Erange
    );
    assert_eq!(
        status_of(&mut h, &mut c, resume(0, 1, 0, 2, (0, 1))),
        Status::Erange
    );

    // 8. A live stream exists: KEY_EEXISTS, before the rollback check.
    let (ok, _) = h.stream_req(&mut c, req(0, 3));
    assert!(ok.status().is_success());
    assert_eq!(status_of(&mut h, &mut c, req(0, 4)), Status::KeyEexists);
    assert_eq!(
        status_of(&mut h, &mut c, resume(0, 4, 0xdead, 2, (2, 2))),
        Status::KeyEexists
    );
    // ERANGE comes before KEY_EEXISTS.
    assert_eq!(
        status_of(&mut h, &mut c, resume(0, 1, 0, 2, (3, 3))),
        Status::Erange
    );

    // 9 before 12/13: rollback wins over ENOMEM; ENOMEM over TMPFAIL.
    h.node.bucket_mut().set_memory_full(true);
    h.node.bucket_mut().set_warming_up(3, true).unwrap();
    let (r, _) = h.stream_req(&mut c, resume(3, 1, 0xdead, 1, (1, 1)));
    assert_eq!(r.status(), Status::Rollback);
    assert_eq!(status_of(&mut h, &mut c, req(3, 1)), Status::Enomem);
    h.node.bucket_mut().set_memory_full(false);
    assert_eq!(status_of(&mut h, &mut c, req(3, 1)), Status::Etmpfail);
    h.node.bucket_mut().set_warming_up(3, false).unwrap();
    assert!(status_of(&mut h, &mut c, req(3, 1)).is_success());
}

#[test]
fn start_above_the_high_seqno_and_end_rewrites() {
    let mut h = Harness::new(config(1));
    for i in 0..5 {
        h.set(&format!("k{i}"), "v");
    }
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    let mut c = h.dcp_client("ends", OpenFlags::empty());
    // Ahead of the producer on its own branch: rollback to the high seqno.
    let (r, _) = h.stream_req(&mut c, resume(0, 1, uuid, 9, (9, 9)));
    assert_eq!(response(&r).rollback_seqno(), Some(5));
    // ToLatest: end = high seqno; start == end ends at once with OK.
    let to_latest = dcp_proto::msg::StreamRequest {
        flags: StreamRequestFlags::TO_LATEST,
        ..resume(0, 2, uuid, 5, (5, 5))
    };
    let (r, _) = h.stream_req(&mut c, to_latest);
    assert!(r.status().is_success());
    assert_eq!(items(&h.recv(&mut c)), vec![Item::End(0)]);
    // FromLatest: start = high with the current uuid; nothing to send yet.
    let from_latest = dcp_proto::msg::StreamRequest {
        flags: StreamRequestFlags::FROM_LATEST,
        ..req(0, 3)
    };
    let (r, _) = h.stream_req(&mut c, from_latest);
    assert!(r.status().is_success());
    assert!(h.recv(&mut c).is_empty());
    h.set("new", "v");
    let frames = h.recv(&mut c);
    assert_eq!(
        items(&frames),
        vec![Item::Marker(5, 6, MEM), Item::Mutation(6, "new".to_owned())]
    );
}

#[test]
fn collections_filters_and_stream_ids() {
    let mut h = Harness::new(config(1));
    h.set("a", "1");
    let mut c = h.connect();
    h.login_with(&mut c, &[HelloFeature::Xerror, HelloFeature::Collections]);
    assert_eq!(h.open(&mut c, "coll", OpenFlags::empty()), Status::Success);
    // A JSON value needs noop.
    let with = |v: StreamRequestValue| with_value(req(0, 1), v);
    let default = StreamRequestValue {
        collections: Some(vec![0]),
        ..Default::default()
    };
    assert_eq!(
        status_of(&mut h, &mut c, with(default.clone())),
        Status::NotSupported
    );
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Success);
    let unknown = StreamRequestValue {
        collections: Some(vec![8]),
        ..Default::default()
    };
    let (r, _) = h.stream_req(&mut c, with(unknown));
    assert_eq!(r.status(), Status::UnknownCollection);
    assert_eq!(r.value_slice(), br#"{"manifest_uid":"0"}"#);
    let scope = StreamRequestValue {
        scope: Some(9),
        ..Default::default()
    };
    assert_eq!(status_of(&mut h, &mut c, with(scope)), Status::UnknownScope);
    let both = StreamRequestValue {
        collections: Some(vec![0]),
        scope: Some(0),
        ..Default::default()
    };
    assert_eq!(status_of(&mut h, &mut c, with(both)), Status::Einval);
    // A sid without enable_stream_id.
    let sid = StreamRequestValue {
        sid: Some(3),
        ..Default::default()
    };
    assert_eq!(
        status_of(&mut h, &mut c, with(sid.clone())),
        Status::DcpStreamIdInvalid
    );
    // The default collection streams with cid-prefixed keys.
    let (r, _) = h.stream_req(&mut c, with(default));
    assert!(r.status().is_success());
    let frames = h.recv(&mut c);
    assert_eq!(
        items(&frames),
        vec![
            Item::Marker(0, 1, MEM | CHK),
            Item::Mutation(1, "\0a".to_owned())
        ]
    );

    // Stream ids: required once enabled, one stream per (vb, sid).
    let mut s = h.connect();
    h.login_with(&mut s, &[HelloFeature::Xerror, HelloFeature::Collections]);
    assert_eq!(h.open(&mut s, "sids", OpenFlags::empty()), Status::Success);
    assert_eq!(h.control(&mut s, "enable_noop", "true"), Status::Success);
    assert_eq!(
        h.control(&mut s, "enable_stream_id", "true"),
        Status::Success
    );
    let no_sid = StreamRequestValue {
        uid: Some(0),
        ..Default::default()
    };
    assert_eq!(
        status_of(&mut h, &mut s, with(no_sid)),
        Status::DcpStreamIdInvalid
    );
    let (r, _) = h.stream_req(&mut s, with(sid.clone()));
    assert!(r.status().is_success());
    let frames = h.recv(&mut s);
    assert_eq!(marker(&frames[0]).stream_id, Some(3));
    assert_eq!(frames[0].framing_extras(), [0x22, 0, 3]);
    assert_eq!(status_of(&mut h, &mut s, with(sid)), Status::KeyEexists);
    let other = StreamRequestValue {
        sid: Some(4),
        ..Default::default()
    };
    assert!(status_of(&mut h, &mut s, with(other)).is_success());
    // sid 0 is DCP_STREAMID_INVALID even though the codec refuses it.
    let status =
        h.status(&mut s, |b| {
            dcp_proto::codec::FrameHead::request(dcp_proto::codec::Opcode::DcpStreamReq, 0, 9)
                .encode(b, &[], &[0; 48], &[], br#"{"sid":0}"#)
        });
    assert_eq!(status, Status::DcpStreamIdInvalid);
}

/// A vbucket with failover log [(B, 900), (A, 0)] and high seqno 1100.
fn branched() -> (Harness, u64, u64) {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(1)
        .with_checkpoints(100, 100);
    let mut h = Harness::new(config(1).with_bucket(bucket));
    let a = h.node.bucket().vbucket(0).unwrap().uuid();
    for i in 0..900 {
        h.set(&format!("k{i}"), "v");
    }
    let entry = h.node.failover(0, 0).unwrap();
    assert_eq!(entry.seqno, 900);
    for i in 0..200 {
        h.set(&format!("k{i}"), "w");
    }
    let vb = h.node.bucket().vbucket(0).unwrap();
    assert_eq!(vb.high_seqno(), 1100);
    let b = entry.vbucket_uuid;
    assert_eq!(
        vb.failover_log().entries,
        vec![
            FailoverEntry {
                vbucket_uuid: b,
                seqno: 900
            },
            FailoverEntry {
                vbucket_uuid: a,
                seqno: 0
            }
        ]
    );
    (h, a, b)
}

#[test]
fn rollback_decisions_end_to_end() {
    let (mut h, a, b) = branched();
    let c_uuid = 0xC;
    let mut c = h.dcp_client("rb", OpenFlags::empty());
    let strict = |r: dcp_proto::msg::StreamRequest| dcp_proto::msg::StreamRequest {
        flags: StreamRequestFlags::STRICT_VB_UUID,
        ..r
    };
    // (request, expected: Some(rollback) / None = accepted / Err(status))
    let cases: Vec<(dcp_proto::msg::StreamRequest, Result<Option<u64>, Status>)> = vec![
        (resume(0, 1, a, 1000, (901, 1000)), Ok(Some(900))),
        (resume(0, 1, a, 950, (901, 1000)), Ok(Some(900))),
        (resume(0, 1, a, 850, (801, 900)), Ok(None)),
        (resume(0, 1, a, 880, (851, 950)), Ok(Some(851))),
        (resume(0, 1, a, 900, (901, 1000)), Err(Status::Erange)),
        (resume(0, 1, c_uuid, 500, (401, 500)), Ok(Some(0))),
        (resume(0, 1, b, 1050, (1001, 1080)), Ok(None)),
        (resume(0, 1, b, 1100, (1101, 1200)), Err(Status::Erange)),
        (resume(0, 1, b, 1150, (1101, 1200)), Ok(Some(1100))),
        (resume(0, 1, a, 900, (900, 900)), Ok(None)),
        (resume(0, 1, 0, 5, (5, 5)), Ok(Some(0))),
        (resume(0, 1, c_uuid, 0, (0, 0)), Ok(None)),
        (strict(resume(0, 1, c_uuid, 0, (0, 0))), Ok(Some(0))),
        (strict(resume(0, 1, 0, 0, (0, 0))), Ok(None)),
    ];
    for (i, (request, expected)) in cases.into_iter().enumerate() {
        let (frame, _) = h.stream_req(&mut c, request.clone());
        let got = response(&frame);
        match expected {
            Ok(Some(seqno)) => {
                assert_eq!(
                    got.outcome,
                    StreamRequestOutcome::Rollback(seqno),
                    "case {i}"
                );
                // The value is the 8-byte seqno and nothing else.
                assert_eq!(frame.value_slice(), seqno.to_be_bytes(), "case {i}");
                assert!(frame.extras().is_empty() && frame.key_slice().is_empty());
            }
            Ok(None) => {
                let log = got.failover_log().expect("accepted");
                assert_eq!(log.newest().unwrap().vbucket_uuid, b, "case {i}");
                assert_eq!(frame.value_slice().len(), 32);
                let (closed, _) = h.close_stream(&mut c, 0);
                assert!(closed.is_success());
            }
            Err(status) => assert_eq!(got.status, status, "case {i}"),
        }
    }

    // The §8 recipe: roll back to 900, re-request on A from there: OK.
    let (frame, _) = h.stream_req(&mut c, resume(0, 2, a, 900, (900, 900)));
    assert!(frame.status().is_success());
}

#[test]
fn purge_rule_and_ignore_purged_tombstones() {
    let mut h = Harness::new(config(1));
    let b = h.node.bucket().vbucket(0).unwrap().uuid();
    for i in 1..=1100u64 {
        if i == 600 {
            h.delete("k1");
        } else {
            h.set(&format!("k{i}"), "v");
        }
    }
    assert_eq!(h.node.purge(0, 600).unwrap(), 600);
    let mut c = h.dcp_client("purge", OpenFlags::empty());
    let lagging = resume(0, 1, b, 500, (401, 500));
    assert_eq!(
        response(&h.stream_req(&mut c, lagging.clone()).0).rollback_seqno(),
        Some(0)
    );
    let ignoring = dcp_proto::msg::StreamRequest {
        flags: StreamRequestFlags::IGNORE_PURGED_TOMBSTONES,
        ..lagging.clone()
    };
    assert!(h.stream_req(&mut c, ignoring).0.status().is_success());
    h.close_stream(&mut c, 0);

    // With the purge seqno the client saw (collections JSON): no rollback.
    let mut coll = h.connect();
    h.login_with(
        &mut coll,
        &[HelloFeature::Xerror, HelloFeature::Collections],
    );
    assert_eq!(
        h.open(&mut coll, "purge2", OpenFlags::empty()),
        Status::Success
    );
    assert_eq!(h.control(&mut coll, "enable_noop", "true"), Status::Success);
    let seen = with_value(
        lagging,
        StreamRequestValue {
            purge_seqno: Some(600),
            ..Default::default()
        },
    );
    assert!(h.stream_req(&mut coll, seen).0.status().is_success());
}

#[test]
fn failover_log_branches_on_failover_and_reactivation() {
    let mut h = Harness::new(config(1));
    for i in 0..10 {
        h.set(&format!("k{i}"), "v");
    }
    let a = h.node.bucket().vbucket(0).unwrap().uuid();
    let mut c = h.dcp_client("fo", OpenFlags::empty());
    let (r, _) = h.stream_req(&mut c, req(0, 1));
    assert!(r.status().is_success());
    h.recv(&mut c);
    // Failover, losing the last 3: the streaming connection drops.
    let entry = h.node.failover(0, 3).unwrap();
    assert!(h.node.is_closed(c.id));
    assert_eq!(
        h.node.close_reason(c.id),
        Some(&dcp_proto::producer::CloseReason::Failover(0))
    );
    let vb = h.node.bucket().vbucket(0).unwrap();
    assert_eq!(vb.high_seqno(), 7);
    assert_eq!(vb.failover_log().len(), 2);
    assert!(vb.peek(b"k9").is_none());
    // A client that had everything rolls back to the branch point.
    let mut c2 = h.dcp_client("fo2", OpenFlags::empty());
    let (r, _) = h.stream_req(&mut c2, resume(0, 1, a, 10, (10, 10)));
    assert_eq!(response(&r).rollback_seqno(), Some(entry.seqno));
    let (r, _) = h.stream_req(
        &mut c2,
        resume(0, 2, a, entry.seqno, (entry.seqno, entry.seqno)),
    );
    assert!(r.status().is_success());
    // Replica then active again: another branch, and the stream ended.
    h.recv(&mut c2);
    h.node.set_vbucket_state(0, VbucketState::Replica).unwrap();
    h.node.set_vbucket_state(0, VbucketState::Active).unwrap();
    assert_eq!(h.node.bucket().vbucket(0).unwrap().failover_log().len(), 3);
    assert_eq!(items(&h.recv(&mut c2)), vec![Item::End(2)]);
}
