//! The consumer against a scripted node that pushes cluster-map change
//! notifications (server requests, magic 0x82): what HELLO asks for, full
//! pushes turned into `Event::ClusterConfig` (older ones dropped), brief
//! pushes turned into GET_CLUSTER_CONFIG when newer, unknown server
//! requests ignored, and nothing ever answered.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, FrameDecoder, FrameHead, Magic, Opcode, Status};
use dcp_proto::consumer::{ConfigPush, Consumer, ConsumerConfig, Event, StreamStart};
use dcp_proto::msg::client::{
    ClustermapNotification, GetClusterConfigResponse, HelloFeature, HelloResponse, KnownVersion,
};
use dcp_proto::msg::{
    FailoverEntry, FailoverLog, MarkerFormat, Message, Mutation, SnapshotFlags, SnapshotMarker,
    StatusResponse, StreamRequestResponse,
};

struct Script {
    consumer: Consumer,
    now: Instant,
    decoder: FrameDecoder,
    tx: BytesMut,
}

impl Script {
    fn new(config: ConsumerConfig) -> Self {
        let now = Instant::now();
        Self {
            consumer: Consumer::new(config, "clientnonce0123456789", now).unwrap(),
            now,
            decoder: FrameDecoder::new(),
            tx: BytesMut::new(),
        }
    }

    fn sent(&mut self) -> Vec<Message> {
        self.consumer.poll_transmit(&mut self.tx);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.decode(&mut self.tx).unwrap() {
            out.push(Message::decode(&frame).unwrap());
        }
        out
    }

    fn one(&mut self) -> Message {
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1, "expected one request, got {sent:#?}");
        sent.remove(0)
    }

    fn feed_bytes(&mut self, mut rx: BytesMut) {
        self.consumer.handle_input(&mut rx, self.now).unwrap();
    }

    fn feed(&mut self, message: impl Into<Message>) {
        let mut rx = BytesMut::new();
        message.into().encode(&mut rx).unwrap();
        self.feed_bytes(rx);
    }

    fn push(&mut self, notification: &ClustermapNotification) {
        let mut rx = BytesMut::new();
        notification.encode(&mut rx).unwrap();
        self.feed_bytes(rx);
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.consumer.poll_event()).collect()
    }

    /// Answers HELLO with `granted` (None: everything asked), then accepts
    /// the rest of the handshake; returns the features asked for.
    fn handshake(&mut self, granted: Option<Vec<HelloFeature>>) -> Vec<HelloFeature> {
        let Message::Hello(hello) = self.one() else {
            panic!("HELLO first")
        };
        let granted = granted.unwrap_or_else(|| hello.features.clone());
        self.feed(HelloResponse::success(hello.opaque, granted));
        loop {
            let (opcode, opaque) = match self.one() {
                Message::SelectBucket(m) => (Opcode::SelectBucket, m.opaque),
                Message::Open(m) => (Opcode::DcpOpen, m.opaque),
                Message::Control(m) => (Opcode::DcpControl, m.opaque),
                other => panic!("unexpected {other:?}"),
            };
            self.feed(StatusResponse::success(opcode, opaque));
            if self.consumer.is_ready() {
                break;
            }
        }
        let events = self.events();
        assert!(matches!(events[..], [Event::Ready(_)]), "{events:?}");
        hello.features
    }
}

fn version(revision: i64) -> KnownVersion {
    KnownVersion { epoch: 1, revision }
}

fn config_json(revision: i64) -> Bytes {
    Bytes::from(format!(
        r#"{{"rev":{revision},"revEpoch":1,"name":"default"}}"#
    ))
}

fn full(revision: i64) -> ClustermapNotification {
    ClustermapNotification::full(
        version(revision),
        Bytes::from_static(b"default"),
        config_json(revision),
    )
}

fn push_config(push: ConfigPush) -> ConsumerConfig {
    ConsumerConfig::new("push:1", "default").with_config_push(push)
}

