//! The cluster orchestrator on a virtual clock: configs, node connections
//! and stream events go in, actions come out (behavior.md §8, §2.4, §2.7).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dcp_proto::cluster::{
    Action, ClusterOrchestrator, ConfigOutcome, ConfigRejected, ConfigVersion, InitialStart,
    NodeAddress, NodeStatus, OrchestratorConfig, StreamFailure, VbucketSelection, VbucketStatus,
};
use dcp_proto::codec::{Datatype, Status};
use dcp_proto::consumer::{Credit, Event, StreamStart};
use dcp_proto::msg::{
    FailoverEntry, FailoverLog, MarkerFormat, Mutation, SnapshotFlags, SnapshotMarker,
    StreamEndReason,
};
use dcp_proto::session::{Checkpoint, StreamPosition};

const VBUCKETS: usize = 12;
const MS: Duration = Duration::from_millis(1);

fn addr(host: &str) -> NodeAddress {
    NodeAddress::new(host, 11210)
}

/// A bucket config over `hosts` with `map[vb] = [active, replica...]`
/// (indices into `hosts`, -1 for none).
fn config(epoch: i64, rev: i64, hosts: &[&str], map: &[Vec<i64>]) -> Vec<u8> {
    let json = serde_json::json!({
        "rev": rev,
        "revEpoch": epoch,
        "name": "default",
        "uuid": "b0b0",
        "nodeLocator": "vbucket",
        "nodesExt": hosts.iter().map(|h| serde_json::json!({
            "hostname": h, "services": {"kv": 11210, "kvSSL": 11207, "mgmt": 8091}
        })).collect::<Vec<_>>(),
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": 1,
            "serverList": hosts.iter().map(|h| format!("{h}:11210")).collect::<Vec<_>>(),
            "vBucketMap": map,
        }
    });
    serde_json::to_vec(&json).unwrap()
}

/// vbucket `vb` active on `owner(vb)`, replica on the next node.
fn map_by(nodes: usize, owner: impl Fn(usize) -> usize) -> Vec<Vec<i64>> {
    (0..VBUCKETS)
        .map(|vb| {
            let a = owner(vb);
            vec![a as i64, ((a + 1) % nodes) as i64]
        })
        .collect()
}

/// Three nodes, vbuckets 0-3 on n1, 4-7 on n2, 8-11 on n3.
fn three_nodes(rev: i64) -> Vec<u8> {
    config(1, rev, &["n1", "n2", "n3"], &map_by(3, |vb| vb / 4))
}

fn log(entries: &[(u64, u64)]) -> FailoverLog {
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

fn opened(vbucket: u16, entries: &[(u64, u64)]) -> Event {
    Event::StreamOpened {
        stream_id: None,
        vbucket,
        failover_log: log(entries),
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

fn mutation(vbucket: u16, seqno: u64) -> Event {
    Event::Mutation(
        Mutation {
            vbucket,
            opaque: 1,
            stream_id: None,
            cas: seqno,
            datatype: Datatype::RAW,
            by_seqno: seqno,
            rev_seqno: 1,
            flags: 0,
            expiration: 0,
            lock_time: 0,
            nru: 0,
            key: Bytes::from(format!("k{seqno}")),
            value: Bytes::from_static(b"v"),
        },
        Credit::NONE,
    )
}

fn ended(vbucket: u16, reason: StreamEndReason) -> Event {
    Event::StreamEnded {
        stream_id: None,
        vbucket,
        reason,
        credit: Credit::NONE,
    }
}

fn failed(vbucket: u16, status: Status) -> Event {
    Event::StreamFailed {
        stream_id: None,
        vbucket,
        status,
        body: Bytes::new(),
    }
}

/// The orchestrator and a virtual clock.
struct Sim {
    orch: ClusterOrchestrator,
    now: Instant,
}

impl Sim {
    fn new(settings: OrchestratorConfig) -> Self {
        Self::resume(settings, Checkpoint::new())
    }

    fn resume(settings: OrchestratorConfig, checkpoint: Checkpoint) -> Self {
        Self {
            orch: ClusterOrchestrator::new(settings, checkpoint),
            now: Instant::now(),
        }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.orch.poll_action()).collect()
    }

    fn config(&mut self, json: &[u8]) -> ConfigOutcome {
        self.orch.handle_config(json, "seed", self.now).unwrap()
    }

    fn connected(&mut self, host: &str) {
        self.orch.handle_node_connected(&addr(host), self.now);
    }

    fn lost(&mut self, host: &str) {
        self.orch.handle_node_lost(&addr(host), self.now);
    }

    fn event(&mut self, host: &str, event: Event) -> bool {
        self.orch.handle_stream_event(&addr(host), &event, self.now)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.orch.handle_timeout(self.now);
    }

    /// Moves the clock to the next deadline.
    fn wake(&mut self) -> Duration {
        let at = self.orch.poll_timeout().expect("a deadline");
        let waited = at.saturating_duration_since(self.now);
        self.now = at;
        self.orch.handle_timeout(at);
        waited
    }

    /// Connects every node the orchestrator asked for; returns the streams
    /// opened, per vbucket.
    fn connect_all(&mut self) -> Vec<(String, u16, StreamStart)> {
        let mut opens = Vec::new();
        let mut pending = self.actions();
        while !pending.is_empty() {
            let mut next = Vec::new();
            for action in pending {
                match action {
                    Action::Connect(node) => {
                        self.orch.handle_node_connected(&node.address, self.now);
                        next.extend(self.actions());
                    }
                    Action::OpenStream {
                        node,
                        vbucket,
                        start,
                        ..
                    } => opens.push((node.host().to_owned(), vbucket, start)),
                    _ => {}
                }
            }
            pending = next;
        }
        opens.sort_by_key(|(_, vb, _)| *vb);
        opens
    }

    /// Accepts every stream in `opens` with failover log `[(uuid, 0)]`.
    fn accept(&mut self, opens: &[(String, u16, StreamStart)], uuid: u64) {
        for (host, vb, _) in opens {
            assert!(self.event(host, opened(*vb, &[(uuid, 0)])));
        }
    }

    fn status(&self, vb: u16) -> VbucketStatus {
        self.orch.vbucket_status(vb).unwrap()
    }
}

fn opens_of(actions: &[Action]) -> Vec<(String, u16, StreamStart)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::OpenStream {
                node,
                vbucket,
                start,
                ..
            } => Some((node.host().to_owned(), *vbucket, start.clone())),
            _ => None,
        })
        .collect()
}

