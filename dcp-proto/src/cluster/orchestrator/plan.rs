//! Bringing connections and streams in line with the config in force:
//! which nodes to connect or drop, which streams to close, open or report
//! done, and when to fetch a config.

use std::collections::BTreeMap;
use std::time::Instant;

use super::nodes::NodeSlot;
use super::vbuckets::{Stream, VbSlot};
use super::{Action, ClusterOrchestrator, NodeStatus};
use crate::cluster::{ClusterConfig, KvNode, NodeAddress};

impl ClusterOrchestrator {
    /// Brings connections and streams in line with the config in force.
    pub(super) fn pump(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let Some(config) = self.config.take() else {
            return;
        };
        let wanted = self.wanted_nodes(&config);
        self.move_streams(&config, &wanted, now);
        self.reconcile_nodes(&config, &wanted, now);
        self.open_streams(&config);
        if self.vbuckets.values().all(|s| !s.is_live()) {
            self.finish();
        } else {
            self.maybe_refresh(now);
        }
        self.config = Some(config);
    }

    /// The nodes with work: active owners of live vbuckets, and nodes
    /// still streaming a vbucket the config gives no owner. With none, one
    /// node is kept to fetch configs from.
    fn wanted_nodes(&self, config: &ClusterConfig) -> BTreeMap<NodeAddress, KvNode> {
        let mut wanted = BTreeMap::new();
        for (vb, slot) in self.vbuckets.iter().filter(|(_, s)| s.is_live()) {
            if let Some(owner) = config.active_node(*vb) {
                if !wanted.contains_key(&owner.address) {
                    wanted.insert(owner.address.clone(), owner.clone());
                }
            } else if let Some(node) = slot.node()
                && !wanted.contains_key(node)
                && let Some(existing) = self.nodes.get(node)
            {
                wanted.insert(node.clone(), existing.node.clone());
            }
        }
        let live = self.vbuckets.values().any(VbSlot::is_live);
        if wanted.is_empty() && live {
            let in_config = |a: &NodeAddress| config.servers().iter().any(|n| &n.address == a);
            let keep = self
                .nodes
                .iter()
                .filter(|(a, _)| in_config(a))
                .max_by_key(|(_, n)| n.is_connected())
                .map(|(_, n)| n.node.clone())
                .or_else(|| config.servers().first().cloned());
            if let Some(node) = keep {
                wanted.insert(node.address.clone(), node);
            }
        }
        wanted
    }

    /// Streams on a node that no longer owns their vbucket are closed
    /// (their later events are stale) and the vbucket waits for its owner.
    fn move_streams(
        &mut self,
        config: &ClusterConfig,
        wanted: &BTreeMap<NodeAddress, KvNode>,
        now: Instant,
    ) {
        for (vb, slot) in &mut self.vbuckets {
            if slot.stream == Stream::Idle && slot.not_before.is_some_and(|t| t <= now) {
                slot.not_before = None;
            }
            let Some(node) = slot.node() else {
                continue;
            };
            let Some(owner) = config.active_node(*vb) else {
                continue;
            };
            if &owner.address == node {
                continue;
            }
            if wanted.contains_key(node)
                && let Some(node_slot) = self.nodes.get_mut(node)
                && node_slot.is_connected()
            {
                self.actions.push_back(Action::CloseStream {
                    node: node.clone(),
                    vbucket: *vb,
                });
                node_slot.closing.insert(*vb);
            }
            slot.stream = Stream::Idle;
            slot.not_before = None;
            slot.attempts = 0;
        }
    }

    /// Connects wanted nodes, drops the others, starts due reconnections.
    fn reconcile_nodes(
        &mut self,
        config: &ClusterConfig,
        wanted: &BTreeMap<NodeAddress, KvNode>,
        now: Instant,
    ) {
        let unwanted: Vec<NodeAddress> = self
            .nodes
            .keys()
            .filter(|a| !wanted.contains_key(*a))
            .cloned()
            .collect();
        for address in unwanted {
            if let Some(slot) = self.nodes.remove(&address)
                && slot.has_connection()
            {
                self.actions.push_back(Action::Disconnect(address.clone()));
            }
            for vb in self.vbuckets.values_mut() {
                if vb.node() == Some(&address) {
                    vb.stream = Stream::Idle;
                }
            }
        }
        for (address, node) in wanted {
            match self.nodes.get_mut(address) {
                None => {
                    self.nodes
                        .insert(address.clone(), NodeSlot::connecting(node.clone()));
                    self.actions.push_back(Action::Connect(node.clone()));
                }
                Some(slot) if slot.reconnect_at().is_some_and(|at| at <= now) => {
                    slot.status = NodeStatus::Connecting;
                    if let Some(fresh) = config.servers().iter().find(|n| &n.address == address) {
                        slot.node = fresh.clone();
                    }
                    self.actions.push_back(Action::Connect(slot.node.clone()));
                }
                Some(_) => {}
            }
        }
    }

    /// Opens the streams of waiting vbuckets whose owner is connected;
    /// reports vbuckets already at their end.
    fn open_streams(&mut self, config: &ClusterConfig) {
        for (vb, slot) in &mut self.vbuckets {
            if slot.stream != Stream::Idle || slot.not_before.is_some() {
                continue;
            }
            if slot.at_end() {
                slot.stream = Stream::Done;
                self.actions.push_back(Action::StreamDone { vbucket: *vb });
                continue;
            }
            let Some(owner) = config.active_node(*vb) else {
                continue;
            };
            let ready = self
                .nodes
                .get(&owner.address)
                .is_some_and(|n| n.is_connected() && !n.closing.contains(vb));
            if !ready {
                continue;
            }
            let start = slot.begin();
            slot.stream = Stream::Opening(owner.address.clone());
            self.actions.push_back(Action::OpenStream {
                node: owner.address.clone(),
                vbucket: *vb,
                start,
                end: slot.end,
            });
        }
    }

    /// Every vbucket is done or failed: drop every connection.
    fn finish(&mut self) {
        self.finished = true;
        for (address, slot) in std::mem::take(&mut self.nodes) {
            if slot.has_connection() {
                self.actions.push_back(Action::Disconnect(address));
            }
        }
    }

    /// Asks for a config when an event wanted one (at most once per gap)
    /// or the poll interval passed.
    fn maybe_refresh(&mut self, now: Instant) {
        let gap_passed = self
            .refresh
            .last
            .is_none_or(|last| now >= last + self.settings.config_refresh_gap);
        let poll_due = self.refresh.next_poll.is_some_and(|t| now >= t);
        if !(poll_due || (self.refresh.wanted && gap_passed)) {
            return;
        }
        let connected: Vec<&NodeAddress> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.is_connected())
            .map(|(a, _)| a)
            .collect();
        let via = if connected.is_empty() {
            None
        } else {
            self.refresh.rotation = self.refresh.rotation.wrapping_add(1);
            connected
                .get(self.refresh.rotation % connected.len())
                .map(|a| (*a).clone())
        };
        self.actions.push_back(Action::RefreshConfig { via });
        self.refresh.wanted = false;
        self.refresh.last = Some(now);
        self.refresh.next_poll = Some(now + self.settings.config_poll_interval);
    }
}
