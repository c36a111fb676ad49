//! Producer scenarios: handshake order, authentication, DCP_OPEN and its
//! name kicks, controls (behavior.md §1, §10.1, §10.2).

mod producer_harness;

use bytes::Bytes;
use dcp_proto::auth::{Mechanism, ScramClient};
use dcp_proto::codec::{Opcode, Status};
use dcp_proto::msg::client::{
    GetClusterConfig, GetClusterConfigResponse, GetErrorMap, GetFailoverLogRequest, Hello,
    HelloFeature, HelloResponse, SaslAuth, SaslListMechs, SaslListMechsResponse, SaslResponse,
    SaslStep, SelectBucket,
};
use dcp_proto::msg::{
    CloseStream, Control, DcpNoop, FailoverLogResponse, GetFailoverLog, Open, OpenFlags,
};
use dcp_proto::producer::CloseReason;
use producer_harness::*;

#[test]
fn nothing_but_the_handshake_works_before_authentication() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    let o = h.opaque();
    let hello = h.request(&mut c, |b| {
        Hello {
            opaque: o,
            agent: Bytes::from_static(b"t"),
            features: vec![
                HelloFeature::Xerror,
                HelloFeature::Collections,
                HelloFeature::Snappy,
                HelloFeature::Tracing,
                HelloFeature::Xerror,
            ],
        }
        .encode(b)
    });
    let hello = HelloResponse::decode(&hello).unwrap();
    assert_eq!(
        hello.features,
        vec![
            HelloFeature::Xerror,
            HelloFeature::Collections,
            HelloFeature::Snappy
        ]
    );
    // Error map and mechanisms need no authentication.
    let o = h.opaque();
    assert!(
        h.status(&mut c, |b| GetErrorMap {
            opaque: o,
            version: 2
        }
        .encode(b))
            .is_success()
    );
    let o = h.opaque();
    let mechs = h.request(&mut c, |b| SaslListMechs { opaque: o }.encode(b));
    let mechs = SaslListMechsResponse::decode(&mechs).unwrap();
    assert_eq!(
        mechs.mechanisms().collect::<Vec<_>>(),
        ["SCRAM-SHA512", "SCRAM-SHA256", "SCRAM-SHA1", "PLAIN"]
    );
    // Everything else: EACCESS.
    for status in [
        h.status(&mut c, |b| SelectBucket::new(1, BUCKET).encode(b)),
        h.status(&mut c, |b| {
            Open {
                opaque: 2,
                flags: OpenFlags::PRODUCER,
                name: Bytes::from_static(b"x"),
                consumer_name: None,
            }
            .encode(b)
        }),
        h.status(&mut c, |b| {
            GetClusterConfig {
                opaque: 3,
                known: None,
            }
            .encode(b)
        }),
    ] {
        assert_eq!(status, Status::Eaccess);
    }
    // A wrong password.
    assert_eq!(
        h.status(&mut c, |b| SaslAuth::plain(4, USER.as_bytes(), b"nope")
            .encode(b)),
        Status::AuthError
    );
    assert!(!h.node.is_closed(c.id));
}

#[test]
fn without_xerror_newer_statuses_disconnect() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    h.send(&c, |b| {
        Open {
            opaque: 1,
            flags: OpenFlags::PRODUCER,
            name: Bytes::from_static(b"x"),
            consumer_name: None,
        }
        .encode(b)
    })
    .unwrap_err();
    assert!(h.recv(&mut c).is_empty());
    assert_eq!(
        h.node.close_reason(c.id),
        Some(&CloseReason::XerrorRequired(Status::Eaccess))
    );
}

#[test]
fn scram_sha512_authenticates() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    let mut client =
        ScramClient::new(Mechanism::ScramSha512, USER, PASSWORD, "clientnonce").unwrap();
    let first = client.client_first();
    let reply = h.request(&mut c, |b| {
        SaslAuth {
            opaque: 1,
            mechanism: Bytes::from_static(b"SCRAM-SHA512"),
            data: Bytes::from(first),
        }
        .encode(b)
    });
    let reply = SaslResponse::decode(&reply).unwrap();
    assert_eq!(reply.status, Status::AuthContinue);
    let last = client.handle_server_first(&reply.data).unwrap();
    let reply = h.request(&mut c, |b| {
        SaslStep {
            opaque: 2,
            mechanism: Bytes::from_static(b"SCRAM-SHA512"),
            data: Bytes::from(last),
        }
        .encode(b)
    });
    let reply = SaslResponse::decode(&reply).unwrap();
    assert_eq!(reply.status, Status::Success);
    client.verify_server_final(&reply.data).unwrap();
    assert_eq!(
        h.status(&mut c, |b| SelectBucket::new(3, BUCKET).encode(b)),
        Status::Success
    );

    // A wrong password fails at the final step.
    let mut c2 = h.connect();
    let mut bad = ScramClient::new(Mechanism::ScramSha256, USER, "wrong", "n2").unwrap();
    let first = bad.client_first();
    let reply = h.request(&mut c2, |b| {
        SaslAuth {
            opaque: 1,
            mechanism: Bytes::from_static(b"SCRAM-SHA256"),
            data: Bytes::from(first),
        }
        .encode(b)
    });
    let last = bad
        .handle_server_first(&SaslResponse::decode(&reply).unwrap().data)
        .unwrap();
    let reply = h.request(&mut c2, |b| {
        SaslStep {
            opaque: 2,
            mechanism: Bytes::from_static(b"SCRAM-SHA256"),
            data: Bytes::from(last),
        }
        .encode(b)
    });
    assert_eq!(reply.status(), Status::AuthError);
}