/// Runs the clock until a stream opens: the time waited, the config
/// fetches asked for meanwhile, the opens.
fn until_open(sim: &mut Sim) -> (Duration, usize, Vec<(String, u16, StreamStart)>) {
    let mut fetches = refreshes(&sim.actions());
    let mut waited = Duration::ZERO;
    loop {
        waited += sim.wake();
        let actions = sim.actions();
        fetches += refreshes(&actions);
        let opens = opens_of(&actions);
        if !opens.is_empty() {
            return (waited, fetches, opens);
        }
    }
}

fn refreshes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::RefreshConfig { .. }))
        .count()
}

/// A cluster streaming: three nodes, every vbucket open with uuid 0xA.
fn streaming() -> Sim {
    let mut sim = Sim::new(OrchestratorConfig::new());
    sim.config(&three_nodes(10));
    let opens = sim.connect_all();
    sim.accept(&opens, 0xA);
    sim
}

/// Streams `seqnos` in one snapshot `start..=end` on `host`.
fn stream(sim: &mut Sim, host: &str, vb: u16, (start, end): (u64, u64), seqnos: &[u64]) {
    assert!(sim.event(host, marker(vb, start, end)));
    for s in seqnos {
        assert!(sim.event(host, mutation(vb, *s)));
    }
}