#[test]
fn hello_asks_for_duplex_and_the_chosen_form() {
    let asked = |config: ConsumerConfig| {
        let mut s = Script::new(config);
        s.handshake(None)
    };
    let off = asked(ConsumerConfig::new("push:1", "default"));
    assert!(!off.contains(&HelloFeature::Duplex));
    assert!(!off.contains(&HelloFeature::ClustermapChangeNotification));
    assert!(!off.contains(&HelloFeature::DedupeNotMyVbucketClustermap));

    let full = asked(push_config(ConfigPush::Full));
    assert!(full.contains(&HelloFeature::Duplex));
    assert!(full.contains(&HelloFeature::ClustermapChangeNotification));
    assert!(!full.contains(&HelloFeature::ClustermapChangeNotificationBrief));

    let brief = asked(push_config(ConfigPush::Brief).with_dedupe_not_my_vbucket(true));
    assert!(brief.contains(&HelloFeature::Duplex));
    assert!(brief.contains(&HelloFeature::ClustermapChangeNotificationBrief));
    assert!(brief.contains(&HelloFeature::DedupeNotMyVbucketClustermap));
}

#[test]
fn negotiated_reports_what_the_node_granted() {
    let mut s = Script::new(push_config(ConfigPush::Brief).with_dedupe_not_my_vbucket(true));
    s.handshake(None);
    let negotiated = s.consumer.negotiated().unwrap();
    assert_eq!(negotiated.config_push, ConfigPush::Brief);
    assert!(negotiated.dedupe_not_my_vbucket);

    // An older node: no Duplex, so no push whatever else it echoes.
    let mut s = Script::new(push_config(ConfigPush::Full));
    s.handshake(Some(vec![
        HelloFeature::Xerror,
        HelloFeature::ClustermapChangeNotification,
    ]));
    assert_eq!(
        s.consumer.negotiated().unwrap().config_push,
        ConfigPush::Off
    );
}

#[test]
fn full_pushes_become_cluster_config_events_and_older_ones_are_dropped() {
    let mut s = Script::new(push_config(ConfigPush::Full));
    s.handshake(None);
    s.push(&full(5));
    assert_eq!(
        s.events(),
        [Event::ClusterConfig {
            status: Status::Success,
            config: config_json(5)
        }]
    );
    assert_eq!(s.consumer.config_version_seen(), Some(version(5)));
    // Repeated and older revisions are not passed on.
    s.push(&full(5));
    s.push(&full(4));
    assert!(s.events().is_empty());
    // A new epoch wins over any revision of the old one.
    let next_epoch = ClustermapNotification::full(
        KnownVersion {
            epoch: 2,
            revision: 1,
        },
        Bytes::from_static(b"default"),
        config_json(1),
    );
    s.push(&next_epoch);
    assert_eq!(s.events().len(), 1);
    // Never answered: the server expects no response.
    assert!(s.sent().is_empty());
    assert_eq!(s.consumer.stats().config_notifications, 4);
}

#[test]
fn a_push_in_the_middle_of_a_stream_changes_nothing_else() {
    let mut s = Script::new(push_config(ConfigPush::Full).with_auto_ack(true));
    s.handshake(None);
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let Message::StreamRequest(req) = s.one() else {
        panic!("STREAM_REQ")
    };
    let log = FailoverLog::new(vec![FailoverEntry {
        vbucket_uuid: 0xfeed,
        seqno: 0,
    }]);
    s.feed(StreamRequestResponse::accepted(req.opaque, log));
    s.feed(SnapshotMarker {
        vbucket: 0,
        opaque: req.opaque,
        stream_id: None,
        start: 1,
        end: 2,
        flags: SnapshotFlags::MEMORY,
        format: MarkerFormat::V1,
    });
    s.push(&full(9));
    s.feed(Mutation {
        vbucket: 0,
        opaque: req.opaque,
        stream_id: None,
        cas: 1,
        datatype: Datatype::JSON,
        by_seqno: 1,
        rev_seqno: 1,
        flags: 0,
        expiration: 0,
        lock_time: 0,
        nru: 0,
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"{}"),
    });
    let events = s.events();
    assert!(
        matches!(events[0], Event::StreamOpened { .. }),
        "{events:?}"
    );
    assert!(matches!(events[1], Event::SnapshotMarker(..)), "{events:?}");
    assert!(
        matches!(events[2], Event::ClusterConfig { .. }),
        "{events:?}"
    );
    assert!(matches!(events[3], Event::Mutation(..)), "{events:?}");
    assert_eq!(s.consumer.position(0).unwrap().last_seqno, 1);
}