#[test]
fn dcp_commands_need_dcp_open_and_a_bucket() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    let o = h.opaque();
    h.status(&mut c, |b| {
        Hello {
            opaque: o,
            agent: Bytes::new(),
            features: vec![HelloFeature::Xerror],
        }
        .encode(b)
    });
    assert!(
        h.status(&mut c, |b| SaslAuth::plain(
            1,
            USER.as_bytes(),
            PASSWORD.as_bytes()
        )
        .encode(b))
            .is_success()
    );
    // No bucket selected.
    assert_eq!(h.open(&mut c, "n", OpenFlags::empty()), Status::NoBucket);
    assert_eq!(
        h.status(&mut c, |b| SelectBucket::new(1, "other").encode(b)),
        Status::KeyEnoent
    );
    assert!(
        h.status(&mut c, |b| SelectBucket::new(1, BUCKET).encode(b))
            .is_success()
    );
    // DCP commands before DCP_OPEN.
    assert_eq!(h.control(&mut c, "enable_noop", "true"), Status::Einval);
    let (response, _) = h.stream_req(&mut c, req(0, 5));
    assert_eq!(response.status(), Status::Einval);
    assert_eq!(
        h.status(&mut c, |b| CloseStream {
            vbucket: 0,
            opaque: 1,
            stream_id: None
        }
        .encode(b)),
        Status::Einval
    );
    // ...except the failover log, both variants.
    let log = h.request(&mut c, |b| {
        GetFailoverLog {
            vbucket: 1,
            opaque: 9,
        }
        .encode(b)
    });
    let log = FailoverLogResponse::decode(&log).unwrap();
    assert_eq!(log.log.len(), 1);
    assert_eq!(
        log.log.newest().unwrap().vbucket_uuid,
        h.node.bucket().vbucket(1).unwrap().uuid()
    );
    let log = h.request(&mut c, |b| {
        GetFailoverLogRequest {
            vbucket: 99,
            opaque: 9,
        }
        .encode(b)
    });
    assert_eq!(log.status(), Status::NotMyVbucket);
    // The cluster config is real JSON with a vbucket map.
    let config = h.request(&mut c, |b| {
        GetClusterConfig {
            opaque: 3,
            known: None,
        }
        .encode(b)
    });
    let config = GetClusterConfigResponse::decode(&config).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&config.config).unwrap();
    assert_eq!(json["name"], BUCKET);
    assert_eq!(
        json["vBucketServerMap"]["vBucketMap"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(json["vBucketServerMap"]["serverList"][0], "$HOST:11210");

    // Open; a second open is EINVAL; SASL is off now.
    assert_eq!(h.open(&mut c, "n", OpenFlags::empty()), Status::Success);
    assert_eq!(h.open(&mut c, "n2", OpenFlags::empty()), Status::Einval);
    assert_eq!(
        h.status(&mut c, |b| SaslAuth::plain(
            1,
            USER.as_bytes(),
            PASSWORD.as_bytes()
        )
        .encode(b)),
        Status::Einval
    );
}

#[test]
fn open_flags_are_validated() {
    let mut h = Harness::new(config(4));
    for (flags, expected) in [
        (OpenFlags::INVALID, Status::Einval),
        (OpenFlags::UNUSED, Status::Einval),
        (OpenFlags::PITR, Status::Einval),
        (OpenFlags::from_bits_retain(0x8000), Status::Einval),
        (
            OpenFlags::NO_VALUE | OpenFlags::NO_VALUE_WITH_UNDERLYING_DATATYPE,
            Status::Einval,
        ),
        (OpenFlags::INCLUDE_DELETED_USER_XATTRS, Status::Einval),
        (
            OpenFlags::INCLUDE_XATTRS | OpenFlags::INCLUDE_DELETED_USER_XATTRS,
            Status::Success,
        ),
    ] {
        let mut c = h.connect();
        h.login(&mut c);
        assert_eq!(h.open(&mut c, "f", flags), expected, "{flags:?}");
    }
    // Consumer connections are not modelled.
    let mut c = h.connect();
    h.login(&mut c);
    let status = h.status(&mut c, |b| {
        Open {
            opaque: 1,
            flags: OpenFlags::empty(),
            name: Bytes::from_static(b"replication"),
            consumer_name: None,
        }
        .encode(b)
    });
    assert_eq!(status, Status::NotSupported);
}

#[test]
fn unordered_execution_refuses_dcp() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &[HelloFeature::Xerror, HelloFeature::UnorderedExecution],
    );
    assert_eq!(
        h.open(&mut c, "u", OpenFlags::empty()),
        Status::NotSupported
    );
}

