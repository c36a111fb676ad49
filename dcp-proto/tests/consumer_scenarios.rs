//! The consumer against a scripted producer on a virtual clock: each test
//! plays the producer's side frame by frame, with no sockets and no sleeps.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dcp_proto::auth::{Credentials, Mechanism, ScramCredentials, ScramServer};
use dcp_proto::codec::{Datatype, Opcode, Status};
use dcp_proto::consumer::{
    CommandError, ConsumerConfig, ConsumerError, ControlSetting, Credit, Event, HandshakeStep,
    ProtocolError, RollbackMode, SnappyMode, StreamStart,
};
use dcp_proto::msg::client::{
    GetAllVbSeqnosResponse, HelloFeature, HelloResponse, SaslListMechsResponse, SaslResponse,
};
use dcp_proto::msg::{
    DcpNoop, FailoverLogResponse, Message, Mutation, SeqnoAdvanced, SnappyError, StatusResponse,
    StreamEnd, StreamEndReason, StreamRequestResponse, compress_value,
};
use dcp_proto::session::{Checkpoint, StreamPosition, Violation};

mod consumer_script;

use consumer_script::*;

fn config() -> ConsumerConfig {
    ConsumerConfig::new("test:1", "default")
}

// ----- handshake -----------------------------------------------------------

