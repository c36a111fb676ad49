//! [`LocalCluster`]: several data nodes serving one bucket as a cluster.

mod admin;
mod config_json;
mod map;

use std::time::Instant;

use bytes::Bytes;

use self::config_json::{Listed, cluster_json};
use self::map::{Owners, fill_replicas, round_robin};
use super::{NodeConfig, ProducerError};
use crate::bucket::{MutationInfo, VBucket, WriteOptions};
use crate::msg::{FailoverEntry, VbucketState};
use crate::producer::Node;

/// A node's identity in a [`LocalCluster`] (its index; never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No such node, or it left the cluster.
    #[error("node {0} is not a member of the cluster")]
    NotMember(usize),
    /// The vbucket does not exist.
    #[error("vbucket {0} does not exist")]
    NoSuchVbucket(u16),
    /// The vbucket has no active copy (failed over without a replica).
    #[error("vbucket {0} has no active copy")]
    NoActive(u16),
    /// The last member cannot leave.
    #[error("the last node cannot leave the cluster")]
    LastNode,
    /// A node refused.
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// One node and its place in the cluster.
#[derive(Debug)]
struct Member {
    node: Node,
    /// Listed in the config (false after a failover or removal).
    in_cluster: bool,
    /// Crashed ([`LocalCluster::failover`]): it accepts no connection.
    down: bool,
}

/// N data nodes serving one bucket, as a Couchbase cluster does, with a
/// shared vbucket map, replication, rebalance, failover and membership
/// changes.
///
/// Sans-IO like [`Node`]: the adapter drives every node as the node's
/// driving contract says (one listener per node, found with
/// [`node_mut`](LocalCluster::node_mut)); topology operations take effect
/// on the nodes at once, so after one, call
/// [`take_wakeups`](Node::take_wakeups) on every node and flush what the
/// affected connections have to send (closed ones included).
///
/// - The map: vbucket `vb` is active on member `vb % n` and replicated on
///   the next `replicas` members; every node serves the same config JSON
///   (all members, the map, a revision bumped by every change) from
///   GET_CLUSTER_CONFIG.
/// - Replication copies the active vbucket (history, uuid, failover log)
///   to its replicas: after every write made through the cluster when
///   replication is synchronous, else when [`replicate`](LocalCluster::replicate)
///   is called, so a failover can lose the tail.
/// - [`rebalance`](LocalCluster::rebalance) moves active vbuckets: the new
///   owner continues the same history (same uuid and failover log); the old
///   copy goes dead, so its streams end StateChanged and requests there get
///   NOT_MY_VBUCKET.
/// - [`failover`](LocalCluster::failover) drops a node's connections and
///   promotes a replica of each of its active vbuckets, with a new
///   failover-log branch at the end of its last complete snapshot.
/// - [`remove_node`](LocalCluster::remove_node) rebalances a node out;
///   [`add_node`](LocalCluster::add_node) adds an empty one (rebalance
///   vbuckets onto it with [`rebalance_evenly`](LocalCluster::rebalance_evenly)).
/// - Collections manifest changes ([`change_manifest`](LocalCluster::change_manifest),
///   or an admin command sent to any node) apply to every member, and a
///   node added later takes the cluster's manifest.
///
/// ```
/// use std::time::Instant;
/// use dcp_proto::producer::{LocalCluster, NodeConfig, NodeId};
///
/// let now = Instant::now();
/// let mut cluster = LocalCluster::new(NodeConfig::new("default").with_vbuckets(4), 2, 1);
/// let written = cluster.set(b"k", "v", now)?;
/// let owner = cluster.active_node(written.vbucket).unwrap();
/// let uuid = cluster.active_vbucket(written.vbucket).unwrap().uuid();
///
/// // Move it: same history on the other node, the old copy is dead.
/// let other = NodeId(1 - owner.0);
/// cluster.rebalance(&[(written.vbucket, other)])?;
/// assert_eq!(cluster.active_node(written.vbucket), Some(other));
/// assert_eq!(cluster.active_vbucket(written.vbucket).unwrap().uuid(), uuid);
///
/// // Crash the new owner: the replica takes over on a new branch.
/// let branches = cluster.failover(other)?;
/// assert_eq!(cluster.active_node(written.vbucket), Some(owner));
/// assert!(branches.iter().any(|(vb, _)| *vb == written.vbucket));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    template: NodeConfig,
    members: Vec<Member>,
    map: Vec<Owners>,
    replicas: usize,
    rev: i64,
    sync_replication: bool,
    /// Configs are held back (the nodes keep serving the last one).
    config_held: bool,
    /// A change happened while configs were held back.
    config_pending: bool,
    /// The config the nodes serve.
    served: Vec<u8>,
    /// The data ports serve TLS: the config lists them as `kvSSL` too.
    kv_tls: bool,
}

