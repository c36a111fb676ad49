//! A virtual-clock harness for scenario tests of the producer: clients that
//! send raw frames built from `msg` types and read the frames the node
//! writes.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use dcp_proto::bucket::{MutationInfo, WriteOptions};
use dcp_proto::codec::{EncodeError, Frame, FrameDecoder, Opcode, Status};
use dcp_proto::msg::client::{Hello, HelloFeature, SaslAuth, SelectBucket};
use dcp_proto::msg::{
    BufferAck, CloseStream, Control, Message, Open, OpenFlags, SnapshotMarker, StreamEnd,
    StreamRequest, StreamRequestFlags, StreamRequestResponse, StreamRequestValue,
};
use dcp_proto::producer::{ConnectionId, Node, NodeConfig, ProducerError};

pub const BUCKET: &str = "default";
pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";

/// The default test config: one bucket, a user and an admin.
pub fn config(vbuckets: u16) -> NodeConfig {
    NodeConfig::new(BUCKET)
        .with_vbuckets(vbuckets)
        .with_user(USER, PASSWORD)
        .with_user("admin", "adminpw")
        .with_admin("admin")
        .with_scram_iterations(16)
        .with_seed(42)
}

/// The node and a virtual clock.
pub struct Harness {
    pub node: Node,
    pub now: Instant,
    opaque: u32,
}

/// One client connection.
pub struct Client {
    pub id: ConnectionId,
    decoder: FrameDecoder,
    rx: BytesMut,
}

impl Harness {
    pub fn new(config: NodeConfig) -> Self {
        let now = Instant::now();
        let mut node = Node::new(config);
        node.wall_clock(now);
        Self {
            node,
            now,
            opaque: 100,
        }
    }

    pub fn opaque(&mut self) -> u32 {
        self.opaque += 1;
        self.opaque
    }

    pub fn wall(&mut self) -> SystemTime {
        self.node.wall_clock(self.now)
    }

    /// Writes a document through the bucket API.
    pub fn set(&mut self, key: &str, value: &str) -> MutationInfo {
        let wall = self.wall();
        self.node
            .bucket_mut()
            .set(key.as_bytes(), value.to_owned(), WriteOptions::new(), wall)
            .unwrap()
    }

    pub fn delete(&mut self, key: &str) -> MutationInfo {
        let wall = self.wall();
        self.node
            .bucket_mut()
            .delete(key.as_bytes(), 0, wall)
            .unwrap()
    }

    pub fn connect(&mut self) -> Client {
        Client {
            id: self.node.accept(self.now),
            decoder: FrameDecoder::new(),
            rx: BytesMut::new(),
        }
    }

    /// Sends frames built by `encode`.
    pub fn send(
        &mut self,
        client: &Client,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), ProducerError> {
        let mut buf = BytesMut::new();
        encode(&mut buf).unwrap();
        self.node.handle_input(client.id, &mut buf, self.now)
    }

    /// Everything the node has for the client, with a large budget.
    pub fn recv(&mut self, client: &mut Client) -> Vec<Frame> {
        self.recv_budget(client, usize::MAX)
    }

    /// What one `poll_transmit(max_bytes)` gives.
    pub fn recv_budget(&mut self, client: &mut Client, max_bytes: usize) -> Vec<Frame> {
        let mut tx = BytesMut::new();
        self.node.poll_transmit(client.id, &mut tx, max_bytes);
        client.rx.extend_from_slice(&tx);
        let mut frames = Vec::new();
        while let Some(frame) = client.decoder.decode(&mut client.rx).unwrap() {
            frames.push(frame);
        }
        frames
    }