#[test]
fn handshake_order_and_settings() {
    let mut s = Script::new(config().with_buffer_size(4096).with_control(
        ControlSetting::optional("enable_out_of_order_snapshots", "true"),
    ));
    let Message::Hello(hello) = s.one() else {
        panic!()
    };
    assert!(hello.features.contains(&HelloFeature::Xerror));
    assert!(!hello.features.contains(&HelloFeature::UnorderedExecution));
    // The server refuses everything but SelectBucket.
    s.feed_ok(HelloResponse::success(
        hello.opaque,
        vec![HelloFeature::SelectBucket],
    ));
    let Message::SelectBucket(select) = s.one() else {
        panic!()
    };
    assert_eq!(&select.bucket[..], b"default");
    s.ok(&Message::SelectBucket(select));
    let Message::Open(open) = s.one() else {
        panic!()
    };
    assert_eq!(&open.name[..], b"test:1");
    assert!(open.flags.contains(dcp_proto::msg::OpenFlags::PRODUCER));
    s.ok(&Message::Open(open));
    let mut controls = Vec::new();
    loop {
        // One control at a time: never two requests in flight.
        let request = s.one();
        let Message::Control(control) = &request else {
            panic!("{request:?}")
        };
        controls.push(format!(
            "{}={}",
            control.key_str().unwrap(),
            control.value_str().unwrap()
        ));
        if control.key_str().unwrap() == "enable_out_of_order_snapshots" {
            s.feed_ok(StatusResponse::new(
                Opcode::DcpControl,
                Status::Einval,
                control.opaque,
            ));
        } else {
            s.ok(&request);
        }
        if s.consumer.is_ready() {
            break;
        }
    }
    assert_eq!(
        controls,
        [
            "enable_noop=true",
            "set_noop_interval=120",
            "connection_buffer_size=4096",
            "send_stream_end_on_client_close_stream=true",
            "enable_out_of_order_snapshots=true",
        ]
    );
    let events = s.events();
    let [Event::Ready(negotiated)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(!negotiated.collections, "refused HELLO feature is not used");
    assert_eq!(negotiated.buffer_size, 4096);
    assert!(negotiated.stream_end_on_close);
    assert_eq!(
        negotiated.refused_controls,
        ["enable_out_of_order_snapshots"]
    );
}

/// Plays the handshake of `config` up to Ready, answering every control
/// with success except `refuse` (EINVAL); returns the controls sent and
/// what was negotiated.
fn handshake_controls(
    config: ConsumerConfig,
    refuse: &str,
) -> (Vec<String>, dcp_proto::consumer::Negotiated) {
    let mut s = Script::new(config);
    let Message::Hello(hello) = s.one() else {
        panic!()
    };
    s.feed_ok(HelloResponse::success(hello.opaque, hello.features.clone()));
    let mut controls = Vec::new();
    while !s.consumer.is_ready() {
        let request = s.one();
        match &request {
            Message::Control(control) if control.key_str().unwrap() == refuse => {
                controls.push(control.key_str().unwrap().to_owned());
                s.feed_ok(StatusResponse::new(
                    Opcode::DcpControl,
                    Status::Einval,
                    control.opaque,
                ));
            }
            Message::Control(control) => {
                controls.push(control.key_str().unwrap().to_owned());
                s.ok(&request);
            }
            _ => s.ok(&request),
        }
    }
    let events = s.events();
    let [Event::Ready(negotiated)] = &events[..] else {
        panic!("{events:?}")
    };
    (controls, negotiated.clone())
}

#[test]
fn flatbuffers_system_events_are_asked_for_and_may_be_refused() {
    let fb = config()
        .with_collections(true)
        .with_flatbuffers_system_events(true);
    let (controls, negotiated) = handshake_controls(fb.clone(), "");
    assert!(controls.contains(&"flatbuffers_system_events".to_owned()));
    assert!(negotiated.flatbuffers_system_events);
    // An older server answers EINVAL: optional, so the connection goes on
    // with fixed-struct events.
    let (_, negotiated) = handshake_controls(fb, "flatbuffers_system_events");
    assert!(!negotiated.flatbuffers_system_events);
    assert_eq!(negotiated.refused_controls, ["flatbuffers_system_events"]);
    // Off by default: not sent.
    let (controls, negotiated) = handshake_controls(config().with_collections(true), "");
    assert!(!controls.contains(&"flatbuffers_system_events".to_owned()));
    assert!(!negotiated.flatbuffers_system_events);
}

#[test]
fn required_control_refused_names_the_step() {
    let mut s =
        Script::new(config().with_control(ControlSetting::required("change_streams", "true")));
    let Message::Hello(hello) = s.one() else {
        panic!()
    };
    s.feed_ok(HelloResponse::success(hello.opaque, hello.features.clone()));
    let err = loop {
        let request = s.one();
        if let Message::Control(c) = &request
            && c.key_str().unwrap() == "change_streams"
        {
            break s
                .feed(StatusResponse::new(
                    Opcode::DcpControl,
                    Status::NotSupported,
                    c.opaque,
                ))
                .unwrap_err();
        }
        s.ok(&request);
    };
    assert_eq!(
        err,
        ConsumerError::Handshake {
            step: HandshakeStep::Control,
            status: Status::NotSupported,
            detail: "change_streams=true".into()
        }
    );
    assert!(s.consumer.is_closed());
    assert_eq!(
        s.consumer.handle_input(&mut BytesMut::new(), s.now),
        Err(err)
    );
}

#[test]
fn unknown_bucket_and_failed_open() {
    let mut s = Script::new(config());
    s.handshake_until_select();
    let Message::SelectBucket(select) = s.one() else {
        panic!()
    };
    let err = s
        .feed(StatusResponse::new(
            Opcode::SelectBucket,
            Status::KeyEnoent,
            select.opaque,
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        ConsumerError::NoBucket {
            status: Status::KeyEnoent,
            ..
        }
    ));
    assert!(err.to_string().contains("\"default\""));
}

impl Script {
    fn handshake_until_select(&mut self) {
        let Message::Hello(hello) = self.one() else {
            panic!()
        };
        self.feed_ok(HelloResponse::success(hello.opaque, hello.features.clone()));
    }

    /// Plays the server side of SASL for `user`/`password` with the
    /// mechanisms `offered`; returns the mechanism the consumer used.
    fn sasl(&mut self, offered: &str, password: &str) -> Result<Mechanism, ConsumerError> {
        let Message::SaslListMechs(list) = self.one() else {
            panic!("SASL_LIST_MECHS after HELLO")
        };
        self.feed(SaslListMechsResponse {
            status: Status::Success,
            opaque: list.opaque,
            mechanisms: Bytes::copy_from_slice(offered.as_bytes()),
        })?;
        let Message::SaslAuth(auth) = self.one() else {
            panic!("SASL_AUTH")
        };
        let mechanism =
            Mechanism::from_name(std::str::from_utf8(&auth.mechanism).unwrap()).unwrap();
        if mechanism == Mechanism::Plain {
            let plain = dcp_proto::auth::parse_plain(&auth.data).unwrap();
            let status = if plain.verify_password(password).is_ok() {
                Status::Success
            } else {
                Status::AuthError
            };
            self.feed(SaslResponse {
                opcode: Opcode::SaslAuth,
                status,
                opaque: auth.opaque,
                data: Bytes::new(),
            })?;
            return Ok(mechanism);
        }
        let stored = ScramCredentials::derive(mechanism, password, b"salty-salt", 4096).unwrap();
        let mut server = ScramServer::new(mechanism, "servernonce42").unwrap();
        server.handle_client_first(&auth.data).unwrap();
        let first = server.server_first(&stored).unwrap();
        self.feed(SaslResponse {
            opcode: Opcode::SaslAuth,
            status: Status::AuthContinue,
            opaque: auth.opaque,
            data: Bytes::from(first),
        })?;
        let Message::SaslStep(step) = self.one() else {
            panic!("SASL_STEP")
        };
        match server.handle_client_final(&step.data) {
            Ok(last) => self.feed(SaslResponse {
                opcode: Opcode::SaslStep,
                status: Status::Success,
                opaque: step.opaque,
                data: Bytes::from(last),
            })?,
            Err(_) => self.feed(SaslResponse {
                opcode: Opcode::SaslStep,
                status: Status::AuthError,
                opaque: step.opaque,
                data: Bytes::new(),
            })?,
        }
        Ok(mechanism)
    }
}

#[test]
fn sasl_picks_the_strongest_mechanism_offered() {
    for (offered, expected) in [
        (
            "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN",
            Mechanism::ScramSha512,
        ),
        ("SCRAM-SHA1 SCRAM-SHA256", Mechanism::ScramSha256),
        ("PLAIN SCRAM-SHA1", Mechanism::ScramSha1),
    ] {
        let mut s = Script::new(config().with_credentials(Credentials::new("dcp", "pw")));
        s.handshake_until_select();
        assert_eq!(s.sasl(offered, "pw").unwrap(), expected);
        s.accept_rest();
        assert_eq!(s.consumer.negotiated().unwrap().mechanism, Some(expected));
    }
}

#[test]
fn sasl_plain_when_allowed() {
    let mut c = config().with_credentials(Credentials::new("dcp", "pw"));
    c.mechanisms = vec![Mechanism::Plain];
    let mut s = Script::new(c);
    s.handshake_until_select();
    assert_eq!(
        s.sasl("SCRAM-SHA512 PLAIN", "pw").unwrap(),
        Mechanism::Plain
    );
    s.accept_rest();
}

#[test]
fn wrong_password_and_no_common_mechanism() {
    let mut s = Script::new(config().with_credentials(Credentials::new("dcp", "wrong")));
    s.handshake_until_select();
    let err = s.sasl("SCRAM-SHA256", "right").unwrap_err();
    assert_eq!(
        err,
        ConsumerError::AuthFailed {
            status: Status::AuthError
        }
    );
    assert!(err.to_string().contains("wrong user name or password"));

    let mut s = Script::new(config().with_credentials(Credentials::new("dcp", "pw")));
    s.handshake_until_select();
    let Message::SaslListMechs(list) = s.one() else {
        panic!()
    };
    let err = s
        .feed(SaslListMechsResponse {
            status: Status::Success,
            opaque: list.opaque,
            mechanisms: Bytes::from_static(b"PLAIN OAUTHBEARER"),
        })
        .unwrap_err();
    assert!(
        matches!(err, ConsumerError::NoCommonMechanism { .. }),
        "{err}"
    );
}

#[test]
fn handshake_timeout() {
    let mut s = Script::new(config());
    assert!(s.consumer.poll_timeout().is_some());
    s.advance(Duration::from_secs(29)).unwrap();
    let err = s.advance(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, ConsumerError::HandshakeTimeout(_)));
}