#[test]
fn initial_config_connects_and_opens_every_vbucket_on_its_active_node() {
    let mut sim = Sim::new(OrchestratorConfig::new());
    assert_eq!(sim.orch.poll_timeout(), None, "nothing before a config");
    assert_eq!(
        sim.config(&three_nodes(10)),
        ConfigOutcome::Applied(ConfigVersion { epoch: 1, rev: 10 })
    );
    let actions = sim.actions();
    let connects: Vec<_> = actions
        .iter()
        .map(|a| match a {
            Action::Connect(node) => (node.address.host().to_owned(), node.tls_port),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        connects,
        [
            ("n1".to_owned(), Some(11207)),
            ("n2".to_owned(), Some(11207)),
            ("n3".to_owned(), Some(11207))
        ]
    );
    // No stream before the node's handshake.
    assert_eq!(sim.status(0), VbucketStatus::Waiting);
    sim.connected("n2");
    let opens = opens_of(&sim.actions());
    assert_eq!(
        opens,
        (4..8)
            .map(|vb| ("n2".to_owned(), vb, StreamStart::Beginning))
            .collect::<Vec<_>>()
    );
    sim.connected("n1");
    sim.connected("n3");
    let opens = opens_of(&sim.actions());
    assert_eq!(opens.len(), 8);
    assert!(opens.iter().all(|(host, vb, _)| {
        let expected = ["n1", "n2", "n3"][usize::from(*vb) / 4];
        host == expected
    }));
    assert_eq!(sim.status(9), VbucketStatus::Opening { node: addr("n3") });
    assert!(sim.event("n3", opened(9, &[(7, 0)])));
    assert_eq!(sim.status(9), VbucketStatus::Streaming { node: addr("n3") });
    // The checkpoint has every vbucket (started from the beginning).
    let cp = sim.orch.checkpoint();
    assert_eq!(cp.vbuckets.len(), VBUCKETS);
    assert_eq!(cp.vbuckets[&9].failover_log, log(&[(7, 0)]));

    // The config is polled, rotating over connected nodes.
    assert_eq!(sim.wake(), Duration::from_millis(2500));
    let mut vias = BTreeSet::new();
    for _ in 0..3 {
        let actions = sim.actions();
        assert_eq!(refreshes(&actions), 1);
        if let Some(Action::RefreshConfig { via: Some(via) }) = actions.first() {
            vias.insert(via.host().to_owned());
        }
        assert_eq!(sim.wake(), Duration::from_millis(2500));
    }
    assert_eq!(vias.len(), 3);
}

#[test]
fn resumes_from_a_checkpoint() {
    let mut checkpoint = Checkpoint::new();
    let mut position = StreamPosition::at(log(&[(0xA, 0)]), 40);
    position.snapshot_start = 35;
    position.snapshot_end = 50;
    checkpoint.vbuckets.insert(5, position.clone());
    let mut sim = Sim::resume(OrchestratorConfig::new(), checkpoint);
    assert_eq!(sim.orch.checkpoint().vbuckets[&5], position);
    sim.config(&three_nodes(10));
    let opens = sim.connect_all();
    assert_eq!(
        opens[5],
        ("n2".to_owned(), 5, StreamStart::Position(position.clone()))
    );
    assert_eq!(opens[4].2, StreamStart::Beginning);
    assert_eq!(sim.orch.checkpoint().vbuckets[&5], position);
}

/// Rebalance: the old owner ends the stream (state changed) before the new
/// config is known; the stale config sends the retry back to the old owner,
/// which answers NOT_MY_VBUCKET; the new config reopens on the new owner
/// from the saved position, same uuid.
#[test]
fn rebalance_reopens_on_the_new_owner_from_the_saved_position() {
    let mut sim = streaming();
    stream(&mut sim, "n2", 5, (1, 10), &[1, 2, 3]);
    stream(&mut sim, "n2", 5, (4, 12), &[4, 6]);
    let saved = sim.orch.position(5).unwrap();
    assert_eq!(
        (saved.last_seqno, saved.snapshot_start, saved.snapshot_end),
        (6, 4, 12)
    );

    assert!(sim.event("n2", ended(5, StreamEndReason::StateChanged)));
    assert_eq!(sim.status(5), VbucketStatus::Waiting);
    let actions = sim.actions();
    assert_eq!(refreshes(&actions), 1, "{actions:?}");
    assert!(opens_of(&actions).is_empty());

    // Stale config: the retry goes to n2 again, which refuses.
    assert_eq!(sim.wake(), Duration::from_millis(200));
    assert_eq!(
        opens_of(&sim.actions()),
        [("n2".to_owned(), 5, StreamStart::Position(saved.clone()))]
    );
    assert!(sim.event("n2", failed(5, Status::NotMyVbucket)));
    // Asks for a config again (at most once per 250 ms) and retries on n2
    // after a longer delay.
    let (waited, fetches, opens) = until_open(&mut sim);
    assert_eq!((waited, fetches), (400 * MS, 1));
    assert_eq!(opens.len(), 1);
    assert!(sim.event("n2", failed(5, Status::NotMyVbucket)));

    // The new config: vb 5 now on n3. It opens there at once.
    let mut map = map_by(3, |vb| vb / 4);
    map[5] = vec![2, 0];
    sim.config(&config(1, 11, &["n1", "n2", "n3"], &map));
    let actions = sim.actions();
    assert_eq!(
        opens_of(&actions),
        [("n3".to_owned(), 5, StreamStart::Position(saved.clone()))]
    );
    // Same history on the new node: no rollback, the stream continues.
    assert!(sim.event("n3", opened(5, &[(0xA, 0)])));
    assert!(sim.event("n3", marker(5, 4, 12)));
    assert!(sim.event("n3", mutation(5, 9)));
    assert!(sim.event("n3", mutation(5, 12)));
    let position = sim.orch.position(5).unwrap();
    assert_eq!((position.last_seqno, position.snapshot_end), (12, 12));
    assert_eq!(position.failover_log, log(&[(0xA, 0)]));
    // Late events of the old stream are stale.
    assert!(!sim.event("n2", mutation(5, 13)));
    assert_eq!(sim.orch.position(5).unwrap().last_seqno, 12);
    // Other vbuckets were not touched.
    assert!(sim.orch.nodes().all(|(_, s)| s == NodeStatus::Connected));
    assert_eq!(sim.status(4), VbucketStatus::Streaming { node: addr("n2") });
}

/// Rebalance where the new config arrives first: the old stream is closed,
/// the new one opens at once; the old node's leftovers are stale.
#[test]
fn config_first_closes_the_old_stream_and_moves_at_once() {
    let mut sim = streaming();
    stream(&mut sim, "n1", 2, (1, 5), &[1, 2, 5]);
    let saved = sim.orch.position(2).unwrap();
    let mut map = map_by(3, |vb| vb / 4);
    map[2] = vec![1, 0];
    sim.config(&config(1, 11, &["n1", "n2", "n3"], &map));
    let actions = sim.actions();
    assert_eq!(
        actions,
        [
            Action::CloseStream {
                node: addr("n1"),
                vbucket: 2
            },
            Action::OpenStream {
                node: addr("n2"),
                vbucket: 2,
                start: StreamStart::Position(saved.clone()),
                end: None
            }
        ]
    );
    // Whatever n1 still sends about vb 2 is stale, its end included.
    assert!(!sim.event("n1", marker(2, 6, 8)));
    assert!(!sim.event("n1", mutation(2, 6)));
    assert!(!sim.event("n1", ended(2, StreamEndReason::Closed)));
    assert!(sim.actions().is_empty());
    assert_eq!(sim.orch.position(2), Some(saved));
    // Moving back to n1 later works (its close completed).
    assert!(sim.event("n2", opened(2, &[(0xA, 0)])));
    sim.config(&three_nodes(12));
    let actions = sim.actions();
    assert_eq!(
        opens_of(&actions),
        [(
            "n1".to_owned(),
            2,
            StreamStart::Position(sim.orch.position(2).unwrap())
        )]
    );
}

/// A vbucket moving back to a node whose close has not completed waits for
/// that stream's end.
#[test]
fn reopening_on_a_node_waits_for_its_close_to_complete() {
    let mut sim = streaming();
    let mut map = map_by(3, |vb| vb / 4);
    map[2] = vec![1, 0];
    sim.config(&config(1, 11, &["n1", "n2", "n3"], &map));
    assert_eq!(opens_of(&sim.actions()).len(), 1);
    // Back to n1 before its close completed.
    sim.config(&three_nodes(12));
    let actions = sim.actions();
    assert_eq!(
        actions,
        [Action::CloseStream {
            node: addr("n2"),
            vbucket: 2
        }]
    );
    assert!(!sim.event("n1", ended(2, StreamEndReason::Closed)));
    let opens = opens_of(&sim.actions());
    assert_eq!(
        opens,
        [(
            "n1".to_owned(),
            2,
            StreamStart::Position(StreamPosition::at(log(&[(0xA, 0)]), 0))
        )]
    );
}

/// Failover: the node dies; reconnections back off; the new config
/// promotes replicas elsewhere; streams reopen there and obey the
/// rollback.
#[test]
fn failover_reopens_on_the_promoted_replica_and_obeys_rollback() {
    let mut sim = Sim::new(OrchestratorConfig::new().with_reconnect_backoff(100 * MS, 1000 * MS));
    sim.config(&three_nodes(10));
    let opens = sim.connect_all();
    sim.accept(&opens, 0xA);
    for vb in 8..12 {
        stream(&mut sim, "n3", vb, (1, 100), &[10, 20, 30]);
        stream(&mut sim, "n3", vb, (31, 100), &[40]);
    }
    let before = sim.orch.position(8).unwrap();

    sim.lost("n3");
    assert_eq!(sim.status(8), VbucketStatus::Waiting);
    let actions = sim.actions();
    assert_eq!(refreshes(&actions), 1);
    assert!(matches!(
        sim.orch.node_status(&addr("n3")),
        Some(NodeStatus::Reconnecting { .. })
    ));
    // Leftovers of the dead connection are stale.
    assert!(!sim.event("n3", mutation(8, 50)));
    assert_eq!(sim.orch.position(8), Some(before.clone()));

    // Reconnection attempts back off: 100, 200, 400, 800, 1000, 1000 ms.
    let mut delays = Vec::new();
    for _ in 0..6 {
        let Some(NodeStatus::Reconnecting { at }) = sim.orch.node_status(&addr("n3")) else {
            panic!("not reconnecting");
        };
        delays.push((at - sim.now).as_millis());
        // Config polls may wake the clock before the attempt.
        while !sim
            .actions()
            .iter()
            .any(|a| matches!(a, Action::Connect(n) if n.address == addr("n3")))
        {
            sim.wake();
        }
        sim.lost("n3");
    }
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);

    // The failover config: n3 gone, its vbuckets active on n1 (replicas).
    let map = map_by(2, |vb| if (4..8).contains(&vb) { 1 } else { 0 });
    sim.config(&config(1, 11, &["n1", "n2"], &map));
    let actions = sim.actions();
    let opens = opens_of(&actions);
    assert_eq!(
        opens,
        (8..12)
            .map(|vb| (
                "n1".to_owned(),
                vb,
                StreamStart::Position(sim.orch.position(vb).unwrap())
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(opens[0].2, StreamStart::Position(before));
    assert_eq!(
        sim.orch.node_status(&addr("n3")),
        None,
        "no more reconnections"
    );
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Connect(_))),
        "{actions:?}"
    );
    // The promoted replica branched at 30: roll back, then stream on.
    assert!(sim.event(
        "n1",
        Event::Rollback {
            stream_id: None,
            vbucket: 8,
            seqno: 30
        }
    ));
    let rolled = sim.orch.position(8).unwrap();
    assert_eq!(
        (
            rolled.last_seqno,
            rolled.snapshot_start,
            rolled.snapshot_end
        ),
        (30, 30, 30)
    );
    assert!(sim.event("n1", opened(8, &[(0xB, 30), (0xA, 0)])));
    stream(&mut sim, "n1", 8, (31, 35), &[31, 35]);
    let after = sim.orch.checkpoint().vbuckets[&8].clone();
    assert_eq!(after.last_seqno, 35);
    assert_eq!(after.failover_log, log(&[(0xB, 30), (0xA, 0)]));
}

