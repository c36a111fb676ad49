//! Producer scenarios: snapshot production (disk then memory, dedup),
//! flow control, noops and idle disconnect, CLOSE_STREAM both ways,
//! STREAM_END reasons (behavior.md §2.6–2.8, §4, §5, §10.5–10.9).

mod producer_harness;

use std::time::Duration;

use dcp_proto::bucket::BucketConfig;
use dcp_proto::codec::{Frame, FrameHead, Opcode, Status};
use dcp_proto::msg::client::{Stat, StatResponse};
use dcp_proto::msg::{DcpNoop, Message, OpenFlags, StatusResponse, VbucketState};
use dcp_proto::producer::CloseReason;
use producer_harness::*;

/// One vbucket, checkpoints of 4 items, 2 checkpoints kept in memory.
fn small_memory() -> Harness {
    let bucket = BucketConfig::new(BUCKET)
        .with_vbuckets(1)
        .with_checkpoints(4, 2);
    let mut config = config(1).with_bucket(bucket);
    config.backfill_batch = 2;
    Harness::new(config)
}

fn m(seqno: u64, key: &str) -> Item {
    Item::Mutation(seqno, key.to_owned())
}

#[test]
fn disk_backfill_then_deduplicated_memory_snapshots() {
    let mut h = small_memory();
    for i in 0..10 {
        h.set(&format!("k{i}"), "v"); // seqnos 1..=10
    }
    h.set("k1", "again"); // 11
    h.set("k9", "again"); // 12: replaces k9@10 in the open checkpoint
    let vb = h.node.bucket().vbucket(0).unwrap();
    assert_eq!(vb.memory_low_seqno(), 5);

    let mut c = h.dcp_client("snap", OpenFlags::empty());
    let (r, _) = h.stream_req(&mut c, req(0, 1));
    assert!(r.status().is_success());
    let got = items(&h.recv(&mut c));
    assert_eq!(
        got,
        vec![
            // Disk: everything below memory, as of seqno 4 (k1@2 included
            // although k1 was written again later: no dedup across
            // snapshots).
            Item::Marker(0, 4, DISK | CHK),
            m(1, "k0"),
            m(2, "k1"),
            m(3, "k2"),
            m(4, "k3"),
            // Memory, one snapshot per checkpoint, from its start.
            Item::Marker(5, 8, MEM | CHK),
            m(5, "k4"),
            m(6, "k5"),
            m(7, "k6"),
            m(8, "k7"),
            // The open checkpoint, deduplicated: k9@10 is gone.
            Item::Marker(9, 12, MEM | CHK),
            m(9, "k8"),
            m(11, "k1"),
            m(12, "k9"),
        ]
    );
    // A later write inside the same open checkpoint: a marker without the
    // Checkpoint flag, starting at the item.
    h.set("k8", "again"); // 13, dedups k8@9
    assert_eq!(
        items(&h.recv(&mut c)),
        vec![Item::Marker(13, 13, MEM), m(13, "k8")]
    );
}

#[test]
fn a_disk_snapshot_has_each_key_once_and_reads_as_of_its_end() {
    let mut h = small_memory();
    for i in 0..3 {
        h.set(&format!("k{i}"), "v"); // 1..=3
    }
    h.set("k0", "v2"); // 4: k0 once in the disk snapshot, at 4
    for i in 3..9 {
        h.set(&format!("k{i}"), "v"); // 5..=10
    }
    // The dedup of k0 made the first checkpoint [1..5].
    assert_eq!(h.node.bucket().vbucket(0).unwrap().memory_low_seqno(), 6);
    let mut c = h.dcp_client("asof", OpenFlags::empty());
    h.stream_req(&mut c, req(0, 1));
    // Take only the marker and the first items of the backfill.
    let first = items(&h.recv_budget(&mut c, 1));
    assert_eq!(first, vec![Item::Marker(0, 5, DISK | CHK)]);
    let next = items(&h.recv_budget(&mut c, 1));
    assert_eq!(next, vec![m(2, "k1")]);
    // k2@3 is rewritten while the backfill runs: the disk snapshot still
    // carries k2@3 (its snapshot is as of seqno 5); the new version comes
    // from memory.
    h.set("k2", "late"); // 11
    let rest = items(&h.recv(&mut c));
    assert_eq!(&rest[..3], &[m(3, "k2"), m(4, "k0"), m(5, "k3")]);
    assert_eq!(rest.last(), Some(&m(11, "k2")));
}