// ----- streams -------------------------------------------------------------

#[test]
fn stream_from_the_beginning_and_checkpoint() {
    let (mut s, opaque) = streaming(config().with_auto_ack(true));
    s.feed_ok(marker(0, opaque, 1, 3));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.feed_ok(mutation(0, opaque, 3, "b"));
    let events = s.events();
    assert!(matches!(events[0], Event::SnapshotMarker(..)));
    assert!(matches!(&events[1], Event::Mutation(m, _) if &m.key[..] == b"a"));
    assert_eq!(events.len(), 3);
    let position = s.consumer.position(0).unwrap();
    assert_eq!(
        (
            position.last_seqno,
            position.snapshot_start,
            position.snapshot_end
        ),
        (3, 1, 3)
    );
    assert_eq!(position.failover_log, fl(&[(UUID, 0)]));
    let stats = s.consumer.stream_stats(0).unwrap();
    assert_eq!((stats.items, stats.last_seqno), (2, 3));
}

#[test]
fn checkpoint_covers_only_polled_events() {
    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 5));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.feed_ok(mutation(0, opaque, 2, "b"));
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 0);
    s.consumer.poll_event().unwrap();
    s.consumer.poll_event().unwrap();
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 1);
    let checkpoint = s.consumer.checkpoint();
    let json = checkpoint.to_json().unwrap();
    assert_eq!(Checkpoint::from_json(&json).unwrap(), checkpoint);
}

#[test]
fn mid_snapshot_resume_sends_the_real_snapshot() {
    let (mut s, opaque) = streaming(config().with_auto_ack(true));
    s.feed_ok(marker(0, opaque, 1, 10));
    s.feed_ok(mutation(0, opaque, 4, "a"));
    s.events();
    let position = s.consumer.checkpoint().vbuckets[&0].clone();

    // A new connection resumes from the checkpoint.
    let mut s = Script::new(config());
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Position(position), None)
        .unwrap();
    let req = s.stream_request(0);
    assert_eq!(
        (
            req.start_seqno,
            req.vbucket_uuid,
            req.snap_start_seqno,
            req.snap_end_seqno
        ),
        (4, UUID, 1, 10)
    );
    s.accept_stream(&req, &[(UUID, 0)]);
    // The producer re-covers the interrupted snapshot from its start.
    s.feed_ok(marker(0, req.opaque, 1, 12));
    s.feed_ok(mutation(0, req.opaque, 11, "b"));
    s.feed_ok(SeqnoAdvanced {
        vbucket: 0,
        opaque: req.opaque,
        stream_id: None,
        seqno: 12,
    });
    s.events();
    let p = s.consumer.position(0).unwrap();
    assert!(p.is_consistent());
    assert_eq!(
        (p.last_seqno, p.snapshot_start, p.snapshot_end),
        (12, 1, 12)
    );
}

