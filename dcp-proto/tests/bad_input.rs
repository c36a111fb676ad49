//! Malformed and hostile frames against both ends of the in-memory core, one
//! table row each: bad magic, sections that overrun the body or a value
//! that underruns its layout, extras of the wrong size for the opcode, a
//! 4 GiB declared body, unknown opcodes, responses to requests never sent,
//! opaques of no stream, seqnos that go backwards, items outside their
//! snapshot, snapshot bounds with end < start.
//!
//! The consumer (after its handshake, with a stream open) fails every row
//! with the named typed error, sticky, and closes cleanly: `is_closed`, no
//! deadline left (`poll_timeout` is `None`).
//!
//! The node, before authentication, after it and after DCP_OPEN, does what
//! the server does (behavior.md §1, §2.2; wire.md §2): bytes it cannot
//! frame close the connection (`CloseReason::Framing` with the decode
//! error), as do the DCP-level offences the server disconnects for (a
//! DCP_NOOP request, a noop reply with a foreign opaque, an intolerable
//! reply to a stream message); a well-framed but malformed or out-of-place
//! request gets its error status (EINVAL, EACCESS, ERANGE, ...) and the
//! connection stays usable, exactly as memcached answers a failed
//! validator.
//!
//! Neither end reserves memory beyond its configured maximum frame size:
//! the receive buffer's capacity is checked after each row, the 4 GiB
//! header included.

mod producer_harness;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use dcp_proto::auth::Credentials;
use dcp_proto::codec::{DecodeErrorKind, Frame, FrameDecoder, FrameHead, Opcode, Status};
use dcp_proto::consumer::{
    Consumer, ConsumerConfig, ConsumerError, Event, ProtocolError, StreamStart,
};
use dcp_proto::msg::{
    BufferAck, CloseStream, Control, OpenFlags, StreamRequest, StreamRequestFlags,
};
use dcp_proto::producer::{CloseReason, ConnectionId, Node, ProducerError};
use dcp_proto::session::Violation;
use producer_harness::{BUCKET, Harness, PASSWORD, USER, config};

/// The maximum frame size both ends are configured with.
const MAX_FRAME: usize = 64 * 1024;
/// Slack allowed over it in a receive buffer's capacity.
const MARGIN: usize = 4 * 1024;
const UNKNOWN: u8 = 0xee;

// ----- raw frames ----------------------------------------------------------

/// A classic header with every field as given (nothing checked against
/// anything), to be followed by any body.
#[derive(Debug, Clone, Copy)]
struct Raw {
    magic: u8,
    opcode: u8,
    key_len: u16,
    extras_len: u8,
    body_len: u32,
    opaque: u32,
}

impl Raw {
    /// A request header with an empty body on vbucket 0.
    fn new(opcode: u8, opaque: u32) -> Self {
        Self {
            magic: 0x80,
            opcode,
            key_len: 0,
            extras_len: 0,
            body_len: 0,
            opaque,
        }
    }