#[test]
fn brief_pushes_fetch_the_config_when_newer() {
    let mut s = Script::new(push_config(ConfigPush::Brief));
    s.handshake(None);
    s.push(&ClustermapNotification::brief(version(3)));
    assert!(s.events().is_empty(), "nothing until the config is fetched");
    let Message::GetClusterConfig(get) = s.one() else {
        panic!("GET_CLUSTER_CONFIG")
    };
    // A second announcement of the same or an older version while the
    // fetch is under way asks for nothing more.
    s.push(&ClustermapNotification::brief(version(3)));
    s.push(&ClustermapNotification::brief(version(2)));
    assert!(s.sent().is_empty());
    s.feed(GetClusterConfigResponse {
        status: Status::Success,
        opaque: get.opaque,
        datatype: Datatype::JSON,
        config: config_json(3),
    });
    assert_eq!(
        s.events(),
        [Event::ClusterConfig {
            status: Status::Success,
            config: config_json(3)
        }]
    );
    assert_eq!(s.consumer.config_version_seen(), Some(version(3)));
    // Already seen: no fetch.
    s.push(&ClustermapNotification::brief(version(3)));
    assert!(s.sent().is_empty());
    // Newer: fetched.
    s.push(&ClustermapNotification::brief(version(4)));
    assert!(matches!(s.one(), Message::GetClusterConfig(_)));
}

#[test]
fn a_full_push_after_a_brief_one_is_used_at_once() {
    let mut s = Script::new(push_config(ConfigPush::Brief));
    s.handshake(None);
    s.push(&ClustermapNotification::brief(version(3)));
    let Message::GetClusterConfig(get) = s.one() else {
        panic!("GET_CLUSTER_CONFIG")
    };
    s.push(&full(4));
    assert_eq!(s.events().len(), 1);
    // The late answer for revision 3 still reaches the caller (the
    // orchestrator ignores it as older).
    s.feed(GetClusterConfigResponse {
        status: Status::Success,
        opaque: get.opaque,
        datatype: Datatype::JSON,
        config: config_json(3),
    });
    assert_eq!(s.events().len(), 1);
    assert_eq!(s.consumer.config_version_seen(), Some(version(4)));
}

#[test]
fn unknown_and_malformed_server_requests_are_ignored() {
    let mut s = Script::new(push_config(ConfigPush::Full));
    s.handshake(None);
    let mut rx = BytesMut::new();
    for opcode in [0x02u8, 0x03, 0x7f] {
        let mut head = FrameHead::request(Opcode::from_raw(opcode), 0, 77);
        head.magic = Magic::ServerRequest;
        head.encode(&mut rx, &[], &[1, 2, 3], b"key", b"value")
            .unwrap();
    }
    // A notification with a bad extras length.
    let mut head = FrameHead::request(Opcode::from_raw(1), 0, 0);
    head.magic = Magic::ServerRequest;
    head.encode(&mut rx, &[], &[0; 3], b"default", b"{}")
        .unwrap();
    s.feed_bytes(rx);
    assert!(s.events().is_empty());
    assert!(s.sent().is_empty(), "server requests are never answered");
    assert!(!s.consumer.is_closed());
    assert_eq!(s.consumer.stats().server_requests_ignored, 4);
    // The connection still works.
    s.push(&full(2));
    assert_eq!(s.events().len(), 1);
}

#[test]
fn a_push_during_the_handshake_is_kept() {
    let mut s = Script::new(push_config(ConfigPush::Full));
    let Message::Hello(hello) = s.one() else {
        panic!("HELLO first")
    };
    s.feed(HelloResponse::success(hello.opaque, hello.features.clone()));
    // The node pushes right after HELLO, before SELECT_BUCKET is answered.
    s.push(&full(6));
    assert!(!s.consumer.is_closed());
    let events = s.events();
    assert!(
        matches!(&events[..], [Event::ClusterConfig { .. }]),
        "{events:?}"
    );
}
