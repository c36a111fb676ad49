//! Sans-IO core of a Couchbase Database Change Protocol (DCP) implementation.
//!
//! This crate has no sockets, threads or clocks: bytes go in and out through
//! caller-owned buffers, and time comes in as an argument. The runtime
//! adapters (`dcp-tokio`, `dcp-async-std`, `dcp-blocking`) move bytes and time
//! between a socket and these types.
//!
//! - [`codec`]: the 24-byte header (classic and flexible framing), framing
//!   extras, opcodes, status codes, datatypes and the streaming
//!   [`FrameDecoder`](codec::FrameDecoder).
//! - [`msg`]: one typed struct per DCP message and per handshake command,
//!   each with `decode(&Frame)` and `encode(&mut BytesMut)`; collection-id key
//!   prefixes, xattr sections, bounded Snappy value decompression, and
//!   system event values typed alike from fixed structs or verified
//!   FlatBuffers tables ([`SystemEventData`](msg::SystemEventData)).
//! - [`auth`]: SASL PLAIN and SCRAM-SHA1/256/512, client and server sides.
//! - [`consumer`]: one DCP consumer connection as a state machine: handshake,
//!   streams, rollback, flow control, noops, checkpoints.
//! - [`session`] and [`failover`]: stream positions and the versioned
//!   checkpoint; the server's rollback decision; [`flow`]: flow-control
//!   windows for both ends.
//! - [`bucket`]: the producer's in-memory data model (vbuckets, checkpoints
//!   with dedup, a by-seqno disk for backfills, failover logs, writes with
//!   CAS rules, fault injection).
//! - [`producer`]: a sans-IO data node serving that bucket: SASL, HELLO, KV,
//!   STAT and a faithful DCP producer.
//! - [`cluster`]: bucket configs, the vbucket map, an orchestrator that
//!   says which node to stream each vbucket from as the topology changes,
//!   and a cluster client that drives it over one consumer per node (the
//!   adapters only open sockets and move bytes).
//!
//! # Decoding a byte stream
//!
//! ```
//! use bytes::BytesMut;
//! use dcp_proto::codec::FrameDecoder;
//! use dcp_proto::msg::{Message, Mutation};
//!
//! // A producer's DCP_MUTATION for key "hello", as the docs draw it.
//! let wire = "805700051f000210000000290000121000000000000000000000000000000004\
//!             000000000000000100000000000000000000000000000068656c6c6f776f726c64";
//! let bytes: Vec<u8> = (0..wire.len())
//!     .step_by(2)
//!     .map(|i| u8::from_str_radix(&wire[i..i + 2], 16).unwrap())
//!     .collect();
//!
//! let mut rx = BytesMut::from(&bytes[..]);
//! let mut decoder = FrameDecoder::new();
//! while let Some(frame) = decoder.decode(&mut rx)? {
//!     match Message::decode(&frame)? {
//!         Message::Mutation(m) => {
//!             assert_eq!(&m.key[..], b"hello");
//!             assert_eq!(&m.value[..], b"world");
//!             assert_eq!(m.by_seqno, 4);
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! # Ok::<(), dcp_proto::codec::DecodeError>(())
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

pub mod auth;
pub mod bucket;
pub mod cluster;
pub mod codec;
pub mod consumer;
pub mod failover;
pub mod flow;
pub mod log;
pub mod msg;
pub mod producer;
pub mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;
