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
    /// The TLS handshake failed: the server's certificate was refused (an
    /// unknown CA, a wrong name, expired), the peer does not speak TLS, or
    /// it closed the connection during the handshake. The source (an
    /// `io::Error`, wrapping a `rustls::Error` when TLS refused) says why.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The address connected to.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake did not complete within the limit.
    #[error("TLS handshake with {addr}: no answer within {timeout:?}")]
    TlsTimeout {
        /// The address connected to.
        addr: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// A TLS configuration could not be built: a missing or malformed PEM
    /// certificate or key, or an invalid server name; or TLS was asked for
    /// (`couchbases://`) without a client configuration.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
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
    /// The rustls error behind a failed TLS handshake, if TLS refused the
    /// peer (rather than the socket failing).
    #[cfg(feature = "tls")]
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            Error::Tls { source, .. } => dcp_proto::tls::rustls_error(source),
            _ => None,
        }
    }

    /// Whether the credentials were refused.
    pub fn is_auth_failed(&self) -> bool {
        matches!(self, Error::Consumer(ConsumerError::AuthFailed { .. }))
    }
}
