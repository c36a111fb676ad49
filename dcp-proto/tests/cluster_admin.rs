//! Cluster-level admin commands over the wire: sent to any node of a
//! `LocalCluster`, held until the cluster carries them out, answered on
//! the requesting connection; refused on a lone node and for non-admins.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use dcp_proto::bucket::BucketConfig;
use dcp_proto::codec::{Frame, FrameDecoder, Status};
use dcp_proto::msg::client::{Hello, HelloFeature, SaslAuth};
use dcp_proto::producer::{AdminCommand, ConnectionId, LocalCluster, Node, NodeConfig, NodeId};

fn template() -> NodeConfig {
    NodeConfig::new("default")
        .with_bucket(BucketConfig::new("default").with_vbuckets(12))
        .with_user("app", "secret")
        .with_user("admin", "adminpw")
        .with_admin("admin")
}

/// Logs `user` in on a new connection (HELLO XERROR, SASL PLAIN).
fn login(node: &mut Node, now: Instant, user: &str, password: &str) -> ConnectionId {
    let id = node.accept(now);
    let mut rx = BytesMut::new();
    Hello {
        opaque: 1,
        agent: Bytes::from_static(b"admin-test"),
        features: vec![HelloFeature::Xerror, HelloFeature::Json],
    }
    .encode(&mut rx)
    .unwrap();
    SaslAuth::plain(2, user.as_bytes(), password.as_bytes())
        .encode(&mut rx)
        .unwrap();
    node.handle_input(id, &mut rx, now).unwrap();
    let frames = drain(node, id);
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.status() == Status::Success));
    id
}

fn drain(node: &mut Node, id: ConnectionId) -> Vec<Frame> {
    let mut tx = BytesMut::new();
    node.poll_transmit(id, &mut tx, usize::MAX);
    let mut decoder = FrameDecoder::new();
    std::iter::from_fn(|| decoder.decode(&mut tx).unwrap()).collect()
}

fn send(node: &mut Node, id: ConnectionId, command: &AdminCommand, opaque: u32, now: Instant) {
    let mut rx = BytesMut::new();
    command.encode(opaque, &mut rx).unwrap();
    node.handle_input(id, &mut rx, now).unwrap();
}

/// Sends `command` to node `via`, runs the cluster's admin requests and
/// returns the answer's status and JSON.
fn admin(
    cluster: &mut LocalCluster,
    via: NodeId,
    conn: ConnectionId,
    command: AdminCommand,
    now: Instant,
) -> (Status, serde_json::Value) {
    let node = cluster.node_mut(via).unwrap();
    send(node, conn, &command, 9, now);
    assert!(
        drain(node, conn).is_empty(),
        "no answer before the cluster ran it"
    );
    assert_eq!(cluster.run_admin_requests(), 1);
    let frames = drain(cluster.node_mut(via).unwrap(), conn);
    assert_eq!(frames.len(), 1, "{frames:?}");
    let frame = &frames[0];
    assert_eq!(frame.opaque(), 9);
    let value = serde_json::from_slice(frame.value_slice()).unwrap_or(serde_json::Value::Null);
    (frame.status(), value)
}

fn active_counts(map: &serde_json::Value) -> Vec<u64> {
    map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["active"].as_u64().unwrap())
        .collect()
}