#[test]
fn rollback_chain_automatic() {
    let mut s = Script::new(config());
    s.handshake();
    let mut position = StreamPosition::at(fl(&[(0xB, 900), (0xA, 0)]), 1000);
    position.snapshot_start = 990;
    s.consumer
        .open_stream(0, StreamStart::Position(position), None)
        .unwrap();
    let req = s.stream_request(0);
    assert_eq!((req.start_seqno, req.vbucket_uuid), (1000, 0xB));
    // First rollback: to 950.
    s.feed_ok(StreamRequestResponse::rollback(req.opaque, 950));
    let req2 = s.stream_request(0);
    assert_ne!(req2.opaque, req.opaque, "fresh opaque per request");
    assert_eq!(
        (
            req2.start_seqno,
            req2.vbucket_uuid,
            req2.snap_start_seqno,
            req2.snap_end_seqno
        ),
        (950, 0xB, 950, 950)
    );
    // Second: to 850, below the B branch: B is dropped, A is used.
    s.feed_ok(StreamRequestResponse::rollback(req2.opaque, 850));
    let req3 = s.stream_request(0);
    assert_eq!((req3.start_seqno, req3.vbucket_uuid), (850, 0xA));
    // Third: to 0.
    s.feed_ok(StreamRequestResponse::rollback(req3.opaque, 0));
    let req4 = s.stream_request(0);
    assert_eq!(
        (req4.start_seqno, req4.snap_start_seqno, req4.snap_end_seqno),
        (0, 0, 0)
    );
    s.accept_stream(&req4, &[(0xC, 0)]);
    let rollbacks: Vec<u64> = s
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Rollback { seqno, .. } => Some(seqno),
            _ => None,
        })
        .collect();
    assert_eq!(rollbacks, [950, 850, 0]);
    let p = s.consumer.position(0).unwrap();
    assert_eq!((p.last_seqno, p.failover_log.clone()), (0, fl(&[(0xC, 0)])));
    assert_eq!(s.consumer.stream_stats(0).unwrap().rollbacks, 3);
}

#[test]
fn rollback_ahead_of_start_is_refused() {
    let mut s = Script::new(config());
    s.handshake();
    s.consumer
        .open_stream(
            0,
            StreamStart::Position(StreamPosition::at(fl(&[(1, 0)]), 100)),
            None,
        )
        .unwrap();
    let req = s.stream_request(0);
    let err = s
        .feed(StreamRequestResponse::rollback(req.opaque, 150))
        .unwrap_err();
    assert_eq!(
        err,
        ConsumerError::Protocol(ProtocolError::RollbackAhead {
            seqno: 150,
            start: 100
        })
    );
}

#[test]
fn rollback_waits_for_confirmation() {
    let mut s = Script::new(config().with_rollback_mode(RollbackMode::Confirm));
    s.handshake();
    s.consumer
        .open_stream(
            0,
            StreamStart::Position(StreamPosition::at(fl(&[(1, 0)]), 100)),
            None,
        )
        .unwrap();
    let req = s.stream_request(0);
    s.feed_ok(StreamRequestResponse::rollback(req.opaque, 40));
    assert!(s.sent().is_empty(), "no re-request before confirmation");
    assert_eq!(
        s.events(),
        [Event::Rollback {
            stream_id: None,
            vbucket: 0,
            seqno: 40
        }]
    );
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 40);
    assert_eq!(
        s.consumer.confirm_rollback(1),
        Err(CommandError::NoRollbackPending(1.into()))
    );
    s.consumer.confirm_rollback(0).unwrap();
    assert_eq!(s.stream_request(0).start_seqno, 40);
}

#[test]
fn every_stream_end_reason_frees_the_stream() {
    for reason in [
        StreamEndReason::Ok,
        StreamEndReason::StateChanged,
        StreamEndReason::Disconnected,
        StreamEndReason::Slow,
        StreamEndReason::BackfillFailed,
        StreamEndReason::Rollback,
        StreamEndReason::FilterEmpty,
        StreamEndReason::LostPrivileges,
    ] {
        let (mut s, opaque) = streaming(config());
        s.feed_ok(StreamEnd {
            vbucket: 0,
            opaque,
            stream_id: None,
            reason,
        });
        let events = s.events();
        assert!(
            matches!(events[..], [Event::StreamEnded { vbucket: 0, reason: r, credit, .. }] if r == reason && credit.bytes() == 28),
            "{events:?}"
        );
        assert!(!s.consumer.has_stream(0));
        // Nothing may follow STREAM_END with that opaque.
        let err = s.feed(mutation(0, opaque, 1, "late")).unwrap_err();
        assert!(matches!(
            err,
            ConsumerError::Protocol(ProtocolError::UnknownStream { .. })
        ));
    }
}

#[test]
fn resume_after_stream_end() {
    let (mut s, opaque) = streaming(config().with_auto_ack(true));
    s.feed_ok(marker(0, opaque, 1, 2));
    s.feed_ok(mutation(0, opaque, 1, "a"));
    s.feed_ok(StreamEnd {
        vbucket: 0,
        opaque,
        stream_id: None,
        reason: StreamEndReason::StateChanged,
    });
    s.events();
    s.consumer
        .open_stream(0, StreamStart::Resume, None)
        .unwrap();
    let req = s.stream_request(0);
    assert_eq!(
        (
            req.start_seqno,
            req.vbucket_uuid,
            req.snap_start_seqno,
            req.snap_end_seqno
        ),
        (1, UUID, 1, 2)
    );
}

