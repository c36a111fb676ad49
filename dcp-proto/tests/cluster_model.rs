//! The orchestrator against a model cluster, over many seeded schedules:
//! writes, rebalances (with configs published late, so nodes answer
//! NOT_MY_VBUCKET to stale routing), failovers that lose a tail and branch
//! the history, killed connections, nodes coming back. The application
//! keeps the events the orchestrator accepts and obeys rollbacks; once the
//! cluster heals, its view of every vbucket must equal the bucket's, and
//! no change may arrive twice except after a rollback. Configs also arrive
//! unasked: a published config is pushed to some connections (in order
//! with their stream events), and a refusal may carry the refusing node's
//! config.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dcp_proto::cluster::{Action, ClusterOrchestrator, NodeAddress, OrchestratorConfig};
use dcp_proto::codec::{Datatype, Status};
use dcp_proto::consumer::{Credit, Event, StreamStart};
use dcp_proto::failover::{RollbackQuery, needs_rollback, push_branch};
use dcp_proto::msg::{
    FailoverEntry, FailoverLog, MarkerFormat, Mutation, SnapshotFlags, SnapshotMarker,
    StreamEndReason,
};
use dcp_proto::session::{Checkpoint, StreamPosition};

const NODES: usize = 4;
const VBUCKETS: u16 = 16;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let i = self.below(items.len() as u64) as usize;
        items.get(i).copied()
    }
}

fn host(node: usize) -> String {
    format!("n{node}")
}

fn addr(node: usize) -> NodeAddress {
    NodeAddress::new(host(node), 11210)
}

fn node_of(address: &NodeAddress) -> usize {
    address.host()[1..].parse().unwrap()
}

/// A vbucket as the cluster holds it.
#[derive(Debug, Clone)]
struct Truth {
    owner: usize,
    log: FailoverLog,
    /// `(seqno, write id)` on the current branch.
    items: Vec<(u64, u64)>,
}

impl Truth {
    fn high(&self) -> u64 {
        self.items.last().map_or(0, |i| i.0)
    }
}

/// One node connection.
#[derive(Debug, Default)]
struct Conn {
    ready: bool,
    streams: BTreeSet<u16>,
    queue: VecDeque<Event>,
}

struct Model {
    rng: Rng,
    now: Instant,
    orch: ClusterOrchestrator,
    truth: Vec<Truth>,
    up: [bool; NODES],
    conns: BTreeMap<usize, Conn>,
    /// Owners in the last published config, and its revision.
    published: (Vec<usize>, i64),
    /// Configs fetched and not yet handed over.
    configs: VecDeque<Vec<u8>>,
    /// The application's view: `(seqno, write id)` per vbucket.
    view: Vec<Vec<(u64, u64)>>,
    next_id: u64,
    next_uuid: u64,
}

impl Model {
    fn new(seed: u64) -> Self {
        let truth: Vec<Truth> = (0..VBUCKETS)
            .map(|vb| Truth {
                owner: usize::from(vb) % (NODES - 1),
                log: FailoverLog::new(vec![FailoverEntry {
                    vbucket_uuid: 1000 + u64::from(vb),
                    seqno: 0,
                }]),
                items: Vec::new(),
            })
            .collect();
        let owners = truth.iter().map(|t| t.owner).collect();
        let mut model = Self {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            now: Instant::now(),
            orch: ClusterOrchestrator::new(OrchestratorConfig::new(), Checkpoint::new()),
            truth,
            up: [true; NODES],
            conns: BTreeMap::new(),
            published: (owners, 1),
            configs: VecDeque::new(),
            view: vec![Vec::new(); usize::from(VBUCKETS)],
            next_id: 1,
            next_uuid: 5000,
        };
        let config = model.config_json();
        model
            .orch
            .handle_config(&config, "seed", model.now)
            .unwrap();
        model.drain();
        model
    }

    fn config_json(&self) -> Vec<u8> {
        let (owners, rev) = &self.published;
        let json = serde_json::json!({
            "rev": rev, "revEpoch": 1, "name": "default", "uuid": "u",
            "nodeLocator": "vbucket",
            "nodesExt": (0..NODES).map(|n| serde_json::json!({
                "hostname": host(n), "services": {"kv": 11210}
            })).collect::<Vec<_>>(),
            "vBucketServerMap": {
                "hashAlgorithm": "CRC", "numReplicas": 0,
                "serverList": (0..NODES).map(|n| format!("{}:11210", host(n))).collect::<Vec<_>>(),
                "vBucketMap": owners.iter().map(|o| vec![*o]).collect::<Vec<_>>(),
            }
        });
        serde_json::to_vec(&json).unwrap()
    }

