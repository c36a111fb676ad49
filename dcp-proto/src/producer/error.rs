//! Why a connection was closed, and the errors of the node's methods.

use core::fmt;

use crate::bucket::BucketError;
use crate::codec::{DecodeError, EncodeError, Opcode, Status};

/// Identifies one accepted connection of a [`Node`](super::Node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Why the node closed a connection (the socket should be closed; no
/// STREAM_END is sent for any of these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The bytes could not be framed (bad magic, frame too large, ...).
    #[error("unframeable input: {0}")]
    Framing(DecodeError),
    /// A DCP_OPEN with the same name replaced this connection.
    #[error("another connection opened the DCP name {name:?}")]
    Kicked {
        /// The DCP connection name.
        name: String,
    },
    /// Nothing was received for the idle timeout while noops were enabled.
    #[error("no input for the idle timeout")]
    IdleTimeout,
    /// The client sent a DCP_NOOP request to the producer.
    #[error("the client sent a DCP_NOOP request")]
    NoopFromClient,
    /// A noop response carried an opaque the producer did not send.
    #[error("noop response with opaque {0:#x} matches no outstanding noop")]
    NoopOpaqueMismatch(u32),
    /// The client answered a stream message with an error the producer
    /// does not tolerate.
    #[error("client replied {status} to {opcode}")]
    ClientError {
        /// The message answered.
        opcode: Opcode,
        /// The status sent.
        status: Status,
    },
    /// A status the client cannot understand without HELLO XERROR.
    #[error("status {0} needs XERROR, which the client did not negotiate")]
    XerrorRequired(Status),
    /// The client sent QUIT.
    #[error("the client quit")]
    Quit,
    /// The vbucket the connection streamed failed over (the node "died").
    #[error("vbucket {0} failed over")]
    Failover(u16),
    /// A response could not be encoded (a field too long for its header).
    #[error("a response could not be encoded: {0}")]
    Encode(EncodeError),
    /// Closed by fault injection.
    #[error("dropped by fault injection")]
    Dropped,
}

/// An error of a [`Node`](super::Node) method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// No such connection (never accepted, or removed).
    #[error("unknown connection {0}")]
    UnknownConnection(ConnectionId),
    /// The connection is closed; the reason says why.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// A bucket operation failed.
    #[error(transparent)]
    Bucket(#[from] BucketError),
}