#[test]
fn resuming_mid_snapshot_restarts_the_snapshot() {
    let mut h = small_memory();
    for i in 0..7 {
        h.set(&format!("k{i}"), "v"); // [1..4] [5..7 open]
    }
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    let mut c = h.dcp_client("mid", OpenFlags::empty());
    // The client had [5, 7] up to 6: the first marker starts at 5.
    let (r, _) = h.stream_req(&mut c, resume(0, 1, uuid, 6, (5, 7)));
    assert!(r.status().is_success());
    assert_eq!(
        items(&h.recv(&mut c)),
        vec![Item::Marker(5, 7, MEM), m(7, "k6")]
    );
}

#[test]
fn end_seqno_overshoots_in_memory_but_not_on_disk() {
    let mut h = small_memory();
    for i in 0..10 {
        h.set(&format!("k{i}"), "v");
    }
    let mut c = h.dcp_client("ends", OpenFlags::empty());
    // Memory: the batch [5..8] is sent whole although end = 6; the first
    // marker starts at the requested snapshot start (4).
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    let r = dcp_proto::msg::StreamRequest {
        end_seqno: 6,
        ..resume(0, 1, uuid, 4, (4, 4))
    };
    h.stream_req(&mut c, r);
    assert_eq!(
        items(&h.recv(&mut c)),
        vec![
            Item::Marker(4, 8, MEM | CHK),
            m(5, "k4"),
            m(6, "k5"),
            m(7, "k6"),
            m(8, "k7"),
            Item::End(0)
        ]
    );
    // Disk: stops at the end seqno.
    let r = dcp_proto::msg::StreamRequest {
        end_seqno: 2,
        ..req(0, 2)
    };
    h.stream_req(&mut c, r);
    assert_eq!(
        items(&h.recv(&mut c)),
        vec![
            Item::Marker(0, 2, DISK | CHK),
            m(1, "k0"),
            m(2, "k1"),
            Item::End(0)
        ]
    );
    // start == end: STREAM_END(OK) at once, after the success response.
    let r = dcp_proto::msg::StreamRequest {
        end_seqno: 10,
        ..resume(0, 3, uuid, 10, (10, 10))
    };
    let (resp, _) = h.stream_req(&mut c, r);
    assert!(resp.status().is_success());
    assert_eq!(items(&h.recv(&mut c)), vec![Item::End(0)]);
}

#[test]
fn deletions_expirations_and_delete_times() {
    let mut h = small_memory();
    h.set("a", "1"); // 1
    h.set("b", "2"); // 2
    h.delete("a"); // 3
    let wall = h.wall();
    h.node.bucket_mut().expire(b"b", wall).unwrap(); // 4
    for i in 0..8 {
        h.set(&format!("f{i}"), "v"); // 5..12: [1..4] leaves memory
    }
    // v1 deletions, expiry as deletion without IncludeDeleteTimes.
    let mut c = h.dcp_client("del1", OpenFlags::empty());
    assert_eq!(
        h.control(&mut c, "enable_expiry_opcode", "true"),
        Status::Success
    );
    h.stream_req(
        &mut c,
        dcp_proto::msg::StreamRequest {
            end_seqno: 4,
            ..req(0, 1)
        },
    );
    let frames = h.recv(&mut c);
    assert_eq!(
        items(&frames),
        vec![
            Item::Marker(0, 4, DISK | CHK),
            Item::Deletion(3, "a".to_owned()),
            Item::Deletion(4, "b".to_owned()),
            Item::End(0)
        ]
    );
    assert!(matches!(decode(&frames[1]), Message::Deletion(d) if d.delete_time.is_none()));
    // With IncludeDeleteTimes: v2 deletions with the delete time from disk,
    // and EXPIRATION.
    let mut c = h.dcp_client("del2", OpenFlags::INCLUDE_DELETE_TIMES);
    assert_eq!(
        h.control(&mut c, "enable_expiry_opcode", "true"),
        Status::Success
    );
    h.stream_req(
        &mut c,
        dcp_proto::msg::StreamRequest {
            end_seqno: 4,
            ..req(0, 1)
        },
    );
    let frames = h.recv(&mut c);
    assert_eq!(
        items(&frames)[1..3],
        [
            Item::Deletion(3, "a".to_owned()),
            Item::Expiration(4, "b".to_owned())
        ]
    );
    assert!(
        matches!(decode(&frames[1]), Message::Deletion(d) if d.delete_time == Some(1_700_000_000))
    );
    // From memory, a deletion's delete time is 0.
    h.delete("f0");
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    h.stream_req(&mut c, resume(0, 2, uuid, 12, (12, 12)));
    let frames = h.recv(&mut c);
    assert!(matches!(decode(&frames[1]), Message::Deletion(d) if d.delete_time == Some(0)));
}