    /// Sends and returns the single response.
    pub fn request(
        &mut self,
        client: &mut Client,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Frame {
        self.send(client, encode).unwrap();
        let frames = self.recv(client);
        let responses: Vec<Frame> = frames.into_iter().filter(Frame::is_response).collect();
        assert_eq!(responses.len(), 1, "{responses:?}");
        responses.into_iter().next().unwrap()
    }

    /// Sends and returns the status of the single response.
    pub fn status(
        &mut self,
        client: &mut Client,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Status {
        self.request(client, encode).status()
    }

    /// HELLO with `features`, SASL PLAIN, SELECT_BUCKET; all must succeed.
    pub fn login_with(&mut self, client: &mut Client, features: &[HelloFeature]) {
        let o = self.opaque();
        let features = features.to_vec();
        assert!(
            self.status(client, |b| Hello {
                opaque: o,
                agent: Bytes::from_static(b"test"),
                features,
            }
            .encode(b))
                .is_success()
        );
        let o = self.opaque();
        assert_eq!(
            self.status(client, |b| SaslAuth::plain(
                o,
                USER.as_bytes(),
                PASSWORD.as_bytes()
            )
            .encode(b)),
            Status::Success
        );
        let o = self.opaque();
        assert_eq!(
            self.status(client, |b| SelectBucket::new(o, BUCKET).encode(b)),
            Status::Success
        );
    }

    pub fn login(&mut self, client: &mut Client) {
        self.login_with(client, &[HelloFeature::Xerror, HelloFeature::SelectBucket]);
    }

    pub fn open(&mut self, client: &mut Client, name: &str, flags: OpenFlags) -> Status {
        let o = self.opaque();
        let name = Bytes::copy_from_slice(name.as_bytes());
        self.status(client, |b| {
            Open {
                opaque: o,
                flags: OpenFlags::PRODUCER | flags,
                name,
                consumer_name: None,
            }
            .encode(b)
        })
    }

    pub fn control(&mut self, client: &mut Client, key: &str, value: &str) -> Status {
        let o = self.opaque();
        let (k, v) = (key.to_owned(), value.to_owned());
        self.status(client, |b| Control::new(o, k, v).encode(b))
    }

    /// A logged-in DCP connection named `name`.
    pub fn dcp_client(&mut self, name: &str, flags: OpenFlags) -> Client {
        let mut c = self.connect();
        self.login(&mut c);
        assert_eq!(self.open(&mut c, name, flags), Status::Success);
        c
    }

    /// Sends a stream request and returns the response frame (and any
    /// other queued responses or noops); stream messages are left for
    /// [`recv`](Self::recv).
    pub fn stream_req(&mut self, client: &mut Client, req: StreamRequest) -> (Frame, Vec<Frame>) {
        self.send(client, |b| req.encode(b)).unwrap();
        let mut frames = self.recv_budget(client, 0).into_iter();
        let response = frames.next().expect("a response");
        assert!(response.is_response());
        (response, frames.collect())
    }

    pub fn ack(&mut self, client: &Client, bytes: u32) {
        self.send(client, |b| {
            BufferAck {
                vbucket: 0,
                opaque: 0,
                bytes,
            }
            .encode(b)
        })
        .unwrap();
    }

    pub fn close_stream(&mut self, client: &mut Client, vb: u16) -> (Status, Vec<Frame>) {
        let o = self.opaque();
        self.send(client, |b| {
            CloseStream {
                vbucket: vb,
                opaque: o,
                stream_id: None,
            }
            .encode(b)
        })
        .unwrap();
        let mut frames = self.recv(client).into_iter();
        let response = frames.next().expect("a response");
        (response.status(), frames.collect())
    }

    /// Moves the clock and runs every connection's timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let ids: Vec<ConnectionId> = self.node.connections().collect();
        for id in ids {
            self.node.handle_timeout(id, self.now);
        }
    }
}

/// A stream request from `start` with no history.
pub fn req(vb: u16, opaque: u32) -> StreamRequest {
    StreamRequest {
        vbucket: vb,
        opaque,
        flags: StreamRequestFlags::empty(),
        start_seqno: 0,
        end_seqno: StreamRequest::NO_END,
        vbucket_uuid: 0,
        snap_start_seqno: 0,
        snap_end_seqno: 0,
        value: None,
    }
}

/// A resume request.
pub fn resume(vb: u16, opaque: u32, uuid: u64, start: u64, snap: (u64, u64)) -> StreamRequest {
    StreamRequest {
        start_seqno: start,
        vbucket_uuid: uuid,
        snap_start_seqno: snap.0,
        snap_end_seqno: snap.1,
        ..req(vb, opaque)
    }
}

pub fn with_value(mut r: StreamRequest, value: StreamRequestValue) -> StreamRequest {
    r.value = Some(value);
    r
}

pub fn decode(frame: &Frame) -> Message {
    Message::decode(frame).unwrap()
}

pub fn marker(frame: &Frame) -> SnapshotMarker {
    match decode(frame) {
        Message::SnapshotMarker(m) => m,
        other => panic!("expected a marker, got {other:?}"),
    }
}

pub fn stream_end(frame: &Frame) -> StreamEnd {
    match decode(frame) {
        Message::StreamEnd(m) => m,
        other => panic!("expected STREAM_END, got {other:?}"),
    }
}

pub fn response(frame: &Frame) -> StreamRequestResponse {
    StreamRequestResponse::decode(frame).unwrap()
}

/// A compact view of stream messages: ("M", seqno, key) / ("D", ...) /
/// markers as ("S", start, end) with flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Marker(u64, u64, u32),
    Mutation(u64, String),
    Deletion(u64, String),
    Expiration(u64, String),
    SeqnoAdvanced(u64),
    End(u32),
    Other(Opcode),
}

pub fn items(frames: &[Frame]) -> Vec<Item> {
    frames
        .iter()
        .map(|f| match decode(f) {
            Message::SnapshotMarker(m) => Item::Marker(m.start, m.end, m.flags.bits()),
            Message::Mutation(m) => {
                Item::Mutation(m.by_seqno, String::from_utf8_lossy(&m.key).into_owned())
            }
            Message::Deletion(m) => {
                Item::Deletion(m.by_seqno, String::from_utf8_lossy(&m.key).into_owned())
            }
            Message::Expiration(m) => {
                Item::Expiration(m.by_seqno, String::from_utf8_lossy(&m.key).into_owned())
            }
            Message::SeqnoAdvanced(m) => Item::SeqnoAdvanced(m.seqno),
            Message::StreamEnd(m) => Item::End(m.reason.raw()),
            _ => Item::Other(f.opcode()),
        })
        .collect()
}

pub const MEM: u32 = 0x01;
pub const DISK: u32 = 0x02;
pub const CHK: u32 = 0x04;