#[test]
fn temporary_failures_are_retried_with_backoff() {
    let mut s = Script::new(config());
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let req = s.stream_request(0);
    s.feed_ok(StreamRequestResponse::failed(
        req.opaque,
        Status::Etmpfail,
        Bytes::new(),
    ));
    assert!(s.sent().is_empty());
    let wake = s.consumer.poll_timeout().unwrap();
    assert_eq!(wake, s.now + Duration::from_millis(100));
    s.advance(Duration::from_millis(100)).unwrap();
    let req = s.stream_request(0);
    s.feed_ok(StreamRequestResponse::failed(
        req.opaque,
        Status::Etmpfail,
        Bytes::new(),
    ));
    assert_eq!(
        s.consumer.poll_timeout().unwrap(),
        s.now + Duration::from_millis(200)
    );
    s.advance(Duration::from_millis(200)).unwrap();
    let req = s.stream_request(0);
    s.feed_ok(StreamRequestResponse::failed(
        req.opaque,
        Status::NotMyVbucket,
        Bytes::new(),
    ));
    let events = s.events();
    assert!(matches!(
        events[..],
        [Event::StreamFailed {
            vbucket: 0,
            status: Status::NotMyVbucket,
            ..
        }]
    ));
    assert!(!s.consumer.has_stream(0));
}