/// A lost node that comes back (same config) gets its streams back.
#[test]
fn lost_connection_reconnects_and_resumes() {
    let mut sim = streaming();
    stream(&mut sim, "n1", 0, (1, 3), &[1, 2, 3]);
    let saved = sim.orch.position(0).unwrap();
    sim.lost("n1");
    sim.actions();
    assert_eq!(sim.wake(), 200 * MS);
    let actions = sim.actions();
    assert!(
        actions.contains(&Action::Connect(
            sim.orch
                .config()
                .unwrap()
                .servers()
                .first()
                .unwrap()
                .clone()
        ))
    );
    assert_eq!(
        sim.orch.node_status(&addr("n1")),
        Some(NodeStatus::Connecting)
    );
    sim.connected("n1");
    let opens = opens_of(&sim.actions());
    assert_eq!(opens.len(), 4);
    assert_eq!(opens[0], ("n1".to_owned(), 0, StreamStart::Position(saved)));
    assert_eq!(
        opens[1].2,
        StreamStart::Position(sim.orch.position(1).unwrap())
    );
    // A success resets the backoff.
    sim.lost("n1");
    assert_eq!(
        sim.orch.node_status(&addr("n1")),
        Some(NodeStatus::Reconnecting {
            at: sim.now + 200 * MS
        })
    );
}

