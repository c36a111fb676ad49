//! The sans-IO [`ClusterClient`] against a [`LocalCluster`], in memory, on
//! a virtual clock: this test is the socket adapter (it only opens
//! "sockets" when asked and moves bytes and time). Bootstrap from seeds,
//! stream while writing, rebalance, fail over, drop connections, start
//! "now", stop taking events; after each step the application's view
//! equals the bucket, and `MaterializedView` refuses any replay a stale
//! event would cause.

mod cluster_net;

use std::collections::BTreeMap;

use dcp_proto::cluster::{
    BootstrapError, InitialStart, LinkId, NodeStatus, OrchestratorConfig, Output,
};
use dcp_proto::consumer::Event;
use dcp_proto::producer::NodeId;

use cluster_net::*;

#[test]
fn bootstraps_from_a_seed_and_streams_a_three_node_cluster() {
    let net = Net::streaming(3);
    assert!(net.view.rollbacks.is_empty());
    assert_eq!(net.client.connected_nodes().len(), 3);
    assert!(net.view.changes >= 89);
    // The seed's config fetch connection came and went before the three
    // node connections.
    let seed = net.port(NodeId(0));
    let seed_links = net.connects_to(seed);
    assert_eq!(seed_links.len(), 2, "the config fetch, then the node");
    assert!(net.outputs.contains(&Output::Disconnect {
        link: seed_links[0]
    }));
    assert_eq!(net.sockets.len(), 3, "the config fetch socket is closed");
    assert!(!net.client.is_finished() && !net.client.bootstrap_failed());
}

#[test]
fn a_seed_that_refuses_is_skipped() {
    let cluster = cluster(2);
    let good = cluster.node(NodeId(1)).unwrap().config().kv_port;
    let seeds = format!("couchbase://{HOST}:1,{HOST}:{good}");
    let mut net = Net::with_seeds(cluster, &seeds, OrchestratorConfig::new());
    net.write(40);
    net.settle();
    assert_eq!(net.connects_to(1).len(), 1);
    assert!(net.client.config().is_some());
}

#[test]
fn bootstrap_fails_when_no_seed_answers() {
    let mut net = Net::with_seeds(
        cluster(1),
        &format!("couchbase://{HOST}:1,{HOST}:2"),
        OrchestratorConfig::new(),
    );
    net.run();
    assert_eq!(net.connects_to(1).len() + net.connects_to(2).len(), 2);
    assert!(net.client.bootstrap_failed());
    match net.client.take_bootstrap_error() {
        Some(BootstrapError::Unreachable { seed }) => assert_eq!(seed.port(), 2),
        other => panic!("unexpected {other:?}"),
    }
    assert!(net.client.is_finished());
    assert_eq!(net.client.poll_timeout(), None, "nothing more to do");
}

#[test]
fn a_seed_that_never_answers_times_out_and_the_next_is_tried() {
    let cluster = cluster(1);
    let good = cluster.node(NodeId(0)).unwrap().config().kv_port;
    let seeds = format!("couchbase://{HOST}:3,{HOST}:{good}");
    let mut net = Net::with_seeds(cluster, &seeds, OrchestratorConfig::new());
    net.black_holes.insert(3);
    net.run();
    assert!(net.client.config().is_none());
    let hole = net.connects_to(3)[0];
    assert!(net.client.poll_timeout().is_some(), "the connect deadline");
    net.settle();
    assert!(net.outputs.contains(&Output::Disconnect { link: hole }));
    assert!(net.client.config().is_some());
}

#[test]
fn rebalance_moves_streams_without_replays_or_rollbacks() {
    let mut net = Net::streaming(3);
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .step_by(2)
        .map(|vb| {
            let owner = net.cluster.active_node(vb).unwrap();
            (vb, NodeId((owner.0 + 1) % 3))
        })
        .collect();
    net.cluster.rebalance(&moves).unwrap();
    net.write(30);
    net.settle();
    net.stream_while_writing(4);
    for (vb, to) in moves {
        assert_eq!(net.cluster.active_node(vb), Some(to));
        let consumer = net.client.node_consumer(&net.address(to)).unwrap();
        assert!(
            consumer.has_stream(vb),
            "vb {vb} streams from its new owner"
        );
    }
    assert!(net.view.rollbacks.is_empty(), "{:?}", net.view.rollbacks);
    assert_eq!(net.client.stats().reconnects, 0);
}