fn stat(h: &mut Harness, c: &mut Client, group: &str, name: &str) -> Option<String> {
    let g = group.to_owned();
    h.send(c, |b| Stat::new(77, g).encode(b)).unwrap();
    let frames = h.recv(c);
    frames
        .iter()
        .filter(|f| f.opcode() == Opcode::Stat)
        .map(|f| StatResponse::decode(f).unwrap())
        .find(|s| &s.key[..] == name.as_bytes())
        .map(|s| String::from_utf8(s.value.to_vec()).unwrap())
}

fn stream_bytes(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|f| f.is_request() && f.opcode() != Opcode::DcpNoop)
        .map(Frame::wire_len)
        .sum()
}

#[test]
fn flow_control_pauses_at_the_window_and_resumes_on_ack() {
    let mut h = Harness::new(config(1));
    for i in 0..50 {
        h.set(&format!("key-{i:03}"), &"x".repeat(40));
    }
    let mut c = h.dcp_client("flow", OpenFlags::empty());
    assert_eq!(
        h.control(&mut c, "connection_buffer_size", "500"),
        Status::Success
    );
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Success);
    assert_eq!(h.control(&mut c, "set_noop_interval", "1"), Status::Success);
    h.stream_req(&mut c, req(0, 1));
    let first = h.recv(&mut c);
    let sent = stream_bytes(&first);
    let last = first.last().unwrap().wire_len();
    // Sent while outstanding < 500: one message may overshoot.
    assert!(sent >= 500 && sent - last < 500, "{sent}");
    // Paused: nothing more, however often we ask.
    assert!(h.recv(&mut c).is_empty());
    let mut admin = h.connect();
    h.login(&mut admin);
    assert_eq!(
        stat(&mut h, &mut admin, "dcp", "eq_dcpq:flow:unacked_bytes"),
        Some(sent.to_string())
    );
    assert_eq!(
        stat(&mut h, &mut admin, "dcp", "eq_dcpq:flow:paused"),
        Some("true".to_owned())
    );
    // Noops still flow while paused and take no credit.
    h.advance(Duration::from_secs(1));
    let noop = h.recv(&mut c);
    assert_eq!(noop.len(), 1);
    assert_eq!(noop[0].opcode(), Opcode::DcpNoop);
    let reply = StatusResponse::success(Opcode::DcpNoop, noop[0].opaque());
    h.send(&c, |b| reply.encode(b)).unwrap();
    // A partial ack that brings outstanding below the window resumes.
    h.ack(&c, (sent - 499) as u32);
    let second = h.recv(&mut c);
    assert!(!second.is_empty());
    let outstanding = 499 + stream_bytes(&second);
    assert!(outstanding >= 500);
    // Over-acking clamps at zero; everything else arrives.
    h.ack(&c, u32::MAX);
    assert_eq!(
        stat(&mut h, &mut admin, "dcp", "eq_dcpq:flow:unacked_bytes"),
        Some("0".to_owned())
    );
    let mut all = first;
    all.extend(second);
    loop {
        let more = h.recv(&mut c);
        if more.is_empty() {
            break;
        }
        let n = stream_bytes(&more) as u32;
        all.extend(more);
        h.ack(&c, n);
    }
    let mutations = items(&all)
        .into_iter()
        .filter(|i| matches!(i, Item::Mutation(..)))
        .count();
    assert_eq!(mutations, 50);
    // Size 0 turns flow control off.
    assert_eq!(
        h.control(&mut c, "connection_buffer_size", "0"),
        Status::Success
    );
}

