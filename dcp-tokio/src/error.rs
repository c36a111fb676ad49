//! The adapter's error type.

use std::io;
use std::time::Duration;

use dcp_proto::bucket::BucketError;
use dcp_proto::consumer::{CommandError, ConsumerError};
use dcp_proto::producer::{ClusterError, ProducerError};

/// Why a connection or a server call failed.
///
/// A [`Connection`](crate::Connection) error other than
/// [`Error::Command`] is fatal: the socket is closed, and every later call
/// reports the same error (after the events received before it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be made: nothing listens there, or the
    /// host is unreachable.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// The TCP connection did not complete within the limit.
    #[error("cannot connect to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The address as given.
        addr: String,
        /// The limit.
        timeout: Duration,
    },
    /// The TLS handshake failed: the server's certificate was refused (an
    /// unknown CA, a wrong name, expired), the peer does not speak TLS, or
    /// it closed the connection during the handshake. The source (an
    /// `io::Error`, wrapping a `rustls::Error` when TLS refused) says why.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The address as given.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake did not complete within the limit.
    #[error("TLS handshake with {addr}: no answer within {timeout:?}")]
    TlsTimeout {
        /// The address as given.
        addr: String,
        /// The limit.
        timeout: Duration,
    },
    /// A TLS configuration could not be built: a missing or malformed PEM
    /// certificate or key, or an invalid server name.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// Reading or writing the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The protocol failed: authentication refused, unknown bucket, a
    /// handshake step refused, a dead connection, malformed bytes, a
    /// producer that broke the rules, or a peer that closed the
    /// connection. The core's [`ConsumerError`] says which.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// A command was refused; the connection is unaffected.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A server-side call on the node failed.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// No DCP connection of the server has this name.
    #[error("no DCP connection named {0:?}")]
    NoSuchConnection(String),
    /// A local-cluster operation failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl From<BucketError> for Error {
    fn from(err: BucketError) -> Self {
        Error::Producer(ProducerError::Bucket(err))
    }
}

impl Error {
    /// The core's consumer error, if this is one.
    pub fn consumer_error(&self) -> Option<&ConsumerError> {
        match self {
            Error::Consumer(err) => Some(err),
            _ => None,
        }
    }

    /// Whether the credentials were refused.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Error::Consumer(ConsumerError::AuthFailed { .. }))
    }

    /// Re-creates a sticky I/O error (`io::Error` is not `Clone`).
    pub(crate) fn io_again(err: &io::Error) -> Error {
        Error::Io(io::Error::new(err.kind(), err.to_string()))
    }
}
