//! Our consumers and the cluster orchestrator against a [`LocalCluster`],
//! in memory, on a virtual clock: this test is the adapter. Stream while
//! writing, rebalance, fail over, remove and add nodes, drop connections,
//! bootstrap from a stale config; after each step the consumer's view
//! equals the bucket (the active copies), nothing is lost, and a change is
//! seen twice only after a reported rollback (`MaterializedView` refuses
//! any other replay).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::BucketConfig;
use dcp_proto::cluster::{
    Action, ClusterConfig, ClusterOrchestrator, NodeAddress, OrchestratorConfig,
};
use dcp_proto::codec::Status;
use dcp_proto::consumer::{ConfigPush, Consumer, ConsumerConfig, Event};
use dcp_proto::msg::StreamEndReason;
use dcp_proto::producer::{ConnectionId, LocalCluster, NodeConfig, NodeId};
use dcp_proto::session::Checkpoint;
use dcp_proto::testing::{MaterializedView, live_documents};

const HOST: &str = "127.0.0.1";
const BUCKET: &str = "default";
const VBUCKETS: u16 = 16;
const STEP: Duration = Duration::from_millis(50);

fn cluster(nodes: usize) -> LocalCluster {
    let mut template = NodeConfig::new(BUCKET)
        .with_bucket(
            BucketConfig::new(BUCKET)
                .with_vbuckets(VBUCKETS)
                .with_checkpoints(8, 3),
        )
        .with_user("app", "secret")
        .with_seed(7);
    template.hostname = HOST.to_owned();
    LocalCluster::new(template, nodes, 1)
}

/// One consumer connection to one node.
struct Link {
    node: NodeId,
    conn: ConnectionId,
    consumer: Consumer,
}

/// A cluster, and one client (orchestrator + consumers) streaming it.
struct World {
    cluster: LocalCluster,
    orchestrator: ClusterOrchestrator,
    links: BTreeMap<NodeAddress, Link>,
    view: MaterializedView,
    now: Instant,
    writes: u64,
    connections: u64,
    client: &'static str,
    /// Stream requests refused with NOT_MY_VBUCKET.
    not_my_vbucket: usize,
    /// Streams ended StateChanged.
    state_changed: usize,
    /// Cluster-map notifications the consumers ask for.
    push: ConfigPush,
    /// Whether consumers ask for NOT_MY_VBUCKET replies without known configs.
    dedupe: bool,
    /// RefreshConfig actions carried out.
    refreshes: usize,
    /// Configs that reached the orchestrator as ClusterConfig events.
    config_events: usize,
}

impl World {
    fn new(nodes: usize) -> Self {
        let now = Instant::now();
        let cluster = cluster(nodes);
        let json = cluster.config_json();
        Self::with_config(cluster, &json, now, "lc")
    }

    /// A client bootstrapped from `json` (possibly stale).
    fn with_config(cluster: LocalCluster, json: &[u8], now: Instant, client: &'static str) -> Self {
        Self::with_settings(cluster, json, now, client, OrchestratorConfig::new())
    }

    /// A client with these orchestrator settings, bootstrapped from `json`.
    fn with_settings(
        cluster: LocalCluster,
        json: &[u8],
        now: Instant,
        client: &'static str,
        settings: OrchestratorConfig,
    ) -> Self {
        let mut orchestrator = ClusterOrchestrator::new(settings, Checkpoint::new());
        orchestrator.handle_config(json, HOST, now).unwrap();
        Self {
            cluster,
            orchestrator,
            links: BTreeMap::new(),
            view: MaterializedView::default(),
            now,
            writes: 0,
            connections: 0,
            client,
            not_my_vbucket: 0,
            state_changed: 0,
            push: ConfigPush::Off,
            dedupe: false,
            refreshes: 0,
            config_events: 0,
        }
    }