impl LocalCluster {
    /// `nodes` nodes shaped by `template` (node `i` listens on
    /// `template.kv_port + i` and `template.mgmt_port + i`, seeded apart),
    /// with `replicas` replicas per vbucket (at most `nodes - 1` are
    /// placed) and synchronous replication.
    pub fn new(template: NodeConfig, nodes: usize, replicas: usize) -> Self {
        let mut cluster = Self {
            template,
            members: Vec::new(),
            map: Vec::new(),
            replicas,
            rev: 0,
            sync_replication: true,
            config_held: false,
            config_pending: false,
            served: Vec::new(),
            kv_tls: false,
        };
        for _ in 0..nodes.max(1) {
            cluster.spawn();
        }
        let ids = cluster.member_ids();
        cluster.map = round_robin(&ids, cluster.template.bucket.num_vbuckets, replicas);
        for vb in 0..cluster.num_vbuckets() {
            // Every node starts with its own fresh copy: keep the active
            // one's and copy it everywhere else.
            let _ = cluster.sync_copies(vb, true);
        }
        cluster.publish();
        cluster
    }

    /// Makes replication synchronous (every write through the cluster is
    /// copied at once) or lagging (copied on [`replicate`](Self::replicate)).
    pub fn set_sync_replication(&mut self, sync: bool) {
        self.sync_replication = sync;
    }

    /// Holds configs back (`true`): topology changes take effect on the
    /// nodes, but they keep serving the config they had, as when a client
    /// asks before the cluster manager pushed the new map (stale config:
    /// NOT_MY_VBUCKET from the old owner). `false` serves the newest one.
    pub fn hold_config(&mut self, held: bool) {
        self.config_held = held;
        if !held && self.config_pending {
            self.config_pending = false;
            self.publish();
        }
    }

    /// Says whether the nodes' data ports serve TLS (an adapter serving the
    /// cluster TLS-only): if so the config lists each member's data port
    /// as its `kvSSL` port too, so that `couchbases://` clients find it.
    /// A change publishes a new config revision.
    pub fn set_kv_tls(&mut self, tls: bool) {
        if self.kv_tls != tls {
            self.kv_tls = tls;
            self.publish();
        }
    }

    // ----- getters -------------------------------------------------------

    /// Whether the data ports serve TLS (see [`set_kv_tls`](Self::set_kv_tls)).
    pub fn kv_tls(&self) -> bool {
        self.kv_tls
    }

    /// The number of vbuckets.
    pub fn num_vbuckets(&self) -> u16 {
        self.template.bucket.num_vbuckets
    }

    /// The config revision in force.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// The config JSON every node serves (while configs are
    /// [held](Self::hold_config), the one from before the changes).
    pub fn config_json(&self) -> Vec<u8> {
        self.served.clone()
    }

    /// The config of the current map at the current revision.
    fn render_config(&self) -> Vec<u8> {
        let listed: Vec<Listed<'_>> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.in_cluster)
            .map(|(i, m)| Listed {
                id: NodeId(i),
                host: &m.node.config().hostname,
                kv_port: m.node.config().kv_port,
                kv_tls_port: self.kv_tls.then(|| m.node.config().kv_port),
                mgmt_port: m.node.config().mgmt_port,
            })
            .collect();
        cluster_json(
            &self.template.bucket.name,
            &self.bucket_uuid(),
            self.rev,
            self.replicas,
            &listed,
            &self.map,
        )
    }