    fn with(self, body: &[u8]) -> Vec<u8> {
        let mut f = vec![self.magic, self.opcode];
        f.extend_from_slice(&self.key_len.to_be_bytes());
        f.extend_from_slice(&[self.extras_len, 0, 0, 0]);
        f.extend_from_slice(&self.body_len.to_be_bytes());
        f.extend_from_slice(&self.opaque.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(body);
        f
    }
}

/// A well-framed request with the given sections.
fn request(
    opcode: Opcode,
    vb: u16,
    opaque: u32,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameHead::request(opcode, vb, opaque)
        .with_cas(1)
        .encode(&mut buf, &[], extras, key, value)
        .unwrap();
    buf.to_vec()
}

/// A well-framed response with no body.
fn response(opcode: Opcode, status: Status, opaque: u32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameHead::response(opcode, status, opaque)
        .encode(&mut buf, &[], &[], &[], &[])
        .unwrap();
    buf.to_vec()
}

/// MUTATION extras: seqno, rev seqno, then zeros (`len` bytes in all).
fn mutation_extras(seqno: u64, len: usize) -> Vec<u8> {
    let mut e = BytesMut::new();
    e.put_u64(seqno);
    e.put_u64(1);
    e.resize(len, 0);
    e.to_vec()
}

fn mutation(vb: u16, opaque: u32, seqno: u64) -> Vec<u8> {
    request(
        Opcode::DcpMutation,
        vb,
        opaque,
        &mutation_extras(seqno, 31),
        b"key",
        b"value",
    )
}

/// A v1 SNAPSHOT_MARKER (Memory) from `start` to `end`.
fn marker(opaque: u32, start: u64, end: u64) -> Vec<u8> {
    let mut e = BytesMut::new();
    e.put_u64(start);
    e.put_u64(end);
    e.put_u32(0x01);
    request(Opcode::DcpSnapshotMarker, 0, opaque, &e, &[], &[])
}

fn stream_req_extras(start: u64, end: u64, snap: (u64, u64)) -> Vec<u8> {
    let mut e = BytesMut::new();
    e.put_u32(0);
    e.put_u32(0);
    e.put_u64(start);
    e.put_u64(end);
    e.put_u64(0);
    e.put_u64(snap.0);
    e.put_u64(snap.1);
    e.to_vec()
}

fn four_gib_header(opcode: Opcode) -> Vec<u8> {
    Raw {
        body_len: u32::MAX,
        ..Raw::new(opcode.raw(), 1)
    }
    .with(&[])
}

// ----- the consumer ------------------------------------------------------

/// A consumer past its handshake with vbucket 0 streaming from our node.
struct Streaming {
    consumer: Consumer,
    now: Instant,
    /// The stream's opaque.
    opaque: u32,
    /// The last marker and seqno the consumer received.
    marker: Option<(u64, u64)>,
    last: u64,
}

/// A consumer streaming vbucket 0 of a node holding `docs` documents,
/// every event polled.
fn streaming(docs: usize) -> Streaming {
    let now = Instant::now();
    let mut h = Harness::new(config(1));
    for i in 0..docs {
        h.set(&format!("k{i}"), "v");
    }
    let mut config = ConsumerConfig::new("bad-input", BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_noop_interval(Some(Duration::from_secs(120)));
    config.max_frame_len = MAX_FRAME;
    let mut consumer = Consumer::new(config, "bm9uY2U", now).unwrap();
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let id = h.node.accept(now);
    let mut s = Streaming {
        consumer,
        now,
        opaque: 0,
        marker: None,
        last: 0,
    };
    pump(&mut s, &mut h.node, id);
    assert!(s.consumer.is_ready() && s.consumer.has_stream(0));
    assert!(s.opaque != 0 && s.last == docs as u64);
    assert!(
        s.consumer.poll_timeout().is_some(),
        "a live consumer has a deadline"
    );
    s
}

/// Moves bytes both ways until nothing moves, polling every event; notes
/// the stream's opaque from the consumer's STREAM_REQ.
fn pump(s: &mut Streaming, node: &mut Node, id: ConnectionId) {
    let mut rx = BytesMut::new();
    loop {
        let mut up = BytesMut::new();
        let sent = s.consumer.poll_transmit(&mut up);
        let mut copy = up.clone();
        let mut decoder = FrameDecoder::new();
        while let Some(frame) = decoder.decode(&mut copy).unwrap() {
            if frame.is_request() && frame.opcode() == Opcode::DcpStreamReq {
                s.opaque = frame.opaque();
            }
        }
        node.handle_input(id, &mut up, s.now).unwrap();
        let mut down = BytesMut::new();
        let received = node.poll_transmit(id, &mut down, usize::MAX);
        rx.extend_from_slice(&down);
        s.consumer.handle_input(&mut rx, s.now).unwrap();
        while let Some(event) = s.consumer.poll_event() {
            match event {
                Event::SnapshotMarker(m, _) => s.marker = Some((m.start, m.end)),
                Event::Mutation(m, _) => s.last = m.by_seqno,
                _ => {}
            }
        }
        if sent == 0 && received == 0 {
            break;
        }
    }
}

/// What a consumer row expects.
#[derive(Debug)]
enum Want {
    /// A decode error of this kind.
    Decode(DecodeErrorKind),
    /// Exactly this error.
    Error(ConsumerError),
}

/// One consumer row: name, documents in the fixture, the bytes, the error.
type ConsumerRow = (&'static str, usize, fn(&Streaming) -> (Vec<u8>, Want));

fn protocol(e: ProtocolError) -> Want {
    Want::Error(ConsumerError::Protocol(e))
}

fn violation(v: Violation) -> Want {
    Want::Error(ConsumerError::Violation {
        vbucket: 0,
        violation: v,
    })
}

fn consumer_rows() -> Vec<ConsumerRow> {
    vec![
        ("bad magic", 3, |s| {
            (
                Raw {
                    magic: 0x42,
                    ..Raw::new(0x57, s.opaque)
                }
                .with(&[]),
                Want::Decode(DecodeErrorKind::InvalidMagic(0x42)),
            )
        }),
        ("key and extras overrun the body", 3, |s| {
            let f = Raw {
                key_len: 10,
                extras_len: 31,
                body_len: 20,
                ..Raw::new(0x57, s.opaque)
            }
            .with(&[0; 20]);
            let kind = DecodeErrorKind::SectionsExceedBody {
                framing_extras: 0,
                extras: 31,
                key: 10,
                body: 20,
            };
            (f, Want::Decode(kind))
        }),
        ("marker v2.0 value underruns its 36 bytes", 3, |s| {
            let f = request(Opcode::DcpSnapshotMarker, 0, s.opaque, &[0], &[], &[0; 20]);
            (
                f,
                Want::Decode(DecodeErrorKind::ValueLength {
                    expected: "36",
                    got: 20,
                }),
            )
        }),
        ("mutation with 30 bytes of extras", 3, |s| {
            let f = request(
                Opcode::DcpMutation,
                0,
                s.opaque,
                &mutation_extras(4, 30),
                b"k",
                b"v",
            );
            (
                f,
                Want::Decode(DecodeErrorKind::ExtrasLength {
                    expected: "31",
                    got: 30,
                }),
            )
        }),
        ("deletion with 20 bytes of extras", 3, |s| {
            let f = request(
                Opcode::DcpDeletion,
                0,
                s.opaque,
                &mutation_extras(4, 20),
                b"k",
                &[],
            );
            (
                f,
                Want::Decode(DecodeErrorKind::ExtrasLength {
                    expected: "18 or 21",
                    got: 20,
                }),
            )
        }),
        ("stream end with 3 bytes of extras", 3, |s| {
            let f = request(Opcode::DcpStreamEnd, 0, s.opaque, &[0; 3], &[], &[]);
            (
                f,
                Want::Decode(DecodeErrorKind::ExtrasLength {
                    expected: "4",
                    got: 3,
                }),
            )
        }),
        ("4 GiB declared body", 3, |_| {
            let kind = DecodeErrorKind::FrameTooLarge {
                frame_len: 24 + u64::from(u32::MAX),
                max: MAX_FRAME,
            };
            (four_gib_header(Opcode::DcpMutation), Want::Decode(kind))
        }),
        ("unknown opcode (request)", 3, |s| {
            let f = Raw::new(UNKNOWN, s.opaque).with(&[]);
            (
                f,
                protocol(ProtocolError::UnexpectedRequest(Opcode::Unknown(UNKNOWN))),
            )
        }),
        ("unknown opcode (response)", 3, |_| {
            let f = response(Opcode::Unknown(UNKNOWN), Status::Success, 77);
            let e = ProtocolError::UnexpectedResponse {
                opcode: Opcode::Unknown(UNKNOWN),
                opaque: 77,
            };
            (f, protocol(e))
        }),
        ("a request the producer never sends (DCP_OPEN)", 3, |s| {
            let f = request(Opcode::DcpOpen, 0, s.opaque, &[0; 8], b"x", &[]);
            (
                f,
                protocol(ProtocolError::UnexpectedRequest(Opcode::DcpOpen)),
            )
        }),
        ("stream-request response never requested", 3, |_| {
            let f = response(Opcode::DcpStreamReq, Status::Success, 0xdead);
            let e = ProtocolError::UnexpectedResponse {
                opcode: Opcode::DcpStreamReq,
                opaque: 0xdead,
            };
            (f, protocol(e))
        }),
        ("noop response (the consumer sends no noop)", 3, |_| {
            let f = response(Opcode::DcpNoop, Status::Success, 9);
            let e = ProtocolError::UnexpectedResponse {
                opcode: Opcode::DcpNoop,
                opaque: 9,
            };
            (f, protocol(e))
        }),
        ("mutation on an opaque of no stream", 3, |_| {
            let e = ProtocolError::UnknownStream {
                opcode: Opcode::DcpMutation,
                opaque: 0xbeef,
            };
            (mutation(0, 0xbeef, 4), protocol(e))
        }),
        ("marker on an opaque of no stream", 3, |_| {
            let e = ProtocolError::UnknownStream {
                opcode: Opcode::DcpSnapshotMarker,
                opaque: 0xbeef,
            };
            (marker(0xbeef, 4, 4), protocol(e))
        }),
        ("mutation after the stream's STREAM_END", 3, |s| {
            let mut f = request(Opcode::DcpStreamEnd, 0, s.opaque, &[0; 4], &[], &[]);
            f.extend(mutation(0, s.opaque, 4));
            let e = ProtocolError::UnknownStream {
                opcode: Opcode::DcpMutation,
                opaque: s.opaque,
            };
            (f, protocol(e))
        }),
        ("the stream's opaque on another vbucket", 3, |s| {
            let e = ProtocolError::WrongVbucket {
                opcode: Opcode::DcpMutation,
                expected: 0,
                got: 3,
            };
            (mutation(3, s.opaque, 4), protocol(e))
        }),
        ("seqno going backwards", 3, |s| {
            let v = Violation::SeqnoNotIncreasing { last: 3, seqno: 2 };
            (mutation(0, s.opaque, 2), violation(v))
        }),
        ("seqno repeated", 3, |s| {
            let v = Violation::SeqnoNotIncreasing { last: 3, seqno: 3 };
            (mutation(0, s.opaque, 3), violation(v))
        }),
        ("seqno 0", 3, |s| {
            let kind = DecodeErrorKind::InvalidField {
                field: "by_seqno",
                value: 0,
            };
            (mutation(0, s.opaque, 0), Want::Decode(kind))
        }),
        ("item past its snapshot's end", 3, |s| {
            let (start, end) = s.marker.unwrap();
            let v = Violation::OutsideSnapshot {
                seqno: 4,
                start,
                end,
            };
            (mutation(0, s.opaque, 4), violation(v))
        }),
        ("item before any snapshot marker", 0, |s| {
            (
                mutation(0, s.opaque, 1),
                violation(Violation::NoSnapshot { seqno: 1 }),
            )
        }),
        ("marker with end < start", 3, |s| {
            let kind = DecodeErrorKind::InvalidField {
                field: "end",
                value: 5,
            };
            (marker(s.opaque, 10, 5), Want::Decode(kind))
        }),
        ("marker behind the last seqno", 3, |s| {
            let v = Violation::MarkerBehind {
                start: 1,
                end: 2,
                last: 3,
            };
            (marker(s.opaque, 1, 2), violation(v))
        }),
    ]
}

#[test]
fn the_consumer_fails_hostile_frames_with_typed_errors_and_closes() {
    for (name, docs, row) in consumer_rows() {
        let mut s = streaming(docs);
        let (bytes, want) = row(&s);
        let mut rx = BytesMut::from(&bytes[..]);
        let err = s.consumer.handle_input(&mut rx, s.now).expect_err(name);
        match &want {
            Want::Decode(kind) => assert!(
                matches!(&err, ConsumerError::Decode(e) if e.kind == *kind),
                "{name}: {err:?}, want {kind:?}"
            ),
            Want::Error(e) => assert_eq!(&err, e, "{name}"),
        }
        // Sticky, closed, no deadline; nothing reserved past the maximum.
        assert_eq!(s.consumer.error(), Some(&err), "{name}");
        assert!(s.consumer.is_closed(), "{name}");
        assert_eq!(s.consumer.poll_timeout(), None, "{name}");
        assert_eq!(
            s.consumer.handle_input(&mut BytesMut::new(), s.now),
            Err(err.clone()),
            "{name}"
        );
        assert_eq!(
            s.consumer.handle_timeout(s.now + Duration::from_secs(999)),
            Err(err.clone()),
            "{name}"
        );
        assert!(
            rx.capacity() <= MAX_FRAME + MARGIN,
            "{name}: capacity {}",
            rx.capacity()
        );
        while s.consumer.poll_event().is_some() {}
    }
}

#[test]
fn the_consumer_reserves_at_most_the_maximum_frame() {
    let mut s = streaming(3);
    // A header declaring exactly the maximum: the decoder may reserve up to
    // it for the body, no more.
    let body = (MAX_FRAME - 24) as u32;
    let mut rx = BytesMut::from(
        &Raw {
            key_len: 3,
            extras_len: 31,
            body_len: body,
            ..Raw::new(0x57, s.opaque)
        }
        .with(&[0; 100])[..],
    );
    s.consumer.handle_input(&mut rx, s.now).unwrap();
    assert!(
        rx.capacity() <= MAX_FRAME + MARGIN,
        "capacity {}",
        rx.capacity()
    );
    // One byte more is refused from the header alone.
    let mut s = streaming(3);
    let mut rx = BytesMut::from(
        &Raw {
            key_len: 3,
            extras_len: 31,
            body_len: body + 1,
            ..Raw::new(0x57, s.opaque)
        }
        .with(&[0; 100])[..],
    );
    let err = s.consumer.handle_input(&mut rx, s.now).unwrap_err();
    assert!(
        matches!(err, ConsumerError::Decode(e) if matches!(e.kind, DecodeErrorKind::FrameTooLarge { .. }))
    );
    assert!(rx.capacity() < 1024, "capacity {}", rx.capacity());
}

// ----- the node --------------------------------------------------------------

/// How far a connection got before the row's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, nothing sent.
    Fresh,
    /// HELLO (with XERROR) done, not authenticated.
    Hello,
    /// HELLO, SASL, SELECT_BUCKET done.
    Authenticated,
    /// DCP_OPEN done, noops on, a stream on vbucket 0 running.
    Open,
}

/// What the node does with a row.
#[derive(Debug)]
enum Outcome {
    /// Closes the connection: the bytes cannot be framed.
    Framing(DecodeErrorKind),
    /// Closes the connection for this reason.
    Closed(CloseReason),
    /// Answers with this status and stays usable.
    Reply(Opcode, Status),
    /// Ignores it and stays usable.
    Silent,
}

type NodeRow = (&'static str, Phase, Vec<u8>, Outcome);

const OPAQUE: u32 = 0x5151;

fn node_rows() -> Vec<NodeRow> {
    use Outcome::*;
    use Phase::*;
    let overrun = Raw {
        key_len: 10,
        extras_len: 48,
        body_len: 20,
        ..Raw::new(Opcode::DcpStreamReq.raw(), OPAQUE)
    }
    .with(&[0; 20]);
    let overrun_kind = || DecodeErrorKind::SectionsExceedBody {
        framing_extras: 0,
        extras: 48,
        key: 10,
        body: 20,
    };
    let too_large = || DecodeErrorKind::FrameTooLarge {
        frame_len: 24 + u64::from(u32::MAX),
        max: MAX_FRAME,
    };
    let stream_req = |extras: Vec<u8>| request(Opcode::DcpStreamReq, 0, OPAQUE, &extras, &[], &[]);
    let mut rows: Vec<NodeRow> = Vec::new();
    for phase in [Fresh, Hello, Authenticated, Open] {
        rows.push((
            "bad magic",
            phase,
            Raw {
                magic: 0x42,
                ..Raw::new(0x53, OPAQUE)
            }
            .with(&[]),
            Framing(DecodeErrorKind::InvalidMagic(0x42)),
        ));
        rows.push((
            "key and extras overrun the body",
            phase,
            overrun.clone(),
            Framing(overrun_kind()),
        ));
        rows.push((
            "4 GiB declared body",
            phase,
            four_gib_header(Opcode::DcpStreamReq),
            Framing(too_large()),
        ));
    }
    rows.extend([
        // Before authentication everything but the handshake is EACCESS, a
        // status a client without XERROR would not understand: the server
        // closes instead.
        (
            "stream request before HELLO",
            Fresh,
            stream_req(stream_req_extras(0, u64::MAX, (0, 0))),
            Closed(CloseReason::XerrorRequired(Status::Eaccess)),
        ),
        (
            "stream request before auth",
            Hello,
            stream_req(stream_req_extras(0, u64::MAX, (0, 0))),
            Reply(Opcode::DcpStreamReq, Status::Eaccess),
        ),
        (
            "unknown opcode before auth",
            Hello,
            Raw::new(UNKNOWN, OPAQUE).with(&[]),
            Reply(Opcode::Unknown(UNKNOWN), Status::Eaccess),
        ),
        (
            "noop response never requested, before auth",
            Fresh,
            response(Opcode::DcpNoop, Status::Success, OPAQUE),
            Silent,
        ),
        (
            "HELLO with an odd-length feature list",
            Fresh,
            request(Opcode::Hello, 0, OPAQUE, &[], b"agent", &[0, 1, 2]),
            Reply(Opcode::Hello, Status::Einval),
        ),
        // Authenticated, not a DCP connection yet.
        (
            "unknown opcode",
            Authenticated,
            Raw::new(UNKNOWN, OPAQUE).with(&[]),
            Reply(Opcode::Unknown(UNKNOWN), Status::UnknownCommand),
        ),
        (
            "control before DCP_OPEN",
            Authenticated,
            encode(|b| Control::new(OPAQUE, "enable_noop", "true").encode(b)),
            Reply(Opcode::DcpControl, Status::Einval),
        ),
        (
            "stream request before DCP_OPEN",
            Authenticated,
            stream_req(stream_req_extras(0, u64::MAX, (0, 0))),
            Reply(Opcode::DcpStreamReq, Status::Einval),
        ),
        (
            "DCP_OPEN with 4 bytes of extras",
            Authenticated,
            request(Opcode::DcpOpen, 0, OPAQUE, &[0, 0, 0, 1], b"x", &[]),
            Reply(Opcode::DcpOpen, Status::Einval),
        ),
        (
            "noop response never requested, before DCP_OPEN",
            Authenticated,
            response(Opcode::DcpNoop, Status::Success, OPAQUE),
            Silent,
        ),
        // A DCP connection with a stream on vbucket 0.
        (
            "stream request with 40 bytes of extras",
            Open,
            stream_req(vec![0; 40]),
            Reply(Opcode::DcpStreamReq, Status::Einval),
        ),
        (
            "buffer ack with 2 bytes of extras",
            Open,
            request(Opcode::DcpBufferAck, 0, OPAQUE, &[0, 1], &[], &[]),
            Reply(Opcode::DcpBufferAck, Status::Einval),
        ),
        (
            "unknown opcode on a DCP connection",
            Open,
            Raw::new(UNKNOWN, OPAQUE).with(&[]),
            Reply(Opcode::Unknown(UNKNOWN), Status::UnknownCommand),
        ),
        (
            "second DCP_OPEN",
            Open,
            encode(|b| {
                dcp_proto::msg::Open {
                    opaque: OPAQUE,
                    flags: OpenFlags::PRODUCER,
                    name: Bytes::from_static(b"again"),
                    consumer_name: None,
                }
                .encode(b)
            }),
            Reply(Opcode::DcpOpen, Status::Einval),
        ),
        (
            "stream request for a vbucket that does not exist",
            Open,
            request(
                Opcode::DcpStreamReq,
                9,
                OPAQUE,
                &stream_req_extras(0, u64::MAX, (0, 0)),
                &[],
                &[],
            ),
            Reply(Opcode::DcpStreamReq, Status::NotMyVbucket),
        ),
        (
            "stream request whose start goes back past its end",
            Open,
            encode(|b| {
                StreamRequest {
                    vbucket: 1,
                    start_seqno: 5,
                    end_seqno: 2,
                    snap_start_seqno: 5,
                    snap_end_seqno: 5,
                    ..stream_request()
                }
                .encode(b)
            }),
            Reply(Opcode::DcpStreamReq, Status::Erange),
        ),
        (
            "stream request whose snapshot ends before it starts",
            Open,
            encode(|b| {
                StreamRequest {
                    vbucket: 1,
                    start_seqno: 2,
                    snap_start_seqno: 3,
                    snap_end_seqno: 1,
                    ..stream_request()
                }
                .encode(b)
            }),
            Reply(Opcode::DcpStreamReq, Status::Erange),
        ),
        (
            "stream request starting outside its snapshot",
            Open,
            encode(|b| {
                StreamRequest {
                    vbucket: 1,
                    start_seqno: 9,
                    snap_start_seqno: 2,
                    snap_end_seqno: 4,
                    ..stream_request()
                }
                .encode(b)
            }),
            Reply(Opcode::DcpStreamReq, Status::Erange),
        ),
        (
            "close of a vbucket with no stream",
            Open,
            encode(|b| {
                CloseStream {
                    vbucket: 1,
                    opaque: OPAQUE,
                    stream_id: None,
                }
                .encode(b)
            }),
            Reply(Opcode::DcpCloseStream, Status::KeyEnoent),
        ),
        (
            "buffer ack beyond what was sent (clamped)",
            Open,
            encode(|b| {
                BufferAck {
                    vbucket: 0,
                    opaque: OPAQUE,
                    bytes: u32::MAX,
                }
                .encode(b)
            }),
            Silent,
        ),
        (
            "success reply to a mutation on an opaque of no stream",
            Open,
            response(Opcode::DcpMutation, Status::Success, 0xbeef),
            Silent,
        ),
        (
            "noop response with an opaque never sent",
            Open,
            response(Opcode::DcpNoop, Status::Success, OPAQUE),
            Closed(CloseReason::NoopOpaqueMismatch(OPAQUE)),
        ),
        (
            "DCP_NOOP request from the client",
            Open,
            request(Opcode::DcpNoop, 0, OPAQUE, &[], &[], &[]),
            Closed(CloseReason::NoopFromClient),
        ),
        (
            "EINVAL reply to a mutation",
            Open,
            response(Opcode::DcpMutation, Status::Einval, 0xbeef),
            Closed(CloseReason::ClientError {
                opcode: Opcode::DcpMutation,
                status: Status::Einval,
            }),
        ),
        (
            "reply to a SEQNO_ADVANCED",
            Open,
            response(Opcode::DcpSeqnoAdvanced, Status::Success, 0xbeef),
            Closed(CloseReason::ClientError {
                opcode: Opcode::DcpSeqnoAdvanced,
                status: Status::Success,
            }),
        ),
    ]);
    rows
}

fn encode(f: impl FnOnce(&mut BytesMut) -> Result<(), dcp_proto::codec::EncodeError>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f(&mut buf).unwrap();
    buf.to_vec()
}

fn stream_request() -> StreamRequest {
    StreamRequest {
        vbucket: 0,
        opaque: OPAQUE,
        flags: StreamRequestFlags::empty(),
        start_seqno: 0,
        end_seqno: StreamRequest::NO_END,
        vbucket_uuid: 0,
        snap_start_seqno: 0,
        snap_end_seqno: 0,
        value: None,
    }
}

/// A node (2 vbuckets, 5 documents in vbucket 0's stream) and a
/// connection brought to `phase`.
fn node_at(phase: Phase) -> (Harness, producer_harness::Client) {
    let mut h = Harness::new(config(2).with_max_frame_len(MAX_FRAME));
    for i in 0..5 {
        h.set(&format!("k{i}"), "v");
    }
    let c = match phase {
        Phase::Fresh => h.connect(),
        Phase::Hello => {
            let mut c = h.connect();
            let hello = dcp_proto::msg::client::Hello {
                opaque: 1,
                agent: Bytes::from_static(b"bad-input"),
                features: vec![dcp_proto::msg::client::HelloFeature::Xerror],
            };
            assert!(h.status(&mut c, |b| hello.encode(b)).is_success());
            c
        }
        Phase::Authenticated => {
            let mut c = h.connect();
            h.login(&mut c);
            c
        }
        Phase::Open => {
            let mut c = h.dcp_client("bad-input", OpenFlags::empty());
            assert!(h.control(&mut c, "enable_noop", "true").is_success());
            let (r, _) = h.stream_req(&mut c, producer_harness::req(0, 1));
            assert!(r.status().is_success());
            h.recv(&mut c);
            c
        }
    };
    (h, c)
}

/// Every frame the node has for the connection.
fn output(node: &mut Node, id: ConnectionId) -> Vec<Frame> {
    let mut tx = BytesMut::new();
    node.poll_transmit(id, &mut tx, usize::MAX);
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut tx).unwrap() {
        frames.push(frame);
    }
    assert!(tx.is_empty(), "the node writes whole frames");
    frames
}

#[test]
fn the_node_answers_or_closes_on_hostile_frames() {
    for (name, phase, bytes, want) in node_rows() {
        let (mut h, c) = node_at(phase);
        let mut rx = BytesMut::from(&bytes[..]);
        let result = h.node.handle_input(c.id, &mut rx, h.now);
        assert!(
            rx.capacity() <= MAX_FRAME + MARGIN,
            "{name}: capacity {}",
            rx.capacity()
        );
        let reason = match want {
            Outcome::Framing(kind) => {
                let reason = h.node.close_reason(c.id).cloned();
                assert!(
                    matches!(&reason, Some(CloseReason::Framing(e)) if e.kind == kind),
                    "{name} ({phase:?}): {reason:?}, want {kind:?}"
                );
                reason
            }
            Outcome::Closed(expected) => {
                assert_eq!(
                    h.node.close_reason(c.id),
                    Some(&expected),
                    "{name} ({phase:?})"
                );
                Some(expected)
            }
            Outcome::Reply(opcode, status) => {
                assert_eq!(result, Ok(()), "{name} ({phase:?})");
                let replies: Vec<Frame> = output(&mut h.node, c.id)
                    .into_iter()
                    .filter(|f| f.is_response())
                    .collect();
                assert_eq!(replies.len(), 1, "{name} ({phase:?}): {replies:?}");
                let r = &replies[0];
                assert_eq!(
                    (r.opcode(), r.status(), r.opaque()),
                    (opcode, status, OPAQUE),
                    "{name} ({phase:?})"
                );
                None
            }
            Outcome::Silent => {
                assert_eq!(result, Ok(()), "{name} ({phase:?})");
                assert!(
                    output(&mut h.node, c.id).iter().all(|f| !f.is_response()),
                    "{name} ({phase:?})"
                );
                None
            }
        };
        match reason {
            Some(reason) => {
                // A clean close: the error names the reason, sticks, and
                // the connection has nothing left to do.
                assert_eq!(
                    result,
                    Err(ProducerError::Closed(reason.clone())),
                    "{name} ({phase:?})"
                );
                assert!(h.node.is_closed(c.id), "{name} ({phase:?})");
                assert_eq!(h.node.poll_timeout(c.id), None, "{name} ({phase:?})");
                let again = h
                    .node
                    .handle_input(c.id, &mut BytesMut::from(&b"\x80"[..]), h.now);
                assert_eq!(
                    again,
                    Err(ProducerError::Closed(reason)),
                    "{name} ({phase:?})"
                );
                output(&mut h.node, c.id);
                assert!(output(&mut h.node, c.id).is_empty(), "{name} ({phase:?})");
                h.node.remove(c.id);
            }
            None => {
                // Still usable: a NOOP (0x0a) is answered.
                assert!(!h.node.is_closed(c.id), "{name} ({phase:?})");
                let noop = request(Opcode::Noop, 0, 7, &[], &[], &[]);
                h.node
                    .handle_input(c.id, &mut BytesMut::from(&noop[..]), h.now)
                    .unwrap();
                let ok = output(&mut h.node, c.id)
                    .into_iter()
                    .any(|f| f.is_response() && f.opaque() == 7 && f.status().is_success());
                assert!(ok, "{name} ({phase:?}): not usable after the row");
            }
        }
    }
}

#[test]
fn the_node_reserves_at_most_the_maximum_frame() {
    let (mut h, c) = node_at(Phase::Open);
    let body = (MAX_FRAME - 24) as u32;
    let mut rx = BytesMut::from(
        &Raw {
            key_len: 3,
            body_len: body,
            ..Raw::new(Opcode::DcpControl.raw(), 1)
        }
        .with(&[0; 100])[..],
    );
    h.node.handle_input(c.id, &mut rx, h.now).unwrap();
    assert!(
        rx.capacity() <= MAX_FRAME + MARGIN,
        "capacity {}",
        rx.capacity()
    );
    assert!(!h.node.is_closed(c.id));
    let (mut h, c) = node_at(Phase::Open);
    let mut rx = BytesMut::from(
        &Raw {
            key_len: 3,
            body_len: body + 1,
            ..Raw::new(Opcode::DcpControl.raw(), 1)
        }
        .with(&[0; 100])[..],
    );
    assert!(h.node.handle_input(c.id, &mut rx, h.now).is_err());
    assert!(rx.capacity() < 1024, "capacity {}", rx.capacity());
}
