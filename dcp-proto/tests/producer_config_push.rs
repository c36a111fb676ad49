//! The node's side of cluster-map change notifications and of
//! NOT_MY_VBUCKET bodies: HELLO rules (Duplex needed, brief wins), pushes to
//! the connections that asked (full or brief, once per revision, only with
//! a bucket selected), the config in NOT_MY_VBUCKET replies to stream
//! requests and its deduplication.

mod producer_harness;

use bytes::Bytes;
use dcp_proto::bucket::BucketConfig;
use dcp_proto::cluster::ClusterConfig;
use dcp_proto::codec::{Datatype, Frame, Magic, Status};
use dcp_proto::msg::client::{
    ClustermapNotification, GetClusterConfig, GetClusterConfigResponse, Hello, HelloFeature,
    HelloResponse, KnownVersion,
};
use dcp_proto::msg::{OpenFlags, VbucketState};
use dcp_proto::producer::{LocalCluster, NodeConfig, NodeId};
use producer_harness::*;

fn hello(h: &mut Harness, c: &mut Client, features: &[HelloFeature]) -> HelloResponse {
    let o = h.opaque();
    let features = features.to_vec();
    let frame = h.request(c, |b| {
        Hello {
            opaque: o,
            agent: Bytes::from_static(b"test"),
            features,
        }
        .encode(b)
    });
    HelloResponse::decode(&frame).unwrap()
}

fn base() -> Vec<HelloFeature> {
    vec![HelloFeature::Xerror, HelloFeature::SelectBucket]
}

fn with(extra: &[HelloFeature]) -> Vec<HelloFeature> {
    let mut features = base();
    features.extend_from_slice(extra);
    features
}

fn notifications(frames: &[Frame]) -> Vec<ClustermapNotification> {
    frames
        .iter()
        .filter(|f| f.magic() == Magic::ServerRequest)
        .map(|f| ClustermapNotification::decode(f).unwrap())
        .collect()
}

#[test]
fn hello_needs_duplex_and_brief_wins() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    let alone = hello(
        &mut h,
        &mut c,
        &with(&[HelloFeature::ClustermapChangeNotification]),
    );
    assert_eq!(alone.status, Status::Einval);
    let alone = hello(
        &mut h,
        &mut c,
        &with(&[HelloFeature::ClustermapChangeNotificationBrief]),
    );
    assert_eq!(alone.status, Status::Einval);

    let full = hello(
        &mut h,
        &mut c,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
    );
    assert!(full.has(HelloFeature::Duplex));
    assert!(full.has(HelloFeature::ClustermapChangeNotification));

    let both = hello(
        &mut h,
        &mut c,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
            HelloFeature::ClustermapChangeNotificationBrief,
            HelloFeature::DedupeNotMyVbucketClustermap,
        ]),
    );
    assert!(both.has(HelloFeature::ClustermapChangeNotificationBrief));
    assert!(!both.has(HelloFeature::ClustermapChangeNotification));
    assert!(both.has(HelloFeature::DedupeNotMyVbucketClustermap));
}

