//! The orchestrator with configs that arrive without being asked for:
//! pushed by a node (a `ClusterConfig` event through `handle_node_event`),
//! or carried by a NOT_MY_VBUCKET refusal; older revisions are ignored and
//! the periodic poll stays as the fallback.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dcp_proto::cluster::{Action, ClusterOrchestrator, NodeAddress, OrchestratorConfig};
use dcp_proto::codec::Status;
use dcp_proto::consumer::{Credit, Event};
use dcp_proto::msg::{FailoverEntry, FailoverLog, StreamEndReason};
use dcp_proto::session::Checkpoint;

const VBUCKETS: usize = 8;

fn addr(host: &str) -> NodeAddress {
    NodeAddress::new(host, 11210)
}

/// Two nodes; `owners[vb]` is the index of vb's active node.
fn config(rev: i64, owners: &[i64]) -> Vec<u8> {
    let hosts = ["n1", "n2"];
    serde_json::to_vec(&serde_json::json!({
        "rev": rev,
        "revEpoch": 1,
        "name": "default",
        "uuid": "b0b0",
        "nodeLocator": "vbucket",
        "nodesExt": hosts.iter().map(|h| serde_json::json!({
            "hostname": h, "services": {"kv": 11210}
        })).collect::<Vec<_>>(),
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": 1,
            "serverList": hosts.iter().map(|h| format!("{h}:11210")).collect::<Vec<_>>(),
            "vBucketMap": owners.iter().map(|o| vec![*o, 1 - *o]).collect::<Vec<_>>(),
        }
    }))
    .unwrap()
}

/// vbuckets 0-3 on n1, 4-7 on n2.
fn halves(rev: i64) -> Vec<u8> {
    let owners: Vec<i64> = (0..VBUCKETS).map(|vb| i64::from(vb >= 4)).collect();
    config(rev, &owners)
}

/// Like `halves` with `moved` on the other node.
fn with_moved(rev: i64, moved: &[usize]) -> Vec<u8> {
    let owners: Vec<i64> = (0..VBUCKETS)
        .map(|vb| {
            let home = i64::from(vb >= 4);
            if moved.contains(&vb) { 1 - home } else { home }
        })
        .collect();
    config(rev, &owners)
}

struct Sim {
    orch: ClusterOrchestrator,
    now: Instant,
}