/// Rebalance out: the removed node's vbuckets move, its connection closes.
#[test]
fn removed_node_is_disconnected() {
    let mut sim = streaming();
    for vb in 8..12 {
        assert!(sim.event("n3", ended(vb, StreamEndReason::StateChanged)));
    }
    let actions = sim.actions();
    assert_eq!(refreshes(&actions), 1, "one fetch for the burst");
    let map = map_by(2, |vb| vb % 2);
    sim.config(&config(1, 11, &["n1", "n2"], &map));
    let actions = sim.actions();
    assert!(actions.contains(&Action::Disconnect(addr("n3"))));
    // Streams of vbuckets that moved between n1 and n2 are closed and
    // reopened; n3's are reopened.
    let opens = opens_of(&actions);
    let moved: BTreeSet<u16> = opens.iter().map(|(_, vb, _)| *vb).collect();
    let expected: BTreeSet<u16> = (0..12u16)
        .filter(|vb| *vb >= 8 || (usize::from(*vb) / 4) != usize::from(*vb) % 2)
        .collect();
    assert_eq!(moved, expected);
    assert!(
        opens
            .iter()
            .all(|(host, vb, _)| host == ["n1", "n2"][usize::from(*vb) % 2])
    );
    assert_eq!(sim.orch.node_status(&addr("n3")), None);
    assert!(!sim.event("n3", mutation(9, 1)));
}

/// A node added (back): connected, and the vbuckets moved to it open there
/// once connected.
#[test]
fn added_node_gets_its_vbuckets() {
    let mut sim = Sim::new(OrchestratorConfig::new());
    sim.config(&config(1, 10, &["n1", "n2"], &map_by(2, |vb| vb % 2)));
    let opens = sim.connect_all();
    sim.accept(&opens, 0xA);
    let map = map_by(3, |vb| vb % 3);
    sim.config(&config(1, 11, &["n1", "n2", "n3"], &map));
    let actions = sim.actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Connect(n) if n.address == addr("n3")))
    );
    let closes: Vec<u16> = actions
        .iter()
        .filter_map(|a| match a {
            Action::CloseStream { vbucket, .. } => Some(*vbucket),
            _ => None,
        })
        .collect();
    // Moved vbuckets: those whose owner changed.
    let moved: Vec<u16> = (0..12u16).filter(|vb| vb % 2 != vb % 3).collect();
    assert_eq!(closes, moved);
    // Moves between already-connected nodes open at once...
    let opens = opens_of(&actions);
    assert!(opens.iter().all(|(host, _, _)| host != "n3"));
    // ...those to n3 once it is connected.
    sim.connected("n3");
    let opens = opens_of(&sim.actions());
    assert_eq!(
        opens.iter().map(|(_, vb, _)| *vb).collect::<Vec<_>>(),
        [2, 5, 8, 11]
    );
}

