//! The blocking [`std::net`] adapter for [`dcp_proto`], the sans-IO
//! Couchbase DCP core: no async runtime, one thread per consumer
//! connection.
//!
//! - [`Connection`]: a DCP consumer connection to one node. It owns the
//!   socket and the [`Consumer`](dcp_proto::consumer::Consumer) and runs
//!   the core's driving loop on the calling thread, inside
//!   [`next_event`](Connection::next_event): send what is queued, hand out
//!   an event, else wait for bytes or the consumer's next deadline.
//! - [`Server`]: serves a [`Node`] (the core's in-memory data node) on a
//!   listener to many connections at once, with a [`ServerHandle`] to
//!   write documents and inject faults in-process.
//! - [`ClusterConnection`]: a whole bucket from a cluster, bootstrapped
//!   from a `couchbase://h1,h2/bucket` connection string: the core's
//!   [`ClusterClient`](dcp_proto::cluster::ClusterClient) (one consumer
//!   per data node) on the caller's thread, one reader thread per socket,
//!   one merged event stream, one cluster-wide checkpoint and summed
//!   counters.
//! - [`ClusterServer`]: serves a
//!   [`LocalCluster`](dcp_proto::producer::LocalCluster) (N nodes, one
//!   bucket) on N consecutive ports, with a [`ClusterServerHandle`] to
//!   write, rebalance, fail over, add and remove nodes.
//!
//! - [`tls`] (feature `tls`, on by default): TLS with rustls (the `ring`
//!   provider): [`Connection::connect_tls`], [`Server::with_tls`],
//!   [`ClusterServer::with_tls`], `couchbases://` cluster connections, and
//!   client and server configurations from PEM.
//!
//! The adapter holds no protocol logic: handshake, flow control, noops,
//! dead-connection detection, rollbacks and checkpoints all live in the
//! core.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dcp_blocking::{Connection, Server};
//! use dcp_proto::auth::Credentials;
//! use dcp_proto::bucket::WriteOptions;
//! use dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
//! use dcp_proto::producer::NodeConfig;
//!
//! // A local server with one vbucket and one document.
//! let node = NodeConfig::new("default")
//!     .with_vbuckets(1)
//!     .with_user("app", "secret")
//!     .with_scram_iterations(16);
//! let server = Server::bind("127.0.0.1:0", node)?;
//! server.with_node(|node| {
//!     let now = node.wall_clock(Instant::now());
//!     node.bucket_mut().set(b"hello", "world", WriteOptions::new(), now)
//! })?;
//!
//! // Stream vbucket 0 up to seqno 1.
//! let config = ConsumerConfig::new("example:1", "default")
//!     .with_credentials(Credentials::new("app", "secret"))
//!     .with_auto_ack(true);
//! let mut conn = Connection::connect(server.local_addr(), config)?;
//! conn.open_stream(0, StreamStart::Beginning, Some(1))?;
//! loop {
//!     match conn.next_event_timeout(Duration::from_secs(10))? {
//!         Some(Event::Mutation(m, _credit)) => assert_eq!(&m.value[..], b"world"),
//!         Some(Event::StreamEnded { .. }) => break,
//!         Some(_) => {}
//!         None => panic!("timed out"),
//!     }
//! }
//! assert_eq!(conn.checkpoint().vbuckets[&0].last_seqno, 1);
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cluster_connection;
mod cluster_server;
mod connection;
mod error;
mod server;
mod server_tls;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use cluster_connection::ClusterConnection;
pub use cluster_server::{ClusterServer, ClusterServerHandle};
pub use connection::Connection;
pub use error::Error;
pub use server::{ConnectionEnd, EndReason, Server, ServerHandle};

pub use dcp_proto;
pub use dcp_proto::producer::Node;
#[cfg(feature = "tls")]
pub use rustls;
#[cfg(feature = "tls")]
pub use server_tls::TLS_ACCEPT_TIMEOUT;