#[test]
fn stream_from_now_looks_up_seqno_and_branch() {
    let mut s = Script::new(config());
    s.consumer.open_stream(3, StreamStart::Now, None).unwrap();
    s.consumer.open_stream(4, StreamStart::Now, None).unwrap();
    s.handshake();
    let sent = s.sent();
    let mut logs = Vec::new();
    let mut seqnos = None;
    for m in sent {
        match m {
            Message::GetFailoverLog(g) => logs.push(g),
            Message::GetAllVbSeqnos(a) => {
                assert_eq!(a.state, Some(1), "active vbuckets");
                assert!(
                    seqnos.replace(a).is_none(),
                    "one look-up serves every stream"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(logs.len(), 2);
    let seqnos = seqnos.unwrap();
    s.feed_ok(GetAllVbSeqnosResponse::success(
        seqnos.opaque,
        vec![(3, 77), (4, 5)],
    ));
    for g in &logs {
        s.feed_ok(FailoverLogResponse::success(
            Opcode::DcpGetFailoverLog,
            g.opaque,
            fl(&[(0x30 + u64::from(g.vbucket), 0)]),
        ));
    }
    let reqs = s.sent();
    assert_eq!(reqs.len(), 2);
    for r in reqs {
        let Message::StreamRequest(r) = r else {
            panic!()
        };
        let expected = if r.vbucket == 3 { 77 } else { 5 };
        assert_eq!(
            (
                r.start_seqno,
                r.snap_start_seqno,
                r.snap_end_seqno,
                r.vbucket_uuid
            ),
            (expected, expected, expected, 0x30 + u64::from(r.vbucket))
        );
    }
}

#[test]
fn end_seqno_and_overshoot() {
    let mut s = Script::new(config().with_auto_ack(true));
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Beginning, Some(2))
        .unwrap();
    let req = s.stream_request(0);
    assert_eq!(req.end_seqno, 2);
    s.accept_stream(&req, &[(UUID, 0)]);
    s.feed_ok(marker(0, req.opaque, 1, 4));
    for seqno in 1..=4 {
        s.feed_ok(mutation(0, req.opaque, seqno, "k"));
    }
    let seqnos: Vec<u64> = s.events().iter().filter_map(Event::seqno).collect();
    assert_eq!(seqnos, [1, 2], "items past the end are dropped");
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 2);
    assert_eq!(
        s.consumer.open_stream(
            1,
            StreamStart::Position(StreamPosition::at(fl(&[(1, 0)]), 9)),
            Some(5)
        ),
        Err(CommandError::InvalidPosition {
            stream: 1.into(),
            reason: "start is beyond the end seqno"
        })
    );
}

#[test]
fn close_with_and_without_stream_end() {
    // With the control: STREAM_END(Closed) finishes the close.
    let (mut s, opaque) = streaming(config());
    s.consumer.close_stream(0).unwrap();
    let Message::CloseStream(close) = s.one() else {
        panic!()
    };
    s.ok(&Message::CloseStream(close));
    assert!(s.events().is_empty());
    s.feed_ok(StreamEnd {
        vbucket: 0,
        opaque,
        stream_id: None,
        reason: StreamEndReason::Closed,
    });
    assert!(matches!(
        s.events()[..],
        [Event::StreamEnded {
            reason: StreamEndReason::Closed,
            ..
        }]
    ));

    // Without it: the close response finishes it; stragglers are ignored
    // (and their credit returned).
    let mut c = config().with_buffer_size(1000);
    c.send_stream_end_on_close = false;
    let (mut s, opaque) = streaming(c);
    s.consumer.close_stream(0).unwrap();
    let Message::CloseStream(close) = s.one() else {
        panic!()
    };
    s.ok(&Message::CloseStream(close));
    assert!(matches!(
        s.events()[..],
        [Event::StreamEnded {
            reason: StreamEndReason::Closed,
            credit: Credit::NONE,
            ..
        }]
    ));
    for seqno in 1..=5 {
        s.feed_ok(mutation(0, opaque, seqno, "straggler-with-a-long-key"));
    }
    assert!(s.events().is_empty());
    let acked: u32 = s
        .sent()
        .iter()
        .map(|m| match m {
            Message::BufferAck(a) => a.bytes,
            other => panic!("{other:?}"),
        })
        .sum();
    assert!(acked > 200, "stragglers' credit is returned ({acked})");
}

// ----- flow control and liveness -----------------------------------------

#[test]
fn buffer_acks_follow_the_application() {
    let (mut s, opaque) = streaming(config().with_buffer_size(1000));
    s.feed_ok(marker(0, opaque, 1, 100));
    let mut credits = Vec::new();
    for seqno in 1..=10 {
        s.feed_ok(mutation(0, opaque, seqno, "key"));
    }
    for e in s.events() {
        credits.push(e.credit());
    }
    // Nothing acknowledged until the application says so.
    assert!(s.sent().is_empty());
    let frame_len = 24 + 31 + 3 + 2;
    assert_eq!(credits[1].bytes(), frame_len);
    assert_eq!(credits[0].bytes(), 44, "markers count too");
    s.consumer.ack(credits[0]);
    s.consumer.ack(credits[1]);
    assert!(s.sent().is_empty(), "104 bytes < 20% of 1000");
    for c in &credits[2..4] {
        s.consumer.ack(*c);
    }
    let sent = s.sent();
    assert!(matches!(sent[..], [Message::BufferAck(ref a)] if a.bytes == 44 + 3 * frame_len));
    // The rest is acknowledged by the timer.
    s.consumer.ack(credits[4]);
    assert!(s.sent().is_empty());
    s.advance(Duration::from_secs(1)).unwrap();
    assert!(matches!(s.sent()[..], [Message::BufferAck(ref a)] if a.bytes == frame_len));
    let stats = s.consumer.stats();
    assert_eq!(
        stats.unacked_bytes,
        u64::from(6 * frame_len),
        "6 of 10 items unacked"
    );
    assert!(stats.acked_bytes <= stats.flow_bytes_received);
}

#[test]
fn prepare_counts_two_extra_bytes() {
    let (mut s, opaque) = streaming(config().with_buffer_size(1000).with_auto_ack(true));
    s.feed_ok(marker(0, opaque, 1, 1));
    s.feed_ok(dcp_proto::msg::Prepare {
        vbucket: 0,
        opaque,
        cas: 9,
        datatype: Datatype::RAW,
        by_seqno: 1,
        rev_seqno: 1,
        flags: 0,
        expiration: 0,
        lock_time: 0,
        nru: 0,
        deleted: false,
        durability: dcp_proto::codec::DurabilityLevel::Majority,
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
    });
    s.events();
    assert_eq!(
        s.consumer.stats().flow_bytes_received,
        44 + (24 + 31 + 2) + 2
    );
}

#[test]
fn noops_are_answered_and_silence_is_death() {
    let (mut s, _) = streaming(config());
    s.feed_ok(DcpNoop { opaque: 10000001 });
    let sent = s.sent();
    assert!(matches!(
        &sent[..],
        [Message::StatusResponse(r)] if r.opcode == Opcode::DcpNoop && r.opaque == 10000001 && r.status.is_success()
    ));
    assert_eq!(s.consumer.stats().noops_answered, 1);
    assert_eq!(
        s.consumer.stats().flow_bytes_received,
        0,
        "noops are not counted"
    );
    assert_eq!(
        s.consumer.poll_timeout(),
        Some(s.now + Duration::from_secs(240))
    );
    s.advance(Duration::from_secs(239)).unwrap();
    let err = s.advance(Duration::from_secs(1)).unwrap_err();
    assert_eq!(err, ConsumerError::DeadConnection(Duration::from_secs(240)));
    assert_eq!(s.consumer.poll_timeout(), None);
}

// ----- violations by the producer ------------------------------------------

#[test]
fn violations_are_typed_errors() {
    let (mut s, opaque) = streaming(config());
    let err = s.feed(mutation(0, opaque, 1, "a")).unwrap_err();
    assert_eq!(
        err,
        ConsumerError::Violation {
            vbucket: 0,
            violation: Violation::NoSnapshot { seqno: 1 }
        }
    );

    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 5));
    s.feed_ok(mutation(0, opaque, 3, "a"));
    let err = s.feed(mutation(0, opaque, 2, "b")).unwrap_err();
    assert!(matches!(
        err,
        ConsumerError::Violation {
            violation: Violation::SeqnoNotIncreasing { last: 3, seqno: 2 },
            ..
        }
    ));
    // Events before the error are still delivered.
    assert_eq!(s.events().len(), 2);

    let (mut s, opaque) = streaming(config());
    s.feed_ok(marker(0, opaque, 1, 5));
    let err = s.feed(mutation(0, opaque, 6, "a")).unwrap_err();
    assert!(matches!(
        err,
        ConsumerError::Violation {
            violation: Violation::OutsideSnapshot { seqno: 6, .. },
            ..
        }
    ));

    let (mut s, opaque) = streaming(config());
    let err = s.feed(mutation(0, opaque + 99, 1, "a")).unwrap_err();
    assert!(matches!(
        err,
        ConsumerError::Protocol(ProtocolError::UnknownStream { .. })
    ));

    let (mut s, opaque) = streaming(config());
    let err = s.feed(mutation(7, opaque, 1, "a")).unwrap_err();
    assert!(matches!(
        err,
        ConsumerError::Protocol(ProtocolError::WrongVbucket { .. })
    ));

    // A marker with end < start does not even decode.
    let (mut s, opaque) = streaming(config());
    let mut rx = BytesMut::new();
    marker(0, opaque, 9, 9).encode(&mut rx).unwrap();
    rx[32..40].copy_from_slice(&3u64.to_be_bytes()); // end := 3
    let err = s.consumer.handle_input(&mut rx, s.now).unwrap_err();
    assert!(matches!(err, ConsumerError::Decode(_)), "{err}");

    // A response to nothing.
    let (mut s, _) = streaming(config());
    let err = s
        .feed(StatusResponse::success(Opcode::DcpControl, 4242))
        .unwrap_err();
    assert!(matches!(
        err,
        ConsumerError::Protocol(ProtocolError::UnexpectedResponse { .. })
    ));

    // Garbage bytes.
    let (mut s, _) = streaming(config());
    let mut rx = BytesMut::from(&[0x42u8; 24][..]);
    assert!(matches!(
        s.consumer.handle_input(&mut rx, s.now),
        Err(ConsumerError::Decode(_))
    ));
}