/// A stale config: the node says NOT_MY_VBUCKET for a fresh stream; the
/// orchestrator fetches a config and retries with backoff on the config's
/// owner, never losing the position, then follows the new config.
#[test]
fn not_my_vbucket_with_a_stale_config() {
    let mut checkpoint = Checkpoint::new();
    checkpoint
        .vbuckets
        .insert(1, StreamPosition::at(log(&[(0xA, 0)]), 77));
    let mut sim = Sim::resume(OrchestratorConfig::new(), checkpoint.clone());
    sim.config(&three_nodes(10));
    sim.connect_all();
    let mut waits = Vec::new();
    for _ in 0..5 {
        assert!(sim.event("n1", failed(1, Status::NotMyVbucket)));
        let (waited, fetches, opens) = until_open(&mut sim);
        // A config fetch per refusal (plus periodic polls on long waits).
        assert!(fetches >= 1);
        waits.push(waited.as_millis());
        assert_eq!(
            opens,
            [(
                "n1".to_owned(),
                1,
                StreamStart::Position(checkpoint.vbuckets[&1].clone())
            )]
        );
    }
    assert_eq!(waits, [200, 400, 800, 1600, 3200]);
    assert_eq!(sim.orch.checkpoint().vbuckets[&1], checkpoint.vbuckets[&1]);
    // The fresh config moves it to n2: opened there without waiting.
    assert!(sim.event("n1", failed(1, Status::NotMyVbucket)));
    sim.actions();
    let mut map = map_by(3, |vb| vb / 4);
    map[1] = vec![1, 2];
    sim.config(&config(1, 11, &["n1", "n2", "n3"], &map));
    assert_eq!(
        opens_of(&sim.actions()),
        [(
            "n2".to_owned(),
            1,
            StreamStart::Position(checkpoint.vbuckets[&1].clone())
        )]
    );
}

#[test]
fn older_revisions_are_ignored() {
    let mut sim = streaming();
    let v = |epoch, rev| ConfigVersion { epoch, rev };
    let mut moved = map_by(3, |vb| vb / 4);
    moved[0] = vec![1, 0];
    // Older and equal revisions change nothing.
    for (epoch, rev) in [(1, 9), (1, 10), (0, 500)] {
        let outcome = sim.config(&config(epoch, rev, &["n1", "n2", "n3"], &moved));
        assert_eq!(
            outcome,
            ConfigOutcome::Stale {
                received: v(epoch, rev),
                current: v(1, 10)
            }
        );
        assert!(sim.actions().is_empty());
    }
    // A new epoch wins even with a lower revision.
    assert_eq!(
        sim.config(&config(2, 1, &["n1", "n2", "n3"], &moved)),
        ConfigOutcome::Applied(v(2, 1))
    );
    assert_eq!(opens_of(&sim.actions()).len(), 1);
    // Configs of another bucket, another size, or broken are refused.
    let other = String::from_utf8(three_nodes(50))
        .unwrap()
        .replace("b0b0", "c0c0");
    assert!(matches!(
        sim.orch.handle_config(other.as_bytes(), "seed", sim.now),
        Err(ConfigRejected::OtherBucket { .. })
    ));
    let small = config(2, 60, &["n1"], &[vec![0]]);
    assert!(matches!(
        sim.orch.handle_config(&small, "seed", sim.now),
        Err(ConfigRejected::VbucketCount {
            expected: 12,
            got: 1
        })
    ));
    assert!(matches!(
        sim.orch.handle_config(b"{\"rev\":", "seed", sim.now),
        Err(ConfigRejected::Invalid(_))
    ));
    assert_eq!(sim.orch.config().unwrap().version(), v(2, 1));
}