#[test]
fn failover_reconnects_elsewhere_and_the_lost_node_is_dropped() {
    let mut net = Net::streaming(3);
    let lost = net.address(NodeId(2));
    net.cluster.failover(NodeId(2)).unwrap();
    net.write(40);
    net.settle();
    net.stream_while_writing(3);
    assert!(!net.client.connected_nodes().contains(&lost));
    assert_eq!(net.client.orchestrator().node_status(&lost), None);
    let stats = net.client.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.streams_open, usize::from(VBUCKETS));
}

#[test]
fn dropped_connections_are_reconnected_and_counted() {
    let mut net = Net::streaming(2);
    let before = net.client.stats();
    assert_eq!(before.reconnects, 0);
    net.cluster.drop_connections(NodeId(1)).unwrap();
    net.write(30);
    net.settle();
    net.stream_while_writing(3);
    let after = net.client.stats();
    assert_eq!(after.reconnects, 1);
    assert_eq!(after.connections, 2);
    assert!(after.items >= before.items + 30, "{after:?}");
    assert!(after.bytes_received > before.bytes_received);
    assert!(net.view.rollbacks.is_empty());
}

#[test]
fn a_connection_that_is_never_made_is_abandoned_and_retried() {
    let mut net = Net::new(2, OrchestratorConfig::new());
    let hole = net.port(NodeId(1));
    net.black_holes.insert(hole);
    net.write(20);
    for _ in 0..20 {
        net.run();
        net.tick();
    }
    let node = net.address(NodeId(1));
    let first = net.connects_to(hole)[0];
    assert_eq!(
        net.client.orchestrator().node_status(&node),
        Some(NodeStatus::Connecting)
    );
    // After the handshake timeout (30 s) the attempt is given up and
    // retried.
    for _ in 0..700 {
        net.run();
        net.tick();
    }
    assert!(net.outputs.contains(&Output::Disconnect { link: first }));
    assert!(net.connects_to(hole).len() >= 2);
    net.black_holes.clear();
    net.settle();
}

#[test]
fn stats_add_up_nodes_and_streams() {
    let net = Net::streaming(3);
    let stats = net.client.stats();
    assert_eq!(stats.connections, 3);
    assert_eq!(stats.streams_open, usize::from(VBUCKETS));
    assert_eq!(stats.items, net.view.changes);
    assert!(stats.acked_bytes > 0 && stats.buffer_acks_sent > 0);
    let per_stream: u64 = (0..VBUCKETS)
        .map(|vb| net.client.stream_stats(vb).expect("streamed").items)
        .sum();
    assert_eq!(per_stream, stats.items);
    assert!(net.client.stream_stats(VBUCKETS).is_none());
}

#[test]
fn starting_now_skips_history_and_resumes_from_the_resolved_positions() {
    let mut net = Net::new(3, OrchestratorConfig::new().with_start(InitialStart::Now));
    net.write(100);
    net.settle_open();
    assert_eq!(net.view.changes, 0, "history is skipped");
    let checkpoint = net.client.checkpoint();
    for vb in 0..VBUCKETS {
        let high = net.cluster.active_vbucket(vb).unwrap().high_seqno();
        assert_eq!(checkpoint.vbuckets[&vb].last_seqno, high, "vb {vb}");
    }
    // New changes arrive, also across a rebalance: moved streams resume
    // from the resolved positions, not from the start.
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .map(|vb| (vb, NodeId((net.cluster.active_node(vb).unwrap().0 + 1) % 3)))
        .collect();
    net.write(5);
    net.run();
    net.cluster.rebalance(&moves).unwrap();
    net.write(5);
    net.settle_open();
    assert_eq!(net.view.changes, 10);
    assert!(net.view.rollbacks.is_empty());
}