#[test]
fn commands_are_validated() {
    let (mut s, _) = streaming(config());
    assert_eq!(
        s.consumer.open_stream(0, StreamStart::Beginning, None),
        Err(CommandError::StreamExists(0.into()))
    );
    assert_eq!(
        s.consumer.close_stream(9),
        Err(CommandError::NoStream(9.into()))
    );
    // A position whose seqno lies outside its snapshot resumes from a
    // complete snapshot at that seqno, which the producer accepts.
    let mut odd = StreamPosition::at(fl(&[(1, 0)]), 5);
    odd.snapshot_start = 7;
    odd.snapshot_end = 9;
    s.consumer
        .open_stream(1, StreamStart::Position(odd), None)
        .unwrap();
    let req = s.stream_request(1);
    assert_eq!(
        (req.start_seqno, req.snap_start_seqno, req.snap_end_seqno),
        (5, 5, 5)
    );
    s.consumer.close();
    assert_eq!(
        s.consumer.open_stream(2, StreamStart::Beginning, None),
        Err(CommandError::Closed)
    );
}

#[test]
fn noops_during_the_handshake_are_answered() {
    let mut s = Script::new(config());
    let Message::Hello(hello) = s.one() else {
        panic!()
    };
    s.feed_ok(HelloResponse::success(hello.opaque, hello.features.clone()));
    s.feed_ok(DcpNoop { opaque: 77 });
    let sent = s.sent();
    assert!(matches!(&sent[0], Message::SelectBucket(_)));
    assert!(matches!(&sent[1], Message::StatusResponse(r) if r.opaque == 77));
    s.ok(&sent[0]);
    s.accept_rest();
}

#[test]
fn oso_snapshot_resumes_from_before_it_until_it_ends() {
    use dcp_proto::msg::{OsoFlags, OsoSnapshot};
    let (mut s, opaque) = streaming(config().with_auto_ack(true));
    let oso = |flags| OsoSnapshot {
        vbucket: 0,
        opaque,
        stream_id: None,
        flags,
    };
    s.feed_ok(oso(OsoFlags::START));
    // Key order, not seqno order; no marker needed.
    for seqno in [7, 2, 9, 4] {
        s.feed_ok(mutation(0, opaque, seqno, &format!("k{seqno}")));
    }
    s.events();
    assert_eq!(
        s.consumer.position(0).unwrap().last_seqno,
        0,
        "not a resume point yet"
    );
    s.feed_ok(SeqnoAdvanced {
        vbucket: 0,
        opaque,
        stream_id: None,
        seqno: 12,
    });
    s.feed_ok(oso(OsoFlags::END));
    s.events();
    let p = s.consumer.position(0).unwrap();
    assert_eq!(
        (p.last_seqno, p.snapshot_start, p.snapshot_end),
        (12, 12, 12)
    );
    // Normal snapshots continue above it.
    s.feed_ok(marker(0, opaque, 13, 13));
    s.feed_ok(mutation(0, opaque, 13, "n"));
    assert_eq!(s.events().len(), 2);
}

#[test]
fn sub_second_noop_intervals_are_sent_and_used_as_one_second() {
    let mut s = Script::new(config().with_noop_interval(Some(Duration::from_millis(200))));
    s.handshake();
    let negotiated = s.consumer.negotiated().unwrap();
    assert_eq!(negotiated.noop_interval, Some(Duration::from_secs(1)));
    // Dead only after 2 s of silence, matching the producer's 1 s noops.
    s.advance(Duration::from_millis(1999)).unwrap();
    assert!(s.advance(Duration::from_millis(1)).is_err());
}

