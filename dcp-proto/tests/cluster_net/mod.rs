//! The socket adapter of the `ClusterClient` tests: a [`LocalCluster`]
//! in memory, on a virtual clock, whose "sockets" are opened only when the
//! client asks and move bytes both ways.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::BucketConfig;
use dcp_proto::cluster::{
    ClusterClient, ConnectionString, LinkId, NodeAddress, OrchestratorConfig, Output,
};
use dcp_proto::consumer::{ConsumerConfig, Event};
use dcp_proto::producer::{ConnectionId, LocalCluster, NodeConfig, NodeId};
use dcp_proto::session::Checkpoint;
use dcp_proto::testing::{MaterializedView, live_documents};

pub const HOST: &str = "127.0.0.1";
pub const BUCKET: &str = "default";
pub const VBUCKETS: u16 = 16;
pub const STEP: Duration = Duration::from_millis(50);
pub const WINDOW: u32 = 4096;

pub fn cluster(nodes: usize) -> LocalCluster {
    let mut template = NodeConfig::new(BUCKET)
        .with_bucket(
            BucketConfig::new(BUCKET)
                .with_vbuckets(VBUCKETS)
                .with_checkpoints(8, 3),
        )
        .with_user("app", "secret")
        .with_seed(11);
    template.hostname = HOST.to_owned();
    LocalCluster::new(template, nodes, 1)
}

pub fn consumer_config() -> ConsumerConfig {
    ConsumerConfig::new("cc", BUCKET)
        .with_credentials(Credentials::new("app", "secret"))
        .with_buffer_size(WINDOW)
}

/// An open in-memory "socket" to a node.
pub struct Socket {
    pub node: NodeId,
    pub conn: ConnectionId,
    pub rx: BytesMut,
}

/// A cluster, and a client streaming it through in-memory sockets.
pub struct Net {
    pub cluster: LocalCluster,
    pub client: ClusterClient,
    pub sockets: BTreeMap<LinkId, Socket>,
    pub view: MaterializedView,
    pub now: Instant,
    pub writes: u64,
    /// Whether the application takes events.
    pub deliver: bool,
    /// Ports whose connections neither succeed nor fail (a black hole).
    pub black_holes: BTreeSet<u16>,
    /// Every output, in order.
    pub outputs: Vec<Output>,
    /// Every event handed to the application, in order.
    pub delivered: Vec<Event>,
    pub nonces: u64,
}

impl Net {
    /// A client of `nodes` nodes bootstrapped from the first node.
    pub fn new(nodes: usize, settings: OrchestratorConfig) -> Self {
        let cluster = cluster(nodes);
        let seed = cluster.node(NodeId(0)).unwrap().config().kv_port;
        Self::with_seeds(cluster, &format!("couchbase://{HOST}:{seed}"), settings)
    }

    pub fn with_seeds(cluster: LocalCluster, seeds: &str, settings: OrchestratorConfig) -> Self {
        Self::with_config(cluster, seeds, settings, consumer_config())
    }

    /// A client with this consumer configuration.
    pub fn with_config(
        cluster: LocalCluster,
        seeds: &str,
        settings: OrchestratorConfig,
        config: ConsumerConfig,
    ) -> Self {
        let now = Instant::now();
        let seeds = ConnectionString::parse(seeds).unwrap();
        let client = ClusterClient::new(&seeds, config, settings, Checkpoint::new(), now);
        Self {
            cluster,
            client,
            sockets: BTreeMap::new(),
            view: MaterializedView::default(),
            now,
            writes: 0,
            deliver: true,
            black_holes: BTreeSet::new(),
            outputs: Vec::new(),
            delivered: Vec::new(),
            nonces: 0,
        }
    }

    pub fn port(&self, id: NodeId) -> u16 {
        self.cluster.node(id).unwrap().config().kv_port
    }

    pub fn address(&self, id: NodeId) -> NodeAddress {
        NodeAddress::new(HOST, self.port(id))
    }

    pub fn write(&mut self, n: u64) {
        for _ in 0..n {
            self.writes += 1;
            let key = format!("key-{}", self.writes % 89);
            if self.writes.is_multiple_of(13) {
                let _ = self.cluster.delete(key.as_bytes(), self.now);
            } else {
                let value = format!("{{\"n\":{},\"pad\":\"{:0>64}\"}}", self.writes, 0);
                self.cluster.set(key.as_bytes(), value, self.now).unwrap();
            }
        }
    }

