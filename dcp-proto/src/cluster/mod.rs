//! Cluster awareness: bucket configs, the vbucket map, and a sans-IO
//! orchestrator over one consumer connection per data node.
//!
//! - [`ClusterConfig`]: a parsed bucket config (GET_CLUSTER_CONFIG or the
//!   REST bucket endpoint), its [`ConfigVersion`], data nodes and vbucket
//!   map, and key → vbucket hashing.
//! - [`NodeAddress`] / [`KvNode`]: a data node's identity and ports.
//! - [`ClusterOrchestrator`]: which node to connect to, which stream to
//!   open where and from which position, when to fetch a config; it keeps
//!   one cluster-wide [`Checkpoint`](crate::session::Checkpoint) so a
//!   vbucket that moves resumes exactly where it stopped.
//! - [`ClusterClient`]: the orchestrator together with one
//!   [`Consumer`](crate::consumer::Consumer) per data node, carrying out
//!   the driving contract below itself: bootstrap from seeds, config
//!   fetches, stale-event filtering, positions of streams started "now",
//!   summed counters and node logging. An adapter only opens and closes
//!   sockets when asked ([`Output`]) and moves bytes and time; the three
//!   runtime adapters' cluster clients are built on it.
//!
//! # Driving contract
//!
//! (What [`ClusterClient`] does; drive the orchestrator directly only to
//! manage consumers some other way.) The adapter owns one
//! [`Consumer`](crate::consumer::Consumer) (and socket) per node and one
//! orchestrator:
//!
//! 1. Bootstrap: fetch the bucket config from a seed node
//!    (GET_CLUSTER_CONFIG after SELECT_BUCKET, or REST) and pass it to
//!    [`handle_config`](ClusterOrchestrator::handle_config) with the seed's
//!    host (it replaces `$HOST`).
//! 2. After every input, drain
//!    [`poll_action`](ClusterOrchestrator::poll_action) until it returns
//!    `None`, carrying out each [`Action`] in order:
//!    - `Connect(node)`: start a consumer connection to the node. When its
//!      consumer yields [`Event::Ready`](crate::consumer::Event::Ready),
//!      call [`handle_node_connected`](ClusterOrchestrator::handle_node_connected)
//!      (or pass the event to `handle_stream_event`); if connecting, the
//!      handshake or later the connection fails, call
//!      [`handle_node_lost`](ClusterOrchestrator::handle_node_lost).
//!    - `Disconnect(node)`: close that connection (no `handle_node_lost`)
//!      and drop its consumer with any events it still holds.
//!    - `OpenStream { node, vbucket, start, end }`:
//!      `consumer.open_stream(vbucket, start, end)` on that node.
//!    - `CloseStream { node, vbucket }`: `consumer.close_stream(vbucket)`;
//!      an error because the stream already ended is fine.
//!    - `RefreshConfig { via }`: fetch the config from `via` (a seed node
//!      when `None`) and pass it to `handle_config`. A failed fetch needs
//!      nothing: configs are polled periodically.
//!    - `StreamDone` / `Fail`: tell the application.
//! 3. Pass every event of every node's consumer to
//!    [`handle_stream_event`](ClusterOrchestrator::handle_stream_event), in
//!    the order polled, before handing it to the application: hand it over
//!    only if that returns `true` (otherwise it is a stale event of a
//!    stream that moved; acknowledge its credit and drop it). Never feed
//!    events of a connection after reporting it lost. After an
//!    `Event::StreamOpened` of a stream opened with `StreamStart::Now`,
//!    report the consumer's resolved position with
//!    [`handle_position`](ClusterOrchestrator::handle_position).
//! 4. Sleep until the earliest of
//!    [`poll_timeout`](ClusterOrchestrator::poll_timeout), the consumers'
//!    deadlines and readable sockets; when the orchestrator's deadline
//!    passes, call [`handle_timeout`](ClusterOrchestrator::handle_timeout).
//! 5. Persist [`checkpoint`](ClusterOrchestrator::checkpoint) with the data
//!    the delivered events produced; restart from it with
//!    [`ClusterOrchestrator::new`].
//!
//! Every input takes `now`; nothing reads a clock. Behaviour on topology
//! changes (behavior.md §8, §2.4, §2.7): a stream ended with StateChanged
//! (or refused with NOT_MY_VBUCKET) makes the orchestrator fetch a config
//! and retry the vbucket, after a short growing delay, on the owner named by
//! the newest config, from its saved position; a newer config moves
//! streams to their new owners at once; a lost node is reconnected with
//! exponential backoff while a config still needs it; rollbacks are
//! applied to the saved position.
//!
//! Configs also arrive unasked: a consumer with
//! [`ConfigPush`](crate::consumer::ConfigPush) on hands out the configs its
//! node pushes as [`Event::ClusterConfig`](crate::consumer::Event::ClusterConfig)
//! ([`handle_node_event`](ClusterOrchestrator::handle_node_event) applies
//! them; older revisions are ignored), and a NOT_MY_VBUCKET refusal carries
//! the node's config, applied first when newer so the vbucket goes to its
//! new owner without a fetch. The periodic poll stays as the fallback.
//! [`Network`] picks internal or external (`alternateAddresses`) node
//! addresses.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dcp_proto::cluster::{Action, ClusterOrchestrator, NodeAddress, OrchestratorConfig};
//! use dcp_proto::consumer::StreamStart;
//! use dcp_proto::session::Checkpoint;
//!
//! let now = Instant::now();
//! let mut orchestrator = ClusterOrchestrator::new(OrchestratorConfig::new(), Checkpoint::new());
//!
//! // The config a seed node returned: two nodes, four vbuckets.
//! let config = br#"{"rev":10,"revEpoch":1,"name":"default","uuid":"b1",
//!   "nodeLocator":"vbucket",
//!   "nodesExt":[{"hostname":"10.0.0.1","services":{"kv":11210,"kvSSL":11207}},
//!               {"hostname":"10.0.0.2","services":{"kv":11210,"kvSSL":11207}}],
//!   "vBucketServerMap":{"hashAlgorithm":"CRC","numReplicas":1,
//!     "serverList":["10.0.0.1:11210","10.0.0.2:11210"],
//!     "vBucketMap":[[0,1],[0,1],[1,0],[1,0]]}}"#;
//! orchestrator.handle_config(config, "10.0.0.1", now)?;
//!
//! let mut connects = Vec::new();
//! while let Some(action) = orchestrator.poll_action() {
//!     if let Action::Connect(node) = action {
//!         connects.push(node.address); // start a consumer for it
//!     }
//! }
//! assert_eq!(connects.len(), 2);
//!
//! // The first node's handshake completed: open its vbuckets.
//! let node1: NodeAddress = "10.0.0.1:11210".parse()?;
//! orchestrator.handle_node_connected(&node1, now);
//! let mut opened = Vec::new();
//! while let Some(action) = orchestrator.poll_action() {
//!     if let Action::OpenStream { node, vbucket, start, end } = action {
//!         assert_eq!((node.clone(), start, end), (node1.clone(), StreamStart::Beginning, None));
//!         opened.push(vbucket); // consumer.open_stream(vbucket, start, end)
//!     }
//! }
//! assert_eq!(opened, [0, 1]);
//!
//! // Wake up for config polls, retries and reconnections.
//! let wake_at = orchestrator.poll_timeout().unwrap();
//! assert_eq!(wake_at, now + Duration::from_millis(2500));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod config;
mod connection_string;
mod network;
mod node;
mod orchestrator;

pub use client::{BootstrapError, ClusterClient, LinkId, Output};
pub use config::{ClusterConfig, ConfigError, ConfigVersion};
pub use connection_string::{
    ConnectionString, DEFAULT_KV_PORT, DEFAULT_KV_TLS_PORT, InvalidConnectionString,
};
pub use network::{AlternateAddress, InvalidNetwork, Network};
pub use node::{InvalidAddress, KvNode, NodeAddress};
pub use orchestrator::{
    Action, ClusterOrchestrator, ConfigOutcome, ConfigRejected, InitialStart, NodeStatus,
    OrchestratorConfig, StreamFailure, VbucketSelection, VbucketStatus,
};
