//! Cluster-level admin commands ([`AdminCommand::is_cluster`]) and
//! collections manifest changes sent to any node of a [`LocalCluster`]
//! over the wire: the node holds them, the cluster carries them out (a
//! manifest change on every node) and answers on the requesting
//! connection.

use super::{LocalCluster, NodeId};
use crate::producer::{AdminCommand, ClusterAdminRequest};

impl LocalCluster {
    /// Every node's pending cluster-level admin requests, with the node
    /// that received each. Carry each out (with
    /// [`run_admin`](Self::run_admin), or by other means for `add_node`,
    /// which needs a listener) and answer it with
    /// [`answer_admin`](Self::answer_admin).
    pub fn take_admin_requests(&mut self) -> Vec<(NodeId, ClusterAdminRequest)> {
        let ids: Vec<NodeId> = self.node_ids().collect();
        let mut requests = Vec::new();
        for id in ids {
            if let Some(node) = self.node_mut(id) {
                requests.extend(node.take_admin_requests().into_iter().map(|r| (id, r)));
            }
        }
        requests
    }

    /// Answers a request on the connection it came from.
    pub fn answer_admin(
        &mut self,
        from: NodeId,
        request: &ClusterAdminRequest,
        result: Result<serde_json::Value, String>,
    ) {
        if let Some(node) = self.node_mut(from) {
            node.answer_admin_request(request, result);
        }
    }

    /// Carries out one request: a cluster-level command
    /// ([`AdminCommand::is_cluster`]; the result is the map after the
    /// change, and what changed) or a collections manifest change, which
    /// every member applies ([`change_manifest`](Self::change_manifest)).
    /// The result is the JSON the requester gets.
    pub fn run_admin(
        &mut self,
        request: &ClusterAdminRequest,
    ) -> Result<serde_json::Value, String> {
        let command = &request.command;
        if command.changes_manifest() {
            return self
                .change_manifest(command, request.received)
                .map_err(|e| e.to_string());
        }
        let mut extra = serde_json::Map::new();
        match command {
            AdminCommand::Rebalance { moves } if moves.is_empty() => {
                self.rebalance_evenly().map_err(|e| e.to_string())?;
            }
            AdminCommand::Rebalance { moves } => {
                let moves: Vec<(u16, NodeId)> = moves
                    .iter()
                    .map(|(vb, node)| (*vb, NodeId(*node)))
                    .collect();
                self.rebalance(&moves).map_err(|e| e.to_string())?;
            }
            AdminCommand::FailoverNode { node, lose_last } => {
                let branches = self
                    .failover_losing(NodeId(*node), *lose_last)
                    .map_err(|e| e.to_string())?;
                extra.insert("promoted".into(), branches.len().into());
            }
            AdminCommand::AddNode => {
                let id = self.add_node().map_err(|e| e.to_string())?;
                return Ok(self.added_node_map(id));
            }
            AdminCommand::RemoveNode { node } => {
                self.remove_node(NodeId(*node)).map_err(|e| e.to_string())?;
            }
            AdminCommand::ClusterMap => {}
            other => return Err(format!("{} is not a cluster command", other.name())),
        }
        let mut map = self.admin_map();
        if let Some(object) = map.as_object_mut() {
            object.extend(extra);
        }
        Ok(map)
    }

    /// Carries out and answers every pending request (`add_node` starts a
    /// node nobody listens for: an adapter serving sockets handles that one
    /// itself).
    pub fn run_admin_requests(&mut self) -> usize {
        let requests = self.take_admin_requests();
        for (from, request) in &requests {
            let result = self.run_admin(request);
            self.answer_admin(*from, request, result);
        }
        requests.len()
    }

    /// The answer to an `add_node` command that added node `id`: the
    /// [`admin_map`](Self::admin_map) with the new node's id (for adapters
    /// that start the node's listener before answering).
    pub fn added_node_map(&self, id: NodeId) -> serde_json::Value {
        let mut map = self.admin_map();
        if let Some(object) = map.as_object_mut() {
            object.insert("node".into(), id.0.into());
        }
        map
    }

    /// The config revision and every node: id, port, state (`member`,
    /// `removed`, `down`) and active vbucket count.
    pub fn admin_map(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .node_ids()
            .map(|id| {
                let state = if !self.is_running(id) {
                    "down"
                } else if !self.is_member(id) {
                    "removed"
                } else {
                    "member"
                };
                let active = (0..self.num_vbuckets())
                    .filter(|vb| self.active_node(*vb) == Some(id))
                    .count();
                serde_json::json!({
                    "node": id.0,
                    "port": self.node(id).map_or(0, |n| n.config().kv_port),
                    "state": state,
                    "active": active,
                })
            })
            .collect();
        serde_json::json!({ "rev": self.rev(), "nodes": nodes })
    }
}