    fn publish(&mut self) {
        self.published = (
            self.truth.iter().map(|t| t.owner).collect(),
            self.published.1 + 1,
        );
        // Some connections get it pushed, behind what they already queued.
        let config = Bytes::from(self.config_json());
        let ready: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.ready)
            .map(|(n, _)| *n)
            .collect();
        for n in ready {
            if self.rng.below(2) == 0
                && let Some(conn) = self.conns.get_mut(&n)
            {
                conn.queue.push_back(Event::ClusterConfig {
                    status: Status::Success,
                    config: config.clone(),
                });
            }
        }
    }

    /// Carries out every action the orchestrator has.
    fn drain(&mut self) {
        while let Some(action) = self.orch.poll_action() {
            self.apply(action);
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Connect(node) => {
                let n = node_of(&node.address);
                self.conns.insert(n, Conn::default());
            }
            Action::Disconnect(address) => {
                self.conns.remove(&node_of(&address));
            }
            Action::OpenStream {
                node,
                vbucket,
                start,
                end,
            } => {
                assert_eq!(end, None);
                self.open(node_of(&node), vbucket, start);
            }
            Action::CloseStream { node, vbucket } => {
                if let Some(conn) = self.conns.get_mut(&node_of(&node))
                    && conn.streams.remove(&vbucket)
                {
                    conn.queue.push_back(Event::StreamEnded {
                        stream_id: None,
                        vbucket,
                        reason: StreamEndReason::Closed,
                        credit: Credit::NONE,
                    });
                }
            }
            Action::RefreshConfig { .. } => {
                let config = self.config_json();
                self.configs.push_back(config);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A stream request reaching node `n`.
    fn open(&mut self, n: usize, vb: u16, start: StreamStart) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return; // a connection already reported lost
        };
        assert!(conn.ready, "stream opened before the handshake");
        assert!(conn.streams.insert(vb), "vb {vb} opened twice on n{n}");
        let truth = &self.truth[usize::from(vb)];
        if truth.owner != n {
            conn.streams.remove(&vb);
            // Half the refusals carry the node's config (as published).
            let body = if self.rng.below(2) == 0 {
                Bytes::from(self.config_json())
            } else {
                Bytes::new()
            };
            let Some(conn) = self.conns.get_mut(&n) else {
                return;
            };
            conn.queue.push_back(Event::StreamFailed {
                stream_id: None,
                vbucket: vb,
                status: Status::NotMyVbucket,
                body,
            });
            return;
        }
        let position = match start {
            StreamStart::Beginning => StreamPosition::default(),
            StreamStart::Position(p) => p,
            other => panic!("unexpected start {other:?}"),
        };
        let resume = position.resume();
        let query = RollbackQuery {
            start: resume.start_seqno,
            vbucket_uuid: resume.vbucket_uuid,
            snap_start: resume.snap_start_seqno,
            snap_end: resume.snap_end_seqno,
            high_seqno: truth.high(),
            ..RollbackQuery::default()
        };
        let mut from = resume.start_seqno;
        if let Some(r) = needs_rollback(&truth.log, &query) {
            conn.queue.push_back(Event::Rollback {
                stream_id: None,
                vbucket: vb,
                seqno: r,
            });
            from = r;
        }
        conn.queue.push_back(Event::StreamOpened {
            stream_id: None,
            vbucket: vb,
            failover_log: truth.log.clone(),
        });
        let rest: Vec<(u64, u64)> = truth.items.iter().copied().filter(|i| i.0 > from).collect();
        if let (Some(first), Some(last)) = (rest.first(), rest.last()) {
            conn.queue.push_back(marker(vb, first.0, last.0));
            for (seqno, id) in rest {
                conn.queue.push_back(mutation(vb, seqno, id));
            }
        }
    }

    fn write(&mut self, vb: u16) {
        let id = self.next_id;
        self.next_id += 1;
        let truth = &mut self.truth[usize::from(vb)];
        let seqno = truth.high() + 1;
        truth.items.push((seqno, id));
        let owner = truth.owner;
        if let Some(conn) = self.conns.get_mut(&owner)
            && conn.streams.contains(&vb)
        {
            conn.queue.push_back(marker(vb, seqno, seqno));
            conn.queue.push_back(mutation(vb, seqno, id));
        }
    }

    /// Rebalance: `vb` moves to `to` with its history.
    fn move_vbucket(&mut self, vb: u16, to: usize) {
        let from = std::mem::replace(&mut self.truth[usize::from(vb)].owner, to);
        if let Some(conn) = self.conns.get_mut(&from)
            && conn.streams.remove(&vb)
        {
            conn.queue.push_back(Event::StreamEnded {
                stream_id: None,
                vbucket: vb,
                reason: StreamEndReason::StateChanged,
                credit: Credit::NONE,
            });
        }
    }

    /// The connection to `n` drops; what it had not delivered is lost.
    fn kill(&mut self, n: usize) {
        if self.conns.remove(&n).is_some() {
            self.orch.handle_node_lost(&addr(n), self.now);
        }
    }

    /// Node `n` dies; replicas elsewhere are promoted, each missing up to
    /// two of the newest changes, on a new branch.
    fn failover(&mut self, n: usize) {
        self.up[n] = false;
        self.kill(n);
        let alive: Vec<usize> = (0..NODES).filter(|m| self.up[*m]).collect();
        for vb in 0..VBUCKETS {
            if self.truth[usize::from(vb)].owner != n {
                continue;
            }
            let to = self.rng.pick(&alive).unwrap();
            let lost = self.rng.below(3);
            let uuid = self.next_uuid;
            self.next_uuid += 1;
            let truth = &mut self.truth[usize::from(vb)];
            let branch = truth.high().saturating_sub(lost);
            truth.items.retain(|i| i.0 <= branch);
            push_branch(&mut truth.log, uuid, branch);
            truth.owner = to;
        }
    }

    /// Hands over up to `count` events of node `n`.
    fn deliver(&mut self, n: usize, count: usize) {
        for _ in 0..count {
            let Some(event) = self.conns.get_mut(&n).and_then(|c| c.queue.pop_front()) else {
                return;
            };
            if let Some(event) = self.orch.handle_node_event(&addr(n), event, None, self.now) {
                self.apply_to_view(&event);
            }
            self.drain();
        }
    }

    fn apply_to_view(&mut self, event: &Event) {
        match event {
            Event::Rollback { vbucket, seqno, .. } => {
                self.view[usize::from(*vbucket)].retain(|i| i.0 <= *seqno);
            }
            Event::Mutation(m, _) => {
                let view = &mut self.view[usize::from(m.vbucket)];
                let last = view.last().map_or(0, |i| i.0);
                assert!(
                    m.by_seqno > last,
                    "vb {} got seqno {} again (have {last})",
                    m.vbucket,
                    m.by_seqno
                );
                view.push((m.by_seqno, m.cas));
            }
            _ => {}
        }
    }

    /// Completes pending connections (a dead node refuses).
    fn complete_connects(&mut self) {
        let pending: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.ready)
            .map(|(n, _)| *n)
            .collect();
        for n in pending {
            if self.up[n] {
                if let Some(conn) = self.conns.get_mut(&n) {
                    conn.ready = true;
                }
                self.orch.handle_node_connected(&addr(n), self.now);
            } else {
                self.conns.remove(&n);
                self.orch.handle_node_lost(&addr(n), self.now);
            }
            self.drain();
        }
    }

    fn deliver_config(&mut self) {
        if let Some(config) = self.configs.pop_front() {
            self.orch.handle_config(&config, "seed", self.now).unwrap();
            self.drain();
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.orch.handle_timeout(self.now);
        self.drain();
    }

    /// One random step of the schedule.
    fn step(&mut self) {
        let vb = self.rng.below(u64::from(VBUCKETS)) as u16;
        let n = self.rng.below(NODES as u64) as usize;
        let alive: Vec<usize> = (0..NODES).filter(|m| self.up[*m]).collect();
        match self.rng.below(100) {
            0..=34 => self.write(vb),
            35..=59 => {
                let count = self.rng.below(6) as usize + 1;
                self.deliver(n, count);
            }
            60..=67 => self.complete_connects(),
            68..=75 => self.deliver_config(),
            76..=84 => {
                let ms = self.rng.below(400);
                self.advance(Duration::from_millis(ms));
            }
            85..=89 => {
                let to = self.rng.pick(&alive).unwrap();
                self.move_vbucket(vb, to);
                if self.rng.below(2) == 0 {
                    self.publish();
                }
            }
            90..=92 => self.publish(),
            93..=95 => self.kill(n),
            96..=97 => {
                if alive.len() > 1 && self.up[n] {
                    self.failover(n);
                    if self.rng.below(2) == 0 {
                        self.publish();
                    }
                }
            }
            _ => self.up[n] = true,
        }
    }

    /// Heals the cluster and runs until every stream is idle.
    fn settle(&mut self) {
        self.up = [true; NODES];
        self.publish();
        for _ in 0..10_000 {
            self.complete_connects();
            while !self.configs.is_empty() {
                self.deliver_config();
            }
            for n in 0..NODES {
                self.deliver(n, usize::MAX);
            }
            let busy = self.conns.values().any(|c| !c.queue.is_empty() || !c.ready)
                || !self.configs.is_empty();
            let streaming = (0..VBUCKETS).all(|vb| {
                matches!(
                    self.orch.vbucket_status(vb),
                    Some(dcp_proto::cluster::VbucketStatus::Streaming { .. })
                )
            });
            if !busy && streaming {
                return;
            }
            match self.orch.poll_timeout() {
                Some(at) => {
                    self.now = self.now.max(at);
                    self.orch.handle_timeout(self.now);
                    self.drain();
                }
                None => panic!("stuck with nothing scheduled"),
            }
        }
        panic!("did not settle");
    }

    fn check(&self, seed: u64) {
        for vb in 0..VBUCKETS {
            let truth = &self.truth[usize::from(vb)];
            assert_eq!(
                self.view[usize::from(vb)],
                truth.items,
                "seed {seed}: vb {vb} differs from the bucket"
            );
            let position = self.orch.position(vb).unwrap();
            assert_eq!(position.last_seqno, truth.high(), "seed {seed}: vb {vb}");
            assert_eq!(position.failover_log, truth.log, "seed {seed}: vb {vb}");
        }
    }
}