    fn write(&mut self, n: u64) {
        for _ in 0..n {
            self.writes += 1;
            let key = format!("key-{}", self.writes % 97);
            if self.writes.is_multiple_of(11) {
                let _ = self.cluster.delete(key.as_bytes(), self.now);
            } else {
                let value = format!("{{\"n\":{}}}", self.writes);
                self.cluster.set(key.as_bytes(), value, self.now).unwrap();
            }
        }
    }

    /// Carries out the orchestrator's actions.
    fn act(&mut self) -> bool {
        let mut moved = false;
        while let Some(action) = self.orchestrator.poll_action() {
            moved = true;
            match action {
                Action::Connect(kv) => {
                    let address = kv.address;
                    let id = self
                        .cluster
                        .node_by_port(address.port())
                        .filter(|id| self.cluster.is_running(*id));
                    let Some(id) = id else {
                        // Connection refused.
                        self.orchestrator.handle_node_lost(&address, self.now);
                        continue;
                    };
                    self.connections += 1;
                    let config = ConsumerConfig::new(
                        format!("{}:{}", self.client, self.connections),
                        BUCKET,
                    )
                    .with_credentials(Credentials::new("app", "secret"))
                    .with_buffer_size(4096)
                    .with_auto_ack(true)
                    .with_config_push(self.push)
                    .with_dedupe_not_my_vbucket(self.dedupe);
                    let consumer = Consumer::new(config, "bm9uY2U", self.now).unwrap();
                    let conn = self.cluster.node_mut(id).unwrap().accept(self.now);
                    self.links.insert(
                        address,
                        Link {
                            node: id,
                            conn,
                            consumer,
                        },
                    );
                }
                Action::Disconnect(address) => {
                    if let Some(link) = self.links.remove(&address) {
                        self.cluster.node_mut(link.node).unwrap().remove(link.conn);
                    }
                }
                Action::OpenStream {
                    node,
                    vbucket,
                    start,
                    end,
                } => {
                    let link = self.links.get_mut(&node).expect("open on a connected node");
                    link.consumer.open_stream(vbucket, start, end).unwrap();
                }
                Action::CloseStream { node, vbucket } => {
                    if let Some(link) = self.links.get_mut(&node) {
                        let _ = link.consumer.close_stream(vbucket);
                    }
                }
                Action::RefreshConfig { via } => {
                    self.refreshes += 1;
                    match via.and_then(|v| self.links.get_mut(&v)) {
                        Some(link) => {
                            let _ = link.consumer.request_cluster_config();
                        }
                        None => {
                            // A seed node answers.
                            let json = self.cluster.config_json();
                            let _ = self.orchestrator.handle_config(&json, HOST, self.now);
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        moved
    }

    /// Moves bytes on every link and feeds events; reports lost links.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let addresses: Vec<NodeAddress> = self.links.keys().cloned().collect();
        for address in addresses {
            let Some(link) = self.links.get_mut(&address) else {
                continue;
            };
            let node = self.cluster.node_mut(link.node).unwrap();
            let mut up = BytesMut::new();
            if link.consumer.poll_transmit(&mut up) > 0 {
                moved = true;
                let _ = node.handle_input(link.conn, &mut up, self.now);
            }
            let mut down = BytesMut::new();
            if node.poll_transmit(link.conn, &mut down, 16 * 1024) > 0 {
                moved = true;
                if link.consumer.handle_input(&mut down, self.now).is_err() {
                    link.consumer.handle_eof();
                }
            }
            let lost = node.is_closed(link.conn) || link.consumer.is_closed();
            if lost {
                link.consumer.handle_eof();
            }
            while let Some(event) = link.consumer.poll_event() {
                moved = true;
                match &event {
                    Event::ClusterConfig { status, config }
                        if *status == Status::Success && !config.is_empty() =>
                    {
                        self.config_events += 1;
                        self.orchestrator
                            .handle_config(config, HOST, self.now)
                            .unwrap();
                    }
                    Event::StreamFailed {
                        status: Status::NotMyVbucket,
                        ..
                    } => self.not_my_vbucket += 1,
                    Event::StreamEnded {
                        reason: StreamEndReason::StateChanged,
                        ..
                    } => self.state_changed += 1,
                    _ => {}
                }
                match &event {
                    Event::ClusterConfig { .. } => {}
                    _ => {
                        if self
                            .orchestrator
                            .handle_stream_event(&address, &event, self.now)
                        {
                            self.view.apply(&event).unwrap();
                        }
                    }
                }
            }
            if lost {
                moved = true;
                node.remove(link.conn);
                self.links.remove(&address);
                self.orchestrator.handle_node_lost(&address, self.now);
            }
        }
        moved
    }

    /// Lets time pass: timers of consumers, nodes and the orchestrator.
    fn tick(&mut self) {
        self.now += STEP;
        for link in self.links.values_mut() {
            if link.consumer.poll_timeout().is_some_and(|t| t <= self.now) {
                let _ = link.consumer.handle_timeout(self.now);
            }
            let node = self.cluster.node_mut(link.node).unwrap();
            if node.poll_timeout(link.conn).is_some_and(|t| t <= self.now) {
                node.handle_timeout(link.conn, self.now);
            }
        }
        if self
            .orchestrator
            .poll_timeout()
            .is_some_and(|t| t <= self.now)
        {
            self.orchestrator.handle_timeout(self.now);
        }
    }

    /// Whether the view equals every vbucket's active copy.
    fn synced(&self) -> bool {
        self.first_difference().is_none()
    }

    fn first_difference(&self) -> Option<u16> {
        (0..VBUCKETS).find(|&vb| {
            let Some(owner) = self.cluster.active_node(vb) else {
                return true;
            };
            let bucket = self.cluster.node(owner).unwrap().bucket();
            self.view.live(vb) != live_documents(bucket, vb)
                || self.view.last_seqno(vb) != bucket.vbucket(vb).unwrap().high_seqno()
        })
    }

    /// Runs until the view equals the bucket and nothing moves (at most a
    /// minute of virtual time); returns the virtual time it took.
    fn settle(&mut self) -> Duration {
        let start = self.now;
        let deadline = self.now + Duration::from_secs(60);
        while self.now < deadline {
            let mut moved = true;
            let mut rounds = 0;
            while moved && rounds < 10_000 {
                moved = self.act() | self.pump();
                rounds += 1;
            }
            if self.synced() && self.all_open() {
                return self.now - start;
            }
            self.tick();
        }
        let diff = self.first_difference();
        panic!(
            "did not settle: vbucket {:?} differs (view {:?}, {:?}; bucket {:?}; rollbacks {:?}); statuses {:?}",
            diff,
            diff.map(|vb| self.view.last_seqno(vb)),
            diff.map(|vb| self.view.live(vb).len()),
            diff.map(|vb| {
                let v = self.cluster.active_vbucket(vb).unwrap();
                (v.high_seqno(), v.failover_log().clone(), v.live_count())
            }),
            self.view.rollbacks,
            (0..VBUCKETS)
                .map(|vb| self.orchestrator.vbucket_status(vb))
                .collect::<Vec<_>>()
        );
    }

    fn all_open(&self) -> bool {
        (0..VBUCKETS).all(|vb| {
            let Some(owner) = self.cluster.active_node(vb) else {
                return true;
            };
            let addr = NodeAddress::new(HOST, self.cluster.node(owner).unwrap().config().kv_port);
            self.links
                .get(&addr)
                .is_some_and(|l| l.consumer.has_stream(vb))
        })
    }

    /// Writes in small steps while streaming.
    fn stream_while_writing(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.write(9);
            for _ in 0..3 {
                let _ = self.act() | self.pump();
            }
            self.tick();
        }
        self.settle();
    }

    fn streaming(nodes: usize) -> Self {
        let mut world = World::new(nodes);
        world.write(200);
        world.settle();
        world.stream_while_writing(10);
        world
    }
}

#[test]
fn streams_a_three_node_cluster_while_writing() {
    let world = World::streaming(3);
    assert!(world.view.rollbacks.is_empty());
    assert_eq!(world.links.len(), 3);
    assert!(world.view.changes >= 97);
}

#[test]
fn rebalance_of_half_the_vbuckets_continues_without_rollback() {
    let mut world = World::streaming(3);
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .step_by(2)
        .map(|vb| {
            let owner = world.cluster.active_node(vb).unwrap();
            (vb, NodeId((owner.0 + 1) % 3))
        })
        .collect();
    let uuids: Vec<u64> = (0..VBUCKETS)
        .map(|vb| world.cluster.active_vbucket(vb).unwrap().uuid())
        .collect();
    world.cluster.rebalance(&moves).unwrap();
    world.write(30);
    world.settle();
    world.stream_while_writing(5);
    for (vb, to) in moves {
        assert_eq!(world.cluster.active_node(vb), Some(to));
        assert_eq!(
            world.cluster.active_vbucket(vb).unwrap().uuid(),
            uuids[usize::from(vb)],
            "a move keeps the uuid"
        );
    }
    assert!(
        world.view.rollbacks.is_empty(),
        "{:?}",
        world.view.rollbacks
    );
    assert!(
        world.state_changed > 0,
        "the old owners ended their streams"
    );
}

#[test]
fn failover_promotes_replicas_and_rolls_back_what_was_lost() {
    let mut world = World::streaming(3);
    // Replication lags: the consumer sees writes the replicas never get.
    world.cluster.set_sync_replication(false);
    world.write(40);
    world.settle();
    let victim = NodeId(1);
    let branches = world.cluster.failover(victim).unwrap();
    assert!(!branches.is_empty());
    world.cluster.set_sync_replication(true);
    world.write(30);
    world.settle();
    world.stream_while_writing(5);
    assert!(
        !world.view.rollbacks.is_empty(),
        "lost writes are rolled back"
    );
    assert!(
        world
            .view
            .rollbacks
            .iter()
            .all(|(vb, _)| branches.iter().any(|(b, _)| b == vb))
    );
    assert_eq!(world.links.len(), 2);
}

#[test]
fn removing_a_node_and_adding_one_back() {
    let mut world = World::streaming(3);
    world.cluster.remove_node(NodeId(2)).unwrap();
    world.write(30);
    world.settle();
    assert!((0..VBUCKETS).all(|vb| world.cluster.active_node(vb) != Some(NodeId(2))));
    world.stream_while_writing(3);
    assert_eq!(world.links.len(), 2, "the removed node is disconnected");

    let added = world.cluster.add_node().unwrap();
    world.cluster.rebalance_evenly().unwrap();
    world.write(30);
    world.settle();
    world.stream_while_writing(3);
    assert!((0..VBUCKETS).any(|vb| world.cluster.active_node(vb) == Some(added)));
    assert_eq!(world.links.len(), 3);
    assert!(
        world.view.rollbacks.is_empty(),
        "{:?}",
        world.view.rollbacks
    );
}

#[test]
fn killed_connections_resume_from_their_positions() {
    let mut world = World::streaming(3);
    for round in 0..6 {
        world.write(20);
        let _ = world.act() | world.pump();
        world.cluster.drop_connections(NodeId(round % 3)).unwrap();
        world.stream_while_writing(2);
    }
    world.settle();
    assert!(
        world.view.rollbacks.is_empty(),
        "{:?}",
        world.view.rollbacks
    );
}

#[test]
fn a_stale_config_meets_not_my_vbucket_and_recovers() {
    let now = Instant::now();
    let mut cluster = cluster(3);
    let stale = cluster.config_json();
    for i in 0..150 {
        cluster
            .set(format!("key-{i}").as_bytes(), "v", now)
            .unwrap();
    }
    // Every vbucket moves to the next node after the client's config was
    // fetched: each first request meets NOT_MY_VBUCKET.
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .map(|vb| (vb, NodeId((cluster.active_node(vb).unwrap().0 + 1) % 3)))
        .collect();
    cluster.rebalance(&moves).unwrap();
    let mut world = World::with_config(cluster, &stale, now, "stale");
    world.settle();
    world.stream_while_writing(3);
    assert!(world.view.rollbacks.is_empty());
    assert!(
        world.not_my_vbucket >= usize::from(VBUCKETS),
        "{}",
        world.not_my_vbucket
    );
}

#[test]
fn everything_in_sequence() {
    let mut world = World::streaming(3);
    world.cluster.rebalance_evenly().unwrap();
    let half: Vec<(u16, NodeId)> = (0..VBUCKETS / 2).map(|vb| (vb, NodeId(0))).collect();
    world.cluster.rebalance(&half).unwrap();
    world.stream_while_writing(3);
    world.cluster.failover(NodeId(0)).unwrap();
    world.stream_while_writing(3);
    let added = world.cluster.add_node().unwrap();
    world.cluster.rebalance_evenly().unwrap();
    world.stream_while_writing(3);
    world.cluster.drop_connections(added).unwrap();
    world.cluster.remove_node(NodeId(1)).unwrap();
    world.stream_while_writing(3);
    assert!(world.synced());
}

#[test]
fn every_node_serves_the_same_config_and_it_matches_the_map() {
    let mut world = World::streaming(3);
    let check = |cluster: &LocalCluster| {
        let config = ClusterConfig::parse(&cluster.config_json(), HOST).unwrap();
        assert_eq!(config.version().rev, cluster.rev());
        assert_eq!(config.num_vbuckets(), VBUCKETS);
        assert_eq!(config.servers().len(), cluster.member_ids().len());
        for vb in 0..VBUCKETS {
            let owner = cluster.active_node(vb).unwrap();
            let port = cluster.node(owner).unwrap().config().kv_port;
            assert_eq!(config.active_node(vb).unwrap().address.port(), port);
            let replicas: Vec<u16> = config
                .replicas(vb)
                .iter()
                .map(|n| n.address.port())
                .collect();
            let expected: Vec<u16> = cluster
                .replica_nodes(vb)
                .iter()
                .map(|id| cluster.node(*id).unwrap().config().kv_port)
                .collect();
            assert_eq!(replicas, expected);
            assert!(!expected.contains(&port));
        }
    };
    check(&world.cluster);
    let rev = world.cluster.rev();
    world
        .cluster
        .rebalance(&[(0, NodeId(2)), (1, NodeId(2))])
        .unwrap();
    world.cluster.failover(NodeId(0)).unwrap();
    let added = world.cluster.add_node().unwrap();
    world.cluster.rebalance_evenly().unwrap();
    assert_eq!(world.cluster.rev(), rev + 4);
    check(&world.cluster);
    assert!(world.cluster.member_ids().contains(&added));

    // Every running node answers GET_CLUSTER_CONFIG with those bytes.
    world.settle();
    let expected = world.cluster.config_json();
    let addresses: Vec<NodeAddress> = world.links.keys().cloned().collect();
    assert_eq!(addresses.len(), 3);
    for address in addresses {
        world
            .links
            .get_mut(&address)
            .unwrap()
            .consumer
            .request_cluster_config()
            .unwrap();
        let mut served = None;
        for _ in 0..100 {
            let link = world.links.get_mut(&address).unwrap();
            let node = world.cluster.node_mut(link.node).unwrap();
            let mut up = BytesMut::new();
            link.consumer.poll_transmit(&mut up);
            node.handle_input(link.conn, &mut up, world.now).unwrap();
            let mut down = BytesMut::new();
            node.poll_transmit(link.conn, &mut down, 1 << 20);
            link.consumer.handle_input(&mut down, world.now).unwrap();
            while let Some(event) = link.consumer.poll_event() {
                if let Event::ClusterConfig { config, .. } = event {
                    served = Some(config);
                }
            }
            if served.is_some() {
                break;
            }
        }
        assert_eq!(served.as_deref(), Some(&expected[..]), "{address:?}");
    }
}

#[test]
fn a_streaming_client_retries_until_the_new_config_arrives() {
    let mut world = World::streaming(3);
    world.cluster.hold_config(true);
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .step_by(2)
        .map(|vb| {
            let owner = world.cluster.active_node(vb).unwrap();
            (vb, NodeId((owner.0 + 2) % 3))
        })
        .collect();
    world.cluster.rebalance(&moves).unwrap();
    world.write(40);
    // A few virtual seconds with the old config: the old owners refuse.
    for _ in 0..60 {
        let mut rounds = 0;
        while (world.act() | world.pump()) && rounds < 1000 {
            rounds += 1;
        }
        world.tick();
    }
    assert!(world.not_my_vbucket > 0, "the old owners refused");
    assert!(world.state_changed > 0);
    world.cluster.hold_config(false);
    world.settle();
    world.stream_while_writing(3);
    assert!(
        world.view.rollbacks.is_empty(),
        "{:?}",
        world.view.rollbacks
    );
}

/// A small deterministic generator for the random walk.
struct Walk(u64);

impl Walk {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn random_topology_walks_lose_nothing() {
    for seed in 1..=4u64 {
        let mut walk = Walk(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut world = World::streaming(3);
        for step in 0..25 {
            let members = world.cluster.member_ids();
            let pick = |walk: &mut Walk| members[walk.next(members.len() as u64) as usize];
            match walk.next(8) {
                0 => {
                    let mut moves = Vec::new();
                    for vb in 0..VBUCKETS {
                        if walk.next(2) == 0 {
                            moves.push((vb, pick(&mut walk)));
                        }
                    }
                    world.cluster.rebalance(&moves).unwrap();
                }
                1 if members.len() > 2 => {
                    world.cluster.set_sync_replication(false);
                    world.write(walk.next(20));
                    let victim = pick(&mut walk);
                    world.cluster.failover(victim).unwrap();
                    world.cluster.set_sync_replication(true);
                }
                2 if members.len() > 2 => {
                    world.cluster.remove_node(pick(&mut walk)).unwrap();
                }
                3 if members.len() < 5 => {
                    world.cluster.add_node().unwrap();
                    world.cluster.rebalance_evenly().unwrap();
                }
                4 => {
                    world.cluster.drop_connections(pick(&mut walk)).unwrap();
                }
                5 => {
                    world.cluster.hold_config(true);
                    let moves: Vec<(u16, NodeId)> =
                        (0..VBUCKETS).map(|vb| (vb, pick(&mut walk))).collect();
                    world.cluster.rebalance(&moves).unwrap();
                    world.write(10);
                    for _ in 0..10 {
                        let _ = world.act() | world.pump();
                        world.tick();
                    }
                    world.cluster.hold_config(false);
                }
                _ => {}
            }
            world.write(5 + walk.next(30));
            let _ = world.settle();
            assert!(world.synced(), "seed {seed} step {step}");
        }
    }
}

/// A client that never polls (a poll interval of a day), asking for
/// `push`, streaming three nodes.
fn push_world(push: ConfigPush) -> World {
    let now = Instant::now();
    let cluster = cluster(3);
    let json = cluster.config_json();
    let settings = OrchestratorConfig::new().with_config_poll_interval(Duration::from_secs(86_400));
    let mut world = World::with_settings(cluster, &json, now, "push", settings);
    world.push = push;
    world.dedupe = true;
    world.write(200);
    world.settle();
    world.stream_while_writing(5);
    world
}

/// Rebalances half the vbuckets; the client must follow without fetching a
/// config (no poll falls due) and without rollback.
fn follows_a_rebalance_by_push(push: ConfigPush) -> World {
    let mut world = push_world(push);
    let refreshes = world.refreshes;
    let configs = world.config_events;
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .step_by(2)
        .map(|vb| {
            (
                vb,
                NodeId((world.cluster.active_node(vb).unwrap().0 + 1) % 3),
            )
        })
        .collect();
    world.cluster.rebalance(&moves).unwrap();
    world.write(30);
    let took = world.settle();
    world.stream_while_writing(3);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        world.view.rollbacks.is_empty(),
        "{:?}",
        world.view.rollbacks
    );
    assert!(world.config_events > configs, "a pushed config arrived");
    assert_eq!(
        world.orchestrator.config().unwrap().version().rev,
        world.cluster.rev()
    );
    if push == ConfigPush::Full {
        // The config came with the push, ahead of the old owners' stream
        // ends: nothing had to be fetched.
        assert_eq!(world.refreshes, refreshes, "no config fetch was needed");
    } else {
        // The consumer fetched the announced config itself; the old
        // owners' stream ends, arriving before it, may ask for one fetch.
        assert!(
            world.refreshes - refreshes <= 1,
            "{}",
            world.refreshes - refreshes
        );
    }
    world
}

#[test]
fn a_full_push_carries_a_rebalance_without_polling() {
    let world = follows_a_rebalance_by_push(ConfigPush::Full);
    assert!(
        world
            .links
            .values()
            .all(|l| { l.consumer.negotiated().unwrap().config_push == ConfigPush::Full })
    );
}

#[test]
fn a_brief_push_carries_a_rebalance_without_polling() {
    let world = follows_a_rebalance_by_push(ConfigPush::Brief);
    assert!(
        world
            .links
            .values()
            .all(|l| { l.consumer.negotiated().unwrap().config_push == ConfigPush::Brief })
    );
}

#[test]
fn pushes_follow_failover_and_membership_changes() {
    let mut world = push_world(ConfigPush::Full);
    let refreshes = world.refreshes;
    world.cluster.failover(NodeId(1)).unwrap();
    world.stream_while_writing(3);
    let added = world.cluster.add_node().unwrap();
    world.cluster.rebalance_evenly().unwrap();
    world.stream_while_writing(3);
    world.cluster.remove_node(NodeId(2)).unwrap();
    world.stream_while_writing(3);
    assert!(world.synced());
    assert_eq!(
        world.orchestrator.config().unwrap().version().rev,
        world.cluster.rev()
    );
    assert!(world.cluster.is_member(added));
    // A failover drops the failed node's connections, and a lost node asks
    // for a fetch; everything else came by push.
    assert!(
        world.refreshes - refreshes <= 1,
        "{}",
        world.refreshes - refreshes
    );
}

#[test]
fn without_push_the_same_client_needs_a_fetch() {
    // The control case: no push, no poll; the StateChanged ends make the
    // orchestrator fetch a config.
    let mut world = push_world(ConfigPush::Off);
    let refreshes = world.refreshes;
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .step_by(2)
        .map(|vb| {
            (
                vb,
                NodeId((world.cluster.active_node(vb).unwrap().0 + 1) % 3),
            )
        })
        .collect();
    world.cluster.rebalance(&moves).unwrap();
    world.settle();
    assert!(world.refreshes > refreshes);
    assert!(world.view.rollbacks.is_empty());
}

#[test]
fn a_stale_config_is_corrected_by_the_not_my_vbucket_body() {
    let now = Instant::now();
    let mut cluster = cluster(3);
    let stale = cluster.config_json();
    for i in 0..150 {
        cluster
            .set(format!("key-{i}").as_bytes(), "v", now)
            .unwrap();
    }
    let moves: Vec<(u16, NodeId)> = (0..VBUCKETS)
        .map(|vb| (vb, NodeId((cluster.active_node(vb).unwrap().0 + 1) % 3)))
        .collect();
    cluster.rebalance(&moves).unwrap();
    // No poll, no push: only the refusals' bodies carry the new map.
    let settings = OrchestratorConfig::new().with_config_poll_interval(Duration::from_secs(86_400));
    let mut world = World::with_settings(cluster, &stale, now, "nmvb", settings);
    world.dedupe = true;
    let took = world.settle();
    assert!(world.not_my_vbucket > 0);
    assert_eq!(world.refreshes, 0, "no config fetch was needed");
    assert_eq!(
        world.orchestrator.config().unwrap().version().rev,
        world.cluster.rev()
    );
    // No retry delay was waited out.
    assert!(took < Duration::from_millis(200), "{took:?}");
    world.stream_while_writing(3);
    assert!(world.view.rollbacks.is_empty());
}