    /// Every node ever started, members or not (an adapter keeps serving
    /// the connections of a node that left until they close).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.members.len()).map(NodeId)
    }

    /// The nodes listed in the config.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.node_ids().filter(|id| self.is_member(*id)).collect()
    }

    /// Whether `id` is listed in the config.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.get(id.0).is_some_and(|m| m.in_cluster)
    }

    /// Whether `id` is running (not failed over): an adapter refuses
    /// connections to a node that is down.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.members.get(id.0).is_some_and(|m| !m.down)
    }

    /// A node.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.members.get(id.0).map(|m| &m.node)
    }

    /// A node, to drive its connections or inject faults. Writes made on
    /// its bucket directly reach replicas on [`replicate`](Self::replicate).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.members.get_mut(id.0).map(|m| &mut m.node)
    }

    /// The node listening on `kv_port`.
    pub fn node_by_port(&self, kv_port: u16) -> Option<NodeId> {
        self.node_ids().find(|id| {
            self.node(*id)
                .is_some_and(|n| n.config().kv_port == kv_port)
        })
    }

    /// The node holding `vb`'s active copy.
    pub fn active_node(&self, vb: u16) -> Option<NodeId> {
        self.map.get(usize::from(vb)).and_then(|o| o.active)
    }

    /// The nodes holding `vb`'s replicas.
    pub fn replica_nodes(&self, vb: u16) -> &[NodeId] {
        self.map
            .get(usize::from(vb))
            .map_or(&[][..], |o| o.replicas.as_slice())
    }

    /// `vb`'s active copy: the bucket's truth for that vbucket.
    pub fn active_vbucket(&self, vb: u16) -> Option<&VBucket> {
        let node = self.node(self.active_node(vb)?)?;
        node.bucket().vbucket(vb)
    }

    /// The vbucket of `key`.
    pub fn vbucket_of(&self, key: &[u8]) -> u16 {
        crate::bucket::vbucket_for_key(key, self.num_vbuckets())
    }

    // ----- writes --------------------------------------------------------

    /// Stores `value` under `key` on the active node (and its replicas when
    /// replication is synchronous).
    pub fn set(
        &mut self,
        key: &[u8],
        value: impl Into<Bytes>,
        now: Instant,
    ) -> Result<MutationInfo, ClusterError> {
        let vb = self.vbucket_of(key);
        let node = self.active_mut(vb)?;
        let wall = node.wall_clock(now);
        let info = node
            .bucket_mut()
            .set(key, value, WriteOptions::new(), wall)
            .map_err(ProducerError::from)?;
        self.after_write(vb)?;
        Ok(info)
    }

    /// Stores `value` under `key` in `collection` on the active node (and
    /// its replicas when replication is synchronous).
    pub fn set_in(
        &mut self,
        collection: u32,
        key: &[u8],
        value: impl Into<Bytes>,
        now: Instant,
    ) -> Result<MutationInfo, ClusterError> {
        let vb = self.vbucket_of(key);
        let node = self.active_mut(vb)?;
        let wall = node.wall_clock(now);
        let info = node
            .bucket_mut()
            .set_in(collection, key, value, WriteOptions::new(), wall)
            .map_err(ProducerError::from)?;
        self.after_write(vb)?;
        Ok(info)
    }

    /// Deletes `key` on the active node (and its replicas when replication
    /// is synchronous).
    pub fn delete(&mut self, key: &[u8], now: Instant) -> Result<MutationInfo, ClusterError> {
        let vb = self.vbucket_of(key);
        let node = self.active_mut(vb)?;
        let wall = node.wall_clock(now);
        let info = node
            .bucket_mut()
            .delete(key, 0, wall)
            .map_err(ProducerError::from)?;
        self.after_write(vb)?;
        Ok(info)
    }

    /// Applies a collections manifest change (create or drop a scope or
    /// collection, flush or modify a collection; see
    /// [`AdminCommand::changes_manifest`](crate::producer::AdminCommand::changes_manifest))
    /// to every member, as the cluster manager does: every node's manifest
    /// moves to the same uid and every vbucket gets the system events
    /// (replicas that fall out of step are copied again from their active
    /// at the next replication). `now` is the wall-clock time of the
    /// events. The result is the first node's answer (the new uid and the
    /// id concerned).
    pub fn change_manifest(
        &mut self,
        command: &crate::producer::AdminCommand,
        now: std::time::SystemTime,
    ) -> Result<serde_json::Value, ClusterError> {
        if !command.changes_manifest() {
            return Err(ProducerError::from(crate::bucket::BucketError::Invalid(
                "not a collections manifest change",
            ))
            .into());
        }
        let mut answer = None;
        for id in self.member_ids() {
            let Some(node) = self.node_mut(id) else {
                continue;
            };
            // The first member validates; the others follow the same
            // manifest, so they cannot refuse what it accepted.
            let result = super::collections::run_admin(command.clone(), node.bucket_mut(), now)
                .map_err(ProducerError::from)?;
            answer.get_or_insert(result);
        }
        if self.sync_replication {
            self.replicate()?;
        }
        Ok(answer.unwrap_or_default())
    }

    /// Brings every replica up to date with its active copy (and sets the
    /// copies on nodes holding none of a vbucket dead).
    pub fn replicate(&mut self) -> Result<(), ClusterError> {
        for vb in 0..self.num_vbuckets() {
            self.sync_copies(vb, false)?;
        }
        Ok(())
    }

    // ----- topology ------------------------------------------------------

    /// Moves active vbuckets: each `(vb, to)` makes `to` continue `vb`'s
    /// history (same uuid and failover log) and the old owner's copy dead
    /// (its streams end StateChanged; requests get NOT_MY_VBUCKET). The
    /// config revision is bumped once.
    pub fn rebalance(&mut self, moves: &[(u16, NodeId)]) -> Result<(), ClusterError> {
        for &(vb, to) in moves {
            self.move_active(vb, to)?;
        }
        self.publish();
        Ok(())
    }

    /// Moves active vbuckets so that member `i` (in id order) owns the
    /// vbuckets `vb` with `vb % members == i`.
    pub fn rebalance_evenly(&mut self) -> Result<(), ClusterError> {
        let ids = self.member_ids();
        let moves: Vec<(u16, NodeId)> = (0..self.num_vbuckets())
            .filter_map(|vb| {
                let to = *ids.get(usize::from(vb) % ids.len().max(1))?;
                (self.active_node(vb) != Some(to)).then_some((vb, to))
            })
            .collect();
        self.rebalance(&moves)
    }

    /// Fails `id` over as after a crash: its connections drop (no
    /// STREAM_END), it leaves the config, and a replica of each of its
    /// active vbuckets is promoted with a new failover-log branch (at the
    /// end of the last complete snapshot it holds; what it never received
    /// is lost). Returns the new branches.
    pub fn failover(&mut self, id: NodeId) -> Result<Vec<(u16, FailoverEntry)>, ClusterError> {
        self.failover_losing(id, 0)
    }

    /// Like [`failover`](Self::failover), as if each promoted replica also
    /// lacked the last `lose_last` seqnos of its copy (replication was that
    /// far behind): consumers that saw them roll back.
    pub fn failover_losing(
        &mut self,
        id: NodeId,
        lose_last: u64,
    ) -> Result<Vec<(u16, FailoverEntry)>, ClusterError> {
        self.leave(id)?;
        let member = self
            .members
            .get_mut(id.0)
            .ok_or(ClusterError::NotMember(id.0))?;
        member.down = true;
        let conns: Vec<_> = member.node.connections().collect();
        for conn in conns {
            let _ = member.node.drop_connection(conn);
        }
        let mut branches = Vec::new();
        for vb in 0..self.num_vbuckets() {
            let Some(owners) = self.map.get_mut(usize::from(vb)) else {
                continue;
            };
            owners.replicas.retain(|r| *r != id);
            if owners.active != Some(id) {
                continue;
            }
            owners.active = None;
            if owners.replicas.is_empty() {
                continue;
            }
            let promoted = owners.replicas.remove(0);
            owners.active = Some(promoted);
            let node = self
                .members
                .get_mut(promoted.0)
                .map(|m| &mut m.node)
                .ok_or(ClusterError::NotMember(promoted.0))?;
            branches.push((vb, node.failover(vb, lose_last)?));
        }
        self.refill_and_sync()?;
        self.publish();
        Ok(branches)
    }

    /// Removes `id` gracefully: its active vbuckets move to the other
    /// members (as [`rebalance`](Self::rebalance) does), then it leaves the
    /// config. It keeps serving its open connections (its vbuckets are
    /// dead there).
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), ClusterError> {
        if !self.is_member(id) {
            return Err(ClusterError::NotMember(id.0));
        }
        let others: Vec<NodeId> = self.member_ids().into_iter().filter(|m| *m != id).collect();
        if others.is_empty() {
            return Err(ClusterError::LastNode);
        }
        let moves: Vec<(u16, NodeId)> = (0..self.num_vbuckets())
            .filter(|vb| self.active_node(*vb) == Some(id))
            .filter_map(|vb| Some((vb, *others.get(usize::from(vb) % others.len())?)))
            .collect();
        for (vb, to) in moves {
            self.move_active(vb, to)?;
        }
        self.leave(id)?;
        for vb in 0..self.num_vbuckets() {
            if let Some(node) = self.node_mut(id) {
                node.set_vbucket_state(vb, VbucketState::Dead)?;
            }
        }
        self.refill_and_sync()?;
        self.publish();
        Ok(())
    }

    /// Starts a new empty node (every vbucket dead) and adds it to the
    /// config; move vbuckets onto it with a rebalance.
    pub fn add_node(&mut self) -> Result<NodeId, ClusterError> {
        let id = self.spawn();
        for vb in 0..self.num_vbuckets() {
            if let Some(node) = self.node_mut(id) {
                node.set_vbucket_state(vb, VbucketState::Dead)?;
            }
        }
        self.refill_and_sync()?;
        self.publish();
        Ok(id)
    }

    /// Drops every connection of `id` as a network failure would.
    pub fn drop_connections(&mut self, id: NodeId) -> Result<usize, ClusterError> {
        let node = self.node_mut(id).ok_or(ClusterError::NotMember(id.0))?;
        let conns: Vec<_> = node.connections().collect();
        for conn in &conns {
            let _ = node.drop_connection(*conn);
        }
        Ok(conns.len())
    }

    // ----- internals -----------------------------------------------------

    fn bucket_uuid(&self) -> String {
        format!("{:032x}", u128::from(self.template.seed) << 64 | 0xc1c1)
    }

    /// Starts node number `members.len()`.
    fn spawn(&mut self) -> NodeId {
        let i = self.members.len();
        let offset = u16::try_from(i).unwrap_or(u16::MAX);
        let mut config = self.template.clone();
        config.kv_port = config.kv_port.saturating_add(offset);
        config.mgmt_port = config.mgmt_port.saturating_add(offset);
        config.seed = config
            .seed
            .wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut node = Node::new(config);
        node.set_cluster_member();
        if self.rev > 0 {
            node.set_cluster_config(self.rev, self.served.clone());
        }
        // A joining node knows the cluster's collections.
        if let Some(first) = self.members.first() {
            let manifest = first.node.bucket().manifest().clone();
            node.bucket_mut().adopt_manifest(manifest);
        }
        self.members.push(Member {
            node,
            in_cluster: true,
            down: false,
        });
        NodeId(i)
    }

    /// Takes `id` out of the config (not the map).
    fn leave(&mut self, id: NodeId) -> Result<(), ClusterError> {
        if !self.is_member(id) {
            return Err(ClusterError::NotMember(id.0));
        }
        if self.member_ids().len() <= 1 {
            return Err(ClusterError::LastNode);
        }
        if let Some(m) = self.members.get_mut(id.0) {
            m.in_cluster = false;
        }
        Ok(())
    }

    fn active_mut(&mut self, vb: u16) -> Result<&mut Node, ClusterError> {
        let id = self.active_node(vb).ok_or(ClusterError::NoActive(vb))?;
        self.node_mut(id).ok_or(ClusterError::NotMember(id.0))
    }

    fn after_write(&mut self, vb: u16) -> Result<(), ClusterError> {
        if self.sync_replication {
            self.sync_copies(vb, false)?;
        }
        Ok(())
    }

    /// One move of a rebalance (no config bump).
    fn move_active(&mut self, vb: u16, to: NodeId) -> Result<(), ClusterError> {
        if !self.is_member(to) {
            return Err(ClusterError::NotMember(to.0));
        }
        let owners = self
            .map
            .get(usize::from(vb))
            .ok_or(ClusterError::NoSuchVbucket(vb))?;
        let from = owners.active.ok_or(ClusterError::NoActive(vb))?;
        if from == to {
            return Ok(());
        }
        let copy = self
            .node(from)
            .and_then(|n| n.bucket().vbucket(vb))
            .cloned()
            .ok_or(ClusterError::NoSuchVbucket(vb))?;
        self.node_mut(to)
            .ok_or(ClusterError::NotMember(to.0))?
            .install_vbucket(copy, VbucketState::Active)?;
        self.node_mut(from)
            .ok_or(ClusterError::NotMember(from.0))?
            .set_vbucket_state(vb, VbucketState::Dead)?;
        if let Some(owners) = self.map.get_mut(usize::from(vb)) {
            owners.active = Some(to);
            owners.replicas.retain(|r| *r != to);
        }
        let members = self.member_ids();
        if let Some(owners) = self.map.get_mut(usize::from(vb)) {
            // Prefer other nodes than the old owner, whose copy stays dead.
            let others: Vec<NodeId> = members.iter().copied().filter(|m| *m != from).collect();
            fill_replicas(owners, &others, self.replicas);
            // With too few other nodes the old owner becomes a replica.
            fill_replicas(owners, &members, self.replicas);
        }
        self.sync_copies(vb, false)
    }

    /// Re-places replicas over the members and brings every copy in line.
    fn refill_and_sync(&mut self) -> Result<(), ClusterError> {
        let members = self.member_ids();
        for owners in &mut self.map {
            fill_replicas(owners, &members, self.replicas);
        }
        self.replicate()
    }

    /// Makes every node's copy of `vb` what the map says: replicas equal
    /// to the active copy, others dead. `all`: copy even when it looks up
    /// to date (initial placement).
    fn sync_copies(&mut self, vb: u16, all: bool) -> Result<(), ClusterError> {
        let Some(owners) = self.map.get(usize::from(vb)).cloned() else {
            return Err(ClusterError::NoSuchVbucket(vb));
        };
        let source = owners
            .active
            .and_then(|a| self.node(a))
            .and_then(|n| n.bucket().vbucket(vb))
            .cloned();
        for i in 0..self.members.len() {
            let id = NodeId(i);
            if owners.active == Some(id) {
                continue;
            }
            let in_cluster = self.is_member(id);
            let Some(node) = self.node_mut(id) else {
                continue;
            };
            let Some(current) = node.bucket().vbucket(vb) else {
                continue;
            };
            if in_cluster && owners.replicas.contains(&id) {
                if let Some(source) = &source {
                    let stale = all
                        || current.state() != VbucketState::Replica
                        || current.high_seqno() != source.high_seqno()
                        || current.failover_log() != source.failover_log();
                    if stale {
                        node.install_vbucket(source.clone(), VbucketState::Replica)?;
                    }
                }
            } else if all {
                if let Some(source) = &source {
                    node.install_vbucket(source.clone(), VbucketState::Dead)?;
                }
            } else if current.state() != VbucketState::Dead {
                node.set_vbucket_state(vb, VbucketState::Dead)?;
            }
        }
        Ok(())
    }

    /// Bumps the revision and hands the config to every node.
    fn publish(&mut self) {
        if self.config_held {
            self.config_pending = true;
            return;
        }
        self.rev += 1;
        let json = self.render_config();
        self.served = json.clone();
        let rev = self.rev;
        for member in &mut self.members {
            member.node.set_cluster_config(rev, json.clone());
        }
    }
}