#[test]
fn cluster_config_on_request() {
    use dcp_proto::msg::client::GetClusterConfigResponse;
    let (mut s, _) = streaming(config());
    s.consumer.request_cluster_config().unwrap();
    let Message::GetClusterConfig(get) = s.one() else {
        panic!("GET_CLUSTER_CONFIG")
    };
    s.feed_ok(GetClusterConfigResponse {
        status: Status::Success,
        opaque: get.opaque,
        datatype: Datatype::JSON,
        config: Bytes::from_static(br#"{"rev":7}"#),
    });
    assert_eq!(
        s.events(),
        [Event::ClusterConfig {
            status: Status::Success,
            config: Bytes::from_static(br#"{"rev":7}"#)
        }]
    );
}

// ----- snappy --------------------------------------------------------------

fn snappy_mutation(opaque: u32, seqno: u64, value: Bytes) -> Mutation {
    Mutation {
        datatype: Datatype::JSON | Datatype::SNAPPY,
        value,
        ..mutation(0, opaque, seqno, "k")
    }
}

#[test]
fn snappy_values_are_decompressed_and_credited_at_their_wire_size() {
    let (mut s, opaque) = streaming(config().with_snappy(SnappyMode::Decompress));
    assert!(s.consumer.negotiated().unwrap().snappy);
    let plain = Bytes::from(format!("{{\"pad\":\"{}\"}}", "ab".repeat(200)));
    let (_, packed) = compress_value(Datatype::JSON, &plain).unwrap();
    let m = snappy_mutation(opaque, 1, packed);
    let mut wire = BytesMut::new();
    m.encode(&mut wire).unwrap();
    s.feed_ok(marker(0, opaque, 1, 1));
    s.feed_ok(m);
    let events = s.events();
    let Some(Event::Mutation(got, credit)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!((got.datatype, &got.value), (Datatype::JSON, &plain));
    assert_eq!(credit.bytes() as usize, wire.len());
    assert!(wire.len() < plain.len());
}

#[test]
fn snappy_values_pass_through_when_only_negotiated() {
    let (mut s, opaque) = streaming(config().with_snappy(SnappyMode::Negotiate));
    let (_, packed) = compress_value(Datatype::JSON, &Bytes::from("x".repeat(100))).unwrap();
    s.feed_ok(marker(0, opaque, 1, 1));
    s.feed_ok(snappy_mutation(opaque, 1, packed.clone()));
    let events = s.events();
    let Some(Event::Mutation(got, _)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(got.datatype, Datatype::JSON | Datatype::SNAPPY);
    assert_eq!(got.value, packed);
}

#[test]
fn snappy_is_requested_only_when_configured() {
    for (mode, requested) in [
        (SnappyMode::Off, false),
        (SnappyMode::Negotiate, true),
        (SnappyMode::Decompress, true),
    ] {
        let mut s = Script::new(config().with_snappy(mode));
        let Message::Hello(hello) = s.one() else {
            panic!("HELLO first")
        };
        assert_eq!(hello.features.contains(&HelloFeature::Snappy), requested);
    }
}

#[test]
fn corrupt_or_oversized_snappy_values_close_the_connection() {
    let corrupt = Bytes::from_static(&[0x20, 0x00, 0x01]);
    let hostile = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    for (value, oversized) in [(corrupt, false), (hostile, true)] {
        let (mut s, opaque) = streaming(config().with_snappy(SnappyMode::Decompress));
        s.feed_ok(marker(0, opaque, 1, 1));
        let err = s.feed(snappy_mutation(opaque, 1, value)).unwrap_err();
        let ConsumerError::Protocol(ProtocolError::BadSnappyValue { opcode, error }) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*opcode, Opcode::DcpMutation);
        assert_eq!(
            matches!(error, SnappyError::TooLarge { .. }),
            oversized,
            "{error}"
        );
        assert!(s.consumer.is_closed());
    }
}

#[test]
fn close_answered_key_enoent_finishes_at_once() {
    let (mut s, opaque) = streaming(config().with_buffer_size(1000));
    s.consumer.close_stream(0).unwrap();
    let Message::CloseStream(close) = s.one() else {
        panic!()
    };
    s.feed_ok(StatusResponse::new(
        Opcode::DcpCloseStream,
        Status::KeyEnoent,
        close.opaque,
    ));
    assert!(matches!(
        s.events()[..],
        [Event::StreamEnded {
            reason: StreamEndReason::Closed,
            ..
        }]
    ));
    assert!(!s.consumer.has_stream(0));
    // The stream's own STREAM_END, still in flight, is a straggler.
    s.feed_ok(StreamEnd {
        vbucket: 0,
        opaque,
        stream_id: None,
        reason: StreamEndReason::Ok,
    });
    assert!(s.events().is_empty());
    s.consumer
        .open_stream(0, StreamStart::Resume, None)
        .unwrap();
    assert_eq!(s.stream_request(0).start_seqno, 0);
}
