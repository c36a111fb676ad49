//! A sans-IO Couchbase data node: the producer end of DCP, over the
//! in-memory [`bucket`](crate::bucket).
//!
//! [`Node`] owns the [`Bucket`](crate::bucket::Bucket) and every accepted
//! connection. Each connection speaks the memcached binary protocol as a
//! data node does: SASL (PLAIN, SCRAM-SHA1/256/512) before anything else,
//! HELLO, SELECT_BUCKET, GET_ERROR_MAP, GET_CLUSTER_CONFIG, STAT,
//! GET_ALL_VB_SEQNOS, GET_FAILOVER_LOG, key-value commands, and after
//! DCP_OPEN a DCP producer: controls, stream requests validated in the
//! server's order with its status codes and rollback decision, disk and
//! memory snapshots, flow control, noops, stream ends. Its value is its
//! faithfulness: where the server behaves oddly
//! (`shared/spec/behavior.md`), so does this node.
//!
//! [`LocalCluster`] runs several nodes as one cluster: a shared vbucket map
//! and config, replication, rebalance, failover, nodes added and removed.
//! As a real cluster's nodes do, each pushes every new config to the
//! connections that asked in HELLO (Duplex with ClustermapChangeNotification,
//! full or brief), and answers a stream request for a vbucket it does not
//! own NOT_MY_VBUCKET with its config (omitted under
//! DedupeNotMyVbucketClustermap when the connection already has it).
//! Cluster-level [`AdminCommand`]s sent to any node are carried out by the
//! cluster ([`LocalCluster::run_admin_requests`]).
//!
//! # Driving contract
//!
//! The node has no sockets, threads, clocks or randomness of its own: an
//! adapter accepts sockets, feeds bytes and instants in, and writes out what
//! the node gives back. Methods fall in four groups:
//!
//! - inputs: [`accept`](Node::accept), [`handle_input`](Node::handle_input)
//!   (bytes received on a connection), [`handle_timeout`](Node::handle_timeout)
//!   (a connection's deadline passed), [`remove`](Node::remove) (its socket
//!   closed);
//! - commands: [`bucket_mut`](Node::bucket_mut) (writes and bucket faults),
//!   [`failover`](Node::failover), [`purge`](Node::purge),
//!   [`set_vbucket_state`](Node::set_vbucket_state), [`stall`](Node::stall),
//!   [`freeze`](Node::freeze), [`drop_connection`](Node::drop_connection);
//! - outputs: [`poll_transmit`](Node::poll_transmit) (bytes to write; stream
//!   messages are generated on demand from the bucket, within the
//!   flow-control window, so memory stays bounded),
//!   [`poll_timeout`](Node::poll_timeout) (the next deadline),
//!   [`take_wakeups`](Node::take_wakeups) (connections that may have new
//!   output because of something that happened elsewhere: a write, a state
//!   change, a kick), [`is_closed`](Node::is_closed) /
//!   [`close_reason`](Node::close_reason);
//! - getters: [`bucket`](Node::bucket), [`dcp_name`](Node::dcp_name),
//!   [`wall_clock`](Node::wall_clock), ...
//!
//! After any input or command, for every connection it may concern (the
//! one fed, plus `take_wakeups()`): write what `poll_transmit` gives while
//! the socket accepts it (call again after a partial write: the node keeps
//! what it did not produce yet), then wait for readable bytes, writability
//! or the `poll_timeout` deadline. When `is_closed` turns true, write what
//! `poll_transmit` still returns (queued responses) and close the socket,
//! then [`remove`](Node::remove) the connection. Changes made through
//! `bucket_mut` take effect on streams at the node's next call.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use dcp_proto::bucket::WriteOptions;
//! use dcp_proto::codec::{Frame, FrameDecoder, Opcode};
//! use dcp_proto::msg::client::{Hello, HelloFeature, SaslAuth, SelectBucket};
//! use dcp_proto::msg::{Message, Open, OpenFlags, StreamRequest, StreamRequestFlags};
//! use dcp_proto::producer::{Node, NodeConfig};
//!
//! let t0 = Instant::now();
//! let mut node = Node::new(NodeConfig::new("default").with_vbuckets(1).with_user("app", "secret"));
//! let wall = node.wall_clock(t0);
//! node.bucket_mut().set(b"k", "v", WriteOptions::new(), wall)?;
//!
//! // A client's first flight: HELLO, SASL PLAIN, SELECT_BUCKET, DCP_OPEN,
//! // STREAM_REQ.
//! let mut rx = BytesMut::new();
//! Hello { opaque: 1, agent: "doc".into(), features: vec![HelloFeature::Xerror] }.encode(&mut rx)?;
//! SaslAuth::plain(2, b"app", b"secret").encode(&mut rx)?;
//! SelectBucket::new(3, "default").encode(&mut rx)?;
//! Open { opaque: 4, flags: OpenFlags::PRODUCER, name: "doc:1".into(), consumer_name: None }.encode(&mut rx)?;
//! StreamRequest {
//!     vbucket: 0, opaque: 5, flags: StreamRequestFlags::empty(), start_seqno: 0,
//!     end_seqno: StreamRequest::NO_END, vbucket_uuid: 0, snap_start_seqno: 0,
//!     snap_end_seqno: 0, value: None,
//! }.encode(&mut rx)?;
//!
//! let conn = node.accept(t0);
//! node.handle_input(conn, &mut rx, t0)?;
//! let mut tx = BytesMut::new();
//! node.poll_transmit(conn, &mut tx, 64 * 1024);
//!
//! // Five successful responses, then the stream: marker, mutation.
//! let mut decoder = FrameDecoder::new();
//! let mut frames = Vec::new();
//! while let Some(frame) = decoder.decode(&mut tx)? {
//!     frames.push(frame);
//! }
//! assert!(frames[..5].iter().all(|f| f.is_response() && f.status().is_success()));
//! let stream: Vec<Opcode> = frames[5..].iter().map(Frame::opcode).collect();
//! assert_eq!(stream, [Opcode::DcpSnapshotMarker, Opcode::DcpMutation]);
//! assert!(matches!(Message::decode(&frames[6])?, Message::Mutation(m) if &m.key[..] == b"k"));
//! assert_eq!(node.poll_timeout(conn), None); // noops not enabled
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Faithful to the server
//!
//! - Nothing but HELLO, SASL, GET_ERROR_MAP, NOOP, VERSION and QUIT works
//!   before authentication (EACCESS); bucket commands need SELECT_BUCKET
//!   (or a user named like the bucket) else NO_BUCKET; statuses newer than
//!   the classic set close the connection when the client did not negotiate
//!   XERROR, as the server does.
//! - DCP commands on a non-DCP connection are EINVAL (GET_FAILOVER_LOG
//!   excepted); a second DCP_OPEN is EINVAL; DCP commands with unordered
//!   execution are NOT_SUPPORTED; SASL is refused after DCP_OPEN. A
//!   DCP_OPEN with a name in use kicks the older connection (closed, no
//!   STREAM_END).
//! - DCP_CONTROL keys of wire.md §13 with their refusal codes; unknown keys
//!   are EINVAL.
//! - STREAM_REQ checks in the server's order (behavior.md §2.2): flags,
//!   vbucket state, FromLatest, noop-mandatory, ERANGE, filter
//!   (UNKNOWN_COLLECTION/UNKNOWN_SCOPE with the manifest uid, stream-id
//!   rules), KEY_EEXISTS, rollback (§2.3, value = 8 bytes
//!   only), ToLatest/DiskOnly, ENOMEM, TMPFAIL; then SUCCESS with the
//!   failover log before the stream's first message.
//! - Snapshots: disk backfills (Disk|Checkpoint, read as of their snapshot
//!   end, bounded steps) for positions below what memory holds, then memory
//!   snapshots deduplicated per checkpoint (Memory, plus Checkpoint at a
//!   checkpoint's start, starting at that checkpoint's start); the first
//!   marker starts at min(snap_start, first seqno); memory batches are sent
//!   whole (end overshoot) before STREAM_END(OK); a slow stream whose
//!   checkpoints were dropped switches back to disk; SEQNO_ADVANCED closes a
//!   snapshot whose last seqno was not sent, on collections connections;
//!   v1, v2.0 (sync replication) and v2.2 (disk, opted in)
//!   markers; DELETION v1/v2 (delete time 0 from memory), EXPIRATION only
//!   with the control and IncludeDeleteTimes; xattrs and values shaped by
//!   the open flags.
//! - Snappy: offered in HELLO; on connections that negotiated it, DCP
//!   values are sent compressed when that makes them smaller (every
//!   non-empty value with `force_value_compression`, which is EINVAL
//!   without Snappy). A SET with the Snappy datatype (Snappy negotiated,
//!   else EINVAL) is stored decompressed, as with compression mode off, so
//!   clients without Snappy always receive plain values.
//! - STREAM_END reasons: OK (end reached, or start ≥ end at once), Closed
//!   (CLOSE_STREAM with `send_stream_end_on_client_close_stream`),
//!   StateChanged (vbucket state change; a purge that overtook a backfill's
//!   start). Without the control CLOSE_STREAM removes the stream silently.
//! - Collections (the bucket's manifest): keys with the LEB128 collection
//!   prefix, SYSTEM_EVENTs in memory and disk snapshots (fixed-struct
//!   values, or the stored FlatBuffers values for connections that enabled
//!   `flatbuffers_system_events`, which alone receive ModifyCollection:
//!   the others skip it like a filtered item), stream filters (`collections`, `scope`) that follow their
//!   drop events and end FilterEmpty once empty, a first snapshot filtered
//!   out entirely answered with a marker and SEQNO_ADVANCED; connections
//!   without collections see the default collection only. KV commands
//!   address a collection by the key prefix; GET_ALL_VB_SEQNOS takes a
//!   collection id; admin commands change the manifest (create, drop,
//!   flush, modify); a collection's max TTL (or, where it sets none, the
//!   bucket's) caps the expiry of what is written to it, or supplies one.
//! - Flow control as behavior.md §4: full frame sizes, one-message
//!   overshoot, pause at ≥ N, resume on BUFFER_ACK, clamped over-acks,
//!   noops and responses never counted.
//! - Sync writes (behavior.md §7): durable SET/ADD/REPLACE/DELETE,
//!   APPEND/PREPEND and INCREMENT/DECREMENT (the durability frame info, or
//!   the bucket's `durable_*` API) are PREPAREs
//!   at their own seqno (pending, invisible, the key locked:
//!   SyncWriteInProgress), then COMMITs or ABORTs at new seqnos. Without
//!   `enable_sync_writes` prepares and aborts are never sent, commits are
//!   mutations, and snapshots end at their max visible seqno (or close with
//!   SEQNO_ADVANCED on collections connections); with it PREPARE, COMMIT
//!   and ABORT flow from memory, disk backfills send commits as mutations
//!   and pending prepares and aborts as they are; markers carry the max
//!   visible and (disk) high completed seqnos. SEQNO_ACKNOWLEDGED is EINVAL
//!   without sync replication; stream ids and collection filters are
//!   NOT_SUPPORTED with sync writes.
//! - OSO backfills (behavior.md §6.3) with `enable_out_of_order_snapshots`:
//!   OSO_SNAPSHOT(start), disk items in key order, SEQNO_ADVANCED with
//!   `true_with_seqno_advanced` when needed, OSO_SNAPSHOT(end), for initial
//!   backfills of filtered streams (and of unfiltered ones with
//!   [`NodeConfig::oso_for_unfiltered_streams`]).
//! - Noops every interval counted from the previous noop, one outstanding;
//!   a noop response with another opaque, a DCP_NOOP request from the
//!   client, or an intolerable error reply to a stream message disconnect;
//!   idle disconnect after `idle_timeout` of receive silence while noops are
//!   enabled.
//!
//! # Not modelled
//!
//! - Collections: metered and system collections, the default
//!   collection's max visible seqno in modify events, the mid-snapshot
//!   SEQNO_ADVANCED of long filtered backfills, LostPrivileges ends.
//! - Replicas and durability monitoring: sync writes commit at once (the
//!   active alone is a majority) or, in hold mode, when told to
//!   (`commit_pending` / `abort_pending`); SEQNO_ACKNOWLEDGED is recorded
//!   per stream (`dcp` stats) but counts towards nothing.
//! - Takeover streams, ns_server consumer connections (DCP_OPEN without
//!   the Producer flag is NOT_SUPPORTED), ADD_STREAM, cache transfer
//!   (NOT_SUPPORTED), change streams (NOT_SUPPORTED), documents stored
//!   compressed (compression modes passive and active), TLS, RBAC beyond
//!   "authenticated" and "admin", the stream-buffer TooSlow and
//!   BackfillFailed ends, NOT_MY_VBUCKET bodies with a cluster map.
//! - Persistence is immediate (persisted seqno = high seqno); a failover
//!   can lose only what memory checkpoints hold. Cursor dropping happens
//!   whether or not the client enabled it.
//! - Quiet KV variants (GETQ, SETQ, ...), locking, subdocument commands,
//!   durable TOUCH and GAT (DurabilityImpossible), range scans.
//! - The `dcp` stats carry a subset of the server's per-connection and
//!   per-stream names.

mod admin;
mod cluster_config;
mod collections;
mod config;
mod connection;
mod context;
mod control;
mod dcp;
mod dispatch;
mod durable_kv;
mod error;
mod handshake;
mod kv;
mod liveness;
mod local_cluster;
mod node;
mod oso;
mod outgoing;
mod sasl;
mod stats;
mod stream;
mod stream_request;
mod sync_write;
mod transmit;
mod users;

pub use admin::{ADMIN_OPCODE, AdminCommand, ClusterAdminRequest};
pub use config::NodeConfig;
pub use error::{CloseReason, ConnectionId, ProducerError};
pub use local_cluster::{ClusterError, LocalCluster, NodeId};
pub use node::Node;