#[test]
fn a_subset_opens_only_its_vbuckets() {
    // Share 1 of 4: vbuckets 1, 5, 9 (on n1, n2, n3).
    let mut sim = Sim::new(OrchestratorConfig::new().with_vbuckets(VbucketSelection::share(1, 4)));
    sim.config(&three_nodes(10));
    let opens = sim.connect_all();
    assert_eq!(
        opens
            .iter()
            .map(|(h, vb, _)| (h.as_str(), *vb))
            .collect::<Vec<_>>(),
        [("n1", 1), ("n2", 5), ("n3", 9)]
    );
    assert_eq!(sim.orch.vbuckets().collect::<Vec<_>>(), [1, 5, 9]);
    assert_eq!(sim.orch.vbucket_status(0), None);
    // Events of other vbuckets are not this process's.
    assert!(!sim.event("n1", mutation(0, 1)));

    // Only 0-3 (all on n1): a single connection.
    let mut checkpoint = Checkpoint::new();
    checkpoint
        .vbuckets
        .insert(8, StreamPosition::at(log(&[(1, 0)]), 5));
    let mut sim = Sim::resume(
        OrchestratorConfig::new().with_vbuckets(VbucketSelection::only([0, 1, 2, 3, 4000])),
        checkpoint,
    );
    sim.config(&three_nodes(10));
    let actions = sim.actions();
    assert_eq!(actions.len(), 1);
    assert!(matches!(&actions[0], Action::Connect(n) if n.address == addr("n1")));
    sim.connected("n1");
    assert_eq!(opens_of(&sim.actions()).len(), 4);
    // Positions of other vbuckets stay out of this process's checkpoint.
    assert_eq!(
        sim.orch
            .checkpoint()
            .vbuckets
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
}

#[test]
fn a_vbucket_reaching_its_end_is_done() {
    let mut checkpoint = Checkpoint::new();
    // Already at its end: done without a stream.
    checkpoint
        .vbuckets
        .insert(2, StreamPosition::at(log(&[(1, 0)]), 30));
    let settings = OrchestratorConfig::new()
        .with_vbuckets(VbucketSelection::only([0, 1, 2]))
        .with_end_seqno(Some(20))
        .with_vbucket_end_seqno(1, 5);
    let mut sim = Sim::resume(settings, checkpoint);
    sim.config(&three_nodes(10));
    let actions = sim.actions();
    assert!(actions.contains(&Action::StreamDone { vbucket: 2 }));
    sim.connected("n1");
    let actions = sim.actions();
    assert_eq!(
        actions,
        [
            Action::OpenStream {
                node: addr("n1"),
                vbucket: 0,
                start: StreamStart::Beginning,
                end: Some(20)
            },
            Action::OpenStream {
                node: addr("n1"),
                vbucket: 1,
                start: StreamStart::Beginning,
                end: Some(5)
            }
        ]
    );
    sim.accept(&opens_of(&actions), 1);
    stream(&mut sim, "n1", 1, (1, 5), &[2, 5]);
    assert!(sim.event("n1", ended(1, StreamEndReason::Ok)));
    assert_eq!(sim.actions(), [Action::StreamDone { vbucket: 1 }]);
    assert_eq!(sim.status(1), VbucketStatus::Done);
    assert!(!sim.orch.is_finished());
    stream(&mut sim, "n1", 0, (1, 20), &[20]);
    assert!(sim.event("n1", ended(0, StreamEndReason::Ok)));
    assert_eq!(
        sim.actions(),
        [
            Action::StreamDone { vbucket: 0 },
            Action::Disconnect(addr("n1"))
        ]
    );
    assert!(sim.orch.is_finished());
    assert_eq!(sim.orch.poll_timeout(), None);
    assert_eq!(sim.orch.checkpoint().vbuckets[&1].last_seqno, 5);
}

#[test]
fn stream_end_reasons_and_refusals() {
    let mut sim = streaming();
    // Endless stream ended OK (e.g. a mapped reason): re-requested.
    assert!(sim.event("n1", ended(0, StreamEndReason::Ok)));
    assert!(sim.actions().is_empty());
    assert_eq!(sim.wake(), 200 * MS);
    assert_eq!(opens_of(&sim.actions()).len(), 1);
    // Too slow: re-requested at once, no config fetch.
    assert!(sim.event("n1", ended(1, StreamEndReason::Slow)));
    let actions = sim.actions();
    assert_eq!(opens_of(&actions).len(), 1);
    assert_eq!(refreshes(&actions), 0);
    // Backfill failed: backoff.
    assert!(sim.event("n1", ended(2, StreamEndReason::BackfillFailed)));
    assert!(opens_of(&sim.actions()).is_empty());
    // Filter empty, lost privileges, access refused: given up.
    assert!(sim.event("n2", ended(4, StreamEndReason::FilterEmpty)));
    assert!(sim.event("n2", ended(5, StreamEndReason::LostPrivileges)));
    assert!(sim.event("n2", failed(6, Status::Eaccess)));
    assert!(sim.event("n2", failed(7, Status::Rollback)));
    assert_eq!(
        sim.actions(),
        [
            Action::Fail {
                vbucket: 4,
                reason: StreamFailure::Ended(StreamEndReason::FilterEmpty)
            },
            Action::Fail {
                vbucket: 5,
                reason: StreamFailure::Ended(StreamEndReason::LostPrivileges)
            },
            Action::Fail {
                vbucket: 6,
                reason: StreamFailure::Refused(Status::Eaccess)
            },
            Action::Fail {
                vbucket: 7,
                reason: StreamFailure::Refused(Status::Rollback)
            },
            // n2 has nothing left.
            Action::Disconnect(addr("n2")),
        ]
    );
    assert_eq!(sim.status(4), VbucketStatus::Failed);
    // An unknown status: retried with backoff.
    assert!(sim.event("n3", failed(8, Status::Einternal)));
    assert_eq!(sim.wake(), 200 * MS);
    assert_eq!(opens_of(&sim.actions()).len(), 2, "vb 2 and vb 8");
}

#[test]
fn a_node_with_no_work_left_is_disconnected() {
    let mut sim = streaming();
    for vb in 4..8 {
        assert!(sim.event("n2", ended(vb, StreamEndReason::FilterEmpty)));
    }
    let actions = sim.actions();
    assert_eq!(actions.last(), Some(&Action::Disconnect(addr("n2"))));
    assert_eq!(sim.orch.node_status(&addr("n2")), None);
}

#[test]
fn streams_started_now_learn_their_position() {
    let mut sim = Sim::new(OrchestratorConfig::new().with_start(InitialStart::Now));
    sim.config(&three_nodes(10));
    let opens = sim.connect_all();
    assert!(opens.iter().all(|(_, _, s)| *s == StreamStart::Now));
    assert!(
        sim.orch.checkpoint().vbuckets.is_empty(),
        "positions unknown"
    );
    sim.accept(&opens, 0xA);
    // Reported by the consumer once resolved.
    sim.orch
        .handle_position(&addr("n1"), 0, StreamPosition::at(log(&[(0xA, 0)]), 500));
    // Or learned from the first change.
    stream(&mut sim, "n1", 1, (90, 95), &[91]);
    let cp = sim.orch.checkpoint();
    assert_eq!(cp.vbuckets.keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(cp.vbuckets[&0].last_seqno, 500);
    assert_eq!(
        (cp.vbuckets[&1].last_seqno, cp.vbuckets[&1].snapshot_start),
        (91, 90)
    );
    // A move resumes known positions, and restarts unknown ones from now.
    sim.lost("n1");
    sim.actions();
    sim.wake();
    sim.actions();
    sim.connected("n1");
    let opens = opens_of(&sim.actions());
    assert_eq!(
        opens[0].2,
        StreamStart::Position(StreamPosition::at(log(&[(0xA, 0)]), 500))
    );
    assert!(matches!(opens[1].2, StreamStart::Position(_)));
    assert_eq!(opens[2].2, StreamStart::Now);
}

#[test]
fn a_vbucket_without_an_active_copy_waits_for_a_config() {
    let mut sim = streaming();
    // Failover in progress: vb 9 has no active copy; its stream on n3 is
    // left alone until a config names an owner.
    let mut map = map_by(3, |vb| vb / 4);
    map[9] = vec![-1, -1];
    sim.config(&config(1, 11, &["n1", "n2", "n3"], &map));
    assert!(sim.actions().is_empty());
    stream(&mut sim, "n3", 9, (1, 1), &[1]);
    assert!(sim.event("n3", ended(9, StreamEndReason::StateChanged)));
    sim.actions();
    // No owner: nothing opens, whatever the delay.
    sim.advance(Duration::from_secs(1));
    assert!(opens_of(&sim.actions()).is_empty());
    map[9] = vec![0, 1];
    sim.config(&config(1, 12, &["n1", "n2", "n3"], &map));
    assert_eq!(opens_of(&sim.actions()).len(), 1);
}

#[test]
fn no_connected_node_refreshes_through_a_seed() {
    let mut sim = streaming();
    for host in ["n1", "n2", "n3"] {
        sim.lost(host);
    }
    let actions = sim.actions();
    assert_eq!(refreshes(&actions), 1, "through a node still connected");
    sim.advance(250 * MS);
    let actions = sim.actions();
    assert!(
        actions.contains(&Action::RefreshConfig { via: None }),
        "{actions:?}"
    );
}

/// Every kind of system event, fixed-struct or FlatBuffers, moves the
/// manifest uid the cluster-wide checkpoint resumes a stream with.
#[test]
fn system_events_of_every_kind_move_the_checkpointed_manifest_uid() {
    use dcp_proto::msg::{CollectionDetails, SystemEvent, SystemEventData};
    let mut sim = Sim::new(OrchestratorConfig::new());
    sim.config(&three_nodes(10));
    let opens = sim.connect_all();
    sim.accept(&opens, 0xA);
    let (host, vb) = (opens[0].0.clone(), opens[0].1);
    let name = Bytes::from_static(b"hotels");
    let modify =
        SystemEventData::ModifyCollection(CollectionDetails::new(3, 8, 9, name.clone(), Some(60)));
    let events = [
        (
            SystemEventData::CreateScope {
                manifest_uid: 1,
                scope_id: 8,
                name: Bytes::from_static(b"inventory"),
            },
            false,
        ),
        (
            SystemEventData::begin_collection(2, 8, 9, name.clone(), None),
            true,
        ),
        (modify, true),
        (
            SystemEventData::EndCollection {
                manifest_uid: 4,
                scope_id: 8,
                collection_id: 9,
                system: false,
            },
            false,
        ),
        (
            SystemEventData::DropScope {
                manifest_uid: 5,
                scope_id: 8,
                system: false,
            },
            true,
        ),
    ];
    assert!(sim.event(&host, marker(vb, 1, 5)));
    for (seqno, (data, flatbuffers)) in (1u64..).zip(events) {
        let event = SystemEvent::from_data(vb, 1, None, seqno, &data, flatbuffers).unwrap();
        assert!(sim.event(&host, Event::SystemEvent(event, Credit::NONE)));
        let position = &sim.orch.checkpoint().vbuckets[&vb];
        assert_eq!(
            (position.last_seqno, position.manifest_uid),
            (seqno, data.manifest_uid()),
            "{data:?}"
        );
    }
}