#[test]
fn a_slow_application_stops_the_producers() {
    let mut net = Net::new(2, OrchestratorConfig::new());
    net.write(60);
    net.settle();
    net.deliver = false;
    net.write(2000);
    for _ in 0..50 {
        net.run();
        net.tick();
    }
    let stats = net.client.stats();
    let paused = net.client.stats();
    for _ in 0..50 {
        net.run();
        net.tick();
    }
    assert_eq!(
        net.client.stats().items,
        paused.items,
        "nothing more arrives"
    );
    assert!(stats.unacked_bytes > 0);
    // At most a window per node (and the message that crossed it).
    assert!(stats.unacked_bytes <= 3 * u64::from(WINDOW), "{stats:?}");
    assert!(
        stats.flow_bytes_received < 2000 * 80,
        "the producers paused: {stats:?}"
    );
    net.deliver = true;
    net.settle();
    assert!(net.client.stats().items > paused.items);
}

#[test]
fn events_held_by_a_lost_connection_are_still_handed_out() {
    let mut net = Net::streaming(2);
    net.deliver = false;
    net.write(40);
    net.run();
    let node = net.address(NodeId(0));
    let held = net.client.node_consumer(&node).unwrap().pending_events();
    assert!(held > 0);
    net.cluster.drop_connections(NodeId(0)).unwrap();
    net.run();
    // Not reported lost while its events wait for the application.
    assert_eq!(
        net.client.orchestrator().node_status(&node),
        Some(NodeStatus::Connected)
    );
    let changes = net.view.changes;
    let mut handed = 0;
    while let Some(event) = net.client.poll_event(net.now) {
        net.view.apply(&event).unwrap();
        handed += 1;
    }
    assert!(handed >= held, "{handed} of {held}");
    assert!(net.view.changes > changes);
    assert!(matches!(
        net.client.orchestrator().node_status(&node),
        Some(NodeStatus::Reconnecting { .. })
    ));
    net.deliver = true;
    net.settle();
    assert!(net.view.rollbacks.is_empty());
}

#[test]
fn tls_connections_go_to_the_kv_ssl_ports_and_never_plaintext() {
    // The in-memory nodes serve their kvSSL port on their data port.
    let mut tls_cluster = cluster(2);
    tls_cluster.set_kv_tls(true);
    let seed = tls_cluster.node(NodeId(0)).unwrap().config().kv_port;
    let seeds = format!("couchbases://{HOST}:{seed}");
    let mut net = Net::with_seeds(tls_cluster, &seeds, OrchestratorConfig::new());
    net.write(30);
    net.settle();
    assert_eq!(
        net.outputs
            .iter()
            .filter(|o| matches!(o, Output::Connect { .. }))
            .count(),
        3
    );
    for output in &net.outputs {
        if let Output::Connect {
            tls, node, target, ..
        } = output
        {
            assert!(tls);
            assert_eq!(node, target);
        }
    }

    // A config without kvSSL ports: the seed answers, the nodes are not
    // connected to in plaintext.
    let plain = cluster(2);
    let seed = plain.node(NodeId(0)).unwrap().config().kv_port;
    let seeds = format!("couchbases://{HOST}:{seed}");
    let mut net = Net::with_seeds(plain, &seeds, OrchestratorConfig::new());
    for _ in 0..10 {
        net.run();
        net.tick();
    }
    assert!(net.client.config().is_some());
    // Only config fetches from the seed (repeated: no node is connected).
    assert!(!net.connects_to(seed).is_empty());
    assert!(net.connects_to(net.port(NodeId(1))).is_empty());
    assert!(net.client.connected_nodes().is_empty());
    assert_eq!(net.client.stats().connections, 0);
    let node = net.address(NodeId(1));
    assert!(matches!(
        net.client.orchestrator().node_status(&node),
        Some(NodeStatus::Reconnecting { .. })
    ));
}

#[test]
fn garbage_from_a_node_drops_only_that_link_and_stale_inputs_are_ignored() {
    let mut net = Net::streaming(2);
    let node = net.address(NodeId(1));
    let (&link, _) = net
        .sockets
        .iter()
        .find(|(_, s)| s.node == NodeId(1))
        .unwrap();
    let mut garbage = bytes::BytesMut::from(&[0xff_u8; 64][..]);
    net.client.handle_input(link, &mut garbage, net.now);
    net.run();
    assert!(net.outputs.contains(&Output::Disconnect { link }));
    assert!(!net.sockets.contains_key(&link));
    // The forgotten link's inputs change nothing.
    let mut more = bytes::BytesMut::from(&[0x81_u8; 30][..]);
    net.client.handle_input(link, &mut more, net.now);
    net.client.handle_connected(link, "bm9uY2U", net.now);
    net.client.handle_lost(link, net.now);
    net.write(20);
    net.settle();
    assert_eq!(net.client.stats().reconnects, 1);
    assert!(net.client.connected_nodes().contains(&node));
    assert!(net.view.rollbacks.is_empty());
}