#[test]
fn noops_count_from_the_last_noop_one_at_a_time() {
    let mut h = Harness::new(config(1));
    let mut c = h.dcp_client("noops", OpenFlags::empty());
    // Disabled: no deadline, no idle disconnect.
    assert_eq!(h.node.poll_timeout(c.id), None);
    h.advance(Duration::from_secs(1000));
    assert!(!h.node.is_closed(c.id));
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Success);
    assert_eq!(
        h.control(&mut c, "set_noop_interval", "10"),
        Status::Success
    );
    // The first noop is due one interval after DCP_OPEN (long past).
    h.advance(Duration::from_millis(1));
    let noop = h.recv(&mut c);
    assert_eq!(noop.len(), 1);
    let Message::DcpNoop(DcpNoop { opaque }) = decode(&noop[0]) else {
        panic!("a noop");
    };
    assert_eq!(opaque, 10_000_001);
    // Unanswered: no second noop.
    h.advance(Duration::from_secs(30));
    assert!(h.recv(&mut c).is_empty());
    let reply = StatusResponse::success(Opcode::DcpNoop, opaque);
    h.send(&c, |b| reply.encode(b)).unwrap();
    // The next one is due 10 s after the previous noop, which is past.
    h.advance(Duration::from_millis(1));
    let noop = h.recv(&mut c);
    assert_eq!(noop[0].opaque(), 10_000_002);
    assert_eq!(
        h.node.poll_timeout(c.id),
        Some(h.now + Duration::from_secs(360) - Duration::from_millis(1))
    );
    // A reply with the wrong opaque disconnects.
    let wrong = StatusResponse::success(Opcode::DcpNoop, 5);
    assert!(h.send(&c, |b| wrong.encode(b)).is_err());
    assert_eq!(
        h.node.close_reason(c.id),
        Some(&CloseReason::NoopOpaqueMismatch(5))
    );
}

#[test]
fn idle_consumers_are_disconnected() {
    let mut h = Harness::new(config(1).with_idle_timeout(Duration::from_secs(60)));
    let mut c = h.dcp_client("idle", OpenFlags::empty());
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Success);
    h.advance(Duration::from_secs(59));
    assert!(!h.node.is_closed(c.id));
    // Any input resets the idle clock.
    let plain = FrameHead::request(Opcode::Noop, 0, 1);
    h.send(&c, |b| plain.encode(b, &[], &[], &[], &[])).unwrap();
    h.advance(Duration::from_secs(59));
    assert!(!h.node.is_closed(c.id));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.node.close_reason(c.id), Some(&CloseReason::IdleTimeout));
}

#[test]
fn close_stream_without_and_with_stream_end() {
    let mut h = Harness::new(config(2));
    h.set("a", "1");
    let mut c = h.dcp_client("close", OpenFlags::empty());
    h.stream_req(&mut c, req(0, 10));
    h.recv(&mut c);
    let (status, after) = h.close_stream(&mut c, 0);
    assert_eq!(status, Status::Success);
    assert!(after.is_empty(), "no STREAM_END without the control");
    assert_eq!(h.close_stream(&mut c, 0).0, Status::KeyEnoent);
    assert_eq!(h.close_stream(&mut c, 1).0, Status::KeyEnoent);

    assert_eq!(
        h.control(&mut c, "send_stream_end_on_client_close_stream", "true"),
        Status::Success
    );
    let (r, _) = h.stream_req(&mut c, req(0, 11));
    assert!(r.status().is_success());
    let (status, after) = h.close_stream(&mut c, 0);
    assert_eq!(status, Status::Success);
    // Queued memory messages still come, then STREAM_END(Closed) with the
    // stream's opaque.
    let after = items(&after);
    assert_eq!(after.last(), Some(&Item::End(1)));
    let end = h.recv(&mut c);
    assert!(end.is_empty());
    // The slot is free again.
    assert!(h.stream_req(&mut c, req(0, 12)).0.status().is_success());
    // With v7 status codes a missing stream is DCP_STREAM_NOT_FOUND.
    assert_eq!(
        h.control(&mut c, "v7_dcp_status_codes", "true"),
        Status::Success
    );
    assert_eq!(h.close_stream(&mut c, 1).0, Status::DcpStreamNotFound);
}

#[test]
fn vbucket_state_changes_end_streams() {
    let mut h = Harness::new(config(2));
    h.set("a", "1");
    let mut c = h.dcp_client("state", OpenFlags::empty());
    h.stream_req(&mut c, req(0, 21));
    h.stream_req(&mut c, req(1, 22));
    h.recv(&mut c);
    h.node.set_vbucket_state(0, VbucketState::Dead).unwrap();
    let frames = h.recv(&mut c);
    assert_eq!(items(&frames), vec![Item::End(2)]);
    assert_eq!(stream_end(&frames[0]).opaque, 21);
    assert_eq!(
        h.stream_req(&mut c, req(0, 23)).0.status(),
        Status::NotMyVbucket
    );
    // The other vbucket's stream is untouched.
    assert_eq!(
        h.stream_req(&mut c, req(1, 24)).0.status(),
        Status::KeyEexists
    );
}

