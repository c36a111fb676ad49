//! The adapter's error type.

use std::io;

use dcp_proto::cluster::{ConfigRejected, InvalidConnectionString};
use dcp_proto::consumer::{CommandError, ConsumerError};
use dcp_proto::producer::{ClusterError, ProducerError};

/// What can go wrong on a connection or a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (connect, read, write or bind).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The consumer failed: handshake refused (wrong password, unknown
    /// bucket), malformed or out-of-order input, dead connection, closed by
    /// the producer. The connection is over; its checkpoint stays valid.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// A command was refused; the connection is unaffected.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A node operation failed (through [`ServerHandle::with_node`](crate::ServerHandle::with_node)).
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// No address to connect to.
    #[error("the address resolved to nothing")]
    NoAddress,
    /// A local-cluster operation failed (through
    /// [`ClusterServerHandle`](crate::ClusterServerHandle)).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The connection string does not parse.
    #[error(transparent)]
    ConnectionString(#[from] InvalidConnectionString),
    /// The bucket config a seed node returned was refused.
    #[error(transparent)]
    Config(#[from] ConfigRejected),
    /// No seed node returned a bucket config in time.
    #[error("no seed node returned a bucket config")]
    NoConfig,
}

impl Error {
    /// Whether the credentials were refused.
    pub fn is_auth_failed(&self) -> bool {
        matches!(self, Error::Consumer(ConsumerError::AuthFailed { .. }))
    }
}