#[test]
fn a_second_open_with_the_same_name_kicks_the_first() {
    let mut h = Harness::new(config(4));
    h.set("a", "1");
    let mut first = h.dcp_client("app:conn", OpenFlags::empty());
    let (r, _) = h.stream_req(&mut first, req(0, 7));
    assert!(r.status().is_success());
    let mut second = h.dcp_client("app:conn", OpenFlags::empty());
    assert!(h.node.is_closed(first.id));
    assert_eq!(
        h.node.close_reason(first.id),
        Some(&CloseReason::Kicked {
            name: "app:conn".to_owned()
        })
    );
    // No STREAM_END for the kicked connection's stream.
    assert!(
        h.recv(&mut first)
            .iter()
            .all(|f| f.opcode() != Opcode::DcpStreamEnd)
    );
    assert!(!h.node.is_closed(second.id));
    assert_eq!(h.node.dcp_name(second.id), Some("app:conn"));
    // The new connection streams normally, from the same vbucket.
    let (r, _) = h.stream_req(&mut second, req(0, 8));
    assert!(r.status().is_success());
    // Removing the kicked connection does not free the name of the new one.
    h.node.remove(first.id);
    let mut third = h.dcp_client("app:conn", OpenFlags::empty());
    assert!(h.node.is_closed(second.id));
    assert!(!h.node.is_closed(third.id));
    assert!(h.recv(&mut third).is_empty());
}

#[test]
fn controls_answer_as_the_server_does() {
    let mut h = Harness::new(config(4));
    let mut c = h.dcp_client("ctl", OpenFlags::empty());
    for (key, value, expected) in [
        ("enable_noop", "true", Status::Success),
        ("set_noop_interval", "0.05", Status::Einval),
        ("set_noop_interval", "120", Status::Success),
        ("connection_buffer_size", "65536", Status::Success),
        ("connection_buffer_size", "lots", Status::Einval),
        ("stream_buffer_size", "1", Status::NotSupported),
        ("force_value_compression", "true", Status::Einval),
        (
            "send_stream_end_on_client_close_stream",
            "true",
            Status::Success,
        ),
        ("enable_expiry_opcode", "true", Status::Success),
        ("supports_cursor_dropping_vulcan", "true", Status::Success),
        ("max_marker_version", "2.2", Status::NotSupported),
        ("v7_dcp_status_codes", "false", Status::Einval),
        ("include_deleted_user_xattrs", "true", Status::Einval),
        ("change_streams", "true", Status::NotSupported),
        (
            "enable_out_of_order_snapshots",
            "true_with_seqno_advanced",
            Status::Success,
        ),
        ("no_such_control", "1", Status::Einval),
        ("enable_stream_id", "true", Status::Success),
        ("enable_sync_writes", "true", Status::NotSupported),
    ] {
        assert_eq!(h.control(&mut c, key, value), expected, "{key}={value}");
    }
    // Collections make v2.2 markers available.
    let mut coll = h.connect();
    h.login_with(
        &mut coll,
        &[HelloFeature::Xerror, HelloFeature::Collections],
    );
    assert_eq!(
        h.open(&mut coll, "coll", OpenFlags::empty()),
        Status::Success
    );
    assert_eq!(
        h.control(&mut coll, "max_marker_version", "2.2"),
        Status::Success
    );
    // A malformed control (no value) is EINVAL, not a disconnect.
    let status = h.status(&mut c, |b| {
        dcp_proto::codec::FrameHead::request(Opcode::DcpControl, 0, 1).encode(
            b,
            &[],
            &[],
            b"enable_noop",
            &[],
        )
    });
    assert_eq!(status, Status::Einval);
    let _ = Control::new(1, "k", "v");
}

#[test]
fn a_dcp_noop_request_from_the_client_disconnects() {
    let mut h = Harness::new(config(4));
    let c = h.dcp_client("noop", OpenFlags::empty());
    assert!(h.send(&c, |b| DcpNoop { opaque: 1 }.encode(b)).is_err());
    assert_eq!(
        h.node.close_reason(c.id),
        Some(&CloseReason::NoopFromClient)
    );
    // A plain memcached NOOP is the client's keep-alive.
    let mut c = h.dcp_client("noop2", OpenFlags::empty());
    let status = h.status(&mut c, |b| {
        dcp_proto::codec::FrameHead::request(Opcode::Noop, 0, 3).encode(b, &[], &[], &[], &[])
    });
    assert_eq!(status, Status::Success);
}
