//! Per-node connection state and its reconnection backoff.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::cluster::KvNode;

/// A node connection, as the orchestrator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeStatus {
    /// [`Action::Connect`](super::Action::Connect) was given; waiting for
    /// the handshake.
    Connecting,
    /// Connected: streams can be opened.
    Connected,
    /// Lost; the next [`Action::Connect`](super::Action::Connect) comes at
    /// `at`.
    Reconnecting {
        /// When the next attempt starts.
        at: Instant,
    },
}

/// One node the orchestrator wants a connection to.
#[derive(Debug, Clone)]
pub(crate) struct NodeSlot {
    pub(crate) node: KvNode,
    pub(crate) status: NodeStatus,
    /// Failed connections in a row (sets the backoff).
    pub(crate) failures: u32,
    /// Vbuckets whose stream here was closed and has not ended yet: no new
    /// stream for them on this node until it has.
    pub(crate) closing: BTreeSet<u16>,
}

impl NodeSlot {
    /// A node being connected to.
    pub(crate) fn connecting(node: KvNode) -> Self {
        Self {
            node,
            status: NodeStatus::Connecting,
            failures: 0,
            closing: BTreeSet::new(),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.status == NodeStatus::Connected
    }

    /// Whether a connection exists or is being made (so dropping the node
    /// needs a Disconnect).
    pub(crate) fn has_connection(&self) -> bool {
        matches!(self.status, NodeStatus::Connecting | NodeStatus::Connected)
    }

    /// When a reconnection is due, if waiting for one.
    pub(crate) fn reconnect_at(&self) -> Option<Instant> {
        match self.status {
            NodeStatus::Reconnecting { at } => Some(at),
            _ => None,
        }
    }
}