    /// Carries out outputs, moves bytes, hands events to the view.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        while let Some(output) = self.client.poll_output() {
            moved = true;
            self.outputs.push(output.clone());
            match output {
                Output::Connect { link, target, .. } => {
                    if self.black_holes.contains(&target.port()) {
                        continue;
                    }
                    let id = self
                        .cluster
                        .node_by_port(target.port())
                        .filter(|id| self.cluster.is_running(*id));
                    match id {
                        Some(node) => {
                            let conn = self.cluster.node_mut(node).unwrap().accept(self.now);
                            let rx = BytesMut::new();
                            self.sockets.insert(link, Socket { node, conn, rx });
                            self.nonces += 1;
                            let nonce = format!("bm9uY2U{}", self.nonces);
                            self.client.handle_connected(link, &nonce, self.now);
                        }
                        // Connection refused.
                        None => self.client.handle_lost(link, self.now),
                    }
                }
                Output::Disconnect { link } => {
                    if let Some(socket) = self.sockets.remove(&link) {
                        self.cluster
                            .node_mut(socket.node)
                            .unwrap()
                            .remove(socket.conn);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut up = BytesMut::new();
        while let Some(link) = self.client.poll_transmit(&mut up) {
            moved = true;
            let socket = self.sockets.get(&link).expect("bytes for an open socket");
            let node = self.cluster.node_mut(socket.node).unwrap();
            // A socket the node dropped loses what is written to it (the
            // loss is noticed below).
            if !node.is_closed(socket.conn) {
                node.handle_input(socket.conn, &mut up, self.now).unwrap();
            }
            up.clear();
        }
        let links: Vec<LinkId> = self.sockets.keys().copied().collect();
        for link in links {
            let socket = self.sockets.get_mut(&link).unwrap();
            let node = self.cluster.node_mut(socket.node).unwrap();
            if node.poll_transmit(socket.conn, &mut socket.rx, 16 * 1024) > 0 {
                moved = true;
                self.client.handle_input(link, &mut socket.rx, self.now);
            }
            let socket = self.sockets.get_mut(&link).unwrap();
            let node = self.cluster.node_mut(socket.node).unwrap();
            if node.is_closed(socket.conn) {
                moved = true;
                node.remove(socket.conn);
                self.sockets.remove(&link);
                self.client.handle_lost(link, self.now);
            }
        }
        if self.deliver {
            while let Some(event) = self.client.poll_event(self.now) {
                moved = true;
                self.view.apply(&event).unwrap();
                self.delivered.push(event);
            }
        }
        moved
    }

    /// Lets time pass: timers of the nodes and the client.
    pub fn tick(&mut self) {
        self.now += STEP;
        for socket in self.sockets.values() {
            let node = self.cluster.node_mut(socket.node).unwrap();
            if node
                .poll_timeout(socket.conn)
                .is_some_and(|t| t <= self.now)
            {
                node.handle_timeout(socket.conn, self.now);
            }
        }
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
    }

    pub fn run(&mut self) {
        let mut rounds = 0;
        while self.pump() && rounds < 10_000 {
            rounds += 1;
        }
    }

    pub fn synced(&self) -> bool {
        self.first_difference().is_none()
    }

    pub fn first_difference(&self) -> Option<u16> {
        (0..VBUCKETS).find(|&vb| {
            let Some(owner) = self.cluster.active_node(vb) else {
                return true;
            };
            let bucket = self.cluster.node(owner).unwrap().bucket();
            self.view.live(vb) != live_documents(bucket, vb)
                || self.view.last_seqno(vb) != bucket.vbucket(vb).unwrap().high_seqno()
        })
    }

    pub fn all_open(&self) -> bool {
        (0..VBUCKETS).all(|vb| {
            let Some(owner) = self.cluster.active_node(vb) else {
                return true;
            };
            self.client
                .node_consumer(&self.address(owner))
                .is_some_and(|c| c.has_stream(vb))
        })
    }

    /// Runs until the view equals the bucket with every stream open (at
    /// most a minute of virtual time); returns the time it took.
    pub fn settle(&mut self) -> Duration {
        let start = self.now;
        while self.now < start + Duration::from_secs(60) {
            self.run();
            if self.synced() && self.all_open() {
                return self.now - start;
            }
            self.tick();
        }
        panic!(
            "did not settle: vbucket {:?} differs; statuses {:?}; outputs {:?}; nodes {:?}",
            self.first_difference(),
            self.outputs,
            self.client.orchestrator().nodes().collect::<Vec<_>>(),
            (0..VBUCKETS)
                .map(|vb| self.client.orchestrator().vbucket_status(vb))
                .collect::<Vec<_>>()
        );
    }

    pub fn stream_while_writing(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.write(7);
            self.pump();
            self.tick();
        }
        self.settle();
    }

    pub fn streaming(nodes: usize) -> Self {
        let mut net = Net::new(nodes, OrchestratorConfig::new());
        net.write(150);
        net.settle();
        net.stream_while_writing(8);
        net
    }

    /// The links asked for, per target port.
    pub fn connects_to(&self, port: u16) -> Vec<LinkId> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Connect { link, target, .. } if target.port() == port => Some(*link),
                _ => None,
            })
            .collect()
    }
}

impl Net {
    /// Runs until every stream is open and every vbucket's position
    /// reached its high seqno (the view does not hold the history).
    pub fn settle_open(&mut self) {
        for _ in 0..1200 {
            self.run();
            let checkpoint = self.client.checkpoint();
            let caught_up = (0..VBUCKETS).all(|vb| {
                let high = self.cluster.active_vbucket(vb).unwrap().high_seqno();
                checkpoint
                    .vbuckets
                    .get(&vb)
                    .is_some_and(|p| p.last_seqno == high)
            });
            if caught_up && self.all_open() {
                return;
            }
            self.tick();
        }
        panic!("did not catch up: {:?}", self.client.checkpoint());
    }
}