#[test]
fn consistent_snapshots_are_handed_out_whole_across_nodes_and_moves() {
    let cluster = cluster(3);
    let seed = cluster.node(NodeId(0)).unwrap().config().kv_port;
    let config = consumer_config().with_consistent_snapshots(1 << 20);
    let seeds = format!("couchbase://{HOST}:{seed}");
    let mut net = Net::with_config(cluster, &seeds, OrchestratorConfig::new(), config);
    net.write(150);
    net.settle();
    net.stream_while_writing(6);
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .step_by(3)
        .map(|vb| (vb, NodeId((net.cluster.active_node(vb).unwrap().0 + 1) % 3)))
        .collect();
    net.write(20);
    net.pump();
    net.cluster.rebalance(&moves).unwrap();
    net.cluster.drop_connections(NodeId(2)).unwrap();
    net.stream_while_writing(6);
    assert!(net.view.rollbacks.is_empty());

    // A snapshot's events come between its marker and its completion,
    // with no other vbucket's events in between, and the view is then at
    // its end.
    let mut open: Option<u16> = None;
    let mut completed = 0;
    let mut last_seqno: BTreeMap<u16, u64> = BTreeMap::new();
    for event in &net.delivered {
        let vb = event.vbucket();
        if let Some(batch) = open {
            assert_eq!(vb, Some(batch), "{event:?} inside vb {batch}'s snapshot");
        }
        match event {
            Event::SnapshotMarker(..) => open = vb,
            Event::SnapshotComplete { vbucket, end, .. } => {
                open = None;
                completed += 1;
                let seen = last_seqno.get(vbucket).copied().unwrap_or(0);
                assert!(seen <= *end, "vb {vbucket}: {seen} past {end}");
            }
            Event::Mutation(m, _) => {
                last_seqno.insert(m.vbucket, m.by_seqno);
            }
            Event::Deletion(d, _) => {
                last_seqno.insert(d.vbucket, d.by_seqno);
            }
            _ => {}
        }
    }
    assert!(completed > usize::from(VBUCKETS), "{completed}");
    let stats = net.client.stats();
    assert!(stats.snapshots_completed >= completed as u64, "{stats:?}");
    assert_eq!(stats.held_bytes, 0);

    // While a snapshot is handed out, the checkpoint stays where it was
    // before it: a restart from there never starts mid-snapshot.
    net.deliver = false;
    net.write(60);
    for _ in 0..20 {
        net.run();
    }
    let mut before: Option<(u16, u64)> = None;
    let mut checked = 0;
    while let Some(event) = net.client.poll_event(net.now) {
        net.view.apply(&event).unwrap();
        match &event {
            Event::SnapshotMarker(marker, _) => {
                let at = net.client.checkpoint().vbuckets[&marker.vbucket].last_seqno;
                before = Some((marker.vbucket, at));
                assert!(at < marker.end, "{at} {marker:?}");
            }
            Event::SnapshotComplete { vbucket, end, .. } => {
                before = None;
                let at = net.client.checkpoint().vbuckets[vbucket].last_seqno;
                assert_eq!(at, *end, "vb {vbucket}");
            }
            _ => {
                if let Some((vb, at)) = before {
                    assert_eq!(net.client.checkpoint().vbuckets[&vb].last_seqno, at);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10, "{checked}");
    net.deliver = true;
    net.settle();
}

#[test]
fn a_closed_client_disconnects_everything_and_does_nothing_more() {
    let mut net = Net::streaming(2);
    let open: Vec<LinkId> = net.sockets.keys().copied().collect();
    let before = net.outputs.len();
    net.client.close();
    net.write(20);
    for _ in 0..100 {
        net.run();
        net.tick();
    }
    let after = &net.outputs[before..];
    assert_eq!(after.len(), open.len(), "{after:?}");
    for link in open {
        assert!(after.contains(&Output::Disconnect { link }));
    }
    assert!(net.sockets.is_empty());
    assert!(net.client.is_finished());
    assert_eq!(net.client.poll_timeout(), None);
    assert_eq!(net.client.stats().connections, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Whatever a node sends, the client does not panic, drops only that
    /// link and streams on.
    #[test]
    fn any_bytes_from_a_node_are_survived(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..6),
        valid_header in proptest::prelude::any::<bool>(),
    ) {
        let mut net = Net::new(1, OrchestratorConfig::new());
        net.write(10);
        net.settle();
        let link = *net.sockets.keys().next().unwrap();
        for mut chunk in chunks {
            if valid_header && chunk.len() >= 24 {
                // A response magic and a plausible body length, to get
                // past the header checks.
                chunk[0] = 0x81;
                chunk[8..12].copy_from_slice(&8u32.to_be_bytes());
            }
            let mut rx = bytes::BytesMut::from(&chunk[..]);
            net.client.handle_input(link, &mut rx, net.now);
            let _ = net.client.poll_event(net.now);
        }
        net.write(5);
        net.settle();
    }
}

/// A collections filter in the settings: every node's streams are opened
/// with it (collections negotiated on every connection), so only that
/// collection's documents arrive, from every node, across a rebalance.
#[test]
fn a_collection_filter_streams_one_collection_from_every_node() {
    use std::time::SystemTime;

    use dcp_proto::consumer::StreamFilter;
    use dcp_proto::producer::AdminCommand;
    use dcp_proto::testing::{MaterializedView, live_documents_in};

    let mut cluster = cluster(3);
    let wall = SystemTime::now();
    for command in [
        AdminCommand::CreateScope {
            scope: "inventory".to_owned(),
        },
        AdminCommand::CreateCollection {
            scope: "inventory".to_owned(),
            collection: "hotels".to_owned(),
            max_ttl: None,
        },
    ] {
        cluster.change_manifest(&command, wall).unwrap();
    }
    let hotels = cluster
        .node(NodeId(2))
        .unwrap()
        .bucket()
        .manifest()
        .collection_by_name("inventory", "hotels")
        .unwrap()
        .id;
    let seed = cluster.node(NodeId(0)).unwrap().config().kv_port;
    let settings = OrchestratorConfig::new().with_filter(StreamFilter::Collections(vec![hotels]));
    let mut net = Net::with_seeds(cluster, &format!("couchbase://{HOST}:{seed}"), settings);
    net.view = MaterializedView::with_collections();
    let write = |net: &mut Net, from: u64| {
        for i in from..from + 60 {
            let key = format!("k{i}");
            let now = net.now;
            for collection in [hotels, 0] {
                net.cluster
                    .set_in(collection, key.as_bytes(), format!("{{\"i\":{i}}}"), now)
                    .unwrap();
            }
        }
    };
    let caught_up = |net: &Net| {
        (0..VBUCKETS).all(|vb| {
            let owner = net.cluster.active_node(vb).unwrap();
            let bucket = net.cluster.node(owner).unwrap().bucket();
            net.view.live_all(vb) == live_documents_in(bucket, vb, |c| c == hotels)
        })
    };
    let settle = |net: &mut Net| {
        for _ in 0..1200 {
            net.run();
            if caught_up(net) {
                return;
            }
            net.tick();
        }
        panic!("the filtered view never caught up");
    };
    write(&mut net, 0);
    settle(&mut net);
    assert!(net.client.consumer_config().collections);
    assert!(net.view.changes >= 60);
    // Only hotels arrived, though as many default-collection documents
    // were written.
    assert!((0..VBUCKETS).all(|vb| net.view.live_all(vb).keys().all(|(c, _)| *c == hotels)));

    // A rebalance moves streams; the filter goes with them.
    net.cluster
        .rebalance(&[(0, NodeId(2)), (1, NodeId(2))])
        .unwrap();
    write(&mut net, 100);
    settle(&mut net);
    assert!(net.view.rollbacks.is_empty());
}
