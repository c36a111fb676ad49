//! The adapter's error type.

use std::io;

use dcp_proto::consumer::{CommandError, ConsumerError};
use dcp_proto::producer::ProducerError;

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
}

impl Error {
    /// Whether the credentials were refused.
    pub fn is_auth_failed(&self) -> bool {
        matches!(self, Error::Consumer(ConsumerError::AuthFailed { .. }))
    }
}