#[test]
fn topology_changes_from_any_node() {
    let now = Instant::now();
    let mut cluster = LocalCluster::new(template(), 3, 1);
    let conn = login(
        cluster.node_mut(NodeId(0)).unwrap(),
        now,
        "admin",
        "adminpw",
    );
    let rev = cluster.rev();

    let (status, map) = admin(&mut cluster, NodeId(0), conn, AdminCommand::ClusterMap, now);
    assert_eq!(status, Status::Success);
    assert_eq!(map["rev"], rev);
    assert_eq!(active_counts(&map), [4, 4, 4]);

    let (status, map) = admin(
        &mut cluster,
        NodeId(0),
        conn,
        AdminCommand::Rebalance {
            moves: vec![(0, 2), (3, 2)],
        },
        now,
    );
    assert_eq!(status, Status::Success);
    assert_eq!(cluster.active_node(0), Some(NodeId(2)));
    assert_eq!(active_counts(&map), [2, 4, 6]);
    assert_eq!(map["rev"], rev + 1);

    let (status, map) = admin(&mut cluster, NodeId(0), conn, AdminCommand::AddNode, now);
    assert_eq!(status, Status::Success);
    assert_eq!(map["node"], 3);
    let (_, map) = admin(
        &mut cluster,
        NodeId(0),
        conn,
        AdminCommand::Rebalance { moves: vec![] },
        now,
    );
    assert_eq!(active_counts(&map), [3, 3, 3, 3]);

    let (status, map) = admin(
        &mut cluster,
        NodeId(0),
        conn,
        AdminCommand::RemoveNode { node: 3 },
        now,
    );
    assert_eq!(status, Status::Success);
    assert_eq!(map["nodes"][3]["state"], "removed");
    assert_eq!(active_counts(&map), [4, 4, 4, 0]);

    let before = cluster.active_vbucket(1).unwrap().high_seqno();
    let (status, map) = admin(
        &mut cluster,
        NodeId(0),
        conn,
        AdminCommand::FailoverNode {
            node: 1,
            lose_last: 0,
        },
        now,
    );
    assert_eq!(status, Status::Success);
    assert_eq!(map["promoted"], 4);
    assert_eq!(map["nodes"][1]["state"], "down");
    assert!(cluster.active_vbucket(1).unwrap().high_seqno() <= before);
    assert_eq!(cluster.rev(), rev + 5);
}

#[test]
fn failover_can_lose_the_tail() {
    let now = Instant::now();
    let mut cluster = LocalCluster::new(template(), 2, 1);
    for i in 0..60 {
        cluster.set(format!("k{i}").as_bytes(), "v", now).unwrap();
    }
    let conn = login(
        cluster.node_mut(NodeId(0)).unwrap(),
        now,
        "admin",
        "adminpw",
    );
    let on_one: Vec<u16> = (0..12)
        .filter(|vb| cluster.active_node(*vb) == Some(NodeId(1)))
        .collect();
    let highs: Vec<u64> = on_one
        .iter()
        .map(|vb| cluster.active_vbucket(*vb).unwrap().high_seqno())
        .collect();
    let (status, _) = admin(
        &mut cluster,
        NodeId(0),
        conn,
        AdminCommand::FailoverNode {
            node: 1,
            lose_last: 2,
        },
        now,
    );
    assert_eq!(status, Status::Success);
    for (vb, high) in on_one.iter().zip(highs) {
        let promoted = cluster.active_vbucket(*vb).unwrap();
        assert_eq!(cluster.active_node(*vb), Some(NodeId(0)));
        assert_eq!(promoted.high_seqno(), high.saturating_sub(2), "vb {vb}");
    }
}

#[test]
fn errors_and_refusals() {
    let now = Instant::now();
    let mut cluster = LocalCluster::new(template(), 2, 1);
    let conn = login(
        cluster.node_mut(NodeId(1)).unwrap(),
        now,
        "admin",
        "adminpw",
    );
    let (status, body) = admin(
        &mut cluster,
        NodeId(1),
        conn,
        AdminCommand::RemoveNode { node: 7 },
        now,
    );
    assert_eq!(status, Status::Einval);
    assert!(
        body["error"]["context"]
            .as_str()
            .unwrap()
            .contains("not a member"),
        "{body}"
    );
    // Not an admin: refused at once.
    let app = login(cluster.node_mut(NodeId(1)).unwrap(), now, "app", "secret");
    let node = cluster.node_mut(NodeId(1)).unwrap();
    send(node, app, &AdminCommand::AddNode, 4, now);
    let frames = drain(node, app);
    assert_eq!(frames[0].status(), Status::Eaccess);
    assert_eq!(cluster.run_admin_requests(), 0);
    assert_eq!(cluster.node_ids().count(), 2);

    // A lone node has no cluster.
    let mut lone = Node::new(template());
    let conn = login(&mut lone, now, "admin", "adminpw");
    send(
        &mut lone,
        conn,
        &AdminCommand::Rebalance { moves: vec![] },
        5,
        now,
    );
    let frames = drain(&mut lone, conn);
    assert_eq!(frames[0].status(), Status::Einval);
    assert!(lone.take_admin_requests().is_empty());
}

