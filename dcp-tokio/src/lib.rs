//! The tokio adapter for [`dcp_proto`], the sans-IO Couchbase DCP core, and
//! the `dcp` command.
//!
//! The core holds all protocol logic; this crate moves bytes and time
//! between sockets and the core's state machines:
//!
//! - [`Connection`]: a DCP consumer connection to one node (handshake,
//!   streams, events, flow-control acknowledgements, checkpoints).
//! - [`Server`] and [`ServerHandle`]: the core's data node (an in-memory
//!   bucket behind a faithful producer) served on a TCP listener, with
//!   in-process writes and fault injection.
//! - [`ClusterConnection`]: a whole bucket from a cluster (seed nodes in a
//!   `couchbase://` [`ConnectionString`]), the core's
//!   [`ClusterClient`](dcp_proto::cluster::ClusterClient) (one consumer
//!   per node) in the caller's task and one task per socket: one merged
//!   event stream, one cluster-wide checkpoint and summed counters, across
//!   rebalances and failovers.
//! - [`tls`] (feature `tls`, on by default): TLS with rustls (the `ring`
//!   provider): [`Connection::connect_tls`], [`Server::with_tls`], and
//!   client and server configurations from PEM.
//! - [`ClusterServer`] and [`ClusterServerHandle`]: the core's local
//!   cluster (N nodes on consecutive ports, a shared vbucket map,
//!   rebalance, failover, nodes added and removed).
//!
//! Both are one owner and one loop: write what the core has to send, hand
//! out what it decoded, wait for readable bytes or the core's next deadline
//! (from `poll_timeout`) and feed them in. Reads and writes are cancel-safe,
//! and timers run on tokio's clock, so `tokio::time::pause()` drives the
//! core's deadlines in tests.
//!
//! # Streaming a bucket
//!
//! ```no_run
//! use dcp_tokio::Connection;
//! use dcp_tokio::dcp_proto::auth::Credentials;
//! use dcp_tokio::dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dcp_tokio::Error> {
//! let config = ConsumerConfig::new("example:1", "default")
//!     .with_credentials(Credentials::new("Administrator", "password"));
//! let mut conn = Connection::connect("127.0.0.1:11210", config).await?;
//! for vb in 0..1024 {
//!     conn.open_stream(vb, StreamStart::Beginning, None)?;
//! }
//! while let Some(event) = conn.next_event().await? {
//!     let credit = event.credit();
//!     match event {
//!         Event::Mutation(m, _) => println!("set {:?} at seqno {}", m.key, m.by_seqno),
//!         Event::Deletion(d, _) => println!("deleted {:?}", d.key),
//!         _ => {}
//!     }
//!     conn.ack(credit); // done with it: the producer may send more
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod cluster_connection;
mod cluster_server;
mod connection;
mod error;
mod server;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use cluster_connection::ClusterConnection;
pub use cluster_server::{ClusterServer, ClusterServerHandle};
pub use connection::Connection;
pub use dcp_proto::cluster::{
    ConnectionString, DEFAULT_KV_PORT, DEFAULT_KV_TLS_PORT, InvalidConnectionString,
};
pub use error::Error;
#[cfg(feature = "tls")]
pub use server::TLS_ACCEPT_TIMEOUT;
pub use server::{Server, ServerHandle};

pub use dcp_proto;
#[cfg(feature = "tls")]
pub use rustls;

/// Compiles the README's examples (every runtime) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