impl Sim {
    /// Streaming every vbucket; the poll interval is a day.
    fn streaming() -> Self {
        let settings =
            OrchestratorConfig::new().with_config_poll_interval(Duration::from_secs(86_400));
        let mut sim = Sim {
            orch: ClusterOrchestrator::new(settings, Checkpoint::new()),
            now: Instant::now(),
        };
        sim.orch
            .handle_config(&halves(10), "seed", sim.now)
            .unwrap();
        loop {
            let actions = sim.actions();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                match action {
                    Action::Connect(node) => {
                        sim.orch.handle_node_connected(&node.address, sim.now);
                    }
                    Action::OpenStream { node, vbucket, .. } => {
                        assert!(sim.event(node.host(), opened(vbucket)).is_some());
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        sim
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.orch.poll_action()).collect()
    }

    fn event(&mut self, host: &str, event: Event) -> Option<Event> {
        self.orch
            .handle_node_event(&addr(host), event, None, self.now)
    }

    fn owner_in_force(&self, vb: u16) -> String {
        self.orch
            .config()
            .unwrap()
            .active_node(vb)
            .unwrap()
            .address
            .host()
            .to_owned()
    }
}

fn opened(vbucket: u16) -> Event {
    Event::StreamOpened {
        stream_id: None,
        vbucket,
        failover_log: FailoverLog::new(vec![FailoverEntry {
            vbucket_uuid: 0xA,
            seqno: 0,
        }]),
    }
}

fn pushed(json: Vec<u8>) -> Event {
    Event::ClusterConfig {
        status: Status::Success,
        config: Bytes::from(json),
    }
}

/// Actions as (what, host, vbucket).
fn brief(actions: &[Action]) -> Vec<(&'static str, String, Option<u16>)> {
    actions
        .iter()
        .map(|a| match a {
            Action::OpenStream { node, vbucket, .. } => {
                ("open", node.host().to_owned(), Some(*vbucket))
            }
            Action::CloseStream { node, vbucket } => {
                ("close", node.host().to_owned(), Some(*vbucket))
            }
            Action::RefreshConfig { .. } => ("refresh", String::new(), None),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn step(what: &'static str, host: &str, vb: u16) -> (&'static str, String, Option<u16>) {
    (what, host.to_owned(), Some(vb))
}

fn refusal(vbucket: u16, body: Vec<u8>) -> Event {
    Event::StreamFailed {
        stream_id: None,
        vbucket,
        status: Status::NotMyVbucket,
        body: Bytes::from(body),
    }
}

#[test]
fn a_pushed_config_moves_streams_at_once() {
    let mut sim = Sim::streaming();
    assert!(sim.event("n2", pushed(with_moved(11, &[0, 1]))).is_none());
    assert_eq!(
        brief(&sim.actions()),
        [
            step("close", "n1", 0),
            step("close", "n1", 1),
            step("open", "n2", 0),
            step("open", "n2", 1),
        ]
    );
    // The old owner's StateChanged end, arriving after the push, is the
    // end of a stream already closed: no fetch, nothing more.
    let end = Event::StreamEnded {
        stream_id: None,
        vbucket: 0,
        reason: StreamEndReason::StateChanged,
        credit: Credit::NONE,
    };
    assert!(sim.event("n1", end).is_none());
    assert!(sim.actions().is_empty());
    // Nothing to do before the day-long poll.
    assert_eq!(
        sim.orch.poll_timeout(),
        Some(sim.now + Duration::from_secs(86_400))
    );
}

#[test]
fn older_pushes_are_ignored() {
    let mut sim = Sim::streaming();
    sim.event("n1", pushed(with_moved(12, &[5])));
    assert_eq!(sim.actions().len(), 2);
    // A push of revision 11 crossing revision 12 changes nothing.
    sim.event("n2", pushed(with_moved(11, &[0, 1, 2])));
    assert!(sim.actions().is_empty());
    assert_eq!(sim.orch.config().unwrap().version().rev, 12);
    assert_eq!(sim.owner_in_force(0), "n1");
    assert_eq!(sim.owner_in_force(5), "n1");
}

#[test]
fn the_poll_stays_the_fallback() {
    let mut sim = Sim::streaming();
    let at = sim.orch.poll_timeout().unwrap();
    sim.now = at;
    sim.orch.handle_timeout(at);
    assert!(matches!(
        sim.actions()[..],
        [Action::RefreshConfig { via: Some(_) }]
    ));
}

#[test]
fn a_not_my_vbucket_body_newer_than_the_config_is_applied_first() {
    let mut sim = Sim::streaming();
    // n1 refuses vb 2 (a stale map: the client reopened it there) with
    // its own, newer config in the body: vb 2 moved to n2.
    sim.event(
        "n1",
        Event::StreamEnded {
            stream_id: None,
            vbucket: 2,
            reason: StreamEndReason::Ok,
            credit: Credit::NONE,
        },
    );
    sim.now += Duration::from_secs(1);
    sim.orch.handle_timeout(sim.now);
    assert_eq!(brief(&sim.actions()), [step("open", "n1", 2)]);
    assert!(sim.event("n1", refusal(2, with_moved(11, &[2]))).is_some());
    // Opened on n2 at once: no fetch, no retry delay.
    assert_eq!(brief(&sim.actions()), [step("open", "n2", 2)]);
    assert_eq!(sim.orch.config().unwrap().version().rev, 11);
}

#[test]
fn a_not_my_vbucket_body_that_is_not_newer_falls_back_to_a_fetch() {
    for body in [halves(10), halves(9), Vec::new(), b"not json".to_vec()] {
        let mut sim = Sim::streaming();
        sim.event(
            "n1",
            Event::StreamEnded {
                stream_id: None,
                vbucket: 2,
                reason: StreamEndReason::Ok,
                credit: Credit::NONE,
            },
        );
        sim.now += Duration::from_secs(1);
        sim.orch.handle_timeout(sim.now);
        sim.actions();
        sim.event("n1", refusal(2, body));
        let actions = sim.actions();
        assert!(
            matches!(actions[..], [Action::RefreshConfig { .. }]),
            "{actions:?}"
        );
        assert_eq!(sim.orch.config().unwrap().version().rev, 10);
    }
}

#[test]
fn a_newer_body_that_still_names_the_refusing_node_waits_and_fetches() {
    let mut sim = Sim::streaming();
    sim.event(
        "n1",
        Event::StreamEnded {
            stream_id: None,
            vbucket: 2,
            reason: StreamEndReason::Ok,
            credit: Credit::NONE,
        },
    );
    sim.now += Duration::from_secs(1);
    sim.orch.handle_timeout(sim.now);
    sim.actions();
    // The node's config is newer but still says vb 2 is there (its map
    // lags its vbucket states): applied, then the usual retry and fetch.
    sim.event("n1", refusal(2, with_moved(11, &[6])));
    let actions = sim.actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::RefreshConfig { .. })),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::OpenStream { vbucket: 2, .. })),
        "{actions:?}"
    );
    assert_eq!(sim.orch.config().unwrap().version().rev, 11);
}