#[test]
fn a_connection_gone_before_the_answer_is_skipped() {
    let now = Instant::now();
    let mut cluster = LocalCluster::new(template(), 2, 1);
    let conn = login(
        cluster.node_mut(NodeId(0)).unwrap(),
        now,
        "admin",
        "adminpw",
    );
    let node = cluster.node_mut(NodeId(0)).unwrap();
    send(node, conn, &AdminCommand::ClusterMap, 3, now);
    node.remove(conn);
    assert_eq!(cluster.run_admin_requests(), 1);
}

/// A collections change sent to any node applies to every node: the same
/// manifest (uid, ids) everywhere, the system events in every vbucket's
/// active copy and its replicas, a node added later knowing it; a refused
/// change touches no node.
#[test]
fn manifest_changes_apply_to_every_node() {
    let now = Instant::now();
    let mut cluster = LocalCluster::new(template(), 3, 1);
    let conn = login(
        cluster.node_mut(NodeId(1)).unwrap(),
        now,
        "admin",
        "adminpw",
    );
    let highs = |cluster: &LocalCluster| -> Vec<u64> {
        (0..12)
            .map(|vb| cluster.active_vbucket(vb).unwrap().high_seqno())
            .collect()
    };
    let before = highs(&cluster);
    for command in [
        AdminCommand::CreateScope {
            scope: "inventory".to_owned(),
        },
        AdminCommand::CreateCollection {
            scope: "inventory".to_owned(),
            collection: "hotels".to_owned(),
            max_ttl: Some(60),
        },
    ] {
        let (status, answer) = admin(&mut cluster, NodeId(1), conn, command, now);
        assert_eq!(status, Status::Success, "{answer}");
    }
    // Two system events in every vbucket, wherever it is active.
    let after = highs(&cluster);
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b == 2),
        "{after:?}"
    );
    let manifest = cluster.node(NodeId(0)).unwrap().bucket().manifest().clone();
    assert_eq!(manifest.uid(), 2);
    for id in [1, 2] {
        assert_eq!(
            cluster.node(NodeId(id)).unwrap().bucket().manifest(),
            &manifest,
            "node {id}"
        );
    }
    // Replicas hold the same events as their active copies.
    for vb in 0..12u16 {
        let active = cluster.active_vbucket(vb).unwrap().high_seqno();
        for replica in cluster.replica_nodes(vb) {
            let copy = cluster
                .node(*replica)
                .unwrap()
                .bucket()
                .vbucket(vb)
                .unwrap();
            assert_eq!(copy.high_seqno(), active, "vb {vb} on {replica:?}");
        }
    }
    // A refused change (a duplicate) changes nothing anywhere.
    let (status, _) = admin(
        &mut cluster,
        NodeId(1),
        conn,
        AdminCommand::CreateScope {
            scope: "inventory".to_owned(),
        },
        now,
    );
    assert_ne!(status, Status::Success);
    assert_eq!(highs(&cluster), after);
    // A node added later knows the collections.
    let (status, map) = admin(&mut cluster, NodeId(1), conn, AdminCommand::AddNode, now);
    assert_eq!(status, Status::Success);
    assert_eq!(map["node"], 3);
    assert_eq!(
        cluster.node(NodeId(3)).unwrap().bucket().manifest(),
        &manifest
    );
}