#[test]
fn a_purge_that_overtakes_a_backfill_ends_the_stream_state_changed() {
    let mut h = small_memory();
    for i in 0..3 {
        h.set(&format!("k{i}"), "v"); // 1..3
    }
    h.delete("k0"); // 4
    for i in 3..9 {
        h.set(&format!("k{i}"), "v"); // 5..10, memory low 9
    }
    let uuid = h.node.bucket().vbucket(0).unwrap().uuid();
    let mut c = h.dcp_client("purged", OpenFlags::empty());
    let (r, _) = h.stream_req(&mut c, resume(0, 1, uuid, 2, (2, 2)));
    assert!(r.status().is_success());
    assert_eq!(h.node.purge(0, 4).unwrap(), 4);
    assert_eq!(items(&h.recv(&mut c)), vec![Item::End(2)]);
}

#[test]
fn poll_transmit_bounds_the_output() {
    let mut h = Harness::new(config(1));
    for i in 0..2000 {
        h.set(&format!("k{i}"), "v");
    }
    let mut c = h.dcp_client("bounded", OpenFlags::empty());
    h.stream_req(&mut c, req(0, 1));
    let mut count = 0;
    let mut polls = 0;
    loop {
        let frames = h.recv_budget(&mut c, 4096);
        if frames.is_empty() {
            break;
        }
        polls += 1;
        // Budget plus at most one message.
        assert!(frames.iter().map(Frame::wire_len).sum::<usize>() < 4096 + 128);
        count += frames
            .iter()
            .filter(|f| f.opcode() == Opcode::DcpMutation)
            .count();
    }
    assert_eq!(count, 2000);
    assert!(polls > 10);
}

#[test]
fn a_slow_stream_falls_back_to_disk() {
    let mut h = small_memory();
    for i in 0..3 {
        h.set(&format!("k{i}"), "v"); // 1..3 in the open checkpoint
    }
    let mut c = h.dcp_client("slow", OpenFlags::empty());
    h.stream_req(&mut c, req(0, 1));
    assert_eq!(
        items(&h.recv(&mut c)),
        vec![
            Item::Marker(0, 3, MEM | CHK),
            m(1, "k0"),
            m(2, "k1"),
            m(3, "k2")
        ]
    );
    // The client stops reading while checkpoints [1..4] [5..8] leave
    // memory (2 are kept).
    for i in 3..13 {
        h.set(&format!("k{i}"), "v"); // 4..13
    }
    assert_eq!(h.node.bucket().vbucket(0).unwrap().memory_low_seqno(), 9);
    let got = items(&h.recv(&mut c));
    assert_eq!(
        got,
        vec![
            // Back to disk for what memory lost, then memory again.
            Item::Marker(4, 8, DISK | CHK),
            m(4, "k3"),
            m(5, "k4"),
            m(6, "k5"),
            m(7, "k6"),
            m(8, "k7"),
            Item::Marker(9, 12, MEM | CHK),
            m(9, "k8"),
            m(10, "k9"),
            m(11, "k10"),
            m(12, "k11"),
            Item::Marker(13, 13, MEM | CHK),
            m(13, "k12"),
        ]
    );
}

#[test]
fn injected_stream_ends_are_mapped_as_the_server_maps_them() {
    use dcp_proto::msg::StreamEndReason;
    let mut h = Harness::new(config(1));
    h.set("a", "1");
    let mut plain = h.dcp_client("plain", OpenFlags::empty());
    let mut coll = h.connect();
    h.login_with(
        &mut coll,
        &[
            dcp_proto::msg::client::HelloFeature::Xerror,
            dcp_proto::msg::client::HelloFeature::Collections,
        ],
    );
    assert_eq!(
        h.open(&mut coll, "coll", OpenFlags::empty()),
        Status::Success
    );
    for (reason, plain_code, coll_code) in [
        (StreamEndReason::FilterEmpty, 0, 7),
        (StreamEndReason::LostPrivileges, 0, 8),
        (StreamEndReason::Slow, 4, 4),
        (StreamEndReason::BackfillFailed, 5, 5),
        (StreamEndReason::Rollback, 2, 2),
        (StreamEndReason::Disconnected, 2, 2),
    ] {
        h.stream_req(&mut plain, req(0, 1));
        h.stream_req(&mut coll, req(0, 2));
        h.recv(&mut plain);
        h.recv(&mut coll);
        assert_eq!(h.node.end_streams(0, reason), 2);
        assert_eq!(items(&h.recv(&mut plain)), vec![Item::End(plain_code)]);
        assert_eq!(items(&h.recv(&mut coll)), vec![Item::End(coll_code)]);
    }
}