#[test]
fn new_configs_are_pushed_to_the_connections_that_asked() {
    let mut h = Harness::new(config(4));
    let mut full = h.connect();
    h.login_with(
        &mut full,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
    );
    let mut brief = h.connect();
    h.login_with(
        &mut brief,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotificationBrief,
        ]),
    );
    let mut plain = h.connect();
    h.login(&mut plain);
    // Duplex alone asks for nothing.
    let mut duplex = h.connect();
    h.login_with(&mut duplex, &with(&[HelloFeature::Duplex]));
    // Notifications asked, but no bucket selected yet.
    let mut unselected = h.connect();
    hello(
        &mut h,
        &mut unselected,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
    );

    h.node.set_cluster_config(5, br#"{"rev":5}"#.to_vec());
    let version = KnownVersion {
        epoch: 1,
        revision: 5,
    };
    let got = notifications(&h.recv(&mut full));
    assert_eq!(
        got,
        [ClustermapNotification::full(
            version,
            Bytes::from_static(BUCKET.as_bytes()),
            Bytes::from_static(br#"{"rev":5}"#)
        )]
    );
    assert_eq!(got[0].datatype, Datatype::JSON);
    assert_eq!(
        notifications(&h.recv(&mut brief)),
        [ClustermapNotification::brief(version)]
    );
    assert!(h.recv(&mut plain).is_empty());
    assert!(h.recv(&mut duplex).is_empty());
    assert!(h.recv(&mut unselected).is_empty());

    // The same or an older revision is not pushed again.
    h.node.set_cluster_config(5, br#"{"rev":5}"#.to_vec());
    h.node.set_cluster_config(4, br#"{"rev":4}"#.to_vec());
    assert!(h.recv(&mut full).is_empty());
    assert!(h.recv(&mut brief).is_empty());
    assert_eq!(h.node.push_cluster_config(), 0);

    // A newer one is.
    h.node.set_cluster_config(6, br#"{"rev":6}"#.to_vec());
    assert_eq!(notifications(&h.recv(&mut full)).len(), 1);
    assert_eq!(notifications(&h.recv(&mut brief)).len(), 1);
}

#[test]
fn a_fetched_config_is_not_pushed_again() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
    );
    // Set while the connection exists: pushed.
    h.node.set_cluster_config(3, br#"{"rev":3}"#.to_vec());
    assert_eq!(notifications(&h.recv(&mut c)).len(), 1);
    // A new connection fetches rev 3 itself, then gets only newer pushes.
    let mut late = h.connect();
    h.login_with(
        &mut late,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
    );
    let o = h.opaque();
    let answer = h.request(&mut late, |b| {
        GetClusterConfig {
            opaque: o,
            known: None,
        }
        .encode(b)
    });
    assert_eq!(
        GetClusterConfigResponse::decode(&answer).unwrap().config,
        Bytes::from_static(br#"{"rev":3}"#)
    );
    assert_eq!(h.node.push_cluster_config(), 0);
}

/// Makes vbucket 0 dead on the node and sends a stream request for it.
fn refused(h: &mut Harness, c: &mut Client) -> (Status, Bytes) {
    let o = h.opaque();
    let (response, _) = h.stream_req(c, req(0, o));
    let response = response_of(&response);
    (response.0, response.1)
}

fn response_of(frame: &Frame) -> (Status, Bytes) {
    (frame.status(), frame.value())
}

#[test]
fn not_my_vbucket_carries_the_config_in_force() {
    let mut h = Harness::new(config(4));
    h.node.set_vbucket_state(0, VbucketState::Dead).unwrap();
    let mut c = h.dcp_client("nmvb", OpenFlags::empty());
    let (status, body) = refused(&mut h, &mut c);
    assert_eq!(status, Status::NotMyVbucket);
    // The node's own config: vbucket 0 has no owner here.
    let config = ClusterConfig::parse(&body, "127.0.0.1").unwrap();
    assert!(config.active_node(0).is_none());
    assert!(config.active_node(1).is_some());

    // A shared cluster config replaces the node's own.
    h.node
        .set_cluster_config(9, br#"{"rev":9,"revEpoch":1}"#.to_vec());
    let (_, body) = refused(&mut h, &mut c);
    assert_eq!(body, Bytes::from_static(br#"{"rev":9,"revEpoch":1}"#));
    // Without dedupe, every refusal carries it.
    let (_, body) = refused(&mut h, &mut c);
    assert!(!body.is_empty());
}

#[test]
fn dedupe_omits_a_config_the_connection_already_has() {
    let mut h = Harness::new(config(4));
    h.node.set_vbucket_state(0, VbucketState::Dead).unwrap();
    h.node
        .set_cluster_config(9, br#"{"rev":9,"revEpoch":1}"#.to_vec());
    let mut c = h.connect();
    h.login_with(&mut c, &with(&[HelloFeature::DedupeNotMyVbucketClustermap]));
    let o = h.opaque();
    let status = h.status(&mut c, |b| {
        dcp_proto::msg::Open {
            opaque: o,
            flags: OpenFlags::PRODUCER,
            name: Bytes::from_static(b"dedupe"),
            consumer_name: None,
        }
        .encode(b)
    });
    assert_eq!(status, Status::Success);
    // First refusal: the body, once.
    let (status, body) = refused(&mut h, &mut c);
    assert_eq!(status, Status::NotMyVbucket);
    assert!(!body.is_empty());
    let (status, body) = refused(&mut h, &mut c);
    assert_eq!(status, Status::NotMyVbucket);
    assert!(body.is_empty(), "already sent on this connection");
    // A newer config is sent again.
    h.node
        .set_cluster_config(10, br#"{"rev":10,"revEpoch":1}"#.to_vec());
    let (_, body) = refused(&mut h, &mut c);
    assert_eq!(body, Bytes::from_static(br#"{"rev":10,"revEpoch":1}"#));
}

#[test]
fn a_local_cluster_pushes_every_topology_change_from_every_node() {
    let template = NodeConfig::new(BUCKET)
        .with_bucket(BucketConfig::new(BUCKET).with_vbuckets(8))
        .with_user(USER, PASSWORD);
    let mut cluster = LocalCluster::new(template, 3, 1);
    // One pushed-to connection per node.
    let now = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..3 {
        let node = cluster.node_mut(NodeId(i)).unwrap();
        let id = node.accept(now);
        let mut rx = bytes::BytesMut::new();
        Hello {
            opaque: 1,
            agent: Bytes::from_static(b"test"),
            features: with(&[
                HelloFeature::Duplex,
                HelloFeature::ClustermapChangeNotification,
            ]),
        }
        .encode(&mut rx)
        .unwrap();
        dcp_proto::msg::client::SaslAuth::plain(2, USER.as_bytes(), PASSWORD.as_bytes())
            .encode(&mut rx)
            .unwrap();
        dcp_proto::msg::client::SelectBucket::new(3, BUCKET)
            .encode(&mut rx)
            .unwrap();
        node.handle_input(id, &mut rx, now).unwrap();
        let mut tx = bytes::BytesMut::new();
        node.poll_transmit(id, &mut tx, usize::MAX);
        let mut decoder = dcp_proto::codec::FrameDecoder::new();
        let mut statuses = Vec::new();
        while let Some(frame) = decoder.decode(&mut tx).unwrap() {
            statuses.push(frame.status());
        }
        assert_eq!(statuses, [Status::Success; 3]);
        clients.push(id);
    }
    let drain = |cluster: &mut LocalCluster, clients: &mut Vec<_>| -> Vec<Vec<i64>> {
        clients
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let node = cluster.node_mut(NodeId(i)).unwrap();
                let mut tx = bytes::BytesMut::new();
                node.poll_transmit(*id, &mut tx, usize::MAX);
                let mut decoder = dcp_proto::codec::FrameDecoder::new();
                let mut revs = Vec::new();
                while let Some(frame) = decoder.decode(&mut tx).unwrap() {
                    if frame.magic() == Magic::ServerRequest {
                        let n = ClustermapNotification::decode(&frame).unwrap();
                        let config = ClusterConfig::parse(&n.config, "127.0.0.1").unwrap();
                        assert_eq!(config.version().rev, n.version.revision);
                        revs.push(n.version.revision);
                    }
                }
                revs
            })
            .collect()
    };
    let rev = cluster.rev();
    cluster.rebalance(&[(0, NodeId(2))]).unwrap();
    assert_eq!(drain(&mut cluster, &mut clients), vec![vec![rev + 1]; 3]);
    cluster.hold_config(true);
    cluster.rebalance(&[(1, NodeId(0))]).unwrap();
    assert_eq!(
        drain(&mut cluster, &mut clients),
        vec![Vec::<i64>::new(); 3],
        "a held config is not pushed"
    );
    cluster.hold_config(false);
    assert_eq!(drain(&mut cluster, &mut clients), vec![vec![rev + 2]; 3]);
    cluster.add_node().unwrap();
    assert_eq!(drain(&mut cluster, &mut clients), vec![vec![rev + 3]; 3]);
    cluster.failover(NodeId(1)).unwrap();
    let after = drain(&mut cluster, &mut clients);
    assert_eq!(after[0], vec![rev + 4]);
    assert!(after[1].is_empty(), "the failed node's connections dropped");
    assert_eq!(after[2], vec![rev + 4]);
}

#[test]
fn a_client_answering_a_notification_is_ignored() {
    let mut h = Harness::new(config(4));
    let mut c = h.dcp_client("answers", OpenFlags::empty());
    let mut head = dcp_proto::codec::FrameHead::response(
        dcp_proto::codec::Opcode::from_raw(1),
        Status::Success,
        0,
    );
    head.magic = Magic::ServerResponse;
    h.send(&c, |b| head.encode(b, &[], &[], &[], &[])).unwrap();
    assert!(h.recv(&mut c).is_empty());
    assert!(!h.node.is_closed(c.id));
}

#[test]
fn a_lone_node_pushes_its_own_config_when_a_vbucket_changes_state() {
    let mut h = Harness::new(config(4));
    let mut c = h.connect();
    h.login_with(
        &mut c,
        &with(&[
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
    );
    h.node.set_vbucket_state(2, VbucketState::Dead).unwrap();
    let pushed = notifications(&h.recv(&mut c));
    assert_eq!(pushed.len(), 1);
    let config = ClusterConfig::parse(&pushed[0].config, "127.0.0.1").unwrap();
    assert_eq!(config.version().rev, pushed[0].version.revision);
    assert!(config.active_node(2).is_none());
    assert!(config.active_node(1).is_some());
    // The same revision is what GET_CLUSTER_CONFIG now serves.
    let o = h.opaque();
    let answer = h.request(&mut c, |b| {
        GetClusterConfig {
            opaque: o,
            known: None,
        }
        .encode(b)
    });
    let served = GetClusterConfigResponse::decode(&answer).unwrap().config;
    assert_eq!(
        ClusterConfig::parse(&served, "127.0.0.1")
            .unwrap()
            .version(),
        config.version()
    );
    h.node.set_vbucket_state(2, VbucketState::Active).unwrap();
    assert_eq!(notifications(&h.recv(&mut c)).len(), 1);
}