fn marker(vbucket: u16, start: u64, end: u64) -> Event {
    Event::SnapshotMarker(
        SnapshotMarker {
            vbucket,
            opaque: 1,
            stream_id: None,
            start,
            end,
            flags: SnapshotFlags::MEMORY,
            format: MarkerFormat::V1,
        },
        Credit::NONE,
    )
}

fn mutation(vbucket: u16, seqno: u64, id: u64) -> Event {
    Event::Mutation(
        Mutation {
            vbucket,
            opaque: 1,
            stream_id: None,
            cas: id,
            datatype: Datatype::RAW,
            by_seqno: seqno,
            rev_seqno: 1,
            flags: 0,
            expiration: 0,
            lock_time: 0,
            nru: 0,
            key: Bytes::from(format!("k{id}")),
            value: Bytes::new(),
        },
        Credit::NONE,
    )
}

#[test]
fn nothing_is_lost_across_topology_changes() {
    for seed in 1..=300 {
        let mut model = Model::new(seed);
        for _ in 0..400 {
            model.step();
        }
        model.settle();
        model.check(seed);
    }
}

/// The checkpoint taken mid-schedule resumes a fresh orchestrator without
/// loss.
#[test]
fn a_checkpoint_resumes_a_new_process() {
    for seed in 1..=50 {
        let mut model = Model::new(seed);
        for _ in 0..200 {
            model.step();
        }
        let checkpoint = model.orch.checkpoint();
        // A new process: new connections, the old ones drop.
        model.conns.clear();
        model.configs.clear();
        model.orch = ClusterOrchestrator::new(OrchestratorConfig::new(), checkpoint);
        let config = model.config_json();
        model
            .orch
            .handle_config(&config, "seed", model.now)
            .unwrap();
        model.drain();
        for _ in 0..200 {
            model.step();
        }
        model.settle();
        model.check(seed);
    }
}
