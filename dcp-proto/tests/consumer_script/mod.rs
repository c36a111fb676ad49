//! A scripted producer on a virtual clock for consumer tests: plays the
//! producer's side frame by frame, with no sockets and no sleeps.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, FrameDecoder, Opcode};
use dcp_proto::consumer::{Consumer, ConsumerConfig, ConsumerError, Event, StreamStart};
use dcp_proto::msg::client::HelloResponse;
use dcp_proto::msg::{
    FailoverEntry, FailoverLog, MarkerFormat, Message, Mutation, SnapshotFlags, SnapshotMarker,
    StatusResponse, StreamRequest, StreamRequestResponse,
};

pub const UUID: u64 = 0xfeed;

/// The producer's end of a consumer under test.
pub struct Script {
    pub consumer: Consumer,
    pub now: Instant,
    pub decoder: FrameDecoder,
    pub tx: BytesMut,
}

impl Script {
    pub fn new(config: ConsumerConfig) -> Self {
        let now = Instant::now();
        Self {
            consumer: Consumer::new(config, "clientnonce0123456789", now).unwrap(),
            now,
            decoder: FrameDecoder::new(),
            tx: BytesMut::new(),
        }
    }

    /// Frames the consumer wants to send, decoded.
    pub fn sent(&mut self) -> Vec<Message> {
        self.consumer.poll_transmit(&mut self.tx);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.decode(&mut self.tx).unwrap() {
            out.push(Message::decode(&frame).unwrap());
        }
        out
    }

    /// Exactly one frame sent.
    pub fn one(&mut self) -> Message {
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1, "expected one request, got {sent:#?}");
        sent.remove(0)
    }

    pub fn feed(&mut self, message: impl Into<Message>) -> Result<(), ConsumerError> {
        let mut rx = BytesMut::new();
        message.into().encode(&mut rx).unwrap();
        self.consumer.handle_input(&mut rx, self.now)
    }

    pub fn feed_ok(&mut self, message: impl Into<Message>) {
        self.feed(message).unwrap();
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.consumer.poll_event()).collect()
    }

    pub fn advance(&mut self, by: Duration) -> Result<(), ConsumerError> {
        self.now += by;
        self.consumer.handle_timeout(self.now)
    }

    /// Answers a request with a plain success.
    pub fn ok(&mut self, request: &Message) {
        let (opcode, opaque) = opcode_opaque(request);
        self.feed_ok(StatusResponse::success(opcode, opaque));
    }

    /// Runs the handshake of a consumer without credentials, accepting
    /// every feature and control.
    pub fn handshake(&mut self) {
        let Message::Hello(hello) = self.one() else {
            panic!("HELLO first")
        };
        self.feed_ok(HelloResponse::success(hello.opaque, hello.features.clone()));
        self.accept_rest();
    }

    /// From SELECT_BUCKET on: accept everything.
    pub fn accept_rest(&mut self) {
        loop {
            let request = self.one();
            self.ok(&request);
            if let Some(Event::Ready(_)) = self.consumer_peek_ready() {
                break;
            }
        }
    }

    pub fn consumer_peek_ready(&mut self) -> Option<Event> {
        if self.consumer.is_ready() {
            let events = self.events();
            assert!(
                matches!(events.first(), Some(Event::Ready(_))),
                "{events:?}"
            );
            return events.into_iter().next();
        }
        None
    }

    /// Expects a stream request for `vb`; returns it.
    pub fn stream_request(&mut self, vb: u16) -> StreamRequest {
        match self.one() {
            Message::StreamRequest(r) if r.vbucket == vb => r,
            other => panic!("expected STREAM_REQ for vb {vb}, got {other:?}"),
        }
    }

    pub fn accept_stream(&mut self, request: &StreamRequest, log: &[(u64, u64)]) {
        self.feed_ok(StreamRequestResponse::accepted(request.opaque, fl(log)));
    }
}

pub fn opcode_opaque(m: &Message) -> (Opcode, u32) {
    match m {
        Message::SelectBucket(m) => (Opcode::SelectBucket, m.opaque),
        Message::Open(m) => (Opcode::DcpOpen, m.opaque),
        Message::Control(m) => (Opcode::DcpControl, m.opaque),
        Message::CloseStream(m) => (Opcode::DcpCloseStream, m.opaque),
        other => panic!("no plain success for {other:?}"),
    }
}

pub fn fl(entries: &[(u64, u64)]) -> FailoverLog {
    FailoverLog::new(
        entries
            .iter()
            .map(|&(vbucket_uuid, seqno)| FailoverEntry {
                vbucket_uuid,
                seqno,
            })
            .collect(),
    )
}

pub fn marker(vb: u16, opaque: u32, start: u64, end: u64) -> SnapshotMarker {
    SnapshotMarker {
        vbucket: vb,
        opaque,
        stream_id: None,
        start,
        end,
        flags: SnapshotFlags::MEMORY,
        format: MarkerFormat::V1,
    }
}

pub fn mutation(vb: u16, opaque: u32, seqno: u64, key: &str) -> Mutation {
    Mutation {
        vbucket: vb,
        opaque,
        stream_id: None,
        cas: seqno,
        datatype: Datatype::JSON,
        by_seqno: seqno,
        rev_seqno: 1,
        flags: 0,
        expiration: 0,
        lock_time: 0,
        nru: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"{}"),
    }
}

/// A ready consumer with an open stream on vb 0 from the beginning.
pub fn streaming(config: ConsumerConfig) -> (Script, u32) {
    let mut s = Script::new(config);
    s.handshake();
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let req = s.stream_request(0);
    s.accept_stream(&req, &[(UUID, 0)]);
    let events = s.events();
    assert!(
        matches!(events[..], [Event::StreamOpened { vbucket: 0, .. }]),
        "{events:?}"
    );
    (s, req.opaque)
}
