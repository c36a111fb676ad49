//! The client's connections: ids, what the adapter is asked to do with
//! them, and each one's state.

use std::fmt;
use std::time::Instant;

use crate::cluster::{ConfigRejected, NodeAddress};
use crate::consumer::{ConnectionStats, Consumer, ConsumerError};

/// One connection of a [`ClusterClient`](super::ClusterClient): a socket
/// the adapter opens when asked and feeds with
/// [`handle_connected`](super::ClusterClient::handle_connected),
/// [`handle_input`](super::ClusterClient::handle_input) and
/// [`handle_lost`](super::ClusterClient::handle_lost). Ids are never
/// reused: inputs for a link the client forgot are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub(super) u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link-{}", self.0)
    }
}

/// Something the adapter must do with its sockets, in the order polled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Open a socket to `target` (over TLS, verifying `target`'s host, when
    /// `tls`) and report it with
    /// [`handle_connected`](super::ClusterClient::handle_connected), or
    /// with [`handle_lost`](super::ClusterClient::handle_lost) if it cannot
    /// be made. The client gives up on its own after the consumer's
    /// handshake timeout (and then asks for a `Disconnect`).
    Connect {
        /// The new link.
        link: LinkId,
        /// The node the link serves (its identity in the cluster config).
        node: NodeAddress,
        /// Where to connect: the node's address, or its `kvSSL` address
        /// over TLS.
        target: NodeAddress,
        /// Whether to connect with TLS.
        tls: bool,
    },
    /// Close this link's socket (or abandon connecting) and forget it; it
    /// may already be gone (after `handle_lost`). Bytes still queued for
    /// it are dropped.
    Disconnect {
        /// The link.
        link: LinkId,
    },
}

/// Why the client could not fetch a first bucket config from any seed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The connection string named no seed.
    #[error("no seed node to bootstrap from")]
    NoSeeds,
    /// The last seed tried could not be reached, or its connection closed.
    #[error("seed {seed}: connection failed or closed")]
    Unreachable {
        /// The seed.
        seed: NodeAddress,
    },
    /// The last seed tried failed the handshake (or broke the protocol).
    #[error("seed {seed}: {error}")]
    Handshake {
        /// The seed.
        seed: NodeAddress,
        /// What went wrong.
        error: ConsumerError,
    },
    /// The last seed tried returned no bucket config.
    #[error("seed {seed} returned no bucket config")]
    NoConfig {
        /// The seed.
        seed: NodeAddress,
    },
    /// The last seed tried returned a config that cannot be used.
    #[error("seed {seed}: {error}")]
    Rejected {
        /// The seed.
        seed: NodeAddress,
        /// Why it was refused.
        error: ConfigRejected,
    },
}

/// What a link is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// A data node's streams.
    Node(NodeAddress),
    /// A one-off bucket config fetch from a seed.
    Seed(NodeAddress),
}

impl Role {
    pub(super) fn address(&self) -> &NodeAddress {
        match self {
            Role::Node(a) | Role::Seed(a) => a,
        }
    }
}

/// Where a link stands.
#[derive(Debug)]
pub(super) enum State {
    /// Asked for; the adapter has not reported its socket yet.
    Connecting {
        /// When to give up.
        deadline: Instant,
    },
    /// A socket and its consumer.
    Open(Box<Consumer>),
    /// The socket is gone; its consumer still holds events to hand out
    /// (a node is reported lost once they are).
    Draining(Box<Consumer>),
}

/// One link.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) role: Role,
    pub(super) state: State,
    /// Whether its consumer reported `Ready` (a node connection counted).
    pub(super) ready: bool,
    /// `dcp.node` (or `dcp.seed`), entered while its consumer runs.
    pub(super) span: tracing::Span,
}

impl Link {
    pub(super) fn consumer(&self) -> Option<&Consumer> {
        match &self.state {
            State::Open(c) | State::Draining(c) => Some(c),
            State::Connecting { .. } => None,
        }
    }

    pub(super) fn consumer_mut(&mut self) -> Option<&mut Consumer> {
        match &mut self.state {
            State::Open(c) | State::Draining(c) => Some(c),
            State::Connecting { .. } => None,
        }
    }

    /// The open consumer (not one draining).
    pub(super) fn open_mut(&mut self) -> Option<&mut Consumer> {
        match &mut self.state {
            State::Open(c) => Some(c),
            _ => None,
        }
    }

    pub(super) fn node(&self) -> Option<&NodeAddress> {
        match &self.role {
            Role::Node(a) => Some(a),
            Role::Seed(_) => None,
        }
    }
}

/// The counters of a connection that no longer runs: it holds nothing and
/// has nothing open.
pub(super) fn stopped(mut last: ConnectionStats) -> ConnectionStats {
    last.streams_open = 0;
    last.unacked_bytes = 0;
    last.held_bytes = 0;
    last.connections = 0;
    last
}
